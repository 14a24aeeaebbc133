//! Transactional offset commits (TxnOffsetCommit, KIP-98 / KIP-447): offsets a
//! transactional producer commits for a group are written to the group's
//! `__consumer_offsets` partition as a transactional batch of ordinary offset records
//! (the producer's id and epoch, no sequence), held pending per producer, and applied to
//! the group's committed offsets only when that producer's COMMIT marker lands on the
//! partition; an ABORT marker discards them. Replay does the same from the log, so the
//! outcome is what the log says, across restarts and leader changes.
//!
//! While offsets are pending, an OffsetFetch with `require_stable` (KIP-447) answers
//! UNSTABLE_OFFSET_COMMIT for their partitions, so a consumer taking over does not
//! start from offsets the open transaction is about to replace.
//!
//! The hosting partition trims the log only below its last stable offset, which the
//! open transaction of a pending commit holds back, so a pending batch is never trimmed
//! before its marker.

use super::{Coordinator, CoordinatorOutput, Group, GroupResult, ReplyId, Status};
use crate::group::records::{GroupRecord, OffsetValue};
use crate::group::{CommitEntry, PartitionErrors};
use crate::kafka::ErrorCode;
use crate::log::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::log::builder::{build_batch, BatchOptions, NewRecord, ProducerFields};
use crate::log::records::parse_uncompressed_records;
use crate::time::Instant;
use crate::txn::marker::parse_marker;
use bytes::Bytes;
use std::collections::BTreeMap;

/// A TxnOffsetCommit for one group.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TxnCommit {
    /// The group.
    pub group: String,
    /// The transactional producer.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// The consumer's generation (KIP-447; -1 when not sent).
    pub generation: i32,
    /// The consumer's member id (empty when not sent).
    pub member_id: String,
    /// The consumer's static instance id.
    pub instance_id: Option<String>,
    /// The offsets.
    pub entries: Vec<CommitEntry>,
}

/// Offsets of one producer's open transaction: `(group, topic, partition) → value`.
type PendingOffsets = BTreeMap<(String, String, i32), OffsetValue>;

/// Pending transactional offsets of one coordinator.
#[derive(Debug, Default)]
pub struct TxnOffsets {
    /// Durable (their batch is committed), waiting for the producer's marker.
    pending: BTreeMap<i64, PendingOffsets>,
    /// Appends in flight: token → (reply, producer, offsets, per-partition answers).
    appends: BTreeMap<u64, (ReplyId, i64, PendingOffsets, PartitionErrors)>,
}

fn records_of(header: &BatchHeader, batch: &Bytes) -> Option<Vec<GroupRecord>> {
    if header.attributes & 0x07 != 0 {
        return None;
    }
    let end = header.size_bytes().min(batch.len());
    let records = batch.slice(BATCH_HEADER_BYTES..end);
    let parsed = parse_uncompressed_records(&records, header.record_count).ok()?;
    parsed
        .into_iter()
        .map(|r| GroupRecord::decode(r.key.as_deref(), r.value.as_deref()).ok())
        .collect()
}

impl Coordinator {
    /// Replays a transactional batch (offsets of a transaction, or its marker).
    pub(super) fn replay_txn_batch(&mut self, header: &BatchHeader, batch: &Bytes) {
        if header.is_control() {
            if let Some(marker) = parse_marker(batch) {
                self.on_txn_marker(marker.producer_id, marker.commit);
            }
            return;
        }
        let Some(records) = records_of(header, batch) else {
            self.corrupt_records += 1;
            return;
        };
        let pending = self.txn_offsets.pending.entry(header.producer_id).or_default();
        for record in records {
            if let GroupRecord::Offset {
                group,
                topic,
                partition,
                value: Some(value),
            } = record
            {
                pending.insert((group, topic, partition), value);
            }
        }
    }

    /// A marker of `producer_id` is committed on this partition: its pending offsets
    /// become the groups' committed offsets (COMMIT) or are dropped (ABORT).
    pub fn on_txn_marker(&mut self, producer_id: i64, commit: bool) {
        let Some(pending) = self.txn_offsets.pending.remove(&producer_id) else {
            return;
        };
        if !commit {
            return;
        }
        self.metrics.offset_commits += pending.len() as u64;
        for ((group, topic, partition), value) in pending {
            self.apply_durable(GroupRecord::Offset {
                group,
                topic,
                partition,
                value: Some(value),
            });
        }
    }

    /// The partitions of `group` with offsets pending in an open transaction (a
    /// `require_stable` OffsetFetch answers UNSTABLE_OFFSET_COMMIT for them).
    pub(super) fn txn_pending_partitions(&self, group: &str) -> Vec<(String, i32)> {
        self.txn_offsets
            .pending
            .values()
            .flat_map(|offsets| offsets.keys())
            .filter(|(g, _, _)| g == group)
            .map(|(_, topic, partition)| (topic.clone(), *partition))
            .collect()
    }

