//! [`Raft`]: one group member — its state, construction from recovered storage, and the
//! sans-IO door (`handle`, `handle_timeout`, `poll_effect`, `poll_timeout`). Behaviour is
//! split by concern: `election.rs`, `replication.rs`, `leader.rs`, `snapshot.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::time::Instant;

use super::cache::EntryCache;
use super::config::{ConfigError, RaftConfig};
use super::io::{Effect, Input};
use super::leader::LeaderState;
use super::log_meta::{LogMeta, LogMetaError};
use super::membership::{CodecError, ConfigLog, Membership, Priority};
use super::message::{Message, MessageBody, SnapshotMeta};
use super::stats::{DropReason, RaftStats};
use super::types::{Entry, EntryKind, HardState, Index, LogId, NodeId, ReadId, Role, Term, WriteId};

/// What the runtime recovered from storage for this group (all empty for a new replica).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    /// Durable term and vote.
    pub hard_state: HardState,
    /// The durable snapshot's metadata, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// `(term, first offset)` of each term among the entries after the snapshot
    /// (Kafka's leader-epoch checkpoint).
    pub term_boundaries: Vec<(Term, Index)>,
    /// Last offset of the last durable entry after the snapshot (`None`: no entries).
    pub last_index: Option<Index>,
    /// Every configuration entry in the log after the snapshot, in order.
    pub config_entries: Vec<Entry>,
    /// The last commit offset the runtime persisted (a hint; may be stale or absent).
    pub commit_hint: Option<Index>,
}

/// Why an engine could not be constructed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// Invalid timings or limits.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Inconsistent log metadata.
    #[error("inconsistent log metadata: {0}")]
    Log(#[from] LogMetaError),
    /// A configuration entry does not decode.
    #[error("bad configuration entry: {0}")]
    ConfigEntry(#[from] CodecError),
    /// A configuration entry lies outside the recovered log or out of order.
    #[error("configuration entry at offset {0} is not in the log")]
    ConfigEntryOutsideLog(Index),
    /// The snapshot's last offset or the vote names something impossible.
    #[error("hard state term {0} is older than the log's last term {1}")]
    TermBehindLog(Term, Term),
}

/// One log write whose completion is awaited.
#[derive(Clone, Debug)]
pub(crate) struct PendingWrite {
    pub(crate) id: WriteId,
    pub(crate) kind: WriteKind,
}

#[derive(Clone, Debug)]
pub(crate) enum WriteKind {
    /// Entries through `last` (clamped when a later truncation removes some).
    Append {
        last: Option<Index>,
    },
    Truncate,
    SnapshotChunk {
        snapshot: LogId,
        next_offset: u64,
        leader: NodeId,
    },
    Install {
        meta: SnapshotMeta,
        leader: NodeId,
    },
}

/// A snapshot being received from a leader.
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    pub(crate) meta: SnapshotMeta,
    /// Bytes written (or being written).
    pub(crate) next_offset: u64,
    pub(crate) write_pending: bool,
}

/// Follower-side replication state, valid for the current term.
#[derive(Clone, Debug, Default)]
pub(crate) struct FollowerState {
    /// Highest offset known to match the current leader's log.
    pub(crate) verified: Option<Index>,
    /// An append is waiting for durability before it is answered.
    pub(crate) ack_pending: bool,
    /// The match offset last reported.
    pub(crate) acked: Option<Index>,
    pub(crate) incoming: Option<IncomingSnapshot>,
}

