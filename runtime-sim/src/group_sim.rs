//! Consumer groups in the simulator: **core's group `Coordinator`** hosted on the leader
//! of one Raft group of the cluster (the `__consumer_offsets`-like partition), fed by
//! that group's committed entries, and simulated consumers of both protocols.
//!
//! This module owns: the coordinators (one per node that leads the offsets group, each
//! re-created and replayed from the checkpoint + log suffix when its node becomes
//! leader, dropped when it stops leading or crashes — as `core::broker::partitions`
//! does), the consumers (classic JoinGroup / SyncGroup / Heartbeat / OffsetCommit with a
//! client-side round-robin assignor, and KIP-848 ConsumerGroupHeartbeat with revocation
//! acks), the client↔coordinator messages (delay and loss), and four checkers:
//!
//! * `groups-acked-commit-lost` — an OffsetFetch answered by a coordinator of term `T`
//!   returns, for every partition, at least the highest offset acknowledged by a
//!   coordinator of term ≤ `T` (every commit of a partition carries a larger offset
//!   than all before it, so "it or a later commit" is "at least it").
//! * `groups-fenced-commit-acked` — a commit acknowledged while the coordinator's
//!   durable state already fenced its sender (classic: a generation older than the
//!   stored one; KIP-848: a member the stored group no longer has). The durable state
//!   at acknowledgement is never ahead of the live state when the commit was checked.
//! * `groups-partition-two-owners` — KIP-848: after every step of every coordinator, no
//!   partition is owned (assigned or being revoked) by two members.
//! * `groups-clients-share-partition` — KIP-848, client side: no two consumers that
//!   the newest active coordinator still counts as members hold the same partition
//!   (checked every tick).
//! * `groups-rebuild-differs` — the state rebuilt from the log (checkpoint + suffix,
//!   through the coordinator's own load path) equals the live durable state: checked
//!   when a checkpoint is committed (from its first offset) and before the hosting node
//!   crashes.
//!
//! The driver ([`crate::cluster`]) calls [`GroupSim::on_replica`] after every step of
//! the offsets group's replica on a node, routes [`GroupEv`]s back here, and tells it
//! about crashes. Log trimming (the coordinator's `TrimLog`) is modelled by where a
//! replay starts: at the latest committed checkpoint that the replaying replica's log
//! has committed (the sim's replicas keep their whole log, so nothing is deleted).

use crate::checker::{record_violation, Violation};
use crate::coverage::Coverage;
use crate::net::NodeId;
use crate::replica::{EntryKind, Replica, Role};
use crate::rng::{RngExt, Seeds, SimRng};
use crate::trace::Trace;
use crate::trace_event;
use bytes::Bytes;
use oxbow_core::group::records::GroupValue;
use oxbow_core::group::{
    ClientInfo, CommitEntry, Coordinator, CoordinatorOutput, GroupBugs, GroupConfig, GroupOp, GroupResult,
    ReplyId, TopicInfo, Topics,
};
use oxbow_core::kafka::protocol::messages as m;
use oxbow_core::kafka::protocol::protocol::StrBytes;
use oxbow_core::kafka::ErrorCode;
use oxbow_core::time::Instant;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The topic the consumers read.
const TOPIC: &str = "t";
/// Its id (KIP-848 assignments name topics by id).
const TOPIC_ID: [u8; 16] = [7; 16];
/// The wall clock of a node: this origin plus its local clock.
const WALL_ORIGIN_MS: i64 = 1_700_000_000_000;
/// Bound on requests in flight (each consumer has at most two).
const MAX_INFLIGHT: usize = 4_096;

/// `[groups]`: the consumer-group workload (see the module docs).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSimConfig {
    /// Run the group workload on the cluster's last Raft group.
    pub enabled: bool,
    /// Groups using the classic protocol.
    pub classic_groups: u32,
    /// Groups using KIP-848.
    pub consumer_groups: u32,
    /// Consumers per group.
    pub members_per_group: u32,
    /// Partitions of the consumed topic.
    pub partitions: i32,
    /// Period of the consumers' and coordinators' clock.
    pub tick_ms: u64,
    /// Time between two commits of one consumer.
    pub commit_interval_ms: u64,
    /// Time between two OffsetFetch checks of one group.
    pub fetch_interval_ms: u64,
    /// A request without an answer after this long is given up.
    pub request_timeout_ms: u64,
    /// Client↔coordinator one-way delay bounds.
    pub latency_min_ms: u64,
    /// Upper bound of the delay.
    pub latency_max_ms: u64,
    /// Probability that a client↔coordinator message is lost (safety phase only).
    pub loss_prob: f64,
    /// Per tick and consumer: it crashes (no LeaveGroup), and restarts later.
    pub crash_prob: f64,
    /// Per tick and consumer: it leaves its group (and rejoins later).
    pub leave_prob: f64,
    /// Per commit: a consumer that was fenced sends a commit with its old identity.
    pub zombie_commit_prob: f64,
    /// Session timeout of classic members and of KIP-848 groups.
    pub session_timeout_ms: i32,
    /// Coordinator checkpoint period (records).
    pub checkpoint_every_records: u64,
    /// Planted bug (core `GroupBugs`): commits answered before they are durable.
    pub bug_ack_commit_before_durable: bool,
    /// Planted bug: commits from fenced generations / epochs accepted.
    pub bug_skip_generation_check: bool,
    /// Planted bug: KIP-848 partitions handed out before their owner released them.
    pub bug_hand_out_unreleased_partitions: bool,
    /// Planted bug: a checkpoint leaves out its last key.
    pub bug_drop_checkpoint_key: bool,
}

impl Default for GroupSimConfig {
    fn default() -> Self {
        GroupSimConfig {
            enabled: false,
            classic_groups: 1,
            consumer_groups: 1,
            members_per_group: 3,
            partitions: 8,
            tick_ms: 50,
            commit_interval_ms: 300,
            fetch_interval_ms: 700,
            request_timeout_ms: 2_000,
            latency_min_ms: 1,
            latency_max_ms: 15,
            loss_prob: 0.02,
            crash_prob: 0.003,
            leave_prob: 0.002,
            zombie_commit_prob: 0.2,
            session_timeout_ms: 2_000,
            checkpoint_every_records: 40,
            bug_ack_commit_before_durable: false,
            bug_skip_generation_check: false,
            bug_hand_out_unreleased_partitions: false,
            bug_drop_checkpoint_key: false,
        }
    }
}

