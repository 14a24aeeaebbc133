//! Kafka record batch v2, kept as bytes.
//!
//! The log stores batches exactly as producers sent them (compressed or not); only the
//! two fields outside the CRC — the base offset and the partition leader epoch — are
//! rewritten on append. This module parses and validates the 61-byte header, checks
//! the CRC32C over the right range (attributes to the end), validates the framing of
//! uncompressed records, and maps every defect to the Kafka error a broker returns.
//!
//! Layout (big-endian):
//!
//! | offset | field                  | size |
//! |--------|------------------------|------|
//! | 0      | base offset            | 8    |
//! | 8      | batch length           | 4    | bytes after this field
//! | 12     | partition leader epoch | 4    |
//! | 16     | magic (= 2)            | 1    |
//! | 17     | crc (CRC32C)           | 4    | over bytes 21..end
//! | 21     | attributes             | 2    |
//! | 23     | last offset delta      | 4    |
//! | 27     | base timestamp         | 8    |
//! | 35     | max timestamp          | 8    |
//! | 43     | producer id            | 8    |
//! | 51     | producer epoch         | 2    |
//! | 53     | base sequence          | 4    |
//! | 57     | record count           | 4    |
//! | 61     | records                | …    |

use super::records::{validate_uncompressed_records, RecordsError};
use bytes::Bytes;

/// Size of the fixed batch header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before and including the batch-length field (not counted by it).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only record-batch format Oxbow stores.
pub const MAGIC_V2: i8 = 2;

const LENGTH_OFFSET: usize = 8;
const LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORD_COUNT_OFFSET: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Kafka error codes the log can return (a subset of the protocol's table).
pub mod kafka_error {
    /// The message's CRC or framing is broken.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// The batch is larger than the topic allows.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// The message format version is not supported.
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    /// A record in the batch is invalid.
    pub const INVALID_RECORD: i16 = 87;
    /// The offset asked for is outside the log.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// The storage layer failed.
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
}

/// Compression codec named by a batch's attributes. The log never decompresses;
/// every codec is stored exactly as sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// Why a batch was rejected. Each maps to the Kafka error code a broker returns.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than a header, or than the header's length field claims.
    #[error("record batch truncated: need {needed_bytes} bytes, have {available_bytes}")]
    Truncated {
        /// Bytes the batch needs.
        needed_bytes: usize,
        /// Bytes available.
        available_bytes: usize,
    },
    /// The length field is impossible (smaller than a header).
    #[error("record batch length {length} is invalid")]
    BadLength {
        /// The length field.
        length: i32,
    },
    /// Magic byte other than 2.
    #[error("record batch magic {magic} is not supported (only v2)")]
    UnsupportedMagic {
        /// The magic byte found.
        magic: i8,
    },
    /// CRC32C mismatch.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Compression codec 5–7.
    #[error("unknown compression codec {codec}")]
    UnknownCompression {
        /// The codec bits.
        codec: i16,
    },
    /// Record count not positive, or not equal to last offset delta + 1.
    #[error("record count {record_count} does not match last offset delta {last_offset_delta}")]
    BadRecordCount {
        /// The record count field.
        record_count: i32,
        /// The last offset delta field.
        last_offset_delta: i32,
    },
    /// An uncompressed record is malformed.
    #[error("invalid record: {0}")]
    BadRecord(#[from] RecordsError),
    /// The batch is larger than the configured maximum.
    #[error("record batch of {size_bytes} bytes exceeds the limit of {max_bytes}")]
    TooLarge {
        /// Batch size.
        size_bytes: usize,
        /// Limit.
        max_bytes: usize,
    },
}

impl BatchError {
    /// The Kafka error code for this defect.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            BatchError::Truncated { .. }
            | BatchError::BadLength { .. }
            | BatchError::CrcMismatch { .. }
            | BatchError::UnknownCompression { .. } => kafka_error::CORRUPT_MESSAGE,
            BatchError::UnsupportedMagic { .. } => kafka_error::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            BatchError::BadRecordCount { .. } | BatchError::BadRecord(_) => kafka_error::INVALID_RECORD,
            BatchError::TooLarge { .. } => kafka_error::MESSAGE_TOO_LARGE,
        }
    }
}

/// The decoded header of a record batch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BatchHeader {
    /// First offset of the batch.
    pub base_offset: i64,
    /// Bytes after the length field; the whole batch is `length + 12` bytes.
    pub length: i32,
    /// Partition leader epoch (the Raft term that wrote it).
    pub leader_epoch: i32,
    /// Magic byte.
    pub magic: i8,
    /// Stored CRC32C.
    pub crc: u32,
    /// Attributes bit field.
    pub attributes: i16,
    /// Offset of the last record relative to the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp_ms: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp_ms: i64,
    /// Producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

