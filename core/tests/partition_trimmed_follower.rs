//! A follower behind a trimmed leader's log start. Found by the simulator's transaction workload (`runtime-sim/src/txn_sim.rs`
//! with `trim_log = true`): a follower whose log ends below the leader's log start
//! (after `delete_records` — a transaction or group coordinator's checkpoint trim,
//! retention, DeleteRecords — and a leader restart) makes the leader's Raft ask for a
//! snapshot chunk. It once looped forever (the replica refused at once, Raft started
//! over at once) and then left the follower behind for good (data partitions sent no
//! snapshots); now the follower installs a partition snapshot and catches up, and the
//! leader's log start reaches every replica. The tests run the group on a thread and
//! fail if it does not finish.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::{Log, LogConfig, LogRecovery, RecoveryStep};
use oxbow_core::partition::{
    Acks, ProduceToken, Replica, ReplicaEffect, ReplicaEvent, ReplicaInput, ReplicaSetup,
};
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
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

struct Node {
    replica: Replica,
    disk: MemDisk,
    hard_state: HardState,
    events: Vec<ReplicaEvent>,
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
            events: Vec::new(),
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
        while let Some(event) = self.replica.poll_event() {
            self.events.push(event);
        }
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

/// Three fresh replicas of one partition.
fn group(now: Instant) -> BTreeMap<u64, Node> {
    [1u64, 2, 3]
        .into_iter()
        .map(|id| (id, Node::new(now, id, MemDisk::new(), HardState::default())))
        .collect()
}

fn leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    *nodes
        .iter()
        .find(|(_, n)| n.replica.is_leader())
        .map(|(id, _)| id)
        .expect("a leader")
}

/// What a scenario ends with.
#[derive(Debug)]
struct Outcome {
    /// Node 3's log end equals the leader's.
    caught_up: bool,
    /// Log start offsets by node.
    starts: BTreeMap<u64, i64>,
    /// The start offset the trim set.
    trimmed_to: i64,
    /// Snapshots node 3 installed before it crashed.
    installs: u64,
}

fn produce(nodes: &mut BTreeMap<u64, Node>, now: &mut Instant, count: u64, isolated: Option<u64>) {
    for i in 0..count {
        let id = leader(nodes);
        let value = format!("record-{i:04}-{}", "x".repeat(40));
        let batch: Bytes = build_batch(&[NewRecord::value(value, 1)], BatchOptions::default());
        nodes
            .get_mut(&id)
            .unwrap()
            .replica
            .produce(*now, batch, Acks::All, ProduceToken(i))
            .unwrap();
        run(nodes, now, 5, isolated);
    }
}

fn starts(nodes: &BTreeMap<u64, Node>) -> BTreeMap<u64, i64> {
    nodes
        .iter()
        .map(|(id, n)| (*id, n.replica.log().start_offset()))
        .collect()
}

fn scenario() -> Outcome {
    let mut now = Instant::from_millis(1);
    let mut nodes = group(now);
    // Node 3 is cut off while the others write and trim.
    run(&mut nodes, &mut now, 400, Some(3));
    produce(&mut nodes, &mut now, 60, Some(3));
    let mut trimmed_to = 0;
    for node in nodes.values_mut().filter(|n| n.replica.log_end_offset() > 40) {
        let hw = node.replica.high_watermark();
        trimmed_to = hw - 5;
        node.replica.log_mut().delete_records(now, trimmed_to).unwrap();
        node.run(now);
    }
    // Restart the writers: their logs now start past 0.
    for id in [1u64, 2] {
        let old = nodes.remove(&id).unwrap();
        nodes.insert(id, Node::new(now, id, old.disk.clone(), old.hard_state));
    }
    // Heal: node 3 must catch up.
    run(&mut nodes, &mut now, 1_000, None);
    let installs_before_crash = nodes[&3].replica.raft().stats().snapshots_installed;
    // And stay caught up through a crash (unsynced writes lost) and more writes.
    let old = nodes.remove(&3).unwrap();
    let mut disk = old.disk.clone();
    disk.crash(0);
    nodes.insert(3, Node::new(now, 3, disk, old.hard_state));
    produce(&mut nodes, &mut now, 10, None);
    run(&mut nodes, &mut now, 500, None);
    let id = leader(&nodes);
    Outcome {
        caught_up: nodes[&3].replica.log_end_offset() == nodes[&id].replica.log_end_offset(),
        starts: starts(&nodes),
        trimmed_to,
        installs: installs_before_crash,
    }
}

/// In a healthy group only the leader trims; the start reaches the followers through
/// the log, is reported replicated, and stays after the leader is cut off.
fn log_start_scenario() -> (i64, BTreeMap<u64, i64>, bool, BTreeMap<u64, i64>, u64) {
    let mut now = Instant::from_millis(1);
    let mut nodes = group(now);
    run(&mut nodes, &mut now, 400, None);
    produce(&mut nodes, &mut now, 40, None);
    let first = leader(&nodes);
    let trimmed_to = nodes[&first].replica.high_watermark() - 3;
    let node = nodes.get_mut(&first).unwrap();
    node.replica.log_mut().delete_records(now, trimmed_to).unwrap();
    node.events.clear();
    run(&mut nodes, &mut now, 100, None);
    let replicated = nodes[&first].events.iter().any(
        |e| matches!(e, ReplicaEvent::StartOffsetReplicated { start_offset } if *start_offset == trimmed_to),
    );
    let after_trim = starts(&nodes);
    // Cut the leader off; a new one takes over with the same start.
    run(&mut nodes, &mut now, 600, Some(first));
    let second = *nodes
        .iter()
        .find(|(id, n)| **id != first && n.replica.is_leader())
        .map(|(id, _)| id)
        .expect("a new leader");
    produce_on(&mut nodes, &mut now, second, first);
    (trimmed_to, after_trim, replicated, starts(&nodes), second)
}