impl GroupSimConfig {
    /// Checks every value; the message names the bad option.
    pub fn validate(&self) -> Result<(), String> {
        if self.classic_groups + self.consumer_groups == 0 || self.classic_groups + self.consumer_groups > 16
        {
            return Err("groups: classic_groups + consumer_groups must be 1..=16".into());
        }
        if !(1..=16).contains(&self.members_per_group) {
            return Err("groups.members_per_group must be 1..=16".into());
        }
        if !(1..=256).contains(&self.partitions) {
            return Err("groups.partitions must be 1..=256".into());
        }
        if self.tick_ms == 0 || self.commit_interval_ms == 0 || self.fetch_interval_ms == 0 {
            return Err("groups.tick_ms, commit_interval_ms and fetch_interval_ms must be positive".into());
        }
        if self.request_timeout_ms == 0 || self.latency_max_ms < self.latency_min_ms {
            return Err(
                "groups.request_timeout_ms must be positive, latency_min_ms <= latency_max_ms".into(),
            );
        }
        for (name, p) in [
            ("loss_prob", self.loss_prob),
            ("crash_prob", self.crash_prob),
            ("leave_prob", self.leave_prob),
            ("zombie_commit_prob", self.zombie_commit_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("groups.{name} = {p} (must be in 0..=1)"));
            }
        }
        if self.session_timeout_ms < 100 || self.checkpoint_every_records == 0 {
            return Err("groups.session_timeout_ms must be >= 100, checkpoint_every_records positive".into());
        }
        Ok(())
    }

    fn bugs(&self) -> GroupBugs {
        GroupBugs {
            ack_commit_before_durable: self.bug_ack_commit_before_durable,
            skip_generation_check: self.bug_skip_generation_check,
            hand_out_unreleased_partitions: self.bug_hand_out_unreleased_partitions,
            drop_checkpoint_key: self.bug_drop_checkpoint_key,
        }
    }

    fn coordinator_config(&self) -> GroupConfig {
        GroupConfig {
            offsets_partitions: 1,
            min_session_timeout_ms: 100,
            initial_rebalance_delay_ms: 200,
            consumer_session_timeout_ms: self.session_timeout_ms,
            consumer_heartbeat_interval_ms: self.session_timeout_ms / 4,
            checkpoint_every_records: self.checkpoint_every_records,
            ..GroupConfig::default()
        }
    }
}

/// An event of the group workload, scheduled by the driver.
#[derive(Debug)]
pub enum GroupEv {
    /// Consumers act; coordinators run their deadlines.
    Tick,
    /// Request `req` reaches `node`.
    Arrive {
        /// The node it was sent to.
        node: NodeId,
        /// The request.
        req: u64,
    },
    /// The answer to `req` reaches its consumer.
    Answer {
        /// The request.
        req: u64,
        /// The answer.
        result: Box<GroupResult>,
    },
}

/// Which protocol a consumer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Classic,
    Consumer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    Down { until: Instant },
    Unjoined,
    Joining,
    Syncing,
    Stable,
}

/// A simulated consumer.
#[derive(Debug)]
struct Consumer {
    group: String,
    proto: Proto,
    state: CState,
    member_id: String,
    /// Classic generation or KIP-848 member epoch.
    generation: i32,
    owned: BTreeSet<i32>,
    /// The owned set last told to the coordinator (KIP-848 revocation acks).
    owned_sent: Option<BTreeSet<i32>>,
    /// An identity this consumer was fenced from (for zombie commits).
    fenced_identity: Option<(String, i32)>,
    coordinator: Option<NodeId>,
    membership_req: Option<u64>,
    commit_req: Option<u64>,
    next_heartbeat: Instant,
    next_commit: Instant,
}

#[derive(Clone, Debug)]
enum ReqKind {
    Join,
    Sync,
    Heartbeat,
    Leave,
    ConsumerHeartbeat {
        owned: Option<BTreeSet<i32>>,
    },
    Commit {
        member_id: String,
        generation: i32,
        zombie: bool,
    },
    Fetch,
}

#[derive(Debug)]
struct Req {
    consumer: Option<usize>,
    group: String,
    kind: ReqKind,
    op: Option<GroupOp>,
    deadline: Instant,
}

/// A coordinator hosted by a node that leads the offsets group.
#[derive(Debug)]
struct Host {
    coordinator: Coordinator,
    inc: u64,
    term: u64,
    loading: bool,
    /// Appends proposed: offset → (term, coordinator token).
    proposals: BTreeMap<u64, (u64, u64)>,
    /// Every entry up to here is reflected in the coordinator's durable state.
    applied_through: Option<u64>,
}

/// The group workload of one run.
#[derive(Debug)]
pub struct GroupSim {
    config: GroupSimConfig,
    rng: SimRng,
    coordinator_seed: u64,
    hosts: BTreeMap<NodeId, Host>,
    consumers: Vec<Consumer>,
    reqs: BTreeMap<u64, Req>,
    next_req: u64,
    /// Offsets next handed to commits, per (group, partition): unique per commit.
    next_offset: BTreeMap<(String, i32), i64>,
    /// When each commit reached a coordinator: (group, partition, offset) → arrival
    /// number. Commits that become durable do so in arrival order (a coordinator
    /// appends in the order it handles requests; a newer term's coordinator handles
    /// requests only after everything of older terms is committed and replayed).
    arrivals: BTreeMap<(String, i32, i64), u64>,
    next_arrival: u64,
    /// Acknowledged commits: (group, partition) → coordinator term → latest arrival.
    acked: BTreeMap<(String, i32), BTreeMap<u64, (u64, i64)>>,
    next_fetch: Instant,
    /// Committed checkpoints: offset of the last batch → offset of the first. A replay
    /// starts at the latest checkpoint its log commits (a replica that has not
    /// committed a checkpoint yet replays from an older one).
    checkpoints: BTreeMap<u64, u64>,
    liveness: bool,
    live_commit: bool,
    live_fetch: bool,
    scheduled: Vec<(Duration, GroupEv)>,
    violation: Option<Violation>,
    disabled: Vec<String>,
    coverage: Coverage,
    now: Instant,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topics(partitions: i32) -> Topics {
    [(
        TOPIC.to_string(),
        TopicInfo {
            id: TOPIC_ID,
            partitions,
        },
    )]
    .into_iter()
    .collect()
}

fn wall_ms(local: Instant) -> i64 {
    WALL_ORIGIN_MS + i64::try_from(local.as_millis()).unwrap_or(i64::MAX / 2)
}

/// A classic assignment as the sim's consumers encode it: partitions, 4 bytes each.
fn encode_assignment(partitions: &[i32]) -> Bytes {
    Bytes::from(
        partitions
            .iter()
            .flat_map(|p| p.to_be_bytes())
            .collect::<Vec<u8>>(),
    )
}

fn decode_assignment(bytes: &[u8]) -> BTreeSet<i32> {
    bytes
        .chunks_exact(4)
        .filter_map(|c| <[u8; 4]>::try_from(c).ok())
        .map(i32::from_be_bytes)
        .collect()
}

/// Subscription metadata of a classic consumer (topic `t`).
const SUBSCRIPTION: &[u8] = &[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0];

/// Whether an error means "find the coordinator again".
fn is_coordinator_error(code: i16) -> bool {
    code == ErrorCode::NOT_COORDINATOR.0
        || code == ErrorCode::COORDINATOR_NOT_AVAILABLE.0
        || code == ErrorCode::COORDINATOR_LOAD_IN_PROGRESS.0
}

/// Replays `from..=to` of the replica's log into a fresh coordinator (the load path).
fn rebuild<R: Replica>(
    replica: &R,
    from: u64,
    to: Option<u64>,
    config: GroupConfig,
    partitions: i32,
    local: Instant,
) -> Result<Coordinator, String> {
    let mut fresh = Coordinator::new(0, config, 0);
    fresh.set_topics(local, wall_ms(local), topics(partitions));
    fresh.begin_load(0);
    if let Some(to) = to {
        for i in from..=to {
            let Some(e) = replica.entry(i) else {
                return Err(format!("entry {i} missing from the log"));
            };
            if e.kind == EntryKind::Data {
                fresh
                    .load_batches(&e.payload)
                    .map_err(|e| format!("entry {i}: {e}"))?;
            }
        }
    }
    fresh.finish_load(local, wall_ms(local));
    Ok(fresh)
}

/// Where two durable states first differ (`None`: equal).
fn first_difference(a: &Coordinator, b: &Coordinator) -> Option<String> {
    let (ga, oa) = a.durable_state();
    let (gb, ob) = b.durable_state();
    for key in ga.keys().chain(gb.keys()) {
        if ga.get(key) != gb.get(key) {
            return Some(format!(
                "group {key:?}: live {:?} vs rebuilt {:?}",
                ga.get(key),
                gb.get(key)
            ));
        }
    }
    for group in oa.keys().chain(ob.keys()) {
        let (x, y) = (oa.get(group), ob.get(group));
        if x != y {
            let keys: BTreeSet<&(String, i32)> = x.iter().chain(y.iter()).flat_map(|o| o.keys()).collect();
            for k in keys {
                let (vx, vy) = (x.and_then(|o| o.get(k)), y.and_then(|o| o.get(k)));
                if vx != vy {
                    return Some(format!(
                        "offset {group:?} {k:?}: live {:?} vs rebuilt {:?}",
                        vx.map(|v| v.offset),
                        vy.map(|v| v.offset)
                    ));
                }
            }
        }
    }
    None
}

impl GroupSim {
    /// The workload of `config` for the run of `seeds`; invariants named in `disabled`
    /// are not reported (the scenario's `disabled_checks`).
    pub fn new(config: GroupSimConfig, seeds: &Seeds, disabled: &[String]) -> GroupSim {
        let mut consumers = Vec::new();
        let groups = (0..config.classic_groups)
            .map(|i| (format!("classic-{i}"), Proto::Classic))
            .chain((0..config.consumer_groups).map(|i| (format!("kip848-{i}"), Proto::Consumer)));
        for (group, proto) in groups {
            for _ in 0..config.members_per_group {
                consumers.push(Consumer {
                    group: group.clone(),
                    proto,
                    state: CState::Unjoined,
                    member_id: String::new(),
                    generation: 0,
                    owned: BTreeSet::new(),
                    owned_sent: None,
                    fenced_identity: None,
                    coordinator: None,
                    membership_req: None,
                    commit_req: None,
                    next_heartbeat: Instant::ZERO,
                    next_commit: Instant::ZERO,
                });
            }
        }
        let mut seed_rng = seeds.stream("groups/coordinator");
        GroupSim {
            coordinator_seed: seed_rng.between(0, u64::MAX / 2),
            disabled: disabled.to_vec(),
            rng: seeds.stream("groups"),
            config,
            hosts: BTreeMap::new(),
            consumers,
            reqs: BTreeMap::new(),
            next_req: 1,
            next_offset: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            next_arrival: 1,
            acked: BTreeMap::new(),
            next_fetch: Instant::ZERO,
            checkpoints: BTreeMap::new(),
            liveness: false,
            live_commit: false,
            live_fetch: false,
            scheduled: Vec::new(),
            violation: None,
            coverage: Coverage::default(),
            now: Instant::ZERO,
        }
    }

