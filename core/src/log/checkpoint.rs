//! The partition checkpoint: a small checksummed record, rewritten from time to time,
//! that says which prefix of the log is known durable and where the log starts.
//!
//! Recovery uses it to tell a torn tail (bytes past the durable point: cut them) from
//! corruption of synced data (bytes before it: report, never cut), and to restore the
//! log start offset that retention and DeleteRecords moved. It is a lower bound: data
//! synced after the last checkpoint is still recovered, only with weaker corruption
//! detection.

use super::io::SegmentId;
use bytes::Bytes;

const MAGIC: &[u8; 4] = b"OXCP";
const VERSION: u16 = 1;
const BODY_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 8 + 8;

/// What a checkpoint records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Checkpoint {
    /// The log start offset (first offset a reader may ask for).
    pub start_offset: i64,
    /// The last offset known durable, -1 if none.
    pub durable_offset: i64,
    /// The segment holding the durable end (meaningless if `durable_offset` is -1).
    pub durable_segment: SegmentId,
    /// Byte position of the durable end in that segment.
    pub durable_position: u64,
}

impl Checkpoint {
    /// The checkpoint [`super::Log::reset_to`] writes: the log is empty and starts at
    /// `start_offset`, after an entry of `term`. It is told apart from an ordinary
    /// checkpoint without a format change: an ordinary one that records a durable
    /// offset (`>= 0`) names a real segment, whose term is never negative; the marker
    /// records `start_offset - 1` as durable in a segment of term `-2 - term`.
    pub fn reset_marker(start_offset: i64, term: i64) -> Checkpoint {
        assert!(start_offset > 0 && term >= 0, "a reset starts past offset 0");
        Checkpoint {
            start_offset,
            durable_offset: start_offset - 1,
            durable_segment: SegmentId {
                base_offset: start_offset,
                term: -2 - term,
            },
            durable_position: 0,
        }
    }

    /// If this is a [`Checkpoint::reset_marker`]: the term it records.
    pub fn reset_term(&self) -> Option<i64> {
        (self.durable_offset >= 0 && self.durable_segment.term <= -2).then(|| -2 - self.durable_segment.term)
    }

    /// Encodes with a trailing CRC32C.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(BODY_BYTES + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.start_offset.to_be_bytes());
        out.extend_from_slice(&self.durable_offset.to_be_bytes());
        out.extend_from_slice(&self.durable_segment.base_offset.to_be_bytes());
        out.extend_from_slice(&self.durable_segment.term.to_be_bytes());
        out.extend_from_slice(&self.durable_position.to_be_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    /// Decodes; `None` for anything damaged (a torn checkpoint write is ignored).
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        if bytes.len() != BODY_BYTES + 4 || &bytes[..4] != MAGIC {
            return None;
        }
        let (body, crc) = bytes.split_at(BODY_BYTES);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return None;
        }
        if u16::from_be_bytes([body[4], body[5]]) != VERSION {
            return None;
        }
        let field = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&body[at..at + 8]);
            raw
        };
        Some(Checkpoint {
            start_offset: i64::from_be_bytes(field(6)),
            durable_offset: i64::from_be_bytes(field(14)),
            durable_segment: SegmentId {
                base_offset: i64::from_be_bytes(field(22)),
                term: i64::from_be_bytes(field(30)),
            },
            durable_position: u64::from_be_bytes(field(38)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let cp = Checkpoint {
            start_offset: 10,
            durable_offset: 99,
            durable_segment: SegmentId {
                base_offset: 50,
                term: 3,
            },
            durable_position: 4096,
        };
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes), Some(cp));
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0x40;
            assert_eq!(Checkpoint::decode(&damaged), None);
        }
        assert_eq!(Checkpoint::decode(&bytes[..20]), None);
        assert_eq!(cp.reset_term(), None);
    }

    #[test]
    fn reset_marker_round_trips_and_is_not_an_ordinary_checkpoint() {
        let marker = Checkpoint::reset_marker(40, 3);
        assert_eq!(marker.reset_term(), Some(3));
        assert_eq!(Checkpoint::decode(&marker.encode()), Some(marker));
        let nothing_durable = Checkpoint {
            start_offset: 40,
            durable_offset: -1,
            durable_segment: SegmentId {
                base_offset: 40,
                term: -1,
            },
            durable_position: 0,
        };
        assert_eq!(nothing_durable.reset_term(), None);
        assert_eq!(Checkpoint::reset_marker(1, 0).reset_term(), Some(0));
    }
}
