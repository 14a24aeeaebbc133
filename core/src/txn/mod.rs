//! Idempotent producers (and, later, transactions): the state a partition keeps per
//! producer id, rebuilt from the partition's log (DESIGN.md §1, §7).
//!
//! * [`producer_state`] — [`ProducerStateTable`]: per producer the epoch and the last
//!   five batches' sequence ranges and offsets; the leader's duplicate/gap/epoch check;
//!   expiry and the bound on producers per partition.
//! * [`snapshot`] — the table as checksummed, versioned bytes for snapshot files.
//!
//! The partition side (which batches feed the table, what survives truncation, how a
//! replica recovers from a snapshot plus the log suffix) is in
//! [`crate::partition::producers`]. Producer ids come from
//! `crate::broker::producer_handlers` (InitProducerId).

pub mod producer_state;
pub mod snapshot;

pub use producer_state::{
    BatchMeta, CheckOutcome, ProducerEntry, ProducerError, ProducerStateConfig, ProducerStateTable,
};
