//! The controller replica's storage as the simulator models it (shared by
//! [`crate::controller_sim`] and [`crate::broker_sim`]): group 0's log as Kafka
//! batches, its hard state, commit hint, snapshot file and snapshot chunks being
//! received.
//!
//! Every write is applied to the current view at once and becomes durable when a sync
//! covering it completes, in order; a crash keeps the durable state plus a prefix of
//! the unsynced writes. [`Stored::recovered`] is what a restart hands the replica.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use oxbow_core::controller::SnapshotFile;
use oxbow_core::log::batch::{set_base_offset, set_leader_epoch, validate_batch};
use oxbow_core::partition::control::{batch_to_entry, entry_to_batch};
use oxbow_core::raft::{Entry, EntryKind, HardState, Input as RaftInput, LogId, ReadError, RecoveredState};

/// One node's controller storage (durable or as currently seen).
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// Raft term and vote.
    pub hard_state: HardState,
    /// Kafka batches by base offset, with (last offset, term).
    log: BTreeMap<u64, (u64, u64, Bytes)>,
    /// The snapshot file (`SnapshotFile` bytes).
    pub snapshot: Option<Bytes>,
    /// Snapshot files being received, by position (a real runtime writes each to its
    /// own temporary file and installs one by renaming it).
    incoming: BTreeMap<(u64, u64), Vec<u8>>,
    /// The commit hint persisted for restarts.
    pub commit_hint: Option<u64>,
}

