//! Records inside an uncompressed v2 batch: zig-zag varints, framing validation, and
//! iteration. Compressed batches are stored as sent and never opened by the log.

use bytes::Bytes;

/// A defect in the records section of an uncompressed batch.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// A varint ran off the end or is longer than 10 bytes.
    #[error("malformed varint at byte {position}")]
    BadVarint {
        /// Byte position in the records section.
        position: usize,
    },
    /// A length field is negative (other than -1 for a null key/value) or too long.
    #[error("record {index}: bad length {length}")]
    BadLength {
        /// Record index.
        index: i32,
        /// The length field.
        length: i64,
    },
    /// A record's offset delta is not its position in the batch.
    #[error("record {index}: offset delta {offset_delta} is not {index}")]
    BadOffsetDelta {
        /// Record index.
        index: i32,
        /// The offset delta found.
        offset_delta: i64,
    },
    /// A record's body does not end where its length says.
    #[error("record {index}: body is {actual_bytes} bytes, length says {declared_bytes}")]
    LengthMismatch {
        /// Record index.
        index: i32,
        /// Declared length.
        declared_bytes: i64,
        /// Bytes the fields used.
        actual_bytes: usize,
    },
    /// Bytes remain after the last record, or records are missing.
    #[error("batch declares {declared} records, found {found} with {trailing_bytes} bytes left")]
    CountMismatch {
        /// Declared count.
        declared: i32,
        /// Records parsed.
        found: i32,
        /// Unparsed bytes.
        trailing_bytes: usize,
    },
}

