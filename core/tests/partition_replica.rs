//! A partition replica — Raft over the partition's Kafka log — driven over in-memory
//! disks: a single voter acknowledging produces after fsync, surviving restarts and a
//! full disk; three replicas replicating, committing and agreeing byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use oxbow_core::log::batch::iter_batches;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::read::trim_fetched;
use oxbow_core::log::records::parse_uncompressed_records;
use oxbow_core::log::{DiskError, Log, LogConfig, LogEffect, LogRecovery, RecoveryStep};
use oxbow_core::partition::{
    Acks, ProduceError, ProduceToken, Replica, ReplicaEffect, ReplicaEvent, ReplicaInput, ReplicaSetup,
};
use oxbow_core::raft::{HardState, Membership, Message, RaftConfig};
use oxbow_core::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<NewRecord> = values.iter().map(|v| NewRecord::value(*v, 1_000)).collect();
    build_batch(&records, BatchOptions::default())
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024 * 1024,
        preallocate_bytes: 0,
        max_batch_bytes: 64 * 1024,
        recovery_read_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

/// One node: a replica, its disk, its durable hard state.
struct Node {
    replica: Replica,
    disk: MemDisk,
    hard_state: HardState,
    events: Vec<ReplicaEvent>,
    /// While `Some`, syncs are kept here instead of executed (fsyncs not yet done).
    held_syncs: Option<Vec<LogEffect>>,
}

fn setup(id: u64, voters: &[u64], hard_state: HardState) -> ReplicaSetup {
    ReplicaSetup {
        node_id: id,
        raft: RaftConfig::default(),
        bootstrap: Membership::with_voters(voters.iter().copied()).unwrap(),
        hard_state,
        config_entries: Vec::new(),
        seed: id,
    }
}

fn recover(disk: &MemDisk) -> Log {
    let mut recovery = LogRecovery::new(log_config(), disk.recovery_input());
    while let RecoveryStep::Read(range) = recovery.poll() {
        recovery.feed(range, disk.read(range.segment, range.position, range.len_bytes));
    }
    recovery.finish().unwrap().0
}

impl Node {
    fn new(now: Instant, id: u64, voters: &[u64], disk: MemDisk, hard_state: HardState) -> Node {
        let log = recover(&disk);
        let replica = Replica::new(now, setup(id, voters, hard_state), log).unwrap();
        Node {
            replica,
            disk,
            hard_state,
            events: Vec::new(),
            held_syncs: None,
        }
    }

