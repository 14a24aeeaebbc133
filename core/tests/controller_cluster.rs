//! The controller over real core Raft, in memory: 3 and 5 brokers run group 0, their
//! messages travel as RPC frames (`oxbow_core::rpc`), their logs hold Kafka batches
//! (`partition::control::entry_to_batch`, read back with `batch_to_entry`). Shown:
//! commands commit and every broker's state is byte-identical; a crashed broker
//! restarts from its snapshot file plus the log suffix; a joining broker catches up
//! through an InstallSnapshot of the controller snapshot; a damaged snapshot file is
//! refused with an error.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oxbow_core::controller::*;
use oxbow_core::log::batch::{set_base_offset, set_leader_epoch, validate_batch};
use oxbow_core::partition::control::{batch_to_entry, entry_to_batch};
use oxbow_core::raft::{
    ConfigChange, Effect as RaftEffect, Entry, EntryKind, HardState, Input as RaftInput, LogId, Membership,
    ReadError, RecoveredState, Role,
};
use oxbow_core::rpc::{decode_frame, FrameKind, FrameLimits, Outbox, OutboxConfig};
use oxbow_core::time::Instant;

const TICK: Duration = Duration::from_millis(10);
const CONTROLLER_GROUP: u64 = 0;

/// One broker's durable storage for group 0 (every write is durable at once here).
#[derive(Default)]
struct Disk {
    hard_state: HardState,
    /// Stored Kafka batches by base offset, with (last offset, term).
    log: BTreeMap<u64, (u64, u64, Bytes)>,
    snapshot: Option<Bytes>,
    /// Snapshot files being received, by position.
    incoming_snapshots: BTreeMap<(u64, u64), Vec<u8>>,
    commit_hint: Option<u64>,
    /// Offsets ever read back from the log after a restart (to show suffix-only replay).
    reads_from: Vec<u64>,
}

impl Disk {
    fn append(&mut self, entry: &Entry) {
        let mut batch = BytesMut::from(&entry_to_batch(entry)[..]);
        set_base_offset(&mut batch, entry.index as i64);
        set_leader_epoch(&mut batch, entry.term as i32);
        if let Some((&last_base, _)) = self.log.last_key_value() {
            assert!(last_base < entry.index, "appends at the end");
        }
        self.log
            .insert(entry.index, (entry.last_index, entry.term, batch.freeze()));
    }

    fn entry_at(&self, base: u64) -> Entry {
        let (_, _, batch) = &self.log[&base];
        let header = validate_batch(batch).expect("stored batches are valid Kafka batches");
        batch_to_entry(&header, batch.clone()).expect("stored batches are entries")
    }

