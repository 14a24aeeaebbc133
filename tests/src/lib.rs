//! # oxbow-tests
//!
//! End-to-end tests across Oxbow's crates (see `tests/README.md`), and the helper
//! programs they run as real processes: `oxbow-log-writer` appends to a partition log
//! through the real direct-I/O runtime and reports what became durable, so a test can
//! kill it with SIGKILL at any moment and check recovery against what it acknowledged.
#![warn(missing_docs)]

pub mod cluster;
pub mod cluster_client;
pub mod netns;
pub mod ports;
pub mod proxy;

/// The value written in record `index` of the writer's batch number `batch`.
pub fn writer_value(batch: u64, index: u64) -> String {
    format!("batch-{batch}-record-{index}")
}

/// Records per batch the writer appends.
pub const WRITER_RECORDS_PER_BATCH: u64 = 4;