    /// Executes local effects; returns messages to send.
    fn run(&mut self, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(effect) = self.replica.poll_effect() {
            match effect {
                ReplicaEffect::Disk(sync @ LogEffect::Sync { .. }) if self.held_syncs.is_some() => {
                    self.held_syncs.get_or_insert_with(Vec::new).push(sync);
                }
                ReplicaEffect::Disk(disk_effect) => {
                    for completion in self.disk.execute(disk_effect) {
                        self.replica.handle(now, ReplicaInput::Disk(completion));
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
                ReplicaEffect::Send(message) => out.push(message),
                other => panic!("unexpected effect {other:?}"),
            }
        }
        while let Some(event) = self.replica.poll_event() {
            self.events.push(event);
        }
        out
    }

    fn acknowledged(&self) -> BTreeMap<u64, Result<i64, ProduceError>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ReplicaEvent::ProduceDone { token, result } => Some((token.0, result.clone())),
                _ => None,
            })
            .collect()
    }

    /// Every (offset, value) of data records up to the high watermark.
    fn committed_values(&self) -> Vec<(i64, String)> {
        let plan = self
            .replica
            .fetch_plan(self.replica.log().start_offset(), u64::MAX / 4)
            .unwrap();
        let chunks: Vec<Bytes> = plan
            .ranges
            .iter()
            .map(|r| self.disk.read(r.segment, r.position, r.len_bytes))
            .collect();
        let bytes = trim_fetched(&chunks, 0, self.replica.high_watermark() - 1, u64::MAX).unwrap();
        let mut out = Vec::new();
        for (at, header) in iter_batches(&bytes) {
            if header.is_control() {
                continue;
            }
            let records = bytes.slice(at + 61..at + header.size_bytes());
            for r in parse_uncompressed_records(&records, header.record_count).unwrap() {
                out.push((
                    header.base_offset + r.offset_delta,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
        out
    }
}

/// Runs a single node until it is quiet, advancing time past its timers.
fn settle_single(node: &mut Node, now: &mut Instant) {
    for _ in 0..50 {
        node.run(*now);
        match node.replica.poll_timeout() {
            Some(deadline) if deadline <= *now + Duration::from_secs(2) => {
                *now = (*now).max(deadline);
                node.replica.handle_timeout(*now);
            }
            _ => break,
        }
        if node.replica.is_leader() {
            node.run(*now);
            break;
        }
    }
}

#[test]
fn a_sole_voter_leads_at_once_and_acknowledges_after_fsync() {
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(now, 1, &[1], MemDisk::new(), HardState::default());
    settle_single(&mut node, &mut now);
    assert!(node.replica.is_leader());
    let base = node
        .replica
        .produce(now, batch(&["a", "b"]), Acks::All, ProduceToken(1))
        .unwrap();
    assert_eq!(base, 1, "the leader's no-op control batch sits at offset 0");
    node.run(now);
    assert_eq!(node.acknowledged().get(&1), Some(&Ok(1)));
    assert_eq!(node.replica.high_watermark(), 3);
    assert_eq!(
        node.committed_values(),
        vec![(1, "a".to_string()), (2, "b".to_string())]
    );
    // Offset 0 is a control batch consumers skip; epoch = term in every batch.
    let err = node
        .replica
        .produce(now, Bytes::from_static(b"garbage"), Acks::All, ProduceToken(2))
        .unwrap_err();
    assert_eq!(err.kafka_error_code(), 2);
    assert_eq!(
        node.replica.end_offset_for_epoch(node.replica.leader_epoch()),
        Some((node.replica.leader_epoch(), 3))
    );
}

#[test]
fn acks_one_answers_when_written_before_the_fsync() {
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(now, 1, &[1], MemDisk::new(), HardState::default());
    settle_single(&mut node, &mut now);
    node.replica
        .produce(now, batch(&["x"]), Acks::Leader, ProduceToken(7))
        .unwrap();
    node.replica
        .produce(now, batch(&["y"]), Acks::None, ProduceToken(8))
        .unwrap();
    node.run(now);
    assert_eq!(node.acknowledged().get(&7), Some(&Ok(1)));
    assert!(!node.acknowledged().contains_key(&8), "acks=0 gets no answer");
}

#[test]
fn data_survives_a_restart_and_the_new_term_continues_the_log() {
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(now, 1, &[1], MemDisk::new(), HardState::default());
    settle_single(&mut node, &mut now);
    for i in 0..5 {
        node.replica
            .produce(now, batch(&[&format!("v{i}")]), Acks::All, ProduceToken(i))
            .unwrap();
        node.run(now);
    }
    let before = node.committed_values();
    let epoch_before = node.replica.leader_epoch();
    node.disk.crash(0);
    let mut restarted = Node::new(now, 1, &[1], node.disk.clone(), node.hard_state);
    settle_single(&mut restarted, &mut now);
    assert!(restarted.replica.is_leader());
    assert!(
        restarted.replica.leader_epoch() > epoch_before,
        "a new term after restart"
    );
    restarted
        .replica
        .produce(now, batch(&["after"]), Acks::All, ProduceToken(99))
        .unwrap();
    restarted.run(now);
    let after = restarted.committed_values();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "nothing acknowledged was lost"
    );
    assert_eq!(after.last().unwrap().1, "after");
    // OffsetForLeaderEpoch: the old epoch ends where the new one began.
    let (epoch, end) = restarted.replica.end_offset_for_epoch(epoch_before).unwrap();
    assert_eq!(epoch, epoch_before);
    assert_eq!(end, before.last().unwrap().0 + 1);
}

#[test]
fn a_restarted_leader_does_not_hand_out_its_high_watermark_before_committing_in_its_term() {
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(now, 1, &[1], MemDisk::new(), HardState::default());
    settle_single(&mut node, &mut now);
    for i in 0..3 {
        node.replica
            .produce(now, batch(&[&format!("v{i}")]), Acks::All, ProduceToken(i))
            .unwrap();
        node.run(now);
    }
    assert!(node.replica.high_watermark_established());
    let acknowledged_end = node.replica.high_watermark();
    node.disk.crash(0);

    // Restart with every fsync held back: the new term's first entry is not committed.
    let mut restarted = Node::new(now, 1, &[1], node.disk.clone(), node.hard_state);
    restarted.held_syncs = Some(Vec::new());
    for _ in 0..50 {
        restarted.run(now);
        if restarted.replica.is_leader() {
            break;
        }
        if let Some(deadline) = restarted.replica.poll_timeout() {
            now = now.max(deadline);
            restarted.replica.handle_timeout(now);
        }
    }
    assert!(restarted.replica.is_leader());
    assert!(
        restarted.replica.high_watermark() < acknowledged_end,
        "the hazard: the restarted leader's high watermark is below what it acknowledged"
    );
    assert!(
        !restarted.replica.high_watermark_established(),
        "nothing of the new term is committed yet (high watermark {}, acknowledged before {acknowledged_end})",
        restarted.replica.high_watermark()
    );
    // Once the fsyncs land, the new term's entry commits and the end is known again.
    for sync in restarted.held_syncs.take().unwrap_or_default() {
        for completion in restarted.disk.execute(sync) {
            restarted.replica.handle(now, ReplicaInput::Disk(completion));
        }
    }
    restarted.run(now);
    assert!(restarted.replica.high_watermark_established());
    assert!(restarted.replica.high_watermark() >= acknowledged_end);
}

#[test]
fn a_full_disk_fails_the_produce_and_the_replica_recovers() {
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(now, 1, &[1], MemDisk::new(), HardState::default());
    settle_single(&mut node, &mut now);
    node.replica
        .produce(now, batch(&["kept"]), Acks::All, ProduceToken(1))
        .unwrap();
    node.run(now);
    node.disk.space_limit_bytes = Some(0);
    node.replica
        .produce(now, batch(&["lost"]), Acks::All, ProduceToken(2))
        .unwrap();
    node.run(now);
    match node.acknowledged().get(&2) {
        Some(Err(e)) => assert_eq!(e.kafka_error_code(), 56, "KAFKA_STORAGE_ERROR"),
        other => panic!("expected a storage error, got {other:?}"),
    }
    node.disk.space_limit_bytes = None;
    for _ in 0..10 {
        settle_single(&mut node, &mut now);
        if node.replica.is_leader() {
            break;
        }
        now += Duration::from_millis(500);
    }
    assert!(node.replica.is_leader(), "the sole voter leads again");
    node.replica
        .produce(now, batch(&["back"]), Acks::All, ProduceToken(3))
        .unwrap();
    node.run(now);
    assert!(node.acknowledged().get(&3).is_some_and(|r| r.is_ok()));
    let values: Vec<String> = node.committed_values().into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, vec!["kept".to_string(), "back".to_string()]);
    let _ = DiskError::NoSpace;
}

#[test]
fn three_replicas_replicate_commit_and_agree() {
    let voters = [1u64, 2, 3];
    let mut now = Instant::from_millis(1);
    let mut nodes: BTreeMap<u64, Node> = voters
        .iter()
        .map(|id| {
            (
                *id,
                Node::new(now, *id, &voters, MemDisk::new(), HardState::default()),
            )
        })
        .collect();
    let mut network: VecDeque<Message> = VecDeque::new();
    let mut produced = 0u64;
    for step in 0..4000 {
        for node in nodes.values_mut() {
            network.extend(node.run(now));
        }
        while let Some(message) = network.pop_front() {
            if let Some(node) = nodes.get_mut(&message.to) {
                node.replica.handle(now, ReplicaInput::Message(message));
                network.extend(node.run(now));
            }
        }
        if let Some(leader) = nodes.values_mut().find(|n| n.replica.is_leader()) {
            if produced < 20 && step % 5 == 0 {
                let value = format!("m{produced}");
                leader
                    .replica
                    .produce(now, batch(&[&value]), Acks::All, ProduceToken(produced))
                    .unwrap();
                produced += 1;
                continue;
            }
        }
        now += Duration::from_millis(10);
        for node in nodes.values_mut() {
            if node.replica.poll_timeout().is_some_and(|t| t <= now) {
                node.replica.handle_timeout(now);
            }
        }
        if produced == 20
            && nodes
                .values()
                .all(|n| n.replica.high_watermark() == nodes[&1].replica.log_end_offset())
        {
            break;
        }
    }
    let leader = nodes.values().find(|n| n.replica.is_leader()).unwrap();
    assert_eq!(leader.acknowledged().values().filter(|r| r.is_ok()).count(), 20);
    let expected = leader.committed_values();
    assert_eq!(expected.len(), 20);
    for node in nodes.values() {
        assert_eq!(
            node.committed_values(),
            expected,
            "replica {} agrees",
            node.replica.raft().id()
        );
        let files = node.disk.file_names();
        assert_eq!(files, leader.disk.file_names());
        for name in files.iter().filter(|n| n.ends_with(".log")) {
            assert_eq!(
                node.disk.file(name),
                leader.disk.file(name),
                "{name} is byte-identical"
            );
        }
    }
}

#[test]
fn appends_that_outlived_their_hard_state_do_not_stop_the_replica() {
    // A term's appends reached the log but its hard state did not (a crash between the
    // two writes): the replica starts, in a term at least the log's.
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(now, 1, &[1], MemDisk::new(), HardState::default());
    settle_single(&mut node, &mut now);
    node.replica
        .produce(now, batch(&["kept"]), Acks::All, ProduceToken(1))
        .unwrap();
    node.run(now);
    let log_term = node.replica.leader_epoch() as u64;
    let stale = HardState { term: 0, vote: None };
    let mut restarted = Node::new(now, 1, &[1], node.disk.clone(), stale);
    settle_single(&mut restarted, &mut now);
    assert!(restarted.replica.is_leader());
    assert!(restarted.replica.leader_epoch() as u64 > log_term);
    assert_eq!(restarted.committed_values().last().unwrap().1, "kept");
}