    /// The first broken invariant, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Events to schedule (delay from now), taken.
    pub fn take_scheduled(&mut self) -> Vec<(Duration, GroupEv)> {
        std::mem::take(&mut self.scheduled)
    }

    /// Adds this workload's counters to the run's.
    pub fn harvest_coverage(&self, coverage: &mut Coverage) {
        coverage.merge(&self.coverage);
    }

    /// Faults stop: no more client crashes, leaves, zombies or lost messages.
    pub fn start_liveness(&mut self) {
        self.liveness = true;
        self.live_commit = false;
        self.live_fetch = false;
    }

    /// Since the liveness phase began: a commit acknowledged and an OffsetFetch served.
    pub fn live(&self) -> (bool, bool) {
        (self.live_commit, self.live_fetch)
    }

    fn fail(&mut self, invariant: &'static str, detail: String) {
        let v = Violation { invariant, detail };
        record_violation(&mut self.violation, &self.disabled, &mut self.coverage, v);
    }

    // ---- coordinators ------------------------------------------------------------

    /// After a step of the offsets group's replica on `node` (incarnation `inc`):
    /// coordinators start, load, learn of committed appends and stop. Returns whether
    /// something was proposed (the driver then steps the replica again).
    pub fn on_replica<R: Replica>(
        &mut self,
        now: Instant,
        local: Instant,
        node: NodeId,
        inc: u64,
        replica: &mut R,
        trace: &mut Trace,
    ) -> bool {
        self.now = now;
        let st = replica.status();
        let leading = st.role == Role::Leader;
        let stale = self
            .hosts
            .get(&node)
            .is_some_and(|h| !(leading && h.term == st.term && h.inc == inc));
        if stale {
            self.drop_host(now, node, trace);
        }
        if leading && !self.hosts.contains_key(&node) {
            self.start_host(now, local, node, inc, st.term, trace);
        }
        let Some(host) = self.hosts.get_mut(&node) else {
            return false;
        };
        let Some(commit) = st.commit_index else {
            return false;
        };
        if host.loading {
            if st.last_index != Some(commit) {
                // The new leader's first entry is not committed yet: the log may still
                // hold entries of earlier terms that are not known committed.
                return false;
            }
            self.load(now, local, node, replica, commit, trace);
        }
        let mut proposed = false;
        loop {
            let Some(host) = self.hosts.get_mut(&node) else {
                return proposed;
            };
            let Some((&index, &(term, token))) = host.proposals.iter().next() else {
                break;
            };
            if index > commit {
                break;
            }
            host.proposals.remove(&index);
            let result = match replica.entry(index) {
                Some(e) if e.term == term => Ok(i64::try_from(index).unwrap_or(i64::MAX)),
                _ => Err(ErrorCode::NOT_LEADER_OR_FOLLOWER.0),
            };
            host.applied_through = Some(index);
            host.coordinator
                .on_append_done(local, wall_ms(local), token, result);
            proposed |= self.pump(now, local, node, replica, trace);
        }
        proposed
    }

    fn start_host(
        &mut self,
        now: Instant,
        local: Instant,
        node: NodeId,
        inc: u64,
        term: u64,
        trace: &mut Trace,
    ) {
        let seed = self.coordinator_seed ^ u64::from(node);
        let mut coordinator = Coordinator::new(0, self.config.coordinator_config(), seed);
        coordinator.plant(self.config.bugs());
        coordinator.set_topics(local, wall_ms(local), topics(self.config.partitions));
        coordinator.begin_load(i32::try_from(term).unwrap_or(i32::MAX));
        trace_event!(
            trace,
            now,
            Some(node),
            "groups: coordinator of term {term} loading"
        );
        self.hosts.insert(
            node,
            Host {
                coordinator,
                inc,
                term,
                loading: true,
                proposals: BTreeMap::new(),
                applied_through: None,
            },
        );
    }

    /// The node stopped leading (or restarted): its coordinator unloads and goes.
    fn drop_host(&mut self, now: Instant, node: NodeId, trace: &mut Trace) {
        let Some(mut host) = self.hosts.remove(&node) else {
            return;
        };
        host.coordinator.unload();
        while let Some(output) = host.coordinator.poll_output() {
            if let CoordinatorOutput::Reply { reply, result } = output {
                self.answer(reply.0, result, host.term);
            }
        }
        self.coverage.hit("groups.coordinator.unloaded");
        trace_event!(
            trace,
            now,
            Some(node),
            "groups: coordinator of term {} unloaded",
            host.term
        );
    }

