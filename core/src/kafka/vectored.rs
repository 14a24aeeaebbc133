//! Response frames as lists of byte chunks, so a Fetch response's record sets go to the
//! socket from the buffers they were read into instead of being copied into the frame.
//!
//! [`encode_response_frame`] encodes every response exactly as
//! [`super::encode_response`] does — the same bytes, in the same order — but a Fetch
//! response whose partitions carry record sets of at least [`SPLICE_MIN_BYTES`] comes
//! back as a [`ResponseFrame`] of several chunks: the encoded frame with those record
//! sets left out (a few bytes per partition) cut at each place a record set goes, and
//! the record sets' own `Bytes` between the cuts. Smaller record sets are copied into
//! the frame (another chunk costs more than copying them).
//!
//! # How the cuts are found
//!
//! Everything but the record sets is encoded by `kafka-protocol`, so no field layout is
//! written twice. The response is encoded twice without the large record sets: once
//! with each of them null and once with each of them empty. Outside the record sets
//! the two encodings are identical, and each record set's length field is the only
//! place where they differ: `-1` against `0` as an `int32` before flexible versions,
//! `0` against `1` as an unsigned varint (compact bytes) in flexible ones. Each such
//! place is replaced by the record set's real length, and the record set follows it.
//! If the two encodings do not differ exactly that way (they always do; the check
//! costs a pass over a few hundred bytes), the response is encoded contiguously.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse};

use super::error::EncodeError;
use super::frame::SIZE_PREFIX_BYTES;
use super::request::RequestHeader;
use super::response::{encode_response, Response};

/// Record sets of at least this many bytes are sent from their own buffers; smaller
/// ones are copied into the frame.
pub const SPLICE_MIN_BYTES: usize = 16 * 1024;

/// One response frame, size prefix first, as chunks to be sent in order.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ResponseFrame {
    chunks: Vec<Bytes>,
}

impl From<Bytes> for ResponseFrame {
    fn from(frame: Bytes) -> Self {
        ResponseFrame { chunks: vec![frame] }
    }
}

impl ResponseFrame {
    /// The chunks, in order; none is empty, and the first holds at least the size
    /// prefix and the correlation id.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The chunks, in order.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The frame's length with its size prefix.
    pub fn len_bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// The frame as one buffer (a copy when it has several chunks).
    pub fn to_contiguous(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            chunks => {
                let mut out = BytesMut::with_capacity(self.len_bytes());
                for chunk in chunks {
                    out.extend_from_slice(chunk);
                }
                out.freeze()
            }
        }
    }
}

/// Encodes `response` as the answer to the request with `header`, like
/// [`encode_response`], with the large record sets of a Fetch response as chunks of
/// their own (see the module docs).
pub fn encode_response_frame(
    header: &RequestHeader,
    response: Response,
) -> Result<ResponseFrame, EncodeError> {
    encode_with_threshold(header, response, SPLICE_MIN_BYTES)
}

/// [`encode_response_frame`] with record sets of at least `min_bytes` spliced.
fn encode_with_threshold(
    header: &RequestHeader,
    mut response: Response,
    min_bytes: usize,
) -> Result<ResponseFrame, EncodeError> {
    let Response::Fetch(fetch) = &mut response else {
        return encode_response(header, &response).map(ResponseFrame::from);
    };
    let spliced = take_record_sets(fetch, min_bytes);
    if spliced.is_empty() || header.api_key != ApiKey::Fetch {
        restore_record_sets(fetch, &spliced);
        return encode_response(header, &response).map(ResponseFrame::from);
    }
    let with_nulls = encode_response(header, &response)?;
    if let Response::Fetch(fetch) = &mut response {
        set_record_sets(fetch, &spliced, |_| Some(Bytes::new()));
    }
    let with_empties = encode_response(header, &response)?;
    let flexible = ApiKey::Fetch.response_header_version(header.api_version) >= 1;
    let markers = Markers::new(flexible);
    match find_cuts(&with_nulls, &with_empties, &markers, spliced.len()) {
        Some(cuts) => assemble(&with_nulls, &cuts, &markers, &spliced),
        None => {
            if let Response::Fetch(fetch) = &mut response {
                restore_record_sets(fetch, &spliced);
            }
            encode_response(header, &response).map(ResponseFrame::from)
        }
    }
}

/// Where a record set was taken from: topic index, partition index, the bytes.
type Spliced = (usize, usize, Bytes);

/// Takes every record set of at least `min_bytes` out of `fetch` (leaving it null), in
/// encoding order.
fn take_record_sets(fetch: &mut FetchResponse, min_bytes: usize) -> Vec<Spliced> {
    let mut spliced = Vec::new();
    for (t, topic) in fetch.responses.iter_mut().enumerate() {
        for (p, partition) in topic.partitions.iter_mut().enumerate() {
            if partition.records.as_ref().is_some_and(|r| r.len() >= min_bytes) {
                if let Some(records) = partition.records.take() {
                    spliced.push((t, p, records));
                }
            }
        }
    }
    spliced
}

fn set_record_sets(fetch: &mut FetchResponse, spliced: &[Spliced], value: impl Fn(&Bytes) -> Option<Bytes>) {
    for (t, p, records) in spliced {
        if let Some(partition) = fetch
            .responses
            .get_mut(*t)
            .and_then(|topic| topic.partitions.get_mut(*p))
        {
            partition.records = value(records);
        }
    }
}