fn produce_on(nodes: &mut BTreeMap<u64, Node>, now: &mut Instant, id: u64, isolated: u64) {
    let batch: Bytes = build_batch(&[NewRecord::value("after", 1)], BatchOptions::default());
    nodes
        .get_mut(&id)
        .unwrap()
        .replica
        .produce(*now, batch, Acks::All, ProduceToken(999))
        .unwrap();
    run(nodes, now, 20, Some(isolated));
}

#[test]
fn the_leaders_log_start_reaches_every_replica_and_survives_a_leader_change() {
    let (trimmed_to, after_trim, replicated, after_change, second) = log_start_scenario();
    assert!(trimmed_to > 10);
    assert!(replicated, "the leader reports the start replicated");
    assert!(
        after_trim.values().all(|s| *s == trimmed_to),
        "every replica trims to {trimmed_to}: {after_trim:?}"
    );
    assert_eq!(after_change[&second], trimmed_to, "{after_change:?}");
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
        Ok(outcome) => {
            assert!(outcome.caught_up, "the follower did not catch up: {outcome:?}");
            assert!(outcome.installs >= 1, "through a snapshot: {outcome:?}");
            assert!(
                outcome.starts.values().all(|s| *s == outcome.trimmed_to),
                "every replica starts where the leader was trimmed: {outcome:?}"
            );
        }
        Err(_) => panic!("the group did not finish within 60 s: the leader loops on the snapshot send"),
    }
}

/// Found by the simulator (`scenarios/transactions-v2.toml`, seed 20): a replica
/// restarted after a trim moved its log start inside its first segment recovered Raft's
/// snapshot point as (that segment's term, its base - 1). When the segment began a new
/// term, the entry before it is of an older term: once the restarted replica led, the
/// append it probed a lagging follower with named that entry with the wrong term; the
/// follower holds it committed with the right one and dropped every such append, and
/// with the third replica away nothing committed again.
#[test]
fn a_replica_restarted_after_a_trim_in_a_new_term_leads_and_commits() {
    let mut now = Instant::from_millis(1);
    let mut nodes = group(now);
    run(&mut nodes, &mut now, 400, None);
    produce(&mut nodes, &mut now, 10, None);
    run(&mut nodes, &mut now, 50, None);
    // The old leader, cut off, appends one more entry nobody else gets.
    let old_leader = leader(&nodes);
    let base = nodes[&old_leader].replica.log_end_offset();
    let batch: Bytes = build_batch(&[NewRecord::value("lost", 1)], BatchOptions::default());
    let _ = nodes
        .get_mut(&old_leader)
        .unwrap()
        .replica
        .produce(now, batch, Acks::All, ProduceToken(500));
    run(&mut nodes, &mut now, 600, Some(old_leader));
    // A new term starts at `base` on the other two; they write and trim inside its
    // first segment.
    let new_leader = leader(&nodes);
    assert_ne!(new_leader, old_leader);
    produce(&mut nodes, &mut now, 12, Some(old_leader));
    let (term, term_start) = *nodes[&new_leader].replica.log().term_starts().last().unwrap();
    assert_eq!(
        term_start, base,
        "the new term starts where the old leader's commit ended"
    );
    let trim_to = base + 3;
    assert!(nodes[&new_leader].replica.high_watermark() > trim_to);
    nodes
        .get_mut(&new_leader)
        .unwrap()
        .replica
        .log_mut()
        .delete_records(now, trim_to)
        .unwrap();
    run(&mut nodes, &mut now, 100, Some(old_leader));
    // The third replica restarts; its first segment is the new term's first.
    let restarted = *nodes
        .keys()
        .find(|n| **n != old_leader && **n != new_leader)
        .unwrap();
    let old = nodes.remove(&restarted).unwrap();
    assert_eq!(old.replica.log().start_offset(), trim_to);
    assert_eq!(
        (
            old.replica.log().segments()[0].id.base_offset,
            old.replica.log().segments()[0].id.term
        ),
        (term_start, term)
    );
    nodes.insert(
        restarted,
        Node::new(now, restarted, old.disk.clone(), old.hard_state),
    );
    // The new leader goes away; the restarted replica (the longer log) leads the old
    // leader, which must drop its lost entry and follow.
    run(&mut nodes, &mut now, 800, Some(new_leader));
    assert_eq!(leader(&nodes), restarted, "the restarted replica leads");
    produce_on(&mut nodes, &mut now, restarted, new_leader);
    run(&mut nodes, &mut now, 300, Some(new_leader));
    let r = &nodes[&restarted].replica;
    assert_eq!(
        r.high_watermark(),
        r.log_end_offset(),
        "the restarted leader commits with the old leader's vote"
    );
    assert_eq!(
        nodes[&old_leader].replica.log_end_offset(),
        r.log_end_offset(),
        "the old leader caught up"
    );
}