    fn read(&mut self, from_index: u64, max_bytes: usize) -> Result<Vec<Entry>, ReadError> {
        self.reads_from.push(from_index);
        let start = self
            .log
            .range(..=from_index)
            .next_back()
            .filter(|(_, (last, _, _))| *last >= from_index)
            .map(|(base, _)| *base)
            .ok_or(ReadError::Compacted)?;
        let mut out = Vec::new();
        let mut size = 0;
        let bases: Vec<u64> = self.log.range(start..).map(|(b, _)| *b).collect();
        for base in bases {
            let entry = self.entry_at(base);
            size += entry.size_bytes();
            out.push(entry);
            if size >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn recovered(&self) -> RecoveredState {
        let snapshot_point = self
            .snapshot
            .as_ref()
            .and_then(|s| SnapshotFile::decode(s, usize::MAX).ok())
            .map(|f| f.meta.last.index);
        let mut recovered = RecoveredState {
            hard_state: self.hard_state,
            commit_hint: self.commit_hint,
            ..RecoveredState::default()
        };
        for (&base, &(last, term, _)) in &self.log {
            if snapshot_point.is_some_and(|s| base <= s) {
                continue;
            }
            if recovered.term_boundaries.last().is_none_or(|(t, _)| *t != term) {
                recovered.term_boundaries.push((term, base));
            }
            recovered.last_index = Some(last);
            let entry = self.entry_at(base);
            if entry.kind == EntryKind::Config {
                recovered.config_entries.push(entry);
            }
        }
        recovered
    }
}

struct Node {
    replica: Option<ControllerReplica>,
    disk: Disk,
    outbox: Outbox,
    applied: Vec<(LogId, Result<Outcome, CommandError>)>,
    restored: Vec<LogId>,
    snapshots_taken: usize,
}

struct Cluster {
    now: Instant,
    bootstrap: Membership,
    config: ControllerConfig,
    nodes: BTreeMap<u64, Node>,
    /// Brokers cut off from everyone.
    isolated: BTreeSet<u64>,
    /// Frames delivered, by kind.
    frames: BTreeMap<FrameKind, usize>,
}

impl Cluster {
    fn new(voters: &[u64]) -> Cluster {
        Cluster::new_with(voters, |_| {})
    }

    fn new_with(voters: &[u64], configure: impl FnOnce(&mut ControllerConfig)) -> Cluster {
        let mut config = ControllerConfig::default();
        // Heartbeats coalesced per broker pair, as the runtime sends them.
        config.raft.coalesced_heartbeats = true;
        configure(&mut config);
        let mut cluster = Cluster {
            now: Instant::from_millis(1_000),
            bootstrap: Membership::with_voters(voters.iter().copied()).unwrap(),
            config,
            nodes: BTreeMap::new(),
            isolated: BTreeSet::new(),
            frames: BTreeMap::new(),
        };
        for &id in voters {
            cluster.add_node(id);
        }
        cluster
    }

    fn add_node(&mut self, id: u64) {
        self.nodes.insert(
            id,
            Node {
                replica: None,
                disk: Disk::default(),
                outbox: Outbox::new(id, OutboxConfig::default()),
                applied: Vec::new(),
                restored: Vec::new(),
                snapshots_taken: 0,
            },
        );
        self.start(id).expect("a fresh broker starts");
    }

    fn start(&mut self, id: u64) -> Result<(), ControllerInitError> {
        let node = self.nodes.get_mut(&id).unwrap();
        let setup = ControllerSetup {
            node_id: id,
            config: self.config.clone(),
            bootstrap: self.bootstrap.clone(),
            recovered: node.disk.recovered(),
            snapshot_file: node.disk.snapshot.clone(),
            seed: id * 7919,
        };
        node.replica = Some(ControllerReplica::new(self.now, setup)?);
        node.disk.reads_from.clear();
        self.drain(id);
        Ok(())
    }

    fn crash(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.replica = None;
        node.outbox.flush();
    }

    fn replica(&self, id: u64) -> &ControllerReplica {
        self.nodes[&id].replica.as_ref().expect("running")
    }

    fn replica_mut(&mut self, id: u64) -> &mut ControllerReplica {
        self.nodes
            .get_mut(&id)
            .unwrap()
            .replica
            .as_mut()
            .expect("running")
    }

    /// Carries out every effect of broker `id`, feeding completions back at once.
    fn drain(&mut self, id: u64) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        while let Some(effect) = replica.poll_effect() {
            match effect {
                ControllerEffect::WriteSnapshot { last, data } => {
                    node.disk.snapshot = Some(data);
                    replica.handle(now, ControllerInput::SnapshotDurable { last });
                }
                ControllerEffect::Raft(effect) => {
                    if let Some(input) = execute(&mut node.disk, &mut node.outbox, effect) {
                        replica.handle(now, ControllerInput::Raft(input));
                    }
                }
                other => panic!("unexpected effect {other:?}"),
            }
        }
        while let Some(event) = replica.poll_event() {
            match event {
                ControllerEvent::Applied { at, result, .. } => node.applied.push((at, result)),
                ControllerEvent::Restored { last } => node.restored.push(last),
                ControllerEvent::SnapshotTaken { .. } => node.snapshots_taken += 1,
                ControllerEvent::Failed { reason } => panic!("broker {id} failed: {reason}"),
                _ => {}
            }
        }
        node.disk.commit_hint = replica.commit_hint();
    }

    /// Flushes every outbox and delivers the frames (dropping those of isolated or
    /// stopped brokers). Returns whether anything was delivered.
    fn deliver(&mut self) -> bool {
        let mut frames = Vec::new();
        for (&from, node) in &mut self.nodes {
            for (to, bytes) in node.outbox.flush() {
                frames.push((from, to, bytes));
            }
        }
        let delivered = !frames.is_empty();
        for (from, to, bytes) in frames {
            if self.isolated.contains(&from) || self.isolated.contains(&to) {
                continue;
            }
            let (frame, used) = decode_frame(&bytes, &FrameLimits::default()).unwrap().unwrap();
            assert_eq!((used, frame.from, frame.to), (bytes.len(), from, to));
            *self.frames.entry(frame.kind).or_default() += 1;
            let now = self.now;
            let Some(replica) = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut()) else {
                continue;
            };
            for m in frame.messages {
                assert_eq!(m.group, CONTROLLER_GROUP);
                replica.handle(now, ControllerInput::Raft(RaftInput::Message(m.message)));
            }
            self.drain(to);
        }
        delivered
    }

