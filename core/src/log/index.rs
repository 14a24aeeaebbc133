//! The sparse index of one segment, and its file format.
//!
//! One entry per `index.interval.bytes` of batches (and always one for the first
//! batch): the batch's offset relative to the segment base, its byte position, and the
//! largest timestamp seen in the segment up to and including that batch. The same
//! entries serve offset → position lookups for fetches and timestamp → offset lookups
//! for ListOffsets.
//!
//! File layout (big-endian): magic `OXIX`, version u16, base offset i64, term i64,
//! segment size u64, next offset i64, max timestamp i64, entry count u32, entries
//! (u32 relative offset, u32 position, i64 max timestamp), CRC32C of everything before.
//! An index file is advisory: damaged or inconsistent ones are rebuilt by a scan.

use super::batch::BatchHeader;
use super::io::SegmentId;
use bytes::Bytes;

const MAGIC: &[u8; 4] = b"OXIX";
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 8 + 8 + 4;
const ENTRY_BYTES: usize = 16;

/// One sparse index entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IndexEntry {
    /// Batch base offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment.
    pub position: u32,
    /// Largest timestamp in the segment up to and including this batch.
    pub max_timestamp_ms: i64,
}

/// The in-memory sparse index of a segment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SparseIndex {
    base_offset: i64,
    entries: Vec<IndexEntry>,
    bytes_since_entry: u64,
}

/// Why an index file was not usable.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Wrong magic, version, or size.
    #[error("not an index file of this version")]
    BadFormat,
    /// Checksum mismatch.
    #[error("index checksum mismatch")]
    BadChecksum,
    /// Names another segment, or entries out of order or beyond the segment.
    #[error("index inconsistent with its segment: {0}")]
    Inconsistent(&'static str),
}

/// What an index file says about its closed segment, beyond the entries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IndexFile {
    /// The entries.
    pub index: SparseIndex,
    /// Logical size of the segment when the index was written.
    pub segment_size_bytes: u64,
    /// Offset after the segment's last batch.
    pub next_offset: i64,
    /// Largest timestamp in the segment, -1 if none.
    pub max_timestamp_ms: i64,
}

impl SparseIndex {
    /// An empty index for a segment starting at `base_offset`.
    pub fn new(base_offset: i64) -> Self {
        SparseIndex {
            base_offset,
            entries: Vec::new(),
            bytes_since_entry: 0,
        }
    }

    /// The entries, in offset order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Records a batch appended at `position`; adds an entry when the interval is due.
    /// `max_timestamp_ms` is the segment's running maximum including this batch.
    pub fn on_append(
        &mut self,
        header: &BatchHeader,
        position: u64,
        max_timestamp_ms: i64,
        interval_bytes: u64,
    ) {
        let relative = header.base_offset - self.base_offset;
        assert!(
            relative >= 0 && relative <= i64::from(u32::MAX),
            "offset outside segment"
        );
        assert!(position <= u64::from(u32::MAX), "position beyond 4 GiB");
        if self.entries.is_empty() || self.bytes_since_entry >= interval_bytes {
            self.entries.push(IndexEntry {
                relative_offset: relative as u32,
                position: position as u32,
                max_timestamp_ms,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += header.size_bytes() as u64;
    }

    /// Drops entries at or after `position` (after a suffix truncation).
    pub fn truncate_at_position(&mut self, position: u64) {
        self.entries.retain(|e| u64::from(e.position) < position);
        self.bytes_since_entry = u64::MAX; // index the next batch
    }

    /// The entry with the largest offset not above `offset`, and the position of the
    /// following entry (an upper bound for where the batch holding `offset` starts).
    pub fn lookup_offset(&self, offset: i64) -> Option<(IndexEntry, Option<u32>)> {
        let relative = offset - self.base_offset;
        let after = self
            .entries
            .partition_point(|e| i64::from(e.relative_offset) <= relative);
        let entry = *self.entries.get(after.checked_sub(1)?)?;
        Some((entry, self.entries.get(after).map(|e| e.position)))
    }

    /// Byte range `[start, end)` where the first batch with a timestamp ≥ `timestamp_ms`
    /// must start, `end` being `None` for "to the end of the segment".
    pub fn lookup_timestamp(&self, timestamp_ms: i64) -> (u32, Option<u32>) {
        let first_reaching = self
            .entries
            .partition_point(|e| e.max_timestamp_ms < timestamp_ms);
        let start = first_reaching
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map_or(0, |e| e.position);
        let end = self.entries.get(first_reaching + 1).map(|e| e.position);
        (start, end)
    }

    /// Encodes the index of a closed segment.
    pub fn encode(
        &self,
        segment: SegmentId,
        segment_size_bytes: u64,
        next_offset: i64,
        max_timestamp_ms: i64,
    ) -> Bytes {
        assert_eq!(segment.base_offset, self.base_offset);
        let mut out = Vec::with_capacity(HEADER_BYTES + self.entries.len() * ENTRY_BYTES + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&segment.base_offset.to_be_bytes());
        out.extend_from_slice(&segment.term.to_be_bytes());
        out.extend_from_slice(&segment_size_bytes.to_be_bytes());
        out.extend_from_slice(&next_offset.to_be_bytes());
        out.extend_from_slice(&max_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
            out.extend_from_slice(&e.max_timestamp_ms.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    /// Decodes an index file and checks it against its segment file's length.
    pub fn decode(segment: SegmentId, bytes: &[u8], file_len_bytes: u64) -> Result<IndexFile, IndexError> {
        if bytes.len() < HEADER_BYTES + 4 || &bytes[..4] != MAGIC {
            return Err(IndexError::BadFormat);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(IndexError::BadChecksum);
        }
        let mut reader = Reader { bytes: body, at: 4 };
        if reader.u16() != VERSION {
            return Err(IndexError::BadFormat);
        }
        let base_offset = reader.i64();
        let term = reader.i64();
        if base_offset != segment.base_offset || term != segment.term {
            return Err(IndexError::Inconsistent("names another segment"));
        }
        let segment_size_bytes = reader.u64();
        let next_offset = reader.i64();
        let max_timestamp_ms = reader.i64();
        let count = reader.u32() as usize;
        if body.len() != HEADER_BYTES + count * ENTRY_BYTES {
            return Err(IndexError::BadFormat);
        }
        if segment_size_bytes > file_len_bytes || next_offset <= base_offset {
            return Err(IndexError::Inconsistent("segment size or next offset"));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let entry = IndexEntry {
                relative_offset: reader.u32(),
                position: reader.u32(),
                max_timestamp_ms: reader.i64(),
            };
            if let Some(prev) = entries.last() {
                let prev: &IndexEntry = prev;
                if entry.relative_offset <= prev.relative_offset || entry.position <= prev.position {
                    return Err(IndexError::Inconsistent("entries out of order"));
                }
            } else if entry.relative_offset != 0 || entry.position != 0 {
                return Err(IndexError::Inconsistent("first entry is not the first batch"));
            }
            if u64::from(entry.position) >= segment_size_bytes
                || base_offset + i64::from(entry.relative_offset) >= next_offset
            {
                return Err(IndexError::Inconsistent("entry beyond the segment"));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(IndexError::Inconsistent("no entries"));
        }
        Ok(IndexFile {
            index: SparseIndex {
                base_offset,
                entries,
                bytes_since_entry: u64::MAX,
            },
            segment_size_bytes,
            next_offset,
            max_timestamp_ms,
        })
    }
}

/// Reads fixed-width big-endian fields; callers have checked the length.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut raw = [0u8; N];
        raw.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        raw
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take())
    }
}
