//! Producer-state snapshots: a [`ProducerStateTable`] as checksummed, versioned bytes,
//! so a replica recovers its producer state from the newest snapshot plus the log
//! suffix after it, never by replaying the whole log.
//!
//! Encoding (big-endian): magic `OXPS`, version u16, `next_offset` i64 (every batch
//! below it is in the snapshot), producer count u32, then per producer: id i64, epoch
//! i16, last timestamp i64, last offset i64, open-transaction first offset i64 (-1:
//! none), batch count u8 and per batch first sequence i32, last sequence i32, base
//! offset i64, last offset i64; then (version 2) the aborted-transaction count u32 and
//! per aborted transaction producer id i64, first offset i64, marker offset i64; a
//! trailing CRC32C over everything before it (version 1, without the aborted
//! transactions, is still read). A damaged
//! or unknown snapshot decodes to an error and is ignored by recovery, which then reads
//! more of the log.

use super::producer_state::{
    AbortedTxn, ProducerEntry, ProducerStateTable, SeqRange, MAX_BATCHES_PER_PRODUCER,
};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

const MAGIC: &[u8; 4] = b"OXPS";
const VERSION: u16 = 2;
const HEADER_BYTES: usize = 4 + 2 + 8 + 4;
const CRC_BYTES: usize = 4;

/// Why snapshot bytes were refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Not a snapshot, truncated, or its checksum does not match.
    #[error("producer-state snapshot is damaged: {0}")]
    Damaged(&'static str),
    /// A format version this build does not read.
    #[error("producer-state snapshot version {0} is not supported")]
    UnknownVersion(u16),
}

