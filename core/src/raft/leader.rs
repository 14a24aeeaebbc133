//! Leadership: becoming leader, proposals, commit, heartbeats and leader ticks,
//! check-quorum, leadership transfer (manual and priority-driven), forced step-down and
//! membership-change proposals.
//!
//! Commit rule: the highest offset durable on a majority of voters (the leader counts
//! only up to its own durable offset), and only if that entry is of the current term
//! (Raft §5.4.2, Figure 8). Followers in the minority never hold commit back.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::time::Instant;

use super::config::RaftConfig;
use super::membership::ConfigChange;
use super::message::{HeartbeatRequest, Message, MessageBody};
use super::node::Raft;
use super::progress::{Progress, ProgressState};
use super::types::{next_after, Entry, EntryKind, Index, LogId, NodeId, ReadId, Role};

/// A leadership transfer in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub(crate) target: NodeId,
    pub(crate) deadline: Instant,
    pub(crate) timeout_now_sent: bool,
}

/// Leader-only state.
#[derive(Debug)]
pub(crate) struct LeaderState {
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// First offset of this term (the noop); commit reaching it means the term committed.
    pub(crate) noop_index: Index,
    pub(crate) tick_deadline: Instant,
    pub(crate) check_quorum_deadline: Instant,
    pub(crate) transfer: Option<Transfer>,
    /// No priority-driven transfer before this time (after one failed).
    pub(crate) auto_transfer_after: Instant,
    /// Recovery token bucket, in bytes (may go negative: debt).
    pub(crate) tokens: i64,
    pub(crate) tokens_at: Instant,
    pub(crate) recovery_wakeup: Option<Instant>,
    /// `(last offset, bytes)` of uncommitted data entries of this term.
    pub(crate) uncommitted: VecDeque<(Index, usize)>,
    pub(crate) uncommitted_bytes: usize,
    pub(crate) broadcast_pending: bool,
    /// Heartbeat round: incremented before each heartbeat broadcast.
    pub(crate) round: u64,
    /// Outstanding entry reads: id → (peer, from offset).
    pub(crate) reads: BTreeMap<ReadId, (NodeId, Index)>,
}

impl LeaderState {
    /// The leader's next timer. A leader that is the group's only member (no
    /// followers, no learners) sends no heartbeats, so it skips the heartbeat tick and
    /// wakes only for check-quorum (once per election timeout, not ten times as
    /// often): the partition's other periodic duties still run on that wake-up.
    pub(crate) fn next_deadline(&self, cfg: &RaftConfig) -> Option<Instant> {
        let pending = [self.transfer.map(|tr| tr.deadline), self.recovery_wakeup]
            .into_iter()
            .flatten()
            .min();
        if self.progress.is_empty() {
            let t = self.check_quorum_deadline;
            return Some(pending.map_or(t, |p| p.min(t)));
        }
        let mut t = self.check_quorum_deadline;
        if !cfg.check_quorum {
            t = self.tick_deadline + cfg.election_timeout;
        }
        if !cfg.coalesced_heartbeats {
            t = t.min(self.tick_deadline);
        }
        Some(pending.map_or(t, |p| p.min(t)))
    }
}

/// Why a proposal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// Not the leader; the known leader, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The known leader.
        leader: Option<crate::raft::NodeId>,
    },
    /// A leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Too many uncommitted bytes: retry later.
    #[error("too many uncommitted bytes")]
    Backpressure,
    /// A batch must cover at least one offset.
    #[error("an entry must cover at least one offset")]
    EmptyBatch,
}

/// Why a configuration change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigChangeError {
    /// Not accepted as a proposal.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// A previous change is not committed yet, or this term has not committed an entry.
    #[error("a previous configuration change is still in progress")]
    ChangeInProgress,
    /// The change does not apply to the active membership.
    #[error(transparent)]
    Invalid(#[from] super::membership::ChangeError),
    /// The learner is too far behind to be promoted.
    #[error("learner {0} has not caught up")]
    NotCaughtUp(NodeId),
}

