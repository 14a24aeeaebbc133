//! The log's behaviour through its public door, over an in-memory disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_support;

use bytes::Bytes;
use log_support::{batch, small_config, Harness};
use oxbow_core::log::batch::ValidatedBatch;
use oxbow_core::log::read::find_offset_for_timestamp;
use oxbow_core::log::{AppendError, DiskError, LogCompletion, LogEffect, LogEvent, SegmentId};
use oxbow_core::time::Instant;
use std::time::Duration;

#[test]
fn appends_get_contiguous_offsets_and_read_back() {
    let mut h = Harness::new(small_config());
    assert_eq!(h.append_synced(1, "a", 3).base_offset, 0);
    assert_eq!(h.append_synced(1, "b", 2).base_offset, 3);
    assert_eq!(h.log.next_offset(), 5);
    assert_eq!(h.log.durable_offset(), 4);
    let all = h.fetch_all(0);
    assert_eq!(
        all.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(all[3].1, "b-0");
    // A read that starts mid-batch returns from the asked offset on.
    assert_eq!(h.fetch_all(1)[0], (1, "a-1".to_string()));
    h.check_against_scan();
}

#[test]
fn invalid_batches_are_refused_with_kafka_errors() {
    let mut h = Harness::new(small_config());
    let mut corrupt = batch("x", 2, 10).to_vec();
    corrupt[40] ^= 1;
    let err = h.log.append(h.now, 1, corrupt.into()).unwrap_err();
    assert_eq!(err.kafka_error_code(), 2);
    let huge = batch(&"y".repeat(70_000), 1, 10);
    assert_eq!(h.log.append(h.now, 1, huge).unwrap_err().kafka_error_code(), 10);
    h.append(5, "a", 1);
    assert!(matches!(
        h.log.append(h.now, 4, batch("old", 1, 0)),
        Err(AppendError::TermGoesBack {
            term: 4,
            last_term: 5
        })
    ));
    assert_eq!(h.log.next_offset(), 1, "nothing refused was written");
}

#[test]
fn a_batch_validated_before_its_append_is_appended_as_it_is_under_the_logs_own_checks() {
    let mut h = Harness::new(small_config());
    // A corrupt batch never becomes a validated one.
    let mut corrupt = batch("x", 2, 10).to_vec();
    corrupt[40] ^= 1;
    assert_eq!(
        ValidatedBatch::new(corrupt.into())
            .unwrap_err()
            .kafka_error_code(),
        2
    );
    let validated = ValidatedBatch::new(batch("v", 3, 10)).unwrap();
    // Only the very same bytes are the validated batch, not an equal copy.
    assert!(validated.is(&validated.bytes().clone()));
    assert!(!validated.is(&Bytes::copy_from_slice(validated.bytes())));
    let info = h.log.append_validated(h.now, 2, validated).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 2));
    h.pump();
    h.log.sync();
    h.pump();
    // What does not depend on the batch's content is still the log's to check.
    let old_term = ValidatedBatch::new(batch("old", 1, 0)).unwrap();
    assert!(matches!(
        h.log.append_validated(h.now, 1, old_term),
        Err(AppendError::TermGoesBack {
            term: 1,
            last_term: 2
        })
    ));
    let huge = ValidatedBatch::new(batch(&"y".repeat(70_000), 1, 10)).unwrap();
    assert_eq!(
        h.log
            .append_validated(h.now, 2, huge)
            .unwrap_err()
            .kafka_error_code(),
        10
    );
    assert_eq!(h.log.next_offset(), 3, "nothing refused was written");
    assert_eq!(h.log.durable_offset(), 2);
    let values: Vec<String> = h.fetch_all(0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["v-0", "v-1", "v-2"]);
    h.check_against_scan();
}

#[test]
fn segments_roll_on_size_age_and_term() {
    let mut h = Harness::new(small_config());
    for i in 0..40 {
        h.append(1, &format!("{i:0>2000}"), 20); // ~40 KiB batches
    }
    let by_size = h.log.segments().len();
    assert!(by_size >= 2, "rolled by size: {by_size}");
    for s in h.log.segments() {
        assert!(s.size_bytes <= small_config().segment_bytes);
    }
    h.append(2, "t2", 1);
    assert_eq!(h.log.segments().last().unwrap().id.term, 2, "term change rolls");
    let mut config = small_config();
    config.segment_ms = Some(1000);
    h.log.set_config(config);
    h.now += Duration::from_millis(1500);
    let before = h.log.segments().len();
    h.append(2, "late", 1);
    assert_eq!(h.log.segments().len(), before + 1, "segment.ms rolls");
    h.log.sync();
    h.pump();
    h.check_against_scan();
    assert_eq!(h.log.term_starts()[1], (2, h.log.term_starts()[1].1));
    let closed = h.log.segments()[0].id;
    assert!(
        h.disk.file(&closed.index_file_name()).is_some(),
        "closed segments get index files"
    );
}

