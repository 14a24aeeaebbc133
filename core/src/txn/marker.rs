//! Transaction markers: the COMMIT and ABORT control batches the transaction
//! coordinator writes to every partition of a transaction, in Kafka's control record
//! format, so any Kafka client reads them as it reads Kafka's own.
//!
//! A marker is one batch with the transactional and control bits set, the producer's
//! id and epoch, base sequence -1, and one record whose key is `version: i16 = 0,
//! type: i16` (0 ABORT, 1 COMMIT) and whose value is `version: i16 = 0,
//! coordinator_epoch: i32`.

use crate::log::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::log::builder::{build_batch, BatchOptions, NewRecord, ProducerFields};
use crate::log::records::parse_uncompressed_records;
use bytes::Bytes;

/// Control record type of an ABORT marker.
pub const CONTROL_TYPE_ABORT: i16 = 0;
/// Control record type of a COMMIT marker.
pub const CONTROL_TYPE_COMMIT: i16 = 1;

/// What a marker says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Marker {
    /// Producer id of the transaction.
    pub producer_id: i64,
    /// Producer epoch the coordinator ended it with.
    pub producer_epoch: i16,
    /// COMMIT (true) or ABORT (false).
    pub commit: bool,
    /// The coordinator's epoch (its partition's leader epoch).
    pub coordinator_epoch: i32,
}

/// The control batch of `marker`, stamped with wall-clock `timestamp_ms`.
pub fn build_marker(marker: &Marker, timestamp_ms: i64) -> Bytes {
    let control_type = if marker.commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&control_type.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = NewRecord {
        key: Some(key),
        value: Some(value),
        timestamp_ms,
        headers: Vec::new(),
    };
    build_batch(
        &[record],
        BatchOptions {
            producer: ProducerFields {
                producer_id: marker.producer_id,
                producer_epoch: marker.producer_epoch,
                base_sequence: -1,
            },
            transactional: true,
            control: true,
            ..BatchOptions::default()
        },
    )
}

/// The marker a stored batch holds, if it is one (transactional control batch with a
/// well-formed marker record).
pub fn parse_marker(batch: &[u8]) -> Option<Marker> {
    let header = BatchHeader::parse(batch).ok()?;
    if !(header.is_control() && header.is_transactional()) || header.record_count != 1 {
        return None;
    }
    let end = header.size_bytes().min(batch.len());
    let records = Bytes::copy_from_slice(batch.get(BATCH_HEADER_BYTES..end)?);
    let record = parse_uncompressed_records(&records, 1).ok()?.into_iter().next()?;
    let key = record.key?;
    if key.len() < 4 {
        return None;
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        CONTROL_TYPE_ABORT => false,
        CONTROL_TYPE_COMMIT => true,
        _ => return None,
    };
    let coordinator_epoch = record
        .value
        .filter(|v| v.len() >= 6)
        .map_or(-1, |v| i32::from_be_bytes([v[2], v[3], v[4], v[5]]));
    Some(Marker {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        commit,
        coordinator_epoch,
    })
}

/// Whether a stored batch is an ABORT marker.
pub fn is_abort_marker(batch: &[u8]) -> bool {
    parse_marker(batch).is_some_and(|m| !m.commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::validate_batch;

    #[test]
    fn markers_round_trip_and_validate_as_transactional_control_batches() {
        for commit in [true, false] {
            let marker = Marker {
                producer_id: 42,
                producer_epoch: 3,
                commit,
                coordinator_epoch: 7,
            };
            let batch = build_marker(&marker, 1_700_000_000_000);
            let header = validate_batch(&batch).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(header.base_sequence, -1);
            assert_eq!(parse_marker(&batch), Some(marker));
            assert_eq!(is_abort_marker(&batch), !commit);
        }
        let plain = build_batch(&[NewRecord::value(b"x".to_vec(), 1)], BatchOptions::default());
        assert_eq!(parse_marker(&plain), None);
    }
}
