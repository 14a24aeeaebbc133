//! The log's side of the sans-IO door: the disk effects it asks for and the completions
//! it is told of.
//!
//! # Contract with a disk backend (runtime-real's direct-I/O files, runtime-sim's disk)
//!
//! * Effects of one log are executed **in the order they were emitted, each after the
//!   previous one has completed** (a backend may batch the syncs of many logs, but
//!   never reorders one log's effects). A [`LogEffect::Sync`] covers every
//!   [`LogEffect::Write`] emitted before it, to any of the segments it names.
//! * Writes are sequential appends per segment: each `Write` starts where the previous
//!   one to that segment ended, or where a [`LogEffect::TruncateSegment`] left the file.
//! * Each effect carries the log's `generation`. After a failure the log starts a new
//!   generation, and completions of an older generation are ignored, so a backend may
//!   simply keep executing what it had queued.
//! * A backend reports every sync ([`LogCompletion::Synced`]) and every failure
//!   ([`LogCompletion::Failed`]); successful writes may be reported
//!   ([`LogCompletion::Written`]) so `acks=1` can answer before the fsync.
//! * Index and checkpoint files are advisory: they are protected by checksums and are
//!   rebuilt or ignored when damaged, so they need no ordering with data syncs.

use super::batch::{set_base_offset, set_leader_epoch, BATCH_HEADER_BYTES};
use bytes::{Bytes, BytesMut};
use std::fmt;

/// A batch as the log writes it: its header as the log stamped it (base offset and
/// leader epoch assigned on append), then the rest of the batch exactly as it arrived.
/// Only the header is copied: the rest stays a slice of the producer's request (the CRC
/// does not cover the two stamped fields), so a large batch is not copied, nor its
/// copy's memory faulted in, on its way to the disk's staging buffers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StampedBatch {
    /// The batch header ([`BATCH_HEADER_BYTES`]), stamped.
    pub header: Bytes,
    /// The rest of the batch (its records), shared with the batch appended.
    pub records: Bytes,
}

impl StampedBatch {
    /// `batch` (validated: at least a header long) with
    /// `base_offset` and `leader_epoch` stamped into a copy of its header.
    pub(crate) fn stamp(batch: &Bytes, base_offset: i64, leader_epoch: i32) -> StampedBatch {
        let split = BATCH_HEADER_BYTES.min(batch.len());
        let mut header = BytesMut::from(&batch[..split]);
        set_base_offset(&mut header, base_offset);
        set_leader_epoch(&mut header, leader_epoch);
        StampedBatch {
            header: header.freeze(),
            records: batch.slice(split..),
        }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.header.len() + self.records.len()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch in one buffer (a copy), for backends that keep files in memory.
    pub fn to_bytes(&self) -> Bytes {
        let mut joined = BytesMut::with_capacity(self.len());
        joined.extend_from_slice(&self.header);
        joined.extend_from_slice(&self.records);
        joined.freeze()
    }
}

/// Names one segment of a partition: its base offset and the Raft term (Kafka leader
/// epoch) of its first batch. A segment never holds batches of two terms: a term change
/// rolls a new segment, so segment names are also the log's term boundaries.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SegmentId {
    /// Offset of the first batch in the segment.
    pub base_offset: i64,
    /// Term of every batch in the segment.
    pub term: i64,
}

/// Suffix of segment data files.
pub const SEGMENT_SUFFIX: &str = "-v1.log";
/// Suffix of sparse index files.
pub const INDEX_SUFFIX: &str = "-v1.index";
/// Name of a partition's checkpoint file.
pub const CHECKPOINT_FILE_NAME: &str = "checkpoint";
/// Name of a partition's producer-state snapshot (see [`crate::txn::snapshot`]).
pub const PRODUCER_STATE_FILE_NAME: &str = "producer_state";
/// The small state files of the partition's state machines that a backend keeps
/// beside the segments ([`LogEffect::WriteStateFile`]) and hands to recovery
/// ([`super::RecoveryInput::state_files`]).
pub const STATE_FILE_NAMES: &[&str] = &[PRODUCER_STATE_FILE_NAME, TIER_STATE_FILE_NAME];
/// Name of a partition's tiered-storage state: the object-store prefix a partition
/// recovered from the store continues in (`broker/partitions/tier_host.rs`).
pub const TIER_STATE_FILE_NAME: &str = "tier_state";
/// Suffix of the temporary file a state file or checkpoint is written to before the
/// rename that replaces the real one.
pub const TMP_SUFFIX: &str = ".tmp";

impl SegmentId {
    /// The data file name: `<base-offset>-<term>-v1.log`.
    pub fn file_name(&self) -> String {
        format!("{}-{}{}", self.base_offset, self.term, SEGMENT_SUFFIX)
    }

    /// The index file name: `<base-offset>-<term>-v1.index`.
    pub fn index_file_name(&self) -> String {
        format!("{}-{}{}", self.base_offset, self.term, INDEX_SUFFIX)
    }

