//! [`Producers`]: a replica's producer state ([`crate::txn`]) kept in step with its log.
//!
//! Every batch that reaches the log — a leader's own proposals and a follower's
//! replicated entries alike — is applied in offset order, so the state is what the log
//! implies and nothing a leader merely had in memory. Two tables are kept:
//!
//! * `stable` — every batch below `min(commit, durable) + 1`. Raft never truncates
//!   committed entries and a crash never loses durable ones, so this table never has
//!   to be undone, and it is what snapshots record.
//! * `tip` — `stable` plus the `pending` batches after it, up to the log end: what the
//!   leader checks an incoming batch against (so a retry of a batch still in flight is
//!   recognised). A suffix truncation (Raft, or a disk failure that lost unsynced
//!   appends) drops pending batches at and after the cut and rebuilds `tip` from
//!   `stable`, in memory.
//!
//! Recovery: the replica starts from the snapshot file recovery found (if it is sound
//! and within the log) and reads the batches of the log suffix after it through the
//! replica's ordinary range reads; while that runs, batches of idempotent producers
//! are refused with a retriable error, and appends are queued and applied after it.
//! Snapshots of `stable` are written through the log's [`Log::write_state_file`] when a
//! segment rolls or every `snapshot_interval_ms`, whichever comes first, and only when
//! `stable` moved.

use crate::log::batch::iter_batches;
use crate::log::io::{SegmentId, PRODUCER_STATE_FILE_NAME};
use crate::log::read::trim_fetched;
use crate::log::{FileRange, Log};
use crate::time::Instant;
use crate::txn::snapshot;
use crate::txn::{BatchMeta, CheckOutcome, ProducerError, ProducerStateConfig, ProducerStateTable};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Bytes asked for per read while loading the log suffix.
const LOAD_READ_BYTES: u64 = 1024 * 1024;

/// A log suffix being read to rebuild the state after a restart.
#[derive(Clone, Debug)]
struct Loading {
    /// Next offset to read.
    read_from: i64,
    /// One past the last offset to read (the log end when loading began, lowered by
    /// truncations).
    load_end: i64,
    /// Whether a read is in flight.
    reading: bool,
    /// Batches appended meanwhile, applied once the suffix is in.
    appended: Vec<BatchMeta>,
}

/// What the last snapshot covered and when it was written.
#[derive(Clone, Copy, Debug)]
struct SnapshotMark {
    next_offset: i64,
    written_at: Option<Instant>,
    active_segment: Option<SegmentId>,
}

/// What recovery found and did, for logs and tests.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ProducerRecovery {
    /// The snapshot's offset, if one was used.
    pub snapshot_offset: Option<i64>,
    /// Why a snapshot file was ignored, if one was.
    pub ignored_snapshot: Option<String>,
    /// First offset read from the log.
    pub read_from: i64,
}

/// A replica's producer state.
#[derive(Debug)]
pub struct Producers {
    config: ProducerStateConfig,
    stable: ProducerStateTable,
    pending: VecDeque<BatchMeta>,
    tip: ProducerStateTable,
    loading: Option<Loading>,
    snapshot: SnapshotMark,
    recovery: ProducerRecovery,
}

