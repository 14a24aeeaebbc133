//! A small reference Raft used to exercise the simulator itself — the driver, the
//! storage path through core's `Log`, the faults and the checkers — and to host the
//! planted bugs that prove each checker catches what it should.
//!
//! It is **not** Oxbow's Raft (that is `oxbow_core::raft`): no pre-vote, no snapshots, no
//! membership change; one offset per entry. It is complete enough to be safe under every
//! fault the simulator injects: durable term/vote before voting, durable entries before
//! acknowledging, commit only entries of the current term by majority.
//!
//! Planted bugs ([`PlantedBugs`]) make it wrong on purpose, in simulation only.

use crate::net::NodeId;
use crate::replica::{
    Churn, EntryKind, HardState, ProposeError, Replica, ReplicaEffect, ReplicaStatus, Role, SimEntry,
    StorageOp,
};
use crate::rng::{RngExt, SimRng};
use bytes::Bytes;
use oxbow_core::time::Instant;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Bugs to plant, each breaking one invariant a checker guards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlantedBugs {
    /// Grant a vote to anyone who asks, even after voting for another in the same term
    /// (breaks election safety).
    pub vote_twice: bool,
    /// Acknowledge appends and count the leader's own entries before they are durable
    /// (with crashes: committed entries lost).
    pub ack_before_fsync: bool,
    /// Followers accept appends after an entry of the wrong term (they only check that
    /// the previous offset exists), keeping a stale entry under newer ones (breaks log
    /// matching).
    pub skip_prev_check: bool,
    /// Followers adopt the leader's commit index even when it is lower (commit index
    /// goes back).
    pub commit_regress: bool,
    /// Not a Raft bug: the simulated clients read up to a node's last entry instead of
    /// its commit index (reads of uncommitted data). Used by the driver, any Raft.
    pub read_uncommitted: bool,
    /// Not a Raft bug: a write is acknowledged to its client as soon as the leader has
    /// appended it, before it commits (Kafka's acks=1 mistaken for acks=all). Used by
    /// the driver, any Raft.
    pub ack_uncommitted: bool,
    /// Not a Raft bug: the network sometimes delivers an extra copy of a message with
    /// its term raised by one (a corrupting middlebox). Any Raft.
    pub corrupt_terms: bool,
}

/// Timings of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// Base election timeout (randomised up to twice that).
    pub election_timeout: Duration,
    /// Entries per append message.
    pub max_entries_per_msg: usize,
    /// Uncommitted entries a leader accepts before refusing proposals.
    pub max_uncommitted: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            max_entries_per_msg: 64,
            max_uncommitted: 1_000,
        }
    }
}

/// The model's messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Vote for me in `term`; my log ends at `last` (term, index).
    Vote {
        /// Term.
        term: u64,
        /// Last entry of the candidate.
        last: Option<(u64, u64)>,
    },
    /// Answer to a vote request.
    VoteResp {
        /// Term.
        term: u64,
        /// Granted?
        granted: bool,
    },
    /// Append entries after `prev` (index, term).
    Append {
        /// Term.
        term: u64,
        /// Entry before the first one sent.
        prev: Option<(u64, u64)>,
        /// Entries.
        entries: Vec<SimEntry>,
        /// Leader's commit.
        commit: Option<u64>,
    },
    /// Answer to an append.
    AppendResp {
        /// Term.
        term: u64,
        /// Whether the entries were appended (and are durable).
        success: bool,
        /// On success the last index matched; on failure a hint where to retry.
        index: Option<u64>,
    },
    /// Start an election now (leadership transfer).
    TimeoutNow {
        /// Term.
        term: u64,
    },
}

/// What a node starts from: its durable hard state and log (empty for a new node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Term and vote.
    pub hs: HardState,
    /// Entries, from offset 0.
    pub log: Vec<SimEntry>,
}

/// The reference Raft node.
#[derive(Debug)]
pub struct ModelRaft {
    id: NodeId,
    peers: Vec<NodeId>,
    config: ModelConfig,
    bugs: PlantedBugs,
    rng: SimRng,
    hs: HardState,
    role: Role,
    leader: Option<NodeId>,
    log: Vec<SimEntry>,
    commit: Option<u64>,
    votes: BTreeSet<NodeId>,
    next: BTreeMap<NodeId, u64>,
    matched: BTreeMap<NodeId, Option<u64>>,
    election_at: Instant,
    heartbeat_at: Option<Instant>,
    write_seq: u64,
    durable_seq: u64,
    /// Storage ops in flight that append: (seq, last index).
    appends_in_flight: VecDeque<(u64, u64)>,
    durable_index: Option<u64>,
    /// Messages waiting for a storage op to be durable: (needs_seq, to, msg).
    gated: VecDeque<(u64, NodeId, Msg)>,
    effects: VecDeque<ReplicaEffect<Msg>>,
}

