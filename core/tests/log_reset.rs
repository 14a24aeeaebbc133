//! `Log::reset_to` (a follower installing a snapshot past its log): the old log is
//! replaced by an empty one at the snapshot point through one `ResetLog` effect, and a
//! crash at every step of that effect recovers either the old log or the new empty one,
//! never a mix; the new log then grows and recovers like any other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_support;

use log_support::{small_config, Harness};
use oxbow_core::log::checkpoint::Checkpoint;
use oxbow_core::log::io::CHECKPOINT_FILE_NAME;
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::{LogEffect, LogEvent};

/// A log over terms 1..=3 (a segment each), 12 durable offsets and an unsynced tail of
/// 2 more written to the file.
fn old_log() -> (Harness, Vec<(i64, String)>) {
    let mut h = Harness::new(small_config());
    for term in 1..=3 {
        for i in 0..2 {
            h.append_synced(term, &format!("t{term}-{i}"), 2);
        }
    }
    let durable = h.fetch_all(0);
    assert_eq!(durable.len(), 12);
    h.append(3, "unsynced", 2);
    assert_eq!(h.log.segments().len(), 3);
    (h, durable)
}

/// Resets `h.log` to `start_offset` and returns the `ResetLog` effect, not yet run.
fn start_reset(h: &mut Harness, start_offset: i64, term: i64) -> LogEffect {
    h.hold = true;
    let ticket = h.log.reset_to(start_offset, term);
    h.pump();
    assert_eq!(h.held.len(), 1, "one effect: {:?}", h.held);
    let effect = h.held.pop_front().unwrap();
    assert!(matches!(effect, LogEffect::ResetLog { sync_id, .. } if sync_id == ticket.0));
    h.hold = false;
    effect
}

fn assert_old_log(h: &mut Harness, durable: &[(i64, String)]) {
    assert_eq!(h.log.start_offset(), 0);
    let values = h.fetch_all(0);
    assert!(values.len() >= durable.len(), "{values:?}");
    assert_eq!(&values[..durable.len()], durable, "the old log's durable data");
    h.check_against_scan();
}

/// A crash of a copy of `h`'s disk, now, recovers the empty log of the reset.
fn assert_a_crash_now_recovers_empty_at(h: &Harness, start_offset: i64, term: i64) {
    let mut crashed = Harness::new(small_config());
    crashed.disk = h.disk.clone();
    crashed.crash(0);
    crashed.recover().unwrap();
    assert_empty_at(&crashed, start_offset, term);
}

fn assert_empty_at(h: &Harness, start_offset: i64, term: i64) {
    assert_eq!(h.log.start_offset(), start_offset);
    assert_eq!(h.log.next_offset(), start_offset);
    assert!(h.log.segments().is_empty(), "{:?}", h.log.segments());
    assert_eq!(h.log.reset_term(), Some(term));
    let segment_files: Vec<String> = h
        .disk
        .file_names()
        .into_iter()
        .filter(|n| n.ends_with(".log") || n.ends_with(".index"))
        .collect();
    assert!(segment_files.is_empty(), "old files left: {segment_files:?}");
}

#[test]
fn a_crash_at_every_step_of_a_reset_recovers_the_old_or_the_new_log() {
    // Past the old log's end (a follower far behind) and inside it (a follower whose
    // suffix diverges from the leader's).
    for (start_offset, term) in [(40, 5), (7, 2), (13, 3)] {
        let (mut h, durable) = old_log();
        let effect = start_reset(&mut h, start_offset, term);
        let steps = MemDisk::reset_step_count(&effect);
        assert_eq!(steps, 4, "checkpoint and three segments");
        for done in 0..=steps {
            for torn_keep_bytes in [0, 30] {
                let mut crashed = Harness::new(small_config());
                crashed.disk = h.disk.clone();
                crashed.disk.execute_reset_prefix(&effect, done);
                crashed.crash(torn_keep_bytes);
                crashed.recover().unwrap();
                if done == 0 {
                    assert_old_log(&mut crashed, &durable);
                } else {
                    assert_empty_at(&crashed, start_offset, term);
                }
            }
        }
    }
}