impl BatchHeader {
    /// Decodes the header at the start of `bytes` without checking the CRC. Fails if
    /// fewer than a header's bytes are present or the length field is impossible;
    /// `bytes` may hold less than the whole batch.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed_bytes: BATCH_HEADER_BYTES,
                available_bytes: bytes.len(),
            });
        }
        let length = be_i32(bytes, LENGTH_OFFSET);
        let min_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
        if length < min_length {
            return Err(BatchError::BadLength { length });
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, 0),
            length,
            leader_epoch: be_i32(bytes, LEADER_EPOCH_OFFSET),
            magic: bytes[MAGIC_OFFSET] as i8,
            crc: u32::from_be_bytes([
                bytes[CRC_OFFSET],
                bytes[CRC_OFFSET + 1],
                bytes[CRC_OFFSET + 2],
                bytes[CRC_OFFSET + 3],
            ]),
            attributes: be_i16(bytes, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(bytes, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp_ms: be_i64(bytes, BASE_TIMESTAMP_OFFSET),
            max_timestamp_ms: be_i64(bytes, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(bytes, PRODUCER_ID_OFFSET),
            producer_epoch: be_i16(bytes, PRODUCER_EPOCH_OFFSET),
            base_sequence: be_i32(bytes, BASE_SEQUENCE_OFFSET),
            record_count: be_i32(bytes, RECORD_COUNT_OFFSET),
        })
    }

    /// Total size of the batch in bytes, header included.
    pub fn size_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset that follows this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// The compression codec, or an error for codes 5–7.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        match self.attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(BatchError::UnknownCompression { codec }),
        }
    }

    /// Whether timestamps are log-append time (otherwise create time).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch is a control batch (transaction marker, Raft no-op or
    /// configuration). Consumers skip control batches.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Computes the CRC32C a batch must carry (over attributes to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(ATTRIBUTES_OFFSET..).unwrap_or(&[]))
}

/// Validates one whole batch that occupies exactly `bytes`: header, magic, CRC,
/// compression codec, record count, and the framing of uncompressed records.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.size_bytes() != bytes.len() {
        return Err(if header.size_bytes() > bytes.len() {
            BatchError::Truncated {
                needed_bytes: header.size_bytes(),
                available_bytes: bytes.len(),
            }
        } else {
            BatchError::BadLength {
                length: header.length,
            }
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic { magic: header.magic });
    }
    let computed = compute_crc(bytes);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    let compression = header.compression()?;
    if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::BadRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if compression == Compression::None {
        validate_uncompressed_records(&bytes[BATCH_HEADER_BYTES..], header.record_count)?;
    }
    Ok(header)
}

/// A batch that passed [`validate_batch`], with its header: proof, carried in the
/// type, that a log may append it without validating it again (a leader validates a
/// produced batch before proposing it, and appends the very same bytes).
#[derive(Clone, Debug)]
pub struct ValidatedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl ValidatedBatch {
    /// Validates `bytes` ([`validate_batch`]).
    pub fn new(bytes: Bytes) -> Result<ValidatedBatch, BatchError> {
        let header = validate_batch(&bytes)?;
        Ok(ValidatedBatch { bytes, header })
    }

    /// The batch.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Its header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch and its header.
    pub fn into_parts(self) -> (Bytes, BatchHeader) {
        (self.bytes, self.header)
    }

    /// Whether `other` is this batch: the same bytes in the same memory (`Bytes` never
    /// change, and this one keeps them alive).
    pub fn is(&self, other: &Bytes) -> bool {
        self.bytes.as_ptr() == other.as_ptr() && self.bytes.len() == other.len()
    }
}

/// Checks the parts of a stored batch that recovery and reads rely on: header, magic,
/// length within `bytes`, and CRC. Cheaper than [`validate_batch`] (no record walk).
pub fn check_stored_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic { magic: header.magic });
    }
    if header.size_bytes() > bytes.len() {
        return Err(BatchError::Truncated {
            needed_bytes: header.size_bytes(),
            available_bytes: bytes.len(),
        });
    }
    let whole = &bytes[..header.size_bytes()];
    let computed = compute_crc(whole);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::BadRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Overwrites the base offset of the batch at the start of `batch` (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(batch.len() >= BATCH_HEADER_BYTES, "not a batch header");
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch of the batch at the start of `batch`
/// (outside the CRC).
pub fn set_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    assert!(batch.len() >= BATCH_HEADER_BYTES, "not a batch header");
    batch[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Iterates the headers of whole, CRC-valid batches at the start of `bytes`, with each
/// batch's position; stops at the first incomplete or invalid batch.
pub fn iter_batches(bytes: &[u8]) -> BatchIter<'_> {
    BatchIter {
        bytes,
        position: 0,
        error: None,
    }
}

/// Iterator returned by [`iter_batches`].
#[derive(Debug)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    error: Option<BatchError>,
}

impl BatchIter<'_> {
    /// Byte position just past the last batch yielded.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Why iteration stopped early, if it did (`None` at a clean end of the bytes).
    pub fn error(&self) -> Option<&BatchError> {
        self.error.as_ref()
    }
}

impl Iterator for BatchIter<'_> {
    /// The batch's position in the bytes and its header.
    type Item = (usize, BatchHeader);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.position..];
        if rest.is_empty() || self.error.is_some() {
            return None;
        }
        match check_stored_batch(rest) {
            Ok(header) => {
                let at = self.position;
                self.position += header.size_bytes();
                Some((at, header))
            }
            Err(error) => {
                self.error = Some(error);
                None
            }
        }
    }
}