#[test]
fn group_commit_covers_everything_queued_behind_a_sync() {
    let mut h = Harness::new(small_config());
    h.hold = true;
    h.append(1, "a", 1);
    h.log.sync();
    h.append(1, "b", 1);
    h.log.sync();
    h.append(1, "c", 1);
    h.log.sync();
    h.pump();
    let syncs = h
        .held
        .iter()
        .filter(|e| matches!(e, LogEffect::Sync { .. }))
        .count();
    assert_eq!(syncs, 1, "one sync in flight at a time");
    assert_eq!(
        h.log.durable_offset(),
        -1,
        "nothing durable before the sync completes"
    );
    h.release();
    assert_eq!(h.log.durable_offset(), 2);
    let durable_events: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            LogEvent::Durable { last_offset } => Some(*last_offset),
            _ => None,
        })
        .collect();
    assert_eq!(
        durable_events,
        vec![0, 2],
        "the second sync covered both later appends"
    );
}

#[test]
fn truncation_at_an_indexed_boundary_and_in_between() {
    let mut h = Harness::new(small_config());
    for i in 0..30 {
        h.append_synced(1, &format!("v{i}"), 2);
    }
    // Offset 40 starts a batch; with 256-byte index intervals it may not be indexed.
    h.log.truncate(h.now, 40).unwrap();
    h.pump();
    assert!(h.events.contains(&LogEvent::Truncated { next_offset: 40 }));
    assert_eq!(h.log.next_offset(), 40);
    assert_eq!(h.log.durable_offset(), 39);
    let info = h.append_synced(2, "new", 1);
    assert_eq!(info.base_offset, 40);
    let all = h.fetch_all(0);
    assert_eq!(all.len(), 41);
    assert_eq!(all.last().unwrap(), &(40, "new-0".to_string()));
    h.check_against_scan();
    // Truncating to a segment boundary drops the term-2 segment entirely.
    h.log.truncate(h.now, 40).unwrap();
    h.pump();
    assert_eq!(h.log.segments().len(), 1);
    h.check_against_scan();
}

#[test]
fn appends_wait_behind_a_truncation_that_must_read() {
    let mut h = Harness::new(small_config());
    for i in 0..20 {
        h.append_synced(1, &format!("v{i}"), 1);
    }
    h.hold = true;
    h.log.truncate(h.now, 7).unwrap();
    let info = h.log.append(h.now, 1, batch("after", 1, 5)).unwrap();
    assert_eq!(info.base_offset, 7);
    h.log.sync();
    h.pump();
    assert!(h.held.iter().any(|e| matches!(e, LogEffect::Read { .. })));
    h.release();
    assert_eq!(h.log.durable_offset(), 7);
    let all = h.fetch_all(0);
    assert_eq!(all.len(), 8);
    assert_eq!(all[7], (7, "after-0".to_string()));
    h.check_against_scan();
}

#[test]
fn retention_by_size_and_time_deletes_whole_closed_segments() {
    let mut config = small_config();
    config.retention_bytes = Some(1024 * 1024);
    config.retention_ms = Some(60_000);
    let mut h = Harness::new(config);
    for i in 0..100 {
        h.append_synced(1, &format!("{i:0>4000}"), 10);
    }
    let segments = h.log.segments().len();
    assert!(segments >= 3);
    let start = h.log.enforce_retention(h.now, 0, i64::MAX).unwrap();
    h.pump();
    assert!(
        h.log.size_bytes() >= 1024 * 1024 - 64 * 1024,
        "keeps at least the retention size"
    );
    assert_eq!(h.log.start_offset(), start);
    assert_eq!(h.log.segments()[0].id.base_offset, start);
    assert!(h
        .events
        .contains(&LogEvent::StartOffsetDurable { start_offset: start }));
    assert!(
        h.log.read_plan(start - 1, 100, i64::MAX).is_err(),
        "below start is out of range"
    );
    // Time: everything older than a minute goes, except the active segment.
    let wall = 10_000_000_000i64;
    h.log.enforce_retention(h.now, wall, i64::MAX).unwrap();
    h.pump();
    assert_eq!(h.log.segments().len(), 1);
    // Never past what the caller allows.
    let mut h2 = Harness::new(small_config());
    for i in 0..60 {
        h2.append_synced(1, &format!("{i:0>4000}"), 10);
    }
    assert_eq!(h2.log.enforce_retention(h2.now, i64::MAX, -1), None);
}

