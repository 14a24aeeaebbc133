//! Turning bytes read from segment files into answers: the whole batches a fetch
//! returns, and the offset a timestamp lookup finds. Pure functions over bytes the
//! runtime read according to a plan from [`super::Log`].

use super::batch::{check_stored_batch, BatchHeader, BATCH_HEADER_BYTES};
use super::records::parse_uncompressed_records;
use super::Compression;
use bytes::{Bytes, BytesMut};

/// Stored bytes that should be whole batches are not.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("corrupt batch at byte {position} of the read: {reason}")]
pub struct CorruptRead {
    /// Position of the bad batch within the bytes handed in.
    pub position: usize,
    /// What is wrong.
    pub reason: String,
}

/// Keeps the whole batches of `chunks` (the bytes of a [`super::ReadPlan`]'s ranges,
/// in order) that hold offsets ≥ `from_offset` and ≤ `max_offset`, up to `max_bytes`
/// (the first batch is kept whole even when larger). Batches may start before
/// `from_offset`: the one holding it is returned whole, as Kafka does; clients skip
/// records below the offset they asked for.
///
/// The batches kept from one chunk are contiguous in it, so when they all come from one
/// chunk (a read within one segment) the answer is a slice of it, not a copy.
///
/// Every batch returned has been checked whole (magic, length, CRC): bytes read from a
/// segment are served only once their CRC matches, so damage on disk is a
/// [`CorruptRead`] (Kafka's CORRUPT_MESSAGE), never garbage to a client. Batches read
/// but not returned (before `from_offset`, past `max_bytes`) are only framed: their
/// headers must parse and follow each other, their CRC is not computed, so damage there
/// is reported by the read that would return it.
pub fn trim_fetched(
    chunks: &[Bytes],
    from_offset: i64,
    max_offset: i64,
    max_bytes: u64,
) -> Result<Bytes, CorruptRead> {
    let mut kept = Kept::default();
    let corrupt = |position: usize, reason: String| CorruptRead { position, reason };
    for (index, chunk) in chunks.iter().enumerate() {
        let mut at = 0;
        // A chunk is one range of one segment: its batches share the segment's term and
        // follow each other offset by offset. Base offset, length and leader epoch sit
        // outside the CRC, so these checks are what catches rot in them.
        let mut previous: Option<BatchHeader> = None;
        while at < chunk.len() {
            let rest = &chunk[at..];
            let header = match BatchHeader::parse(rest) {
                Ok(header) => header,
                // A partial header at the end of a range.
                Err(_) if rest.len() < BATCH_HEADER_BYTES => break,
                Err(error) => return Err(corrupt(at, error.to_string())),
            };
            if let Some(prev) = previous {
                if header.base_offset != prev.next_offset() || header.leader_epoch != prev.leader_epoch {
                    let reason = format!(
                        "batch at offset {} epoch {} follows one ending at {} in epoch {}",
                        header.base_offset,
                        header.leader_epoch,
                        prev.last_offset(),
                        prev.leader_epoch
                    );
                    return Err(corrupt(at, reason));
                }
            }
            if header.base_offset > max_offset || (header.last_offset() > max_offset) {
                return Ok(kept.into_bytes(chunks));
            }
            if header.size_bytes() > rest.len() {
                break; // the range ended inside this batch
            }
            if header.last_offset() >= from_offset {
                if kept.len_bytes > 0 && (kept.len_bytes + header.size_bytes()) as u64 > max_bytes {
                    return Ok(kept.into_bytes(chunks));
                }
                // Only a batch that is returned has its CRC checked: the ones read
                // around it are framed (length, offsets, epoch) but not served.
                if let Err(error) = check_stored_batch(rest) {
                    return Err(corrupt(at, error.to_string()));
                }
                kept.push(index, at, header.size_bytes());
            }
            at += header.size_bytes();
            previous = Some(header);
        }
    }
    Ok(kept.into_bytes(chunks))
}

/// The byte ranges [`trim_fetched`] keeps: per chunk, one contiguous range.
#[derive(Default)]
struct Kept {
    /// (chunk index, start, end) in chunk order.
    ranges: Vec<(usize, usize, usize)>,
    len_bytes: usize,
}

impl Kept {
    /// Keeps `len` bytes at `at` of chunk `index` (right after what it kept there).
    fn push(&mut self, index: usize, at: usize, len: usize) {
        self.len_bytes += len;
        match self.ranges.last_mut() {
            Some((last, _, end)) if *last == index => {
                assert_eq!(*end, at, "trim_fetched keeps contiguous batches of a chunk");
                *end = at + len;
            }
            _ => self.ranges.push((index, at, at + len)),
        }
    }

    /// One slice of its chunk when everything kept comes from one chunk; else a copy.
    fn into_bytes(self, chunks: &[Bytes]) -> Bytes {
        match self.ranges.as_slice() {
            [] => Bytes::new(),
            [(index, start, end)] => chunks[*index].slice(*start..*end),
            ranges => {
                let mut out = BytesMut::with_capacity(self.len_bytes);
                for (index, start, end) in ranges {
                    out.extend_from_slice(&chunks[*index][*start..*end]);
                }
                out.freeze()
            }
        }
    }
}

/// Finds the first offset (≥ `min_offset`) whose record timestamp is ≥ `timestamp_ms`
/// in `bytes` (the range of [`super::Log::timestamp_plan`]). In compressed batches,
/// which the log does not open, the batch's first offset is returned.
pub fn find_offset_for_timestamp(
    bytes: &Bytes,
    timestamp_ms: i64,
    min_offset: i64,
) -> Result<Option<i64>, CorruptRead> {
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let header = match check_stored_batch(rest) {
            Ok(header) => header,
            Err(_) if BatchHeader::parse(rest).is_ok_and(|h| h.size_bytes() > rest.len()) => break,
            Err(_) if rest.len() < BATCH_HEADER_BYTES => break,
            Err(error) => {
                return Err(CorruptRead {
                    position: at,
                    reason: error.to_string(),
                })
            }
        };
        if header.max_timestamp_ms >= timestamp_ms && header.last_offset() >= min_offset {
            let exact = exact_record_offset(bytes, at, &header, timestamp_ms, min_offset);
            return Ok(Some(exact.unwrap_or(header.base_offset.max(min_offset))));
        }
        at += header.size_bytes();
    }
    Ok(None)
}

fn exact_record_offset(
    bytes: &Bytes,
    at: usize,
    header: &BatchHeader,
    timestamp_ms: i64,
    min_offset: i64,
) -> Option<i64> {
    if header.compression().ok()? != Compression::None || header.is_log_append_time() {
        return None;
    }
    let records = bytes.slice(at + BATCH_HEADER_BYTES..at + header.size_bytes());
    let records = parse_uncompressed_records(&records, header.record_count).ok()?;
    records
        .iter()
        .map(|r| {
            (
                header.base_offset + r.offset_delta,
                header.base_timestamp_ms + r.timestamp_delta_ms,
            )
        })
        .find(|(offset, ts)| *ts >= timestamp_ms && *offset >= min_offset)
        .map(|(offset, _)| offset)
}
