//! Known gap, found by the simulator's transaction workload (`runtime-sim/src/txn_sim.rs`
//! with `trim_log = true`): a follower whose log ends below the leader's log start
//! (after `delete_records` — a transaction or group coordinator's checkpoint trim,
//! retention, DeleteRecords — and a leader restart) makes the leader's Raft ask for a
//! snapshot chunk; the partition replica answers `SnapshotGone` at once, Raft starts
//! the snapshot send over at once, and the leader loops forever inside one `handle`
//! call. The test runs the group on a thread and fails if it does not finish.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::{Log, LogConfig, LogRecovery, RecoveryStep};
use oxbow_core::partition::{Acks, ProduceToken, Replica, ReplicaEffect, ReplicaInput, ReplicaSetup};
use oxbow_core::raft::{HardState, Membership, Message, RaftConfig};
use oxbow_core::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 512,
        preallocate_bytes: 0,
        max_batch_bytes: 64 * 1024,
        recovery_read_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

struct Node {
    replica: Replica,
    disk: MemDisk,
    hard_state: HardState,
}

impl Node {
    fn new(now: Instant, id: u64, disk: MemDisk, hard_state: HardState) -> Node {
        let mut recovery = LogRecovery::new(log_config(), disk.recovery_input());
        while let RecoveryStep::Read(range) = recovery.poll() {
            recovery.feed(range, disk.read(range.segment, range.position, range.len_bytes));
        }
        let log: Log = recovery.finish().unwrap().0;
        let setup = ReplicaSetup {
            node_id: id,
            raft: RaftConfig::default(),
            bootstrap: Membership::with_voters([1, 2, 3]).unwrap(),
            hard_state,
            config_entries: Vec::new(),
            seed: id,
        };
        Node {
            replica: Replica::new(now, setup, log).unwrap(),
            disk,
            hard_state,
        }
    }

    fn run(&mut self, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(effect) = self.replica.poll_effect() {
            match effect {
                ReplicaEffect::Disk(e) => {
                    for c in self.disk.execute(e) {
                        self.replica.handle(now, ReplicaInput::Disk(c));
                    }
                }
                ReplicaEffect::PersistHardState(hs) => {
                    self.hard_state = hs;
                    self.replica.handle(now, ReplicaInput::HardStateDurable(hs));
                }
                ReplicaEffect::ReadRanges { token, ranges } => {
                    let chunks = ranges
                        .iter()
                        .map(|r| self.disk.read(r.segment, r.position, r.len_bytes))
                        .collect();
                    self.replica.handle(
                        now,
                        ReplicaInput::RangesRead {
                            token,
                            result: Ok(chunks),
                        },
                    );
                }
                ReplicaEffect::Send(m) => out.push(m),
                _ => {}
            }
        }
        while self.replica.poll_event().is_some() {}
        out
    }
}

/// Runs the nodes for `steps` of 10 ms; messages to or from `isolated` are dropped.
fn run(nodes: &mut BTreeMap<u64, Node>, now: &mut Instant, steps: u32, isolated: Option<u64>) {
    let mut network: VecDeque<Message> = VecDeque::new();
    for _ in 0..steps {
        for node in nodes.values_mut() {
            network.extend(node.run(*now));
        }
        while let Some(m) = network.pop_front() {
            if Some(m.to) == isolated || Some(m.from) == isolated {
                continue;
            }
            if let Some(node) = nodes.get_mut(&m.to) {
                node.replica.handle(*now, ReplicaInput::Message(m));
                network.extend(node.run(*now));
            }
        }
        *now += Duration::from_millis(10);
        for node in nodes.values_mut() {
            if node.replica.poll_timeout().is_some_and(|t| t <= *now) {
                node.replica.handle_timeout(*now);
            }
        }
    }
}

fn leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    *nodes
        .iter()
        .find(|(_, n)| n.replica.is_leader())
        .map(|(id, _)| id)
        .expect("a leader")
}

fn scenario() -> bool {
    let mut now = Instant::from_millis(1);
    let mut nodes: BTreeMap<u64, Node> = [1u64, 2, 3]
        .into_iter()
        .map(|id| (id, Node::new(now, id, MemDisk::new(), HardState::default())))
        .collect();
    // Node 3 is cut off while the others write and trim.
    run(&mut nodes, &mut now, 400, Some(3));
    for i in 0..60u64 {
        let id = leader(&nodes);
        let value = format!("record-{i:04}-{}", "x".repeat(40));
        let batch: Bytes = build_batch(&[NewRecord::value(value, 1)], BatchOptions::default());
        nodes
            .get_mut(&id)
            .unwrap()
            .replica
            .produce(now, batch, Acks::All, ProduceToken(i))
            .unwrap();
        run(&mut nodes, &mut now, 5, Some(3));
    }
    for node in nodes.values_mut().filter(|n| n.replica.log_end_offset() > 40) {
        let hw = node.replica.high_watermark();
        node.replica.log_mut().delete_records(now, hw - 5).unwrap();
        node.run(now);
    }
    // Restart the writers: their logs now start past 0.
    for id in [1u64, 2] {
        let old = nodes.remove(&id).unwrap();
        nodes.insert(id, Node::new(now, id, old.disk.clone(), old.hard_state));
    }
    // Heal: node 3 must catch up.
    run(&mut nodes, &mut now, 1_000, None);
    let id = leader(&nodes);
    nodes[&3].replica.log_end_offset() == nodes[&id].replica.log_end_offset()
}

/// Fixed part of the gap: the leader refuses the snapshot read after a delay, so it
/// keeps serving instead of spinning (the follower stays behind; see below).
#[test]
fn a_follower_behind_a_trimmed_leader_does_not_stall_it() {
    let (tx, rx) = std::sync::mpsc::channel();
    // A watchdog for the test (a livelock never returns), not core code.
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(move || {
        let _ = tx.send(scenario());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(60)).is_ok(),
        "the group did not finish within 60 s: the leader loops on the snapshot send"
    );
}

#[test]
fn a_follower_behind_a_trimmed_leader_catches_up() {
    let (tx, rx) = std::sync::mpsc::channel();
    // A watchdog for the test (a livelock never returns), not core code.
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(move || {
        let _ = tx.send(scenario());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(caught_up) => assert!(caught_up, "the follower did not catch up"),
        Err(_) => panic!("the group did not finish within 60 s: the leader loops on the snapshot send"),
    }
}