    fn tick(&mut self) {
        self.now += TICK;
        let interval_ms = u64::try_from(self.config.raft.heartbeat_interval.as_millis()).unwrap();
        let tick_ms = u64::try_from(TICK.as_millis()).unwrap();
        let heartbeat_round = self.now.as_millis() % interval_ms < tick_ms;
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let now = self.now;
            let node = self.nodes.get_mut(&id).unwrap();
            if let Some(replica) = node.replica.as_mut() {
                if replica.poll_timeout().is_some_and(|t| t <= now) {
                    replica.handle_timeout(now);
                }
                if heartbeat_round {
                    let heartbeats = replica.take_heartbeats(now);
                    node.outbox
                        .push_heartbeats([(CONTROLLER_GROUP, heartbeats)])
                        .expect("outbox has room");
                }
            }
            self.drain(id);
        }
        for _ in 0..20 {
            if !self.deliver() {
                break;
            }
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.tick();
        }
    }

    fn run_until(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Cluster) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "not reached within {limit:?}: {what}");
            self.tick();
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|(id, n)| {
                !self.isolated.contains(id) && n.replica.as_ref().is_some_and(|r| r.is_leader())
            })
            .map(|(id, _)| *id)
            .max_by_key(|id| self.replica(*id).raft().term())
    }

    fn wait_for_leader(&mut self) -> u64 {
        self.run_until("a controller leader", Duration::from_secs(20), |c| {
            c.leader().is_some()
        });
        self.leader().unwrap()
    }

    /// Proposes on the leader (retrying through elections) and waits until every
    /// running, connected broker applied it. Returns the outcome.
    fn commit(&mut self, command: &Command) -> Result<Outcome, CommandError> {
        let end = self.now + Duration::from_secs(30);
        let at = loop {
            assert!(self.now < end, "no leader took {command:?}");
            let leader = self.wait_for_leader();
            let now = self.now;
            match self.replica_mut(leader).propose(now, command) {
                Ok(at) => {
                    self.drain(leader);
                    break at;
                }
                Err(ControllerError::Invalid(e)) => return Err(e),
                Err(_) => self.tick(),
            }
        };
        self.run_until("every broker applied the command", Duration::from_secs(30), |c| {
            c.all_applied(at)
        });
        let leader = self.leader().unwrap();
        self.nodes[&leader]
            .applied
            .iter()
            .find(|(id, _)| *id == at)
            .map(|(_, r)| r.clone())
            .unwrap_or(Ok(Outcome::Done))
    }

    fn running(&self) -> impl Iterator<Item = (u64, &ControllerReplica)> {
        self.nodes
            .iter()
            .filter(|(id, _)| !self.isolated.contains(id))
            .filter_map(|(id, n)| n.replica.as_ref().map(|r| (*id, r)))
    }

    fn all_applied(&self, at: LogId) -> bool {
        self.running()
            .all(|(_, r)| r.last_applied().is_some_and(|a| a.index >= at.index))
    }

    /// Every running broker's state, byte for byte, and the position it reflects.
    fn assert_identical(&self) -> Bytes {
        let states: BTreeMap<u64, (Option<LogId>, Bytes)> = self
            .running()
            .map(|(id, r)| (id, (r.last_applied(), r.state().encode())))
            .collect();
        let first = states.values().next().unwrap().clone();
        for (id, state) in &states {
            assert_eq!(state.1, first.1, "broker {id} diverged");
        }
        first.1
    }
}