impl ModelRaft {
    /// A node starting from durable state `hs` and `log` (empty for a new node).
    pub fn new(
        id: NodeId,
        peers: Vec<NodeId>,
        config: ModelConfig,
        bugs: PlantedBugs,
        mut rng: SimRng,
        now: Instant,
        restored: Restored,
    ) -> Self {
        let Restored { hs, log } = restored;
        let durable_index = log.last().map(|e| e.index);
        let election_at = now + Self::election_delay(&config, &mut rng);
        ModelRaft {
            id,
            peers: peers.into_iter().filter(|p| *p != id).collect(),
            config,
            bugs,
            rng,
            hs,
            role: Role::Follower,
            leader: None,
            log,
            commit: None,
            votes: BTreeSet::new(),
            next: BTreeMap::new(),
            matched: BTreeMap::new(),
            election_at,
            heartbeat_at: None,
            write_seq: 0,
            durable_seq: 0,
            appends_in_flight: VecDeque::new(),
            durable_index,
            gated: VecDeque::new(),
            effects: VecDeque::new(),
        }
    }

    fn election_delay(config: &ModelConfig, rng: &mut SimRng) -> Duration {
        let base = u64::try_from(config.election_timeout.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rng.between(base, base.saturating_mul(2)))
    }

    fn quorum(&self) -> usize {
        let voters = self.peers.len() + 1;
        voters / 2 + 1
    }

    fn last(&self) -> Option<(u64, u64)> {
        self.log.last().map(|e| (e.term, e.index))
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        self.log.get(usize::try_from(index).ok()?).map(|e| e.term)
    }

    fn persist(&mut self, op: StorageOp) {
        self.write_seq += 1;
        if let StorageOp::Append(entries) = &op {
            if let Some(last) = entries.last() {
                self.appends_in_flight.push_back((self.write_seq, last.index));
            }
        }
        self.effects.push_back(ReplicaEffect::Persist {
            seq: self.write_seq,
            op,
        });
        if self.bugs.ack_before_fsync {
            // Pretend the write is durable already.
            self.durable_index = self.last().map(|l| l.1);
        }
    }

    fn send(&mut self, to: NodeId, msg: Msg) {
        let needs = if self.bugs.ack_before_fsync {
            0
        } else {
            self.write_seq
        };
        if needs <= self.durable_seq {
            self.effects.push_back(ReplicaEffect::Send { to, msg });
        } else {
            self.gated.push_back((needs, to, msg));
        }
    }

    fn set_hard_state(&mut self, term: u64, vote: Option<NodeId>) {
        if self.hs.term != term || self.hs.vote != vote {
            self.hs = HardState { term, vote };
            self.persist(StorageOp::HardState(self.hs));
        }
    }

    fn become_follower(&mut self, now: Instant, term: u64, leader: Option<NodeId>) {
        if term > self.hs.term {
            self.set_hard_state(term, None);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.heartbeat_at = None;
        self.election_at = now + Self::election_delay(&self.config, &mut self.rng);
    }

    fn start_election(&mut self, now: Instant) {
        let term = self.hs.term + 1;
        self.set_hard_state(term, Some(self.id));
        self.role = Role::Candidate;
        self.leader = None;
        self.votes = [self.id].into();
        self.election_at = now + Self::election_delay(&self.config, &mut self.rng);
        let last = self.last();
        for p in self.peers.clone() {
            self.send(p, Msg::Vote { term, last });
        }
        self.maybe_win(now);
    }

    fn maybe_win(&mut self, now: Instant) {
        if self.role != Role::Candidate || self.votes.len() < self.quorum() {
            return;
        }
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let next_index = self.last().map_or(0, |l| l.1 + 1);
        let noop = SimEntry {
            term: self.hs.term,
            index: next_index,
            kind: EntryKind::Noop,
            payload: Bytes::new(),
        };
        self.log.push(noop.clone());
        self.persist(StorageOp::Append(vec![noop]));
        for p in self.peers.clone() {
            self.next.insert(p, next_index);
            self.matched.insert(p, None);
        }
        self.broadcast(now);
    }

    fn broadcast(&mut self, now: Instant) {
        for p in self.peers.clone() {
            self.send_append(p);
        }
        self.heartbeat_at = Some(now + self.config.heartbeat);
    }

    fn send_append(&mut self, to: NodeId) {
        let len = self.log.len() as u64;
        let next = self.next.get(&to).copied().unwrap_or(len).min(len);
        let prev = next.checked_sub(1).and_then(|i| self.term_at(i).map(|t| (i, t)));
        let end = len.min(next + self.config.max_entries_per_msg as u64);
        let entries: Vec<SimEntry> =
            self.log[usize::try_from(next).unwrap_or(0)..usize::try_from(end).unwrap_or(0)].to_vec();
        self.next.insert(to, end);
        let msg = Msg::Append {
            term: self.hs.term,
            prev,
            entries,
            commit: self.commit,
        };
        self.send(to, msg);
    }

    fn advance_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matches: Vec<Option<u64>> = self.matched.values().copied().collect();
        matches.push(self.durable_index);
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[self.quorum() - 1];
        if let Some(n) = candidate {
            if candidate > self.commit && self.term_at(n) == Some(self.hs.term) {
                self.commit = Some(n);
            }
        }
    }