/// One member of one Raft group. See the [module docs](super) for the contract.
#[derive(Debug)]
pub struct Raft {
    pub(crate) id: NodeId,
    pub(crate) cfg: RaftConfig,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) hs: HardState,
    pub(crate) durable_hs: HardState,
    /// Hard states requested but not yet reported durable, oldest first.
    pub(crate) pending_hs: VecDeque<HardState>,
    pub(crate) log: LogMeta,
    pub(crate) cache: EntryCache,
    pub(crate) configs: ConfigLog,
    pub(crate) snapshot_meta: Option<SnapshotMeta>,
    pub(crate) commit: Option<Index>,
    pub(crate) applied: Option<Index>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// (Pre-)vote answers of the current campaign.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) leader_state: Option<LeaderState>,
    pub(crate) follower: FollowerState,
    pub(crate) next_write: u64,
    pub(crate) pending_writes: VecDeque<PendingWrite>,
    /// Highest offset of the current log known durable.
    pub(crate) durable: Option<Index>,
    pub(crate) election_deadline: Instant,
    pub(crate) leader_contact: Option<Instant>,
    pub(crate) target_priority: Priority,
    pub(crate) effects: VecDeque<Effect>,
    /// Messages waiting for the hard state to be durable.
    pub(crate) held: Vec<Message>,
    pub(crate) next_read: u64,
    pub(crate) apply_read: Option<(ReadId, Index)>,
    pub(crate) restore_pending: bool,
    pub(crate) stats: RaftStats,
    pub(crate) reported: (Role, Term, Option<NodeId>),
    /// Leader entries appended in memory but not yet emitted as one `Append` effect.
    pub(crate) unflushed: Vec<Entry>,
    /// The latest time handed in (used for sends triggered from `poll_effect`).
    pub(crate) now: Instant,
}

impl Raft {
    /// Builds the engine of node `id` from what the runtime recovered. `bootstrap` is the
    /// group's initial membership, used when there is no snapshot; `seed` seeds the
    /// engine's own RNG (election jitter).
    pub fn new(
        id: NodeId,
        cfg: RaftConfig,
        bootstrap: Membership,
        recovered: RecoveredState,
        seed: u64,
        now: Instant,
    ) -> Result<Raft, InitError> {
        cfg.validate()?;
        let snap_id = recovered.snapshot.as_ref().map(|s| s.last);
        let log = LogMeta::recover(snap_id, &recovered.term_boundaries, recovered.last_index)?;
        if recovered.hard_state.term < log.last_term() {
            return Err(InitError::TermBehindLog(
                recovered.hard_state.term,
                log.last_term(),
            ));
        }
        let mut configs = match &recovered.snapshot {
            Some(s) => ConfigLog::new(Some(s.last.index), s.membership.clone()),
            None => ConfigLog::new(None, bootstrap),
        };
        for e in &recovered.config_entries {
            let inside = e.index >= log.first_index() && log.term_at(e.index) == Some(e.term);
            if !inside || configs.active_index().is_some_and(|i| i >= e.index) {
                return Err(InitError::ConfigEntryOutsideLog(e.index));
            }
            configs.push(e.index, e.membership()?);
        }
        let snap_index = snap_id.map(|s| s.index);
        let commit = snap_index.max(recovered.commit_hint.min(log.last_index()));
        let target_priority = configs.active().max_priority();
        let mut raft = Raft {
            id,
            cache: EntryCache::new(cfg.entry_cache_bytes),
            rng: ChaCha8Rng::seed_from_u64(seed),
            hs: recovered.hard_state,
            durable_hs: recovered.hard_state,
            pending_hs: VecDeque::new(),
            durable: log.last_index(),
            log,
            configs,
            snapshot_meta: recovered.snapshot,
            commit,
            applied: snap_index,
            role: Role::Follower,
            leader: None,
            votes: BTreeMap::new(),
            leader_state: None,
            follower: FollowerState::default(),
            next_write: 0,
            pending_writes: VecDeque::new(),
            election_deadline: now,
            leader_contact: None,
            target_priority,
            effects: VecDeque::new(),
            held: Vec::new(),
            next_read: 0,
            apply_read: None,
            restore_pending: false,
            stats: RaftStats::default(),
            reported: (Role::Follower, recovered.hard_state.term, None),
            unflushed: Vec::new(),
            now,
            cfg,
        };
        raft.reset_election_timer(now);
        raft.apply_committed();
        Ok(raft)
    }

    // ----- the door -------------------------------------------------------------------

