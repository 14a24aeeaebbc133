//! Tiered storage policy: which parts of a partition's log go to the object store and
//! when, the partition manifest and its spillover into archived manifests, local and
//! total retention, garbage collection of remote objects, remote-read planning with a
//! bounded cache, and topic recovery planning. No I/O: object-store operations leave as
//! [`TierEffect`]s and come back as [`StoreCompletion`]s.
//!
//! * [`manifest`] — manifests, object keys, the byte format.
//! * [`archiver`] — [`Archiver`], the leader's upload / manifest / retention / GC state
//!   machine of one partition.
//! * [`retention`] — pure decisions: which local segments may go, which remote ones must.
//! * [`read`] — [`RemoteReader`]: offset → archive → index → byte range, through bounded
//!   caches of archived manifests, indexes and downloaded chunks.
//! * [`recovery`] — what a partition recovered from the store contains.
//!
//! # Contract with a runtime (runtime-real's `object_store`, runtime-sim's store)
//!
//! * Execute each [`TierEffect`] and answer with exactly one [`StoreCompletion`] carrying
//!   its [`OpId`]: `Ok` only once the operation is complete (a put's object is whole and
//!   visible), an error otherwise. A timed-out operation is reported as
//!   [`StoreError::Timeout`] — it may or may not have happened; the state machines
//!   assume either.
//! * [`ObjectBody::LocalSegment`] asks the runtime to read that byte range of the local
//!   segment file and upload it; if the file is gone, answer
//!   [`StoreError::LocalReadFailed`].
//! * Operations may run concurrently and complete in any order.
//! * Durability order is the state machine's job: it asks for a segment upload, waits
//!   for its completion, then changes and uploads the manifest, waits for *that*
//!   completion, and only then reports the data as removable locally
//!   ([`Archiver::removable_offset`]) or deletes objects the manifest no longer names.
//! * Object keys are opaque to the runtime: the lineage marker (`<prefix>lineage`) is a
//!   plain [`ObjectBody::Bytes`] put and get like any manifest.

pub mod archiver;
pub mod manifest;
pub mod read;
pub mod recovery;
pub mod retention;

#[cfg(feature = "sim-bugs")]
pub use archiver::TierBugs;
pub use archiver::{
    Archiver, ArchiverState, InvalidTierConfig, LocalLogView, LocalSegmentView, TierMetrics, UploadBacklog,
};
pub use manifest::{
    ArchiveRef, ArchivedManifest, LineageMarker, ManifestError, ObjectName, PartitionManifest, PartitionPath,
    RecoveryPoint, Revision, SegmentMeta,
};
pub use read::{ReadError, ReadStep, RemoteReader};
pub use recovery::{RecoveredPartition, RecoveryError};

use bytes::Bytes;
use std::time::Duration;

use crate::log::io::SegmentId;

/// Identifies one object-store operation for its completion.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub struct OpId(pub u64);

/// What a put uploads.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ObjectBody {
    /// These bytes (manifests, indexes).
    Bytes(Bytes),
    /// `len_bytes` bytes of the local segment file `segment` from `position_bytes`.
    LocalSegment {
        /// The local segment.
        segment: SegmentId,
        /// First byte.
        position_bytes: u64,
        /// Number of bytes.
        len_bytes: u64,
    },
}

/// An object-store operation for the runtime to perform.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TierEffect {
    /// Upload an object (whole; never visible half-written).
    Put {
        /// For the completion.
        op: OpId,
        /// Object key (relative to the bucket's prefix).
        key: String,
        /// What to upload.
        body: ObjectBody,
    },
    /// Download an object, or `len_bytes` of it from `position_bytes` when `range` is set.
    Get {
        /// For the completion.
        op: OpId,
        /// Object key.
        key: String,
        /// `(position_bytes, len_bytes)`, or the whole object.
        range: Option<(u64, u64)>,
    },
    /// Delete an object (deleting a missing one succeeds).
    Delete {
        /// For the completion.
        op: OpId,
        /// Object key.
        key: String,
    },
    /// List the keys under a prefix.
    List {
        /// For the completion.
        op: OpId,
        /// Key prefix.
        prefix: String,
    },
}