    /// Parses a data file name; `None` for any other file.
    pub fn parse_file_name(name: &str) -> Option<SegmentId> {
        Self::parse_with_suffix(name, SEGMENT_SUFFIX)
    }

    /// Parses an index file name; `None` for any other file.
    pub fn parse_index_file_name(name: &str) -> Option<SegmentId> {
        Self::parse_with_suffix(name, INDEX_SUFFIX)
    }

    fn parse_with_suffix(name: &str, suffix: &str) -> Option<SegmentId> {
        let stem = name.strip_suffix(suffix)?;
        let (base, term) = stem.split_once('-')?;
        let base_offset: i64 = base.parse().ok()?;
        let term: i64 = term.parse().ok()?;
        if base_offset < 0 || term < 0 {
            return None;
        }
        // Reject non-canonical spellings ("007-1") so one segment has one name.
        let id = SegmentId { base_offset, term };
        (id.file_name().strip_suffix(SEGMENT_SUFFIX) == Some(stem)).then_some(id)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.base_offset, self.term)
    }
}

/// The directory of one partition replica, relative to the data directory:
/// `kafka/<topic>/<partition>_<revision>`.
pub fn partition_dir(topic: &str, partition: i32, revision: i64) -> String {
    format!("kafka/{topic}/{partition}_{revision}")
}

/// A disk operation the log asks its backend to perform.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LogEffect {
    /// Create an empty segment file and reserve `preallocate_bytes` for it (a sparse
    /// reservation; the file's logical content is still empty).
    CreateSegment {
        /// Generation of the log that asked.
        generation: u64,
        /// The new segment.
        segment: SegmentId,
        /// Space to reserve up front (`fallocate`).
        preallocate_bytes: u64,
    },
    /// Append `data` to `segment` at byte `position` (always the segment's current end).
    Write {
        /// Generation of the log that asked.
        generation: u64,
        /// Target segment.
        segment: SegmentId,
        /// Byte position in the segment file.
        position: u64,
        /// One whole record batch.
        data: StampedBatch,
        /// Last offset contained in `data`.
        last_offset: i64,
    },
    /// Make every write emitted so far to `segments` durable (`fdatasync` each).
    Sync {
        /// Generation of the log that asked.
        generation: u64,
        /// Identifies this sync in its completion.
        sync_id: u64,
        /// Segments with writes not yet covered by a sync.
        segments: Vec<SegmentId>,
    },
    /// Cut `segment` to `len_bytes` and make the cut durable.
    TruncateSegment {
        /// Generation of the log that asked.
        generation: u64,
        /// Target segment.
        segment: SegmentId,
        /// New length.
        len_bytes: u64,
    },
    /// Delete the segment's data and index files.
    DeleteSegment {
        /// Generation of the log that asked.
        generation: u64,
        /// Segment to delete.
        segment: SegmentId,
    },
    /// Replace the segment's index file with `data` (see [`super::index`]).
    WriteIndex {
        /// Generation of the log that asked.
        generation: u64,
        /// Segment the index describes.
        segment: SegmentId,
        /// Encoded index.
        data: Bytes,
    },
    /// Replace the partition's checkpoint file with `data` (see [`super::checkpoint`]),
    /// durably, then report [`LogCompletion::CheckpointWritten`].
    WriteCheckpoint {
        /// Generation of the log that asked.
        generation: u64,
        /// Identifies this write in its completion.
        checkpoint_id: u64,
        /// Encoded checkpoint.
        data: Bytes,
    },
    /// Replace the partition's state file `name` (one of [`STATE_FILE_NAMES`]) with
    /// `data`, atomically (the old or the new content, never a mix) and durably. The
    /// file is advisory — a snapshot of state the log implies, checksummed by its owner
    /// — so no completion is reported and a failure is only logged: recovery then reads
    /// more of the log.
    WriteStateFile {
        /// Generation of the log that asked.
        generation: u64,
        /// File name inside the partition directory.
        name: &'static str,
        /// The new content.
        data: Bytes,
    },
    /// Replace the whole log by an empty one that starts at `start_offset`
    /// ([`super::Log::reset_to`], a follower installing a snapshot past its log), then
    /// report [`LogCompletion::Synced`] with `sync_id`. Crash-safe order: first replace
    /// the checkpoint with `checkpoint` durably (it carries the reset marker, see
    /// [`super::checkpoint::Checkpoint::reset_marker`]), then delete each of `segments`
    /// (data and index files) from the last to the first, then make the deletions
    /// durable (directory sync). A crash before the checkpoint lands leaves the old
    /// log; after it, recovery drops whatever old segments are left.
    ResetLog {
        /// Generation of the log that asked (the new one).
        generation: u64,
        /// Identifies the reset in its [`LogCompletion::Synced`].
        sync_id: u64,
        /// Segments of the old log, oldest first.
        segments: Vec<SegmentId>,
        /// Encoded marker checkpoint.
        checkpoint: Bytes,
    },
    /// Read `len_bytes` at `position` of `segment` and hand them back as
    /// [`LogCompletion::Read`]; the log needs them to find an exact batch boundary.
    Read {
        /// Generation of the log that asked.
        generation: u64,
        /// Identifies this read in its completion.
        read_id: u64,
        /// The range to read.
        range: FileRange,
    },
}

