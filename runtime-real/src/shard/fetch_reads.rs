//! The broker's range reads (`BrokerEffect::ReadRanges`: fetches, and the loads of
//! transaction and group state) while their ranges are read on the shard's io_uring:
//! which request each range belongs to, the bytes that came back, and the one answer
//! each request gets once all of its ranges have — the bytes of every range in order,
//! or the first error.
//!
//! The bound on what is in flight is the disk ring's (operations and read bytes); this
//! table holds one entry per request whose reads are queued or on the ring.

use bytes::Bytes;
use oxbow_core::log::io::DiskError;
use oxbow_core::partition::ReadToken;
use std::collections::BTreeMap;

use super::disk_ring::ReadTag;

#[derive(Debug)]
struct Pending {
    token: ReadToken,
    chunks: Vec<Bytes>,
    remaining: usize,
    error: Option<DiskError>,
}

/// Requests whose ranges are being read.
#[derive(Debug, Default)]
pub struct FetchReads {
    next_request: u64,
    pending: BTreeMap<u64, Pending>,
}

/// A request whose reads have all finished: its token and its answer.
pub type Answered = (ReadToken, Result<Vec<Bytes>, DiskError>);

impl FetchReads {
    /// Requests not yet answered.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Registers a request of `ranges` ranges for `token`; returns the request's
    /// number for the tags of its reads ([`FetchReads::tag`]).
    pub fn start(&mut self, token: ReadToken, ranges: usize) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        self.pending.insert(
            request,
            Pending {
                token,
                chunks: vec![Bytes::new(); ranges],
                remaining: ranges,
                error: None,
            },
        );
        request
    }

    /// The tag of range `index` of `request`.
    pub fn tag(request: u64, index: usize) -> ReadTag {
        ReadTag { request, index }
    }

    /// Records the outcome of one range (a range with nothing to read is recorded as
    /// empty bytes); the request's answer once it was its last.
    pub fn finished(&mut self, tag: ReadTag, result: Result<Bytes, DiskError>) -> Option<Answered> {
        let pending = self.pending.get_mut(&tag.request)?;
        if pending.remaining == 0 || tag.index >= pending.chunks.len() {
            tracing::error!(?tag, "fetch read: outcome for an unknown range");
            return None;
        }
        match result {
            Ok(bytes) => pending.chunks[tag.index] = bytes,
            Err(error) => {
                pending.error.get_or_insert(error);
            }
        }
        pending.remaining -= 1;
        if pending.remaining > 0 {
            return None;
        }
        let done = self.pending.remove(&tag.request)?;
        Some(match done.error {
            Some(error) => (done.token, Err(error)),
            None => (done.token, Ok(done.chunks)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_once_every_range_is_back_in_order() {
        let mut reads = FetchReads::default();
        let request = reads.start(ReadToken(7), 3);
        assert!(reads
            .finished(FetchReads::tag(request, 2), Ok(Bytes::from_static(b"c")))
            .is_none());
        assert!(reads
            .finished(FetchReads::tag(request, 0), Ok(Bytes::from_static(b"a")))
            .is_none());
        let (token, result) = reads
            .finished(FetchReads::tag(request, 1), Ok(Bytes::from_static(b"b")))
            .unwrap();
        assert_eq!(token, ReadToken(7));
        assert_eq!(
            result.unwrap(),
            vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c")
            ]
        );
        assert!(reads.is_empty());
    }

    #[test]
    fn one_failed_range_fails_the_request_after_all_are_back() {
        let mut reads = FetchReads::default();
        let request = reads.start(ReadToken(1), 2);
        let error = DiskError::Io("EIO".to_string());
        assert!(reads
            .finished(FetchReads::tag(request, 0), Err(error.clone()))
            .is_none());
        let (_, result) = reads
            .finished(FetchReads::tag(request, 1), Ok(Bytes::from_static(b"x")))
            .unwrap();
        assert_eq!(result, Err(error));
        assert!(reads
            .finished(FetchReads::tag(request, 1), Ok(Bytes::new()))
            .is_none());
    }
}
