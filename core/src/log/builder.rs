//! Builds uncompressed v2 record batches: for tests, the simulator's workload, and the
//! control batches Oxbow writes itself (Raft no-ops and configurations, transaction
//! markers).

use super::batch::{compute_crc, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2};
use super::records::write_varlong;
use bytes::Bytes;

/// A record to put in a batch.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct NewRecord {
    /// Key, `None` for null.
    pub key: Option<Vec<u8>>,
    /// Value, `None` for null.
    pub value: Option<Vec<u8>>,
    /// Create timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Headers.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl NewRecord {
    /// A record with a value and a timestamp, no key.
    pub fn value(value: impl Into<Vec<u8>>, timestamp_ms: i64) -> Self {
        NewRecord {
            value: Some(value.into()),
            timestamp_ms,
            ..NewRecord::default()
        }
    }
}

/// Producer fields of a batch header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProducerFields {
    /// Producer id (-1 for none).
    pub producer_id: i64,
    /// Producer epoch (-1 for none).
    pub producer_epoch: i16,
    /// Sequence of the first record (-1 for none).
    pub base_sequence: i32,
}

impl Default for ProducerFields {
    fn default() -> Self {
        ProducerFields {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// Options of a batch beyond its records.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct BatchOptions {
    /// Base offset to write (the log overwrites it on append).
    pub base_offset: i64,
    /// Partition leader epoch to write (the log overwrites it on append).
    pub leader_epoch: i32,
    /// Producer fields.
    pub producer: ProducerFields,
    /// Transactional bit.
    pub transactional: bool,
    /// Control bit.
    pub control: bool,
}

/// Encodes `records` as one uncompressed v2 batch. Panics if `records` is empty (an
/// empty batch is invalid in Kafka; this is a programming error, not input).
pub fn build_batch(records: &[NewRecord], options: BatchOptions) -> Bytes {
    assert!(!records.is_empty(), "a batch needs at least one record");
    let base_timestamp = records.iter().map(|r| r.timestamp_ms).min().unwrap_or(0);
    let max_timestamp = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    let mut body = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let mut encoded = vec![0u8]; // attributes
        write_varlong(&mut encoded, record.timestamp_ms - base_timestamp);
        write_varlong(&mut encoded, index as i64);
        write_optional(&mut encoded, record.key.as_deref());
        write_optional(&mut encoded, record.value.as_deref());
        write_varlong(&mut encoded, record.headers.len() as i64);
        for (key, value) in &record.headers {
            write_optional(&mut encoded, Some(key));
            write_optional(&mut encoded, value.as_deref());
        }
        write_varlong(&mut body, encoded.len() as i64);
        body.extend_from_slice(&encoded);
    }
    let total = BATCH_HEADER_BYTES + body.len();
    let mut out = Vec::with_capacity(total);
    let mut attributes: i16 = 0;
    if options.transactional {
        attributes |= 0x10;
    }
    if options.control {
        attributes |= 0x20;
    }
    out.extend_from_slice(&options.base_offset.to_be_bytes());
    out.extend_from_slice(&((total - LOG_OVERHEAD_BYTES) as i32).to_be_bytes());
    out.extend_from_slice(&options.leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&((records.len() - 1) as i32).to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&options.producer.producer_id.to_be_bytes());
    out.extend_from_slice(&options.producer.producer_epoch.to_be_bytes());
    out.extend_from_slice(&options.producer.base_sequence.to_be_bytes());
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

fn write_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varlong(out, -1),
        Some(bytes) => {
            write_varlong(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch::{validate_batch, BatchError, BatchHeader};
    use super::super::records::parse_uncompressed_records;
    use super::*;

    fn sample() -> Bytes {
        let records = vec![
            NewRecord {
                key: Some(b"k1".to_vec()),
                value: Some(b"hello".to_vec()),
                timestamp_ms: 1_000,
                headers: vec![(b"h".to_vec(), Some(b"v".to_vec()))],
            },
            NewRecord {
                key: None,
                value: None,
                timestamp_ms: 1_005,
                headers: vec![],
            },
        ];
        build_batch(&records, BatchOptions::default())
    }

    #[test]
    fn built_batches_validate_and_parse_back() {
        let batch = sample();
        let header = validate_batch(&batch).unwrap();
        assert_eq!(header.record_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.base_timestamp_ms, 1_000);
        assert_eq!(header.max_timestamp_ms, 1_005);
        let records = parse_uncompressed_records(&batch.slice(61..), 2).unwrap();
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[0].headers.len(), 1);
        assert_eq!(records[1].timestamp_delta_ms, 5);
        assert_eq!(records[1].value, None);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let batch = sample();
        for byte in 8..batch.len() {
            // base offset and leader epoch sit outside the CRC by design
            if (12..16).contains(&byte) {
                continue;
            }
            for bit in 0..8 {
                let mut flipped = batch.to_vec();
                flipped[byte] ^= 1 << bit;
                assert!(validate_batch(&flipped).is_err(), "flip at byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn defects_map_to_kafka_errors() {
        let batch = sample();
        let err = validate_batch(&batch[..30]).unwrap_err();
        assert_eq!(err.kafka_error_code(), 2);
        let mut wrong_magic = batch.to_vec();
        wrong_magic[16] = 1;
        assert_eq!(validate_batch(&wrong_magic).unwrap_err().kafka_error_code(), 43);
        let mut bad_crc = batch.to_vec();
        bad_crc[17] ^= 0xff;
        assert!(matches!(
            validate_batch(&bad_crc),
            Err(BatchError::CrcMismatch { .. })
        ));
        // a count that disagrees with the last offset delta, CRC recomputed
        let mut bad_count = batch.to_vec();
        bad_count[57..61].copy_from_slice(&3i32.to_be_bytes());
        let crc = compute_crc(&bad_count);
        bad_count[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(validate_batch(&bad_count).unwrap_err().kafka_error_code(), 87);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.size_bytes(), batch.len());
    }
}
