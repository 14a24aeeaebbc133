//! The door between the cluster driver and a replicated-log node: the sans-IO shape every
//! core state machine has (`handle`, `handle_timeout`, `poll_effect`, `poll_timeout`),
//! specialised to what the driver needs from a Raft replica.
//!
//! Durability is explicit: a replica asks for storage operations
//! ([`ReplicaEffect::Persist`]) and is told, in order, when each one is durable
//! ([`Replica::handle_durable`]). The driver executes them on the node's simulated disk
//! (through core's `Log` for entries), so crashes and torn writes hit real bytes.

use crate::net::NodeId;
use bytes::Bytes;
use oxbow_core::time::Instant;
use std::fmt::Debug;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// Client data.
    Data,
    /// A new leader's empty entry (stored as a control batch).
    Noop,
    /// A membership change (stored as a control batch carrying the payload).
    Config,
}

/// One log entry (one offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEntry {
    /// Term that created it.
    pub term: u64,
    /// Its offset.
    pub index: u64,
    /// Data or no-op.
    pub kind: EntryKind,
    /// The client's bytes (empty for a no-op).
    pub payload: Bytes,
}

/// The durable state besides the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Vote cast in `term`.
    pub vote: Option<NodeId>,
}

/// A storage operation; each gets the next sequence number (starting at 1) and is
/// reported durable in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// Persist term and vote.
    HardState(HardState),
    /// Append entries at the end of the log.
    Append(Vec<SimEntry>),
    /// Remove every entry from `from_index` on.
    Truncate {
        /// First removed offset.
        from_index: u64,
    },
    /// Nothing to store; completes in order with the others (a write that lives in
    /// memory, such as a received snapshot chunk).
    Barrier,
}

/// Something a replica wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaEffect<M> {
    /// Send a message to a peer.
    Send {
        /// Destination.
        to: NodeId,
        /// The message.
        msg: M,
    },
    /// A storage operation with its sequence number.
    Persist {
        /// Sequence number (1, 2, …).
        seq: u64,
        /// What to store.
        op: StorageOp,
    },
    /// Read entries back from the log on disk, starting with `from_index`, about
    /// `max_bytes`; answer with [`Replica::handle_read`].
    Read {
        /// Quoted in the answer.
        read_id: u64,
        /// First offset wanted.
        from_index: u64,
        /// Size bound.
        max_bytes: usize,
    },
}

/// A replica's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Follower.
    Follower,
    /// Candidate.
    Candidate,
    /// Leader.
    Leader,
}

/// What the driver and the checkers observe of a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Current term.
    pub term: u64,
    /// Current role.
    pub role: Role,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Highest committed offset known.
    pub commit_index: Option<u64>,
    /// Last offset in the (in-memory) log.
    pub last_index: Option<u64>,
}

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Not the leader (maybe it knows who is).
    #[error("not the leader (leader hint {0:?})")]
    NotLeader(Option<NodeId>),
    /// Too much uncommitted data.
    #[error("too many uncommitted entries")]
    Busy,
}

/// Leadership changes the driver can ask for (leader churn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Churn {
    /// A leader steps down to follower.
    StepDown,
    /// A leader hands leadership to `to`.
    TransferTo(NodeId),
    /// A leader changes a voter's priority (membership change).
    SetPriority(NodeId, u32),
    /// A leader turns a voter into a learner (membership change).
    Demote(NodeId),
    /// A leader turns a caught-up learner back into a voter (membership change).
    Promote(NodeId),
}

/// A replicated-log node as the cluster driver drives it.
pub trait Replica {
    /// Peer-to-peer message.
    type Msg: Clone + Debug;

    /// A message from `from`.
    fn handle_message(&mut self, now: Instant, from: NodeId, msg: Self::Msg);
    /// The deadline of [`Replica::poll_timeout`] passed.
    fn handle_timeout(&mut self, now: Instant);
    /// Storage operations up to `seq` are durable.
    fn handle_durable(&mut self, now: Instant, seq: u64);
    /// The answer to [`ReplicaEffect::Read`]: entries read from disk (possibly none,
    /// when the log has not written them yet), or why the read failed.
    fn handle_read(&mut self, _now: Instant, _read_id: u64, _result: Result<Vec<SimEntry>, String>) {}
    /// Proposes a data entry; returns the offset it will have if committed.
    fn propose(&mut self, now: Instant, payload: Bytes) -> Result<u64, ProposeError>;
    /// Leader churn on demand; `false` if not applicable (e.g. not leader).
    fn churn(&mut self, now: Instant, churn: Churn) -> bool;
    /// The next effect.
    fn poll_effect(&mut self) -> Option<ReplicaEffect<Self::Msg>>;
    /// The next deadline, on the node's own clock.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Observable state.
    fn status(&self) -> ReplicaStatus;
    /// The in-memory entry at `index`.
    fn entry(&self, index: u64) -> Option<&SimEntry>;
    /// The term of a message, for the trace and for network fault injection.
    fn msg_term(msg: &Self::Msg) -> u64;
    /// Rewrites a message's term (the network's planted `corrupt_terms` bug).
    fn set_msg_term(msg: &mut Self::Msg, term: u64);
    /// Writes a short description of a message for the trace.
    fn fmt_msg(msg: &Self::Msg, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result;
    /// Takes a snapshot if at least `every` entries were applied since the last one,
    /// covering at most `durable_index` (the snapshot's content must be on disk).
    /// Returns whether one was taken.
    fn maybe_snapshot(&mut self, _now: Instant, _durable_index: Option<u64>, _every: u64) -> bool {
        false
    }
    /// Members that receive the log but do not vote.
    fn learners(&self) -> Vec<NodeId> {
        Vec::new()
    }
    /// Adds the replica's own counters to the run's coverage (called when the replica
    /// stops: a crash, or the end of the run).
    fn harvest_coverage(&self, _coverage: &mut crate::coverage::Coverage) {}
    /// A broken contract the replica (or its adapter) noticed; fails the run.
    fn contract_violation(&self) -> Option<String> {
        None
    }
}

/// Displays a replica's message with [`Replica::fmt_msg`] (no allocation).
pub struct MsgDisplay<'a, R: Replica>(pub &'a R::Msg);

impl<R: Replica> std::fmt::Display for MsgDisplay<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        R::fmt_msg(self.0, f)
    }
}

impl<R: Replica> std::fmt::Debug for MsgDisplay<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        R::fmt_msg(self.0, f)
    }
}
