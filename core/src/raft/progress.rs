//! [`Progress`]: the leader's view of one follower — what matches, what to send next, the
//! bounded window of appends in flight, and the snapshot being streamed to it.
//!
//! States (after etcd raft's tracker):
//! * `Probe`: the follower's match point is unknown; one append at a time, each waiting
//!   for an answer (or a heartbeat answer, or the retransmit timeout).
//! * `Replicate`: appends are pipelined up to `max_inflight_appends`; `next_index` moves
//!   ahead optimistically.
//! * `Snapshot`: the follower needs the snapshot; chunks go one at a time.

use std::collections::VecDeque;

use crate::time::Instant;

use super::types::{next_after, Index, LogId, ReadId};

/// Replication state of a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the match point.
    Probe,
    /// Streaming appends.
    Replicate,
    /// Streaming a snapshot.
    Snapshot,
}

/// Something sent to a follower: what, when, and in which heartbeat round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sent<T> {
    pub(crate) what: T,
    pub(crate) at: Instant,
    pub(crate) round: u64,
}

/// A snapshot being streamed to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotSend {
    pub(crate) snapshot: LogId,
    /// Bytes the follower has acknowledged.
    pub(crate) acked_offset: u64,
    /// When the chunk in flight was sent, if one is.
    pub(crate) in_flight_since: Option<Instant>,
    /// The outstanding chunk read and the byte offset it reads.
    pub(crate) read_pending: Option<(ReadId, u64)>,
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: Option<Index>,
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// `Probe`: the unanswered probe (its prev offset, send time and heartbeat round).
    pub(crate) probe: Option<Sent<Option<Index>>>,
    /// `Replicate`: each unacknowledged append (its last offset), oldest first.
    pub(crate) inflight: VecDeque<Sent<Index>>,
    /// When the follower was last heard from (check-quorum, priority transfer).
    pub(crate) last_heard: Instant,
    /// A read of entries for this follower is outstanding.
    pub(crate) read_pending: Option<ReadId>,
    pub(crate) snapshot: Option<SnapshotSend>,
    /// `Probe`: the follower rejected an offset it had acknowledged; the probe below it
    /// tells whether it lost entries (rejected) or the rejection was a late copy
    /// (accepted).
    pub(crate) loss_suspected: bool,
}

impl Progress {
    pub(crate) fn new(next_index: Index, now: Instant) -> Self {
        Progress {
            match_index: None,
            next_index,
            state: ProgressState::Probe,
            probe: None,
            inflight: VecDeque::new(),
            last_heard: now,
            read_pending: None,
            snapshot: None,
            loss_suspected: false,
        }
    }

    /// Switches to probing from `next_index`.
    pub(crate) fn become_probe(&mut self, next_index: Index) {
        self.state = ProgressState::Probe;
        self.next_index = next_index;
        self.probe = None;
        self.inflight.clear();
        self.read_pending = None;
        self.snapshot = None;
    }

    /// Starts over after an append or probe went unanswered (lost, or the follower
    /// restarted): a probe is sent again where it was, pipelined appends go back to
    /// the match point. Probing from the match point instead would throw away what
    /// probing found — with no match yet (a new leader, or a follower that lost
    /// acknowledged entries) that is offset 0, and a snapshot where the log is
    /// compacted.
    pub(crate) fn retry(&mut self) {
        let next_index = match self.state {
            ProgressState::Probe => self.next_index,
            ProgressState::Replicate | ProgressState::Snapshot => next_after(self.match_index),
        };
        self.become_probe(next_index);
    }

    /// Switches to pipelined replication after a successful answer.
    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe = None;
        self.loss_suspected = false;
        self.inflight.clear();
        self.next_index = self.next_index.max(next_after(self.match_index));
    }

    pub(crate) fn become_snapshot(&mut self, snapshot: LogId) {
        self.state = ProgressState::Snapshot;
        self.probe = None;
        self.loss_suspected = false;
        self.inflight.clear();
        self.read_pending = None;
        self.snapshot = Some(SnapshotSend {
            snapshot,
            acked_offset: 0,
            in_flight_since: None,
            read_pending: None,
        });
    }

    /// Records an acknowledgement through `match_index`; returns whether it moved.
    pub(crate) fn ack(&mut self, match_index: Option<Index>) -> bool {
        while self.inflight.front().is_some_and(|s| Some(s.what) <= match_index) {
            self.inflight.pop_front();
        }
        if match_index <= self.match_index {
            return false;
        }
        self.match_index = match_index;
        self.next_index = self.next_index.max(next_after(match_index));
        true
    }

    /// Whether another append may be sent now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        if self.read_pending.is_some() {
            return false;
        }
        match self.state {
            ProgressState::Probe => self.probe.is_none(),
            ProgressState::Replicate => self.inflight.len() < max_inflight,
            ProgressState::Snapshot => false,
        }
    }

    /// Send time of the oldest unanswered append or probe.
    pub(crate) fn oldest_unanswered(&self) -> Option<Instant> {
        match self.state {
            ProgressState::Probe => self.probe.map(|s| s.at),
            ProgressState::Replicate => self.inflight.front().map(|s| s.at),
            ProgressState::Snapshot => self.snapshot.as_ref().and_then(|s| s.in_flight_since),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn window_and_ack() {
        let t = Instant::ZERO;
        let probe = Sent {
            what: Some(9),
            at: t,
            round: 0,
        };
        let sent = |what: Index| Sent {
            what,
            at: t,
            round: 0,
        };
        let mut p = Progress::new(10, t);
        assert!(p.can_send(2));
        p.probe = Some(probe);
        assert!(!p.can_send(2));
        assert!(p.ack(Some(9)));
        p.become_replicate();
        assert_eq!(p.next_index, 10);
        p.inflight.push_back(sent(12));
        p.inflight.push_back(sent(14));
        assert!(!p.can_send(2));
        assert!(p.ack(Some(12)));
        assert!(p.can_send(2));
        assert!(!p.ack(Some(11)));
        assert_eq!(p.match_index, Some(12));
        p.become_probe(13);
        assert!(p.inflight.is_empty());
    }
}
