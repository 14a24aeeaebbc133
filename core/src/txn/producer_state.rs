//! [`ProducerStateTable`]: what one partition knows about its idempotent producers —
//! per producer id the epoch, and the sequence ranges and offsets of its last
//! [`MAX_BATCHES_PER_PRODUCER`] batches — and the check a leader runs on an incoming
//! batch before appending it.
//!
//! The table is a pure function of the log: [`ProducerStateTable::apply`] feeds it one
//! stored batch at a time, in offset order, on every replica (leaders and followers
//! alike), never failing, so replaying the same log yields the same table.
//! [`ProducerStateTable::check`] is the leader's gate in front of the log:
//!
//! | incoming batch (same producer id)                     | outcome                          |
//! |-------------------------------------------------------|----------------------------------|
//! | same sequence range as one of the last 5 batches      | duplicate: its original offsets  |
//! | epoch below the producer's                            | INVALID_PRODUCER_EPOCH           |
//! | epoch above the producer's, first sequence ≠ 0        | OUT_OF_ORDER_SEQUENCE_NUMBER     |
//! | same epoch, first sequence ≠ last sequence + 1        | OUT_OF_ORDER_SEQUENCE_NUMBER     |
//! | producer id unknown here, first sequence ≠ 0          | UNKNOWN_PRODUCER_ID              |
//!
//! Sequences wrap from `i32::MAX` to 0. An unknown producer must start at sequence 0:
//! Kafka 2.5–4.x accept any first sequence from a producer they hold no state for
//! (KIP-360), which lets a lost first batch go unnoticed; Oxbow refuses it with the
//! retriable UNKNOWN_PRODUCER_ID, on which KIP-360 clients bump their epoch and restart
//! at sequence 0 (the stricter rule Kafka itself has been moving to).
//!
//! Limits: a producer is forgotten when idle for `expiration_ms` (Kafka's
//! `producer.id.expiration.ms`, measured against batch max timestamps by
//! [`ProducerStateTable::expire`], which the owner calls with the wall clock), and at
//! most `max_producers` are kept: applying a batch of a new producer beyond the bound
//! evicts the producer whose last write is oldest in the log. Eviction depends only on
//! the log, so every replica evicts the same producer. A forgotten producer's next
//! batch (sequence ≠ 0) gets UNKNOWN_PRODUCER_ID, and its old batches can no longer be
//! recognised as duplicates — the same contract as Kafka's expiry.
//!
//! Transactions: a transactional data batch opens the producer's transaction at its
//! base offset ([`ProducerEntry::txn_first_offset`]) unless one is open; a transaction
//! marker (a control batch with the transactional bit, written by the coordinator)
//! closes it, and an ABORT marker adds `(producer, first offset, marker offset)` to the
//! aborted-transaction index, which `read_committed` fetches consult
//! ([`ProducerStateTable::aborted_overlapping`]). The first offset of the oldest open
//! transaction bounds the last stable offset ([`ProducerStateTable::first_unstable_offset`]).
//! The index is bounded by the log: entries whose marker is below the log start are
//! dropped ([`ProducerStateTable::trim_aborted_below`]); it travels in snapshots, so it
//! is recovered from the snapshot plus the log suffix like the rest of the table.
//! Producers with an open transaction never expire; evicting one (the `max_producers`
//! bound) forgets its transaction too, which is why the bound is large.

use crate::log::BatchHeader;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Batches remembered per producer: Kafka's bound on in-flight requests of an
/// idempotent producer (`max.in.flight.requests.per.connection` ≤ 5).
pub const MAX_BATCHES_PER_PRODUCER: usize = 5;

/// Kafka error codes of producer-state refusals.
pub mod error_code {
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// INVALID_PRODUCER_EPOCH.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// INVALID_TXN_STATE.
    pub const INVALID_TXN_STATE: i16 = 48;
    /// UNKNOWN_PRODUCER_ID.
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    /// INVALID_RECORD.
    pub const INVALID_RECORD: i16 = 87;
}