fn restore_record_sets(fetch: &mut FetchResponse, spliced: &[Spliced]) {
    set_record_sets(fetch, spliced, |records| Some(records.clone()));
}

/// How a null and an empty record set are encoded at a version.
struct Markers {
    null: &'static [u8],
    empty: &'static [u8],
    flexible: bool,
}

impl Markers {
    fn new(flexible: bool) -> Markers {
        if flexible {
            // COMPACT_NULLABLE_BYTES: unsigned varint length + 1, 0 for null.
            Markers {
                null: &[0],
                empty: &[1],
                flexible,
            }
        } else {
            // NULLABLE_BYTES: int32 length, -1 for null.
            Markers {
                null: &[0xff; 4],
                empty: &[0; 4],
                flexible,
            }
        }
    }

    fn width(&self) -> usize {
        self.null.len()
    }

    /// Writes the length field of a record set of `len` bytes.
    fn put_length(&self, out: &mut BytesMut, len: usize) -> Result<(), EncodeError> {
        let too_large = || EncodeError::TooLarge { size_bytes: len };
        if self.flexible {
            let mut value = u32::try_from(len)
                .ok()
                .and_then(|n| n.checked_add(1))
                .ok_or_else(too_large)?;
            while value >= 0x80 {
                out.put_u8((value as u8 & 0x7f) | 0x80);
                value >>= 7;
            }
            out.put_u8(value as u8);
        } else {
            out.put_i32(i32::try_from(len).map_err(|_| too_large())?);
        }
        Ok(())
    }
}

/// The positions of the `count` record set length fields: where `with_nulls` and
/// `with_empties` differ, each difference exactly one null marker against one empty
/// marker. `None` if they differ in any other way.
fn find_cuts(with_nulls: &[u8], with_empties: &[u8], markers: &Markers, count: usize) -> Option<Vec<usize>> {
    if with_nulls.len() != with_empties.len() {
        return None;
    }
    let width = markers.width();
    let mut cuts = Vec::with_capacity(count);
    let mut at = 0;
    while at < with_nulls.len() {
        if with_nulls[at] == with_empties[at] {
            at += 1;
            continue;
        }
        let end = at.checked_add(width)?;
        if with_nulls.get(at..end)? != markers.null || with_empties.get(at..end)? != markers.empty {
            return None;
        }
        cuts.push(at);
        at = end;
    }
    (cuts.len() == count).then_some(cuts)
}

/// The frame: `with_nulls` with each null marker at `cuts` replaced by its record
/// set's length, the record sets between the pieces, and the size prefix fixed.
fn assemble(
    with_nulls: &[u8],
    cuts: &[usize],
    markers: &Markers,
    spliced: &[Spliced],
) -> Result<ResponseFrame, EncodeError> {
    let records_bytes: usize = spliced.iter().map(|(_, _, r)| r.len()).sum();
    let mut head = BytesMut::with_capacity(with_nulls.len() + cuts.len() * 5);
    let mut ends = Vec::with_capacity(cuts.len());
    let mut from = 0;
    for (cut, (_, _, records)) in cuts.iter().zip(spliced) {
        head.extend_from_slice(&with_nulls[from..*cut]);
        markers.put_length(&mut head, records.len())?;
        ends.push(head.len());
        from = cut + markers.width();
    }
    head.extend_from_slice(&with_nulls[from..]);
    let size_bytes = head.len() - SIZE_PREFIX_BYTES + records_bytes;
    let size = i32::try_from(size_bytes).map_err(|_| EncodeError::TooLarge { size_bytes })?;
    head[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    let head = head.freeze();
    let mut chunks = Vec::with_capacity(2 * cuts.len() + 1);
    let mut start = 0;
    for (end, (_, _, records)) in ends.iter().zip(spliced) {
        chunks.push(head.slice(start..*end));
        chunks.push(records.clone());
        start = *end;
    }
    if start < head.len() {
        chunks.push(head.slice(start..));
    }
    Ok(ResponseFrame { chunks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lengths_are_unsigned_varints_of_length_plus_one() {
        let markers = Markers::new(true);
        let cases: [(usize, &[u8]); 5] = [
            (0, &[0x01]),
            (126, &[0x7f]),
            (127, &[0x80, 0x01]),
            (16_383, &[0x80, 0x80, 0x01]),
            ((1 << 28) - 1, &[0x80, 0x80, 0x80, 0x80, 0x01]),
        ];
        for (len, expected) in cases {
            let mut ours = BytesMut::new();
            markers.put_length(&mut ours, len).unwrap();
            assert_eq!(&ours[..], expected, "length {len}");
        }
        let mut int32 = BytesMut::new();
        Markers::new(false).put_length(&mut int32, 70_000).unwrap();
        assert_eq!(&int32[..], &70_000i32.to_be_bytes());
    }

    #[test]
    fn cuts_are_refused_when_the_encodings_differ_elsewhere() {
        let markers = Markers::new(false);
        let nulls = [1, 2, 0xff, 0xff, 0xff, 0xff, 3];
        let empties = [1, 2, 0, 0, 0, 0, 3];
        assert_eq!(find_cuts(&nulls, &empties, &markers, 1), Some(vec![2]));
        assert_eq!(find_cuts(&nulls, &empties, &markers, 2), None);
        let other = [1, 9, 0, 0, 0, 0, 3];
        assert_eq!(find_cuts(&nulls, &other, &markers, 1), None);
        assert_eq!(find_cuts(&nulls, &empties[..6], &markers, 1), None);
    }
}