/// Runs one Raft storage or network effect against the in-memory disk; returns the
/// completion to feed back, if any.
fn execute(disk: &mut Disk, outbox: &mut Outbox, effect: RaftEffect) -> Option<RaftInput> {
    match effect {
        RaftEffect::Send(message) => {
            outbox.push(CONTROLLER_GROUP, message).expect("outbox has room");
            None
        }
        RaftEffect::PersistHardState(hs) => {
            disk.hard_state = hs;
            Some(RaftInput::HardStateDurable(hs))
        }
        RaftEffect::Append { write_id, entries } => {
            for entry in &entries {
                disk.append(entry);
            }
            Some(RaftInput::WriteDurable { write_id })
        }
        RaftEffect::Truncate { write_id, from_index } => {
            disk.log.retain(|base, _| *base < from_index);
            Some(RaftInput::WriteDurable { write_id })
        }
        RaftEffect::WriteSnapshotChunk {
            write_id,
            meta,
            offset,
            data,
            ..
        } => {
            let file = disk
                .incoming_snapshots
                .entry((meta.last.term, meta.last.index))
                .or_default();
            if offset == 0 {
                file.clear();
            }
            assert_eq!(file.len() as u64, offset, "chunks in order");
            file.extend_from_slice(&data);
            Some(RaftInput::WriteDurable { write_id })
        }
        RaftEffect::InstallSnapshot {
            write_id,
            meta,
            discard_log,
        } => {
            let key = (meta.last.term, meta.last.index);
            let file = disk
                .incoming_snapshots
                .remove(&key)
                .expect("received before installed");
            disk.incoming_snapshots.retain(|k, _| *k > key);
            disk.snapshot = Some(Bytes::from(file));
            if discard_log {
                disk.log.clear();
            } else {
                disk.log.retain(|base, _| *base > meta.last.index);
            }
            Some(RaftInput::WriteDurable { write_id })
        }
        RaftEffect::CompactLog { through_index } => {
            disk.log.retain(|_, (last, _, _)| *last > through_index);
            None
        }
        RaftEffect::ReadEntries {
            read_id,
            from_index,
            max_bytes,
            ..
        } => Some(RaftInput::EntriesRead {
            read_id,
            result: disk.read(from_index, max_bytes),
        }),
        other => panic!("unexpected raft effect {other:?}"),
    }
}

fn register(id: u64, epoch: u64, rack: &str) -> Command {
    Command::RegisterBroker(BrokerRegistration {
        id,
        rpc_addr: format!("10.0.0.{id}:33145"),
        kafka_addr: format!("10.0.0.{id}:9092"),
        rack: Some(rack.to_string()),
        epoch,
    })
}

fn create_topic(cluster: &mut Cluster, name: &str, partitions: usize, rf: usize) -> Command {
    let leader = cluster.wait_for_leader();
    let assignment = place(cluster.replica(leader).state(), partitions, rf).expect("placeable");
    Command::CreateTopic {
        name: name.to_string(),
        configs: BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]),
        assignment,
    }
}

fn credential() -> ScramCredential {
    ScramCredential {
        mechanism: ScramMechanism::Sha256,
        salt: Bytes::from_static(b"NaCl"),
        stored_key: Bytes::from_static(&[1; 32]),
        server_key: Bytes::from_static(&[2; 32]),
        iterations: 8192,
    }
}

