//! The cluster driver: N simulated nodes, each a [`Replica`] whose log lives on its own
//! [`SimDisk`] through core's `Log`, connected by a [`SimNetwork`], written to and read
//! by simulated clients, and hit by a nemesis of seeded faults. Every event is traced,
//! and the checkers look at every step.
//!
//! # A run
//!
//! 1. **Safety phase** (`safety_secs`): clients write and read; the nemesis injects the
//!    scenario's faults (crashes with torn writes, pauses, partitions, one-way cuts, held
//!    links, slow links, clock jumps, bit rot, ENOSPC, leader churn).
//! 2. **Liveness phase** (at most `liveness_secs`): the network heals, every node whose
//!    disk still works restarts, faults stop. Within the bound a leader must be elected,
//!    a new write acknowledged and a full read must return it; otherwise the seed fails.
//! 3. **Final checks**: log matching across live nodes, the final leader holds every
//!    committed entry, and the Jepsen-style queue checks over the client history.
//!
//! Clients talk to nodes directly (no simulated network between client and node):
//! client–broker traffic arrives with the broker and Kafka client issues.
//!
//! A storage error a node cannot continue from (ENOSPC, an I/O error) stops the node,
//! as a broker whose disk failed; it restarts later from its disk. Corruption found by
//! recovery in synced data takes the node out for good (bit rot is aimed at one node per
//! run, so a majority always stays).

use crate::checker::{check_history, check_log_matching, record_violation, Checker, EntryId, Violation};
use crate::coverage::Coverage;
use crate::disk::SimDisk;
use crate::engine::EventQueue;
use crate::group_sim::{GroupEv, GroupSim};
use crate::history::{payload_value, value_payload, History, OpId, OpOutcome, ReadRecord};
use crate::log_disk::LogIo;
use crate::model_raft::Restored;
use crate::net::{Arrival, LinkConfig, NetLimits, NodeId, SimNetwork};
use crate::process::{Liveness, NodeClock, Process};
use crate::replica::{
    Churn, EntryKind, HardState, MsgDisplay, ProposeError, Replica, ReplicaEffect, Role, StorageOp,
};
use crate::rng::{fnv1a64, RngExt, Seeds, SimRng};
use crate::scenario::{LogReads, Scenario};
use crate::store::{partition_dir, NodeStore, StoreError, StoreWork};
use crate::trace::Trace;
use crate::trace_event;
use bytes::Bytes;
use oxbow_core::log::batch::iter_batches;
use oxbow_core::log::checkpoint::Checkpoint;
use oxbow_core::log::io::CHECKPOINT_FILE_NAME;
use oxbow_core::log::LogCompletion;
use oxbow_core::log::SegmentId;
use oxbow_core::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

/// Bound on pending events.
pub const MAX_PENDING_EVENTS: usize = 1_000_000;
/// Byte offset of the CRC field in a v2 record batch; CRC32C covers what follows it.
const CRC_FIELD_OFFSET: usize = 17;
/// Bound on events of one run (a runaway guard).
pub const MAX_EVENTS: u64 = 50_000_000;

/// Builds replicas: at first start and at every restart from disk.
pub trait NodeFactory {
    /// The replica type.
    type R: Replica;
    /// Starts node `id` of `peers` from `restored`, with its own seeded `rng`. The flag
    /// says the replica had to raise its term to its log's last term (see
    /// [`crate::core_replica`]); an error is a broken contract and fails the run.
    fn start(
        &mut self,
        id: NodeId,
        peers: &[NodeId],
        rng: SimRng,
        now: Instant,
        restored: Restored,
    ) -> Result<(Self::R, bool), String>;
}

#[derive(Debug)]
enum Heal {
    Partition,
    Link(NodeId, NodeId),
    Release(NodeId, NodeId),
    Slow(NodeId),
    SlowDisk(NodeId),
    Enospc(NodeId),
}

/// A Raft group (one partition) in the simulated cluster; every node runs every group.
pub type GroupId = u32;

#[derive(Debug)]
enum Ev<M> {
    Timer {
        node: NodeId,
        group: GroupId,
        token: u64,
    },
    Deliver {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        msg: M,
    },
    LogIo {
        node: NodeId,
        group: GroupId,
        inc: u64,
        io: LogIo,
    },
    HardState {
        node: NodeId,
        group: GroupId,
        inc: u64,
        seq: u64,
        hs: HardState,
    },
    Restart {
        node: NodeId,
    },
    Nemesis,
    Heal(Heal),
    ClientWrite {
        client: u32,
    },
    ClientRead {
        client: u32,
    },
    Liveness,
    End,
    /// The consumer-group workload ([`crate::group_sim`]).
    Groups(GroupEv),
}

impl<M> Ev<M> {
    /// The node an event is for, if it is for one (paused nodes defer these).
    fn target(&self) -> Option<NodeId> {
        match self {
            Ev::Timer { node, .. } | Ev::LogIo { node, .. } | Ev::HardState { node, .. } => Some(*node),
            Ev::Deliver { to, .. } => Some(*to),
            Ev::Groups(GroupEv::Arrive { node, .. }) => Some(*node),
            _ => None,
        }
    }
}

/// One group's replica on one node.
struct Member<R> {
    store: Option<NodeStore>,
    replica: Option<R>,
    timer_token: u64,
    timer_at: Option<Instant>,
    observed_commit: Option<u64>,
    reported_done: u64,
}

impl<R> Member<R> {
    fn new() -> Self {
        Member {
            store: None,
            replica: None,
            timer_token: 0,
            timer_at: None,
            observed_commit: None,
            reported_done: 0,
        }
    }
}

/// One machine: a process, a disk, and a replica of every group.
struct Node<R> {
    process: Process,
    disk: SimDisk,
    disk_rng: SimRng,
    members: Vec<Member<R>>,
    disk_failed: bool,
    restart_pending: bool,
}

/// What the checkers and the liveness phase track per group.
#[derive(Debug, Default)]
struct GroupState {
    checker: Checker,
    history: History,
    leaders_seen: BTreeMap<u64, NodeId>,
    live_leader: bool,
    live_ack: Option<u64>,
    live_read: bool,
}

/// Shows ` g<N>` in trace lines of multi-group runs, nothing with one group.
struct GroupTag(Option<GroupId>);

impl std::fmt::Display for GroupTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(g) => write!(f, "g{g} "),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    op: OpId,
    node: NodeId,
    inc: u64,
    index: u64,
    term: u64,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Client {
    group: GroupId,
    leader_hint: Option<NodeId>,
    /// Writes in flight, oldest first (at most `client_pipeline`).
    outstanding: Vec<Outstanding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness,
    Done,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The invariant broken, if any.
    pub violation: Option<Violation>,
    /// Hash of the whole trace.
    pub trace_hash: u64,
    /// Trace lines (all, or the tail).
    pub trace: Vec<String>,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_time: Duration,
    /// What the run reached.
    pub coverage: Coverage,
    /// The scenario as this seed ran it (after swarm).
    pub scenario_summary: String,
    /// Writes acknowledged.
    pub acked_writes: usize,
}

/// One simulated cluster.
pub struct Cluster<F: NodeFactory> {
    scenario: Scenario,
    factory: F,
    seeds: Seeds,
    queue: EventQueue<Ev<<F::R as Replica>::Msg>>,
    nodes: Vec<Node<F::R>>,
    ids: Vec<NodeId>,
    net: SimNetwork<(GroupId, <F::R as Replica>::Msg)>,
    net_rng: SimRng,
    fault_rng: SimRng,
    work_rng: SimRng,
    trace: Trace,
    coverage: Coverage,
    groups: Vec<GroupState>,
    clients: Vec<Client>,
    next_value: u64,
    phase: Phase,
    rot_node: NodeId,
    rolling_next: usize,
    liveness_start: Instant,
    violation: Option<Violation>,
    /// The consumer-group workload, on the Raft group `offsets_group`.
    gsim: Option<GroupSim>,
    offsets_group: Option<GroupId>,
}

