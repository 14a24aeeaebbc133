//! What the log knows about one segment without reading it: its name, logical size,
//! offsets, newest timestamp, sparse index, and how much of it is durable.

use super::batch::BatchHeader;
use super::index::SparseIndex;
use super::io::SegmentId;
use crate::time::Instant;

/// The in-memory state of one segment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Segment {
    /// Name (base offset and term).
    pub id: SegmentId,
    /// Logical size: bytes of whole batches.
    pub size_bytes: u64,
    /// Offset after the last batch (the base offset while empty).
    pub next_offset: i64,
    /// Largest batch max-timestamp, -1 while empty.
    pub max_timestamp_ms: i64,
    /// Sparse index.
    pub index: SparseIndex,
    /// When the first batch was appended in this process (for `segment.ms`);
    /// `None` for segments recovered from disk, which roll on size only until the
    /// next append sets it.
    pub first_append_at: Option<Instant>,
}

impl Segment {
    /// A new, empty segment.
    pub fn new(id: SegmentId) -> Self {
        Segment {
            id,
            size_bytes: 0,
            next_offset: id.base_offset,
            max_timestamp_ms: -1,
            index: SparseIndex::new(id.base_offset),
            first_append_at: None,
        }
    }

    /// Records a batch appended at the end.
    pub fn on_append(&mut self, header: &BatchHeader, interval_bytes: u64) {
        assert_eq!(header.base_offset, self.next_offset, "appends are contiguous");
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
        self.index
            .on_append(header, self.size_bytes, self.max_timestamp_ms, interval_bytes);
        self.size_bytes += header.size_bytes() as u64;
        self.next_offset = header.next_offset();
    }

    /// Whether the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Last offset in the segment (base - 1 when empty).
    pub fn last_offset(&self) -> i64 {
        self.next_offset - 1
    }
}