/// Settings of a partition's producer state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProducerStateConfig {
    /// Forget a producer idle this long (`producer.id.expiration.ms`).
    pub expiration_ms: i64,
    /// Most producers kept per partition; beyond it the least recently written one is
    /// evicted.
    pub max_producers: usize,
    /// Longest interval between producer-state snapshots of a partition that takes
    /// writes (a snapshot is also taken when a segment rolls).
    pub snapshot_interval_ms: u64,
    /// Planted bugs (the simulator's checker tests only).
    #[cfg(feature = "sim-bugs")]
    pub bugs: ProducerBugs,
}

/// Bugs the simulator plants in a partition's producer state (feature `sim-bugs`; set
/// through [`ProducerStateConfig::bugs`]). Every switch is off by default.
#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ProducerBugs {
    /// A retried batch is never recognised as a duplicate (a dedupe window of 0): it
    /// is written again.
    pub dedupe_window_zero: bool,
    /// A batch of the epoch just before the producer's current one is appended (a
    /// late retry of the previous transaction after transaction protocol v2's bump).
    pub accept_previous_epoch: bool,
}

impl Default for ProducerStateConfig {
    fn default() -> Self {
        ProducerStateConfig {
            expiration_ms: 86_400_000,
            max_producers: 10_000,
            snapshot_interval_ms: 60_000,
            #[cfg(feature = "sim-bugs")]
            bugs: ProducerBugs::default(),
        }
    }
}

/// Why the leader refuses a batch.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// The batch's epoch is older than the producer's.
    #[error("producer {producer_id}: epoch {epoch} is older than the current {current}")]
    StaleEpoch {
        /// Producer id.
        producer_id: i64,
        /// Epoch of the batch.
        epoch: i16,
        /// Epoch the partition knows.
        current: i16,
    },
    /// The batch does not continue the producer's sequence.
    #[error("producer {producer_id}: sequence {first_seq} does not follow {expected_after}")]
    OutOfOrder {
        /// Producer id.
        producer_id: i64,
        /// First sequence of the batch.
        first_seq: i32,
        /// Last sequence the partition holds (-1 for a new epoch, which starts at 0).
        expected_after: i32,
    },
    /// The partition holds no state for this producer and the batch does not start at 0.
    #[error("producer {producer_id} is unknown here and sequence {first_seq} is not 0")]
    UnknownProducer {
        /// Producer id.
        producer_id: i64,
        /// First sequence of the batch.
        first_seq: i32,
    },
    /// Producer fields that make no sense (a producer id with no sequence, a control
    /// batch from a client).
    #[error("invalid producer fields: {0}")]
    InvalidBatch(&'static str),
    /// A transaction marker whose epoch is older than the producer's.
    #[error("producer {producer_id}: marker epoch {epoch} is older than the current {current}")]
    StaleMarker {
        /// Producer id.
        producer_id: i64,
        /// Epoch of the marker.
        epoch: i16,
        /// Epoch the partition knows.
        current: i16,
    },
}

impl ProducerError {
    /// The Kafka error code.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ProducerError::StaleEpoch { .. } => error_code::INVALID_PRODUCER_EPOCH,
            ProducerError::OutOfOrder { .. } => error_code::OUT_OF_ORDER_SEQUENCE_NUMBER,
            ProducerError::UnknownProducer { .. } => error_code::UNKNOWN_PRODUCER_ID,
            ProducerError::InvalidBatch(_) => error_code::INVALID_RECORD,
            ProducerError::StaleMarker { .. } => error_code::INVALID_PRODUCER_EPOCH,
        }
    }
}

/// The producer fields and offsets of one stored batch: all producer state needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BatchMeta {
    /// Producer id (-1: not an idempotent batch).
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record (-1: none).
    pub first_seq: i32,
    /// Sequence of the last record (wrapping past `i32::MAX` to 0).
    pub last_seq: i32,
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Largest record timestamp of the batch.
    pub max_timestamp_ms: i64,
    /// Transactional bit.
    pub transactional: bool,
    /// Control bit.
    pub control: bool,
    /// A transaction marker saying ABORT (only with `control` and `transactional`; the
    /// caller that reads the marker's record sets it).
    pub abort_marker: bool,
}

impl BatchMeta {
    /// The producer fields of a batch whose offsets are those in `header`.
    pub fn from_header(header: &BatchHeader) -> BatchMeta {
        BatchMeta {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_seq: increment_sequence(header.base_sequence, header.last_offset_delta),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp_ms: header.max_timestamp_ms,
            transactional: header.is_transactional(),
            control: header.is_control(),
            abort_marker: false,
        }
    }