    fn on_append(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        prev: Option<(u64, u64)>,
        entries: Vec<SimEntry>,
        commit: Option<u64>,
    ) {
        if term < self.hs.term {
            self.send(
                from,
                Msg::AppendResp {
                    term: self.hs.term,
                    success: false,
                    index: None,
                },
            );
            return;
        }
        self.become_follower(now, term, Some(from));
        if let Some((pi, pt)) = prev {
            let matches = self
                .term_at(pi)
                .is_some_and(|t| t == pt || self.bugs.skip_prev_check);
            if !matches {
                let hint = pi.min(self.log.len() as u64).checked_sub(1);
                self.send(
                    from,
                    Msg::AppendResp {
                        term,
                        success: false,
                        index: hint,
                    },
                );
                return;
            }
        }
        let covered = entries.last().map(|e| e.index).or(prev.map(|p| p.0));
        let mut to_append = Vec::new();
        for e in entries {
            match self.term_at(e.index) {
                Some(t) if t == e.term && to_append.is_empty() => {}
                Some(_) => {
                    let from_index = e.index;
                    self.log.truncate(usize::try_from(from_index).unwrap_or(0));
                    if self.durable_index.is_some_and(|d| d >= from_index) {
                        self.durable_index = from_index.checked_sub(1);
                    }
                    self.appends_in_flight.retain(|(_, i)| *i < from_index);
                    self.persist(StorageOp::Truncate { from_index });
                    self.log.push(e.clone());
                    to_append.push(e);
                }
                None => {
                    if e.index != self.log.len() as u64 {
                        break; // a gap: only reachable with skip_prev_check
                    }
                    self.log.push(e.clone());
                    to_append.push(e);
                }
            }
        }
        let last_new = covered.min(self.last().map(|l| l.1));
        if !to_append.is_empty() {
            self.persist(StorageOp::Append(to_append));
        }
        if let Some(c) = commit {
            let new_commit = Some(c).min(last_new);
            if self.bugs.commit_regress || new_commit > self.commit {
                self.commit = new_commit;
            }
        }
        self.send(
            from,
            Msg::AppendResp {
                term,
                success: true,
                index: last_new,
            },
        );
    }

    fn release_gated(&mut self) {
        while let Some((needs, _, _)) = self.gated.front() {
            if *needs > self.durable_seq {
                break;
            }
            if let Some((_, to, msg)) = self.gated.pop_front() {
                self.effects.push_back(ReplicaEffect::Send { to, msg });
            }
        }
    }
}