impl LogEffect {
    /// The generation of the log that emitted this effect.
    pub fn generation(&self) -> u64 {
        match self {
            LogEffect::CreateSegment { generation, .. }
            | LogEffect::Write { generation, .. }
            | LogEffect::Sync { generation, .. }
            | LogEffect::TruncateSegment { generation, .. }
            | LogEffect::DeleteSegment { generation, .. }
            | LogEffect::WriteIndex { generation, .. }
            | LogEffect::WriteCheckpoint { generation, .. }
            | LogEffect::WriteStateFile { generation, .. }
            | LogEffect::ResetLog { generation, .. }
            | LogEffect::Read { generation, .. } => *generation,
        }
    }
}

/// A byte range of one segment file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileRange {
    /// The segment file.
    pub segment: SegmentId,
    /// First byte.
    pub position: u64,
    /// Number of bytes.
    pub len_bytes: u64,
}

/// Why a disk operation failed, as the log needs to know it.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// The device is full (ENOSPC) or the quota is exhausted (EDQUOT).
    #[error("no space left on the device")]
    NoSpace,
    /// Any other I/O error, with the backend's description.
    #[error("I/O error: {0}")]
    Io(String),
}

/// The outcome of an effect, reported back to the log.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LogCompletion {
    /// Every write up to `last_offset` has reached the file (not necessarily durable).
    Written {
        /// Generation of the effect.
        generation: u64,
        /// Last offset written.
        last_offset: i64,
    },
    /// The sync `sync_id` finished: everything written before it is durable.
    Synced {
        /// Generation of the effect.
        generation: u64,
        /// The sync's id.
        sync_id: u64,
    },
    /// The checkpoint write `checkpoint_id` is durable.
    CheckpointWritten {
        /// Generation of the effect.
        generation: u64,
        /// The write's id.
        checkpoint_id: u64,
    },
    /// The bytes asked for by read `read_id` (shorter than asked at end of file).
    Read {
        /// Generation of the effect.
        generation: u64,
        /// The read's id.
        read_id: u64,
        /// The bytes read.
        data: Bytes,
    },
    /// A data write, sync, truncation or creation failed. Everything not yet durable is
    /// lost; the log falls back to its durable prefix and starts a new generation.
    Failed {
        /// Generation of the effect.
        generation: u64,
        /// What went wrong.
        error: DiskError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let id = SegmentId {
            base_offset: 1200,
            term: 7,
        };
        assert_eq!(id.file_name(), "1200-7-v1.log");
        assert_eq!(id.index_file_name(), "1200-7-v1.index");
        assert_eq!(SegmentId::parse_file_name("1200-7-v1.log"), Some(id));
        assert_eq!(SegmentId::parse_index_file_name("1200-7-v1.index"), Some(id));
        for bad in [
            "1200-7-v2.log",
            "x-7-v1.log",
            "1200-v1.log",
            "-1-2-v1.log",
            "01-2-v1.log",
            "1-2-v1.index",
        ] {
            assert_eq!(SegmentId::parse_file_name(bad), None, "{bad}");
        }
        assert_eq!(partition_dir("orders", 3, 12), "kafka/orders/3_12");
    }

    #[test]
    fn a_stamped_batch_copies_only_its_header() {
        use crate::log::batch::validate_batch;
        use crate::log::builder::{build_batch, BatchOptions, NewRecord};
        let records: Vec<NewRecord> = (0..50)
            .map(|i| NewRecord {
                key: None,
                value: Some(vec![b'x'; 100 + i]),
                timestamp_ms: 1,
                headers: Vec::new(),
            })
            .collect();
        let batch = build_batch(&records, BatchOptions::default());
        let stamped = StampedBatch::stamp(&batch, 4_000, 9);
        assert_eq!(stamped.len(), batch.len());
        assert_eq!(stamped.header.len(), BATCH_HEADER_BYTES);
        // The records are the appended batch's own bytes, not a copy.
        assert_eq!(stamped.records.as_ptr(), batch[BATCH_HEADER_BYTES..].as_ptr());
        let joined = stamped.to_bytes();
        let header = validate_batch(&joined).expect("still a valid batch (CRC intact)");
        assert_eq!((header.base_offset, header.leader_epoch), (4_000, 9));
        assert_eq!(joined[BATCH_HEADER_BYTES..], batch[BATCH_HEADER_BYTES..]);
        assert_eq!(joined[8..12], batch[8..12], "the length is kept");
    }
}