#[test]
fn three_brokers_commit_commands_and_reach_identical_state() {
    let mut c = Cluster::new(&[1, 2, 3]);
    for id in 1..=3 {
        assert_eq!(
            c.commit(&register(id, 1, ["a", "b", "c"][id as usize - 1])),
            Ok(Outcome::Done)
        );
    }
    let topic = create_topic(&mut c, "orders", 6, 3);
    assert!(matches!(c.commit(&topic), Ok(Outcome::TopicCreated { .. })));
    assert_eq!(
        c.commit(&Command::AlterTopicConfigs {
            name: "orders".into(),
            set: BTreeMap::from([("segment.bytes".into(), "1048576".into())]),
            delete: BTreeSet::from(["retention.ms".to_string()]),
        }),
        Ok(Outcome::Done)
    );
    assert_eq!(
        c.commit(&Command::UpsertUser {
            name: "alice".into(),
            credential: credential()
        }),
        Ok(Outcome::Done)
    );
    assert_eq!(
        c.commit(&Command::AllocateProducerIds {
            broker: 2,
            count: 1000
        }),
        Ok(Outcome::ProducerIds {
            first: 0,
            count: 1000
        })
    );
    // Validation on the leader answers with Kafka error codes and commits nothing.
    let err = c.commit(&topic).unwrap_err();
    assert_eq!(err.kafka_error_code(), 36, "TOPIC_ALREADY_EXISTS");
    let state = ControllerState::decode(&c.assert_identical()).unwrap();
    assert_eq!(state.metadata.topics["orders"].partitions, 6);
    assert_eq!(state.assignments["orders"].len(), 6);
    assert!(state.assignments["orders"]
        .iter()
        .all(|p| p.replicas.iter().collect::<BTreeSet<_>>().len() == 3));
    assert_eq!(
        state.metadata.topics["orders"]
            .configs
            .get("segment.bytes")
            .map(String::as_str),
        Some("1048576")
    );
    assert!(state.users.contains_key("alice"));
    // Raft messages and the coalesced heartbeats (and their answers) travelled as frames.
    for kind in [
        FrameKind::Raft,
        FrameKind::Heartbeats,
        FrameKind::HeartbeatResponses,
    ] {
        assert!(c.frames.get(&kind).copied().unwrap_or(0) > 0, "no {kind:?} frame");
    }
    // No deadline is left in the past once the brokers are quiet (no busy loop).
    c.run_for(Duration::from_secs(61));
    for (id, r) in c.running() {
        assert!(
            r.poll_timeout().is_none_or(|t| t > c.now),
            "broker {id} would spin"
        );
    }
    // Every broker wrote a snapshot of the state it reached.
    for (id, node) in &c.nodes {
        assert!(node.snapshots_taken > 0, "broker {id} took a snapshot");
        let file = SnapshotFile::decode(node.disk.snapshot.as_ref().unwrap(), usize::MAX).unwrap();
        assert_eq!(file.meta.membership, c.bootstrap);
    }
}

#[test]
fn five_brokers_survive_a_leader_crash_and_the_restarted_broker_hydrates_from_its_snapshot() {
    let mut c = Cluster::new_with(&[1, 2, 3, 4, 5], |config| {
        // Everything after the first command counts as rapid: snapshots wait for
        // `max_age`, so a log suffix after the snapshot exists.
        config.snapshot.rapid_window = Duration::from_secs(30);
    });
    for id in 1..=5 {
        c.commit(&register(id, 1, "r")).unwrap();
    }
    let t = create_topic(&mut c, "a", 5, 3);
    c.commit(&t).unwrap();
    // A command too large for the controller log is refused before it is proposed.
    let huge = create_topic(&mut c, "huge", 100_000, 5);
    let err = c.commit(&huge).unwrap_err();
    assert_eq!(err.kafka_error_code(), 42, "INVALID_REQUEST: {err}");
    // Let the snapshot timers run out so every broker's snapshot covers "a".
    c.run_for(Duration::from_secs(61));
    let old_leader = c.wait_for_leader();
    let snapshot_point = c.replica(old_leader).snapshot_point().unwrap();
    // A command after the snapshot: it lives only in the log suffix.
    assert!(matches!(
        c.commit(&Command::AllocateProducerIds { broker: 1, count: 10 }),
        Ok(Outcome::ProducerIds { .. })
    ));
    assert_eq!(c.replica(old_leader).snapshot_point(), Some(snapshot_point));
    let at_crash = c.replica(old_leader).state().encode();
    c.crash(old_leader);
    // More commands while it is down; the survivors elect a new controller.
    let t = create_topic(&mut c, "b", 3, 3);
    c.commit(&t).unwrap();
    c.commit(&Command::SetBrokerLiveness {
        broker: old_leader,
        epoch: 1,
        alive: false,
    })
    .unwrap();
    assert_ne!(c.leader(), Some(old_leader));
    let before = c.assert_identical();

    // Restart: state from the snapshot file, then only the log suffix after it.
    c.start(old_leader).unwrap();
    let restarted = c.replica(old_leader);
    assert_eq!(
        restarted.snapshot_point().map(|s| s.index),
        Some(snapshot_point.index)
    );
    let reads = &c.nodes[&old_leader].disk.reads_from;
    assert!(
        reads.iter().all(|from| *from > snapshot_point.index),
        "replay reads only the suffix after offset {}: {reads:?}",
        snapshot_point.index
    );
    assert!(!reads.is_empty(), "the suffix was read back and applied");
    assert!(restarted.last_applied().unwrap().index > snapshot_point.index);
    assert_eq!(
        restarted.state().encode(),
        at_crash,
        "snapshot + suffix give the state at the crash, before any message arrives"
    );
    c.run_until("the restarted broker caught up", Duration::from_secs(30), |c| {
        c.replica(old_leader).state().encode() == before
    });
    c.commit(&register(old_leader, 2, "r")).unwrap();
    let state = ControllerState::decode(&c.assert_identical()).unwrap();
    assert!(state.brokers[&old_leader].alive);
    assert_eq!(state.brokers[&old_leader].registration.epoch, 2);
    // A stale registration of the earlier run is refused.
    assert_eq!(
        c.commit(&register(old_leader, 1, "r"))
            .unwrap_err()
            .kafka_error_code(),
        77
    );

    // Two brokers down: the other three still commit.
    let leader = c.wait_for_leader();
    let others: Vec<u64> = (1..=5).filter(|id| *id != leader).take(2).collect();
    for id in &others {
        c.crash(*id);
    }
    c.commit(&Command::DeleteTopic { name: "a".into() }).unwrap();
    for id in &others {
        c.start(*id).unwrap();
    }
    c.run_until("all five agree again", Duration::from_secs(30), |c| {
        let states: BTreeSet<Bytes> = c.running().map(|(_, r)| r.state().encode()).collect();
        states.len() == 1
    });
    assert!(!ControllerState::decode(&c.assert_identical())
        .unwrap()
        .metadata
        .topics
        .contains_key("a"));
}