#[test]
fn a_completed_reset_reports_its_ticket_and_the_new_log_grows_from_there() {
    let (mut h, _) = old_log();
    let ticket = h.log.reset_to(40, 5);
    h.pump();
    assert!(
        h.events.contains(&LogEvent::SyncDone { ticket }),
        "{:?}",
        h.events
    );
    assert_empty_at(&h, 40, 5);
    // A checkpoint written before anything new is durable keeps the marker.
    let checkpoint = Checkpoint::decode(h.disk.file(CHECKPOINT_FILE_NAME).unwrap()).unwrap();
    assert_eq!(checkpoint.reset_term(), Some(5));
    assert!(h.fetch_all(40).is_empty());
    assert!(
        h.log.read_plan(39, 1024, i64::MAX).is_err(),
        "nothing below the start"
    );

    // Unsynced appends after the reset are lost in a crash: still the empty log.
    h.append(6, "new-unsynced", 2);
    assert_a_crash_now_recovers_empty_at(&h, 40, 5);

    // Synced ones survive, and the old log does not come back.
    h.log.sync();
    h.pump();
    h.append_synced(6, "new", 3);
    h.crash(0);
    h.recover().unwrap();
    assert_eq!(h.log.start_offset(), 40);
    assert_eq!(h.log.next_offset(), 45);
    assert_eq!(h.log.reset_term(), None, "the first segment names the term now");
    let values: Vec<String> = h.fetch_all(40).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        values,
        ["new-unsynced-0", "new-unsynced-1", "new-0", "new-1", "new-2"]
    );
    h.check_against_scan();
}

#[test]
fn a_reset_the_disk_fails_is_issued_again() {
    let (mut h, _) = old_log();
    let effect = start_reset(&mut h, 40, 5);
    let generation = effect.generation();
    h.log.handle_completion(
        h.now,
        oxbow_core::log::LogCompletion::Failed {
            generation,
            error: oxbow_core::log::DiskError::Io("injected".into()),
        },
    );
    h.hold = true;
    h.pump();
    let again = h.held.pop_front().expect("the reset again");
    assert!(matches!(again, LogEffect::ResetLog { .. }));
    assert!(again.generation() > generation);
    h.hold = false;
    for completion in h.disk.execute(again) {
        h.log.handle_completion(h.now, completion);
    }
    h.pump();
    assert_empty_at(&h, 40, 5);
    assert!(h.events.iter().any(|e| matches!(e, LogEvent::SyncDone { .. })));
}

/// Simulator seed 4703 of `scenarios/transactions.toml`: a follower installed a
/// snapshot (reset to 22 after an entry of term 1), appended 22..42 in term 2, and
/// applied the leader's committed log start 32 before its first sync completed. The
/// checkpoint written then recorded a reset marker at 32; the sync that followed made
/// 22..42 durable (and acknowledged) without a new checkpoint. After a crash, recovery
/// took the marker at 32 for an unfinished reset, dropped the segment at 22 with every
/// acknowledged entry, and the leader — whose progress said the follower held 42 —
/// probed it at 42 forever. The marker must stay at the reset's start until the data
/// past it is durable; then the start is recorded as an ordinary checkpoint.
#[test]
fn a_start_moved_before_the_first_sync_after_a_reset_keeps_the_synced_log() {
    let (mut h, _) = old_log();
    h.log.reset_to(40, 5);
    h.pump();
    h.append(6, "new", 10);
    assert_eq!(h.log.next_offset(), 50);
    // The committed start moves inside the unsynced appends.
    assert_eq!(h.log.delete_records(h.now, 45), Ok(45));
    h.pump();
    let checkpoint = Checkpoint::decode(h.disk.file(CHECKPOINT_FILE_NAME).unwrap()).unwrap();
    assert_eq!(
        checkpoint.reset_term(),
        Some(5),
        "still the reset's marker: {checkpoint:?}"
    );
    assert_eq!(
        checkpoint.start_offset, 40,
        "at the reset's start, not the moved one"
    );

    // A crash before the sync: the reset's empty log.
    assert_a_crash_now_recovers_empty_at(&h, 40, 5);

    // The sync lands: a crash keeps everything synced, with the moved start.
    h.log.sync();
    h.pump();
    let checkpoint = Checkpoint::decode(h.disk.file(CHECKPOINT_FILE_NAME).unwrap()).unwrap();
    assert_eq!(checkpoint.reset_term(), None, "{checkpoint:?}");
    assert_eq!(checkpoint.start_offset, 45);
    assert_eq!(checkpoint.known_start_term(), Some(6));
    h.crash(0);
    let report = h.recover().unwrap();
    assert!(report.deleted_segments.is_empty(), "{report:?}");
    assert_eq!(h.log.start_offset(), 45);
    assert_eq!(h.log.next_offset(), 50);
    assert_eq!(h.log.start_term(), Some(6));
    let values: Vec<i64> = h.fetch_all(45).into_iter().map(|(o, _)| o).collect();
    assert_eq!(values, [45, 46, 47, 48, 49]);
    h.check_against_scan();
}