    /// Replays the checkpoint + log suffix up to `commit` and serves.
    fn load<R: Replica>(
        &mut self,
        now: Instant,
        local: Instant,
        node: NodeId,
        replica: &R,
        commit: u64,
        trace: &mut Trace,
    ) {
        let from = self.replay_start(Some(commit));
        let Some(host) = self.hosts.get_mut(&node) else {
            return;
        };
        let mut error = None;
        for i in from..=commit {
            match replica.entry(i) {
                Some(e) if e.kind == EntryKind::Data => {
                    if let Err(e) = host.coordinator.load_batches(&e.payload) {
                        error = Some(format!("node {node} replaying offset {i}: {e}"));
                        break;
                    }
                }
                Some(_) => {}
                None => {
                    error = Some(format!("node {node} commits {commit} but has no entry {i}"));
                    break;
                }
            }
        }
        if let Some(e) = error {
            return self.fail("groups-load", e);
        }
        host.coordinator.finish_load(local, wall_ms(local));
        host.loading = false;
        host.applied_through = Some(commit);
        let term = host.term;
        self.coverage.hit("groups.coordinator.loaded");
        if from > 0 {
            self.coverage.hit("groups.checkpoint.loaded");
        }
        trace_event!(
            trace,
            now,
            Some(node),
            "groups: coordinator of term {term} loaded {from}..={commit}"
        );
    }

    /// Moves a coordinator's outputs; returns whether something was proposed.
    fn pump<R: Replica>(
        &mut self,
        now: Instant,
        local: Instant,
        node: NodeId,
        replica: &mut R,
        trace: &mut Trace,
    ) -> bool {
        let mut proposed = false;
        loop {
            let Some(host) = self.hosts.get_mut(&node) else {
                return proposed;
            };
            let term = host.term;
            let Some(output) = host.coordinator.poll_output() else {
                break;
            };
            match output {
                CoordinatorOutput::Reply { reply, result } => {
                    self.on_reply(node, reply.0, &result);
                    self.answer(reply.0, result, term);
                }
                CoordinatorOutput::Append { token, batch } => match replica.propose(local, batch) {
                    Ok(index) => {
                        host.proposals.insert(index, (replica.status().term, token));
                        proposed = true;
                    }
                    Err(_) => {
                        host.coordinator.on_append_done(
                            local,
                            wall_ms(local),
                            token,
                            Err(ErrorCode::NOT_LEADER_OR_FOLLOWER.0),
                        );
                    }
                },
                CoordinatorOutput::TrimLog { offset } => {
                    let offset = u64::try_from(offset).unwrap_or(0);
                    self.coverage.hit("groups.checkpoint.committed");
                    trace_event!(
                        trace,
                        now,
                        Some(node),
                        "groups: checkpoint committed, log starts at {offset}"
                    );
                    self.check_rebuild(node, replica, offset, local, "after a checkpoint");
                    if let Some(end) = self.hosts.get(&node).and_then(|h| h.applied_through) {
                        self.checkpoints.insert(end, offset);
                    }
                }
                CoordinatorOutput::Reload => {
                    self.coverage.hit("groups.coordinator.reload");
                    host.coordinator
                        .begin_load(i32::try_from(term).unwrap_or(i32::MAX));
                    host.loading = true;
                    host.proposals.clear();
                }
                _ => {}
            }
        }
        self.check_owners(node);
        proposed
    }

    /// Where a replay of a log committed up to `commit` starts.
    fn replay_start(&self, commit: Option<u64>) -> u64 {
        commit
            .and_then(|c| self.checkpoints.range(..=c).next_back())
            .map_or(0, |(_, &start)| start)
    }

    /// Checker 4: the state rebuilt from `from` equals the live durable state.
    fn check_rebuild<R: Replica>(
        &mut self,
        node: NodeId,
        replica: &R,
        from: u64,
        local: Instant,
        when: &str,
    ) {
        let Some(host) = self.hosts.get(&node) else {
            return;
        };
        if host.loading {
            return;
        }
        let config = self.config.coordinator_config();
        let result = rebuild(
            replica,
            from,
            host.applied_through,
            config,
            self.config.partitions,
            local,
        )
        .map(|fresh| first_difference(&host.coordinator, &fresh));
        self.coverage.hit("groups.check.rebuild");
        match result {
            Ok(None) => {}
            Ok(Some(diff)) => self.fail(
                "groups-rebuild-differs",
                format!(
                    "node {node} {when}: the state rebuilt from offset {from} to {:?} differs: {diff}",
                    host.applied_through
                ),
            ),
            Err(e) => self.fail("groups-load", format!("node {node} rebuilding {when}: {e}")),
        }
    }

    /// Checker 3: no partition owned by two members in any coordinator's view.
    fn check_owners(&mut self, node: NodeId) {
        let Some(host) = self.hosts.get(&node) else {
            return;
        };
        let names: BTreeSet<&String> = self
            .consumers
            .iter()
            .filter(|c| c.proto == Proto::Consumer)
            .map(|c| &c.group)
            .collect();
        let mut found = None;
        for name in names {
            let Some(group) = host.coordinator.consumer_group(name) else {
                continue;
            };
            if let Some(((topic, p), owners)) = group.owners().into_iter().find(|(_, o)| o.len() > 1) {
                found = Some(format!(
                    "node {node} (term {}): group {name} partition {topic}-{p} owned by {owners:?}",
                    host.term
                ));
                break;
            }
        }
        if let Some(detail) = found {
            self.fail("groups-partition-two-owners", detail);
        }
    }

    /// Checker 3, client side: among KIP-848 consumers that are still members in the
    /// view of the newest active coordinator (a fenced consumer that has not heard so
    /// is a zombie Kafka tolerates), no partition is held by two.
    fn check_client_owners(&mut self) {
        let Some(host) = self.hosts.values().filter(|h| !h.loading).max_by_key(|h| h.term) else {
            return;
        };
        let mut held: BTreeMap<(&str, i32), &str> = BTreeMap::new();
        let mut found = None;
        for consumer in self
            .consumers
            .iter()
            .filter(|c| c.proto == Proto::Consumer && c.state == CState::Stable)
        {
            let Some(group) = host.coordinator.consumer_group(&consumer.group) else {
                continue;
            };
            let current = group
                .to_value()
                .members
                .iter()
                .any(|mv| mv.member_id == consumer.member_id);
            if !current {
                continue;
            }
            for &p in &consumer.owned {
                if let Some(other) = held.insert((consumer.group.as_str(), p), consumer.member_id.as_str()) {
                    found = Some(format!(
                        "consumers {other:?} and {:?} of group {} both hold partition {p} (both members at term {})",
                        consumer.member_id, consumer.group, host.term
                    ));
                }
            }
        }
        if let Some(detail) = found {
            self.fail("groups-clients-share-partition", detail);
        }
    }

    /// The node crashes: checker 4 against the state before the crash, then the
    /// coordinator is gone with the process.
    pub fn on_crash<R: Replica>(
        &mut self,
        now: Instant,
        local: Instant,
        node: NodeId,
        replica: Option<&R>,
        trace: &mut Trace,
    ) {
        if let Some(replica) = replica {
            let from = self.replay_start(self.hosts.get(&node).and_then(|h| h.applied_through));
            self.check_rebuild(node, replica, from, local, "before a crash");
        }
        if let Some(host) = self.hosts.remove(&node) {
            self.coverage.hit("groups.coordinator.crashed");
            trace_event!(
                trace,
                now,
                Some(node),
                "groups: coordinator of term {} crashed",
                host.term
            );
        }
    }

    // ---- checks at the coordinator's answer ----------------------------------------