    /// The producer fields of a stored batch: [`BatchMeta::from_header`], plus whether
    /// a transaction marker says ABORT (read from its control record).
    pub fn from_stored(header: &BatchHeader, batch: &[u8]) -> BatchMeta {
        let mut meta = BatchMeta::from_header(header);
        if meta.control && meta.transactional {
            meta.abort_marker = super::marker::is_abort_marker(batch);
        }
        meta
    }

    /// The same batch placed at `base_offset`.
    pub fn at_offset(mut self, base_offset: i64) -> BatchMeta {
        self.last_offset = base_offset + (self.last_offset - self.base_offset);
        self.base_offset = base_offset;
        self
    }

    /// Whether producer state tracks this batch (it carries a producer id).
    pub fn is_tracked(&self) -> bool {
        self.producer_id >= 0
    }

    /// Whether it carries a sequence (idempotent data, not a marker).
    fn has_sequence(&self) -> bool {
        self.first_seq >= 0 && !self.control
    }
}

/// `sequence + increment`, wrapping from `i32::MAX` to 0 as Kafka's sequences do.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence < 0 || increment < 0 {
        return sequence;
    }
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// One remembered batch of a producer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SeqRange {
    /// First sequence.
    pub first_seq: i32,
    /// Last sequence.
    pub last_seq: i32,
    /// Base offset it was stored at.
    pub base_offset: i64,
    /// Last offset it was stored at.
    pub last_offset: i64,
}

/// What a partition knows about one producer id.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProducerEntry {
    /// The newest epoch seen.
    pub epoch: i16,
    /// The last batches of that epoch, oldest first (at most
    /// [`MAX_BATCHES_PER_PRODUCER`]).
    pub batches: VecDeque<SeqRange>,
    /// Largest timestamp of the producer's last batch (for expiry).
    pub last_timestamp_ms: i64,
    /// Offset of the producer's last batch (eviction order).
    pub last_offset: i64,
    /// First offset of the producer's open transaction, if one is open.
    pub txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }
}

/// What the leader should do with a batch that passed [`ProducerStateTable::check`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CheckOutcome {
    /// Append it.
    Append,
    /// It is a retry of a stored batch: answer with that batch's offsets, write nothing.
    Duplicate {
        /// Base offset of the original.
        base_offset: i64,
        /// Last offset of the original.
        last_offset: i64,
    },
}

/// One producer as DescribeProducers shows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProducerSummary {
    /// Producer id.
    pub producer_id: i64,
    /// Current epoch.
    pub epoch: i16,
    /// Last sequence written (-1: none).
    pub last_sequence: i32,
    /// Largest timestamp of its last batch.
    pub last_timestamp_ms: i64,
    /// First offset of its open transaction (-1: none).
    pub txn_start_offset: i64,
}

/// An aborted transaction of one producer: its first offset and the offset of its
/// ABORT marker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AbortedTxn {
    /// Producer id.
    pub producer_id: i64,
    /// Offset of the transaction's first batch.
    pub first_offset: i64,
    /// Offset of its ABORT marker.
    pub last_offset: i64,
}

/// The producer state of one partition.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ProducerStateTable {
    producers: BTreeMap<i64, ProducerEntry>,
    /// `(last offset, producer id)` of every producer: the eviction order.
    by_last_offset: BTreeSet<(i64, i64)>,
    /// `(first offset, producer id)` of every open transaction.
    open_txns: BTreeSet<(i64, i64)>,
    /// Aborted transactions by the offset of their marker.
    aborted: BTreeMap<i64, AbortedTxn>,
    /// Every batch below this offset has been applied.
    next_offset: i64,
}

impl ProducerStateTable {
    /// An empty table covering nothing below `next_offset`.
    pub fn new(next_offset: i64) -> ProducerStateTable {
        ProducerStateTable {
            next_offset,
            ..ProducerStateTable::default()
        }
    }