/// One write to the controller's storage.
#[derive(Clone, Debug)]
pub enum Op {
    /// Replace the hard state.
    Hard(HardState),
    /// Append entries (replacing any at their indexes).
    Append(Vec<Entry>),
    /// Drop entries from this index on.
    Truncate(u64),
    /// A chunk of a snapshot being received.
    Chunk {
        /// The snapshot's position.
        last: LogId,
        /// Byte offset of the chunk.
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Install the received snapshot of `last`.
    Install {
        /// The snapshot's position.
        last: LogId,
        /// Drop the whole log (else keep the suffix after `last`).
        discard_log: bool,
    },
    /// Replace the snapshot file (this node's own snapshot).
    Snapshot(Bytes),
    /// Drop entries through this index.
    Compact(u64),
    /// Replace the commit hint.
    CommitHint(Option<u64>),
}

/// What to tell the replica once a write is durable.
#[derive(Clone, Debug)]
pub enum Completion {
    /// A Raft storage completion.
    Raft(RaftInput),
    /// The snapshot file of this position is durable.
    Snapshot(LogId),
}

fn stored_batch(entry: &Entry) -> Bytes {
    let mut batch = BytesMut::from(&entry_to_batch(entry)[..]);
    set_base_offset(&mut batch, i64::try_from(entry.index).unwrap_or(i64::MAX));
    set_leader_epoch(&mut batch, i32::try_from(entry.term).unwrap_or(i32::MAX));
    batch.freeze()
}

impl Stored {
    /// Applies one write.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Hard(hs) => self.hard_state = *hs,
            Op::Append(entries) => {
                for e in entries {
                    self.log.insert(e.index, (e.last_index, e.term, stored_batch(e)));
                }
            }
            Op::Truncate(from) => self.log.retain(|base, _| base < from),
            Op::Chunk { last, offset, data } => {
                let file = self.incoming.entry((last.term, last.index)).or_default();
                let at = usize::try_from(*offset).unwrap_or(usize::MAX).min(file.len());
                file.truncate(at);
                file.extend_from_slice(data);
            }
            Op::Install { last, discard_log } => {
                let key = (last.term, last.index);
                let file = self.incoming.remove(&key).unwrap_or_default();
                self.incoming.retain(|k, _| *k > key);
                self.snapshot = Some(Bytes::from(file));
                if *discard_log {
                    self.log.clear();
                } else {
                    self.log.retain(|base, _| *base > last.index);
                }
            }
            Op::Snapshot(data) => self.snapshot = Some(data.clone()),
            Op::Compact(through) => self.log.retain(|_, (last, _, _)| *last > *through),
            Op::CommitHint(hint) => self.commit_hint = *hint,
        }
    }

    fn entry_at(&self, base: u64) -> Result<Entry, String> {
        let (_, _, batch) = self.log.get(&base).ok_or("no batch")?;
        let header = validate_batch(batch).map_err(|e| e.to_string())?;
        batch_to_entry(&header, batch.clone()).map_err(|e| e.to_string())
    }

    /// Entries from `from_index`, up to about `max_bytes`.
    pub fn read(&self, from_index: u64, max_bytes: usize) -> Result<Vec<Entry>, ReadError> {
        let start = self
            .log
            .range(..=from_index)
            .next_back()
            .filter(|(_, (last, _, _))| *last >= from_index)
            .map(|(base, _)| *base)
            .ok_or(ReadError::Compacted)?;
        let mut out = Vec::new();
        let mut size = 0;
        for (&base, _) in self.log.range(start..) {
            let entry = self.entry_at(base).map_err(|_| ReadError::Storage)?;
            size += entry.size_bytes();
            out.push(entry);
            if size >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn snapshot_point(&self) -> Option<u64> {
        self.snapshot
            .as_ref()
            .and_then(|s| SnapshotFile::decode(s, usize::MAX).ok())
            .map(|f| f.meta.last.index)
    }

    /// What a restart finds: the log suffix after the snapshot (with the planted
    /// bug, the commit hint is the end of the log).
    pub fn recovered(&self, commit_hint_from_log_end: bool) -> Result<RecoveredState, String> {
        let point = self.snapshot_point();
        let mut recovered = RecoveredState {
            hard_state: self.hard_state,
            commit_hint: self.commit_hint,
            ..RecoveredState::default()
        };
        for (&base, &(last, term, _)) in &self.log {
            if point.is_some_and(|p| base <= p) {
                continue;
            }
            if recovered.term_boundaries.last().is_none_or(|(t, _)| *t != term) {
                recovered.term_boundaries.push((term, base));
            }
            recovered.last_index = Some(last);
            let entry = self.entry_at(base)?;
            if entry.kind == EntryKind::Config {
                recovered.config_entries.push(entry);
            }
        }
        if let Some(last_term) = recovered.term_boundaries.last().map(|(t, _)| *t) {
            if last_term > recovered.hard_state.term {
                // An append of a new term survived while its hard state did not: safe to
                // raise with no vote (nothing of that term left before it was durable).
                recovered.hard_state = HardState {
                    term: last_term,
                    vote: None,
                };
            }
        }
        if commit_hint_from_log_end {
            recovered.commit_hint = recovered.last_index.or(recovered.commit_hint);
        }
        Ok(recovered)
    }
}

/// The controller's storage: what is durable, what is seen, and the unsynced writes.
#[derive(Debug, Default)]
pub struct Disk {
    /// What survives a crash.
    pub durable: Stored,
    /// What the replica sees (durable + unsynced).
    pub current: Stored,
    /// Unsynced writes: (sequence, write, completion).
    pub pending: VecDeque<(u64, Op, Option<Completion>)>,
    next_seq: u64,
}

impl Disk {
    /// Applies a write to the current view; returns its sequence number.
    pub fn write(&mut self, op: Op, completion: Option<Completion>) -> u64 {
        self.current.apply(&op);
        self.next_seq += 1;
        self.pending.push_back((self.next_seq, op, completion));
        self.next_seq
    }

    /// Makes writes through `seq` durable; returns their completions in order.
    pub fn sync(&mut self, seq: u64) -> Vec<Completion> {
        let mut done = Vec::new();
        while self.pending.front().is_some_and(|(s, _, _)| *s <= seq) {
            if let Some((_, op, completion)) = self.pending.pop_front() {
                self.durable.apply(&op);
                done.extend(completion);
            }
        }
        done
    }

    /// A crash: the durable state plus the first `keep` unsynced writes survive.
    pub fn crash(&mut self, keep: usize) {
        for (_, op, _) in self.pending.drain(..).take(keep) {
            self.durable.apply(&op);
        }
        self.pending.clear();
        self.current = self.durable.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_durable_writes_and_a_prefix_of_the_rest() {
        let mut d = Disk::default();
        let hs = |term| HardState { term, vote: None };
        let s1 = d.write(Op::Hard(hs(1)), None);
        d.write(Op::Hard(hs(2)), None);
        d.write(Op::Hard(hs(3)), None);
        assert!(d.sync(s1).is_empty());
        d.crash(1);
        assert_eq!(d.durable.hard_state.term, 2);
        assert_eq!(d.current.hard_state.term, 2);
        assert!(d.pending.is_empty());
    }
}
