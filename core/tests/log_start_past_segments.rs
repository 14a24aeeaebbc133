//! A log whose checkpointed start lies past the end of every segment (seen as
//! transactions seed 6141 on another branch: a restarted replica recovered with log
//! start 100 and one segment, base 73 in term 2, ending at 75; Raft then asked to
//! truncate at 75, the log refused, and "raft appends at the log's end" fired).
//! Recovery brings such a log back empty at its start, and the partition's Raft starts
//! from a snapshot point just before it, in the term the checkpoint recorded — or, for
//! a checkpoint of version 1 that has no term, in the hard state's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_support;

use log_support::{small_config, Harness};
use oxbow_core::log::checkpoint::Checkpoint;
use oxbow_core::log::io::{SegmentId, CHECKPOINT_FILE_NAME};
use oxbow_core::log::Log;
use oxbow_core::partition::{Replica, ReplicaSetup};
use oxbow_core::raft::{HardState, LogId, Membership, RaftConfig};
use oxbow_core::time::Instant;

/// A directory holding one synced segment (base 73, term 2, offsets 73 and 74) and a
/// checkpoint that says the log starts at 100, with `start_term` for the entry at 99.
fn shape(start_term: i64) -> Harness {
    let mut h = Harness::new(small_config());
    h.log = Log::new(small_config(), 73);
    h.append_synced(2, "kept", 2);
    assert_eq!(h.log.segments().len(), 1);
    assert_eq!(h.log.next_offset(), 75);
    let checkpoint = Checkpoint {
        start_offset: 100,
        durable_offset: 74,
        durable_segment: h.log.segments()[0].id,
        durable_position: h.log.segments()[0].size_bytes,
        start_term,
    };
    h.disk.remove_file(CHECKPOINT_FILE_NAME);
    h.disk.append_raw(CHECKPOINT_FILE_NAME, &checkpoint.encode());
    h
}

fn replica_over(log: Log, hard_state: HardState) -> Replica {
    let setup = ReplicaSetup {
        node_id: 1,
        raft: RaftConfig::default(),
        bootstrap: Membership::with_voters([1, 2, 3]).unwrap(),
        hard_state,
        config_entries: Vec::new(),
        seed: 1,
    };
    Replica::new(Instant::from_millis(1), setup, log).unwrap()
}

#[test]
fn a_start_past_the_only_segment_recovers_an_empty_log_at_the_start() {
    let mut h = shape(4);
    let report = h.recover().unwrap();
    assert_eq!(
        report.deleted_segments,
        [SegmentId {
            base_offset: 73,
            term: 2
        }]
    );
    assert!(h.log.segments().is_empty(), "{:?}", h.log.segments());
    assert_eq!(h.log.start_offset(), 100);
    assert_eq!(h.log.next_offset(), 100);
    assert_eq!(h.log.start_term(), Some(4));
    assert!(
        !h.disk.file_names().iter().any(|n| n.ends_with(".log")),
        "{:?}",
        h.disk.file_names()
    );

    // Raft continues from a snapshot point at 99 in the recorded term, with no entry
    // it would have to find in the log.
    let replica = replica_over(h.log, HardState { term: 5, vote: None });
    let meta = replica.raft().log_meta();
    assert_eq!(meta.snapshot(), Some(LogId::new(4, 99)));
    assert_eq!(meta.last_index(), Some(99));

    // The next checkpoint keeps the term, so a second restart knows it as well.
    let mut h = shape(4);
    h.recover().unwrap();
    h.append_synced(5, "next", 1);
    h.log.sync();
    h.pump();
    let checkpoint = Checkpoint::decode(h.disk.file(CHECKPOINT_FILE_NAME).unwrap()).unwrap();
    assert_eq!(checkpoint.start_offset, 100);
    assert_eq!(checkpoint.known_start_term(), Some(4));
    h.crash(0);
    h.recover().unwrap();
    assert_eq!(h.log.start_term(), Some(4));
    let replica = replica_over(h.log, HardState { term: 5, vote: None });
    assert_eq!(replica.raft().log_meta().snapshot(), Some(LogId::new(4, 99)));
    assert_eq!(replica.raft().log_meta().last_index(), Some(100));
}

#[test]
fn without_a_recorded_term_the_empty_log_starts_in_the_hard_states_term() {
    let mut h = shape(-1);
    h.recover().unwrap();
    assert!(h.log.segments().is_empty());
    assert_eq!(h.log.start_offset(), 100);
    assert_eq!(h.log.start_term(), None);
    let replica = replica_over(h.log, HardState { term: 3, vote: None });
    assert_eq!(replica.raft().log_meta().snapshot(), Some(LogId::new(3, 99)));
    assert_eq!(replica.raft().log_meta().last_index(), Some(99));
}

/// Retention deleted whole segments and a crash came before anything past them: the
/// first remaining segment starts exactly at the log start, and the term of the entry
/// before it (in a deleted segment, of an older term) comes from the checkpoint instead
/// of being guessed as the segment's own.
#[test]
fn the_term_before_a_first_segment_at_the_start_comes_from_the_checkpoint() {
    let mut h = Harness::new(small_config());
    h.append_synced(1, "old", 3);
    h.append_synced(3, "new", 3);
    assert_eq!(h.log.segments().len(), 2);
    assert_eq!(h.log.delete_records(h.now, 3), Ok(3));
    h.pump();
    assert_eq!(h.log.segments().len(), 1, "the first segment is deleted");
    let checkpoint = Checkpoint::decode(h.disk.file(CHECKPOINT_FILE_NAME).unwrap()).unwrap();
    assert_eq!(checkpoint.known_start_term(), Some(1));
    h.crash(0);
    h.recover().unwrap();
    assert_eq!(h.log.start_offset(), 3);
    assert_eq!(h.log.start_term(), Some(1));
    let replica = replica_over(h.log, HardState { term: 3, vote: None });
    assert_eq!(replica.raft().log_meta().snapshot(), Some(LogId::new(1, 2)));
}