/// Reads a zig-zag varint (Kafka's `varint`/`varlong`) at `*pos`.
pub fn read_varlong(bytes: &[u8], pos: &mut usize) -> Result<i64, RecordsError> {
    let start = *pos;
    let mut raw: u64 = 0;
    for shift in 0..10u32 {
        let byte = *bytes
            .get(*pos)
            .ok_or(RecordsError::BadVarint { position: start })?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(RecordsError::BadVarint { position: start })
}

/// Appends a zig-zag varint.
pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One record of an uncompressed batch.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// Offset relative to the batch's base offset.
    pub offset_delta: i64,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta_ms: i64,
    /// Key, `None` if null.
    pub key: Option<Bytes>,
    /// Value, `None` if null.
    pub value: Option<Bytes>,
    /// Headers as (key, value) pairs.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

fn read_len(
    bytes: &[u8],
    pos: &mut usize,
    index: i32,
    end: usize,
) -> Result<Option<(usize, usize)>, RecordsError> {
    let length = read_varlong(bytes, pos)?;
    if length == -1 {
        return Ok(None);
    }
    let too_long = usize::try_from(length).map_or(true, |len| *pos + len > end);
    if length < -1 || too_long {
        return Err(RecordsError::BadLength { index, length });
    }
    let start = *pos;
    *pos += length as usize;
    Ok(Some((start, *pos)))
}

/// Where one record's fields lie in the records section: byte ranges, nothing copied.
#[derive(Debug)]
struct RecordSpans {
    offset_delta: i64,
    timestamp_delta_ms: i64,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
}

/// Walks one record starting at `*pos` (`expected_index`: its position in the batch),
/// handing each header's ranges to `on_header`.
fn walk_record(
    bytes: &[u8],
    pos: &mut usize,
    expected_index: i32,
    mut on_header: impl FnMut((usize, usize), Option<(usize, usize)>),
) -> Result<RecordSpans, RecordsError> {
    let index = expected_index;
    let length = read_varlong(bytes, pos)?;
    let body_start = *pos;
    let end = usize::try_from(length)
        .ok()
        .map(|len| body_start + len)
        .filter(|end| *end <= bytes.len())
        .ok_or(RecordsError::BadLength { index, length })?;
    let body = &bytes[..end];
    let _attributes = *body.get(*pos).ok_or(RecordsError::BadLength { index, length })?;
    *pos += 1;
    let timestamp_delta_ms = read_varlong(body, pos)?;
    let offset_delta = read_varlong(body, pos)?;
    if offset_delta != i64::from(expected_index) {
        return Err(RecordsError::BadOffsetDelta { index, offset_delta });
    }
    let key = read_len(body, pos, index, end)?;
    let value = read_len(body, pos, index, end)?;
    let header_count = read_varlong(body, pos)?;
    if !(0..=i64::from(i32::MAX)).contains(&header_count) {
        return Err(RecordsError::BadLength {
            index,
            length: header_count,
        });
    }
    for _ in 0..header_count {
        let header_key =
            read_len(body, pos, index, end)?.ok_or(RecordsError::BadLength { index, length: -1 })?;
        let header_value = read_len(body, pos, index, end)?;
        on_header(header_key, header_value);
    }
    if *pos != end {
        return Err(RecordsError::LengthMismatch {
            index,
            declared_bytes: length,
            actual_bytes: *pos - body_start,
        });
    }
    Ok(RecordSpans {
        offset_delta,
        timestamp_delta_ms,
        key,
        value,
    })
}

/// Walks every record of an uncompressed records section, calling `on_record` with
/// each one's index, its spans and the position right after it; checks that exactly
/// `record_count` records fill the section.
fn walk_records(
    records: &[u8],
    record_count: i32,
    mut on_record: impl FnMut(&mut usize, i32) -> Result<(), RecordsError>,
) -> Result<(), RecordsError> {
    let mut pos = 0;
    for index in 0..record_count {
        if pos >= records.len() {
            return Err(RecordsError::CountMismatch {
                declared: record_count,
                found: index,
                trailing_bytes: 0,
            });
        }
        on_record(&mut pos, index)?;
    }
    if pos != records.len() {
        return Err(RecordsError::CountMismatch {
            declared: record_count,
            found: record_count,
            trailing_bytes: records.len() - pos,
        });
    }
    Ok(())
}

/// Parses all records of an uncompressed records section.
pub fn parse_uncompressed_records(records: &Bytes, record_count: i32) -> Result<Vec<Record>, RecordsError> {
    let mut out = Vec::with_capacity(usize::try_from(record_count).unwrap_or(0).min(4096));
    let slice = |range: Option<(usize, usize)>| range.map(|(a, b)| records.slice(a..b));
    walk_records(records, record_count, |pos, index| {
        let mut headers = Vec::new();
        let spans = walk_record(records, pos, index, |key, value| {
            headers.push((records.slice(key.0..key.1), slice(value)));
        })?;
        out.push(Record {
            offset_delta: spans.offset_delta,
            timestamp_delta_ms: spans.timestamp_delta_ms,
            key: slice(spans.key),
            value: slice(spans.value),
            headers,
        });
        Ok(())
    })?;
    Ok(out)
}

/// Validates the framing of an uncompressed records section without keeping the
/// records (nothing is copied or allocated: this runs on every produced batch).
pub fn validate_uncompressed_records(records: &[u8], record_count: i32) -> Result<(), RecordsError> {
    walk_records(records, record_count, |pos, index| {
        walk_record(records, pos, index, |_, _| {}).map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varlong_round_trips(value in any::<i64>()) {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            let mut pos = 0;
            prop_assert_eq!(read_varlong(&out, &mut pos).unwrap(), value);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), count in -2i32..10) {
            let _ = parse_uncompressed_records(&Bytes::from(bytes), count);
        }

        #[test]
        fn validation_agrees_with_parsing(bytes in proptest::collection::vec(any::<u8>(), 0..200), count in -2i32..10) {
            let parsed = parse_uncompressed_records(&Bytes::from(bytes.clone()), count).map(|_| ());
            prop_assert_eq!(validate_uncompressed_records(&bytes, count), parsed);
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let mut pos = 0;
        assert!(read_varlong(&[0xff; 11], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_varlong(&[0x80], &mut pos).is_err());
    }
}
