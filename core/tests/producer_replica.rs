//! Producer state inside partition replicas, over in-memory disks: retries of stored
//! batches (in flight or committed) are acknowledged with their original offsets and
//! never written twice; the state survives a restart through its snapshot plus the log
//! suffix; a new leader after an election has exactly the state its log implies, and a
//! truncated suffix takes its producer state with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use oxbow_core::log::batch::iter_batches;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord, ProducerFields};
use oxbow_core::log::io::PRODUCER_STATE_FILE_NAME;
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::read::trim_fetched;
use oxbow_core::log::{Log, LogConfig, LogRecovery, RecoveryStep};
use oxbow_core::partition::{
    Acks, ProduceError, ProduceToken, Replica, ReplicaEffect, ReplicaEvent, ReplicaInput, ReplicaSetup,
};
use oxbow_core::raft::{HardState, Membership, Message, RaftConfig};
use oxbow_core::time::Instant;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// A batch of `count` records of producer `pid` at `epoch`, starting at `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Bytes {
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord::value(format!("p{pid}-e{epoch}-s{}", seq + i), 1_000))
        .collect();
    build_batch(
        &records,
        BatchOptions {
            producer: ProducerFields {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
            },
            ..BatchOptions::default()
        },
    )
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

struct Node {
    replica: Replica,
    disk: MemDisk,
    events: Vec<ReplicaEvent>,
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
        let setup = ReplicaSetup {
            node_id: id,
            raft: RaftConfig::default(),
            bootstrap: Membership::with_voters(voters.iter().copied()).unwrap(),
            hard_state,
            config_entries: Vec::new(),
            seed: id,
        };
        let replica = Replica::new(now, setup, recover(&disk)).unwrap();
        Node {
            replica,
            disk,
            events: Vec::new(),
        }
    }

    fn run(&mut self, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(effect) = self.replica.poll_effect() {
            match effect {
                ReplicaEffect::Disk(disk_effect) => {
                    for completion in self.disk.execute(disk_effect) {
                        self.replica.handle(now, ReplicaInput::Disk(completion));
                    }
                }
                ReplicaEffect::PersistHardState(hs) => {
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

    fn acknowledged(&self, token: u64) -> Option<Result<i64, ProduceError>> {
        self.events.iter().find_map(|e| match e {
            ReplicaEvent::ProduceDone { token: t, result } if t.0 == token => Some(result.clone()),
            _ => None,
        })
    }

    /// Every data record value up to the high watermark, with its offset.
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
            for r in
                oxbow_core::log::records::parse_uncompressed_records(&records, header.record_count).unwrap()
            {
                out.push((
                    header.base_offset + r.offset_delta,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
        out
    }
}

fn settle_single(node: &mut Node, now: &mut Instant) {
    for _ in 0..50 {
        node.run(*now);
        if node.replica.is_leader() && !node.replica.producers().is_loading() {
            return;
        }
        if let Some(deadline) = node.replica.poll_timeout() {
            *now = (*now).max(deadline);
            node.replica.handle_timeout(*now);
        }
    }
}

fn assert_no_duplicate_values(values: &[(i64, String)]) {
    let distinct: BTreeSet<&String> = values.iter().map(|(_, v)| v).collect();
    assert_eq!(
        distinct.len(),
        values.len(),
        "a value was written twice: {values:?}"
    );
}

#[test]
fn a_retry_is_acknowledged_with_the_original_offset_in_flight_or_committed_and_written_once() {
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(now, 1, &[1], MemDisk::new(), HardState::default());
    settle_single(&mut node, &mut now);
    let r = &mut node.replica;
    let base = r
        .produce(now, batch(7, 0, 0, 3), Acks::All, ProduceToken(1))
        .unwrap();
    // The retry arrives before the original is durable: it waits for the original.
    let retry = r
        .produce(now, batch(7, 0, 0, 3), Acks::All, ProduceToken(2))
        .unwrap();
    assert_eq!(retry, base);
    assert_eq!(
        node.acknowledged(2),
        None,
        "not before the original is acknowledged"
    );
    node.run(now);
    assert_eq!(node.acknowledged(1), Some(Ok(base)));
    assert_eq!(node.acknowledged(2), Some(Ok(base)));
    // A retry of a committed batch is answered at once, acks=1 too.
    let r = &mut node.replica;
    let next = r
        .produce(now, batch(7, 0, 3, 2), Acks::Leader, ProduceToken(3))
        .unwrap();
    node.run(now);
    let r = &mut node.replica;
    assert_eq!(
        r.produce(now, batch(7, 0, 0, 3), Acks::All, ProduceToken(4)),
        Ok(base)
    );
    assert_eq!(
        r.produce(now, batch(7, 0, 3, 2), Acks::Leader, ProduceToken(5)),
        Ok(next)
    );
    node.run(now);
    assert_eq!(node.acknowledged(4), Some(Ok(base)));
    assert_eq!(node.acknowledged(5), Some(Ok(next)));
    // Gaps, stale epochs and unknown producers are refused with Kafka's codes.
    let r = &mut node.replica;
    let code = |e: ProduceError| e.kafka_error_code();
    assert_eq!(
        r.produce(now, batch(7, 0, 9, 1), Acks::All, ProduceToken(6))
            .map_err(code),
        Err(45)
    );
    assert_eq!(
        r.produce(now, batch(9, 0, 4, 1), Acks::All, ProduceToken(7))
            .map_err(code),
        Err(59)
    );
    r.produce(now, batch(7, 1, 0, 1), Acks::All, ProduceToken(8))
        .unwrap();
    assert_eq!(
        r.produce(now, batch(7, 0, 5, 1), Acks::All, ProduceToken(9))
            .map_err(code),
        Err(47)
    );
    node.run(now);
    let values = node.committed_values();
    assert_eq!(values.len(), 6, "3 + 2 + 1 records: {values:?}");
    assert_no_duplicate_values(&values);
}

#[test]
fn producer_state_recovers_from_its_snapshot_plus_the_log_suffix() {
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(now, 1, &[1], MemDisk::new(), HardState::default());
    settle_single(&mut node, &mut now);
    let mut offsets = BTreeMap::new();
    let mut token = 1;
    let mut produce = |node: &mut Node, now: Instant, pid: i64, seq: i32| {
        let base = node
            .replica
            .produce(now, batch(pid, 0, seq, 2), Acks::All, ProduceToken(token))
            .unwrap();
        token += 1;
        node.run(now);
        offsets.insert((pid, seq), base);
    };
    for seq in (0..10).step_by(2) {
        produce(&mut node, now, 1, seq);
        produce(&mut node, now, 2, seq);
    }
    // The snapshot interval passes: a snapshot of everything committed so far.
    now += Duration::from_secs(61);
    node.replica.handle_timeout(now);
    node.run(now);
    let snapshot = node
        .disk
        .file(PRODUCER_STATE_FILE_NAME)
        .expect("a snapshot")
        .to_vec();
    // More batches after the snapshot, for producer 1 and a new producer 3.
    for seq in (10..16).step_by(2) {
        produce(&mut node, now, 1, seq);
    }
    produce(&mut node, now, 3, 0);
    let before = node.replica.producers().tip().producers().clone();

    for damaged in [false, true] {
        let mut disk = node.disk.clone();
        if damaged {
            let mut bytes = snapshot.clone();
            bytes[10] ^= 0xff;
            disk.execute(oxbow_core::log::LogEffect::WriteStateFile {
                generation: 0,
                name: PRODUCER_STATE_FILE_NAME,
                data: Bytes::from(bytes),
            });
        }
        let mut restarted = Node::new(now, 1, &[1], disk, HardState::default());
        let recovery = restarted.replica.producers().recovery().clone();
        if damaged {
            assert!(recovery.ignored_snapshot.is_some(), "{recovery:?}");
            assert_eq!(recovery.read_from, 0);
        } else {
            assert!(recovery.snapshot_offset.is_some_and(|o| o > 0), "{recovery:?}");
            assert_eq!(recovery.read_from, recovery.snapshot_offset.unwrap());
        }
        // Idempotent produce waits for the suffix to be read.
        settle_single(&mut restarted, &mut now);
        assert!(!restarted.replica.producers().is_loading());
        assert_eq!(restarted.replica.producers().tip().producers(), &before);
        // Retries of batches from before and after the snapshot are duplicates.
        let r = &mut restarted.replica;
        for (pid, seq) in [(1, 14), (1, 10), (2, 8), (3, 0)] {
            let retried = r
                .produce(now, batch(pid, 0, seq, 2), Acks::All, ProduceToken(100))
                .unwrap();
            assert_eq!(retried, offsets[&(pid, seq)], "retry of {pid}/{seq}");
        }
        // And the sequences continue.
        r.produce(now, batch(1, 0, 16, 2), Acks::All, ProduceToken(101))
            .unwrap();
        restarted.run(now);
        assert_no_duplicate_values(&restarted.committed_values());
    }
}

/// Three replicas on a network where `cut` nodes hear nothing and say nothing.
struct Cluster {
    nodes: BTreeMap<u64, Node>,
    network: VecDeque<Message>,
    cut: BTreeSet<u64>,
    now: Instant,
}

impl Cluster {
    fn new() -> Cluster {
        let voters = [1u64, 2, 3];
        let now = Instant::from_millis(1);
        let nodes = voters
            .iter()
            .map(|id| {
                (
                    *id,
                    Node::new(now, *id, &voters, MemDisk::new(), HardState::default()),
                )
            })
            .collect();
        Cluster {
            nodes,
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            now,
        }
    }

    fn step(&mut self) {
        for (id, node) in &mut self.nodes {
            let out = node.run(self.now);
            if !self.cut.contains(id) {
                self.network.extend(out);
            }
        }
        while let Some(message) = self.network.pop_front() {
            if self.cut.contains(&message.to) || self.cut.contains(&message.from) {
                continue;
            }
            if let Some(node) = self.nodes.get_mut(&message.to) {
                node.replica.handle(self.now, ReplicaInput::Message(message));
                let out = node.run(self.now);
                self.network.extend(out);
            }
        }
        self.now += Duration::from_millis(10);
        for node in self.nodes.values_mut() {
            if node.replica.poll_timeout().is_some_and(|t| t <= self.now) {
                node.replica.handle_timeout(self.now);
            }
        }
    }

    /// Runs until a node outside `cut` leads and its log is committed; returns it.
    fn leader(&mut self) -> u64 {
        for _ in 0..3000 {
            self.step();
            let leader = self
                .nodes
                .iter()
                .find(|(id, n)| !self.cut.contains(id) && n.replica.is_leader())
                .map(|(id, _)| *id);
            if let Some(id) = leader {
                let r = &self.nodes[&id].replica;
                if r.high_watermark() == r.log_end_offset() {
                    return id;
                }
            }
        }
        panic!("no leader");
    }
}

#[test]
fn a_new_leader_deduplicates_from_its_log_and_truncation_removes_uncommitted_state() {
    let mut c = Cluster::new();
    let first = c.leader();
    let now = c.now;
    let committed = c
        .nodes
        .get_mut(&first)
        .unwrap()
        .replica
        .produce(now, batch(5, 0, 0, 2), Acks::All, ProduceToken(1))
        .unwrap();
    for _ in 0..50 {
        c.step();
    }
    assert_eq!(c.nodes[&first].acknowledged(1), Some(Ok(committed)));
    // The leader is cut off right after appending seq 2..3: only it has that batch.
    c.cut.insert(first);
    let now = c.now;
    let orphan = c
        .nodes
        .get_mut(&first)
        .unwrap()
        .replica
        .produce(now, batch(5, 0, 2, 2), Acks::All, ProduceToken(2))
        .unwrap();
    c.nodes.get_mut(&first).unwrap().run(now);
    assert!(
        c.nodes[&first].replica.producers().tip().producers()[&5]
            .batches
            .len()
            == 2
    );
    let second = c.leader();
    assert_ne!(second, first);
    // The client retries both batches at the new leader: the committed one is a
    // duplicate (the follower applied it from its log); the orphan is new here.
    let now = c.now;
    let r = &mut c.nodes.get_mut(&second).unwrap().replica;
    assert_eq!(
        r.produce(now, batch(5, 0, 0, 2), Acks::All, ProduceToken(3)),
        Ok(committed)
    );
    let rewritten = r
        .produce(now, batch(5, 0, 2, 2), Acks::All, ProduceToken(4))
        .unwrap();
    assert!(rewritten >= orphan, "written anew, past the new leader's no-op");
    // The old leader rejoins: its orphan is truncated, and its producer state with it.
    c.cut.clear();
    for _ in 0..300 {
        c.step();
    }
    let leader_state = c.nodes[&second].replica.producers().tip().producers().clone();
    for (id, node) in &c.nodes {
        assert_eq!(
            node.replica.log_end_offset(),
            c.nodes[&second].replica.log_end_offset()
        );
        assert_eq!(
            node.replica.producers().tip().producers(),
            &leader_state,
            "replica {id}"
        );
        assert_no_duplicate_values(&node.committed_values());
        assert_eq!(node.committed_values().len(), 4, "replica {id}");
    }
    let stored = &leader_state[&5].batches;
    assert_eq!(stored.back().unwrap().base_offset, rewritten);
}