#[test]
fn a_joining_broker_catches_up_through_the_snapshot() {
    let mut c = Cluster::new(&[1, 2, 3]);
    for id in 1..=3 {
        c.commit(&register(id, 1, "r")).unwrap();
    }
    for name in ["t1", "t2", "t3"] {
        let t = create_topic(&mut c, name, 4, 2);
        c.commit(&t).unwrap();
    }
    c.run_for(Duration::from_secs(61));
    let leader = c.wait_for_leader();
    let first_stored = *c.nodes[&leader].disk.log.keys().next().unwrap_or(&u64::MAX);
    assert!(first_stored > 0, "the leader compacted its log prefix");

    // Broker 4 starts empty and joins as a learner.
    c.add_node(4);
    let now = c.now;
    c.replica_mut(leader)
        .change_membership(now, ConfigChange::AddLearner(4))
        .unwrap();
    c.drain(leader);
    c.run_until("broker 4 restored the snapshot", Duration::from_secs(30), |c| {
        !c.nodes[&4].restored.is_empty()
    });
    c.run_until("broker 4 caught up", Duration::from_secs(30), |c| {
        c.replica(4).state().encode() == c.replica(leader).state().encode()
    });
    c.commit(&register(4, 1, "r")).unwrap();
    let state = ControllerState::decode(&c.assert_identical()).unwrap();
    assert_eq!(state.brokers.len(), 4);
    assert_eq!(state.assignments.len(), 3);
    assert!(c.replica(4).raft().membership().learners().contains(&4));
    assert_eq!(c.replica(4).raft().role(), Role::Follower);
}

#[test]
fn a_damaged_snapshot_file_is_refused_not_trusted() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.commit(&register(1, 1, "r")).unwrap();
    c.run_until("broker 2 has a snapshot", Duration::from_secs(70), |c| {
        c.nodes[&2].disk.snapshot.is_some()
    });
    c.crash(2);
    let node = c.nodes.get_mut(&2).unwrap();
    let mut damaged = node.disk.snapshot.clone().unwrap().to_vec();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x04;
    node.disk.snapshot = Some(Bytes::from(damaged));
    assert!(matches!(c.start(2), Err(ControllerInitError::Snapshot(_))));
}