/// Why a leadership transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Not the leader.
    #[error("not the leader")]
    NotLeader,
    /// The target is this node.
    #[error("already the leader")]
    IsSelf,
    /// The target is not a voter with priority above zero.
    #[error("node {0} cannot lead")]
    CannotLead(NodeId),
}

impl Raft {
    pub(crate) fn become_leader(&mut self, now: Instant) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        assert_eq!(self.durable_hs.vote, Some(self.id), "own vote must be durable");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.stats.became_leader += 1;
        let next = self.log.next_index();
        self.leader_state = Some(LeaderState {
            progress: BTreeMap::new(),
            noop_index: next,
            tick_deadline: now + self.cfg.heartbeat_interval,
            check_quorum_deadline: now + self.cfg.election_timeout,
            transfer: None,
            auto_transfer_after: now + self.cfg.election_timeout,
            tokens: self.token_capacity(),
            tokens_at: now,
            recovery_wakeup: None,
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            broadcast_pending: true,
            round: 0,
            reads: BTreeMap::new(),
        });
        self.sync_progress_with_config();
        self.append_as_leader(Entry::noop(self.hs.term, next));
        self.maybe_commit();
    }

    /// Adds progress for new members, drops it for removed ones.
    pub(crate) fn sync_progress_with_config(&mut self) {
        let members = self.configs.active().members();
        let next = self.log.next_index();
        let id = self.id;
        let now = self.now;
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        let was_alone = ls.progress.is_empty();
        ls.progress.retain(|p, _| members.contains(p));
        if was_alone && members.iter().any(|m| *m != id) {
            // A leader alone ran no heartbeat tick: its heartbeat and check-quorum
            // periods start now, with its first follower.
            ls.tick_deadline = now + self.cfg.heartbeat_interval;
            ls.check_quorum_deadline = now + self.cfg.election_timeout;
        }
        for m in members {
            if m != id {
                ls.progress.entry(m).or_insert_with(|| Progress::new(next, now));
            }
        }
        ls.broadcast_pending = true;
    }

    /// Appends an entry created by this leader (batched into one write by `flush`).
    pub(crate) fn append_as_leader(&mut self, entry: Entry) {
        self.log.append(&entry);
        self.cache.push(entry.clone());
        if entry.kind == EntryKind::Config {
            if let Ok(m) = entry.membership() {
                self.configs.push(entry.index, m);
            }
        }
        if let Some(ls) = self.leader_state.as_mut() {
            if entry.kind == EntryKind::Data {
                ls.uncommitted.push_back((entry.last_index, entry.size_bytes()));
                ls.uncommitted_bytes += entry.size_bytes();
            }
            ls.broadcast_pending = true;
        }
        let is_config = entry.kind == EntryKind::Config;
        self.unflushed.push(entry);
        if is_config {
            self.on_config_changed();
        }
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        let Some(ls) = self.leader_state.as_ref() else {
            return Err(ProposeError::NotLeader { leader: self.leader });
        };
        if ls.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if ls.uncommitted_bytes >= self.cfg.max_uncommitted_bytes {
            return Err(ProposeError::Backpressure);
        }
        Ok(())
    }

    /// Proposes a data entry (a record batch of `count` offsets). Returns the position of
    /// its last offset: it is committed once `commit_index() >= index`. The batch's base
    /// offset is `returned.index - count + 1` (= `next_index()` before the call).
    pub fn propose(&mut self, now: Instant, payload: Bytes, count: u64) -> Result<LogId, ProposeError> {
        self.now = self.now.max(now);
        if count == 0 {
            return Err(ProposeError::EmptyBatch);
        }
        self.check_can_propose()?;
        let entry = Entry::data(self.hs.term, self.log.next_index(), count, payload);
        let id = entry.log_id();
        self.append_as_leader(entry);
        self.maybe_commit();
        Ok(id)
    }

    /// Proposes a membership change (one voter at a time; see `membership`).
    pub fn propose_config_change(
        &mut self,
        now: Instant,
        change: ConfigChange,
    ) -> Result<LogId, ConfigChangeError> {
        self.now = self.now.max(now);
        self.check_can_propose()?;
        let noop = self.leader_state.as_ref().map_or(0, |ls| ls.noop_index);
        if self.configs.has_uncommitted(self.commit) || self.commit < Some(noop) {
            return Err(ConfigChangeError::ChangeInProgress);
        }
        let next = self.configs.active().apply(change)?;
        assert!(
            self.configs.active().voter_changes(&next) <= 1,
            "one voter at a time"
        );
        if let ConfigChange::PromoteLearner(id, _) = change {
            let m = self
                .leader_state
                .as_ref()
                .and_then(|ls| ls.progress.get(&id))
                .and_then(|p| p.match_index);
            let last = self.log.last_index().unwrap_or(0);
            if next_after(m) + self.cfg.learner_catch_up_offsets < last {
                return Err(ConfigChangeError::NotCaughtUp(id));
            }
        }
        let entry = Entry::config(self.hs.term, self.log.next_index(), &next);
        let id = entry.log_id();
        self.append_as_leader(entry);
        self.maybe_commit();
        self.report_role();
        Ok(id)
    }

    /// Hands leadership to voter `target`: catch it up, then send it TimeoutNow.
    /// Proposals are refused until the transfer ends (success or timeout).
    pub fn transfer_leadership(&mut self, now: Instant, target: NodeId) -> Result<(), TransferError> {
        self.now = self.now.max(now);
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if target == self.id {
            return Err(TransferError::IsSelf);
        }
        if self.configs.active().priority(target) == 0 {
            return Err(TransferError::CannotLead(target));
        }
        let deadline = now + self.cfg.transfer_timeout;
        if let Some(ls) = self.leader_state.as_mut() {
            ls.transfer = Some(Transfer {
                target,
                deadline,
                timeout_now_sent: false,
            });
        }
        self.stats.transfers_started += 1;
        self.maybe_send_timeout_now();
        self.send_appends_to(now, target);
        Ok(())
    }

    /// Leader gives up leadership at once (stays in the term, becomes a follower with no
    /// known leader); someone else is elected after the election timeout.
    pub fn step_down(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.role == Role::Leader {
            self.become_follower(now, self.hs.term, None);
        }
        self.report_role();
    }

    pub(crate) fn maybe_send_timeout_now(&mut self) {
        let last = self.log.last_index();
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        let Some(tr) = ls.transfer.as_mut() else { return };
        let caught_up = ls.progress.get(&tr.target).is_some_and(|p| p.match_index == last);
        if caught_up && !tr.timeout_now_sent {
            tr.timeout_now_sent = true;
            let target = tr.target;
            self.send(target, MessageBody::TimeoutNow);
        }
    }

    /// Advances commit to the highest offset durable on a majority, if of this term.
    pub(crate) fn maybe_commit(&mut self) {
        let Some(ls) = self.leader_state.as_ref() else {
            return;
        };
        let own = self.durable.min(self.log.last_index());
        let mut matches: Vec<Option<Index>> = self
            .configs
            .active()
            .voters()
            .keys()
            .map(|v| {
                if *v == self.id {
                    own
                } else {
                    ls.progress.get(v).and_then(|p| p.match_index)
                }
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = self.configs.active().quorum();
        let Some(&candidate) = matches.get(quorum - 1) else {
            return;
        };
        let Some(c) = candidate else { return };
        if candidate > self.commit && self.log.term_at(c) == Some(self.hs.term) {
            self.advance_commit(c);
        }
    }

    /// Records a new commit offset (leader or follower) and applies.
    pub(crate) fn advance_commit(&mut self, commit: Index) {
        assert!(Some(commit) > self.commit, "commit only moves forward");
        assert!(Some(commit) <= self.log.last_index(), "commit within the log");
        self.commit = Some(commit);
        self.effects
            .push_back(super::io::Effect::CommitAdvanced { commit });
        if let Some(ls) = self.leader_state.as_mut() {
            while ls.uncommitted.front().is_some_and(|&(i, _)| i <= commit) {
                if let Some((_, b)) = ls.uncommitted.pop_front() {
                    ls.uncommitted_bytes -= b;
                }
            }
        }
        self.apply_committed();
        self.maybe_leave_after_removal();
    }

    /// A leader removed from the voters steps down once the removal is committed,
    /// handing over to the most caught-up voter.
    fn maybe_leave_after_removal(&mut self) {
        if self.role != Role::Leader || self.configs.active().is_voter(self.id) {
            return;
        }
        if self.configs.has_uncommitted(self.commit) {
            return;
        }
        let last = self.log.last_index();
        let best = self.leader_state.as_ref().and_then(|ls| {
            ls.progress
                .iter()
                .filter(|(id, _)| self.configs.active().priority(**id) > 0)
                .max_by_key(|(id, p)| (p.match_index == last, p.match_index, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id)
        });
        if let Some(b) = best {
            self.send(b, MessageBody::TimeoutNow);
        }
        let now = self.now;
        self.become_follower(now, self.hs.term, None);
    }

    // ----- ticks -----------------------------------------------------------------------

    pub(crate) fn leader_timeouts(&mut self, now: Instant) {
        let Some(ls) = self.leader_state.as_ref() else {
            return;
        };
        let tick_due = !self.cfg.coalesced_heartbeats && now >= ls.tick_deadline;
        let quorum_due = now >= ls.check_quorum_deadline;
        let transfer_due = ls.transfer.is_some_and(|t| now >= t.deadline);
        let wake_due = ls.recovery_wakeup.is_some_and(|w| now >= w);
        if transfer_due {
            self.abort_transfer(now);
        }
        if wake_due {
            if let Some(ls) = self.leader_state.as_mut() {
                ls.recovery_wakeup = None;
            }
            self.broadcast_appends(now);
        }
        if tick_due {
            let hbs = self.leader_tick(now);
            for m in hbs {
                self.effects.push_back(super::io::Effect::Send(m));
            }
        }
        if quorum_due {
            self.check_quorum(now);
        }
    }

    fn abort_transfer(&mut self, now: Instant) {
        if let Some(ls) = self.leader_state.as_mut() {
            if ls.transfer.take().is_some() {
                self.stats.transfers_aborted += 1;
                ls.auto_transfer_after = now + self.cfg.election_timeout * 2;
            }
        }
    }

    /// Coalesced-heartbeat mode: the runtime calls this once per heartbeat interval for
    /// every group it leads and packs the returned heartbeats into one frame per peer
    /// node. Also runs the leader's periodic duties (retransmits, priority transfer).
    /// Returns nothing on a non-leader.
    pub fn take_heartbeats(&mut self, now: Instant) -> Vec<Message> {
        self.now = self.now.max(now);
        if self.role != Role::Leader {
            return Vec::new();
        }
        let hbs = self.leader_tick(now);
        self.report_role();
        hbs
    }

    /// One heartbeat interval of leader duties; returns the heartbeats to send.
    fn leader_tick(&mut self, now: Instant) -> Vec<Message> {
        if let Some(ls) = self.leader_state.as_mut() {
            ls.tick_deadline = now + self.cfg.heartbeat_interval;
        }
        if self
            .leader_state
            .as_ref()
            .is_some_and(|ls| ls.transfer.is_some_and(|t| now >= t.deadline))
        {
            self.abort_transfer(now);
        }
        self.retransmit_stalled(now);
        self.maybe_transfer_to_priority(now);
        let Some(ls) = self.leader_state.as_mut() else {
            return Vec::new();
        };
        ls.round += 1;
        let round = ls.round;
        let term = self.hs.term;
        ls.progress
            .iter()
            .map(|(&peer, p)| Message {
                from: self.id,
                to: peer,
                term,
                body: MessageBody::Heartbeat(HeartbeatRequest {
                    commit: self.commit.min(p.match_index),
                    round,
                }),
            })
            .collect()
    }

    fn retransmit_stalled(&mut self, now: Instant) {
        let timeout = self.cfg.retransmit_timeout;
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        let mut stalled = Vec::new();
        for (&peer, p) in ls.progress.iter_mut() {
            if p.oldest_unanswered().is_some_and(|t| now >= t + timeout) {
                stalled.push(peer);
                match p.state {
                    ProgressState::Snapshot => {
                        if let Some(s) = p.snapshot.as_mut() {
                            s.in_flight_since = None;
                        }
                    }
                    _ => p.retry(),
                }
            }
        }
        for peer in stalled {
            self.stats.retransmits += 1;
            self.send_appends_to(now, peer);
        }
    }

    fn maybe_transfer_to_priority(&mut self, now: Instant) {
        if !self.cfg.auto_transfer_to_priority {
            return;
        }
        let Some(ls) = self.leader_state.as_ref() else {
            return;
        };
        if ls.transfer.is_some() || now < ls.auto_transfer_after || self.commit < Some(ls.noop_index) {
            return;
        }
        let cfg = self.configs.active();
        let mine = cfg.priority(self.id);
        let last = self.log.last_index();
        let best = ls
            .progress
            .iter()
            .filter(|(id, p)| {
                cfg.priority(**id) > mine
                    && now < p.last_heard + self.cfg.election_timeout
                    && p.match_index == last
            })
            .max_by_key(|(id, _)| (cfg.priority(**id), std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(target) = best {
            let _ = self.transfer_leadership(now, target);
        }
    }

    /// Steps down unless a quorum of voters (this node included, if a voter) was heard
    /// within the last election timeout; otherwise re-arms for when that contact expires.
    fn check_quorum(&mut self, now: Instant) {
        let cfg = self.configs.active().clone();
        let timeout = self.cfg.election_timeout;
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        let mut heard: Vec<Instant> = cfg
            .voters()
            .keys()
            .map(|v| {
                if *v == self.id {
                    now
                } else {
                    ls.progress.get(v).map_or(Instant::ZERO, |p| p.last_heard)
                }
            })
            .collect();
        heard.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_heard = heard.get(cfg.quorum() - 1).copied().unwrap_or(Instant::ZERO);
        let expires = quorum_heard + timeout;
        if !self.cfg.check_quorum || now < expires {
            ls.check_quorum_deadline = if self.cfg.check_quorum {
                expires
            } else {
                now + timeout
            };
            return;
        }
        self.stats.check_quorum_step_downs += 1;
        self.become_follower(now, self.hs.term, None);
    }

    pub(crate) fn on_heartbeat_response(
        &mut self,
        now: Instant,
        from: NodeId,
        r: super::message::HeartbeatResponse,
    ) {
        let last = self.log.last_index();
        let Some(ls) = self.leader_state.as_mut() else {
            return self.drop_input(super::stats::DropReason::UnexpectedMessage);
        };
        let Some(p) = ls.progress.get_mut(&from) else {
            return self.drop_input(super::stats::DropReason::UnknownSender);
        };
        p.last_heard = now;
        // Anything sent in a round before the answered heartbeat should have arrived
        // before it; if the follower lacks it, it was lost: resend now.
        let lost = match p.state {
            ProgressState::Probe => p.probe.is_some_and(|s| s.round < r.round),
            ProgressState::Replicate => p
                .inflight
                .front()
                .is_some_and(|s| s.round < r.round && r.received < Some(s.what)),
            ProgressState::Snapshot => false,
        };
        if lost {
            self.stats.retransmits += 1;
            p.retry();
        }
        if p.match_index < last {
            self.send_appends_to(now, from);
        }
    }
}
