//! The client history: every operation a simulated client issued and what came of it,
//! in the order it happened (Jepsen's history), for the queue checks and the failure
//! report.

use crate::net::NodeId;
use crate::rng::fnv1a64;
use oxbow_core::time::Instant;

/// Upper bound on recorded operations; a workload stops issuing beyond it.
pub const MAX_OPS: usize = 1_000_000;

/// The digest of the payload that carries `value` (what the checkers compare).
pub fn value_digest(value: u64) -> u64 {
    fnv1a64(&value.to_be_bytes())
}

/// The payload bytes of a write of `value`.
pub fn value_payload(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

/// The value a payload carries, if it is a workload payload.
pub fn payload_value(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    /// Not finished yet (or the client gave up without an answer: indeterminate).
    Pending,
    /// Committed at `offset`.
    WriteAcked {
        /// Where.
        offset: u64,
    },
    /// Definitely not written (not leader, proposal refused).
    WriteRejected,
    /// No answer in time: may or may not have been written.
    WriteTimedOut,
}

/// One write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOp {
    /// Issuing client.
    pub client: u32,
    /// Node asked.
    pub node: NodeId,
    /// Unique value written.
    pub value: u64,
    /// When issued.
    pub invoked: Instant,
    /// When it ended.
    pub completed: Option<Instant>,
    /// How it ended.
    pub outcome: OpOutcome,
}

/// One read of committed records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// Reading client.
    pub client: u32,
    /// When.
    pub at: Instant,
    /// `(offset, value)` in the order returned.
    pub records: Vec<(u64, u64)>,
    /// Whether this read covered everything from the start up to `upto_offset`.
    pub complete: bool,
    /// Last offset the read covered.
    pub upto_offset: u64,
}

/// The history.
#[derive(Clone, Debug, Default)]
pub struct History {
    ops: Vec<WriteOp>,
    reads: Vec<ReadRecord>,
}

/// Names a write in the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpId(pub usize);

impl History {
    /// Records a write being issued.
    pub fn begin_write(&mut self, client: u32, now: Instant, value: u64) -> OpId {
        self.ops.push(WriteOp {
            client,
            node: 0,
            value,
            invoked: now,
            completed: None,
            outcome: OpOutcome::Pending,
        });
        OpId(self.ops.len() - 1)
    }

    /// Records which node a write went to.
    pub fn set_node(&mut self, id: OpId, node: NodeId) {
        if let Some(op) = self.ops.get_mut(id.0) {
            op.node = node;
        }
    }

    /// Records how a write ended (the first outcome wins).
    pub fn finish_write(&mut self, id: OpId, now: Instant, outcome: OpOutcome) {
        if let Some(op) = self.ops.get_mut(id.0) {
            if op.outcome == OpOutcome::Pending {
                op.outcome = outcome;
                op.completed = Some(now);
            }
        }
    }

    /// Records a read.
    pub fn record_read(&mut self, read: ReadRecord) {
        self.reads.push(read);
    }

    /// Every write.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Every read.
    pub fn reads(&self) -> &[ReadRecord] {
        &self.reads
    }

    /// Whether the history is full.
    pub fn is_full(&self) -> bool {
        self.ops.len() >= MAX_OPS
    }

    /// Writes acknowledged.
    pub fn acked(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, OpOutcome::WriteAcked { .. }))
            .count()
    }
}