    /// Checkers 1 and 2, as the coordinator answers a commit or a fetch.
    fn on_reply(&mut self, node: NodeId, req: u64, result: &GroupResult) {
        let Some(host) = self.hosts.get(&node) else {
            return;
        };
        let term = host.term;
        let Some(r) = self.reqs.get(&req) else {
            return;
        };
        let group = r.group.clone();
        match (&r.kind, result) {
            (
                ReqKind::Commit {
                    member_id,
                    generation,
                    zombie,
                },
                GroupResult::Committed(errors),
            ) => {
                let (member_id, generation, zombie) = (member_id.clone(), *generation, *zombie);
                let offsets: BTreeMap<i32, i64> = match &r.op {
                    Some(GroupOp::Commit { entries, .. }) => {
                        entries.iter().map(|e| (e.partition, e.offset)).collect()
                    }
                    _ => BTreeMap::new(),
                };
                let acked: Vec<(i32, i64)> = errors
                    .get(TOPIC)
                    .into_iter()
                    .flatten()
                    .filter(|(_, code)| *code == 0)
                    .filter_map(|(p, _)| offsets.get(p).map(|o| (*p, *o)))
                    .collect();
                if acked.is_empty() {
                    self.coverage.hit(if zombie {
                        "groups.commit.zombie_refused"
                    } else {
                        "groups.commit.refused"
                    });
                    return;
                }
                self.coverage.hit("groups.commit.acked");
                if self.liveness && !zombie {
                    self.live_commit = true;
                }
                if let Some(why) = self.fenced_by_durable_state(node, &group, &member_id, generation) {
                    return self.fail(
                        "groups-fenced-commit-acked",
                        format!(
                            "node {node} (term {term}) acknowledged a commit of group {group} by member {member_id:?} generation/epoch {generation}{}: {why}",
                            if zombie { " (a fenced consumer's zombie commit)" } else { "" }
                        ),
                    );
                }
                for (p, offset) in acked {
                    let Some(&arrival) = self.arrivals.get(&(group.clone(), p, offset)) else {
                        continue;
                    };
                    let by_term = self.acked.entry((group.clone(), p)).or_default();
                    let best = by_term.entry(term).or_insert((arrival, offset));
                    *best = (*best).max((arrival, offset));
                }
            }
            (ReqKind::Fetch, GroupResult::Offsets { error, topics }) => {
                if *error != 0 {
                    return;
                }
                self.coverage.hit("groups.fetch.served");
                if self.liveness {
                    self.live_fetch = true;
                }
                for f in topics.get(TOPIC).into_iter().flatten().filter(|f| f.error == 0) {
                    let Some(by_term) = self.acked.get(&(group.clone(), f.partition)) else {
                        continue;
                    };
                    let Some((ack_term, &(best_arrival, best))) =
                        by_term.range(..=term).max_by_key(|(_, a)| **a)
                    else {
                        continue;
                    };
                    let arrival = self
                        .arrivals
                        .get(&(group.clone(), f.partition, f.offset))
                        .copied();
                    let newest = by_term.values().map(|(a, _)| *a).max().unwrap_or(0);
                    if arrival.is_some_and(|a| a >= best_arrival && a < newest) {
                        // A deposed coordinator that does not know it yet answers from
                        // its own (older) state: legal, as in Kafka; counted.
                        self.coverage.hit("groups.fetch.stale_from_deposed");
                    }
                    if arrival.is_none_or(|a| a < best_arrival) {
                        let detail = format!(
                            "node {node} (term {term}) answered OffsetFetch of group {group} partition {}: {} (arrival {arrival:?}), but offset {best} (arrival {best_arrival}) was acknowledged by the coordinator of term {ack_term}",
                            f.partition, f.offset
                        );
                        return self.fail("groups-acked-commit-lost", detail);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether the coordinator's durable state already fences this sender.
    fn fenced_by_durable_state(
        &self,
        node: NodeId,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Option<String> {
        let host = self.hosts.get(&node)?;
        match host.coordinator.durable_state().0.get(group) {
            None => Some("the stored state has no such group".into()),
            Some(GroupValue::Classic(v)) if generation < v.generation => {
                Some(format!("the stored generation is {}", v.generation))
            }
            Some(GroupValue::Consumer(v)) if !v.members.iter().any(|mv| mv.member_id == member_id) => {
                Some("the stored group has no such member".into())
            }
            _ => None,
        }
    }

    /// Sends an answer back to its consumer (after a delay; maybe lost).
    fn answer(&mut self, req: u64, result: GroupResult, term: u64) {
        if !self.reqs.contains_key(&req) {
            return;
        }
        let _ = term;
        if !self.liveness && self.rng.chance(self.config.loss_prob) {
            self.coverage.hit("groups.message.lost");
            return;
        }
        let delay = self.latency();
        self.scheduled.push((
            delay,
            GroupEv::Answer {
                req,
                result: Box::new(result),
            },
        ));
    }

    fn latency(&mut self) -> Duration {
        Duration::from_millis(
            self.rng
                .between(self.config.latency_min_ms, self.config.latency_max_ms),
        )
    }

    // ---- events --------------------------------------------------------------------

    /// A request reaches `node` (whose offsets replica is `replica`, if it is up).
    /// Returns whether something was proposed.
    pub fn on_arrive<R: Replica>(
        &mut self,
        now: Instant,
        local: Instant,
        node: NodeId,
        req: u64,
        replica: Option<&mut R>,
        trace: &mut Trace,
    ) -> bool {
        self.now = now;
        let Some(replica) = replica else {
            return false;
        };
        // A commit keeps its request (the checkers read its offsets at the answer).
        let op = match self.reqs.get_mut(&req) {
            Some(r) if matches!(r.kind, ReqKind::Commit { .. }) => r.op.clone(),
            Some(r) => r.op.take(),
            None => None,
        };
        let Some(op) = op else {
            return false;
        };
        let Some(host) = self.hosts.get_mut(&node) else {
            self.answer(req, GroupResult::Error(ErrorCode::NOT_COORDINATOR.0), 0);
            return false;
        };
        if let GroupOp::Commit { group, entries, .. } = &op {
            for e in entries {
                self.arrivals
                    .insert((group.clone(), e.partition, e.offset), self.next_arrival);
            }
            self.next_arrival += 1;
        }
        host.coordinator.handle(local, wall_ms(local), ReplyId(req), op);
        self.pump(now, local, node, replica, trace)
    }

    /// The answer to `req` reaches its consumer.
    pub fn on_answer(&mut self, now: Instant, req: u64, result: GroupResult) {
        self.now = now;
        let Some(r) = self.reqs.remove(&req) else {
            return;
        };
        let Some(c) = r.consumer else {
            return;
        };
        if self.consumers[c].membership_req == Some(req) {
            self.consumers[c].membership_req = None;
        } else if self.consumers[c].commit_req == Some(req) {
            self.consumers[c].commit_req = None;
        } else {
            return;
        }
        if matches!(self.consumers[c].state, CState::Down { .. }) {
            return;
        }
        match (r.kind, result) {
            (_, GroupResult::Error(code)) => self.on_coordinator_error(c, code),
            (ReqKind::Join, GroupResult::Join(resp)) => self.on_join(c, &resp),
            (ReqKind::Sync, GroupResult::Sync(resp)) => self.on_sync(c, &resp),
            (ReqKind::Heartbeat, GroupResult::Heartbeat(code)) => self.on_classic_error(c, code),
            (ReqKind::ConsumerHeartbeat { owned }, GroupResult::ConsumerHeartbeat(resp)) => {
                self.on_consumer_heartbeat(c, owned, &resp)
            }
            (ReqKind::Commit { zombie: false, .. }, GroupResult::Committed(errors)) => {
                let code = errors
                    .get(TOPIC)
                    .into_iter()
                    .flatten()
                    .map(|(_, code)| *code)
                    .find(|code| *code != 0);
                if let Some(code) = code {
                    self.on_classic_error(c, code);
                }
            }
            _ => {}
        }
    }

    fn on_coordinator_error(&mut self, c: usize, code: i16) {
        if is_coordinator_error(code) {
            self.consumers[c].coordinator = None;
            self.coverage.hit("groups.client.coordinator_moved");
        }
        let consumer = &mut self.consumers[c];
        if matches!(consumer.state, CState::Joining | CState::Syncing) {
            consumer.state = CState::Unjoined;
        }
    }

    /// The consumer is fenced or must rejoin: it forgets its identity (if fenced) and
    /// what it owned.
    fn rejoin(&mut self, c: usize, fenced: bool) {
        let consumer = &mut self.consumers[c];
        if fenced && !consumer.member_id.is_empty() {
            consumer.fenced_identity = Some((consumer.member_id.clone(), consumer.generation));
            consumer.member_id.clear();
            consumer.generation = 0;
            self.coverage.hit("groups.member.fenced");
        }
        consumer.owned.clear();
        consumer.owned_sent = None;
        consumer.state = CState::Unjoined;
    }

    fn on_classic_error(&mut self, c: usize, code: i16) {
        if code == 0 {
            return;
        }
        if is_coordinator_error(code) {
            return self.on_coordinator_error(c, code);
        }
        let fenced = code == ErrorCode::UNKNOWN_MEMBER_ID.0
            || code == ErrorCode::FENCED_MEMBER_EPOCH.0
            || code == ErrorCode::ILLEGAL_GENERATION.0;
        if fenced || code == ErrorCode::REBALANCE_IN_PROGRESS.0 || code == ErrorCode::STALE_MEMBER_EPOCH.0 {
            let keep_id =
                code == ErrorCode::REBALANCE_IN_PROGRESS.0 || code == ErrorCode::ILLEGAL_GENERATION.0;
            if keep_id && self.consumers[c].proto == Proto::Classic {
                // Classic: rejoin under the same member id.
                let consumer = &mut self.consumers[c];
                consumer.fenced_identity = Some((consumer.member_id.clone(), consumer.generation));
                consumer.owned.clear();
                consumer.state = CState::Unjoined;
                self.coverage.hit("groups.classic.rejoin");
            } else {
                self.rejoin(c, fenced);
            }
        }
    }

    fn on_join(&mut self, c: usize, resp: &m::JoinGroupResponse) {
        if resp.error_code == ErrorCode::MEMBER_ID_REQUIRED.0 {
            self.consumers[c].member_id = resp.member_id.to_string();
            self.consumers[c].state = CState::Unjoined;
            return;
        }
        if resp.error_code != 0 {
            self.on_classic_error(c, resp.error_code);
            if self.consumers[c].state == CState::Joining {
                self.consumers[c].state = CState::Unjoined;
            }
            return;
        }
        let consumer = &mut self.consumers[c];
        consumer.member_id = resp.member_id.to_string();
        consumer.generation = resp.generation_id;
        consumer.state = CState::Syncing;
        let mut assignments = Vec::new();
        if resp.leader == resp.member_id {
            // The client-side assignor: round robin over members in id order.
            let mut members: Vec<String> = resp.members.iter().map(|mm| mm.member_id.to_string()).collect();
            members.sort();
            members.dedup();
            let n = members.len().max(1);
            for (i, member) in members.iter().enumerate() {
                let parts: Vec<i32> = (0..self.config.partitions)
                    .filter(|p| usize::try_from(*p).unwrap_or(0) % n == i)
                    .collect();
                let mut a = m::sync_group_request::SyncGroupRequestAssignment::default();
                a.member_id = s(member);
                a.assignment = encode_assignment(&parts);
                assignments.push(a);
            }
        }
        let mut sync = m::SyncGroupRequest::default();
        sync.group_id = m::GroupId(s(&consumer.group));
        sync.generation_id = consumer.generation;
        sync.member_id = s(&consumer.member_id);
        sync.protocol_type = Some(s("consumer"));
        sync.protocol_name = resp.protocol_name.clone();
        sync.assignments = assignments;
        self.send(
            c,
            ReqKind::Sync,
            GroupOp::Sync {
                request: sync,
                version: 5,
            },
        );
    }

    fn on_sync(&mut self, c: usize, resp: &m::SyncGroupResponse) {
        if resp.error_code != 0 {
            self.on_classic_error(c, resp.error_code);
            if self.consumers[c].state == CState::Syncing {
                self.consumers[c].state = CState::Unjoined;
            }
            return;
        }
        let now = self.now;
        let consumer = &mut self.consumers[c];
        consumer.owned = decode_assignment(&resp.assignment);
        consumer.state = CState::Stable;
        consumer.next_heartbeat = now;
        self.coverage.hit("groups.classic.rebalance_done");
    }

    fn on_consumer_heartbeat(
        &mut self,
        c: usize,
        sent: Option<BTreeSet<i32>>,
        resp: &m::ConsumerGroupHeartbeatResponse,
    ) {
        if resp.error_code != 0 {
            return self.on_classic_error(c, resp.error_code);
        }
        let consumer = &mut self.consumers[c];
        if consumer.state == CState::Unjoined || consumer.state == CState::Joining {
            consumer.state = CState::Stable;
            self.coverage.hit("groups.kip848.joined");
        }
        if let Some(id) = resp.member_id.as_ref().filter(|id| !id.is_empty()) {
            consumer.member_id = id.to_string();
        }
        if resp.member_epoch != consumer.generation {
            self.coverage.hit("groups.kip848.epoch_bumped");
        }
        consumer.generation = resp.member_epoch;
        if let Some(assignment) = &resp.assignment {
            let new: BTreeSet<i32> = assignment
                .topic_partitions
                .iter()
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
            if new.len() < consumer.owned.len() {
                self.coverage.hit("groups.kip848.revoked");
            }
            consumer.owned = new;
        }
        let _ = sent;
    }

    // ---- consumers -----------------------------------------------------------------

    /// Nodes that host a coordinator (their deadlines run at every tick).
    pub fn hosting_nodes(&self) -> Vec<NodeId> {
        self.hosts.keys().copied().collect()
    }

    /// Runs the deadlines of `node`'s coordinator. Returns whether something was
    /// proposed.
    pub fn on_coordinator_tick<R: Replica>(
        &mut self,
        now: Instant,
        local: Instant,
        node: NodeId,
        replica: &mut R,
        trace: &mut Trace,
    ) -> bool {
        self.now = now;
        let Some(host) = self.hosts.get_mut(&node) else {
            return false;
        };
        if host.coordinator.poll_timeout().is_some_and(|t| t <= local) {
            host.coordinator.handle_timeout(local, wall_ms(local));
        }
        self.pump(now, local, node, replica, trace)
    }

    /// Consumers act: give up on old requests, crash, leave, join, heartbeat, commit;
    /// one group's offsets are fetched now and then. `leader` is where FindCoordinator
    /// points. Schedules the next tick.
    pub fn on_tick(&mut self, now: Instant, leader: Option<NodeId>) {
        self.now = now;
        for c in 0..self.consumers.len() {
            self.tick_consumer(c, leader);
        }
        self.check_client_owners();
        // Requests nobody waits for any more (answers lost, consumers restarted).
        self.reqs.retain(|_, r| r.deadline > now);
        if now >= self.next_fetch && !self.consumers.is_empty() {
            self.next_fetch = now + Duration::from_millis(self.config.fetch_interval_ms);
            let c = self.rng.index(self.consumers.len());
            let group = self.consumers[c].group.clone();
            let op = GroupOp::FetchOffsets {
                group: group.clone(),
                topics: Some(vec![(TOPIC.to_string(), (0..self.config.partitions).collect())]),
                require_stable: false,
                member: None,
            };
            self.send_to(None, group, leader, ReqKind::Fetch, op);
        }
        self.scheduled
            .push((Duration::from_millis(self.config.tick_ms), GroupEv::Tick));
    }

    fn expire_requests(&mut self, c: usize) {
        let now = self.now;
        for slot in [0, 1] {
            let req = if slot == 0 {
                self.consumers[c].membership_req
            } else {
                self.consumers[c].commit_req
            };
            let Some(req) = req else { continue };
            if self.reqs.get(&req).is_some_and(|r| r.deadline > now) {
                continue;
            }
            self.reqs.remove(&req);
            let consumer = &mut self.consumers[c];
            if slot == 0 {
                consumer.membership_req = None;
                if matches!(consumer.state, CState::Joining | CState::Syncing) {
                    consumer.state = CState::Unjoined;
                }
            } else {
                consumer.commit_req = None;
            }
            consumer.coordinator = None;
            self.coverage.hit("groups.request.timed_out");
        }
    }

    fn tick_consumer(&mut self, c: usize, leader: Option<NodeId>) {
        let now = self.now;
        self.expire_requests(c);
        if let CState::Down { until } = self.consumers[c].state {
            if now < until {
                return;
            }
            self.consumers[c].state = CState::Unjoined;
        }
        if self.consumers[c].coordinator.is_none() {
            self.consumers[c].coordinator = leader;
        }
        if !self.liveness && self.rng.chance(self.config.crash_prob) {
            return self.stop_consumer(c, false);
        }
        if !self.liveness
            && self.consumers[c].state == CState::Stable
            && self.rng.chance(self.config.leave_prob)
        {
            return self.stop_consumer(c, true);
        }
        self.tick_membership(c);
        self.tick_commit(c);
    }

    /// The consumer crashes (or leaves, telling the coordinator) and restarts later
    /// with a new identity; its old one may come back as a zombie commit.
    fn stop_consumer(&mut self, c: usize, leave: bool) {
        let now = self.now;
        if leave {
            let (group, member_id, epoch) = {
                let consumer = &self.consumers[c];
                (
                    consumer.group.clone(),
                    consumer.member_id.clone(),
                    consumer.generation,
                )
            };
            let op = match self.consumers[c].proto {
                Proto::Classic => {
                    let mut request = m::LeaveGroupRequest::default();
                    request.group_id = m::GroupId(s(&group));
                    let mut member = m::leave_group_request::MemberIdentity::default();
                    member.member_id = s(&member_id);
                    request.members = vec![member];
                    GroupOp::Leave { request, version: 3 }
                }
                Proto::Consumer => {
                    let mut request = m::ConsumerGroupHeartbeatRequest::default();
                    request.group_id = m::GroupId(s(&group));
                    request.member_id = s(&member_id);
                    request.member_epoch = -1;
                    let _ = epoch;
                    GroupOp::ConsumerHeartbeat {
                        request,
                        client: ClientInfo::default(),
                    }
                }
            };
            let coordinator = self.consumers[c].coordinator;
            self.send_to(None, group, coordinator, ReqKind::Leave, op);
            self.coverage.hit("groups.consumer.left");
        } else {
            self.coverage.hit("groups.consumer.crashed");
        }
        let down_ms = self.rng.between(300, 3_000);
        let consumer = &mut self.consumers[c];
        if !consumer.member_id.is_empty() && consumer.state == CState::Stable {
            consumer.fenced_identity = Some((consumer.member_id.clone(), consumer.generation));
        }
        consumer.member_id.clear();
        consumer.generation = 0;
        consumer.owned.clear();
        consumer.owned_sent = None;
        consumer.membership_req = None;
        consumer.commit_req = None;
        consumer.state = CState::Down {
            until: now + Duration::from_millis(down_ms),
        };
    }

    fn tick_membership(&mut self, c: usize) {
        let now = self.now;
        let consumer = &self.consumers[c];
        if consumer.membership_req.is_some() {
            return;
        }
        let interval =
            Duration::from_millis(u64::try_from(self.config.session_timeout_ms / 4).unwrap_or(500));
        match (consumer.state, consumer.proto) {
            (CState::Unjoined, Proto::Classic) => {
                let mut request = m::JoinGroupRequest::default();
                request.group_id = m::GroupId(s(&consumer.group));
                request.member_id = s(&consumer.member_id);
                request.session_timeout_ms = self.config.session_timeout_ms;
                request.rebalance_timeout_ms = self.config.session_timeout_ms * 2;
                request.protocol_type = s("consumer");
                let mut protocol = m::join_group_request::JoinGroupRequestProtocol::default();
                protocol.name = s("roundrobin");
                protocol.metadata = Bytes::from_static(SUBSCRIPTION);
                request.protocols = vec![protocol];
                self.consumers[c].state = CState::Joining;
                let op = GroupOp::Join {
                    request,
                    version: 6,
                    client: ClientInfo::default(),
                };
                self.send(c, ReqKind::Join, op);
            }
            (CState::Unjoined, Proto::Consumer) => {
                self.consumers[c].state = CState::Joining;
                let op = self.consumer_heartbeat(c, true);
                self.send(
                    c,
                    ReqKind::ConsumerHeartbeat {
                        owned: Some(BTreeSet::new()),
                    },
                    op,
                );
            }
            (CState::Stable, Proto::Classic) if now >= consumer.next_heartbeat => {
                let mut request = m::HeartbeatRequest::default();
                request.group_id = m::GroupId(s(&consumer.group));
                request.generation_id = consumer.generation;
                request.member_id = s(&consumer.member_id);
                self.consumers[c].next_heartbeat = now + interval;
                self.send(c, ReqKind::Heartbeat, GroupOp::Heartbeat { request });
            }
            (CState::Stable, Proto::Consumer)
                if now >= consumer.next_heartbeat
                    || consumer.owned_sent.as_ref() != Some(&consumer.owned) =>
            {
                self.consumers[c].next_heartbeat = now + interval;
                let owned = self.consumers[c].owned.clone();
                self.consumers[c].owned_sent = Some(owned.clone());
                let op = self.consumer_heartbeat(c, false);
                self.send(c, ReqKind::ConsumerHeartbeat { owned: Some(owned) }, op);
            }
            _ => {}
        }
    }

    /// A ConsumerGroupHeartbeat: a join (epoch 0), or a heartbeat that reports what the
    /// member owns (which acknowledges revocations).
    fn consumer_heartbeat(&self, c: usize, join: bool) -> GroupOp {
        let consumer = &self.consumers[c];
        let mut request = m::ConsumerGroupHeartbeatRequest::default();
        request.group_id = m::GroupId(s(&consumer.group));
        request.member_id = s(&consumer.member_id);
        request.rebalance_timeout_ms = self.config.session_timeout_ms * 2;
        if join {
            request.member_epoch = 0;
            request.subscribed_topic_names = Some(vec![m::TopicName(s(TOPIC))]);
            request.topic_partitions = Some(Vec::new());
        } else {
            request.member_epoch = consumer.generation;
            let mut tp = m::consumer_group_heartbeat_request::TopicPartitions::default();
            tp.topic_id = uuid::Uuid::from_bytes(TOPIC_ID);
            tp.partitions = consumer.owned.iter().copied().collect();
            request.topic_partitions = Some(if consumer.owned.is_empty() {
                Vec::new()
            } else {
                vec![tp]
            });
        }
        GroupOp::ConsumerHeartbeat {
            request,
            client: ClientInfo::default(),
        }
    }

    fn tick_commit(&mut self, c: usize) {
        let now = self.now;
        if self.consumers[c].commit_req.is_some() || now < self.consumers[c].next_commit {
            return;
        }
        let jitter = self.rng.between(0, self.config.commit_interval_ms / 2);
        self.consumers[c].next_commit = now + Duration::from_millis(self.config.commit_interval_ms + jitter);
        let zombie = !self.liveness
            && self.consumers[c].fenced_identity.is_some()
            && self.rng.chance(self.config.zombie_commit_prob);
        let (member_id, generation, partitions) = if zombie {
            let Some((id, generation)) = self.consumers[c].fenced_identity.take() else {
                return;
            };
            let p = i32::try_from(
                self.rng
                    .index(usize::try_from(self.config.partitions).unwrap_or(1)),
            )
            .unwrap_or(0);
            (id, generation, vec![p])
        } else if self.consumers[c].state == CState::Stable && !self.consumers[c].owned.is_empty() {
            let consumer = &self.consumers[c];
            (
                consumer.member_id.clone(),
                consumer.generation,
                consumer.owned.iter().copied().collect(),
            )
        } else {
            return;
        };
        let group = self.consumers[c].group.clone();
        let entries = partitions
            .into_iter()
            .map(|p| {
                let next = self.next_offset.entry((group.clone(), p)).or_insert(0);
                *next += 1;
                CommitEntry {
                    topic: TOPIC.to_string(),
                    partition: p,
                    offset: *next,
                    leader_epoch: -1,
                    metadata: None,
                }
            })
            .collect();
        if zombie {
            self.coverage.hit("groups.commit.zombie_sent");
        }
        let op = GroupOp::Commit {
            group,
            generation_or_epoch: generation,
            member_id: member_id.clone(),
            instance_id: None,
            entries,
        };
        self.send(
            c,
            ReqKind::Commit {
                member_id,
                generation,
                zombie,
            },
            op,
        );
    }

    /// Sends a consumer's request to its coordinator.
    fn send(&mut self, c: usize, kind: ReqKind, op: GroupOp) {
        let group = self.consumers[c].group.clone();
        let coordinator = self.consumers[c].coordinator;
        let is_commit = matches!(kind, ReqKind::Commit { .. });
        let Some(req) = self.send_to(Some(c), group, coordinator, kind, op) else {
            if matches!(self.consumers[c].state, CState::Joining | CState::Syncing) {
                self.consumers[c].state = CState::Unjoined;
            }
            return;
        };
        if is_commit {
            self.consumers[c].commit_req = Some(req);
        } else {
            self.consumers[c].membership_req = Some(req);
        }
    }

    fn send_to(
        &mut self,
        consumer: Option<usize>,
        group: String,
        node: Option<NodeId>,
        kind: ReqKind,
        op: GroupOp,
    ) -> Option<u64> {
        let node = node?;
        if self.reqs.len() >= MAX_INFLIGHT {
            self.coverage.hit("groups.request.bound");
            return None;
        }
        let req = self.next_req;
        self.next_req += 1;
        self.reqs.insert(
            req,
            Req {
                consumer,
                group,
                kind,
                op: Some(op),
                deadline: self.now + Duration::from_millis(self.config.request_timeout_ms),
            },
        );
        if !self.liveness && self.rng.chance(self.config.loss_prob) {
            self.coverage.hit("groups.message.lost");
        } else {
            let delay = self.latency();
            self.scheduled.push((delay, GroupEv::Arrive { node, req }));
        }
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_round_trip() {
        let parts = [0, 3, 7, 255];
        let decoded = decode_assignment(&encode_assignment(&parts));
        assert_eq!(decoded, parts.into_iter().collect::<BTreeSet<i32>>());
        assert!(
            decode_assignment(&[1, 2, 3]).is_empty(),
            "a partial entry is ignored"
        );
    }

    #[test]
    fn config_validation_names_the_bad_option() {
        assert!(GroupSimConfig::default().validate().is_ok());
        let bad = GroupSimConfig {
            loss_prob: 1.5,
            ..GroupSimConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("loss_prob"));
        let none = GroupSimConfig {
            classic_groups: 0,
            consumer_groups: 0,
            ..GroupSimConfig::default()
        };
        assert!(none.validate().is_err());
    }

    #[test]
    fn a_replay_starts_at_the_latest_checkpoint_the_log_has_committed() {
        let mut sim = GroupSim::new(GroupSimConfig::default(), &Seeds::new(1), &[]);
        assert_eq!(sim.replay_start(Some(100)), 0);
        sim.checkpoints.insert(20, 15);
        sim.checkpoints.insert(60, 50);
        assert_eq!(sim.replay_start(None), 0);
        assert_eq!(
            sim.replay_start(Some(19)),
            0,
            "the checkpoint is not committed here"
        );
        assert_eq!(sim.replay_start(Some(20)), 15);
        assert_eq!(sim.replay_start(Some(59)), 15);
        assert_eq!(sim.replay_start(Some(75)), 50);
    }

    #[test]
    fn disabled_invariants_are_not_reported() {
        let mut sim = GroupSim::new(
            GroupSimConfig::default(),
            &Seeds::new(1),
            &["groups-load".to_string()],
        );
        sim.fail("groups-load", "x".into());
        assert!(sim.violation().is_none());
        sim.fail("groups-rebuild-differs", "y".into());
        assert_eq!(
            sim.violation().map(|v| v.invariant),
            Some("groups-rebuild-differs")
        );
    }

    #[test]
    fn consumers_are_made_for_every_group_and_the_tick_reschedules() {
        let config = GroupSimConfig {
            classic_groups: 2,
            consumer_groups: 1,
            members_per_group: 2,
            ..GroupSimConfig::default()
        };
        let mut sim = GroupSim::new(config, &Seeds::new(7), &[]);
        assert_eq!(sim.consumers.len(), 6);
        // No coordinator known: nothing is sent, the next tick is scheduled.
        sim.on_tick(Instant::ZERO, None);
        assert!(sim.reqs.is_empty());
        let scheduled = sim.take_scheduled();
        assert!(matches!(scheduled.as_slice(), [(_, GroupEv::Tick)]));
        // With one, every consumer asks to join (the fetch of this interval was due at
        // the first tick, without a coordinator: it waits for the next interval).
        sim.on_tick(Instant::from_millis(50), Some(0));
        assert_eq!(sim.reqs.len(), 6);
        assert!(sim.consumers.iter().all(|c| c.state == CState::Joining));
        sim.take_scheduled();
        sim.on_tick(Instant::from_millis(750), Some(0));
        assert!(sim.reqs.values().any(|r| matches!(r.kind, ReqKind::Fetch)));
    }
}
