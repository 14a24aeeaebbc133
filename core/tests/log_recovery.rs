//! Crash recovery: torn tails cut, corruption of synced data reported and never cut,
//! indexes rebuilt, and the on-disk layout of a small segment pinned by a snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_support;

use log_support::{small_config, Harness};
use oxbow_core::log::{RecoveryError, SegmentId};
use std::fmt::Write as _;
use std::time::Duration;

fn segment0() -> SegmentId {
    SegmentId {
        base_offset: 0,
        term: 1,
    }
}

#[test]
fn a_torn_tail_is_cut_and_synced_data_kept() {
    let mut h = Harness::new(small_config());
    for i in 0..5 {
        h.append_synced(1, &format!("durable{i}"), 2);
    }
    h.hold = true;
    h.append(1, "unsynced", 3);
    h.log.sync();
    h.pump();
    // The write reaches the file but not the sync: crash, keeping 30 bytes of it.
    let write = h.held.pop_front().unwrap();
    h.disk.execute(write);
    h.crash(30);
    let report = h.recover().unwrap();
    assert_eq!(report.torn_tails.len(), 1, "{report:?}");
    assert_eq!(h.log.next_offset(), 10);
    assert_eq!(h.fetch_all(0).len(), 10);
    assert_eq!(
        h.disk.file(&segment0().file_name()).unwrap().len() as u64,
        h.log.segments()[0].size_bytes
    );
    h.check_against_scan();
    // And the log carries on from there.
    assert_eq!(h.append_synced(1, "after", 1).base_offset, 10);
}

