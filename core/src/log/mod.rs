//! The storage log of a partition replica: Kafka record batches in segment files.
//!
//! * [`batch`], [`records`], [`builder`] — the record batch v2 format, kept as bytes.
//! * [`Log`] ([`partition_log`]) — appends, rolls, group commit, truncation, retention,
//!   DeleteRecords, checkpoints; a sans-IO state machine emitting [`LogEffect`]s.
//! * [`LogRecovery`] ([`recovery`]) — rebuilds a [`Log`] from a directory after a
//!   crash: torn tails cut, corruption of synced data reported, indexes rebuilt.
//! * [`index`], [`checkpoint`], [`segment`] — the sparse index, the durability
//!   checkpoint, and the in-memory view of a segment.
//! * [`read`] — turning bytes read for a fetch or timestamp lookup into answers.
//! * [`io`] — the contract with disk backends (runtime-real's direct I/O files,
//!   runtime-sim's simulated disk); [`mem_disk`] is a small in-memory backend for tests.
//!
//! Layout: `<data-dir>/kafka/<topic>/<partition>_<revision>/<base>-<term>-v1.log`,
//! with `<base>-<term>-v1.index` beside each closed segment and one `checkpoint` file.
//! A segment holds batches of one Raft term only: a term change rolls a segment, so
//! segment names double as the log's term boundaries.

pub mod batch;
pub mod builder;
pub mod checkpoint;
pub mod config;
pub mod index;
pub mod io;
pub mod mem_disk;
pub mod partition_log;
pub mod read;
pub mod records;
pub mod recovery;
pub mod segment;

pub use batch::{BatchError, BatchHeader, Compression};
pub use config::LogConfig;
pub use io::{DiskError, FileRange, LogCompletion, LogEffect, SegmentId, StampedBatch};
pub use partition_log::{AppendError, AppendInfo, Log, LogEvent, OffsetError, ReadPlan, SyncTicket};
pub use recovery::{DirEntry, LogRecovery, RecoveryError, RecoveryInput, RecoveryReport, RecoveryStep};
