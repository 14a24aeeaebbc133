//! The controller group (Raft group 0 with core's [`ControllerReplica`] on every node)
//! driven through the simulator's faults, with the checker **metadata never diverges
//! between brokers once the controller commits**.
//!
//! A scenario with `replica = "controller"` runs here instead of in [`crate::cluster`]:
//! the controller's storage is not a partition log (it has a snapshot file and a
//! compacted prefix), so it gets its own small store model, while the network
//! ([`SimNetwork`]), the event queue, the seeded streams, the trace, the processes
//! (crash, pause) and the election-safety checker are the simulator's own.
//!
//! * **Messages** leave each node through an [`Outbox`] and travel as real RPC frames
//!   (`oxbow_core::rpc`): batched per broker pair, decoded on arrival (a frame that
//!   does not decode is a violation). Heartbeats are coalesced as the runtime will do
//!   it: once per heartbeat interval each node calls `take_heartbeats` and they leave
//!   in the compact heartbeat frames (`RaftConfig::coalesced_heartbeats`).
//! * **Storage**: every write effect (hard state, append, truncate, snapshot chunk,
//!   install, snapshot file, compaction, commit hint) is applied to the node's current
//!   view at once and becomes durable after a sampled fsync latency, in order; only
//!   then is its completion handed to the replica. A crash keeps the durable state
//!   plus a random prefix of the unsynced writes. Entries are stored as Kafka batches
//!   (`entry_to_batch`), read back with `batch_to_entry`.
//! * **Workload**: every broker registers with a new epoch each time it starts; the
//!   controller leader runs core's [`LivenessTracker`] (heartbeats: each broker's
//!   heartbeat tick, when its link to the leader is up) and proposes its liveness
//!   changes; the rest are commands (topic creation with core's placement, deletion,
//!   partition increases, configs, moves, users, producer ids) generated from the
//!   leader's state.
//! * **Faults** (the scenario's weights): crash + restart, pause, symmetric partition,
//!   one-way cut, leadership transfer. Other fault kinds do not apply here.
//! * **Checkers**: election safety; metadata divergence — after every step each node
//!   reports a digest of its state at its last applied offset, and two nodes must never
//!   report different digests for the same offset ([`MetadataChecker`]); liveness —
//!   after the heal, a new command is applied by every node within the bound.
//!
//! Planted bug (`controller_bugs.commit_hint_from_log_end`): the runtime hands Raft
//! the end of its durable log as the commit hint at restart (instead of a value of
//! `commit_hint()` it persisted), so a restarted node applies entries that may never
//! have committed — and its metadata diverges.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use oxbow_core::controller::{
    place, BrokerRegistration, Command, ControllerConfig, ControllerEffect, ControllerEvent, ControllerInput,
    ControllerReplica, ControllerSetup, ControllerState, LivenessTracker, ScramCredential, ScramMechanism,
};
use oxbow_core::raft::{Effect as RaftEffect, Input as RaftInput, Membership};
use oxbow_core::rpc::{decode_frame, FrameLimits, Outbox, OutboxConfig};
use oxbow_core::time::Instant;

use crate::checker::{record_violation, Checker, Violation};
use crate::cluster::RunResult;
use crate::controller_store::{Completion, Disk, Op};
use crate::coverage::Coverage;
use crate::engine::EventQueue;
use crate::net::{Arrival, NetLimits, NodeId, SimNetwork};
use crate::process::{Liveness, NodeClock, Process};
use crate::rng::{fnv1a64, RngExt, Seeds, SimRng};
use crate::scenario::Scenario;
use crate::trace::Trace;
use crate::trace_event;

/// Bound on pending events.
const MAX_PENDING_EVENTS: usize = 1_000_000;
/// Bound on events of one run.
const MAX_EVENTS: u64 = 20_000_000;
/// The controller's Raft group id in RPC frames.
const CONTROLLER_GROUP: u64 = 0;

/// Metadata divergence: the digest of each node's state at each applied offset.
#[derive(Debug, Default)]
pub struct MetadataChecker {
    digests: BTreeMap<u64, (u64, NodeId)>,
}

impl MetadataChecker {
    /// `node` applied everything through `index` and its state hashes to `digest`.
    pub fn on_applied(&mut self, node: NodeId, index: u64, digest: u64) -> Result<(), Violation> {
        match self.digests.get(&index) {
            Some(&(first, by)) if first != digest => Err(Violation {
                invariant: "metadata-diverged",
                detail: format!(
                    "at controller offset {index} node {by} has metadata {first:016x}, node {node} has {digest:016x}"
                ),
            }),
            Some(_) => Ok(()),
            None => {
                self.digests.insert(index, (digest, node));
                Ok(())
            }
        }
    }
}

