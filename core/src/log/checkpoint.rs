//! The partition checkpoint: a small checksummed record, rewritten from time to time,
//! that says which prefix of the log is known durable and where the log starts.
//!
//! Recovery uses it to tell a torn tail (bytes past the durable point: cut them) from
//! corruption of synced data (bytes before it: report, never cut), and to restore the
//! log start offset that retention and DeleteRecords moved. It is a lower bound: data
//! synced after the last checkpoint is still recovered, only with weaker corruption
//! detection.
//!
//! Version 2 adds the term of the entry just before the start offset, so that Raft's
//! snapshot point after a restart is exact even when the segment holding that entry is
//! gone. Version 1 files (written before) still decode, with that term unknown.

use super::io::SegmentId;
use bytes::Bytes;

const MAGIC: &[u8; 4] = b"OXCP";
/// The version written; [`VERSION_V1`] files are still read.
const VERSION: u16 = 2;
/// The first format: no start term.
const VERSION_V1: u16 = 1;
const BODY_V1_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 8 + 8;
const BODY_BYTES: usize = BODY_V1_BYTES + 8;

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
    /// The term of the entry at `start_offset - 1`, -1 when not known (a version 1
    /// file, a log starting at 0, or a log that no longer held that entry).
    pub start_term: i64,
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
            start_term: term,
        }
    }

    /// The term of the entry before the start offset, if the checkpoint knows it.
    pub fn known_start_term(&self) -> Option<i64> {
        self.reset_term()
            .or((self.start_term >= 0 && self.start_offset > 0).then_some(self.start_term))
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
        out.extend_from_slice(&self.start_term.to_be_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    /// Decodes (version 1 or 2); `None` for anything damaged (a torn checkpoint write
    /// is ignored).
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return None;
        }
        let body_bytes = match u16::from_be_bytes([bytes[4], bytes[5]]) {
            VERSION_V1 => BODY_V1_BYTES,
            VERSION => BODY_BYTES,
            _ => return None,
        };
        if bytes.len() != body_bytes + 4 {
            return None;
        }
        let (body, crc) = bytes.split_at(body_bytes);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
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
            start_term: if body_bytes == BODY_BYTES {
                i64::from_be_bytes(field(46))
            } else {
                -1
            },
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
            start_term: 2,
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
        assert_eq!(cp.known_start_term(), Some(2));
    }

    /// A version 1 file (written before the start term was recorded), built byte by
    /// byte as that format laid it out: it still decodes, with the term unknown.
    #[test]
    fn decodes_version_one_files_without_a_start_term() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"OXCP");
        v1.extend_from_slice(&1u16.to_be_bytes());
        for field in [100i64, 74, 73, 2] {
            v1.extend_from_slice(&field.to_be_bytes());
        }
        v1.extend_from_slice(&512u64.to_be_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let cp = Checkpoint::decode(&v1).expect("a version 1 checkpoint decodes");
        assert_eq!(
            cp,
            Checkpoint {
                start_offset: 100,
                durable_offset: 74,
                durable_segment: SegmentId {
                    base_offset: 73,
                    term: 2,
                },
                durable_position: 512,
                start_term: -1,
            }
        );
        assert_eq!(cp.known_start_term(), None);
        // The same fields with a version 2 length are damage, not a version 1 file.
        let mut wrong_length = v1.clone();
        wrong_length.splice(v1.len() - 4..v1.len() - 4, [0u8; 8]);
        assert_eq!(Checkpoint::decode(&wrong_length), None);
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
            start_term: -1,
        };
        assert_eq!(nothing_durable.reset_term(), None);
        assert_eq!(nothing_durable.known_start_term(), None);
        assert_eq!(marker.known_start_term(), Some(3));
        assert_eq!(Checkpoint::reset_marker(1, 0).reset_term(), Some(0));
    }
}