#[test]
fn delete_records_moves_the_start_inside_a_segment() {
    let mut h = Harness::new(small_config());
    for i in 0..10 {
        h.append_synced(1, &format!("v{i}"), 3);
    }
    assert_eq!(h.log.delete_records(h.now, 7).unwrap(), 7);
    h.pump();
    assert!(h
        .events
        .contains(&LogEvent::StartOffsetDurable { start_offset: 7 }));
    assert_eq!(h.fetch_all(7)[0].0, 7);
    assert!(h.log.read_plan(6, 100, i64::MAX).is_err());
    assert!(h.log.delete_records(h.now, 31).is_err(), "beyond the end");
    // The start offset survives a restart through the checkpoint.
    h.crash(0);
    h.recover().unwrap();
    assert_eq!(h.log.start_offset(), 7);
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let mut h = Harness::new(small_config());
    for i in 0..50i64 {
        let records = batch(&format!("t{i}"), 4, 1_000 + i * 10);
        h.log.append(h.now, 1, records).unwrap();
    }
    h.log.sync();
    h.pump();
    // Batch i holds timestamps 1000+10i .. 1000+10i+3 at offsets 4i..4i+3.
    let range = h.log.timestamp_plan(1_000 + 25 * 10 + 2).unwrap();
    let bytes = h.disk.read(range.segment, range.position, range.len_bytes);
    assert_eq!(
        find_offset_for_timestamp(&bytes, 1_252, 0).unwrap(),
        Some(25 * 4 + 2)
    );
    assert!(h.log.timestamp_plan(999_999).is_none());
}

#[test]
fn a_full_disk_fails_unsynced_appends_and_keeps_durable_data() {
    let mut h = Harness::new(small_config());
    for i in 0..5 {
        h.append_synced(1, &format!("ok{i}"), 2);
    }
    let used: usize = h
        .disk
        .file_names()
        .iter()
        .map(|n| h.disk.file(n).unwrap().len())
        .sum();
    h.disk.space_limit_bytes = Some(used as u64 + 10);
    h.log.append(h.now, 1, batch("nope", 2, 1)).unwrap();
    h.log.sync();
    h.pump();
    assert!(h.events.iter().any(|e| matches!(
        e,
        LogEvent::AppendsFailed {
            from_offset: 10,
            to_offset: 11,
            error: DiskError::NoSpace
        }
    )));
    assert_eq!(h.log.next_offset(), 10);
    assert_eq!(h.log.durable_offset(), 9);
    // Space comes back: the log continues where durable data ended.
    h.disk.space_limit_bytes = None;
    assert_eq!(h.append_synced(1, "again", 1).base_offset, 10);
    assert_eq!(h.fetch_all(0).len(), 11);
    h.check_against_scan();
}

#[test]
fn completions_of_an_older_generation_are_ignored() {
    let mut h = Harness::new(small_config());
    h.hold = true;
    h.append(1, "a", 1);
    h.log.sync();
    h.pump();
    let sync_id = h
        .held
        .iter()
        .find_map(|e| match e {
            LogEffect::Sync { sync_id, .. } => Some(*sync_id),
            _ => None,
        })
        .unwrap();
    h.log.handle_completion(
        h.now,
        LogCompletion::Failed {
            generation: 0,
            error: DiskError::Io("boom".into()),
        },
    );
    h.log.handle_completion(
        h.now,
        LogCompletion::Synced {
            generation: 0,
            sync_id,
        },
    );
    assert_eq!(
        h.log.durable_offset(),
        -1,
        "a stale sync completion proves nothing"
    );
}