struct SimNode {
    process: Process,
    disk: Disk,
    replica: Option<ControllerReplica>,
    outbox: Outbox,
    timer_token: u64,
    reported: Option<u64>,
    persisted_hint: Option<u64>,
}

#[derive(Debug)]
enum Ev {
    Timer { node: NodeId, token: u64 },
    HeartbeatTick { node: NodeId, inc: u64 },
    Deliver { from: NodeId, to: NodeId, frame: Bytes },
    Sync { node: NodeId, inc: u64, seq: u64 },
    Restart { node: NodeId },
    Command,
    Nemesis,
    HealPartition,
    HealOneWay { from: NodeId, to: NodeId },
    Liveness,
    End,
}

impl Ev {
    fn target(&self) -> Option<NodeId> {
        match self {
            Ev::Timer { node, .. } | Ev::Sync { node, .. } | Ev::HeartbeatTick { node, .. } => Some(*node),
            Ev::Deliver { to, .. } => Some(*to),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness,
    Done,
}

/// One simulated controller cluster.
pub struct ControllerSim {
    scenario: Scenario,
    seeds: Seeds,
    queue: EventQueue<Ev>,
    nodes: Vec<SimNode>,
    net: SimNetwork<Bytes>,
    net_rng: SimRng,
    disk_rng: SimRng,
    fault_rng: SimRng,
    work_rng: SimRng,
    trace: Trace,
    coverage: Coverage,
    elections: Checker,
    metadata: MetadataChecker,
    leaders_seen: BTreeMap<u64, NodeId>,
    phase: Phase,
    next_epoch: u64,
    next_name: u64,
    live_target: Option<u64>,
    applied_commands: usize,
    /// The epoch each node registered with at its latest start.
    node_epochs: BTreeMap<NodeId, u64>,
    /// The controller leader's liveness tracker: (leader, term, tracker).
    tracker: Option<(NodeId, u64, LivenessTracker)>,
    violation: Option<Violation>,
}

impl std::fmt::Debug for ControllerSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerSim")
            .field("scenario", &self.scenario.name)
            .field("now", &self.queue.now())
            .finish()
    }
}

/// Runs `seed` of a (swarmed) controller scenario.
pub fn run_controller(seed: u64, scenario: Scenario, keep_trace: bool) -> RunResult {
    ControllerSim::new(seed, scenario, keep_trace).run()
}

fn raft_id(id: NodeId) -> u64 {
    u64::from(id)
}

impl ControllerSim {
    /// A controller cluster of `scenario.nodes` brokers for `seed`.
    pub fn new(seed: u64, scenario: Scenario, keep_trace: bool) -> Self {
        let seeds = Seeds::new(seed);
        let nodes = (0..scenario.nodes)
            .map(|id| SimNode {
                process: Process::new(NodeClock::perfect()),
                disk: Disk::default(),
                replica: None,
                outbox: Outbox::new(raft_id(id), OutboxConfig::default()),
                timer_token: 0,
                reported: None,
                persisted_hint: None,
            })
            .collect();
        ControllerSim {
            net: SimNetwork::new(scenario.network, NetLimits::default()),
            net_rng: seeds.stream("network"),
            disk_rng: seeds.stream("disk"),
            fault_rng: seeds.stream("faults"),
            work_rng: seeds.stream("workload"),
            queue: EventQueue::new(MAX_PENDING_EVENTS),
            trace: Trace::new(keep_trace),
            coverage: Coverage::default(),
            elections: Checker::new(),
            metadata: MetadataChecker::default(),
            leaders_seen: BTreeMap::new(),
            phase: Phase::Safety,
            next_epoch: 1,
            next_name: 0,
            live_target: None,
            applied_commands: 0,
            node_epochs: BTreeMap::new(),
            tracker: None,
            violation: None,
            scenario,
            seeds,
            nodes,
        }
    }

    fn fail(&mut self, v: Violation) {
        let now = self.queue.now();
        let disabled = &self.scenario.disabled_checks;
        if let Some(v) = record_violation(&mut self.violation, disabled, &mut self.coverage, v) {
            trace_event!(self.trace, now, None, "VIOLATION {v}");
        }
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        if let Err(e) = self.queue.schedule_at(at, ev) {
            self.fail(Violation {
                invariant: "simulator-bound",
                detail: e.to_string(),
            });
        }
    }

