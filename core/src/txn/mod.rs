//! Idempotent producers and transactions: the state a partition keeps per producer id,
//! rebuilt from the partition's log, and the transaction coordinator kept in a
//! `__transaction_state` partition's log (DESIGN.md §1, §7).
//!
//! * [`coordinator`] — [`TxnCoordinator`]: transactional ids, their producer ids and
//!   epochs, two-phase commit (Prepare* durable before markers, Complete* after),
//!   timeouts, replay and checkpoints.
//! * [`marker`] — COMMIT/ABORT control batches in Kafka's format.
//! * [`producer_state`] — [`ProducerStateTable`]: per producer the epoch and the last
//!   five batches' sequence ranges and offsets; the leader's duplicate/gap/epoch check;
//!   expiry and the bound on producers per partition.
//! * [`snapshot`] — the table as checksummed, versioned bytes for snapshot files.
//!
//! The partition side (which batches feed the table, what survives truncation, how a
//! replica recovers from a snapshot plus the log suffix) is in
//! [`crate::partition::producers`]. Producer ids come from
//! `crate::broker::producer_handlers` (InitProducerId).

pub mod coordinator;
pub mod marker;
pub mod producer_state;
pub mod snapshot;

#[cfg(feature = "sim-bugs")]
pub use coordinator::TxnBugs;
pub use coordinator::{
    partition_for_txn, TxnConfig, TxnCoordinator, TxnMeta, TxnMetrics, TxnOp, TxnOutput, TxnResult, TxnState,
    TXN_STATE_TOPIC,
};
#[cfg(feature = "sim-bugs")]
pub use producer_state::ProducerBugs;
pub use producer_state::{
    AbortedTxn, BatchMeta, CheckOutcome, ProducerEntry, ProducerError, ProducerStateConfig,
    ProducerStateTable,
};

/// Settings of transactions and idempotent producers on a broker: the coordinators'
/// and every partition's producer state (`[txn]` in the node's configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnSettings {
    /// The transaction coordinators.
    pub coordinator: TxnConfig,
    /// Each partition's producer state.
    pub producers: ProducerStateConfig,
}

/// A shard's transaction counters for `/metrics`: its coordinators' counters summed,
/// and gauges read when asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnShardMetrics {
    /// The coordinators' counters, summed.
    pub coordinators: TxnMetrics,
    /// Transactions open or ending at this shard's coordinators.
    pub ongoing: u64,
    /// Producers tracked by the producer state of this shard's partitions.
    pub producers: u64,
}
