//! Reproducer of a core Raft finding of the controller simulation
//! (`scenarios/controller.toml`, 2 to 4 seeds in 2,000, e.g. 922): a follower that
//! has just accepted the last chunk of a newer snapshot (install emitted, not yet
//! durable) accepts the delayed last chunk of an *older* snapshot from the same leader
//! and term, resets its log back to it, and then trips `assert!(durable <= last)` when
//! the first install becomes durable. `raft/snapshot.rs::on_snapshot_chunk` checks the
//! chunk against the commit offset only, not against the snapshot already installed.
//!
//! Fixed: such a chunk is dropped (`DropReason::StaleSnapshot`).

use bytes::Bytes;
use oxbow_core::raft::*;
use oxbow_core::time::Instant;

fn chunk(last_index: u64, membership: &Membership) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::InstallSnapshot(SnapshotChunk {
            meta: SnapshotMeta {
                last: LogId::new(1, last_index),
                membership: membership.clone(),
            },
            offset: 0,
            data: Bytes::from_static(b"state"),
            done: true,
        }),
    }
}

#[test]
fn an_older_snapshot_never_replaces_a_newer_one() {
    let membership = Membership::with_voters([1, 2, 3]).unwrap();
    let now = Instant::from_millis(10);
    let mut raft = Raft::new(
        2,
        RaftConfig::default(),
        membership.clone(),
        RecoveredState::default(),
        7,
        now,
    )
    .unwrap();
    raft.handle(now, Input::Message(chunk(67, &membership)));
    raft.handle(now, Input::Message(chunk(44, &membership)));
    let mut last_write = None;
    while let Some(effect) = raft.poll_effect() {
        match effect {
            Effect::WriteSnapshotChunk { write_id, .. } | Effect::InstallSnapshot { write_id, .. } => {
                last_write = Some(write_id)
            }
            Effect::PersistHardState(hs) => raft.handle(now, Input::HardStateDurable(hs)),
            _ => {}
        }
    }
    if let Some(write_id) = last_write {
        raft.handle(now, Input::WriteDurable { write_id });
    }
    assert_eq!(
        raft.snapshot().map(|s| s.last.index),
        Some(67),
        "the snapshot never goes back"
    );
    assert!(raft.durable_index() <= raft.last_log_id().map(|l| l.index));
}
