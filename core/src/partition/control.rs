//! Raft's own entries stored as Kafka control batches, and stored batches turned back
//! into Raft entries.
//!
//! A new leader's no-op and a membership change are written as control batches (the
//! control bit set; one record whose key is `version: i16, type: i16`), which Kafka
//! consumers skip exactly as they skip transaction markers — so the Raft log *is* the
//! Kafka log, offset for offset (DESIGN.md §7). Oxbow's control types live in a private
//! range (`0x4F00..`) away from Kafka's (0 abort, 1 commit, 2.. KRaft).
//!
//! The leader's log start offset travels the same way: a data entry holding a control
//! batch of type [`CONTROL_TYPE_LOG_START`] whose value is the new start offset, which
//! every replica applies once it is committed ([`log_start_record`]).

use crate::log::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::log::builder::{build_batch, BatchOptions, NewRecord};
use crate::log::records::parse_uncompressed_records;
use crate::raft::{Entry, EntryKind};
use bytes::Bytes;

/// Control record type of a Raft no-op.
pub const CONTROL_TYPE_RAFT_NOOP: i16 = 0x4F00;
/// Control record type of a Raft membership configuration.
pub const CONTROL_TYPE_RAFT_CONFIG: i16 = 0x4F01;

/// Control record type of a log start offset move (value: the offset, i64 big-endian).
pub const CONTROL_TYPE_LOG_START: i16 = 0x4F02;

/// The control batch announcing that the log now starts at `start_offset`.
pub fn log_start_batch(start_offset: i64) -> Bytes {
    control_batch(CONTROL_TYPE_LOG_START, Some(start_offset.to_be_bytes().to_vec()))
}

/// A control batch of one record of `control_type` with `value`.
fn control_batch(control_type: i16, value: Option<Vec<u8>>) -> Bytes {
    let record = NewRecord {
        key: Some(control_key(control_type)),
        value,
        timestamp_ms: -1,
        headers: Vec::new(),
    };
    build_batch(
        &[record],
        BatchOptions {
            control: true,
            ..BatchOptions::default()
        },
    )
}

/// `(type, value)` of the one record of a non-transactional, uncompressed control
/// batch whose key is an Oxbow-shaped control key; `None` for any other batch.
fn single_control_record(header: &BatchHeader, batch: &Bytes) -> Option<(i16, Option<Bytes>)> {
    if !header.is_control() || header.is_transactional() || header.record_count != 1 {
        return None;
    }
    if header.compression().ok() != Some(crate::log::Compression::None) {
        return None;
    }
    let records = batch.slice(BATCH_HEADER_BYTES..header.size_bytes().min(batch.len()));
    let record = parse_uncompressed_records(&records, 1).ok()?.into_iter().next()?;
    let key = record.key?;
    if key.len() != 4 {
        return None;
    }
    Some((i16::from_be_bytes([key[2], key[3]]), record.value))
}

/// The start offset a stored batch announces, if it is a [`log_start_batch`].
pub fn log_start_record(header: &BatchHeader, batch: &Bytes) -> Option<i64> {
    let (control_type, value) = single_control_record(header, batch)?;
    if control_type != CONTROL_TYPE_LOG_START {
        return None;
    }
    let value: [u8; 8] = value?.as_ref().try_into().ok()?;
    Some(i64::from_be_bytes(value)).filter(|start| *start >= 0)
}

/// A stored batch that cannot be read back as a Raft entry.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("stored batch at offset {offset} is not a valid entry: {reason}")]
pub struct EntryDecodeError {
    /// Base offset of the batch.
    pub offset: i64,
    /// What is wrong.
    pub reason: String,
}

fn control_key(control_type: i16) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&control_type.to_be_bytes());
    key
}

/// The bytes to store for `entry`: its payload for data entries (a Kafka batch), a
/// control batch for no-ops and configurations. Deterministic, so every replica stores
/// identical bytes for the same entry.
pub fn entry_to_batch(entry: &Entry) -> Bytes {
    let control_type = match entry.kind {
        EntryKind::Noop => CONTROL_TYPE_RAFT_NOOP,
        EntryKind::Config => CONTROL_TYPE_RAFT_CONFIG,
        _ => return entry.payload.clone(),
    };
    control_batch(
        control_type,
        (entry.kind == EntryKind::Config).then(|| entry.payload.to_vec()),
    )
}

/// The Raft entry a stored batch (whole, CRC-checked) represents.
pub fn batch_to_entry(header: &BatchHeader, batch: Bytes) -> Result<Entry, EntryDecodeError> {
    let fail = |reason: &str| EntryDecodeError {
        offset: header.base_offset,
        reason: reason.to_string(),
    };
    let term = u64::try_from(header.leader_epoch).map_err(|_| fail("negative leader epoch"))?;
    let index = u64::try_from(header.base_offset).map_err(|_| fail("negative offset"))?;
    let count = u64::try_from(header.last_offset_delta).map_err(|_| fail("negative last offset delta"))? + 1;
    let raft_control = if header.is_control() && !header.is_transactional() {
        raft_control_record(header, &batch).map_err(|reason| fail(&reason))?
    } else {
        None
    };
    Ok(match raft_control {
        Some((CONTROL_TYPE_RAFT_NOOP, _)) => Entry::noop(term, index),
        Some((_, value)) => Entry {
            term,
            index,
            last_index: index,
            kind: EntryKind::Config,
            payload: value,
        },
        None => Entry::data(term, index, count, batch),
    })
}

/// `(type, value)` of a batch's Raft control record, `None` for any other batch.
fn raft_control_record(header: &BatchHeader, batch: &Bytes) -> Result<Option<(i16, Bytes)>, String> {
    let Some((control_type, value)) = single_control_record(header, batch) else {
        return Ok(None);
    };
    match control_type {
        CONTROL_TYPE_RAFT_NOOP => Ok(Some((control_type, Bytes::new()))),
        CONTROL_TYPE_RAFT_CONFIG => {
            let value = value.ok_or("configuration control record without a value")?;
            Ok(Some((control_type, value)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::validate_batch;
    use crate::raft::Membership;

    #[test]
    fn raft_entries_round_trip_through_control_batches() {
        let membership = Membership::with_voters([1, 2, 3]).unwrap();
        for entry in [Entry::noop(3, 0), Entry::config(3, 0, &membership)] {
            let batch = entry_to_batch(&entry);
            let mut stored = bytes::BytesMut::from(&batch[..]);
            crate::log::batch::set_leader_epoch(&mut stored, 3);
            let header = validate_batch(&stored).unwrap();
            assert!(header.is_control());
            let back = batch_to_entry(&header, stored.freeze()).unwrap();
            assert_eq!(back.kind, entry.kind);
            assert_eq!(back.payload, entry.payload);
            assert_eq!(back.term, 3);
        }
        assert_eq!(
            entry_to_batch(&Entry::noop(1, 0)),
            entry_to_batch(&Entry::noop(1, 0)),
            "deterministic"
        );
    }

    #[test]
    fn a_log_start_record_round_trips_and_is_a_data_entry() {
        let batch = log_start_batch(1234);
        let header = validate_batch(&batch).unwrap();
        assert!(header.is_control());
        assert_eq!(log_start_record(&header, &batch), Some(1234));
        let entry = batch_to_entry(&header, batch.clone()).unwrap();
        assert_eq!(entry.kind, EntryKind::Data);
        let noop = entry_to_batch(&Entry::noop(1, 0));
        assert_eq!(log_start_record(&validate_batch(&noop).unwrap(), &noop), None);
    }
}