    /// Pending transactional offsets.
    pub fn txn_offsets(&self) -> &TxnOffsets {
        &self.txn_offsets
    }

    /// Serves a TxnOffsetCommit: checks the member (when the request names one), writes
    /// the offsets as a transactional batch, answers once it is committed.
    pub fn txn_commit(&mut self, now: Instant, wall_ms: i64, reply: ReplyId, commit: TxnCommit) {
        let code = match self.status {
            Status::Active => None,
            Status::Loading => Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
            _ => Some(ErrorCode::NOT_COORDINATOR),
        };
        if let Some(code) = code {
            return self.outputs.push_back(CoordinatorOutput::Reply {
                reply,
                result: GroupResult::Error(code.0),
            });
        }
        let check = match self.groups.get_mut(&commit.group) {
            // Without a member (v0-2 requests, or a producer outside the group), any
            // group may be written, as Kafka allows.
            _ if commit.generation < 0 && commit.member_id.is_empty() => Ok(()),
            None => Err(ErrorCode::ILLEGAL_GENERATION),
            Some(Group::Classic(g)) => {
                let check = g.check_commit(
                    commit.generation,
                    &commit.member_id,
                    commit.instance_id.as_deref(),
                );
                if check.is_ok() {
                    g.touch(now, &commit.member_id);
                }
                check
            }
            Some(Group::Consumer(g)) => g.check_commit(commit.generation, &commit.member_id),
        };
        let mut errors = PartitionErrors::new();
        let mut accepted = PendingOffsets::new();
        for entry in commit.entries {
            let code = match &check {
                Err(code) => code.0,
                Ok(())
                    if entry
                        .metadata
                        .as_ref()
                        .is_some_and(|m| m.len() > self.config.max_metadata_bytes) =>
                {
                    ErrorCode::OFFSET_METADATA_TOO_LARGE.0
                }
                Ok(()) => {
                    let value = OffsetValue {
                        offset: entry.offset,
                        leader_epoch: entry.leader_epoch,
                        metadata: entry.metadata.clone(),
                        commit_timestamp_ms: wall_ms,
                    };
                    accepted.insert(
                        (commit.group.clone(), entry.topic.clone(), entry.partition),
                        value,
                    );
                    0
                }
            };
            errors
                .entry(entry.topic)
                .or_default()
                .push((entry.partition, code));
        }
        if accepted.is_empty() {
            return self.outputs.push_back(CoordinatorOutput::Reply {
                reply,
                result: GroupResult::Committed(errors),
            });
        }
        let records: Vec<NewRecord> = accepted
            .iter()
            .map(|((group, topic, partition), value)| {
                let record = GroupRecord::Offset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: Some(value.clone()),
                };
                NewRecord {
                    key: Some(record.key()),
                    value: record.value(),
                    timestamp_ms: wall_ms,
                    headers: Vec::new(),
                }
            })
            .collect();
        let batch = build_batch(
            &records,
            BatchOptions {
                producer: ProducerFields {
                    producer_id: commit.producer_id,
                    producer_epoch: commit.producer_epoch,
                    base_sequence: -1,
                },
                transactional: true,
                ..BatchOptions::default()
            },
        );
        let token = self.next_token;
        self.next_token += 1;
        self.txn_offsets
            .appends
            .insert(token, (reply, commit.producer_id, accepted, errors));
        self.outputs.push_back(CoordinatorOutput::Append { token, batch });
    }

    /// If `token` is a transactional commit's append, finishes it (`true`).
    pub(super) fn txn_append_done(&mut self, token: u64, result: Result<i64, i16>) -> bool {
        let Some((reply, producer_id, offsets, errors)) = self.txn_offsets.appends.remove(&token) else {
            return false;
        };
        match result {
            Ok(_) => {
                self.txn_offsets
                    .pending
                    .entry(producer_id)
                    .or_default()
                    .extend(offsets);
                self.outputs.push_back(CoordinatorOutput::Reply {
                    reply,
                    result: GroupResult::Committed(errors),
                });
            }
            Err(code) => {
                let code = if code == ErrorCode::INVALID_PRODUCER_EPOCH.0 {
                    code
                } else {
                    ErrorCode::NOT_COORDINATOR.0
                };
                self.outputs.push_back(CoordinatorOutput::Reply {
                    reply,
                    result: GroupResult::Error(code),
                });
            }
        }
        true
    }

    /// The coordinator unloads: waiting commits fail NOT_COORDINATOR; pending offsets
    /// are rebuilt by the next replay.
    pub(super) fn txn_offsets_unload(&mut self) {
        for (_, (reply, ..)) in std::mem::take(&mut self.txn_offsets.appends) {
            self.outputs.push_back(CoordinatorOutput::Reply {
                reply,
                result: GroupResult::Error(ErrorCode::NOT_COORDINATOR.0),
            });
        }
        self.txn_offsets.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{GroupConfig, GroupOp};
    use crate::txn::marker::{build_marker, Marker};
    use bytes::BytesMut;

    const WALL_MS: i64 = 1_700_000_000_000;

    fn active() -> Coordinator {
        let mut c = Coordinator::new(0, GroupConfig::default(), 7);
        c.begin_load(1);
        c.finish_load(Instant::ZERO, WALL_MS);
        c
    }

    fn commit(producer_id: i64, offset: i64) -> TxnCommit {
        TxnCommit {
            group: "g".to_string(),
            producer_id,
            producer_epoch: 0,
            generation: -1,
            member_id: String::new(),
            instance_id: None,
            entries: vec![CommitEntry {
                topic: "t".to_string(),
                partition: 0,
                offset,
                leader_epoch: -1,
                metadata: None,
            }],
        }
    }

    /// Commits `commit` durably at `base_offset`; returns the batch written.
    fn txn_commit_durable(c: &mut Coordinator, commit: TxnCommit, base_offset: i64) -> Bytes {
        c.txn_commit(Instant::ZERO, WALL_MS, ReplyId(1), commit);
        let Some(CoordinatorOutput::Append { token, batch }) = c.poll_output() else {
            panic!("a transactional append");
        };
        let header = BatchHeader::parse(&batch).unwrap();
        assert!(header.is_transactional() && header.base_sequence == -1);
        c.on_append_done(Instant::ZERO, WALL_MS, token, Ok(base_offset));
        assert!(matches!(
            c.poll_output(),
            Some(CoordinatorOutput::Reply {
                result: GroupResult::Committed(_),
                ..
            })
        ));
        let mut stored = BytesMut::from(&batch[..]);
        crate::log::batch::set_base_offset(&mut stored, base_offset);
        stored.freeze()
    }

    /// (offset, error) of t/0 for group g.
    fn fetch(c: &mut Coordinator, require_stable: bool) -> (i64, i16) {
        let op = GroupOp::FetchOffsets {
            group: "g".to_string(),
            topics: Some(vec![("t".to_string(), vec![0])]),
            require_stable,
            member: None,
        };
        c.handle(Instant::ZERO, WALL_MS, ReplyId(9), op);
        match c.poll_output() {
            Some(CoordinatorOutput::Reply {
                result: GroupResult::Offsets { topics, .. },
                ..
            }) => {
                let o = &topics["t"][0];
                (o.offset, o.error)
            }
            other => panic!("{other:?}"),
        }
    }

    fn marker(producer_id: i64, commit: bool, offset: i64) -> Bytes {
        let m = Marker {
            producer_id,
            producer_epoch: 0,
            commit,
            coordinator_epoch: 0,
        };
        let mut stored = BytesMut::from(&build_marker(&m, WALL_MS)[..]);
        crate::log::batch::set_base_offset(&mut stored, offset);
        stored.freeze()
    }

    #[test]
    fn offsets_wait_for_the_commit_marker_and_an_abort_drops_them() {
        let mut c = active();
        txn_commit_durable(&mut c, commit(5, 42), 10);
        assert_eq!(fetch(&mut c, false), (-1, 0), "not visible before the marker");
        assert_eq!(
            fetch(&mut c, true),
            (-1, ErrorCode::UNSTABLE_OFFSET_COMMIT.0),
            "require_stable is told to wait"
        );
        c.on_txn_marker(5, true);
        assert_eq!(fetch(&mut c, true), (42, 0));
        txn_commit_durable(&mut c, commit(6, 99), 12);
        c.on_txn_marker(6, false);
        assert_eq!(fetch(&mut c, true), (42, 0), "the aborted offsets are dropped");
        // A marker of a producer with nothing pending changes nothing.
        c.on_txn_marker(7, true);
        assert_eq!(fetch(&mut c, false), (42, 0));
    }

    #[test]
    fn replay_applies_only_what_a_commit_marker_follows() {
        let mut live = active();
        let committed = txn_commit_durable(&mut live, commit(5, 42), 0);
        let aborted = txn_commit_durable(&mut live, commit(6, 77), 1);
        let open = txn_commit_durable(&mut live, commit(8, 500), 2);
        let mut log = BytesMut::new();
        for batch in [
            &committed,
            &aborted,
            &open,
            &marker(5, true, 3),
            &marker(6, false, 4),
        ] {
            log.extend_from_slice(batch);
        }
        let mut c = Coordinator::new(0, GroupConfig::default(), 7);
        c.begin_load(2);
        assert_eq!(c.load_batches(&log.freeze()).unwrap(), Some(5));
        c.finish_load(Instant::ZERO, WALL_MS);
        assert_eq!(
            fetch(&mut c, true),
            (42, ErrorCode::UNSTABLE_OFFSET_COMMIT.0),
            "producer 8's transaction is still open"
        );
        c.on_txn_marker(8, true);
        assert_eq!(fetch(&mut c, true), (500, 0));
    }
}