#[test]
fn reads_stop_before_unwritten_data_and_at_the_high_watermark() {
    let mut h = Harness::new(small_config());
    h.append_synced(1, "a", 2);
    h.hold = true;
    h.append(1, "b", 2);
    assert_eq!(h.log.written_offset(), 1);
    assert_eq!(h.fetch_all(0).len(), 2, "unwritten batch is not read");
    h.release();
    assert_eq!(h.fetch_all(0).len(), 4);
    let plan = h.log.read_plan(0, 1, 1).unwrap();
    let chunks: Vec<_> = plan
        .ranges
        .iter()
        .map(|r| h.disk.read(r.segment, r.position, r.len_bytes))
        .collect();
    let bytes = oxbow_core::log::read::trim_fetched(&chunks, 0, 1, 1).unwrap();
    assert_eq!(
        log_support::decode_values(&bytes).len(),
        2,
        "one whole batch, up to the watermark"
    );
    assert_eq!(
        h.log.read_plan(2, 10, i64::MAX).unwrap().ranges[0].segment,
        SegmentId {
            base_offset: 0,
            term: 1
        }
    );
    assert!(h.log.read_plan(1, 100, 0).unwrap().ranges.is_empty());
    assert!(h.log.read_plan(5, 100, i64::MAX).is_err());
    let _ = Instant::ZERO;
}

#[test]
fn sync_tickets_cover_appends_and_truncations() {
    use oxbow_core::log::SyncTicket;
    let mut h = Harness::new(small_config());
    let done = |h: &Harness| -> Vec<SyncTicket> {
        h.events
            .iter()
            .filter_map(|e| match e {
                LogEvent::SyncDone { ticket } => Some(*ticket),
                _ => None,
            })
            .collect()
    };
    // Nothing to sync: the current ticket is done at once.
    let t0 = h.log.sync();
    h.pump();
    assert_eq!(done(&h), vec![t0]);
    h.hold = true;
    h.append(1, "a", 1);
    let t1 = h.log.sync();
    h.append(1, "b", 1);
    let t2 = h.log.sync();
    let t2_again = h.log.sync();
    assert!(t1 < t2 && t2 == t2_again, "{t1:?} {t2:?} {t2_again:?}");
    h.release();
    assert_eq!(done(&h), vec![t0, t1, t2]);
    assert_eq!(h.log.synced_ticket(), t2);
    // A truncation is covered by the next sync, which fsyncs the cut segment.
    h.log.truncate(h.now, 1).unwrap();
    let t3 = h.log.sync();
    h.pump();
    assert!(t3 > t2);
    assert_eq!(h.log.synced_ticket(), t3);
}

#[test]
fn a_fetch_within_one_segment_is_a_slice_of_the_read_not_a_copy() {
    let mut h = Harness::new(small_config());
    h.append_synced(1, "a", 2);
    h.append_synced(1, "b", 2);
    h.append_synced(1, "c", 2);
    let plan = h.log.read_plan(2, 1 << 20, i64::MAX).unwrap();
    assert_eq!(plan.ranges.len(), 1);
    let r = plan.ranges[0];
    // Read from the segment's start so the batch holding offset 2 is not first.
    let chunk = h.disk.read(r.segment, 0, r.position + r.len_bytes);
    let bytes = oxbow_core::log::read::trim_fetched(std::slice::from_ref(&chunk), 2, 5, 1 << 20).unwrap();
    assert_eq!(log_support::decode_values(&bytes).len(), 4, "batches b and c");
    let at = chunk.len() - bytes.len();
    assert_eq!(
        bytes.as_ptr(),
        chunk[at..].as_ptr(),
        "the answer points into the read"
    );
    // Batches of two chunks are joined.
    let halves = [chunk.slice(..at), chunk.slice(at..)];
    let joined = oxbow_core::log::read::trim_fetched(&halves, 0, 5, 1 << 20).unwrap();
    assert_eq!(&joined[..], &chunk[..]);
}

#[test]
fn a_damaged_batch_fails_the_read_that_returns_it_and_only_that_one() {
    let mut h = Harness::new(small_config());
    h.append_synced(1, "a", 2);
    h.append_synced(1, "b", 2);
    h.append_synced(1, "c", 2);
    let plan = h.log.read_plan(0, 1 << 20, i64::MAX).unwrap();
    let r = plan.ranges[0];
    let chunk = h.disk.read(r.segment, 0, r.position + r.len_bytes);
    let sizes: Vec<usize> = oxbow_core::log::batch::iter_batches(&chunk)
        .map(|(_, header)| header.size_bytes())
        .collect();
    assert_eq!(sizes.len(), 3);
    // Rot in the last byte of batch b's records (inside its CRC, outside its header).
    let mut damaged = chunk.to_vec();
    damaged[sizes[0] + sizes[1] - 1] ^= 0x40;
    let damaged = bytes::Bytes::from(damaged);
    let trim = |from: i64, max_bytes: u64| {
        oxbow_core::log::read::trim_fetched(std::slice::from_ref(&damaged), from, 5, max_bytes)
    };
    // Reads that return b: CORRUPT_MESSAGE, never its bytes.
    let error = trim(0, 1 << 20).unwrap_err();
    assert_eq!(error.position, sizes[0]);
    assert!(
        error.reason.contains("CRC") || error.reason.contains("crc"),
        "{}",
        error.reason
    );
    assert!(trim(2, 1 << 20).is_err());
    // A read of c alone, which reads b on its way: c, intact.
    let c = trim(4, 1 << 20).unwrap();
    assert_eq!(&c[..], &chunk[sizes[0] + sizes[1]..]);
    // A read of a that stops before b (max_bytes): a, intact.
    let a = trim(0, 1).unwrap();
    assert_eq!(&a[..], &chunk[..sizes[0]]);
}

