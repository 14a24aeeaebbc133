//! [`PartitionSnapshot`]: what a data partition's Raft snapshot carries to a follower
//! whose log ends below the leader's retained log (after retention, DeleteRecords,
//! tiered storage's local retention or a coordinator's checkpoint trim), and how it is
//! encoded for Raft's chunked snapshot path.
//!
//! A partition's state is its log plus the state machines derived from it. What
//! travels, and what the follower rebuilds from the log suffix it then replicates:
//!
//! * **Travels: the snapshot point and the log start.** Raft's snapshot point is the
//!   offset before the leader's first retained segment (the leader can send whole
//!   entries from there); the follower empties its log to start right after it
//!   ([`crate::log::Log::reset_to`]) and applies the leader's log start offset (which
//!   may lie inside the first retained entry) once its log reaches it, so both
//!   replicas report the same low watermark.
//! * **Rebuilt from the suffix: leader-epoch history** (segment names record term
//!   boundaries, and the suffix brings every epoch the leader still has) **and
//!   producer state** (sequence windows, open transactions, aborted-transaction index,
//!   hence the last stable offset). The follower starts an empty producer table at the
//!   snapshot point and feeds it every replicated batch, exactly like a replica whose
//!   producer-state file was lost. Consequence, accepted for now and the same as
//!   Kafka after retention: a producer whose batches all lie below the snapshot point
//!   is unknown on that follower, and a transaction whose first batch lies below it
//!   is not seen as open there (its records were already below the log start on the
//!   leader). Carrying the leader's producer table would need the table *at* the
//!   snapshot point, which no replica keeps.
//!
//! Encoding: magic `OXPS`, version (u16), snapshot last index and term (u64 each),
//! log start offset (i64), CRC32C of everything before; big-endian.

use crate::raft::LogId;
use bytes::Bytes;

const MAGIC: &[u8; 4] = b"OXPS";
const VERSION: u16 = 1;
const BODY_BYTES: usize = 4 + 2 + 8 + 8 + 8;

/// Why snapshot bytes from a peer were refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotDecodeError {
    /// Wrong length, magic, version or checksum.
    #[error("partition snapshot is damaged or of an unknown version")]
    Damaged,
    /// The log start lies at or before the snapshot point.
    #[error("partition snapshot starts its log at {start_offset}, not after its point {last_index}")]
    StartBeforePoint {
        /// The snapshot's last index.
        last_index: u64,
        /// The log start it names.
        start_offset: i64,
    },
}

/// A data partition's snapshot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PartitionSnapshot {
    /// Raft's snapshot point: the last offset it covers, and that entry's term.
    pub last: LogId,
    /// The leader's log start offset (> `last.index`).
    pub start_offset: i64,
}

impl PartitionSnapshot {
    /// Encodes with a trailing CRC32C.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(BODY_BYTES + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.last.index.to_be_bytes());
        out.extend_from_slice(&self.last.term.to_be_bytes());
        out.extend_from_slice(&self.start_offset.to_be_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    /// Decodes bytes a peer sent.
    pub fn decode(bytes: &[u8]) -> Result<PartitionSnapshot, SnapshotDecodeError> {
        if bytes.len() != BODY_BYTES + 4 || &bytes[..4] != MAGIC {
            return Err(SnapshotDecodeError::Damaged);
        }
        let (body, crc) = bytes.split_at(BODY_BYTES);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(SnapshotDecodeError::Damaged);
        }
        if u16::from_be_bytes([body[4], body[5]]) != VERSION {
            return Err(SnapshotDecodeError::Damaged);
        }
        let field = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&body[at..at + 8]);
            raw
        };
        let last = LogId::new(u64::from_be_bytes(field(14)), u64::from_be_bytes(field(6)));
        let start_offset = i64::from_be_bytes(field(22));
        if u64::try_from(start_offset).map_or(true, |s| s <= last.index) {
            return Err(SnapshotDecodeError::StartBeforePoint {
                last_index: last.index,
                start_offset,
            });
        }
        Ok(PartitionSnapshot { last, start_offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let snapshot = PartitionSnapshot {
            last: LogId::new(4, 99),
            start_offset: 103,
        };
        let bytes = snapshot.encode();
        assert_eq!(PartitionSnapshot::decode(&bytes), Ok(snapshot));
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0x10;
            assert!(PartitionSnapshot::decode(&damaged).is_err(), "byte {i}");
        }
        let behind = PartitionSnapshot {
            last: LogId::new(4, 99),
            start_offset: 99,
        };
        assert_eq!(
            PartitionSnapshot::decode(&behind.encode()),
            Err(SnapshotDecodeError::StartBeforePoint {
                last_index: 99,
                start_offset: 99
            })
        );
    }
}