impl TierEffect {
    /// The operation's id.
    pub fn op(&self) -> OpId {
        match self {
            TierEffect::Put { op, .. }
            | TierEffect::Get { op, .. }
            | TierEffect::Delete { op, .. }
            | TierEffect::List { op, .. } => *op,
        }
    }
}

/// A successful answer.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum StoreReply {
    /// The put is complete.
    Put,
    /// The object's bytes (or the range asked for).
    Got(Bytes),
    /// The object is gone.
    Deleted,
    /// Keys under the prefix, sorted.
    Listed(Vec<String>),
}

/// Why an operation failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No object under the key.
    #[error("no such object")]
    NotFound,
    /// The store refused or failed (5xx); nothing happened.
    #[error("object store unavailable")]
    Unavailable,
    /// The store asked us to slow down (503 SlowDown, 429).
    #[error("object store throttling")]
    Throttled,
    /// No answer in time: the operation may or may not have happened.
    #[error("object store operation timed out")]
    Timeout,
    /// An upload stopped part way: no object was created.
    #[error("upload interrupted")]
    Interrupted,
    /// The local segment bytes to upload could not be read.
    #[error("local segment read failed")]
    LocalReadFailed,
}

/// The answer to one [`TierEffect`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoreCompletion {
    /// Which operation.
    pub op: OpId,
    /// How it went.
    pub result: Result<StoreReply, StoreError>,
}

/// Tiered-storage settings of one partition (topic configs, named after Redpanda's and
/// Kafka's: `oxbow.remote.write`, `retention.local.target.*`, `retention.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierConfig {
    /// Upload the committed part of the active segment once its oldest un-uploaded data
    /// is this old (closed segments go at once).
    pub upload_lag: Duration,
    /// `retention.local.target.bytes`: keep at least this much locally… at most.
    pub local_target_bytes: Option<u64>,
    /// `retention.local.target.ms`.
    pub local_target_ms: Option<u64>,
    /// `retention.bytes`: total (remote) retention by size.
    pub retention_bytes: Option<u64>,
    /// `retention.ms`: total retention by age.
    pub retention_ms: Option<u64>,
    /// When the manifest holds more recent segments than this, the oldest spill over
    /// (once an orphan-GC listing has covered them; at twice this, regardless: the
    /// in-memory bound is `2 * spill_threshold_entries + 1` recent entries plus one
    /// reference per archive).
    pub spill_threshold_entries: usize,
    /// Segments per archived manifest.
    pub archive_entries: usize,
    /// First retry delay after a store error; doubles per attempt.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often retention and orphan GC run.
    pub housekeeping_interval: Duration,
    /// Most deletions queued at once (the rest wait for the next round).
    pub max_pending_deletes: usize,
    /// Most deletions in flight at once.
    pub max_deletes_in_flight: usize,
    /// Longest time after it was sent that a store request may still take effect (the
    /// client timeout plus the store's own deadline). A manifest put that timed out, or
    /// a previous leader's, may land that late: a new leader's first manifest put, the
    /// put after a timeout, and orphan GC all wait this long, so a late put can never
    /// roll the store's manifest back past one we rely on.
    pub store_request_lifetime: Duration,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            upload_lag: Duration::from_secs(5),
            local_target_bytes: None,
            local_target_ms: Some(24 * 3_600 * 1_000),
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3_600 * 1_000),
            spill_threshold_entries: 1_000,
            archive_entries: 500,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            housekeeping_interval: Duration::from_secs(30),
            max_pending_deletes: 4_096,
            max_deletes_in_flight: 16,
            store_request_lifetime: Duration::from_secs(30),
        }
    }
}

impl TierConfig {
    /// Checks the settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.archive_entries == 0 || self.spill_threshold_entries == 0 {
            return Err("spill_threshold_entries and archive_entries must be positive".into());
        }
        if self.archive_entries > self.spill_threshold_entries {
            return Err("archive_entries must not exceed spill_threshold_entries".into());
        }
        if self.max_pending_deletes < 2 * self.archive_entries + 1 {
            return Err(
                "max_pending_deletes must hold one archive's objects (2 * archive_entries + 1)".into(),
            );
        }
        if self.max_deletes_in_flight == 0
            || self.backoff_initial.is_zero()
            || self.housekeeping_interval.is_zero()
        {
            return Err(
                "max_deletes_in_flight, backoff_initial and housekeeping_interval must be positive".into(),
            );
        }
        Ok(())
    }
}