/// Runs every effect the log has queued (and those their completions queue), counting
/// the checkpoint writes among them.
fn run_counting_checkpoints(h: &mut Harness) -> usize {
    let mut written = 0;
    h.hold = true;
    loop {
        h.pump();
        let Some(effect) = h.held.pop_front() else {
            break;
        };
        written += usize::from(matches!(effect, LogEffect::WriteCheckpoint { .. }));
        for completion in h.disk.execute(effect) {
            h.log.handle_completion(h.now, completion);
        }
    }
    h.hold = false;
    written
}

#[test]
fn a_checkpoint_is_written_only_when_what_it_records_changes() {
    let mut h = Harness::new(small_config());
    h.append(1, "a", 3);
    h.log.sync();
    assert_eq!(
        run_counting_checkpoints(&mut h),
        1,
        "the first sync is recorded at once"
    );
    // Idle: timers, syncs with nothing new (Raft asks), over many checkpoint intervals.
    for _ in 0..200 {
        h.now += Duration::from_millis(250);
        if h.log.poll_timeout().is_some_and(|t| t <= h.now) {
            h.log.handle_timeout(h.now);
        }
        h.log.sync();
        assert_eq!(
            run_counting_checkpoints(&mut h),
            0,
            "an idle log rewrote its checkpoint"
        );
    }
    assert_eq!(h.log.poll_timeout(), None, "an idle log has no timer");
    // A start offset moved past the durable end is recorded only up to it; moving it
    // further before the sync records nothing new, so nothing is written.
    h.append(1, "b", 3);
    h.log.delete_records(h.now, 5).unwrap();
    assert_eq!(
        run_counting_checkpoints(&mut h),
        1,
        "the start moved to the durable end"
    );
    h.log.delete_records(h.now, 6).unwrap();
    assert_eq!(run_counting_checkpoints(&mut h), 0, "the same checkpoint again");
    // The sync makes the rest of the move recordable: written at once.
    h.log.sync();
    assert_eq!(run_counting_checkpoints(&mut h), 1);
    assert_eq!(h.log.durable_start_offset(), 6);
    // A clean close of a log whose checkpoint is current writes none; a restart
    // recovers the same log.
    h.now += Duration::from_secs(5);
    h.log.close(h.now);
    assert_eq!(
        run_counting_checkpoints(&mut h),
        0,
        "close rewrote an unchanged checkpoint"
    );
    h.crash(0);
    h.recover().unwrap();
    assert_eq!(h.log.start_offset(), 6);
    assert_eq!(h.log.next_offset(), 6);
}

#[test]
fn a_checkpoint_in_flight_when_the_disk_fails_does_not_stop_later_ones() {
    let mut h = Harness::new(small_config());
    h.append_synced(1, "a", 4);
    h.hold = true;
    // The start moved: a checkpoint goes out at once. It is still in flight when a
    // disk failure starts a new generation, so its completion will be ignored.
    h.log.delete_records(h.now, 2).unwrap();
    h.pump();
    assert!(h
        .held
        .iter()
        .any(|e| matches!(e, LogEffect::WriteCheckpoint { .. })));
    h.log.handle_completion(
        h.now,
        LogCompletion::Failed {
            generation: 0,
            error: DiskError::Io("boom".into()),
        },
    );
    h.release();
    // Later moves of the start are still checkpointed (DeleteRecords waits for that).
    h.log.delete_records(h.now, 3).unwrap();
    h.log.sync();
    h.pump();
    h.now += Duration::from_secs(10);
    if h.log.poll_timeout().is_some_and(|t| t <= h.now) {
        h.log.handle_timeout(h.now);
    }
    h.pump();
    assert_eq!(
        h.log.durable_start_offset(),
        3,
        "no checkpoint was written after the failure"
    );
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, LogEvent::StartOffsetDurable { start_offset: 3 })));
}
