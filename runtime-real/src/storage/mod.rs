//! The real runtime's storage backend: executes the log's disk effects
//! ([`oxbow_core::log::io::LogEffect`]) on direct-I/O segment files.
//!
//! * [`aligned`] — the per-shard pool of 4 KiB-aligned buffers every transfer uses.
//! * [`vfs`] — the system calls, behind a trait ([`vfs::RealVfs`] in production).
//! * [`fault`] — a [`vfs::Vfs`] wrapper that injects errors (ENOSPC, EIO) for tests.
//! * [`segment`] — one `O_DIRECT` segment file: unaligned appends (staged into aligned
//!   buffers), aligned reads, truncation, preallocation.
//! * [`data_op`] — the writes and `fdatasync`s the executor hands to an I/O backend
//!   (the shard's io_uring, or blocking calls on the calling thread).
//! * [`read_op`] — a fetch read of a segment range as an operation (the shard's
//!   io_uring runs it), its own aligned buffer handed over as `Bytes` without a copy.
//! * [`latency_histogram`] — durations in fixed buckets (each `fdatasync`'s, exposed
//!   as a Prometheus histogram).
//! * [`executor`] — [`PartitionStorage`]: runs one partition's effects in order,
//!   pipelining writes and syncs with group commit, and reports completions.
//! * [`file_job`] — checkpoint, state-file and index writes as jobs a helper thread can
//!   run (`fdatasync`, `rename`, directory `fsync` off the shard thread).
//! * [`disk_log`] — [`DiskLog`]: core's `Log` recovered from a directory and driven
//!   through the executor; [`open_partition_log`].
//! * [`error`] — [`StorageError`] and its mapping to the log's `DiskError`.

pub mod aligned;
pub mod data_op;
pub mod disk_log;
pub mod error;
pub mod executor;
pub mod fault;
pub mod file_job;
pub mod latency_histogram;
pub mod read_op;
pub mod segment;
pub mod vfs;

pub use aligned::{BufferPool, PoolConfig};
pub use disk_log::{open_partition_log, recover_partition, DiskLog, OpenLogError, ReadLogError};
pub use error::{StorageError, StorageResult};
pub use executor::{PartitionStorage, StorageConfig, StorageStats};
pub use vfs::RealVfs;
