//! [`RaftStats`]: counters of what the engine did and of every input it dropped, with the
//! reason — the observable side of "bad input is dropped, never a panic".

use std::collections::BTreeMap;

/// Why an input was dropped (or answered negatively without changing state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Addressed to another node.
    WrongRecipient,
    /// From a node in no configuration this node knows.
    UnknownSender,
    /// From an older term.
    StaleTerm,
    /// A vote request while a leader is known to be alive (check-quorum lease).
    LeaderLease,
    /// Internally inconsistent (entries not contiguous, bad offsets, …).
    Malformed,
    /// Would change an entry this node knows is committed.
    ConflictBelowCommit,
    /// A response this role does not expect (e.g. an append answer at a follower).
    UnexpectedMessage,
    /// A response that no longer matches what was sent.
    StaleResponse,
    /// A read or write completion that no longer matches a request.
    StaleCompletion,
    /// A leader message claiming the term of this node's own leadership.
    TwoLeaders,
    /// TimeoutNow to a node that may not lead (learner, priority 0, not a member).
    CannotLead,
    /// A snapshot chunk of a snapshot no newer than the one this node has installed or
    /// is installing (a delayed retransmission).
    StaleSnapshot,
}

/// Counters. Cheap to read at any time via `Raft::stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftStats {
    /// Dropped inputs by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// The last drop reason.
    pub last_drop: Option<DropReason>,
    /// Pre-vote rounds started.
    pub pre_votes_started: u64,
    /// Elections (term bumps by campaigning) started.
    pub elections_started: u64,
    /// Times this node became leader.
    pub became_leader: u64,
    /// Times a leader stepped down because check-quorum failed.
    pub check_quorum_step_downs: u64,
    /// Election timeouts skipped because of a higher-priority voter.
    pub priority_waits: u64,
    /// Suffix truncations of the local log.
    pub truncations: u64,
    /// Snapshots streamed to followers to completion.
    pub snapshots_sent: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Leadership transfers started.
    pub transfers_started: u64,
    /// Leadership transfers abandoned after the timeout.
    pub transfers_aborted: u64,
    /// Appends re-sent after the retransmit timeout.
    pub retransmits: u64,
    /// Followers found to have lost entries they had acknowledged as durable: a
    /// rejection at or below the acknowledged offset, confirmed by the rejection of the
    /// probe below it (a late copy of an old rejection is not counted: that probe is
    /// accepted). The leader stops counting the follower towards commit and probes
    /// below. Non-zero means a disk or a recovery broke Raft's durability assumption.
    pub acknowledged_entries_lost: u64,
    /// Leader messages accepted from a sender in no known configuration (allowed so a
    /// lagging follower can learn the configuration that added its leader).
    pub unknown_leader_accepted: u64,
    /// Entry bytes sent from disk reads or snapshot chunks (recovery traffic).
    pub recovery_bytes_sent: u64,
}

impl RaftStats {
    pub(crate) fn drop(&mut self, reason: DropReason) {
        *self.dropped.entry(reason).or_insert(0) += 1;
        self.last_drop = Some(reason);
    }

    /// How many inputs were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }
}

/// Event counters of many Raft groups summed (a shard's partitions, for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftTotals {
    /// Elections started.
    pub elections_started: u64,
    /// Times a replica became leader.
    pub became_leader: u64,
    /// Leaders that stepped down because check-quorum failed.
    pub check_quorum_step_downs: u64,
    /// Suffix truncations of local logs.
    pub truncations: u64,
    /// Snapshots streamed to followers.
    pub snapshots_sent: u64,
    /// Snapshots installed from leaders.
    pub snapshots_installed: u64,
    /// Appends re-sent after the retransmit timeout.
    pub retransmits: u64,
    /// Followers found to have lost entries they had acknowledged as durable.
    pub acknowledged_entries_lost: u64,
}

impl RaftTotals {
    /// Adds one group's counters.
    pub fn add(&mut self, stats: &RaftStats) {
        self.elections_started += stats.elections_started;
        self.became_leader += stats.became_leader;
        self.check_quorum_step_downs += stats.check_quorum_step_downs;
        self.truncations += stats.truncations;
        self.snapshots_sent += stats.snapshots_sent;
        self.snapshots_installed += stats.snapshots_installed;
        self.retransmits += stats.retransmits;
        self.acknowledged_entries_lost += stats.acknowledged_entries_lost;
    }
}