    fn after(&mut self, delay: Duration, ev: Ev) {
        let at = self.queue.now() + delay;
        self.schedule(at, ev);
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.fault_rng.between(lo, hi))
    }

    /// Runs to the end.
    pub fn run(mut self) -> RunResult {
        let summary = format!(
            "controller {} controller_bugs={:?}",
            self.scenario.summary(),
            self.scenario.controller_bugs
        );
        trace_event!(
            self.trace,
            Instant::ZERO,
            None,
            "start seed={} {summary}",
            self.seeds.seed()
        );
        for id in 0..self.scenario.nodes {
            self.start_node(id);
        }
        let d = Duration::from_millis(self.scenario.client_interval_ms);
        self.after(d, Ev::Command);
        if self.scenario.faults.any() {
            let d = self.ms(
                self.scenario.faults.interval_min_ms,
                self.scenario.faults.interval_max_ms,
            );
            self.after(d, Ev::Nemesis);
        }
        self.schedule(
            Instant::from_millis(self.scenario.safety_secs * 1_000),
            Ev::Liveness,
        );
        let end = (self.scenario.safety_secs + self.scenario.liveness_secs) * 1_000;
        self.schedule(Instant::from_millis(end), Ev::End);
        while self.violation.is_none() && self.phase != Phase::Done {
            let Some((now, ev)) = self.queue.pop() else { break };
            if self.queue.popped() > MAX_EVENTS {
                self.fail(Violation {
                    invariant: "simulator-bound",
                    detail: format!("more than {MAX_EVENTS} events"),
                });
                break;
            }
            // An assertion inside core (an invariant of Raft or the controller) is a
            // failed run with its trace, not a crash of the whole sweep.
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(now, ev)));
            if let Err(panic) = stepped {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                self.fail(Violation {
                    invariant: "core-assertion",
                    detail: message,
                });
            }
        }
        let stats = self.net.stats().clone();
        self.coverage.add("net.lost", stats.lost);
        self.coverage.add("net.duplicated", stats.duplicated);
        self.coverage.add("net.reordered", stats.reordered);
        RunResult {
            violation: self.violation,
            trace_hash: self.trace.hash(),
            trace: self.trace.lines(),
            events: self.queue.popped(),
            sim_time: self.queue.now() - Instant::ZERO,
            coverage: self.coverage,
            scenario_summary: summary,
            acked_writes: self.applied_commands,
        }
    }

    fn step(&mut self, now: Instant, ev: Ev) {
        if let Some(node) = ev.target() {
            if let Some(until) = self.nodes[node as usize].process.paused_until(now) {
                self.schedule(until, ev);
                return;
            }
        }
        match ev {
            Ev::Timer { node, token } => self.on_timer(now, node, token),
            Ev::HeartbeatTick { node, inc } => self.on_heartbeat_tick(now, node, inc),
            Ev::Deliver { from, to, frame } => self.on_deliver(now, from, to, frame),
            Ev::Sync { node, inc, seq } => self.on_sync(now, node, inc, seq),
            Ev::Restart { node } => self.restart_node(node),
            Ev::Command => self.on_command(now),
            Ev::Nemesis => self.nemesis(now),
            Ev::HealPartition => self.net.heal_partitions(),
            Ev::HealOneWay { from, to } => self.net.restore_one_way(from, to),
            Ev::Liveness => self.start_liveness(now),
            Ev::End => self.end(now),
        }
    }

    // ---- nodes -------------------------------------------------------------------

    fn is_up(&self, id: NodeId) -> bool {
        let node = &self.nodes[id as usize];
        node.process.liveness != Liveness::Down && node.replica.is_some()
    }

    fn config(&self) -> ControllerConfig {
        let mut config = ControllerConfig::default();
        config.raft.coalesced_heartbeats = true;
        config
    }

    /// Once per heartbeat interval: every group this node leads (here: group 0) says
    /// what it has to say, packed per peer into one compact frame.
    fn on_heartbeat_tick(&mut self, now: Instant, id: NodeId, inc: u64) {
        let n = id as usize;
        if !self.nodes[n].process.is_current(inc) || !self.is_up(id) {
            return;
        }
        let interval = self.config().raft.heartbeat_interval;
        self.after(interval, Ev::HeartbeatTick { node: id, inc });
        let leader_state = self.tracker.as_ref().and_then(|(leader, _, _)| {
            self.nodes[*leader as usize]
                .replica
                .as_ref()
                .map(|r| r.state().clone())
        });
        let node = &mut self.nodes[n];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        let heartbeats = replica.take_heartbeats(now);
        if let (Some((leader, _, tracker)), Some(&epoch), Some(state)) =
            (self.tracker.as_mut(), self.node_epochs.get(&id), leader_state)
        {
            if id == *leader || self.net.is_connected(id, *leader) {
                tracker.on_heartbeat(now, raft_id(id), epoch, &state);
            }
        }
        if !heartbeats.is_empty() {
            self.coverage.hit("rpc.heartbeats.coalesced");
        }
        if node
            .outbox
            .push_heartbeats([(CONTROLLER_GROUP, heartbeats)])
            .is_err()
        {
            self.coverage.hit("rpc.outbox.refused");
        }
        self.after_step(id);
    }

    fn start_node(&mut self, id: NodeId) {
        let now = self.queue.now();
        let bug = self.scenario.controller_bugs.commit_hint_from_log_end;
        let n = id as usize;
        let recovered = match self.nodes[n].disk.durable.recovered(bug) {
            Ok(r) => r,
            Err(why) => {
                return self.fail(Violation {
                    invariant: "storage-contract",
                    detail: format!("node {id}: stored controller log does not decode: {why}"),
                })
            }
        };
        let inc = self.nodes[n].process.incarnation;
        let seed = fnv1a64(format!("controller/{}/{id}/{inc}", self.seeds.seed()).as_bytes());
        let snapshot_file = self.nodes[n].disk.durable.snapshot.clone();
        let hydrated = snapshot_file.is_some();
        let setup = ControllerSetup {
            node_id: raft_id(id),
            config: self.config(),
            bootstrap: match Membership::with_voters((0..self.scenario.nodes).map(raft_id)) {
                Ok(m) => m,
                Err(e) => {
                    return self.fail(Violation {
                        invariant: "replica-init",
                        detail: e.to_string(),
                    })
                }
            },
            recovered,
            snapshot_file,
            seed,
        };
        match ControllerReplica::new(now, setup) {
            Ok(replica) => {
                if hydrated {
                    self.coverage.hit("controller.snapshot.hydrated");
                }
                trace_event!(
                    self.trace,
                    now,
                    Some(id),
                    "start inc={inc} snapshot={:?} applied={:?}",
                    replica.snapshot_point().map(|s| s.index),
                    replica.last_applied().map(|a| a.index)
                );
                let node = &mut self.nodes[n];
                node.persisted_hint = node.disk.durable.commit_hint;
                node.replica = Some(replica);
                node.outbox = Outbox::new(raft_id(id), OutboxConfig::default());
                node.reported = None;
                let interval = self.config().raft.heartbeat_interval;
                self.after(interval, Ev::HeartbeatTick { node: id, inc });
                self.next_epoch += 1;
                self.node_epochs.insert(id, self.next_epoch);
            }
            Err(e) => {
                return self.fail(Violation {
                    invariant: "replica-init",
                    detail: format!("node {id}: {e}"),
                })
            }
        }
        self.after_step(id);
    }

    fn crash_node(&mut self, id: NodeId) {
        let now = self.queue.now();
        let n = id as usize;
        if self.nodes[n].process.liveness == Liveness::Down {
            return;
        }
        let unsynced = self.nodes[n].disk.pending.len();
        let keep = self.disk_rng.index(unsynced + 1);
        let node = &mut self.nodes[n];
        node.process.crash();
        node.replica = None;
        node.timer_token += 1;
        node.disk.crash(keep);
        self.coverage.hit("fault.crash");
        if keep < unsynced {
            self.coverage.hit("disk.crash.unsynced_lost");
        }
        trace_event!(
            self.trace,
            now,
            Some(id),
            "crash: kept {keep} of {unsynced} unsynced writes"
        );
        let d = self.ms(
            self.scenario.faults.restart_min_ms,
            self.scenario.faults.restart_max_ms,
        );
        self.after(d, Ev::Restart { node: id });
    }

    fn restart_node(&mut self, id: NodeId) {
        let n = id as usize;
        if self.nodes[n].process.liveness != Liveness::Down {
            return;
        }
        self.nodes[n].process.restart();
        self.coverage.hit("fault.restart");
        self.start_node(id);
    }

    fn on_timer(&mut self, now: Instant, id: NodeId, token: u64) {
        if self.nodes[id as usize].timer_token != token || !self.is_up(id) {
            return;
        }
        if let Some(r) = self.nodes[id as usize].replica.as_mut() {
            r.handle_timeout(now);
        }
        self.after_step(id);
    }

    fn on_deliver(&mut self, now: Instant, from: NodeId, to: NodeId, frame: Bytes) {
        let Arrival::Deliver(frame) = self.net.arrive(from, to, frame) else {
            return;
        };
        if !self.is_up(to) {
            return;
        }
        let decoded = match decode_frame(&frame, &FrameLimits::default()) {
            Ok(Some((decoded, used))) if used == frame.len() => decoded,
            other => {
                return self.fail(Violation {
                    invariant: "rpc-frame",
                    detail: format!("frame from {from} to {to} did not decode: {other:?}"),
                })
            }
        };
        self.coverage.hit("rpc.frame.delivered");
        if let Some(r) = self.nodes[to as usize].replica.as_mut() {
            for m in decoded.messages {
                if m.group == CONTROLLER_GROUP {
                    r.handle(now, ControllerInput::Raft(RaftInput::Message(m.message)));
                }
            }
        }
        self.after_step(to);
    }

    fn on_sync(&mut self, now: Instant, id: NodeId, inc: u64, seq: u64) {
        let n = id as usize;
        if !self.nodes[n].process.is_current(inc) || !self.is_up(id) {
            return;
        }
        let completions = self.nodes[n].disk.sync(seq);
        if let Some(r) = self.nodes[n].replica.as_mut() {
            for c in completions {
                match c {
                    Completion::Raft(input) => r.handle(now, ControllerInput::Raft(input)),
                    Completion::Snapshot(last) => r.handle(now, ControllerInput::SnapshotDurable { last }),
                }
            }
        }
        self.after_step(id);
    }

    /// Runs a node's effects against its disk and network, then observes it.
    fn after_step(&mut self, id: NodeId) {
        let n = id as usize;
        let now = self.queue.now();
        let mut writes = Vec::new();
        loop {
            let Some(effect) = self.nodes[n].replica.as_mut().and_then(|r| r.poll_effect()) else {
                break;
            };
            match effect {
                ControllerEffect::WriteSnapshot { last, data } => {
                    writes.push(
                        self.nodes[n]
                            .disk
                            .write(Op::Snapshot(data), Some(Completion::Snapshot(last))),
                    );
                }
                ControllerEffect::Raft(effect) => {
                    if let Some(seq) = self.raft_effect(id, now, effect) {
                        writes.push(seq);
                    }
                }
                other => {
                    return self.fail(Violation {
                        invariant: "replica-contract",
                        detail: format!("node {id}: unexpected effect {other:?}"),
                    })
                }
            }
            if self.violation.is_some() {
                return;
            }
        }
        self.drain_events(id);
        self.persist_commit_hint(id, &mut writes);
        if let Some(&seq) = writes.last() {
            let delay = self.scenario.disk.sync_latency.sample(&mut self.disk_rng);
            let inc = self.nodes[n].process.incarnation;
            self.after(delay, Ev::Sync { node: id, inc, seq });
        }
        self.observe(id);
        self.flush_outbox(id);
        self.arm_timer(id);
    }

    /// Executes one Raft effect; returns the write's sequence number if it wrote.
    fn raft_effect(&mut self, id: NodeId, now: Instant, effect: RaftEffect) -> Option<u64> {
        let node = &mut self.nodes[id as usize];
        let write = |disk: &mut Disk, op: Op, input: Option<RaftInput>| {
            Some(disk.write(op, input.map(Completion::Raft)))
        };
        match effect {
            RaftEffect::Send(message) => {
                if node.outbox.push(CONTROLLER_GROUP, message).is_err() {
                    self.coverage.hit("rpc.outbox.refused");
                }
                None
            }
            RaftEffect::PersistHardState(hs) => write(
                &mut node.disk,
                Op::Hard(hs),
                Some(RaftInput::HardStateDurable(hs)),
            ),
            RaftEffect::Append { write_id, entries } => write(
                &mut node.disk,
                Op::Append(entries),
                Some(RaftInput::WriteDurable { write_id }),
            ),
            RaftEffect::Truncate { write_id, from_index } => {
                self.coverage.hit("raft.truncation");
                write(
                    &mut node.disk,
                    Op::Truncate(from_index),
                    Some(RaftInput::WriteDurable { write_id }),
                )
            }
            RaftEffect::WriteSnapshotChunk {
                write_id,
                meta,
                offset,
                data,
                ..
            } => write(
                &mut node.disk,
                Op::Chunk {
                    last: meta.last,
                    offset,
                    data,
                },
                Some(RaftInput::WriteDurable { write_id }),
            ),
            RaftEffect::InstallSnapshot {
                write_id,
                meta,
                discard_log,
            } => {
                self.coverage.hit("raft.snapshot.installed");
                write(
                    &mut node.disk,
                    Op::Install {
                        last: meta.last,
                        discard_log,
                    },
                    Some(RaftInput::WriteDurable { write_id }),
                )
            }
            RaftEffect::CompactLog { through_index } => {
                write(&mut node.disk, Op::Compact(through_index), None)
            }
            RaftEffect::ReadEntries {
                read_id,
                from_index,
                max_bytes,
                ..
            } => {
                let result = node.disk.current.read(from_index, max_bytes);
                if let Some(r) = node.replica.as_mut() {
                    r.handle(
                        now,
                        ControllerInput::Raft(RaftInput::EntriesRead { read_id, result }),
                    );
                }
                None
            }
            other => {
                self.fail(Violation {
                    invariant: "replica-contract",
                    detail: format!("node {id}: unexpected raft effect {other:?}"),
                });
                None
            }
        }
    }

    fn drain_events(&mut self, id: NodeId) {
        let now = self.queue.now();
        loop {
            let Some(event) = self.nodes[id as usize]
                .replica
                .as_mut()
                .and_then(|r| r.poll_event())
            else {
                return;
            };
            match event {
                ControllerEvent::Applied { at, command, result } => {
                    self.applied_commands += 1;
                    self.coverage.hit(if result.is_ok() {
                        "controller.command.applied"
                    } else {
                        "controller.command.refused_at_apply"
                    });
                    trace_event!(
                        self.trace,
                        now,
                        Some(id),
                        "applied {command} at {}: {}",
                        at.index,
                        result.is_ok()
                    );
                }
                ControllerEvent::Restored { last } => {
                    self.coverage.hit("controller.snapshot.restored");
                    trace_event!(self.trace, now, Some(id), "restored snapshot at {}", last.index);
                }
                ControllerEvent::SnapshotTaken { last } => {
                    self.coverage.hit("raft.snapshot.taken");
                    trace_event!(self.trace, now, Some(id), "snapshot at {}", last.index);
                }
                ControllerEvent::Failed { reason } => {
                    return self.fail(Violation {
                        invariant: "replica-contract",
                        detail: format!("node {id}: controller failed: {reason}"),
                    })
                }
                _ => {}
            }
        }
    }

    /// Persists Raft's commit hint when it moved (a write like any other).
    fn persist_commit_hint(&mut self, id: NodeId, writes: &mut Vec<u64>) {
        let node = &mut self.nodes[id as usize];
        let Some(hint) = node.replica.as_ref().map(|r| r.commit_hint()) else {
            return;
        };
        if hint != node.persisted_hint {
            node.persisted_hint = hint;
            writes.push(node.disk.write(Op::CommitHint(hint), None));
        }
    }

    fn observe(&mut self, id: NodeId) {
        let now = self.queue.now();
        let Some(r) = self.nodes[id as usize].replica.as_ref() else {
            return;
        };
        let (is_leader, term) = (r.is_leader(), r.raft().term());
        let applied = r.last_applied().map(|a| a.index);
        let digest = fnv1a64(&r.state().encode());
        if is_leader {
            if let Err(v) = self.elections.on_leader(id, term) {
                return self.fail(v);
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = self.leaders_seen.entry(term) {
                slot.insert(id);
                self.coverage.hit("raft.election.won");
                trace_event!(self.trace, now, Some(id), "controller leader of term {term}");
            }
        }
        if let Some(index) = applied.filter(|a| Some(*a) != self.nodes[id as usize].reported) {
            self.nodes[id as usize].reported = Some(index);
            if let Err(v) = self.metadata.on_applied(id, index, digest) {
                return self.fail(v);
            }
            self.coverage.hit("controller.metadata.compared");
        }
        if let Some(target) = self.live_target {
            let all = (0..self.scenario.nodes).all(|n| {
                self.nodes[n as usize]
                    .replica
                    .as_ref()
                    .and_then(|r| r.last_applied())
                    .is_some_and(|a| a.index >= target)
            });
            if all && self.phase == Phase::Liveness {
                self.coverage.hit("liveness.reached");
                trace_event!(
                    self.trace,
                    now,
                    None,
                    "liveness: every broker applied offset {target}"
                );
                self.phase = Phase::Done;
            }
        }
    }

    fn flush_outbox(&mut self, id: NodeId) {
        let frames = self.nodes[id as usize].outbox.flush();
        for (to, bytes) in frames {
            let Ok(to) = NodeId::try_from(to) else { continue };
            for (delay, frame) in self.net.send(&mut self.net_rng, id, to, bytes) {
                self.after(delay, Ev::Deliver { from: id, to, frame });
            }
        }
    }

    fn arm_timer(&mut self, id: NodeId) {
        let now = self.queue.now();
        let node = &mut self.nodes[id as usize];
        let Some(at) = node.replica.as_ref().and_then(|r| r.poll_timeout()) else {
            return;
        };
        let at = at.max(now + Duration::from_micros(1));
        node.timer_token += 1;
        let token = node.timer_token;
        self.schedule(at, Ev::Timer { node: id, token });
    }

    // ---- workload ----------------------------------------------------------------

    fn leader(&self) -> Option<NodeId> {
        (0..self.scenario.nodes)
            .filter(|id| self.is_up(*id) && self.nodes[*id as usize].process.liveness == Liveness::Up)
            .filter(|id| {
                self.nodes[*id as usize]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.is_leader())
            })
            .max_by_key(|id| {
                self.nodes[*id as usize]
                    .replica
                    .as_ref()
                    .map_or(0, |r| r.raft().term())
            })
    }

    fn on_command(&mut self, now: Instant) {
        let d = Duration::from_millis(self.work_rng.between(
            self.scenario.client_interval_ms / 2,
            self.scenario.client_interval_ms * 3 / 2,
        ));
        self.after(d, Ev::Command);
        let Some(leader) = self.leader() else { return };
        let Some(state) = self.nodes[leader as usize]
            .replica
            .as_ref()
            .map(|r| r.state().clone())
        else {
            return;
        };
        let term = self.nodes[leader as usize]
            .replica
            .as_ref()
            .map_or(0, |r| r.raft().term());
        if self
            .tracker
            .as_ref()
            .is_none_or(|(l, t, _)| (*l, *t) != (leader, term))
        {
            self.tracker = Some((leader, term, LivenessTracker::new(now, Duration::from_secs(2))));
        }
        let Some(command) = self
            .registration(&state)
            .or_else(|| self.liveness_change(now, &state))
            .or_else(|| self.next_command(&state))
        else {
            return;
        };
        let Some(r) = self.nodes[leader as usize].replica.as_mut() else {
            return;
        };
        match r.propose(now, &command) {
            Ok(at) => {
                self.coverage.hit("controller.command.proposed");
                trace_event!(
                    self.trace,
                    now,
                    Some(leader),
                    "propose {} -> offset {}",
                    command.name(),
                    at.index
                );
                if self.phase == Phase::Liveness && self.live_target.is_none() {
                    self.live_target = Some(at.index);
                }
            }
            Err(e) => {
                self.coverage.hit("controller.command.refused");
                trace_event!(
                    self.trace,
                    now,
                    Some(leader),
                    "propose {} refused: {e}",
                    command.name()
                );
            }
        }
        self.after_step(leader);
    }

    /// A broker that started with an epoch the controller has not recorded yet
    /// registers first.
    fn registration(&self, state: &ControllerState) -> Option<Command> {
        let (&id, &epoch) = self.node_epochs.iter().find(|(id, epoch)| {
            state
                .brokers
                .get(&raft_id(**id))
                .is_none_or(|b| b.registration.epoch < **epoch)
        })?;
        let id = raft_id(id);
        Some(Command::RegisterBroker(BrokerRegistration {
            id,
            rpc_addr: format!("n{id}:33145"),
            kafka_addr: format!("n{id}:9092"),
            rack: Some(["a", "b", "c"][usize::try_from(id % 3).unwrap_or(0)].to_string()),
            epoch,
        }))
    }

    /// The leader's liveness tracker disagrees with the recorded liveness.
    fn liveness_change(&mut self, now: Instant, state: &ControllerState) -> Option<Command> {
        let (_, _, tracker) = self.tracker.as_ref()?;
        let change = tracker.changes(now, state).into_iter().next()?;
        self.coverage.hit("controller.liveness.change");
        Some(change)
    }

    fn next_command(&mut self, state: &ControllerState) -> Option<Command> {
        let topics: Vec<String> = state.metadata.topics.keys().cloned().collect();
        let brokers: Vec<u64> = state.brokers.keys().copied().collect();
        let live = state.live_brokers().count();
        let pick = |rng: &mut SimRng, list: &[String]| {
            (!list.is_empty()).then(|| list[rng.index(list.len())].clone())
        };
        self.next_name += 1;
        let n = self.next_name;
        Some(match self.work_rng.index(9) {
            0 => Command::CancelReassignment {
                topic: pick(&mut self.work_rng, &topics)?,
                partition: 0,
            },
            1 | 2 => {
                let partitions = 1 + self.work_rng.index(4);
                let assignment = place(state, partitions, live.clamp(1, 3)).ok()?;
                Command::CreateTopic {
                    name: format!("t{n}"),
                    configs: BTreeMap::new(),
                    assignment,
                }
            }
            3 => Command::DeleteTopic {
                name: pick(&mut self.work_rng, &topics)?,
            },
            4 => {
                let name = pick(&mut self.work_rng, &topics)?;
                let rf = state.assignments.get(&name)?.first()?.replicas.len();
                Command::CreatePartitions {
                    assignment: place(state, 1, rf).ok()?,
                    name,
                }
            }
            5 => Command::AlterTopicConfigs {
                name: pick(&mut self.work_rng, &topics)?,
                set: BTreeMap::from([("retention.ms".to_string(), format!("{}", 1000 * n))]),
                delete: Default::default(),
            },
            6 => Command::UpsertUser {
                name: format!("user{}", self.work_rng.index(5)),
                credential: ScramCredential {
                    mechanism: ScramMechanism::Sha512,
                    salt: Bytes::from(n.to_be_bytes().to_vec()),
                    stored_key: Bytes::from_static(&[7; 64]),
                    server_key: Bytes::from_static(&[9; 64]),
                    iterations: 4096,
                },
            },
            7 => {
                let name = pick(&mut self.work_rng, &topics)?;
                let p = state.assignments.get(&name)?.first()?;
                if p.target.is_some() {
                    Command::FinishReassignment {
                        topic: name,
                        partition: 0,
                    }
                } else {
                    Command::ReassignPartition {
                        replicas: place(state, 1, p.replicas.len()).ok()?.pop()?,
                        topic: name,
                        partition: 0,
                    }
                }
            }
            _ => {
                let broker = *brokers.get(self.work_rng.index(brokers.len().max(1)))?;
                Command::AllocateProducerIds { broker, count: 100 }
            }
        })
    }

    // ---- faults and phases -------------------------------------------------------

    fn nemesis(&mut self, now: Instant) {
        if self.phase != Phase::Safety {
            return;
        }
        let f = self.scenario.faults.clone();
        let d = self.ms(f.interval_min_ms, f.interval_max_ms);
        self.after(d, Ev::Nemesis);
        let weights = [
            ("crash", f.crash),
            ("pause", f.pause),
            ("partition", f.partition),
            ("one_way", f.one_way),
            ("transfer", f.transfer + f.step_down),
        ];
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            return;
        }
        let mut x = (self.fault_rng.between(0, 1_000_000) as f64) / 1_000_000.0 * total;
        let mut kind = weights[0].0;
        for (name, w) in weights {
            if w > 0.0 && x < w {
                kind = name;
                break;
            }
            x -= w;
        }
        let n = self.nodes.len();
        let victim = u32::try_from(self.fault_rng.index(n)).unwrap_or(0);
        match kind {
            "crash" => self.crash_node(victim),
            "pause" => {
                let d = self.ms(1, f.pause_max_ms);
                self.nodes[victim as usize].process.pause(now + d);
                self.coverage.hit("fault.pause");
                trace_event!(self.trace, now, Some(victim), "pause {d:?}");
            }
            "partition" => {
                let split = 1 + self.fault_rng.index(n.saturating_sub(1).max(1));
                let mut ids: Vec<NodeId> = (0..self.scenario.nodes).collect();
                for i in (1..ids.len()).rev() {
                    let j = self.fault_rng.index(i + 1);
                    ids.swap(i, j);
                }
                let (a, b) = ids.split_at(split.min(ids.len()));
                trace_event!(self.trace, now, None, "partition {a:?} | {b:?}");
                self.net.partition(&[a.to_vec(), b.to_vec()]);
                self.coverage.hit("fault.partition");
                let d = self.ms(f.heal_min_ms, f.heal_max_ms);
                self.after(d, Ev::HealPartition);
            }
            "one_way" => {
                let to = u32::try_from(self.fault_rng.index(n)).unwrap_or(0);
                if to != victim {
                    self.net.cut_one_way(victim, to);
                    self.coverage.hit("fault.one_way");
                    trace_event!(self.trace, now, None, "cut {victim} -> {to}");
                    let d = self.ms(f.heal_min_ms, f.heal_max_ms);
                    self.after(d, Ev::HealOneWay { from: victim, to });
                }
            }
            _ => {
                if let Some(leader) = self.leader() {
                    if let Some(r) = self.nodes[leader as usize].replica.as_mut() {
                        if r.transfer_leadership(now, raft_id(victim)).is_ok() {
                            self.coverage.hit("fault.transfer");
                        }
                    }
                    self.after_step(leader);
                }
            }
        }
    }

    fn start_liveness(&mut self, now: Instant) {
        self.phase = Phase::Liveness;
        trace_event!(self.trace, now, None, "liveness phase: heal everything");
        self.net.heal_partitions();
        let _ = self.net.heal_all();
        for id in 0..self.scenario.nodes {
            let node = &mut self.nodes[id as usize];
            if matches!(node.process.liveness, Liveness::Paused { .. }) {
                node.process.liveness = Liveness::Up;
            }
            if node.process.liveness == Liveness::Down {
                self.restart_node(id);
            }
        }
    }

    fn end(&mut self, now: Instant) {
        if self.phase == Phase::Liveness {
            self.fail(Violation {
                invariant: "liveness",
                detail: format!(
                    "{:?} after the heal, not every broker applied a new controller command (target {:?})",
                    now - Instant::from_millis(self.scenario.safety_secs * 1_000),
                    self.live_target
                ),
            });
        }
        self.phase = Phase::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_checker_flags_two_digests_for_one_offset() {
        let mut c = MetadataChecker::default();
        assert!(c.on_applied(0, 5, 1).is_ok());
        assert!(c.on_applied(1, 5, 1).is_ok());
        assert!(c.on_applied(1, 6, 2).is_ok());
        let v = c.on_applied(2, 5, 9).unwrap_err();
        assert_eq!(v.invariant, "metadata-diverged");
    }
}