impl Replica for ModelRaft {
    type Msg = Msg;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: Msg) {
        let term = Self::msg_term(&msg);
        if term > self.hs.term {
            let leader = matches!(msg, Msg::Append { .. }).then_some(from);
            self.become_follower(now, term, leader);
        }
        match msg {
            Msg::Vote { term, last } => {
                let up_to_date = last >= self.last();
                let free = self.hs.vote.is_none() || self.hs.vote == Some(from) || self.bugs.vote_twice;
                let granted = term == self.hs.term && free && up_to_date;
                if granted {
                    self.set_hard_state(term, Some(from));
                    self.election_at = now + Self::election_delay(&self.config, &mut self.rng);
                }
                self.send(
                    from,
                    Msg::VoteResp {
                        term: self.hs.term,
                        granted,
                    },
                );
            }
            Msg::VoteResp { term, granted } => {
                if self.role == Role::Candidate && term == self.hs.term && granted {
                    self.votes.insert(from);
                    self.maybe_win(now);
                }
            }
            Msg::Append {
                term,
                prev,
                entries,
                commit,
            } => self.on_append(now, from, term, prev, entries, commit),
            Msg::AppendResp { term, success, index } => {
                if self.role != Role::Leader || term != self.hs.term {
                    return;
                }
                if success {
                    let m = self.matched.entry(from).or_insert(None);
                    *m = (*m).max(index);
                    let next = self.next.entry(from).or_insert(0);
                    *next = (*next).max(index.map_or(0, |i| i + 1));
                    self.advance_commit();
                } else {
                    self.next.insert(from, index.map_or(0, |i| i + 1));
                    self.send_append(from);
                }
            }
            Msg::TimeoutNow { term } => {
                if term == self.hs.term && self.role == Role::Follower {
                    self.start_election(now);
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.role == Role::Leader {
            if self.heartbeat_at.is_some_and(|h| now >= h) {
                self.broadcast(now);
            }
        } else if now >= self.election_at {
            self.start_election(now);
        }
    }

    fn handle_durable(&mut self, _now: Instant, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
        while let Some(&(s, index)) = self.appends_in_flight.front() {
            if s > self.durable_seq {
                break;
            }
            self.appends_in_flight.pop_front();
            if !self.bugs.ack_before_fsync {
                self.durable_index = self.durable_index.max(Some(index));
            }
        }
        self.release_gated();
        self.advance_commit();
    }

    fn propose(&mut self, now: Instant, payload: Bytes) -> Result<u64, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader(self.leader));
        }
        let index = self.log.len() as u64;
        if index.saturating_sub(self.commit.map_or(0, |c| c + 1)) >= self.config.max_uncommitted {
            return Err(ProposeError::Busy);
        }
        let entry = SimEntry {
            term: self.hs.term,
            index,
            kind: EntryKind::Data,
            payload,
        };
        self.log.push(entry.clone());
        self.persist(StorageOp::Append(vec![entry]));
        for p in self.peers.clone() {
            self.send_append(p);
        }
        self.heartbeat_at = Some(now + self.config.heartbeat);
        Ok(index)
    }

    fn churn(&mut self, now: Instant, churn: Churn) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        match churn {
            Churn::StepDown => {
                self.become_follower(now, self.hs.term, None);
                true
            }
            Churn::TransferTo(to) if self.peers.contains(&to) => {
                let term = self.hs.term;
                self.send(to, Msg::TimeoutNow { term });
                self.become_follower(now, term, None);
                true
            }
            Churn::TransferTo(_) => false,
            // The reference Raft has a fixed membership.
            Churn::SetPriority(..) | Churn::Demote(_) | Churn::Promote(_) => false,
        }
    }

    fn poll_effect(&mut self) -> Option<ReplicaEffect<Msg>> {
        self.effects.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.role {
            Role::Leader => self.heartbeat_at,
            _ => Some(self.election_at),
        }
    }

    fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            term: self.hs.term,
            role: self.role,
            leader: self.leader,
            commit_index: self.commit,
            last_index: self.last().map(|l| l.1),
        }
    }

    fn entry(&self, index: u64) -> Option<&SimEntry> {
        self.log.get(usize::try_from(index).ok()?)
    }

    fn fmt_msg(msg: &Msg, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match msg {
            Msg::Vote { term, last } => write!(f, "Vote t{term} last={last:?}"),
            Msg::VoteResp { term, granted } => write!(f, "VoteResp t{term} granted={granted}"),
            Msg::Append {
                term,
                prev,
                entries,
                commit,
            } => write!(
                f,
                "Append t{term} prev={prev:?} n={} commit={commit:?}",
                entries.len()
            ),
            Msg::AppendResp { term, success, index } => {
                write!(f, "AppendResp t{term} ok={success} index={index:?}")
            }
            Msg::TimeoutNow { term } => write!(f, "TimeoutNow t{term}"),
        }
    }

    fn set_msg_term(msg: &mut Msg, new: u64) {
        match msg {
            Msg::Vote { term, .. }
            | Msg::VoteResp { term, .. }
            | Msg::Append { term, .. }
            | Msg::AppendResp { term, .. }
            | Msg::TimeoutNow { term } => *term = new,
        }
    }

    fn msg_term(msg: &Msg) -> u64 {
        match msg {
            Msg::Vote { term, .. }
            | Msg::VoteResp { term, .. }
            | Msg::Append { term, .. }
            | Msg::AppendResp { term, .. }
            | Msg::TimeoutNow { term } => *term,
        }
    }
}