#[test]
fn a_flipped_bit_in_synced_data_is_reported_not_cut() {
    let mut h = Harness::new(small_config());
    for i in 0..10 {
        h.append_synced(1, &format!("v{i}"), 2);
    }
    h.now += Duration::from_secs(5);
    h.append_synced(1, "last", 1); // a checkpoint covering everything is now due
    let name = segment0().file_name();
    let before = h.disk.file(&name).unwrap().to_vec();
    assert!(h.disk.flip_bit(&name, 200, 3));
    match h.recover() {
        Err(RecoveryError::Corrupted {
            segment, position, ..
        }) => {
            assert_eq!(segment, segment0());
            assert!(position <= 200);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let mut after = h.disk.file(&name).unwrap().to_vec();
    after[200] ^= 1 << 3;
    assert_eq!(after, before, "nothing was cut");
}

#[test]
fn a_flipped_offset_field_outside_the_crc_is_caught_too() {
    let mut h = Harness::new(small_config());
    for i in 0..4 {
        h.append_synced(1, &format!("v{i}"), 1);
    }
    h.now += Duration::from_secs(5);
    h.append_synced(1, "last", 1);
    // Base offset of the second batch is outside the CRC; contiguity catches it.
    let second = oxbow_core::log::batch::iter_batches(h.disk.file(&segment0().file_name()).unwrap())
        .nth(1)
        .unwrap()
        .0;
    h.disk.flip_bit(&segment0().file_name(), second + 7, 0);
    assert!(matches!(h.recover(), Err(RecoveryError::Corrupted { .. })));
}

#[test]
fn missing_and_damaged_indexes_are_rebuilt() {
    let mut h = Harness::new(small_config());
    for i in 0..120 {
        h.append_synced(1, &format!("{i:0>3000}"), 10);
    }
    h.now += Duration::from_secs(5);
    h.append_synced(1, "tail", 1);
    let segments: Vec<SegmentId> = h.log.segments().iter().map(|s| s.id).collect();
    assert!(segments.len() >= 3);
    let expected: Vec<_> = h.log.segments().iter().map(|s| s.index.clone()).collect();
    assert!(h.disk.remove_file(&segments[0].index_file_name()));
    h.disk.flip_bit(&segments[1].index_file_name(), 50, 1);
    let report = h.recover().unwrap();
    assert!(report.rebuilt_indexes.contains(&segments[0]), "{report:?}");
    assert!(report.rebuilt_indexes.contains(&segments[1]), "{report:?}");
    for (segment, index) in h.log.segments().iter().zip(&expected) {
        assert_eq!(segment.index.entries(), index.entries(), "{}", segment.id);
    }
    assert!(
        h.disk.file(&segments[0].index_file_name()).is_some(),
        "rewritten to disk"
    );
    h.check_against_scan();
}

#[test]
fn zero_padding_after_the_last_batch_is_a_clean_end() {
    let mut h = Harness::new(small_config());
    h.append_synced(1, "a", 3);
    h.disk.append_raw(&segment0().file_name(), &[0u8; 4096]);
    let report = h.recover().unwrap();
    assert!(report.torn_tails.is_empty(), "{report:?}");
    assert_eq!(h.log.next_offset(), 3);
    h.check_against_scan();
}

#[test]
fn unsynced_segments_after_a_torn_roll_are_dropped() {
    let mut h = Harness::new(small_config());
    h.append_synced(1, "a", 2);
    h.hold = true;
    h.append(2, "b", 2); // new term: a new segment, never synced
    h.pump();
    let held: Vec<_> = h.held.drain(..).collect();
    for effect in held {
        h.disk.execute(effect);
    }
    h.crash(0);
    let report = h.recover().unwrap();
    assert_eq!(h.log.next_offset(), 2);
    assert!(
        report.deleted_segments.contains(&SegmentId {
            base_offset: 2,
            term: 2
        }),
        "{report:?}"
    );
    h.check_against_scan();
}

#[test]
fn recovery_refuses_bytes_it_did_not_ask_for() {
    let mut h = Harness::new(small_config());
    h.append_synced(1, "a", 1);
    let mut recovery = oxbow_core::log::LogRecovery::new(small_config(), h.disk.recovery_input());
    let oxbow_core::log::RecoveryStep::Read(range) = recovery.poll() else {
        panic!("expected a read");
    };
    let wrong = oxbow_core::log::FileRange { position: 7, ..range };
    recovery.feed(wrong, bytes::Bytes::new());
    assert!(matches!(recovery.finish(), Err(RecoveryError::UnexpectedRead(_))));
}

#[test]
fn small_segment_layout_snapshot() {
    let mut config = small_config();
    config.index_interval_bytes = 100;
    let mut h = Harness::new(config);
    for i in 0..4 {
        let batch = oxbow_core::log::builder::build_batch(
            &[oxbow_core::log::builder::NewRecord {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(format!("value-{i}").into_bytes()),
                timestamp_ms: 1_700_000_000_000 + i,
                headers: vec![],
            }],
            Default::default(),
        );
        h.log.append(h.now, 3, batch).unwrap();
    }
    h.append_synced(4, "next-term", 1); // rolls: segment 0 closes and gets its index
    let mut dump = String::new();
    for name in h.disk.file_names() {
        let bytes = h.disk.file(&name).unwrap();
        writeln!(dump, "== {name} ({} bytes)", bytes.len()).unwrap();
        for (row, chunk) in bytes.chunks(32).enumerate() {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(dump, "{:06x}  {}", row * 32, hex.join(" ")).unwrap();
        }
    }
    writeln!(dump, "== index entries of 0-3").unwrap();
    for entry in h.log.segments()[0].index.entries() {
        writeln!(dump, "{entry:?}").unwrap();
    }
    insta::assert_snapshot!(dump);
}

#[test]
fn the_read_path_catches_rot_in_fields_outside_the_crc() {
    let mut h = Harness::new(small_config());
    for i in 0..6 {
        h.append_synced(1, &format!("v{i}"), 1);
    }
    let name = segment0().file_name();
    let third = oxbow_core::log::batch::iter_batches(h.disk.file(&name).unwrap())
        .nth(2)
        .unwrap()
        .0;
    // Leader epoch (bytes 12..16) of the third batch: outside the CRC.
    h.disk.flip_bit(&name, third + 15, 1);
    let plan = h.log.read_plan(0, u64::MAX / 4, i64::MAX).unwrap();
    let chunks: Vec<_> = plan
        .ranges
        .iter()
        .map(|r| h.disk.read(r.segment, r.position, r.len_bytes))
        .collect();
    let err = oxbow_core::log::read::trim_fetched(&chunks, 0, i64::MAX, u64::MAX).unwrap_err();
    assert!(err.reason.contains("epoch"), "{err}");
    // Base offset of the fourth batch: contiguity catches it.
    h.disk.flip_bit(&name, third + 15, 1);
    let fourth = oxbow_core::log::batch::iter_batches(h.disk.file(&name).unwrap())
        .nth(3)
        .unwrap()
        .0;
    h.disk.flip_bit(&name, fourth + 7, 2);
    let chunks: Vec<_> = plan
        .ranges
        .iter()
        .map(|r| h.disk.read(r.segment, r.position, r.len_bytes))
        .collect();
    assert!(oxbow_core::log::read::trim_fetched(&chunks, 0, i64::MAX, u64::MAX).is_err());
}