    /// Feeds one input (a message or a storage completion).
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Message(m) => self.on_message(now, m),
            Input::WriteDurable { write_id } => self.on_write_durable(now, write_id),
            Input::HardStateDurable(hs) => self.on_hard_state_durable(now, hs),
            Input::EntriesRead { read_id, result } => self.on_entries_read(now, read_id, result),
            Input::SnapshotChunkRead { read_id, result } => self.on_snapshot_chunk_read(now, read_id, result),
        }
        self.report_role();
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.role == Role::Leader {
            self.leader_timeouts(now);
        } else if now >= self.election_deadline && self.can_lead() {
            self.on_election_timeout(now);
        }
        self.report_role();
    }

    /// The next effect to carry out, if any. Proposals are batched: the leader's pending
    /// entries become one `Append` and one message per follower when the queue drains.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        if self.effects.is_empty() {
            self.flush();
        }
        self.effects.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.leader_state {
            Some(ls) => ls.next_deadline(&self.cfg),
            None if self.can_lead() => Some(self.election_deadline),
            None => None,
        }
    }

    // ----- accessors ------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.hs.term
    }
    /// Current hard state (possibly not yet durable).
    pub fn hard_state(&self) -> HardState {
        self.hs
    }
    /// The known leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// On a leader: the voters in sync with it (Kafka's ISR) — the leader itself and
    /// every follower that is streaming appends (caught up to where the leader sends)
    /// and was heard from within `max_silence`. `None` on a non-leader.
    pub fn in_sync_voters(&self, now: Instant, max_silence: std::time::Duration) -> Option<Vec<NodeId>> {
        let ls = self.leader_state.as_ref()?;
        let in_sync = self
            .membership()
            .voters()
            .keys()
            .copied()
            .filter(|v| {
                *v == self.id
                    || ls.progress.get(v).is_some_and(|p| {
                        p.state == super::progress::ProgressState::Replicate
                            && now.saturating_duration_since(p.last_heard) <= max_silence
                    })
            })
            .collect();
        Some(in_sync)
    }
    /// Last committed offset known here.
    pub fn commit_index(&self) -> Option<Index> {
        self.commit
    }
    /// Last offset handed out for applying (or restored from a snapshot).
    pub fn applied_index(&self) -> Option<Index> {
        self.applied
    }
    /// The commit offset the runtime may persist as `RecoveredState::commit_hint`:
    /// `min(commit, durable)`. Persisting plain `commit` would be unsafe: below it the
    /// disk may still hold stale entries whose replacement is not yet durable.
    pub fn commit_hint(&self) -> Option<Index> {
        self.commit.min(self.durable)
    }
    /// Highest offset of the local log known durable.
    pub fn durable_index(&self) -> Option<Index> {
        self.durable
    }
    /// Last position of the local log.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.log.last_log_id()
    }
    /// Where the next proposed entry would start.
    pub fn next_index(&self) -> Index {
        self.log.next_index()
    }
    /// Log metadata (snapshot point, term boundaries, last offset).
    pub fn log_meta(&self) -> &super::log_meta::LogMeta {
        &self.log
    }
    /// The active configuration (newest in the log).
    pub fn membership(&self) -> &Membership {
        self.configs.active()
    }
    /// The current snapshot's metadata.
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot_meta.as_ref()
    }
    /// Bytes held by the recent-entry cache (bounded by `entry_cache_bytes`).
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }
    /// Counters.
    pub fn stats(&self) -> &RaftStats {
        &self.stats
    }
    /// The configuration in use.
    pub fn config(&self) -> &RaftConfig {
        &self.cfg
    }
    /// The priority a voter needs to campaign right now (relaxes while no leader).
    pub fn target_priority(&self) -> Priority {
        self.target_priority
    }

    // ----- shared helpers ---------------------------------------------------------------

    /// Whether this node may campaign (see [`Raft::campaign_priority`]).
    pub(crate) fn can_lead(&self) -> bool {
        self.campaign_priority() > 0
    }

    /// The priority this node campaigns with: its priority in the active configuration
    /// if it votes there; otherwise, while the active configuration's entry is not known
    /// to be committed, its priority in the configuration that entry replaced; else 0.
    ///
    /// Why (dissertation §4.2.2: "a server that is not part of its own latest
    /// configuration should still start new elections, as it might still be needed until
    /// the C_new entry is committed"): a leader that appended its own removal and then
    /// lost its quorum is no voter of its latest configuration, yet it may hold the only
    /// copy of that entry, so the voters of the older configuration still need its vote
    /// and it refuses every candidate with a shorter log. With voters {1, 2}, 1 appending
    /// "remove 1" while 2 is cut off wedges the group for good unless 1 campaigns.
    ///
    /// Why it is safe: a campaign is counted exactly as any other, over the voters of the
    /// candidate's latest configuration (`tally_votes`), so a removed node's own vote
    /// never counts and it needs a full quorum of that configuration; voters still grant
    /// only to candidates at least as up to date, once per term. Election safety, log
    /// matching and leader completeness rest on those two rules and on consecutive
    /// configurations differing by one voter, none of which refers to whether the
    /// candidate is itself a member. Once elected it is the leader §4.2.2 already allows
    /// (managing a configuration without itself, not counting itself toward commit) and
    /// steps down when the removal commits (`maybe_leave_after_removal`).
    ///
    /// The cost is bounded: it stops once it sees the removal committed. If a leader of
    /// the new configuration commits it instead, this node never hears of it and keeps
    /// trying, like a removed server that missed its removal entry (§4.2.3); pre-vote and
    /// the leader lease keep that from disturbing the group.
    pub(crate) fn campaign_priority(&self) -> Priority {
        let active = self.configs.active();
        if active.is_voter(self.id) {
            return active.priority(self.id);
        }
        if !self.configs.has_uncommitted(self.commit) {
            return 0;
        }
        self.configs.previous().map_or(0, |m| m.priority(self.id))
    }

    pub(crate) fn quorum_voters(&self) -> Vec<NodeId> {
        self.configs.active().voters().keys().copied().collect()
    }

    /// Sends `m` now, or holds it until the current hard state is durable.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.hs.term;
        self.send_with_term(to, term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let m = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if self.hs == self.durable_hs {
            self.effects.push_back(Effect::Send(m));
        } else {
            self.held.push(m);
        }
    }

    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        assert!(hs.term >= self.hs.term, "term never goes back");
        if hs != self.hs {
            self.hs = hs;
            self.pending_hs.push_back(hs);
            self.effects.push_back(Effect::PersistHardState(hs));
        }
    }

    pub(crate) fn next_write_id(&mut self) -> WriteId {
        self.next_write += 1;
        WriteId(self.next_write)
    }

    pub(crate) fn next_read_id(&mut self) -> ReadId {
        self.next_read += 1;
        ReadId(self.next_read)
    }

    pub(crate) fn random_between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_nanos() as u64;
        if span == 0 {
            return low;
        }
        low + Duration::from_nanos(self.rng.next_u64() % span)
    }

    pub(crate) fn reset_election_timer(&mut self, now: Instant) {
        let jitter = self.random_between(Duration::ZERO, self.cfg.election_jitter);
        self.election_deadline = now + self.cfg.election_timeout + jitter;
    }

    pub(crate) fn reset_retry_timer(&mut self, now: Instant) {
        let delay = self.random_between(self.cfg.split_vote_retry_min, self.cfg.split_vote_retry_max);
        self.election_deadline = now + delay;
    }

    pub(crate) fn drop_input(&mut self, reason: DropReason) {
        self.stats.drop(reason);
    }

    pub(crate) fn report_role(&mut self) {
        let now = (self.role, self.hs.term, self.leader);
        if now != self.reported {
            self.reported = now;
            self.effects.push_back(Effect::RoleChanged {
                role: now.0,
                term: now.1,
                leader: now.2,
            });
        }
    }

    /// Appends entries to the local log in memory and emits the write (followers; the
    /// leader batches through `unflushed`).
    pub(crate) fn append_entries_locally(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut config_changed = false;
        for e in &entries {
            self.log.append(e);
            self.cache.push(e.clone());
            if e.kind == EntryKind::Config {
                if let Ok(m) = e.membership() {
                    self.configs.push(e.index, m);
                    config_changed = true;
                }
            }
        }
        let last = entries.last().map(|e| e.last_index);
        let write_id = self.next_write_id();
        self.pending_writes.push_back(PendingWrite {
            id: write_id,
            kind: WriteKind::Append { last },
        });
        self.effects.push_back(Effect::Append { write_id, entries });
        if config_changed {
            self.on_config_changed();
        }
    }

    /// Removes the log suffix from `from` (a conflict with the leader's log).
    pub(crate) fn truncate_log(&mut self, from: Index) {
        assert!(Some(from) > self.commit, "never truncate committed offsets");
        self.flush();
        self.log.truncate_from(from);
        self.cache.truncate_from(from);
        let keep = from.checked_sub(1);
        for w in &mut self.pending_writes {
            if let WriteKind::Append { last } = &mut w.kind {
                *last = (*last).min(keep);
            }
        }
        self.durable = self.durable.min(keep);
        let had_config = self.configs.active_index().is_some_and(|i| i >= from);
        self.configs.truncate_from(from);
        let write_id = self.next_write_id();
        self.pending_writes.push_back(PendingWrite {
            id: write_id,
            kind: WriteKind::Truncate,
        });
        self.effects.push_back(Effect::Truncate {
            write_id,
            from_index: from,
        });
        self.stats.truncations += 1;
        if had_config {
            self.on_config_changed();
        }
    }

    /// Emits the leader's batched entries as one write and its pending broadcasts.
    pub(crate) fn flush(&mut self) {
        self.flush_local_append();
        if self.leader_state.as_ref().is_some_and(|ls| ls.broadcast_pending) {
            if let Some(ls) = self.leader_state.as_mut() {
                ls.broadcast_pending = false;
            }
            self.broadcast_appends(self.now);
        }
    }

    /// Emits the leader's batched entries as one `Append` write. Called before anything
    /// that must be ordered after that write (a read of the log, a truncation).
    pub(crate) fn flush_local_append(&mut self) {
        if self.unflushed.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.unflushed);
        let last = entries.last().map(|e| e.last_index);
        let write_id = self.next_write_id();
        self.pending_writes.push_back(PendingWrite {
            id: write_id,
            kind: WriteKind::Append { last },
        });
        self.effects.push_back(Effect::Append { write_id, entries });
    }

    /// Reacts to a change of the active configuration.
    pub(crate) fn on_config_changed(&mut self) {
        self.target_priority = self.configs.active().max_priority();
        if self.leader_state.is_some() {
            self.sync_progress_with_config();
            self.maybe_commit();
        } else if matches!(self.role, Role::Candidate | Role::PreCandidate) && !self.can_lead() {
            self.role = Role::Follower;
            self.votes.clear();
        }
    }

    // ----- messages ----------------------------------------------------------------------

    fn on_message(&mut self, now: Instant, m: Message) {
        if m.to != self.id {
            return self.drop_input(DropReason::WrongRecipient);
        }
        if m.from == self.id {
            return self.drop_input(DropReason::Malformed);
        }
        if !self.configs.knows(m.from) {
            // (Pre-)vote requests are answered whatever the sender: a voter that has not
            // yet seen the configuration adding the candidate may be needed for its
            // quorum (dissertation §4.1: voting does not consult the configuration).
            // Granting is still guarded by the log check, the lease and pre-vote.
            let vote_request = matches!(m.body, MessageBody::PreVote(_) | MessageBody::Vote(_));
            let leaderish = m.body.is_from_leader() && !matches!(m.body, MessageBody::TimeoutNow);
            let current_leader = leaderish && m.term >= self.hs.term;
            if !(vote_request || current_leader) {
                return self.drop_input(DropReason::UnknownSender);
            }
            if leaderish {
                self.stats.unknown_leader_accepted += 1;
            }
        }
        if m.term > self.hs.term {
            if !self.on_higher_term(now, &m) {
                return;
            }
        } else if m.term < self.hs.term {
            return self.on_lower_term(m);
        }
        self.dispatch(now, m);
    }

    /// A message from a higher term. Returns whether to go on processing it.
    fn on_higher_term(&mut self, now: Instant, m: &Message) -> bool {
        match &m.body {
            MessageBody::PreVote(req) | MessageBody::Vote(req) => {
                if !req.transfer && self.in_lease(now) {
                    self.drop_input(DropReason::LeaderLease);
                    return false;
                }
                if matches!(m.body, MessageBody::PreVote(_)) {
                    return true;
                }
            }
            MessageBody::PreVoteResp(r) if r.granted => return true,
            _ => {}
        }
        let leader = if m.body.is_from_leader() {
            Some(m.from)
        } else {
            None
        };
        self.become_follower(now, m.term, leader);
        true
    }

    fn on_lower_term(&mut self, m: Message) {
        match m.body {
            MessageBody::Append(_) | MessageBody::Heartbeat(_) | MessageBody::InstallSnapshot(_) => {
                // Tell the stale leader about the newer term so it steps down.
                let r = super::message::HeartbeatResponse {
                    round: 0,
                    received: None,
                };
                self.send(m.from, MessageBody::HeartbeatResp(r));
                self.drop_input(DropReason::StaleTerm);
            }
            MessageBody::PreVote(_) => {
                self.send(
                    m.from,
                    MessageBody::PreVoteResp(super::message::VoteResponse { granted: false }),
                );
                self.drop_input(DropReason::StaleTerm);
            }
            _ => self.drop_input(DropReason::StaleTerm),
        }
    }

    fn dispatch(&mut self, now: Instant, m: Message) {
        let from = m.from;
        let term = m.term;
        match m.body {
            MessageBody::PreVote(req) => self.on_vote_request(now, from, term, req, true),
            MessageBody::Vote(req) => self.on_vote_request(now, from, term, req, false),
            MessageBody::PreVoteResp(r) => self.on_vote_response(now, from, term, r, true),
            MessageBody::VoteResp(r) => self.on_vote_response(now, from, term, r, false),
            MessageBody::Append(req) => self.on_append(now, from, req),
            MessageBody::AppendResp(r) => self.on_append_response(now, from, r),
            MessageBody::Heartbeat(hb) => self.on_heartbeat(now, from, hb),
            MessageBody::HeartbeatResp(r) => self.on_heartbeat_response(now, from, r),
            MessageBody::InstallSnapshot(chunk) => self.on_snapshot_chunk(now, from, chunk),
            MessageBody::InstallSnapshotResp(r) => self.on_snapshot_response(now, from, r),
            MessageBody::TimeoutNow => self.on_timeout_now(now, from),
        }
    }

    /// Whether a leader is known to be alive (so vote requests are ignored).
    pub(crate) fn in_lease(&self, now: Instant) -> bool {
        if !self.cfg.check_quorum {
            return false;
        }
        if self.role == Role::Leader {
            return true;
        }
        self.leader.is_some()
            && self
                .leader_contact
                .is_some_and(|t| now < t + self.cfg.election_timeout)
    }

    /// Accepts `from` as the leader of the current term (append, heartbeat, snapshot).
    /// Returns false if this node is itself the leader of this term.
    pub(crate) fn accept_leader(&mut self, now: Instant, from: NodeId) -> bool {
        if self.role == Role::Leader {
            self.drop_input(DropReason::TwoLeaders);
            return false;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(now, self.hs.term, Some(from));
        }
        self.leader_contact = Some(now);
        self.target_priority = self.configs.active().max_priority();
        self.reset_election_timer(now);
        true
    }

    // ----- durability -------------------------------------------------------------------

    fn on_hard_state_durable(&mut self, now: Instant, hs: HardState) {
        // Completions may arrive late or twice: only one for a state still pending counts,
        // and it covers every state requested before it.
        let Some(k) = self.pending_hs.iter().position(|p| *p == hs) else {
            return self.drop_input(DropReason::StaleCompletion);
        };
        self.pending_hs.drain(..=k);
        self.durable_hs = hs;
        if hs != self.hs {
            return;
        }
        for m in std::mem::take(&mut self.held) {
            self.effects.push_back(Effect::Send(m));
        }
        if self.role == Role::Candidate {
            self.tally_votes(now, false);
        }
    }

    fn on_write_durable(&mut self, now: Instant, write_id: WriteId) {
        if self.pending_writes.front().is_none_or(|w| w.id > write_id) {
            return self.drop_input(DropReason::StaleCompletion);
        }
        while self.pending_writes.front().is_some_and(|w| w.id <= write_id) {
            let Some(w) = self.pending_writes.pop_front() else {
                break;
            };
            match w.kind {
                WriteKind::Append { last } => self.durable = self.durable.max(last),
                WriteKind::Truncate => {}
                WriteKind::SnapshotChunk {
                    snapshot,
                    next_offset,
                    leader,
                } => self.on_snapshot_chunk_durable(snapshot, next_offset, leader),
                WriteKind::Install { meta, leader } => self.on_snapshot_installed(now, meta, leader),
            }
        }
        assert!(self.durable <= self.log.last_index(), "durable beyond the log");
        if self.role == Role::Leader {
            self.maybe_commit();
        } else {
            self.maybe_ack();
        }
    }
}