/// Encodes `table` with a trailing CRC32C.
pub fn encode(table: &ProducerStateTable) -> Bytes {
    let mut out = Vec::with_capacity(HEADER_BYTES + table.len() * 80 + CRC_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&table.next_offset().to_be_bytes());
    out.extend_from_slice(&(table.len() as u32).to_be_bytes());
    for (id, entry) in table.producers() {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&entry.epoch.to_be_bytes());
        out.extend_from_slice(&entry.last_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&entry.last_offset.to_be_bytes());
        out.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
        assert!(
            entry.batches.len() <= MAX_BATCHES_PER_PRODUCER,
            "bounded batch window"
        );
        out.push(entry.batches.len() as u8);
        for batch in &entry.batches {
            out.extend_from_slice(&batch.first_seq.to_be_bytes());
            out.extend_from_slice(&batch.last_seq.to_be_bytes());
            out.extend_from_slice(&batch.base_offset.to_be_bytes());
            out.extend_from_slice(&batch.last_offset.to_be_bytes());
        }
    }
    let aborted: Vec<&AbortedTxn> = table.aborted().collect();
    out.extend_from_slice(&(aborted.len() as u32).to_be_bytes());
    for a in aborted {
        out.extend_from_slice(&a.producer_id.to_be_bytes());
        out.extend_from_slice(&a.first_offset.to_be_bytes());
        out.extend_from_slice(&a.last_offset.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let slice = self
            .bytes
            .get(self.at..self.at.saturating_add(N))
            .ok_or(SnapshotError::Damaged("truncated"))?;
        let mut raw = [0u8; N];
        raw.copy_from_slice(slice);
        self.at += N;
        Ok(raw)
    }
    fn i16(&mut self) -> Result<i16, SnapshotError> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, SnapshotError> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        self.take().map(i64::from_be_bytes)
    }
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<ProducerStateTable, SnapshotError> {
    if bytes.len() < HEADER_BYTES + CRC_BYTES || &bytes[..4] != MAGIC {
        return Err(SnapshotError::Damaged("not a producer-state snapshot"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(SnapshotError::Damaged("checksum mismatch"));
    }
    let mut r = Reader { bytes: body, at: 4 };
    let version = u16::from_be_bytes(r.take()?);
    if version != VERSION && version != 1 {
        return Err(SnapshotError::UnknownVersion(version));
    }
    let next_offset = r.i64()?;
    let count = u32::from_be_bytes(r.take()?);
    let mut producers = BTreeMap::new();
    for _ in 0..count {
        let id = r.i64()?;
        let epoch = r.i16()?;
        let last_timestamp_ms = r.i64()?;
        let last_offset = r.i64()?;
        let txn_first_offset = Some(r.i64()?).filter(|o| *o >= 0);
        let [batch_count] = r.take::<1>()?;
        if usize::from(batch_count) > MAX_BATCHES_PER_PRODUCER {
            return Err(SnapshotError::Damaged("too many batches for a producer"));
        }
        let mut batches = VecDeque::with_capacity(usize::from(batch_count));
        for _ in 0..batch_count {
            batches.push_back(SeqRange {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                base_offset: r.i64()?,
                last_offset: r.i64()?,
            });
        }
        if id < 0 || last_offset >= next_offset {
            return Err(SnapshotError::Damaged("a producer outside the snapshot"));
        }
        let entry = ProducerEntry {
            epoch,
            batches,
            last_timestamp_ms,
            last_offset,
            txn_first_offset,
        };
        if producers.insert(id, entry).is_some() {
            return Err(SnapshotError::Damaged("a producer listed twice"));
        }
    }
    let mut aborted = Vec::new();
    if version >= 2 {
        let count = u32::from_be_bytes(r.take()?);
        for _ in 0..count {
            let a = AbortedTxn {
                producer_id: r.i64()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
            };
            if a.last_offset >= next_offset || a.first_offset > a.last_offset {
                return Err(SnapshotError::Damaged(
                    "an aborted transaction outside the snapshot",
                ));
            }
            aborted.push(a);
        }
    }
    if r.at != body.len() {
        return Err(SnapshotError::Damaged("trailing bytes"));
    }
    Ok(ProducerStateTable::from_entries(next_offset, producers, aborted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::producer_state::BatchMeta;
    use proptest::prelude::*;

    fn table(batches: &[(i64, i16, i32, i32)]) -> ProducerStateTable {
        let mut t = ProducerStateTable::new(10);
        for (pid, epoch, seq, count) in batches {
            let base = t.next_offset();
            t.apply(
                &BatchMeta {
                    producer_id: *pid,
                    producer_epoch: *epoch,
                    first_seq: *seq,
                    last_seq: seq + count - 1,
                    base_offset: base,
                    last_offset: base + i64::from(*count) - 1,
                    max_timestamp_ms: base * 7,
                    transactional: *pid % 3 == 0,
                    control: false,
                    abort_marker: false,
                },
                1_000,
            );
        }
        t
    }

    proptest! {
        #[test]
        fn snapshots_round_trip(batches in proptest::collection::vec((0..20i64, 0..3i16, 0..1000i32, 1..10i32), 0..60)) {
            let t = table(&batches);
            let decoded = decode(&encode(&t)).unwrap();
            prop_assert_eq!(decoded.producers(), t.producers());
            prop_assert_eq!(decoded.next_offset(), t.next_offset());
            prop_assert_eq!(decoded.first_unstable_offset(), t.first_unstable_offset());
            prop_assert_eq!(decoded.aborted().collect::<Vec<_>>(), t.aborted().collect::<Vec<_>>());
        }
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let bytes = encode(&table(&[(1, 0, 0, 3), (2, 1, 0, 1), (1, 0, 3, 2)]));
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0x10;
            assert!(decode(&damaged).is_err(), "bit flip at {i}");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut other_version = bytes.to_vec();
        other_version[5] = 9;
        let body_len = other_version.len() - 4;
        let crc = crc32c::crc32c(&other_version[..body_len]);
        other_version[body_len..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode(&other_version), Err(SnapshotError::UnknownVersion(9)));
    }
}