impl<F: NodeFactory> std::fmt::Debug for Cluster<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("scenario", &self.scenario.name)
            .field("now", &self.queue.now())
            .finish()
    }
}

fn entry_id(e: &crate::replica::SimEntry) -> EntryId {
    EntryId {
        term: e.term,
        digest: match e.kind {
            EntryKind::Data | EntryKind::Config => fnv1a64(&e.payload),
            EntryKind::Noop => 0,
        },
        data: e.kind == EntryKind::Data,
    }
}

/// `latency` with its body (not its tail) `factor` times slower.
fn slow_body(latency: crate::dist::Latency, factor: u64) -> crate::dist::Latency {
    let scaled = latency.scaled(factor);
    crate::dist::Latency {
        tail_max_us: latency.tail_max_us.max(scaled.max_us),
        ..scaled
    }
}

struct CompletionDisplay<'a>(&'a LogCompletion);

impl std::fmt::Display for CompletionDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            LogCompletion::Written { last_offset, .. } => write!(f, "written..={last_offset}"),
            LogCompletion::Synced { sync_id, .. } => write!(f, "synced #{sync_id}"),
            LogCompletion::CheckpointWritten { checkpoint_id, .. } => {
                write!(f, "checkpoint #{checkpoint_id}")
            }
            LogCompletion::Read { read_id, data, .. } => write!(f, "read #{read_id} {}B", data.len()),
            LogCompletion::Failed { error, .. } => write!(f, "failed: {error}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl<F: NodeFactory> Cluster<F> {
    /// A cluster for `seed` running `scenario` (already swarmed), tracing every line
    /// when `keep_trace`.
    pub fn new(seed: u64, scenario: Scenario, factory: F, keep_trace: bool) -> Self {
        let seeds = Seeds::new(seed);
        let mut clock_rng = seeds.stream("clock");
        let n = scenario.nodes;
        let ids: Vec<NodeId> = (0..n).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let drift = scenario.clock.max_drift_ppm;
                let drift_ppm = i64::try_from(clock_rng.between(0, 2 * drift)).unwrap_or(0)
                    - i64::try_from(drift).unwrap_or(0);
                let offset_ns = i64::try_from(clock_rng.between(0, scenario.clock.max_offset_ms * 1_000_000))
                    .unwrap_or(0);
                Node {
                    process: Process::new(NodeClock::new(drift_ppm, offset_ns)),
                    disk: SimDisk::new(scenario.disk.clone()),
                    disk_rng: seeds.stream(&format!("disk/{id}")),
                    members: (0..scenario.groups).map(|_| Member::new()).collect(),
                    disk_failed: false,
                    restart_pending: false,
                }
            })
            .collect();
        let mut fault_rng = seeds.stream("faults");
        let rot_node = u32::try_from(fault_rng.index(ids.len())).unwrap_or(0);
        let offsets_group = scenario
            .consumer_groups
            .enabled
            .then(|| scenario.groups.saturating_sub(1));
        let gsim = offsets_group.map(|_| {
            GroupSim::new(
                scenario.consumer_groups.clone(),
                &seeds,
                &scenario.disabled_checks,
            )
        });
        // Clients write to every group but the offsets group.
        let kv_groups = if offsets_group.is_some() {
            scenario.groups.saturating_sub(1).max(1)
        } else {
            scenario.groups.max(1)
        };
        Cluster {
            gsim,
            offsets_group,
            net: SimNetwork::new(scenario.network, NetLimits::default()),
            net_rng: seeds.stream("network"),
            work_rng: seeds.stream("workload"),
            fault_rng,
            clients: (0..scenario.clients)
                .map(|c| Client {
                    group: c % kv_groups,
                    ..Client::default()
                })
                .collect(),
            groups: (0..scenario.groups).map(|_| GroupState::default()).collect(),
            scenario,
            factory,
            seeds,
            queue: EventQueue::new(MAX_PENDING_EVENTS),
            nodes,
            ids,
            trace: Trace::new(keep_trace),
            coverage: Coverage::default(),
            next_value: 1,
            phase: Phase::Safety,
            rot_node,
            rolling_next: 0,
            liveness_start: Instant::ZERO,
            violation: None,
        }
    }

    fn fail(&mut self, v: Violation) {
        let now = self.queue.now();
        let disabled = &self.scenario.disabled_checks;
        if let Some(v) = record_violation(&mut self.violation, disabled, &mut self.coverage, v) {
            trace_event!(self.trace, now, None, "VIOLATION {v}");
        }
    }

    fn schedule(&mut self, at: Instant, ev: Ev<<F::R as Replica>::Msg>) {
        if let Err(e) = self.queue.schedule_at(at, ev) {
            self.fail(Violation {
                invariant: "simulator-bound",
                detail: e.to_string(),
            });
        }
    }

    fn after(&mut self, delay: Duration, ev: Ev<<F::R as Replica>::Msg>) {
        let at = self.queue.now() + delay;
        self.schedule(at, ev);
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.fault_rng.between(lo, hi))
    }

    /// Runs to the end; returns what happened.
    pub fn run(mut self) -> RunResult {
        let summary = self.scenario.summary();
        trace_event!(
            self.trace,
            Instant::ZERO,
            None,
            "start seed={} {summary}",
            self.seeds.seed()
        );
        for id in self.ids.clone() {
            self.start_node(id);
        }
        for c in 0..self.scenario.clients {
            let d = Duration::from_millis(self.work_rng.between(0, self.scenario.client_interval_ms));
            self.after(d, Ev::ClientWrite { client: c });
            let d = Duration::from_millis(self.work_rng.between(0, self.scenario.read_interval_ms));
            self.after(d, Ev::ClientRead { client: c });
        }
        if self.gsim.is_some() {
            self.schedule(Instant::ZERO, Ev::Groups(GroupEv::Tick));
        }
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
            self.step(now, ev);
        }
        if self.violation.is_none() {
            self.final_checks();
        }
        for node in &self.nodes {
            for m in &node.members {
                if let Some(r) = m.replica.as_ref() {
                    r.harvest_coverage(&mut self.coverage);
                }
            }
        }
        if let Some(gsim) = self.gsim.as_ref() {
            gsim.harvest_coverage(&mut self.coverage);
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
            acked_writes: self.groups.iter().map(|g| g.history.acked()).sum(),
        }
    }

    fn step(&mut self, now: Instant, ev: Ev<<F::R as Replica>::Msg>) {
        if let Some(node) = ev.target() {
            let n = node as usize;
            if let Some(until) = self.nodes[n].process.paused_until(now) {
                // The node is stopped: its events wait, in order.
                self.schedule(until, ev);
                return;
            }
        }
        match ev {
            Ev::Timer { node, group, token } => self.on_timer(now, node, group, token),
            Ev::Deliver { from, to, group, msg } => self.on_deliver(now, from, to, group, msg),
            Ev::LogIo { node, group, inc, io } => self.on_log_io(now, node, group, inc, io),
            Ev::HardState {
                node,
                group,
                inc,
                seq,
                hs,
            } => self.on_hard_state(now, node, group, inc, seq, hs),
            Ev::Restart { node } => self.restart_node(node),
            Ev::Nemesis => self.nemesis(now),
            Ev::Heal(h) => self.heal(now, h),
            Ev::ClientWrite { client } => self.client_write(now, client),
            Ev::ClientRead { client } => self.client_read(now, client),
            Ev::Liveness => self.start_liveness(now),
            Ev::End => self.end_liveness(now),
            Ev::Groups(ev) => self.on_group_event(now, ev),
        }
    }

    // ---- nodes -------------------------------------------------------------------

    fn is_up(&self, id: NodeId) -> bool {
        let node = &self.nodes[id as usize];
        node.process.liveness != Liveness::Down && node.members.iter().all(|m| m.replica.is_some())
    }

    fn group_ids(&self) -> std::ops::Range<GroupId> {
        0..self.scenario.groups
    }

    fn gtag(&self, g: GroupId) -> GroupTag {
        GroupTag((self.scenario.groups > 1).then_some(g))
    }

    fn raft_rng(&self, id: NodeId, g: GroupId, inc: u64) -> SimRng {
        if g == 0 {
            self.seeds.stream(&format!("raft/{id}/{inc}"))
        } else {
            self.seeds.stream(&format!("raft/{id}/{inc}/g{g}"))
        }
    }

    fn start_node(&mut self, id: NodeId) {
        let now = self.queue.now();
        let n = id as usize;
        let local = self.nodes[n].process.clock.local(now);
        let inc = self.nodes[n].process.incarnation;
        trace_event!(self.trace, now, Some(id), "start");
        for g in self.group_ids() {
            let rng = self.raft_rng(id, g, inc);
            let ids = self.ids.clone();
            let replica = match self.factory.start(id, &ids, rng, local, Restored::default()) {
                Ok((r, _)) => r,
                Err(e) => {
                    return self.fail(Violation {
                        invariant: "replica-init",
                        detail: e,
                    })
                }
            };
            let m = &mut self.nodes[n].members[g as usize];
            m.replica = Some(replica);
            m.store = Some(NodeStore::new(g));
            m.observed_commit = None;
            m.reported_done = 0;
        }
        for g in self.group_ids() {
            self.after_step(id, g);
        }
    }

    fn crash_node(&mut self, id: NodeId, why: &str) {
        let now = self.queue.now();
        if self.nodes[id as usize].process.liveness == Liveness::Down {
            return;
        }
        self.groups_on_crash(id);
        let node = &mut self.nodes[id as usize];
        node.process.crash();
        for m in node.members.iter_mut() {
            if let Some(r) = m.replica.take() {
                r.harvest_coverage(&mut self.coverage);
            }
            m.store = None;
            m.timer_token += 1;
            m.timer_at = None;
        }
        let report = node.disk.crash(&mut node.disk_rng);
        self.coverage.add("disk.crash.torn_write", report.writes_torn);
        self.coverage.add("disk.crash.unsynced_kept", report.ops_kept);
        self.coverage
            .add("disk.crash.file_vanished", report.files_vanished);
        trace_event!(
            self.trace,
            now,
            Some(id),
            "crash ({why}): dropped={} kept={} torn={} vanished={}",
            report.ops_dropped,
            report.ops_kept,
            report.writes_torn,
            report.files_vanished
        );
    }

    fn restart_node(&mut self, id: NodeId) {
        let now = self.queue.now();
        let n = id as usize;
        self.nodes[n].restart_pending = false;
        if self.nodes[n].process.liveness != Liveness::Down || self.nodes[n].disk_failed {
            return;
        }
        self.nodes[n].process.restart();
        let local = self.nodes[n].process.clock.local(now);
        let inc = self.nodes[n].process.incarnation;
        // Recover every group's storage first: one corrupt group fails the disk.
        let mut recovered = Vec::new();
        for g in self.group_ids() {
            let node = &mut self.nodes[n];
            match NodeStore::recover(&mut node.disk, &mut node.disk_rng, local, g) {
                Ok(r) => recovered.push(r),
                Err(StoreError::Corrupt(why)) => {
                    self.coverage.hit("recovery.corruption_detected");
                    trace_event!(
                        self.trace,
                        now,
                        Some(id),
                        "{}restart refused, disk corrupt: {why}",
                        self.gtag(g)
                    );
                    self.nodes[n].process.crash();
                    self.nodes[n].disk_failed = true;
                    return;
                }
                Err(StoreError::Contract(why)) => {
                    return self.fail(Violation {
                        invariant: "storage-contract",
                        detail: format!("node {id} group {g} recovery: {why}"),
                    })
                }
                Err(StoreError::Disk(why)) => {
                    trace_event!(self.trace, now, Some(id), "{}restart failed: {why}", self.gtag(g));
                    self.nodes[n].process.crash();
                    self.schedule_restart(id);
                    return;
                }
            }
        }
        for (g, (store, hs, log, report)) in (0..).zip(recovered) {
            self.coverage
                .add("recovery.torn_tail_cut", report.torn_tails.len() as u64);
            self.coverage
                .add("recovery.index_rebuilt", report.rebuilt_indexes.len() as u64);
            trace_event!(
                self.trace,
                now,
                Some(id),
                "{}restart inc={inc} term={} vote={:?} entries={} torn_tails={} rebuilt_indexes={}",
                self.gtag(g),
                hs.term,
                hs.vote,
                log.len(),
                report.torn_tails.len(),
                report.rebuilt_indexes.len()
            );
            let rng = self.raft_rng(id, g, inc);
            let ids = self.ids.clone();
            let replica = match self.factory.start(id, &ids, rng, local, Restored { hs, log }) {
                Ok((r, raised)) => {
                    if raised {
                        self.coverage.hit("recovery.term_raised_to_log");
                    }
                    r
                }
                Err(e) => {
                    return self.fail(Violation {
                        invariant: "replica-init",
                        detail: e,
                    })
                }
            };
            let m = &mut self.nodes[n].members[g as usize];
            m.replica = Some(replica);
            m.store = Some(store);
            m.observed_commit = None;
            m.reported_done = 0;
        }
        for g in self.group_ids() {
            self.after_step(id, g);
        }
    }

    fn schedule_restart(&mut self, id: NodeId) {
        if self.nodes[id as usize].restart_pending {
            return;
        }
        self.nodes[id as usize].restart_pending = true;
        let f = &self.scenario.faults;
        let (lo, hi) = (f.restart_min_ms, f.restart_max_ms);
        let d = self.ms(lo, hi);
        self.after(d, Ev::Restart { node: id });
    }

    fn on_timer(&mut self, now: Instant, id: NodeId, g: GroupId, token: u64) {
        let n = id as usize;
        if self.nodes[n].members[g as usize].timer_token != token || !self.is_up(id) {
            return;
        }
        self.nodes[n].members[g as usize].timer_at = None;
        let local = self.nodes[n].process.clock.local(now);
        let node = &mut self.nodes[n];
        if let Some(r) = node.members[g as usize].replica.as_mut() {
            if r.poll_timeout().is_some_and(|t| t <= local) {
                r.handle_timeout(local);
            }
        }
        let store_due = node.members[g as usize]
            .store
            .as_ref()
            .and_then(|s| s.log().poll_timeout())
            .is_some_and(|t| t <= local);
        if store_due {
            let result = match node.members[g as usize].store.as_mut() {
                Some(s) => s.handle_timeout(&mut node.disk, &mut node.disk_rng, local),
                None => Ok(StoreWork::default()),
            };
            self.store_result(id, g, result);
        }
        self.after_step(id, g);
    }

    fn on_deliver(
        &mut self,
        now: Instant,
        from: NodeId,
        to: NodeId,
        g: GroupId,
        msg: <F::R as Replica>::Msg,
    ) {
        match self.net.arrive(from, to, (g, msg)) {
            Arrival::Deliver((_, msg)) => {
                if !self.is_up(to) {
                    return;
                }
                trace_event!(
                    self.trace,
                    now,
                    Some(to),
                    "{}recv from n{from}: {}",
                    self.gtag(g),
                    MsgDisplay::<F::R>(&msg)
                );
                let local = self.nodes[to as usize].process.clock.local(now);
                if let Some(r) = self.nodes[to as usize].members[g as usize].replica.as_mut() {
                    r.handle_message(local, from, msg);
                }
                self.after_step(to, g);
            }
            Arrival::Dropped => {}
            Arrival::Held => {}
        }
    }

    fn on_log_io(&mut self, now: Instant, id: NodeId, g: GroupId, inc: u64, io: LogIo) {
        let n = id as usize;
        if !self.nodes[n].process.is_current(inc) {
            return;
        }
        trace_event!(
            self.trace,
            now,
            Some(id),
            "{}disk {}",
            self.gtag(g),
            CompletionDisplay(&io.completion)
        );
        let local = self.nodes[n].process.clock.local(now);
        let node = &mut self.nodes[n];
        let result = match node.members[g as usize].store.as_mut() {
            Some(s) => s.complete_log_io(&mut node.disk, &mut node.disk_rng, local, io),
            None => return,
        };
        self.store_result(id, g, result);
        self.after_step(id, g);
    }

    fn on_hard_state(&mut self, now: Instant, id: NodeId, g: GroupId, inc: u64, seq: u64, hs: HardState) {
        let n = id as usize;
        if !self.nodes[n].process.is_current(inc) {
            return;
        }
        trace_event!(
            self.trace,
            now,
            Some(id),
            "{}disk hard state t{} vote={:?} durable",
            self.gtag(g),
            hs.term,
            hs.vote
        );
        let node = &mut self.nodes[n];
        let result = match node.members[g as usize].store.as_mut() {
            Some(s) => s
                .complete_hard_state(&mut node.disk, &mut node.disk_rng, seq, hs)
                .map(|()| StoreWork::default()),
            None => return,
        };
        self.store_result(id, g, result);
        self.after_step(id, g);
    }

    /// Schedules a store's work, or stops the node on a storage failure.
    fn store_result(&mut self, id: NodeId, g: GroupId, result: Result<StoreWork, StoreError>) {
        let n = id as usize;
        let inc = self.nodes[n].process.incarnation;
        match result {
            Ok(work) => {
                for io in work.log_io {
                    let delay = io.delay;
                    self.after(
                        delay,
                        Ev::LogIo {
                            node: id,
                            group: g,
                            inc,
                            io,
                        },
                    );
                }
                for (seq, hs, delay) in work.hard_state {
                    self.after(
                        delay,
                        Ev::HardState {
                            node: id,
                            group: g,
                            inc,
                            seq,
                            hs,
                        },
                    );
                }
            }
            Err(StoreError::Contract(why)) => self.fail(Violation {
                invariant: "storage-contract",
                detail: format!("node {id}: {why}"),
            }),
            Err(StoreError::Disk(why)) => {
                self.coverage.hit("disk.enospc");
                self.crash_node(id, &format!("disk error: {why}"));
                self.schedule_restart(id);
            }
            Err(StoreError::Corrupt(why)) => {
                self.coverage.hit("recovery.corruption_detected");
                self.crash_node(id, &format!("corruption: {why}"));
                self.nodes[n].disk_failed = true;
            }
        }
    }

    /// After a node handled something: run its effects, observe it, re-arm its timer.
    fn after_step(&mut self, id: NodeId, g: GroupId) {
        let n = id as usize;
        loop {
            if !self.is_up(id) || self.violation.is_some() {
                return;
            }
            let Some(effect) = self.nodes[n].members[g as usize]
                .replica
                .as_mut()
                .and_then(|r| r.poll_effect())
            else {
                break;
            };
            match effect {
                ReplicaEffect::Send { to, msg } => self.send(id, to, g, msg),
                ReplicaEffect::Read {
                    read_id,
                    from_index,
                    max_bytes,
                } => {
                    let now = self.queue.now();
                    let local = self.nodes[n].process.clock.local(now);
                    let node = &mut self.nodes[n];
                    let result = match (node.members[g as usize].store.as_ref(), self.scenario.log_reads) {
                        (Some(s), LogReads::Disk) => s.read_entries(&node.disk, from_index, max_bytes),
                        (Some(_), LogReads::Memory) => Ok(Vec::new()),
                        (None, _) => return,
                    };
                    let result = match result {
                        Ok(entries) => Ok(entries),
                        Err(StoreError::Contract(why)) => {
                            return self.fail(Violation {
                                invariant: "storage-contract",
                                detail: format!("node {id} read from {from_index}: {why}"),
                            })
                        }
                        Err(StoreError::Corrupt(why)) => {
                            // The runtime's policy: a replica whose synced data is corrupt
                            // stops serving (its disk is failed), as at recovery; the
                            // other replicas carry on.
                            self.coverage.hit("log.read.corruption_detected");
                            self.crash_node(id, &format!("read from {from_index} found corruption: {why}"));
                            self.nodes[n].disk_failed = true;
                            return;
                        }
                        Err(e) => {
                            trace_event!(
                                self.trace,
                                now,
                                Some(id),
                                "{}read from {from_index} failed: {e}",
                                self.gtag(g)
                            );
                            Err(e.to_string())
                        }
                    };
                    if let Some(r) = self.nodes[n].members[g as usize].replica.as_mut() {
                        r.handle_read(local, read_id, result);
                    }
                }
                ReplicaEffect::Persist { seq, op } => {
                    let now = self.queue.now();
                    match &op {
                        StorageOp::HardState(hs) => {
                            trace_event!(
                                self.trace,
                                now,
                                Some(id),
                                "{}persist #{seq} term {} vote {:?}",
                                self.gtag(g),
                                hs.term,
                                hs.vote
                            )
                        }
                        StorageOp::Append(es) => trace_event!(
                            self.trace,
                            now,
                            Some(id),
                            "{}persist #{seq} append {}..={}",
                            self.gtag(g),
                            es.first().map_or(0, |e| e.index),
                            es.last().map_or(0, |e| e.index)
                        ),
                        StorageOp::Barrier => {}
                        StorageOp::Truncate { from_index } => {
                            self.coverage.hit("raft.truncation");
                            trace_event!(
                                self.trace,
                                now,
                                Some(id),
                                "{}persist #{seq} truncate from {from_index}",
                                self.gtag(g)
                            )
                        }
                    }
                    let local = self.nodes[n].process.clock.local(now);
                    let node = &mut self.nodes[n];
                    let result = match node.members[g as usize].store.as_mut() {
                        Some(s) => s.submit(&mut node.disk, &mut node.disk_rng, local, seq, op),
                        None => return,
                    };
                    self.store_result(id, g, result);
                }
            }
        }
        // Storage progress feeds back into the replica, which may release messages.
        let done = self.nodes[n].members[g as usize]
            .store
            .as_ref()
            .map_or(0, |s| s.done_seq());
        if done > self.nodes[n].members[g as usize].reported_done {
            self.nodes[n].members[g as usize].reported_done = done;
            let now = self.queue.now();
            let local = self.nodes[n].process.clock.local(now);
            if let Some(r) = self.nodes[n].members[g as usize].replica.as_mut() {
                r.handle_durable(local, done);
            }
            return self.after_step(id, g);
        }
        if let Some(v) = self.nodes[n].members[g as usize]
            .replica
            .as_ref()
            .and_then(|r| r.contract_violation())
        {
            return self.fail(Violation {
                invariant: "replica-contract",
                detail: format!("node {id}: {v}"),
            });
        }
        self.observe(id, g);
        if self.offsets_group == Some(g) {
            self.drive_groups(id);
        }
        self.arm_timer(id, g);
    }

    fn send(&mut self, from: NodeId, to: NodeId, g: GroupId, msg: <F::R as Replica>::Msg) {
        if self.scenario.bugs.corrupt_terms && self.net_rng.chance(0.05) {
            let mut forged = msg.clone();
            F::R::set_msg_term(&mut forged, F::R::msg_term(&msg) + 1);
            let copies = self.net.send(&mut self.net_rng, from, to, (g, forged));
            for (delay, (_, forged)) in copies {
                self.after(
                    delay,
                    Ev::Deliver {
                        from,
                        to,
                        group: g,
                        msg: forged,
                    },
                );
            }
        }
        let copies = self.net.send(&mut self.net_rng, from, to, (g, msg));
        for (delay, (_, msg)) in copies {
            self.after(
                delay,
                Ev::Deliver {
                    from,
                    to,
                    group: g,
                    msg,
                },
            );
        }
    }

    fn arm_timer(&mut self, id: NodeId, g: GroupId) {
        let now = self.queue.now();
        let n = id as usize;
        let node = &mut self.nodes[n];
        let local_now = node.process.clock.local(now);
        let replica_t = node.members[g as usize]
            .replica
            .as_ref()
            .and_then(|r| r.poll_timeout());
        let store_t = node.members[g as usize]
            .store
            .as_ref()
            .and_then(|s| s.log().poll_timeout());
        let Some(mut local) = [replica_t, store_t].into_iter().flatten().min() else {
            return;
        };
        if local <= local_now {
            // Due now; never spin at one instant.
            local = local_now + Duration::from_micros(1);
        }
        let at = node.process.clock.to_global(now, local);
        if node.members[g as usize].timer_at == Some(at) {
            return;
        }
        node.members[g as usize].timer_token += 1;
        node.members[g as usize].timer_at = Some(at);
        let token = node.members[g as usize].timer_token;
        self.schedule(
            at,
            Ev::Timer {
                node: id,
                group: g,
                token,
            },
        );
    }

    fn observe(&mut self, id: NodeId, g: GroupId) {
        let n = id as usize;
        let now = self.queue.now();
        let inc = self.nodes[n].process.incarnation;
        let Some(r) = self.nodes[n].members[g as usize].replica.as_ref() else {
            return;
        };
        let st = r.status();
        let mut result = Ok(());
        if st.role == Role::Leader {
            if self.phase == Phase::Liveness {
                self.groups[g as usize].live_leader = true;
            }
            result = result.and(self.groups[g as usize].checker.on_leader(id, st.term));
            if let std::collections::btree_map::Entry::Vacant(slot) =
                self.groups[g as usize].leaders_seen.entry(st.term)
            {
                slot.insert(id);
                self.coverage.hit("raft.election.won");
                trace_event!(
                    self.trace,
                    now,
                    Some(id),
                    "{}leader of term {}",
                    self.gtag(g),
                    st.term
                );
            }
        }
        let mut commits = Vec::new();
        if let Some(c) = st.commit_index {
            result = result.and(self.groups[g as usize].checker.on_commit_index(id, inc, c));
            let from = self.nodes[n].members[g as usize]
                .observed_commit
                .map_or(0, |o| o + 1);
            for i in from..=c {
                match r.entry(i) {
                    Some(e) => commits.push((i, entry_id(e))),
                    None => {
                        result = result.and(Err(Violation {
                            invariant: "commit-beyond-log",
                            detail: format!("node {id} commits {c} but has no entry {i}"),
                        }))
                    }
                }
            }
            if self.nodes[n].members[g as usize]
                .observed_commit
                .is_none_or(|o| c > o)
            {
                self.nodes[n].members[g as usize].observed_commit = Some(c);
            }
        }
        for (i, e) in commits {
            self.coverage.hit("raft.commit");
            result = result.and(self.groups[g as usize].checker.on_committed(id, i, e));
        }
        if let Err(v) = result {
            self.fail(v);
            return;
        }
        let every = self.scenario.snapshot_every_entries;
        if every > 0 {
            let durable = self.nodes[n].members[g as usize]
                .store
                .as_ref()
                .and_then(|s| u64::try_from(s.log().durable_offset()).ok());
            let local = self.nodes[n].process.clock.local(now);
            let taken = self.nodes[n].members[g as usize]
                .replica
                .as_mut()
                .is_some_and(|r| r.maybe_snapshot(local, durable, every));
            if taken {
                self.coverage.hit("raft.snapshot.taken");
                trace_event!(self.trace, now, Some(id), "{}snapshot taken", self.gtag(g));
                return self.after_step(id, g);
            }
        }
        self.resolve_writes(id, g);
    }

    /// Acknowledges client writes the node has committed.
    fn resolve_writes(&mut self, id: NodeId, g: GroupId) {
        let n = id as usize;
        let now = self.queue.now();
        let inc = self.nodes[n].process.incarnation;
        let Some(r) = self.nodes[n].members[g as usize].replica.as_ref() else {
            return;
        };
        let commit = if self.scenario.bugs.ack_uncommitted {
            r.status().last_index
        } else {
            r.status().commit_index
        };
        for c in 0..self.clients.len() {
            if self.clients[c].group != g {
                continue;
            }
            let mut k = 0;
            while k < self.clients[c].outstanding.len() {
                let o = self.clients[c].outstanding[k];
                if o.node != id || o.inc != inc || commit.is_none_or(|ci| ci < o.index) {
                    k += 1;
                    continue;
                }
                self.clients[c].outstanding.remove(k);
                let outcome = match r.entry(o.index) {
                    Some(e) if e.term == o.term => OpOutcome::WriteAcked { offset: o.index },
                    _ => OpOutcome::WriteTimedOut,
                };
                self.groups[g as usize].history.finish_write(o.op, now, outcome);
                if let OpOutcome::WriteAcked { offset } = outcome {
                    self.coverage.hit("client.write.acked");
                    trace_event!(
                        self.trace,
                        now,
                        Some(id),
                        "{}ack client {c} offset {offset}",
                        self.gtag(g)
                    );
                    if self.phase == Phase::Liveness && self.groups[g as usize].live_ack.is_none() {
                        self.groups[g as usize].live_ack = Some(offset);
                    }
                }
            }
        }
    }

    // ---- clients -----------------------------------------------------------------

    fn pick_node(&mut self, hint: Option<NodeId>) -> Option<NodeId> {
        if let Some(h) = hint.filter(|h| self.is_up(*h)) {
            return Some(h);
        }
        let up: Vec<NodeId> = self.ids.iter().copied().filter(|i| self.is_up(*i)).collect();
        (!up.is_empty()).then(|| up[self.work_rng.index(up.len())])
    }

    fn client_write(&mut self, now: Instant, client: u32) {
        let g = self.clients[client as usize].group;
        if self.phase == Phase::Liveness {
            // Healing includes membership: learners become voters again.
            let learner = self.current_leader(g).and_then(|l| {
                self.nodes[l as usize].members[g as usize]
                    .replica
                    .as_ref()
                    .and_then(|r| r.learners().first().copied())
            });
            if let Some(learner) = learner {
                self.leader_churn(now, g, Churn::Promote(learner), "fault.membership.promote");
            }
        }
        let c = client as usize;
        let next = Duration::from_millis(self.work_rng.between(
            self.scenario.client_interval_ms / 2,
            self.scenario.client_interval_ms * 3 / 2,
        ));
        self.after(next, Ev::ClientWrite { client });
        while let Some(o) = self.clients[c].outstanding.first().copied() {
            if now < o.deadline {
                break;
            }
            self.clients[c].outstanding.remove(0);
            self.groups[g as usize]
                .history
                .finish_write(o.op, now, OpOutcome::WriteTimedOut);
            self.coverage.hit("client.write.timed_out");
        }
        if self.clients[c].outstanding.len() >= self.scenario.client_pipeline as usize {
            return;
        }
        if self.groups[g as usize].history.is_full() {
            return;
        }
        let hint = self.clients[c].leader_hint;
        let Some(node) = self.pick_node(hint) else { return };
        let value = self.next_value;
        self.next_value += 1;
        let op = self.groups[g as usize].history.begin_write(client, now, value);
        self.groups[g as usize].history.set_node(op, node);
        let n = node as usize;
        let local = self.nodes[n].process.clock.local(now);
        let inc = self.nodes[n].process.incarnation;
        let Some(r) = self.nodes[n].members[g as usize].replica.as_mut() else {
            return;
        };
        match r.propose(local, Bytes::from(value_payload(value))) {
            Ok(index) => {
                let term = r.status().term;
                trace_event!(
                    self.trace,
                    now,
                    Some(node),
                    "{}client {client} write {value} -> offset {index} t{term}",
                    self.gtag(g)
                );
                self.clients[c].outstanding.push(Outstanding {
                    op,
                    node,
                    inc,
                    index,
                    term,
                    deadline: now + Duration::from_millis(self.scenario.client_timeout_ms),
                });
                self.clients[c].leader_hint = Some(node);
                self.after_step(node, g);
            }
            Err(e) => {
                self.groups[g as usize]
                    .history
                    .finish_write(op, now, OpOutcome::WriteRejected);
                self.coverage.hit("client.write.rejected");
                self.clients[c].leader_hint = match e {
                    ProposeError::NotLeader(h) => h,
                    ProposeError::Busy => Some(node),
                };
            }
        }
    }

    fn client_read(&mut self, now: Instant, client: u32) {
        let next = Duration::from_millis(self.work_rng.between(
            self.scenario.read_interval_ms / 2,
            self.scenario.read_interval_ms * 3 / 2,
        ));
        self.after(next, Ev::ClientRead { client });
        let g = self.clients[client as usize].group;
        let Some(node) = self.pick_node(None) else { return };
        let Some(r) = self.nodes[node as usize].members[g as usize].replica.as_ref() else {
            return;
        };
        let st = r.status();
        let upto = if self.scenario.bugs.read_uncommitted {
            st.last_index
        } else {
            st.commit_index
        };
        let Some(upto) = upto else { return };
        let mut records = Vec::new();
        for i in 0..=upto {
            match r.entry(i) {
                Some(e) if e.kind == EntryKind::Data => {
                    if let Some(v) = payload_value(&e.payload) {
                        records.push((i, v));
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        trace_event!(
            self.trace,
            now,
            Some(node),
            "{}client {client} read ..={upto}: {} records",
            self.gtag(g),
            records.len()
        );
        self.coverage.hit("client.read");
        // Read committed, checked when read: every offset returned must already be known
        // committed (a dirty read that commits later is still a dirty read).
        let known = self.groups[g as usize]
            .checker
            .committed()
            .keys()
            .next_back()
            .copied();
        if let Some(&(offset, value)) = records.last() {
            if known.is_none_or(|k| offset > k) {
                return self.fail(Violation {
                    invariant: "read-uncommitted",
                    detail: format!(
                        "client {client} read value {value} at offset {offset} from node {node}, but nothing past {known:?} is committed yet"
                    ),
                });
            }
        }
        if self.phase == Phase::Liveness && self.groups[g as usize].live_ack.is_some_and(|a| a <= upto) {
            self.groups[g as usize].live_read = true;
        }
        self.groups[g as usize].history.record_read(ReadRecord {
            client,
            at: now,
            records,
            complete: true,
            upto_offset: upto,
        });
        self.check_liveness_reached(now);
    }

    // ---- faults ------------------------------------------------------------------

    /// A random group (no draw with one group, so single-group runs keep their stream).
    fn random_group(&mut self) -> GroupId {
        if self.scenario.groups <= 1 {
            0
        } else {
            u32::try_from(self.fault_rng.index(self.scenario.groups as usize)).unwrap_or(0)
        }
    }

    fn random_up(&mut self) -> Option<NodeId> {
        self.pick_node(None)
    }

    fn current_leader(&self, g: GroupId) -> Option<NodeId> {
        self.ids
            .iter()
            .copied()
            .filter(|i| self.is_up(*i))
            .filter_map(|i| {
                let st = self.nodes[i as usize].members[g as usize]
                    .replica
                    .as_ref()?
                    .status();
                (st.role == Role::Leader).then_some((st.term, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    fn nemesis(&mut self, now: Instant) {
        if self.phase != Phase::Safety {
            return;
        }
        let f = self.scenario.faults.clone();
        let d = self.ms(f.interval_min_ms, f.interval_max_ms);
        self.after(d, Ev::Nemesis);
        let weights = f.weights();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            return;
        }
        let mut pick = total * (self.fault_rng.between(0, 1_000_000) as f64) / 1_000_000.0;
        let mut kind = weights[0].0;
        for (name, w) in weights {
            if w <= 0.0 {
                continue;
            }
            kind = name;
            if pick < w {
                break;
            }
            pick -= w;
        }
        let n_nodes = self.ids.len();
        let heal_after = self.ms(f.heal_min_ms, f.heal_max_ms);
        match kind {
            "crash" => {
                let target = if f.rolling {
                    let t = self.ids[self.rolling_next % n_nodes];
                    self.rolling_next += 1;
                    Some(t).filter(|t| self.is_up(*t))
                } else {
                    self.random_up()
                };
                if let Some(t) = target {
                    self.coverage.hit("fault.crash");
                    self.crash_node(t, "nemesis");
                    self.schedule_restart(t);
                }
            }
            "pause" => {
                if let Some(t) = self.random_up() {
                    let d = self.ms(1, f.pause_max_ms);
                    self.coverage.hit("fault.pause");
                    trace_event!(self.trace, now, Some(t), "pause for {d:?}");
                    self.nodes[t as usize].process.pause(now + d);
                }
            }
            "partition" if n_nodes > 1 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                let cut = self.fault_rng.between(1, n_nodes as u64 - 1);
                let mut order = self.ids.clone();
                for i in (1..order.len()).rev() {
                    let j = self.fault_rng.index(i + 1);
                    order.swap(i, j);
                }
                for (k, id) in order.into_iter().enumerate() {
                    if (k as u64) < cut {
                        a.push(id);
                    } else {
                        b.push(id);
                    }
                }
                a.sort_unstable();
                b.sort_unstable();
                self.coverage.hit("fault.partition");
                trace_event!(
                    self.trace,
                    now,
                    None,
                    "partition {a:?} | {b:?} for {heal_after:?}"
                );
                self.net.partition(&[a, b]);
                self.after(heal_after, Ev::Heal(Heal::Partition));
            }
            "one_way" | "hold" if n_nodes > 1 => {
                let from = self.ids[self.fault_rng.index(n_nodes)];
                let mut to = self.ids[self.fault_rng.index(n_nodes - 1)];
                if to >= from {
                    to += 1;
                }
                if kind == "one_way" {
                    self.coverage.hit("fault.one_way");
                    trace_event!(self.trace, now, None, "cut n{from}->n{to} for {heal_after:?}");
                    self.net.cut_one_way(from, to);
                    self.after(heal_after, Ev::Heal(Heal::Link(from, to)));
                } else {
                    self.coverage.hit("fault.hold");
                    trace_event!(self.trace, now, None, "hold n{from}->n{to} for {heal_after:?}");
                    self.net.hold(from, to);
                    self.after(heal_after, Ev::Heal(Heal::Release(from, to)));
                }
            }
            "slow_link" => {
                let t = self.ids[self.fault_rng.index(n_nodes)];
                self.coverage.hit("fault.slow_link");
                trace_event!(
                    self.trace,
                    now,
                    Some(t),
                    "slow links x{} for {heal_after:?}",
                    f.slow_factor
                );
                for p in self.ids.clone() {
                    if p != t {
                        self.net.set_slow(t, p, f.slow_factor);
                    }
                }
                self.after(heal_after, Ev::Heal(Heal::Slow(t)));
            }
            "slow_disk" => {
                let t = self.ids[self.fault_rng.index(n_nodes)];
                self.coverage.hit("fault.slow_disk");
                trace_event!(
                    self.trace,
                    now,
                    Some(t),
                    "slow disk x{} for {heal_after:?}",
                    f.slow_factor
                );
                let mut cfg = self.nodes[t as usize].disk.config().clone();
                // The body of the distribution slows down; its tail (already a stall)
                // stays, so a backlog built while slow drains in seconds, not minutes.
                // From the scenario's disk, so two slow-disk faults do not compound.
                cfg.sync_latency = slow_body(self.scenario.disk.sync_latency, f.slow_factor);
                cfg.write_latency = slow_body(self.scenario.disk.write_latency, f.slow_factor);
                self.nodes[t as usize].disk.set_config(cfg);
                self.after(heal_after, Ev::Heal(Heal::SlowDisk(t)));
            }
            "clock_jump" => {
                let t = self.ids[self.fault_rng.index(n_nodes)];
                let max_ns = f.clock_jump_max_ms * 1_000_000;
                let delta = i64::try_from(self.fault_rng.between(0, 2 * max_ns)).unwrap_or(0)
                    - i64::try_from(max_ns).unwrap_or(0);
                self.coverage.hit("fault.clock_jump");
                trace_event!(self.trace, now, Some(t), "clock jump {delta}ns");
                self.nodes[t as usize].process.clock.jump(delta);
                if self.is_up(t) {
                    for g in self.group_ids() {
                        self.arm_timer(t, g);
                    }
                }
            }
            "bit_flip" if n_nodes >= 3 => self.bit_flip(now),
            "step_down" | "transfer" => {
                let g = self.random_group();
                if let Some(l) = self.current_leader(g) {
                    if kind == "step_down" || n_nodes < 2 {
                        if self.leader_churn(now, g, Churn::StepDown, "fault.churn.step_down") {
                            self.coverage.hit("raft.leader.step_down");
                        }
                    } else {
                        let mut to = self.ids[self.fault_rng.index(n_nodes - 1)];
                        if to >= l {
                            to += 1;
                        }
                        if self.leader_churn(now, g, Churn::TransferTo(to), "fault.churn.transfer") {
                            self.coverage.hit("raft.leader.step_down");
                        }
                    }
                }
            }
            "priority" => {
                let g = self.random_group();
                let node = self.ids[self.fault_rng.index(n_nodes)];
                let priority = u32::try_from(self.fault_rng.between(1, 3)).unwrap_or(1);
                self.leader_churn(now, g, Churn::SetPriority(node, priority), "fault.churn.priority");
            }
            "membership" => {
                let g = self.random_group();
                if let Some(l) = self.current_leader(g) {
                    let learners = self.nodes[l as usize].members[g as usize]
                        .replica
                        .as_ref()
                        .map(|r| r.learners())
                        .unwrap_or_default();
                    if let Some(&learner) = learners.first() {
                        self.leader_churn(now, g, Churn::Promote(learner), "fault.membership.promote");
                    } else if f.bit_flip <= 0.0 || n_nodes >= 5 {
                        let mut to = self.ids[self.fault_rng.index(n_nodes - 1)];
                        if to >= l {
                            to += 1;
                        }
                        self.leader_churn(now, g, Churn::Demote(to), "fault.membership.demote");
                    }
                }
            }
            "enospc" => {
                let t = self.ids[self.fault_rng.index(n_nodes)];
                self.coverage.hit("fault.enospc_window");
                trace_event!(self.trace, now, Some(t), "disk full for {heal_after:?}");
                let mut cfg = self.nodes[t as usize].disk.config().clone();
                cfg.enospc_prob = 1.0;
                self.nodes[t as usize].disk.set_config(cfg);
                self.after(heal_after, Ev::Heal(Heal::Enospc(t)));
            }
            _ => {}
        }
    }

    /// Flips a bit of synced segment data on the bit-rot node: inside the CRC-covered
    /// part of a batch that the log's checkpoint records as durable (damage recovery is
    /// promised to detect), or anywhere in a segment with `bit_flip_anywhere`, or also in
    /// batches past the checkpoint with `bit_flip_past_checkpoint`.
    fn bit_flip(&mut self, now: Instant) {
        let anywhere = self.scenario.faults.bit_flip_anywhere;
        let past_checkpoint = self.scenario.faults.bit_flip_past_checkpoint || anywhere;
        let id = self.rot_node;
        let groups = self.scenario.groups;
        let node = &mut self.nodes[id as usize];
        let mut candidates: Vec<(String, usize, usize)> = Vec::new();
        for g in 0..groups {
            let dir = partition_dir(g);
            let checkpoint = node
                .disk
                .read_all(&format!("{dir}/{CHECKPOINT_FILE_NAME}"))
                .ok()
                .and_then(|b| Checkpoint::decode(&b));
            let durable_offset = match (past_checkpoint, checkpoint) {
                (true, _) => i64::MAX,
                (false, Some(c)) => c.durable_offset,
                (false, None) => continue,
            };
            for (name, _) in node.disk.list(&dir) {
                if SegmentId::parse_file_name(&name).is_none() {
                    continue;
                }
                let path = format!("{dir}/{name}");
                let Ok(bytes) = node.disk.read_all(&path) else {
                    continue;
                };
                if anywhere {
                    if !bytes.is_empty() {
                        candidates.push((path.clone(), 0, bytes.len()));
                    }
                    continue;
                }
                for (at, h) in iter_batches(&bytes) {
                    if h.last_offset() <= durable_offset {
                        // From the CRC field on: what CRC32C protects, and the CRC itself.
                        candidates.push((path.clone(), at + CRC_FIELD_OFFSET, at + h.size_bytes()));
                    }
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        let (path, lo, hi) = candidates[self.fault_rng.index(candidates.len())].clone();
        let byte = (lo + self.fault_rng.index(hi.saturating_sub(lo).max(1))) as u64;
        let bit = u8::try_from(self.fault_rng.index(8)).unwrap_or(0);
        if node.disk.flip_bit_at(&path, byte, bit) {
            self.coverage.hit("disk.bit_flip");
            trace_event!(self.trace, now, Some(id), "bit flip {path} byte {byte} bit {bit}");
        }
    }

    /// Asks the current leader for a churn; counts `what` if it accepted.
    fn leader_churn(&mut self, now: Instant, g: GroupId, churn: Churn, what: &'static str) -> bool {
        let Some(l) = self.current_leader(g) else {
            return false;
        };
        let local = self.nodes[l as usize].process.clock.local(now);
        let done = self.nodes[l as usize].members[g as usize]
            .replica
            .as_mut()
            .is_some_and(|r| r.churn(local, churn));
        if done {
            self.coverage.hit(what);
            trace_event!(self.trace, now, Some(l), "{}churn {churn:?}", self.gtag(g));
            self.after_step(l, g);
        }
        done
    }

    fn heal(&mut self, now: Instant, h: Heal) {
        match h {
            Heal::Partition => self.net.heal_partitions(),
            Heal::Link(a, b) => self.net.restore_one_way(a, b),
            Heal::Release(a, b) => {
                let msgs = self.net.release(a, b);
                for msg in msgs {
                    // Held messages go out together, after a fresh link delay.
                    let copies = self.net.send(&mut self.net_rng, a, b, msg);
                    for (delay, (group, msg)) in copies {
                        self.after(
                            delay,
                            Ev::Deliver {
                                from: a,
                                to: b,
                                group,
                                msg,
                            },
                        );
                    }
                }
            }
            Heal::Slow(t) => {
                for p in self.ids.clone() {
                    self.net.set_slow(t, p, 1);
                }
            }
            Heal::SlowDisk(t) | Heal::Enospc(t) => {
                let cfg = self.scenario.disk.clone();
                self.nodes[t as usize].disk.set_config(cfg);
            }
        }
        trace_event!(self.trace, now, None, "heal {h:?}");
    }

    // ---- phases ------------------------------------------------------------------

    fn start_liveness(&mut self, now: Instant) {
        self.phase = Phase::Liveness;
        self.liveness_start = now;
        trace_event!(
            self.trace,
            now,
            None,
            "liveness phase: heal everything, restart every node"
        );
        if let Some(gsim) = self.gsim.as_mut() {
            gsim.start_liveness();
        }
        let held = self.net.heal_all();
        self.net.set_default_link(LinkConfig {
            loss_prob: 0.0,
            dup_prob: 0.0,
            ..self.scenario.network
        });
        for (a, b, msg) in held {
            let copies = self.net.send(&mut self.net_rng, a, b, msg);
            for (delay, (group, msg)) in copies {
                self.after(
                    delay,
                    Ev::Deliver {
                        from: a,
                        to: b,
                        group,
                        msg,
                    },
                );
            }
        }
        let mut disk = self.scenario.disk.clone();
        disk.enospc_prob = 0.0;
        disk.io_error_prob = 0.0;
        for id in self.ids.clone() {
            self.nodes[id as usize].disk.set_config(disk.clone());
            if self.nodes[id as usize].process.liveness == Liveness::Down
                && !self.nodes[id as usize].disk_failed
            {
                self.nodes[id as usize].restart_pending = true;
                self.after(Duration::ZERO, Ev::Restart { node: id });
            }
        }
    }

    // ---- consumer groups -----------------------------------------------------------

    /// After a step of the offsets group's replica on `id`: its coordinator follows.
    fn drive_groups(&mut self, id: NodeId) {
        let (Some(og), Some(mut gsim)) = (self.offsets_group, self.gsim.take()) else {
            return;
        };
        let now = self.queue.now();
        let n = id as usize;
        let local = self.nodes[n].process.clock.local(now);
        let inc = self.nodes[n].process.incarnation;
        let proposed = match self.nodes[n].members[og as usize].replica.as_mut() {
            Some(r) => gsim.on_replica(now, local, id, inc, r, &mut self.trace),
            None => false,
        };
        self.finish_groups(gsim);
        if proposed {
            self.after_step(id, og);
        }
    }

    /// Puts the workload back: its events scheduled, its violation and liveness noted.
    fn finish_groups(&mut self, mut gsim: GroupSim) {
        for (delay, ev) in gsim.take_scheduled() {
            self.after(delay, Ev::Groups(ev));
        }
        let violation = gsim.violation().cloned();
        let (acked, fetched) = gsim.live();
        self.gsim = Some(gsim);
        if let Some(v) = violation {
            self.fail(v);
        }
        if let Some(og) = self.offsets_group {
            if self.phase == Phase::Liveness && acked {
                let state = &mut self.groups[og as usize];
                state.live_ack.get_or_insert(0);
                state.live_read |= fetched;
            }
        }
    }

    fn on_group_event(&mut self, now: Instant, ev: GroupEv) {
        let (Some(og), Some(mut gsim)) = (self.offsets_group, self.gsim.take()) else {
            return;
        };
        let mut stepped = Vec::new();
        match ev {
            GroupEv::Tick => {
                for node in gsim.hosting_nodes() {
                    let n = node as usize;
                    if !self.is_up(node) || self.nodes[n].process.paused_until(now).is_some() {
                        continue;
                    }
                    let local = self.nodes[n].process.clock.local(now);
                    if let Some(r) = self.nodes[n].members[og as usize].replica.as_mut() {
                        if gsim.on_coordinator_tick(now, local, node, r, &mut self.trace) {
                            stepped.push(node);
                        }
                    }
                }
                gsim.on_tick(now, self.current_leader(og));
            }
            GroupEv::Arrive { node, req } => {
                let n = node as usize;
                let local = self.nodes[n].process.clock.local(now);
                let up = self.is_up(node);
                let replica = self.nodes[n].members[og as usize].replica.as_mut().filter(|_| up);
                if gsim.on_arrive(now, local, node, req, replica, &mut self.trace) {
                    stepped.push(node);
                }
            }
            GroupEv::Answer { req, result } => gsim.on_answer(now, req, *result),
        }
        self.finish_groups(gsim);
        for node in stepped {
            self.after_step(node, og);
        }
        self.check_liveness_reached(now);
    }

    /// The node crashes: the coordinator it hosts is checked and dropped.
    fn groups_on_crash(&mut self, id: NodeId) {
        let (Some(og), Some(mut gsim)) = (self.offsets_group, self.gsim.take()) else {
            return;
        };
        let now = self.queue.now();
        let n = id as usize;
        let local = self.nodes[n].process.clock.local(now);
        let replica = self.nodes[n].members[og as usize].replica.as_ref();
        gsim.on_crash(now, local, id, replica, &mut self.trace);
        self.finish_groups(gsim);
    }

    fn check_liveness_reached(&mut self, now: Instant) {
        let all = self
            .groups
            .iter()
            .all(|g| g.live_leader && g.live_ack.is_some() && g.live_read);
        if self.phase == Phase::Liveness && all {
            self.coverage.hit("liveness.reached");
            trace_event!(
                self.trace,
                now,
                None,
                "liveness reached after {:?}",
                now - self.liveness_start
            );
            self.phase = Phase::Done;
        }
    }

    fn end_liveness(&mut self, now: Instant) {
        if self.phase == Phase::Liveness {
            // A safety violation explains a stuck cluster better than "stuck": check first.
            self.final_checks();
            if self.violation.is_some() {
                self.phase = Phase::Done;
                return;
            }
            let up = self.ids.iter().filter(|i| self.is_up(**i)).count();
            let stuck: Vec<String> = (0..)
                .zip(&self.groups)
                .filter(|(_, g)| !(g.live_leader && g.live_ack.is_some() && g.live_read))
                .map(|(i, g): (u32, &GroupState)| {
                    format!(
                        "group {i}: leader elected={}, new write acked={}, read served={}",
                        g.live_leader,
                        g.live_ack.is_some(),
                        g.live_read
                    )
                })
                .collect();
            self.fail(Violation {
                invariant: "liveness",
                detail: format!(
                    "within {}s of healing ({up}/{} nodes up): {}",
                    self.scenario.liveness_secs,
                    self.ids.len(),
                    stuck.join("; ")
                ),
            });
        }
        self.phase = Phase::Done;
        let _ = now;
    }

    fn log_of(&self, id: NodeId, g: GroupId) -> BTreeMap<u64, EntryId> {
        let mut log = BTreeMap::new();
        if let Some(r) = self.nodes[id as usize].members[g as usize].replica.as_ref() {
            if let Some(last) = r.status().last_index {
                for i in 0..=last {
                    if let Some(e) = r.entry(i) {
                        log.insert(i, entry_id(e));
                    }
                }
            }
        }
        log
    }

    fn final_checks(&mut self) {
        for g in self.group_ids() {
            let live: Vec<NodeId> = self.ids.iter().copied().filter(|i| self.is_up(*i)).collect();
            let logs: Vec<(NodeId, BTreeMap<u64, EntryId>)> =
                live.iter().map(|&i| (i, self.log_of(i, g))).collect();
            let state = &self.groups[g as usize];
            let mut result = check_log_matching(&logs);
            if let Some(l) = self.current_leader(g) {
                let commit = self.nodes[l as usize].members[g as usize]
                    .replica
                    .as_ref()
                    .and_then(|r| r.status().commit_index);
                if let Some(c) = commit {
                    let log = self.log_of(l, g);
                    result = result.and(state.checker.check_final_logs(l, &log, c));
                }
            }
            // The offsets group's entries are coordinator batches, not the queue
            // workload's values (its checks are group_sim's).
            if self.offsets_group != Some(g) {
                result = result.and(check_history(&state.history, state.checker.committed()));
            }
            if let Err(mut v) = result {
                if self.scenario.groups > 1 {
                    v.detail = format!("group {g}: {}", v.detail);
                }
                self.fail(v);
                return;
            }
        }
    }
}
