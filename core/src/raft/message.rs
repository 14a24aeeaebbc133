//! Messages between the nodes of one group. Plain data: the runtime encodes them for the
//! wire (and wraps them with its group id); tests and the simulator log and assert on them.
//!
//! Every message carries the sender's term. Offsets follow the engine's index space:
//! `prev` in an append is the last offset of an entry (or the snapshot point) with its
//! term; `None` means "before offset 0".

use bytes::Bytes;

use super::membership::Membership;
use super::types::{Entry, Index, LogId, NodeId, Term};

/// One message of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in; for a
    /// granted pre-vote response: that same term).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" — changes no state on either side.
    PreVote(VoteRequest),
    /// Answer to a pre-vote.
    PreVoteResp(VoteResponse),
    /// "Vote for me in `term`."
    Vote(VoteRequest),
    /// Answer to a vote request.
    VoteResp(VoteResponse),
    /// Entries to append (empty = a probe).
    Append(AppendRequest),
    /// Answer to an append.
    AppendResp(AppendResponse),
    /// Leader liveness and commit offset; see the module docs on coalescing.
    Heartbeat(HeartbeatRequest),
    /// Answer to a heartbeat.
    HeartbeatResp(HeartbeatResponse),
    /// One chunk of a snapshot.
    InstallSnapshot(SnapshotChunk),
    /// Answer to a snapshot chunk.
    InstallSnapshotResp(SnapshotResponse),
    /// Leadership transfer: "campaign now, skipping pre-vote and leases".
    TimeoutNow,
}

/// A (pre-)vote request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// The candidate's last log position.
    pub last_log: Option<LogId>,
    /// Sent because of a leadership transfer: voters ignore their leader lease.
    pub transfer: bool,
}

/// A (pre-)vote response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// Whether the vote is granted.
    pub granted: bool,
}

/// AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    /// The entry before `entries` (last offset, term); `None` = before offset 0.
    pub prev: Option<LogId>,
    /// Contiguous entries starting at `prev + 1`.
    pub entries: Vec<Entry>,
    /// The leader's commit offset.
    pub commit: Option<Index>,
}

/// Answer to AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResponse {
    /// The follower's log matches the leader's through `match_index`, durably.
    Accepted {
        /// Last offset known to match and be durable (`None`: nothing yet).
        match_index: Option<Index>,
    },
    /// The follower has no entry ending at `rejected_prev` with the sent term.
    Rejected {
        /// The `prev` offset that did not match.
        rejected_prev: Index,
        /// The follower's largest offset `<= rejected_prev` whose term is `<=` the sent
        /// prev term, with that term (`None`: no such offset). The leader resumes from
        /// its own largest offset `<= hint.index` with a term `<= hint.term`.
        hint: Option<LogId>,
    },
}

/// A heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The leader's commit offset, capped at what it knows the follower has.
    pub commit: Option<Index>,
    /// The leader's heartbeat round, echoed in the answer. Everything the leader sent
    /// before this heartbeat belongs to an earlier round.
    pub round: u64,
}

/// Answer to a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// The round of the heartbeat answered.
    pub round: u64,
    /// Highest offset the follower has received (not necessarily durable) that matches
    /// the leader's log. If appends sent before this round are missing, they were lost
    /// and the leader resends at once instead of waiting for a timeout.
    pub received: Option<Index>,
}

/// Metadata of a snapshot: the position it covers and the membership at that point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last offset covered and its term.
    pub last: LogId,
    /// The configuration in force at `last.index`.
    pub membership: Membership,
}

/// One chunk of InstallSnapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Which snapshot.
    pub meta: SnapshotMeta,
    /// Byte offset of `data` within the snapshot.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// Whether this is the last chunk.
    pub done: bool,
}

/// Answer to a snapshot chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotResponse {
    /// Which snapshot.
    pub snapshot: LogId,
    /// The byte offset the follower expects next.
    pub next_offset: u64,
    /// The snapshot is installed and durable: resume appends after it.
    pub installed: bool,
}

impl MessageBody {
    /// A short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote(_) => "PreVote",
            MessageBody::PreVoteResp(_) => "PreVoteResp",
            MessageBody::Vote(_) => "Vote",
            MessageBody::VoteResp(_) => "VoteResp",
            MessageBody::Append(_) => "Append",
            MessageBody::AppendResp(_) => "AppendResp",
            MessageBody::Heartbeat(_) => "Heartbeat",
            MessageBody::HeartbeatResp(_) => "HeartbeatResp",
            MessageBody::InstallSnapshot(_) => "InstallSnapshot",
            MessageBody::InstallSnapshotResp(_) => "InstallSnapshotResp",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }

    /// Whether only a leader sends this (append, heartbeat, snapshot, timeout-now).
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_)
                | MessageBody::TimeoutNow
        )
    }
}