impl Producers {
    /// The state of a replica over `log`: from the snapshot recovery found, with the log
    /// suffix after it still to read (see [`Producers::next_read`]).
    pub fn recover(config: ProducerStateConfig, log: &mut Log) -> Producers {
        let start = log.start_offset();
        let end = log.next_offset();
        let mut recovery = ProducerRecovery::default();
        let decoded = log
            .take_state_file(PRODUCER_STATE_FILE_NAME)
            .map(|bytes| snapshot::decode(&bytes));
        let mut stable = match decoded {
            Some(Ok(table)) if table.next_offset() <= end => {
                recovery.snapshot_offset = Some(table.next_offset());
                table
            }
            Some(Ok(table)) => {
                recovery.ignored_snapshot = Some(format!(
                    "snapshot at offset {} is past the log end {end}",
                    table.next_offset()
                ));
                ProducerStateTable::new(start)
            }
            Some(Err(error)) => {
                recovery.ignored_snapshot = Some(error.to_string());
                ProducerStateTable::new(start)
            }
            None => ProducerStateTable::new(start),
        };
        // Producers whose batches retention removed after the snapshot are forgotten.
        stable.advance_to(start);
        recovery.read_from = stable.next_offset();
        let snapshot = SnapshotMark {
            next_offset: stable.next_offset(),
            written_at: None,
            active_segment: log.segments().last().map(|s| s.id),
        };
        let loading = (stable.next_offset() < end).then(|| Loading {
            read_from: stable.next_offset(),
            load_end: end,
            reading: false,
            appended: Vec::new(),
        });
        Producers {
            config,
            tip: stable.clone(),
            stable,
            pending: VecDeque::new(),
            loading,
            snapshot,
            recovery,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &ProducerStateConfig {
        &self.config
    }

    /// Changes the settings (expiry, bound, snapshot interval).
    pub fn set_config(&mut self, config: ProducerStateConfig) {
        self.config = config;
    }

    /// What recovery found.
    pub fn recovery(&self) -> &ProducerRecovery {
        &self.recovery
    }

    /// Whether the log suffix is still being read.
    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// Everything applied: committed and not.
    pub fn tip(&self) -> &ProducerStateTable {
        &self.tip
    }

    /// Everything committed and durable (what a snapshot records).
    pub fn stable(&self) -> &ProducerStateTable {
        &self.stable
    }

    /// The leader's check of an incoming batch.
    pub fn check(&self, batch: &BatchMeta) -> Result<CheckOutcome, ProducerError> {
        let outcome = self.tip.check(batch);
        // PLANTED BUG (sim-bugs): duplicates are written again.
        #[cfg(feature = "sim-bugs")]
        if self.config.bugs.dedupe_window_zero && matches!(outcome, Ok(CheckOutcome::Duplicate { .. })) {
            return Ok(CheckOutcome::Append);
        }
        // PLANTED BUG (sim-bugs): the epoch before the producer's current one passes.
        #[cfg(feature = "sim-bugs")]
        if self.config.bugs.accept_previous_epoch {
            if let Err(ProducerError::StaleEpoch { epoch, current, .. }) = &outcome {
                if epoch.saturating_add(1) == *current {
                    return Ok(CheckOutcome::Append);
                }
            }
        }
        outcome
    }

    /// A batch reached the log at the offsets in `batch`.
    pub fn on_append(&mut self, batch: BatchMeta) {
        match &mut self.loading {
            Some(loading) => loading.appended.push(batch),
            None => self.apply(batch),
        }
    }

    fn apply(&mut self, batch: BatchMeta) {
        self.tip.apply(&batch, self.config.max_producers);
        if batch.is_tracked() {
            self.pending.push_back(batch);
        }
    }

    /// The log now ends before `next_offset` (a suffix truncation, or appends lost to a
    /// disk failure).
    pub fn on_truncate(&mut self, next_offset: i64) {
        assert!(
            next_offset >= self.stable.next_offset(),
            "the log never loses committed, durable offsets: cut at {next_offset}, stable through {}",
            self.stable.next_offset()
        );
        if let Some(loading) = &mut self.loading {
            loading.appended.retain(|b| b.base_offset < next_offset);
            loading.load_end = loading.load_end.min(next_offset);
            loading.read_from = loading.read_from.min(next_offset);
        }
        if self.tip.next_offset() > next_offset {
            self.pending.retain(|b| b.base_offset < next_offset);
            let mut tip = self.stable.clone();
            for batch in &self.pending {
                tip.apply(batch, self.config.max_producers);
            }
            tip.advance_to(next_offset);
            self.tip = tip;
        }
        self.finish_loading_if_done();
    }

    /// Everything below `offset` is committed and durable: move it into `stable`.
    pub fn on_stable(&mut self, offset: i64) {
        if self.loading.is_some() {
            return;
        }
        let offset = offset.min(self.tip.next_offset());
        while self.pending.front().is_some_and(|b| b.last_offset < offset) {
            if let Some(batch) = self.pending.pop_front() {
                self.stable.apply(&batch, self.config.max_producers);
            }
        }
        let boundary = self.pending.front().map_or(offset, |b| b.base_offset.min(offset));
        self.stable.advance_to(boundary);
    }

    /// Forgets producers idle for `expiration_ms` at wall-clock `now_wall_ms`.
    pub fn expire(&mut self, now_wall_ms: i64) -> usize {
        let expiration_ms = self.config.expiration_ms;
        self.stable.expire(now_wall_ms, expiration_ms);
        self.tip.expire(now_wall_ms, expiration_ms)
    }

    /// Drops aborted-transaction entries whose marker is below the log start.
    pub fn trim_aborted_below(&mut self, log_start_offset: i64) {
        self.stable.trim_aborted_below(log_start_offset);
        self.tip.trim_aborted_below(log_start_offset);
    }

    /// The next read of the log suffix to load, if one is due: `(from offset, ranges)`.
    pub fn next_read(&mut self, log: &Log) -> Option<(i64, Vec<FileRange>)> {
        let loading = self.loading.as_mut()?;
        if loading.reading || loading.read_from >= loading.load_end {
            return None;
        }
        let plan = log
            .read_plan(loading.read_from, LOAD_READ_BYTES, loading.load_end - 1)
            .ok()?;
        if plan.ranges.is_empty() {
            return None;
        }
        loading.reading = true;
        Some((loading.read_from, plan.ranges))
    }

    /// The bytes of a read from [`Producers::next_read`]. `Err` names what is wrong
    /// with stored data that should be whole batches (the replica cannot vouch for
    /// idempotence then and stops).
    pub fn on_read(&mut self, from: i64, chunks: &[Bytes]) -> Result<(), String> {
        let Some(loading) = self.loading.as_mut() else {
            return Ok(());
        };
        loading.reading = false;
        if from != loading.read_from || loading.read_from >= loading.load_end {
            // A truncation moved the target while the read was out; read again.
            return Ok(());
        }
        let bytes = trim_fetched(chunks, from, loading.load_end - 1, LOAD_READ_BYTES)
            .map_err(|e| format!("producer state: reading the log from offset {from}: {e}"))?;
        let mut progressed = false;
        let mut batches = Vec::new();
        for (at, header) in iter_batches(&bytes) {
            if header.base_offset < loading.read_from {
                // The batch holding a start offset that DeleteRecords moved mid-batch.
                continue;
            }
            if header.base_offset >= loading.load_end {
                break;
            }
            let stored = bytes.get(at..at + header.size_bytes()).unwrap_or_default();
            batches.push(BatchMeta::from_stored(&header, stored));
            loading.read_from = header.last_offset() + 1;
            progressed = true;
        }
        if !progressed {
            return Err(format!(
                "producer state: no batch found reading the log from offset {from}"
            ));
        }
        for batch in batches {
            self.apply(batch);
        }
        self.finish_loading_if_done();
        Ok(())
    }

    fn finish_loading_if_done(&mut self) {
        let done = self
            .loading
            .as_ref()
            .is_some_and(|l| l.read_from >= l.load_end && !l.reading);
        if !done {
            return;
        }
        if let Some(loading) = self.loading.take() {
            self.tip.advance_to(loading.load_end);
            for batch in loading.appended {
                self.apply(batch);
            }
        }
    }

    /// Writes a snapshot of `stable` if it moved since the last one and a segment
    /// rolled or the interval passed.
    pub fn maybe_snapshot(&mut self, now: Instant, log: &mut Log) {
        if self.loading.is_some() || self.stable.next_offset() <= self.snapshot.next_offset {
            return;
        }
        let active = log.segments().last().map(|s| s.id);
        let rolled = active != self.snapshot.active_segment;
        let interval = Duration::from_millis(self.config.snapshot_interval_ms);
        let due = self.snapshot.written_at.is_none_or(|at| now >= at + interval);
        if !(rolled || due) {
            return;
        }
        log.write_state_file(PRODUCER_STATE_FILE_NAME, snapshot::encode(&self.stable));
        self.snapshot = SnapshotMark {
            next_offset: self.stable.next_offset(),
            written_at: Some(now),
            active_segment: active,
        };
    }

    /// When [`Producers::maybe_snapshot`] next has something to do by the clock.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.loading.is_some() || self.stable.next_offset() <= self.snapshot.next_offset {
            return None;
        }
        let interval = Duration::from_millis(self.config.snapshot_interval_ms);
        Some(self.snapshot.written_at.map_or(Instant::ZERO, |at| at + interval))
    }
}
