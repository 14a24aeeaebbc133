//! Log replication: the leader's per-follower send loop (pipelined, windowed, served from
//! the entry cache or from disk reads, recovery throttled), its handling of append
//! answers (fast backtracking with conflict hints), and the follower's side (log
//! matching, conflict truncation, durable acknowledgement, commit), plus applying
//! committed entries.
//!
//! Matching works on offsets: `prev` is the last offset of the entry before the sent
//! ones. Within one term every node's entries have the same boundaries (one leader made
//! them), so "my entry containing offset o has term t" identifies the same entry on every
//! node; the leader therefore keeps `next_index` as any offset and sends from the entry
//! that contains it.

use crate::time::Instant;

use super::io::{Effect, ReadError, ReadTarget};
use super::message::{AppendRequest, AppendResponse, HeartbeatRequest, HeartbeatResponse, MessageBody};
use super::node::Raft;
use super::progress::{ProgressState, Sent};
use super::stats::DropReason;
use super::types::{next_after, Entry, EntryKind, Index, LogId, NodeId, ReadId, Role};

/// What to do next for one follower.
enum SendAction {
    Nothing,
    Probe(Option<LogId>),
    Entries(Vec<Entry>),
    Read(Index),
    Snapshot,
}

impl Raft {
    pub(crate) fn broadcast_appends(&mut self, now: Instant) {
        let peers: Vec<NodeId> = self
            .leader_state
            .as_ref()
            .map(|ls| ls.progress.keys().copied().collect())
            .unwrap_or_default();
        for p in peers {
            self.send_appends_to(now, p);
        }
    }

    /// Sends what follower `peer` may receive now, within its window.
    pub(crate) fn send_appends_to(&mut self, now: Instant, peer: NodeId) {
        for _ in 0..=self.cfg.max_inflight_appends {
            match self.next_send_action(peer) {
                SendAction::Nothing => return,
                SendAction::Probe(prev) => {
                    self.record_send(peer, now, prev.map(|p| p.index), None);
                    let req = AppendRequest {
                        prev,
                        entries: Vec::new(),
                        commit: self.commit,
                    };
                    self.send(peer, MessageBody::Append(req));
                    return;
                }
                SendAction::Entries(entries) => {
                    if !self.send_entries(now, peer, entries, false) {
                        return;
                    }
                }
                SendAction::Read(from) => return self.request_read(now, peer, from),
                SendAction::Snapshot => return self.start_snapshot_send(now, peer),
            }
        }
    }

    fn next_send_action(&self, peer: NodeId) -> SendAction {
        let Some(p) = self.leader_state.as_ref().and_then(|ls| ls.progress.get(&peer)) else {
            return SendAction::Nothing;
        };
        if p.state == ProgressState::Snapshot {
            return SendAction::Snapshot;
        }
        if !p.can_send(self.cfg.max_inflight_appends) {
            return SendAction::Nothing;
        }
        let next = p.next_index;
        if next < self.log.first_index() {
            return SendAction::Snapshot;
        }
        let Some(last) = self.log.last_index().filter(|&l| next <= l) else {
            return match p.state {
                ProgressState::Probe => SendAction::Probe(self.log.last_log_id()),
                _ => SendAction::Nothing,
            };
        };
        match self.cache.get_from(next, last, self.cfg.max_append_bytes) {
            Some(entries) => SendAction::Entries(entries),
            None => SendAction::Read(next),
        }
    }