    /// A table from decoded parts (snapshots).
    pub fn from_entries(
        next_offset: i64,
        producers: BTreeMap<i64, ProducerEntry>,
        aborted: Vec<AbortedTxn>,
    ) -> ProducerStateTable {
        let by_last_offset = producers
            .iter()
            .map(|(id, entry)| (entry.last_offset, *id))
            .collect();
        let open_txns = producers
            .iter()
            .filter_map(|(id, entry)| entry.txn_first_offset.map(|first| (first, *id)))
            .collect();
        ProducerStateTable {
            producers,
            by_last_offset,
            open_txns,
            aborted: aborted.into_iter().map(|a| (a.last_offset, a)).collect(),
            next_offset,
        }
    }

    /// The first offset of the oldest open transaction, if any is open.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open_txns.first().map(|(first, _)| *first)
    }

    /// Open transactions as `(first offset, producer id)`, oldest first.
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.open_txns.iter().copied()
    }

    /// Every aborted transaction in the index, by marker offset.
    pub fn aborted(&self) -> impl Iterator<Item = &AbortedTxn> {
        self.aborted.values()
    }

    /// Aborted transactions with data in `[from, to)`: marker at or after `from`, first
    /// batch before `to` (what a `read_committed` fetch of that range must be told).
    /// Walks only the entries whose marker is at or after `from`.
    pub fn aborted_overlapping(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .range(from..)
            .map(|(_, a)| *a)
            .filter(|a| a.first_offset < to)
            .collect()
    }

    /// Drops aborted-index entries whose marker is below `offset` (the log start: no
    /// fetch can read their data any more).
    pub fn trim_aborted_below(&mut self, offset: i64) {
        self.aborted = self.aborted.split_off(&offset);
    }

    /// One past the last offset applied.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Marks everything below `offset` as applied (batches without producer state —
    /// Raft's control batches, plain produce — move it too).
    pub fn advance_to(&mut self, offset: i64) {
        self.next_offset = self.next_offset.max(offset);
    }

    /// What DescribeProducers shows of each producer.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        self.producers
            .iter()
            .map(|(id, e)| ProducerSummary {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.last_seq().unwrap_or(-1),
                last_timestamp_ms: e.last_timestamp_ms,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect()
    }

    /// Producers known, by id.
    pub fn producers(&self) -> &BTreeMap<i64, ProducerEntry> {
        &self.producers
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The leader's check of an incoming batch against everything applied (including
    /// appends not yet committed).
    pub fn check(&self, batch: &BatchMeta) -> Result<CheckOutcome, ProducerError> {
        if batch.control {
            return Err(ProducerError::InvalidBatch(
                "control batches are written by the broker only",
            ));
        }
        if !batch.is_tracked() {
            return Ok(CheckOutcome::Append);
        }
        if batch.transactional && batch.first_seq < 0 && batch.producer_epoch >= 0 {
            // A group coordinator's transactional offset commit carries no sequence
            // (Kafka's coordinator appends skip sequence checks too): only the epoch
            // is checked, and it is never a duplicate.
            return match self.producers.get(&batch.producer_id) {
                Some(entry) if batch.producer_epoch < entry.epoch => Err(ProducerError::StaleEpoch {
                    producer_id: batch.producer_id,
                    epoch: batch.producer_epoch,
                    current: entry.epoch,
                }),
                _ => Ok(CheckOutcome::Append),
            };
        }
        if batch.first_seq < 0 || batch.producer_epoch < 0 {
            return Err(ProducerError::InvalidBatch(
                "a producer id without an epoch or sequence",
            ));
        }
        let producer_id = batch.producer_id;
        let Some(entry) = self.producers.get(&producer_id) else {
            return if batch.first_seq == 0 {
                Ok(CheckOutcome::Append)
            } else {
                Err(ProducerError::UnknownProducer {
                    producer_id,
                    first_seq: batch.first_seq,
                })
            };
        };
        if batch.producer_epoch < entry.epoch {
            return Err(ProducerError::StaleEpoch {
                producer_id,
                epoch: batch.producer_epoch,
                current: entry.epoch,
            });
        }
        if batch.producer_epoch > entry.epoch {
            return if batch.first_seq == 0 {
                Ok(CheckOutcome::Append)
            } else {
                Err(ProducerError::OutOfOrder {
                    producer_id,
                    first_seq: batch.first_seq,
                    expected_after: -1,
                })
            };
        }
        if let Some(original) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq)
        {
            return Ok(CheckOutcome::Duplicate {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
            });
        }
        match entry.last_seq() {
            None if batch.first_seq == 0 => Ok(CheckOutcome::Append),
            None => Err(ProducerError::UnknownProducer {
                producer_id,
                first_seq: batch.first_seq,
            }),
            Some(last) if increment_sequence(last, 1) == batch.first_seq => Ok(CheckOutcome::Append),
            Some(last) => Err(ProducerError::OutOfOrder {
                producer_id,
                first_seq: batch.first_seq,
                expected_after: last,
            }),
        }
    }

    /// The leader's check of a transaction marker the coordinator asks for: refused if
    /// its epoch is older than the producer's (a fenced coordinator's late marker).
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), ProducerError> {
        match self.producers.get(&producer_id) {
            Some(entry) if epoch < entry.epoch => Err(ProducerError::StaleMarker {
                producer_id,
                epoch,
                current: entry.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Applies a stored batch (in offset order, at or after [`Self::next_offset`]).
    /// Never fails: the log is the truth, whatever it holds. Returns the producer
    /// evicted to stay within `max_producers`, if one was.
    pub fn apply(&mut self, batch: &BatchMeta, max_producers: usize) -> Option<i64> {
        assert!(
            batch.base_offset >= self.next_offset,
            "producer state applies batches in log order: {} after {}",
            batch.base_offset,
            self.next_offset
        );
        self.next_offset = batch.last_offset + 1;
        if !batch.is_tracked() || batch.producer_epoch < 0 {
            return None;
        }
        let mut evicted = None;
        if !self.producers.contains_key(&batch.producer_id) {
            evicted = self.evict_to(max_producers.max(1) - 1);
        }
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp_ms: batch.max_timestamp_ms,
                last_offset: batch.last_offset,
                txn_first_offset: None,
            });
        if batch.producer_epoch < entry.epoch {
            // Only a leader that skipped its check writes this; the newer epoch stands.
            return evicted;
        }
        if batch.producer_epoch > entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        if batch.transactional {
            let producer_id = batch.producer_id;
            match (batch.control, entry.txn_first_offset) {
                (false, None) => {
                    entry.txn_first_offset = Some(batch.base_offset);
                    self.open_txns.insert((batch.base_offset, producer_id));
                }
                (true, Some(first_offset)) => {
                    entry.txn_first_offset = None;
                    self.open_txns.remove(&(first_offset, producer_id));
                    if batch.abort_marker {
                        self.aborted.insert(
                            batch.base_offset,
                            AbortedTxn {
                                producer_id,
                                first_offset,
                                last_offset: batch.base_offset,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        if batch.has_sequence() {
            if entry.batches.len() == MAX_BATCHES_PER_PRODUCER {
                entry.batches.pop_front();
            }
            entry.batches.push_back(SeqRange {
                first_seq: batch.first_seq,
                last_seq: batch.last_seq,
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
            });
        }
        self.by_last_offset
            .remove(&(entry.last_offset, batch.producer_id));
        entry.last_offset = batch.last_offset;
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(batch.max_timestamp_ms);
        self.by_last_offset.insert((entry.last_offset, batch.producer_id));
        evicted
    }

    /// Evicts least recently written producers until at most `keep` remain.
    fn evict_to(&mut self, keep: usize) -> Option<i64> {
        let mut evicted = None;
        while self.producers.len() > keep {
            let Some((_, id)) = self.by_last_offset.pop_first() else {
                break;
            };
            if let Some(first) = self.producers.remove(&id).and_then(|e| e.txn_first_offset) {
                self.open_txns.remove(&(first, id));
            }
            evicted = Some(id);
        }
        evicted
    }

    /// Forgets producers whose last batch is older than `expiration_ms` at wall-clock
    /// time `now_wall_ms`; returns how many.
    pub fn expire(&mut self, now_wall_ms: i64, expiration_ms: i64) -> usize {
        let expired: Vec<(i64, i64)> = self
            .producers
            .iter()
            .filter(|(_, e)| {
                e.txn_first_offset.is_none()
                    && now_wall_ms.saturating_sub(e.last_timestamp_ms) >= expiration_ms
            })
            .map(|(id, e)| (*id, e.last_offset))
            .collect();
        for (id, last_offset) in &expired {
            self.producers.remove(id);
            self.by_last_offset.remove(&(*last_offset, *id));
        }
        expired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 100;

    fn meta(pid: i64, epoch: i16, first_seq: i32, count: i32, base_offset: i64) -> BatchMeta {
        BatchMeta {
            producer_id: pid,
            producer_epoch: epoch,
            first_seq,
            last_seq: increment_sequence(first_seq, count - 1),
            base_offset,
            last_offset: base_offset + i64::from(count) - 1,
            max_timestamp_ms: 1_000,
            transactional: false,
            control: false,
            abort_marker: false,
        }
    }

    /// Checks and, if appendable, applies at the table's end; returns the outcome.
    fn send(table: &mut ProducerStateTable, batch: BatchMeta) -> Result<CheckOutcome, ProducerError> {
        let batch = batch.at_offset(table.next_offset());
        let outcome = table.check(&batch)?;
        if outcome == CheckOutcome::Append {
            table.apply(&batch, MAX);
        }
        Ok(outcome)
    }

    #[test]
    fn sequences_continue_duplicates_answer_with_their_offsets_and_gaps_are_refused() {
        let mut t = ProducerStateTable::new(0);
        assert_eq!(send(&mut t, meta(7, 0, 0, 3, 0)), Ok(CheckOutcome::Append));
        assert_eq!(send(&mut t, meta(7, 0, 3, 2, 0)), Ok(CheckOutcome::Append));
        assert_eq!(
            send(&mut t, meta(7, 0, 0, 3, 0)),
            Ok(CheckOutcome::Duplicate {
                base_offset: 0,
                last_offset: 2
            })
        );
        assert_eq!(
            send(&mut t, meta(7, 0, 6, 1, 0)).unwrap_err().kafka_error_code(),
            error_code::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // A retry that overlaps without matching a stored batch is out of order too.
        assert!(send(&mut t, meta(7, 0, 1, 2, 0)).is_err());
        assert_eq!(t.next_offset(), 5);
    }

    #[test]
    fn epochs_fence_and_a_new_epoch_starts_at_zero() {
        let mut t = ProducerStateTable::new(0);
        send(&mut t, meta(1, 3, 0, 1, 0)).unwrap();
        let stale = send(&mut t, meta(1, 2, 1, 1, 0)).unwrap_err();
        assert_eq!(stale.kafka_error_code(), error_code::INVALID_PRODUCER_EPOCH);
        let bad_start = send(&mut t, meta(1, 4, 5, 1, 0)).unwrap_err();
        assert_eq!(
            bad_start.kafka_error_code(),
            error_code::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(send(&mut t, meta(1, 4, 0, 1, 0)), Ok(CheckOutcome::Append));
        assert_eq!(t.producers()[&1].epoch, 4);
        // The old epoch's batches are gone with it: a retry of one is fenced.
        assert!(send(&mut t, meta(1, 3, 0, 1, 0)).is_err());
    }

    #[test]
    fn an_unknown_producer_must_start_at_zero() {
        let mut t = ProducerStateTable::new(0);
        let err = send(&mut t, meta(9, 0, 12, 1, 0)).unwrap_err();
        assert_eq!(err.kafka_error_code(), error_code::UNKNOWN_PRODUCER_ID);
        assert_eq!(send(&mut t, meta(9, 0, 0, 1, 0)), Ok(CheckOutcome::Append));
        // Plain batches (no producer id) pass untouched.
        assert_eq!(send(&mut t, meta(-1, -1, -1, 4, 0)), Ok(CheckOutcome::Append));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let mut t = ProducerStateTable::new(0);
        t.apply(&meta(4, 0, i32::MAX - 4, 2, 0), MAX);
        assert_eq!(
            send(&mut t, meta(4, 0, i32::MAX - 2, 4, 0)),
            Ok(CheckOutcome::Append)
        );
        assert_eq!(t.producers()[&4].batches.back().unwrap().last_seq, 0);
        assert_eq!(send(&mut t, meta(4, 0, 1, 1, 0)), Ok(CheckOutcome::Append));
        assert!(matches!(
            send(&mut t, meta(4, 0, i32::MAX - 2, 4, 0)),
            Ok(CheckOutcome::Duplicate { .. })
        ));
    }

    #[test]
    fn control_and_sequenceless_batches_are_refused_from_clients() {
        let t = ProducerStateTable::new(0);
        let mut control = meta(-1, -1, -1, 1, 0);
        control.control = true;
        assert_eq!(
            t.check(&control).unwrap_err().kafka_error_code(),
            error_code::INVALID_RECORD
        );
        let mut txn = meta(1, 0, 0, 1, 0);
        txn.transactional = true;
        assert_eq!(t.check(&txn), Ok(CheckOutcome::Append));
        assert_eq!(
            t.check(&meta(1, 0, -1, 1, 0)).unwrap_err().kafka_error_code(),
            error_code::INVALID_RECORD
        );
    }

    #[test]
    fn idle_producers_expire_by_their_last_batch_timestamp() {
        let mut t = ProducerStateTable::new(0);
        let mut old = meta(1, 0, 0, 1, 0);
        old.max_timestamp_ms = 1_000;
        t.apply(&old, MAX);
        let mut fresh = meta(2, 0, 0, 1, 1);
        fresh.max_timestamp_ms = 50_000;
        t.apply(&fresh, MAX);
        assert_eq!(t.expire(60_000, 50_000), 1);
        assert!(!t.producers().contains_key(&1));
        assert!(t.producers().contains_key(&2));
        assert_eq!(
            t.check(&meta(1, 0, 1, 1, 2)).unwrap_err().kafka_error_code(),
            error_code::UNKNOWN_PRODUCER_ID
        );
    }

    #[test]
    fn the_producer_bound_evicts_the_least_recently_written() {
        let mut t = ProducerStateTable::new(0);
        for pid in 0..3 {
            assert_eq!(t.apply(&meta(pid, 0, 0, 1, pid), 3), None);
        }
        // Producer 0 writes again: producer 1 is now the least recently written.
        t.apply(&meta(0, 0, 1, 1, 3), 3);
        assert_eq!(t.apply(&meta(10, 0, 0, 1, 4), 3), Some(1));
        assert_eq!(t.producers().keys().copied().collect::<Vec<_>>(), vec![0, 2, 10]);
    }

    fn marker(pid: i64, epoch: i16, abort: bool, offset: i64) -> BatchMeta {
        BatchMeta {
            producer_id: pid,
            producer_epoch: epoch,
            first_seq: -1,
            last_seq: -1,
            base_offset: offset,
            last_offset: offset,
            max_timestamp_ms: 1_000,
            transactional: true,
            control: true,
            abort_marker: abort,
        }
    }

    fn txn_data(pid: i64, first_seq: i32, count: i32, offset: i64) -> BatchMeta {
        BatchMeta {
            transactional: true,
            ..meta(pid, 0, first_seq, count, offset)
        }
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_markers_close_them() {
        let mut t = ProducerStateTable::new(0);
        t.apply(&txn_data(1, 0, 2, 0), MAX); // offsets 0-1
        t.apply(&txn_data(2, 0, 1, 2), MAX); // 2
        t.apply(&txn_data(1, 2, 1, 3), MAX); // 3: same transaction
        assert_eq!(t.first_unstable_offset(), Some(0));
        t.apply(&marker(1, 0, true, 4), MAX);
        assert_eq!(t.first_unstable_offset(), Some(2));
        t.apply(&marker(2, 0, false, 5), MAX);
        assert_eq!(t.first_unstable_offset(), None);
        let aborted = vec![AbortedTxn {
            producer_id: 1,
            first_offset: 0,
            last_offset: 4,
        }];
        assert_eq!(t.aborted_overlapping(0, 6), aborted);
        assert_eq!(t.aborted_overlapping(4, 6), aborted);
        assert_eq!(t.aborted_overlapping(5, 6), vec![]);
        // A later transaction of producer 1 opens again after the marker.
        t.apply(&txn_data(1, 3, 1, 6), MAX);
        assert_eq!(t.first_unstable_offset(), Some(6));
        assert_eq!(
            t.aborted_overlapping(0, 0),
            vec![],
            "nothing before the range end"
        );
        t.trim_aborted_below(5);
        assert_eq!(t.aborted().count(), 0);
        // A marker of an older epoch is refused; a newer one fences the old epoch.
        t.apply(&marker(1, 3, true, 7), MAX);
        assert_eq!(t.first_unstable_offset(), None);
        assert!(t.check_marker(1, 2).is_err());
        assert!(t.check_marker(1, 3).is_ok());
        assert_eq!(
            t.check(&txn_data(1, 4, 1, 8)).unwrap_err().kafka_error_code(),
            error_code::INVALID_PRODUCER_EPOCH
        );
    }

    /// One idempotent producer with up to five batches in flight over a network that
    /// loses, duplicates and reorders requests; the partition is the table plus a log.
    #[derive(Debug, Clone)]
    enum Step {
        /// Send the next new batch of `count` records (if fewer than 5 are unacked).
        New(i32),
        /// (Re)deliver the unacked batch at this position of the window.
        Deliver(usize),
        /// Deliver an old, acknowledged batch again (a very late duplicate).
        Replay(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1..4i32).prop_map(Step::New),
            (0..5usize).prop_map(Step::Deliver),
            (0..40usize).prop_map(Step::Replay),
        ]
    }

    proptest! {
        /// Against a model: the log gets each batch exactly once, in sequence order; a
        /// retry of a stored batch within the window is answered with its original
        /// offsets; a batch whose predecessor is not stored is refused, never stored.
        #[test]
        fn retries_duplicates_and_gaps_match_the_model(steps in proptest::collection::vec(step(), 1..200)) {
            let mut table = ProducerStateTable::new(0);
            let mut log: Vec<BatchMeta> = Vec::new();
            let mut sent: Vec<BatchMeta> = Vec::new(); // every batch created, in order
            let mut next_seq = 0i32;
            let mut stored_offsets: BTreeMap<usize, (i64, i64)> = BTreeMap::new();
            for s in steps {
                let unacked: Vec<usize> = (0..sent.len()).filter(|i| !stored_offsets.contains_key(i)).collect();
                let index = match s {
                    Step::New(count) if unacked.len() < MAX_BATCHES_PER_PRODUCER => {
                        sent.push(meta(5, 0, next_seq, count, 0));
                        next_seq = increment_sequence(next_seq, count);
                        sent.len() - 1
                    }
                    Step::New(_) => continue,
                    Step::Deliver(i) => match unacked.get(i) { Some(i) => *i, None => continue },
                    Step::Replay(i) if i < sent.len() => i,
                    Step::Replay(_) => continue,
                };
                let batch = sent[index].at_offset(table.next_offset());
                let predecessor_stored = index == 0 || stored_offsets.contains_key(&(index - 1));
                let in_window = stored_offsets.len() <= index + MAX_BATCHES_PER_PRODUCER;
                match table.check(&batch) {
                    Ok(CheckOutcome::Append) => {
                        prop_assert!(!stored_offsets.contains_key(&index), "batch {} stored twice", index);
                        prop_assert!(predecessor_stored, "batch {} stored before its predecessor", index);
                        table.apply(&batch, MAX);
                        log.push(batch);
                        stored_offsets.insert(index, (batch.base_offset, batch.last_offset));
                    }
                    Ok(CheckOutcome::Duplicate { base_offset, last_offset }) => {
                        prop_assert_eq!(stored_offsets.get(&index), Some(&(base_offset, last_offset)));
                    }
                    Err(error) => {
                        prop_assert_eq!(error.kafka_error_code(), error_code::OUT_OF_ORDER_SEQUENCE_NUMBER);
                        let stored = stored_offsets.contains_key(&index);
                        prop_assert!(!predecessor_stored || (stored && !in_window),
                            "batch {} refused although it was next or a retry in the window", index);
                    }
                }
            }
            // The log holds a prefix of the batches, in order, each once.
            for (i, stored) in log.iter().enumerate() {
                prop_assert_eq!(stored.first_seq, sent[i].first_seq);
            }
            // Replaying the log into a fresh table gives the same state.
            let mut replayed = ProducerStateTable::new(0);
            for batch in &log {
                replayed.apply(batch, MAX);
            }
            prop_assert_eq!(replayed.producers(), table.producers());
        }
    }
}