    /// Sends `entries` to `peer`; returns whether the window allows sending more.
    fn send_entries(&mut self, now: Instant, peer: NodeId, entries: Vec<Entry>, from_disk: bool) -> bool {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return false;
        };
        let prev_index = first.index.checked_sub(1);
        let prev = match prev_index {
            None => None,
            Some(i) => match self.log.term_at(i) {
                Some(t) => Some(LogId::new(t, i)),
                None => {
                    self.start_snapshot_send(now, peer);
                    return false;
                }
            },
        };
        let last_index = last.last_index;
        if from_disk {
            let bytes: usize = entries.iter().map(Entry::size_bytes).sum();
            self.charge_recovery(now, bytes);
        }
        let probe = self.record_send(peer, now, prev_index, Some(last_index));
        let req = AppendRequest {
            prev,
            entries,
            commit: self.commit,
        };
        self.send(peer, MessageBody::Append(req));
        !probe
    }

    /// Books a sent append in the follower's progress; returns whether it was a probe.
    fn record_send(&mut self, peer: NodeId, now: Instant, prev: Option<Index>, last: Option<Index>) -> bool {
        let Some(ls) = self.leader_state.as_mut() else {
            return true;
        };
        let round = ls.round;
        let Some(p) = ls.progress.get_mut(&peer) else {
            return true;
        };
        match p.state {
            ProgressState::Replicate => {
                if let Some(l) = last {
                    p.inflight.push_back(Sent {
                        what: l,
                        at: now,
                        round,
                    });
                    p.next_index = l + 1;
                }
                false
            }
            _ => {
                p.probe = Some(Sent {
                    what: prev,
                    at: now,
                    round,
                });
                true
            }
        }
    }

    // ----- recovery reads and throttling --------------------------------------------------

    pub(crate) fn token_capacity(&self) -> i64 {
        let c = self
            .cfg
            .recovery_rate_bytes_per_sec
            .max(self.cfg.max_append_bytes as u64);
        i64::try_from(c.max(self.cfg.snapshot_chunk_bytes as u64)).unwrap_or(i64::MAX)
    }

    /// Refills the recovery bucket; returns whether recovery traffic may go now, and if
    /// not, arms the wake-up.
    pub(crate) fn recovery_allowed(&mut self, now: Instant) -> bool {
        let cap = self.token_capacity();
        let rate = self.cfg.recovery_rate_bytes_per_sec;
        let Some(ls) = self.leader_state.as_mut() else {
            return false;
        };
        let elapsed_ns = (now - ls.tokens_at).as_nanos();
        let refill = elapsed_ns.saturating_mul(u128::from(rate)) / 1_000_000_000;
        ls.tokens = ls
            .tokens
            .saturating_add(i64::try_from(refill).unwrap_or(i64::MAX))
            .min(cap);
        ls.tokens_at = now;
        if ls.tokens > 0 {
            return true;
        }
        let deficit = u128::try_from(1 - ls.tokens).unwrap_or(0);
        let wait_ns = deficit.saturating_mul(1_000_000_000).div_ceil(u128::from(rate));
        let wake = now + std::time::Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX));
        ls.recovery_wakeup = Some(ls.recovery_wakeup.map_or(wake, |w| w.min(wake)));
        false
    }

    pub(crate) fn charge_recovery(&mut self, _now: Instant, bytes: usize) {
        self.stats.recovery_bytes_sent += bytes as u64;
        if let Some(ls) = self.leader_state.as_mut() {
            ls.tokens = ls.tokens.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    fn request_read(&mut self, now: Instant, peer: NodeId, from: Index) {
        if !self.recovery_allowed(now) {
            return;
        }
        self.flush_local_append();
        let read_id = self.next_read_id();
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        let Some(p) = ls.progress.get_mut(&peer) else {
            return;
        };
        p.read_pending = Some(read_id);
        ls.reads.insert(read_id, (peer, from));
        let max_bytes = self.cfg.max_append_bytes;
        self.effects.push_back(Effect::ReadEntries {
            read_id,
            target: ReadTarget::Peer(peer),
            from_index: from,
            max_bytes,
        });
    }

    /// Whether `entries` are a plausible answer to a read from `from`: non-empty,
    /// contiguous, the first containing `from`, and agreeing with the log metadata.
    fn entries_match_log(&self, from: Index, entries: &[Entry]) -> bool {
        let Some(first) = entries.first() else {
            return false;
        };
        if first.index > from || first.last_index < from {
            return false;
        }
        let contiguous = entries.windows(2).all(|w| w[0].last_index + 1 == w[1].index);
        contiguous
            && entries.iter().all(|e| {
                e.is_well_formed()
                    && self.log.term_at(e.index) == Some(e.term)
                    && self.log.term_at(e.last_index) == Some(e.term)
            })
    }

    pub(crate) fn on_entries_read(
        &mut self,
        now: Instant,
        read_id: ReadId,
        result: Result<Vec<Entry>, ReadError>,
    ) {
        if let Some((id, from)) = self.apply_read {
            if id == read_id {
                return self.on_apply_read(from, result);
            }
        }
        let Some((peer, from)) = self
            .leader_state
            .as_mut()
            .and_then(|ls| ls.reads.remove(&read_id))
        else {
            return self.drop_input(DropReason::StaleCompletion);
        };
        let Some(p) = self
            .leader_state
            .as_mut()
            .and_then(|ls| ls.progress.get_mut(&peer))
        else {
            return self.drop_input(DropReason::StaleCompletion);
        };
        if p.read_pending != Some(read_id) {
            return self.drop_input(DropReason::StaleCompletion);
        }
        p.read_pending = None;
        let still_wanted = p.next_index == from && p.state != ProgressState::Snapshot;
        match result {
            Ok(entries) if still_wanted && self.entries_match_log(from, &entries) => {
                let mut bytes = 0;
                let limited: Vec<Entry> = entries
                    .into_iter()
                    .take_while(|e| {
                        bytes += e.size_bytes();
                        bytes <= self.cfg.max_append_bytes.max(e.size_bytes())
                    })
                    .collect();
                if self.send_entries(now, peer, limited, true) {
                    self.send_appends_to(now, peer);
                }
            }
            Ok(_) => {
                self.drop_input(DropReason::StaleCompletion);
                self.send_appends_to(now, peer);
            }
            Err(ReadError::Compacted) => self.start_snapshot_send(now, peer),
            Err(_) => {} // retried on the next heartbeat answer or retransmit tick
        }
    }

    // ----- leader: answers ---------------------------------------------------------------

    pub(crate) fn on_append_response(&mut self, now: Instant, from: NodeId, r: AppendResponse) {
        let last = self.log.last_index();
        let Some(ls) = self.leader_state.as_mut() else {
            return self.drop_input(DropReason::UnexpectedMessage);
        };
        let Some(p) = ls.progress.get_mut(&from) else {
            return self.drop_input(DropReason::UnknownSender);
        };
        p.last_heard = now;
        match r {
            AppendResponse::Accepted { match_index } => {
                if match_index > last {
                    return self.drop_input(DropReason::Malformed);
                }
                let moved = p.ack(match_index);
                if p.state == ProgressState::Probe {
                    p.become_replicate();
                }
                if moved {
                    self.maybe_commit();
                    self.maybe_send_timeout_now();
                }
                self.send_appends_to(now, from);
            }
            AppendResponse::Rejected { rejected_prev, hint } => {
                let stale = match p.state {
                    // Only the answer to the probe in flight counts. With none in flight
                    // (the read for the next one is pending, or nothing could be sent)
                    // a rejection is a late copy of one already handled: acting on it
                    // would restart the probe and send again, once per copy.
                    ProgressState::Probe => p.probe.is_none_or(|s| s.what != Some(rejected_prev)),
                    ProgressState::Replicate => Some(rejected_prev) <= p.match_index,
                    ProgressState::Snapshot => true,
                };
                if stale {
                    return self.drop_input(DropReason::StaleResponse);
                }
                let resume = match hint {
                    None => 0,
                    Some(h) => next_after(self.log.last_with_term_at_most(h.index, h.term)),
                };
                let next = if Some(rejected_prev) <= p.match_index {
                    // The follower acknowledged this offset as durable and matching, and
                    // now lacks it. Either its storage lost acknowledged entries (Raft
                    // assumes it cannot), or this is a late copy of a rejection sent
                    // before it had them (the network reorders; nothing in the message
                    // tells the two apart). Until it answers again it counts for nothing
                    // towards commit (commit itself never moves back). The next probe
                    // goes just below `rejected_prev`, not by the hint, which may be as
                    // stale as the rejection: accepted, it was a late copy; rejected,
                    // the loss is confirmed and that rejection's hint leads on.
                    p.match_index = None;
                    p.loss_suspected = true;
                    rejected_prev
                } else {
                    if std::mem::take(&mut p.loss_suspected) {
                        self.stats.acknowledged_entries_lost += 1;
                    }
                    // Below the snapshot point only an InstallSnapshot helps; the send
                    // loop notices `next < first_index`.
                    resume.min(rejected_prev).max(next_after(p.match_index))
                };
                // The next probe's prev is below `rejected_prev`, so copies of this
                // rejection do not match it.
                p.become_probe(next);
                self.send_appends_to(now, from);
            }
        }
    }

    // ----- follower ------------------------------------------------------------------------

    /// Checks an append's shape; config entries must decode.
    fn append_well_formed(&self, term: u64, req: &AppendRequest) -> bool {
        let mut expected = next_after(req.prev.map(|p| p.index));
        let mut prev_term = req.prev.map_or(0, |p| p.term);
        for e in &req.entries {
            if !e.is_well_formed() || e.index != expected || e.term < prev_term || e.term > term {
                return false;
            }
            if e.kind == EntryKind::Config && e.membership().is_err() {
                return false;
            }
            expected = e.last_index + 1;
            prev_term = e.term;
        }
        true
    }

    pub(crate) fn on_append(&mut self, now: Instant, from: NodeId, req: AppendRequest) {
        if !self.accept_leader(now, from) {
            return;
        }
        if !self.append_well_formed(self.hs.term, &req) {
            return self.drop_input(DropReason::Malformed);
        }
        if let Some(prev) = req.prev {
            let committed = Some(prev.index) <= self.commit;
            let known = self.log.term_at(prev.index);
            if committed && known.is_some_and(|t| t != prev.term) {
                return self.drop_input(DropReason::ConflictBelowCommit);
            }
            if !committed && known != Some(prev.term) {
                return self.reject_append(from, prev);
            }
        }
        let mut to_append: Vec<Entry> = Vec::new();
        for e in &req.entries {
            if !to_append.is_empty() {
                to_append.push(e.clone());
                continue;
            }
            if Some(e.last_index) <= self.commit {
                continue;
            }
            if Some(e.index) <= self.commit {
                return self.drop_input(DropReason::ConflictBelowCommit);
            }
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    self.truncate_log(e.index);
                    to_append.push(e.clone());
                }
                None => to_append.push(e.clone()),
            }
        }
        if let Some(first) = to_append.first() {
            if first.index != self.log.next_index() {
                return self.drop_input(DropReason::Malformed);
            }
        }
        self.append_entries_locally(to_append);
        let covered = req
            .entries
            .last()
            .map(|e| e.last_index)
            .or(req.prev.map(|p| p.index));
        self.follower.verified = self.follower.verified.max(covered);
        let new_commit = req.commit.min(self.follower.verified).min(self.log.last_index());
        if let Some(c) = new_commit.filter(|&c| Some(c) > self.commit) {
            self.advance_commit(c);
        }
        self.follower.ack_pending = true;
        self.maybe_ack();
    }

    fn reject_append(&mut self, from: NodeId, prev: LogId) {
        let hint = self
            .log
            .last_with_term_at_most(prev.index, prev.term)
            .and_then(|o| self.log.term_at(o).map(|t| LogId::new(t, o)));
        let r = AppendResponse::Rejected {
            rejected_prev: prev.index,
            hint,
        };
        self.send(from, MessageBody::AppendResp(r));
    }

    /// Acknowledges what is both verified against the leader and durable.
    pub(crate) fn maybe_ack(&mut self) {
        let Some(leader) = self.leader.filter(|_| self.role == Role::Follower) else {
            return;
        };
        let matched = self.durable.min(self.follower.verified);
        let complete = self.durable >= self.follower.verified;
        let progressed = matched > self.follower.acked;
        if (self.follower.ack_pending && complete) || progressed {
            if complete {
                self.follower.ack_pending = false;
            }
            self.follower.acked = self.follower.acked.max(matched);
            let r = AppendResponse::Accepted { match_index: matched };
            self.send(leader, MessageBody::AppendResp(r));
        }
    }

    pub(crate) fn on_heartbeat(&mut self, now: Instant, from: NodeId, hb: HeartbeatRequest) {
        if !self.accept_leader(now, from) {
            return;
        }
        let c = hb.commit.min(self.log.last_index());
        if let Some(c) = c.filter(|&c| Some(c) > self.commit) {
            self.advance_commit(c);
        }
        let r = HeartbeatResponse {
            round: hb.round,
            received: self.follower.verified,
        };
        self.send(from, MessageBody::HeartbeatResp(r));
    }

    // ----- apply -------------------------------------------------------------------------

    /// Hands committed entries to the state machine, from the cache or via reads.
    pub(crate) fn apply_committed(&mut self) {
        for _ in 0..64 {
            if self.restore_pending || self.apply_read.is_some() || self.applied >= self.commit {
                return;
            }
            let Some(commit) = self.commit else { return };
            let from = next_after(self.applied);
            match self.cache.get_from(from, commit, self.cfg.max_append_bytes) {
                Some(entries) if entries[0].index == from => self.emit_apply(entries),
                _ => {
                    self.flush_local_append();
                    let read_id = self.next_read_id();
                    self.apply_read = Some((read_id, from));
                    self.effects.push_back(Effect::ReadEntries {
                        read_id,
                        target: ReadTarget::Apply,
                        from_index: from,
                        max_bytes: self.cfg.max_append_bytes,
                    });
                    return;
                }
            }
        }
    }

    fn emit_apply(&mut self, entries: Vec<Entry>) {
        let last = entries.last().map(|e| e.last_index);
        assert!(last <= self.commit, "apply only committed entries");
        self.applied = last;
        self.effects.push_back(Effect::Apply { entries });
    }

    fn on_apply_read(&mut self, from: Index, result: Result<Vec<Entry>, ReadError>) {
        self.apply_read = None;
        if from != next_after(self.applied) || self.restore_pending {
            self.drop_input(DropReason::StaleCompletion);
            return self.apply_committed();
        }
        match result {
            Ok(entries)
                if entries.first().is_some_and(|e| e.index == from)
                    && self.entries_match_log(from, &entries) =>
            {
                let take: Vec<Entry> = entries
                    .into_iter()
                    .take_while(|e| Some(e.last_index) <= self.commit)
                    .collect();
                if !take.is_empty() {
                    self.emit_apply(take);
                }
                self.apply_committed();
            }
            _ => self.drop_input(DropReason::StaleCompletion),
        }
    }
}
