//! [`Log`]: the storage log of one partition replica, as a sans-IO state machine.
//!
//! It validates and appends record batches, assigns offsets, rolls segments (by size,
//! age, and on every term change), keeps sparse indexes, runs group commit (one sync
//! in flight; every append queued behind it is covered by the next one), truncates
//! suffixes for Raft, applies retention and DeleteRecords, and writes checkpoints.
//! Disk work leaves as [`LogEffect`]s; outcomes return as [`LogCompletion`]s; what the
//! owner must know comes out as [`LogEvent`]s.
//!
//! Offsets: `start_offset` ≤ readable data < `next_offset`. Three watermarks trail the
//! end: `emitted` (handed to the disk), `written` (reported written) and `durable`
//! (covered by a completed sync). Nothing is called durable that a sync did not cover.

use super::batch::{validate_batch, BatchError, BatchHeader, ValidatedBatch};
use super::checkpoint::Checkpoint;
use super::config::LogConfig;
use super::io::{DiskError, FileRange, LogCompletion, LogEffect, SegmentId, StampedBatch};
use super::segment::Segment;
use crate::time::Instant;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Something the owner of a log must know.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LogEvent {
    /// Every offset up to `last_offset` is written to its file (not yet durable).
    Written {
        /// Last written offset.
        last_offset: i64,
    },
    /// The sync with this ticket (and every earlier one) completed: everything the log
    /// held when [`Log::sync`] returned the ticket — appends and truncations — is
    /// durable.
    SyncDone {
        /// The ticket.
        ticket: SyncTicket,
    },
    /// Every offset up to `last_offset` is durable.
    Durable {
        /// Last durable offset.
        last_offset: i64,
    },
    /// Appends in `[from_offset, to_offset]` were lost to a disk error before they became
    /// durable; the log continues from `from_offset`.
    AppendsFailed {
        /// First lost offset.
        from_offset: i64,
        /// Last lost offset.
        to_offset: i64,
        /// The disk error.
        error: DiskError,
    },
    /// A suffix truncation reached the disk; the log now ends before `next_offset`.
    Truncated {
        /// Offset the next append gets.
        next_offset: i64,
    },
    /// A checkpoint recording `start_offset` as the log start is durable.
    StartOffsetDurable {
        /// The durable log start offset.
        start_offset: i64,
    },
    /// Stored data that should be valid is not; the log refuses further appends.
    Corrupted {
        /// Segment holding the damage.
        segment: SegmentId,
        /// Byte position of the damage.
        position: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Why an append was refused. Nothing was written.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The batch is malformed or too large.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Terms never go back within a log.
    #[error("term {term} is below the log's last term {last_term}")]
    TermGoesBack {
        /// The term of the append.
        term: i64,
        /// The log's last term.
        last_term: i64,
    },
    /// The term does not fit Kafka's 32-bit leader epoch.
    #[error("term {0} does not fit a Kafka leader epoch")]
    TermTooLarge(i64),
    /// The log found corruption and accepts no writes.
    #[error("log is unavailable after corruption: {0}")]
    Unavailable(String),
}

impl AppendError {
    /// The Kafka error code for the client.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            AppendError::Batch(e) => e.kafka_error_code(),
            _ => super::batch::kafka_error::KAFKA_STORAGE_ERROR,
        }
    }
}

/// Why a read or offset change was refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OffsetError {
    /// Outside `[start_offset, next_offset]`.
    #[error("offset {offset} is outside the log [{start_offset}, {next_offset}]")]
    OutOfRange {
        /// Offset asked for.
        offset: i64,
        /// Log start offset.
        start_offset: i64,
        /// Log end offset.
        next_offset: i64,
    },
}

impl OffsetError {
    /// The Kafka error code for the client.
    pub fn kafka_error_code(&self) -> i16 {
        super::batch::kafka_error::OFFSET_OUT_OF_RANGE
    }
}

/// Names a sync; tickets increase, and the completion of one implies all earlier ones.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub struct SyncTicket(pub u64);

/// Offsets an append was given.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AppendInfo {
    /// First offset of the batch.
    pub base_offset: i64,
    /// Last offset of the batch.
    pub last_offset: i64,
}

/// File ranges to read for a fetch, to be passed with the bytes to
/// [`super::read::trim_fetched`].
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ReadPlan {
    /// Ranges in log order.
    pub ranges: Vec<FileRange>,
}

/// Where the durable end of the log sits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DurableEnd {
    /// Nothing is durable beyond the log start.
    Nothing,
    /// The durable end is at `position` of `segment`.
    At {
        segment: SegmentId,
        position: u64,
        max_timestamp_ms: i64,
    },
    /// The durable end is the target of the pending truncation.
    AtPendingTruncation,
}

#[derive(Clone, Copy, Debug)]
struct UnwrittenWrite {
    segment: SegmentId,
    position: u64,
    last_offset: i64,
}

#[derive(Clone, Debug)]
struct SyncInFlight {
    sync_id: u64,
    covers_offset: i64,
    end: DurableEnd,
}

#[derive(Clone, Debug)]
struct PendingTruncation {
    read_id: u64,
    segment: SegmentId,
    offset: i64,
    range: FileRange,
    /// Appends accepted while the boundary is being found: (now, term, batch).
    deferred: Vec<(Instant, i64, StampedBatch)>,
}

#[derive(Clone, Debug)]
struct CheckpointState {
    written_at: Option<Instant>,
    in_flight: Option<(u64, i64)>,
    wanted: bool,
    durable_start_offset: i64,
    /// Durable offset recorded by the last checkpoint emitted (unknown after recovery,
    /// hence `i64::MAX`): a truncation below it must rewrite the checkpoint before
    /// anything is appended at the cut, or a torn append would look like corruption.
    emitted_durable_offset: i64,
    /// What the last checkpoint emitted in this generation records. A checkpoint that
    /// would record the same is not written again (an idle log rewrites nothing);
    /// `None` after recovery, a reset or a disk failure, so the next one is written.
    last_emitted: Option<Checkpoint>,
}

/// The state a log is rebuilt from after recovery.
#[derive(Clone, Debug)]
pub struct RecoveredLog {
    /// Segments in offset order, each with a verified size and index.
    pub segments: Vec<Segment>,
    /// Log start offset.
    pub start_offset: i64,
    /// State files found beside the segments, by name (see
    /// [`super::io::STATE_FILE_NAMES`]).
    pub state_files: BTreeMap<String, Bytes>,
    /// The term of the entry before `start_offset`, when a [`Log::reset_to`] recorded
    /// it and nothing has been made durable since.
    pub reset_term: Option<i64>,
    /// The term of the entry before `start_offset`, when the checkpoint recorded it.
    pub start_term: Option<i64>,
}

/// The storage log of one partition replica.
#[derive(Debug)]
pub struct Log {
    config: LogConfig,
    generation: u64,
    segments: Vec<Segment>,
    start_offset: i64,
    next_offset: i64,
    emitted_offset: i64,
    written_offset: i64,
    durable_offset: i64,
    durable_end: DurableEnd,
    dirty: BTreeSet<SegmentId>,
    /// Writes emitted but not yet reported written, oldest first; reads stop before them.
    unwritten: VecDeque<UnwrittenWrite>,
    sync_in_flight: Option<SyncInFlight>,
    sync_wanted: bool,
    /// Ticket of the last sync emitted, and of the last one completed.
    sync_issued: SyncTicket,
    sync_done: SyncTicket,
    next_id: u64,
    truncation: Option<PendingTruncation>,
    checkpoint: CheckpointState,
    unavailable: Option<String>,
    effects: VecDeque<LogEffect>,
    events: VecDeque<LogEvent>,
    /// State files recovery found, until their owner takes them.
    state_files: BTreeMap<String, Bytes>,
    /// Term of the entry before `start_offset` after a [`Log::reset_to`].
    reset_term: Option<i64>,
    /// `(offset, term)`: the term of the entry before `offset`, as a checkpoint, a
    /// reset or recovery recorded it; kept because the segment holding that entry is
    /// deleted once a checkpoint recording `offset` as the start is durable.
    start_term_known: Option<(i64, i64)>,
    /// The [`LogEffect::ResetLog`] not yet completed, issued again in the next
    /// generation if the disk fails it, and how often it failed.
    reset_in_flight: Option<LogEffect>,
    reset_failures: u32,
}

/// How often a failed [`LogEffect::ResetLog`] is issued again before the log gives up
/// (unavailable until a restart, whose recovery finishes or undoes the reset).
const MAX_RESET_FAILURES: u32 = 3;

impl Log {
    /// A new, empty log whose first offset will be `start_offset`.
    pub fn new(config: LogConfig, start_offset: i64) -> Log {
        let mut log = Self::from_recovered(
            config,
            RecoveredLog {
                segments: Vec::new(),
                start_offset,
                state_files: BTreeMap::new(),
                reset_term: None,
                start_term: None,
            },
        );
        // A new directory has no checkpoint: a start past 0 (a partition recovered
        // from the object store) is recorded by the first one, due at once.
        log.checkpoint.durable_start_offset = 0;
        log
    }

    /// A log over recovered segments; everything in them is taken as durable (recovery
    /// only keeps what is on disk after a crash).
    pub fn from_recovered(config: LogConfig, recovered: RecoveredLog) -> Log {
        let next_offset = recovered.segments.last().map_or(recovered.start_offset, |s| {
            s.next_offset.max(recovered.start_offset)
        });
        let durable_end = recovered
            .segments
            .last()
            .map_or(DurableEnd::Nothing, |s| DurableEnd::At {
                segment: s.id,
                position: s.size_bytes,
                max_timestamp_ms: s.max_timestamp_ms,
            });
        for pair in recovered.segments.windows(2) {
            let contiguous = pair[0].next_offset == pair[1].id.base_offset;
            assert!(
                contiguous || pair[1].id.base_offset <= recovered.start_offset,
                "recovered segments are contiguous"
            );
        }
        Log {
            config,
            generation: 0,
            segments: recovered.segments,
            start_offset: recovered.start_offset,
            next_offset,
            emitted_offset: next_offset - 1,
            written_offset: next_offset - 1,
            durable_offset: next_offset - 1,
            durable_end,
            dirty: BTreeSet::new(),
            unwritten: VecDeque::new(),
            sync_in_flight: None,
            sync_wanted: false,
            sync_issued: SyncTicket(0),
            sync_done: SyncTicket(0),
            next_id: 1,
            truncation: None,
            checkpoint: CheckpointState {
                written_at: None,
                in_flight: None,
                wanted: false,
                durable_start_offset: recovered.start_offset,
                emitted_durable_offset: i64::MAX,
                last_emitted: None,
            },
            unavailable: None,
            effects: VecDeque::new(),
            events: VecDeque::new(),
            state_files: recovered.state_files,
            reset_term: recovered.reset_term,
            start_term_known: recovered
                .start_term
                .or(recovered.reset_term)
                .map(|term| (recovered.start_offset, term)),
            reset_in_flight: None,
            reset_failures: 0,
        }
    }

    /// Takes the content of state file `name` as recovery found it (once).
    pub fn take_state_file(&mut self, name: &str) -> Option<Bytes> {
        self.state_files.remove(name)
    }

    /// Asks the backend to replace state file `name` (one of
    /// [`super::io::STATE_FILE_NAMES`]) with `data`; ordered after every effect emitted
    /// before, so it lands after the syncs already asked for.
    pub fn write_state_file(&mut self, name: &'static str, data: Bytes) {
        assert!(
            super::io::STATE_FILE_NAMES.contains(&name),
            "unknown state file {name}"
        );
        self.effects.push_back(LogEffect::WriteStateFile {
            generation: self.generation,
            name,
            data,
        });
    }

    /// The settings in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Changes settings live: size and age limits apply from the next append or
    /// retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// First offset a reader may ask for.
    pub fn start_offset(&self) -> i64 {
        self.start_offset
    }

    /// The start offset a durable checkpoint records (what a crash comes back to).
    pub fn durable_start_offset(&self) -> i64 {
        self.checkpoint.durable_start_offset
    }

    /// Offset the next append gets (Kafka's log end offset).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Last offset written to its file, readable by a fetch.
    pub fn written_offset(&self) -> i64 {
        self.written_offset
    }

    /// Last offset covered by a completed sync.
    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }

    /// The term of the entry just before the start offset, if a [`Log::reset_to`]
    /// recorded it (the log of a follower that installed a snapshot).
    pub fn reset_term(&self) -> Option<i64> {
        self.reset_term
    }

    /// The term of the entry just before `offset`, if known: from the segment holding
    /// it, else from what a checkpoint, a reset or recovery recorded for that offset.
    pub fn term_before(&self, offset: i64) -> Option<i64> {
        if offset <= 0 {
            return None;
        }
        let previous = offset - 1;
        self.segments
            .iter()
            .find(|s| s.id.base_offset <= previous && previous < s.next_offset)
            .map(|s| s.id.term)
            .or_else(|| {
                self.start_term_known
                    .filter(|(known, _)| *known == offset)
                    .map(|(_, term)| term)
            })
    }

    /// The term of the entry just before the start offset, if known
    /// ([`Log::term_before`]).
    pub fn start_term(&self) -> Option<i64> {
        self.term_before(self.start_offset)
    }

    /// First offset whose bytes the log still holds: the base of the first segment
    /// (which may lie below the start offset when DeleteRecords cut inside it).
    /// Raft replicates whole entries from here.
    pub fn retained_offset(&self) -> i64 {
        self.segments
            .first()
            .map_or(self.start_offset, |s| s.id.base_offset.min(self.start_offset))
    }

    /// Term of the last segment, -1 if the log has none.
    pub fn last_term(&self) -> i64 {
        self.segments.last().map_or(-1, |s| s.id.term)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Bytes of the segments at or above the start offset.
    pub fn size_bytes(&self) -> u64 {
        self.segments[self.segments_below_start()..]
            .iter()
            .map(|s| s.size_bytes)
            .sum()
    }

    /// Term boundaries: `(term, first offset of that term)`, oldest first. Because a
    /// term change always rolls a segment, these come from segment names.
    pub fn term_starts(&self) -> Vec<(i64, i64)> {
        let mut starts: Vec<(i64, i64)> = Vec::new();
        for s in &self.segments {
            if starts.last().map(|(t, _)| *t) != Some(s.id.term) {
                starts.push((s.id.term, s.id.base_offset));
            }
        }
        starts
    }

    /// The term of the batch holding `offset`, if the log holds it.
    pub fn term_at(&self, offset: i64) -> Option<i64> {
        if offset < self.start_offset || offset >= self.next_offset {
            return None;
        }
        self.segment_holding(offset).map(|i| self.segments[i].id.term)
    }

    /// The next disk operation to perform.
    pub fn poll_effect(&mut self) -> Option<LogEffect> {
        self.effects.pop_front()
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<LogEvent> {
        self.events.pop_front()
    }

    /// When [`Log::handle_timeout`] wants to run next (a checkpoint that is due).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.checkpoint_pending_progress() && self.checkpoint.in_flight.is_none() {
            let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
            return Some(
                self.checkpoint
                    .written_at
                    .map_or(Instant::ZERO, |at| at + interval),
            );
        }
        None
    }

    /// Runs timers: writes a checkpoint that has come due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.checkpoint_pending_progress() {
            self.maybe_checkpoint(now, false);
        }
    }

    /// Validates `batch`, gives it the next offsets and `term` as its leader epoch, and
    /// queues its write. It becomes durable after a later [`Log::sync`] completes.
    pub fn append(&mut self, now: Instant, term: i64, batch: Bytes) -> Result<AppendInfo, AppendError> {
        let leader_epoch = self.appendable(term, &batch)?;
        let header = validate_batch(&batch)?;
        Ok(self.append_valid(now, (term, leader_epoch), batch, &header))
    }

    /// [`Log::append`] of a batch already validated (a leader's own proposal): the
    /// same checks but the batch's own (CRC, record framing), which were done.
    pub fn append_validated(
        &mut self,
        now: Instant,
        term: i64,
        batch: ValidatedBatch,
    ) -> Result<AppendInfo, AppendError> {
        let leader_epoch = self.appendable(term, batch.bytes())?;
        let (bytes, header) = batch.into_parts();
        Ok(self.append_valid(now, (term, leader_epoch), bytes, &header))
    }

    /// Whether a batch of `term` may be appended now: returns the term as a leader
    /// epoch.
    fn appendable(&self, term: i64, batch: &Bytes) -> Result<i32, AppendError> {
        if let Some(reason) = &self.unavailable {
            return Err(AppendError::Unavailable(reason.clone()));
        }
        let leader_epoch = i32::try_from(term).map_err(|_| AppendError::TermTooLarge(term))?;
        if term < 0 {
            return Err(AppendError::TermTooLarge(term));
        }
        let last_term = self.last_logical_term();
        if term < last_term {
            return Err(AppendError::TermGoesBack { term, last_term });
        }
        if batch.len() as u64 > self.config.max_batch_bytes {
            return Err(BatchError::TooLarge {
                size_bytes: batch.len(),
                max_bytes: self.config.max_batch_bytes as usize,
            }
            .into());
        }
        Ok(leader_epoch)
    }

    fn append_valid(
        &mut self,
        now: Instant,
        (term, leader_epoch): (i64, i32),
        batch: Bytes,
        header: &BatchHeader,
    ) -> AppendInfo {
        let batch = StampedBatch::stamp(&batch, self.next_offset, leader_epoch);
        let info = AppendInfo {
            base_offset: self.next_offset,
            last_offset: self.next_offset + i64::from(header.last_offset_delta),
        };
        self.next_offset = info.last_offset + 1;
        match &mut self.truncation {
            Some(pending) => pending.deferred.push((now, term, batch)),
            None => self.write_batch(now, term, batch),
        }
        info
    }

    fn last_logical_term(&self) -> i64 {
        let deferred = self
            .truncation
            .as_ref()
            .and_then(|t| t.deferred.last().map(|(_, term, _)| *term));
        deferred.unwrap_or_else(|| self.last_term())
    }

    fn write_batch(&mut self, now: Instant, term: i64, batch: StampedBatch) {
        let header = match BatchHeader::parse(&batch.header) {
            Ok(header) => header,
            Err(_) => unreachable!("validated on append"),
        };
        if self.needs_roll(now, term, batch.len() as u64, header.base_offset) {
            self.roll(now, term, header.base_offset);
        }
        let interval = self.config.index_interval_bytes;
        let generation = self.generation;
        let Some(active) = self.segments.last_mut() else {
            unreachable!("roll created a segment");
        };
        let position = active.size_bytes;
        active.on_append(&header, interval);
        active.first_append_at.get_or_insert(now);
        let segment = active.id;
        self.dirty.insert(segment);
        self.emitted_offset = header.last_offset();
        self.unwritten.push_back(UnwrittenWrite {
            segment,
            position,
            last_offset: header.last_offset(),
        });
        self.effects.push_back(LogEffect::Write {
            generation,
            segment,
            position,
            data: batch,
            last_offset: header.last_offset(),
        });
    }

    fn needs_roll(&self, now: Instant, term: i64, len_bytes: u64, base_offset: i64) -> bool {
        let Some(active) = self.segments.last() else {
            return true;
        };
        // A new term, or offsets that skip ahead (the start offset moved past the end
        // when a crash lost data DeleteRecords had already removed).
        if active.id.term != term || active.next_offset != base_offset {
            return true;
        }
        if active.is_empty() {
            return false;
        }
        let too_big = active.size_bytes + len_bytes > self.config.segment_bytes;
        let too_old = match (self.config.segment_ms, active.first_append_at) {
            (Some(segment_ms), Some(first)) => now >= first + Duration::from_millis(segment_ms),
            _ => false,
        };
        too_big || too_old
    }

    fn roll(&mut self, now: Instant, term: i64, base_offset: i64) {
        self.close_active_index();
        if let Some(active) = self.segments.last() {
            if active.is_empty() {
                // A segment that never got a batch (term changed at once) is dropped.
                let id = active.id;
                self.segments.pop();
                self.dirty.remove(&id);
                self.effects.push_back(LogEffect::DeleteSegment {
                    generation: self.generation,
                    segment: id,
                });
            }
        }
        let id = SegmentId { base_offset, term };
        let mut segment = Segment::new(id);
        segment.first_append_at = Some(now);
        self.segments.push(segment);
        self.effects.push_back(LogEffect::CreateSegment {
            generation: self.generation,
            segment: id,
            preallocate_bytes: self.config.preallocate_bytes.min(self.config.segment_bytes),
        });
    }

    fn close_active_index(&mut self) {
        if let Some(active) = self.segments.last() {
            if !active.is_empty() {
                let data = active.index.encode(
                    active.id,
                    active.size_bytes,
                    active.next_offset,
                    active.max_timestamp_ms,
                );
                self.effects.push_back(LogEffect::WriteIndex {
                    generation: self.generation,
                    segment: active.id,
                    data,
                });
            }
        }
    }

    /// Asks for everything appended so far to become durable. With a sync already in
    /// flight, the request waits for it and is then served by one sync for everything
    /// appended in between (group commit).
    ///
    /// Returns the ticket of the sync that will cover everything appended or truncated
    /// so far; [`LogEvent::SyncDone`] reports it (at once if nothing needs syncing).
    pub fn sync(&mut self) -> SyncTicket {
        let nothing_new = self.dirty.is_empty() && self.truncation.is_none() && !self.sync_wanted;
        if nothing_new {
            // Everything is covered by the sync in flight, or already durable.
            let ticket = self.sync_issued;
            if self.sync_in_flight.is_none() {
                self.events.push_back(LogEvent::SyncDone { ticket });
            }
            return ticket;
        }
        if self.sync_in_flight.is_some() || self.truncation.is_some() {
            self.sync_wanted = true;
            return SyncTicket(self.sync_issued.0 + 1);
        }
        self.issue_sync()
    }

    /// The newest completed sync.
    pub fn synced_ticket(&self) -> SyncTicket {
        self.sync_done
    }

    fn issue_sync(&mut self) -> SyncTicket {
        self.sync_issued = SyncTicket(self.sync_issued.0 + 1);
        let sync_id = self.sync_issued.0;
        let segments: Vec<SegmentId> = std::mem::take(&mut self.dirty).into_iter().collect();
        let end = match self.segments.last() {
            Some(active) => DurableEnd::At {
                segment: active.id,
                position: active.size_bytes,
                max_timestamp_ms: active.max_timestamp_ms,
            },
            None => DurableEnd::Nothing,
        };
        self.sync_in_flight = Some(SyncInFlight {
            sync_id,
            covers_offset: self.emitted_offset,
            end,
        });
        self.sync_wanted = false;
        self.effects.push_back(LogEffect::Sync {
            generation: self.generation,
            sync_id,
            segments,
        });
        self.sync_issued
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Takes the outcome of an effect.
    pub fn handle_completion(&mut self, now: Instant, completion: LogCompletion) {
        let generation = match &completion {
            LogCompletion::Written { generation, .. }
            | LogCompletion::Synced { generation, .. }
            | LogCompletion::CheckpointWritten { generation, .. }
            | LogCompletion::Read { generation, .. }
            | LogCompletion::Failed { generation, .. } => *generation,
        };
        if generation != self.generation {
            return;
        }
        match completion {
            LogCompletion::Written { last_offset, .. } => {
                self.advance_written(last_offset.min(self.emitted_offset));
            }
            LogCompletion::Synced { sync_id, .. } => self.on_synced(now, sync_id),
            LogCompletion::CheckpointWritten { checkpoint_id, .. } => {
                self.on_checkpoint_written(now, checkpoint_id);
            }
            LogCompletion::Read { read_id, data, .. } => self.on_read(now, read_id, data),
            LogCompletion::Failed { error, .. } => self.on_failed(error),
        }
    }

    fn advance_written(&mut self, last_offset: i64) {
        while self
            .unwritten
            .front()
            .is_some_and(|w| w.last_offset <= last_offset)
        {
            self.unwritten.pop_front();
        }
        if last_offset > self.written_offset {
            self.written_offset = last_offset;
            self.events.push_back(LogEvent::Written { last_offset });
        }
    }

    fn on_synced(&mut self, now: Instant, sync_id: u64) {
        let Some(sync) = self.sync_in_flight.take_if(|s| s.sync_id == sync_id) else {
            return;
        };
        self.reset_in_flight = None;
        self.sync_done = SyncTicket(sync_id);
        self.events.push_back(LogEvent::SyncDone {
            ticket: self.sync_done,
        });
        self.advance_written(sync.covers_offset);
        if sync.covers_offset > self.durable_offset {
            self.durable_offset = sync.covers_offset;
            self.durable_end = sync.end;
            self.events.push_back(LogEvent::Durable {
                last_offset: sync.covers_offset,
            });
        }
        if std::mem::take(&mut self.sync_wanted) {
            self.issue_or_complete_wanted_sync();
        }
        self.checkpoint.wanted = true;
        self.maybe_checkpoint(now, false);
    }

    fn on_failed(&mut self, error: DiskError) {
        self.generation += 1;
        self.checkpoint.last_emitted = None;
        // A checkpoint in flight completes in the old generation, and that completion is
        // ignored: left set, it would hold back every later checkpoint. Whatever it
        // recorded is wanted again.
        if self.checkpoint.in_flight.take().is_some() {
            self.checkpoint.wanted = true;
        }
        self.sync_in_flight = None;
        self.sync_wanted = false;
        self.dirty.clear();
        self.unwritten.clear();
        let lost_to = self.next_offset - 1;
        let lost_from = self.durable_offset + 1;
        if self.durable_end == DurableEnd::AtPendingTruncation {
            // The durable end is the truncation point: keep truncating, in the new
            // generation, and drop what was queued behind it.
            if let Some(pending) = &mut self.truncation {
                pending.deferred.clear();
                pending.read_id = self.next_id;
                self.next_id += 1;
                self.effects.push_back(LogEffect::Read {
                    generation: self.generation,
                    read_id: pending.read_id,
                    range: pending.range,
                });
            }
        } else {
            self.truncation = None;
            self.revert_to_durable_end();
        }
        self.next_offset = lost_from.max(self.start_offset);
        self.emitted_offset = self.emitted_offset.min(lost_from - 1);
        self.written_offset = self.written_offset.min(lost_from - 1);
        self.reissue_reset(&error);
        if lost_to >= lost_from {
            self.events.push_back(LogEvent::AppendsFailed {
                from_offset: lost_from,
                to_offset: lost_to,
                error,
            });
        }
    }

    fn revert_to_durable_end(&mut self) {
        let (keep_segment, position, max_ts) = match self.durable_end {
            DurableEnd::At {
                segment,
                position,
                max_timestamp_ms,
            } => (Some(segment), position, max_timestamp_ms),
            _ => (None, 0, -1),
        };
        let keep_present = self.segments.iter().any(|s| Some(s.id) == keep_segment);
        while let Some(last) = self.segments.last() {
            if keep_present && Some(last.id) == keep_segment {
                break;
            }
            let id = last.id;
            self.segments.pop();
            self.effects.push_back(LogEffect::DeleteSegment {
                generation: self.generation,
                segment: id,
            });
        }
        if let Some(active) = self.segments.last_mut() {
            if active.size_bytes != position {
                active.index.truncate_at_position(position);
                active.size_bytes = position;
                active.next_offset = self.durable_offset + 1;
                active.max_timestamp_ms = max_ts;
                self.effects.push_back(LogEffect::TruncateSegment {
                    generation: self.generation,
                    segment: active.id,
                    len_bytes: position,
                });
            }
        }
    }

    /// Removes every offset at and after `offset` (Raft's suffix truncation). Offsets
    /// handed out after this call continue from `offset`. A truncation that cuts a
    /// segment in the middle first reads a few KiB to find the batch boundary;
    /// appends made meanwhile are queued behind it. [`LogEvent::Truncated`] reports
    /// when it is done.
    pub fn truncate(&mut self, now: Instant, offset: i64) -> Result<(), OffsetError> {
        if offset < self.start_offset || offset > self.next_offset {
            return Err(self.out_of_range(offset));
        }
        if offset == self.next_offset {
            return Ok(());
        }
        if let Some(pending) = &mut self.truncation {
            if offset > pending.offset {
                pending.deferred.retain(|(_, _, batch)| {
                    BatchHeader::parse(&batch.header).is_ok_and(|h| h.base_offset < offset)
                });
                self.next_offset = offset;
                return Ok(());
            }
            self.truncation = None;
        }
        self.next_offset = offset;
        self.emitted_offset = self.emitted_offset.min(offset - 1);
        self.written_offset = self.written_offset.min(offset - 1);
        self.unwritten.retain(|w| w.last_offset < offset);
        if let Some(sync) = &mut self.sync_in_flight {
            if sync.covers_offset >= offset {
                sync.covers_offset = offset - 1;
                sync.end = DurableEnd::AtPendingTruncation;
            }
        }
        // Whole segments at or after the cut go, newest first.
        while let Some(last) = self.segments.last() {
            if last.id.base_offset < offset {
                break;
            }
            let id = last.id;
            self.segments.pop();
            self.dirty.remove(&id);
            self.effects.push_back(LogEffect::DeleteSegment {
                generation: self.generation,
                segment: id,
            });
        }
        let durable_cut = self.durable_offset >= offset;
        if durable_cut {
            self.durable_offset = offset - 1;
            self.durable_end = DurableEnd::AtPendingTruncation;
        }
        let Some(active) = self.segments.last() else {
            self.finish_truncation_at(now, None, offset);
            return Ok(());
        };
        let segment = active.id;
        if active.next_offset <= offset {
            // The cut falls at the end of what remains: nothing to cut in the file.
            self.finish_truncation_at(now, None, offset);
            return Ok(());
        }
        match active.index.lookup_offset(offset) {
            Some((entry, _)) if active.id.base_offset + i64::from(entry.relative_offset) == offset => {
                self.finish_truncation_at(now, Some(u64::from(entry.position)), offset);
            }
            Some((entry, next_position)) => {
                let start = u64::from(entry.position);
                let end = next_position.map_or(active.size_bytes, u64::from);
                let range = FileRange {
                    segment,
                    position: start,
                    len_bytes: end - start,
                };
                let read_id = self.take_id();
                self.truncation = Some(PendingTruncation {
                    read_id,
                    segment,
                    offset,
                    range,
                    deferred: Vec::new(),
                });
                self.effects.push_back(LogEffect::Read {
                    generation: self.generation,
                    read_id,
                    range,
                });
            }
            None => unreachable!("a non-empty segment has an index entry for its first batch"),
        }
        Ok(())
    }

    /// Cuts the active segment at `position` (or nothing, if `None`: the cut fell on
    /// a segment boundary) and reports the truncation.
    fn finish_truncation_at(&mut self, now: Instant, position: Option<u64>, offset: i64) {
        if let (Some(position), Some(active)) = (position, self.segments.last_mut()) {
            active.index.truncate_at_position(position);
            active.size_bytes = position;
            active.next_offset = offset;
            // max_timestamp_ms stays an upper bound: retention keeps data longer, never
            // shorter, and timestamp lookups read the bytes. The segment becomes dirty:
            // the next sync makes the cut durable (and any writes before it).
            self.dirty.insert(active.id);
            self.effects.push_back(LogEffect::TruncateSegment {
                generation: self.generation,
                segment: active.id,
                len_bytes: position,
            });
        }
        let new_end = match self.segments.last() {
            Some(active) => DurableEnd::At {
                segment: active.id,
                position: active.size_bytes,
                max_timestamp_ms: active.max_timestamp_ms,
            },
            None => DurableEnd::Nothing,
        };
        if self.durable_end == DurableEnd::AtPendingTruncation {
            self.durable_end = new_end;
        }
        if let Some(sync) = &mut self.sync_in_flight {
            if sync.end == DurableEnd::AtPendingTruncation {
                sync.end = new_end;
            }
        }
        if offset <= self.checkpoint.emitted_durable_offset {
            self.emit_checkpoint(now);
        }
        self.events.push_back(LogEvent::Truncated { next_offset: offset });
    }

    fn on_read(&mut self, now: Instant, read_id: u64, data: Bytes) {
        let Some(pending) = self.truncation.take_if(|t| t.read_id == read_id) else {
            return;
        };
        let mut boundary = None;
        let mut batches = super::batch::iter_batches(&data);
        for (at, header) in batches.by_ref() {
            if header.base_offset == pending.offset {
                boundary = Some(pending.range.position + at as u64);
                break;
            }
            if header.next_offset() == pending.offset {
                boundary = Some(pending.range.position + (at + header.size_bytes()) as u64);
                break;
            }
            if header.base_offset > pending.offset || header.last_offset() >= pending.offset {
                break;
            }
        }
        let Some(position) = boundary else {
            let reason = format!(
                "no batch starts at offset {} between bytes {} and {}",
                pending.offset,
                pending.range.position,
                pending.range.position + pending.range.len_bytes
            );
            self.mark_corrupted(pending.segment, pending.range.position, reason);
            return;
        };
        self.finish_truncation_at(now, Some(position), pending.offset);
        for (at, term, batch) in pending.deferred {
            self.write_batch(at.max(now), term, batch);
        }
        if std::mem::take(&mut self.sync_wanted) {
            self.issue_or_complete_wanted_sync();
        }
    }

    /// Serves a sync that was asked for while another was in flight or a truncation was
    /// pending: issue it, or — if nothing turned out to need syncing — report the
    /// promised ticket done.
    fn issue_or_complete_wanted_sync(&mut self) {
        if self.truncation.is_some() || self.sync_in_flight.is_some() {
            self.sync_wanted = true;
        } else if !self.dirty.is_empty() {
            self.issue_sync();
        } else {
            self.sync_issued = SyncTicket(self.sync_issued.0 + 1);
            self.sync_done = self.sync_issued;
            self.events.push_back(LogEvent::SyncDone {
                ticket: self.sync_done,
            });
        }
    }

    fn mark_corrupted(&mut self, segment: SegmentId, position: u64, reason: String) {
        self.unavailable = Some(reason.clone());
        self.events.push_back(LogEvent::Corrupted {
            segment,
            position,
            reason,
        });
    }

    /// Replaces the whole log by an empty one whose first offset is `start_offset`,
    /// following an entry of `term` (a follower installing a snapshot that its log does
    /// not contain). Everything queued before is superseded (a new generation); the
    /// reset reaches the disk as one [`LogEffect::ResetLog`], crash-safe: recovery finds
    /// the old log or the empty one, never a mix. Returns the ticket whose
    /// [`LogEvent::SyncDone`] reports the reset durable.
    pub fn reset_to(&mut self, start_offset: i64, term: i64) -> SyncTicket {
        assert!(start_offset > 0 && term >= 0, "a reset starts past offset 0");
        self.generation += 1;
        let old: Vec<SegmentId> = self.segments.drain(..).map(|s| s.id).collect();
        self.start_offset = start_offset;
        self.next_offset = start_offset;
        self.emitted_offset = start_offset - 1;
        self.written_offset = start_offset - 1;
        self.durable_offset = start_offset - 1;
        self.durable_end = DurableEnd::Nothing;
        self.dirty.clear();
        self.unwritten.clear();
        self.truncation = None;
        self.sync_wanted = false;
        self.unavailable = None;
        self.reset_term = Some(term);
        self.start_term_known = Some((start_offset, term));
        self.checkpoint = CheckpointState {
            written_at: None,
            in_flight: None,
            wanted: false,
            durable_start_offset: start_offset,
            emitted_durable_offset: start_offset - 1,
            last_emitted: None,
        };
        self.sync_issued = SyncTicket(self.sync_issued.0 + 1);
        let sync_id = self.sync_issued.0;
        self.sync_in_flight = Some(SyncInFlight {
            sync_id,
            covers_offset: start_offset - 1,
            end: DurableEnd::Nothing,
        });
        let reset = LogEffect::ResetLog {
            generation: self.generation,
            sync_id,
            segments: old,
            checkpoint: Checkpoint::reset_marker(start_offset, term).encode(),
        };
        self.reset_in_flight = Some(reset.clone());
        self.reset_failures = 0;
        self.effects.push_back(reset);
        self.sync_issued
    }

    /// After a failure: a reset that had not completed is issued again in the new
    /// generation (it is idempotent), still as the sync in flight, ahead of anything
    /// appended after it. After [`MAX_RESET_FAILURES`] the log stops taking appends:
    /// nothing may be called durable on top of a reset the disk has not carried out.
    fn reissue_reset(&mut self, error: &DiskError) {
        let Some(LogEffect::ResetLog {
            sync_id,
            segments,
            checkpoint,
            ..
        }) = self.reset_in_flight.take()
        else {
            return;
        };
        self.reset_failures += 1;
        if self.reset_failures >= MAX_RESET_FAILURES {
            let reason = format!(
                "resetting the log to offset {} failed {} times ({error}); a restart finishes or undoes it",
                self.start_offset, self.reset_failures
            );
            let segment = SegmentId {
                base_offset: self.start_offset,
                term: self.reset_term.unwrap_or(0),
            };
            self.mark_corrupted(segment, 0, reason);
            return;
        }
        self.sync_in_flight = Some(SyncInFlight {
            sync_id,
            covers_offset: self.start_offset - 1,
            end: DurableEnd::Nothing,
        });
        let reset = LogEffect::ResetLog {
            generation: self.generation,
            sync_id,
            segments,
            checkpoint,
        };
        self.reset_in_flight = Some(reset.clone());
        self.effects.push_back(reset);
    }

    /// Applies `retention.bytes` and `retention.ms` (against the wall-clock time
    /// `now_wall_ms`): deletes whole closed segments from the front, never any offset
    /// above `max_removable_offset` (what Raft snapshots or tiering allow). Returns the
    /// new start offset if it moved.
    pub fn enforce_retention(
        &mut self,
        now: Instant,
        now_wall_ms: i64,
        max_removable_offset: i64,
    ) -> Option<i64> {
        let below_start = self.segments_below_start();
        let live = &self.segments[below_start..];
        let mut total_bytes: u64 = live.iter().map(|s| s.size_bytes).sum();
        let mut removed = 0;
        for segment in live.iter().take(live.len().saturating_sub(1)) {
            if segment.last_offset() > max_removable_offset {
                break;
            }
            let over_size = self
                .config
                .retention_bytes
                .is_some_and(|limit| total_bytes - segment.size_bytes >= limit);
            let too_old = self.config.retention_ms.is_some_and(|limit_ms| {
                segment.max_timestamp_ms >= 0
                    && now_wall_ms.saturating_sub(segment.max_timestamp_ms) > limit_ms as i64
            });
            if !(over_size || too_old) {
                break;
            }
            total_bytes -= segment.size_bytes;
            removed += 1;
        }
        if removed == 0 {
            return None;
        }
        let new_start = live[removed].id.base_offset;
        self.start_offset = self.start_offset.max(new_start);
        self.maybe_checkpoint(now, true);
        Some(self.start_offset)
    }

    /// DeleteRecords: moves the log start offset to `offset` (which may fall inside a
    /// segment) and deletes the segments wholly below it. The move is durable once
    /// [`LogEvent::StartOffsetDurable`] reports it.
    pub fn delete_records(&mut self, now: Instant, offset: i64) -> Result<i64, OffsetError> {
        if offset > self.next_offset || offset < 0 {
            return Err(self.out_of_range(offset));
        }
        if offset <= self.start_offset {
            return Ok(self.start_offset);
        }
        self.start_offset = offset;
        self.maybe_checkpoint(now, true);
        Ok(offset)
    }

    /// How many leading segments lie wholly below the start offset (deleted once a
    /// checkpoint recording that start is durable).
    fn segments_below_start(&self) -> usize {
        self.segments
            .iter()
            .take_while(|s| s.next_offset <= self.start_offset)
            .count()
    }

    /// Deletes segments wholly below the durable start offset. Deleting them earlier
    /// could let a crash forget offsets that must never be handed out again. The last
    /// segment stays: it marks where the log ends.
    fn delete_segments_below_durable_start(&mut self) {
        let durable_start = self.checkpoint.durable_start_offset;
        let below = self
            .segments
            .iter()
            .take_while(|s| s.next_offset <= durable_start)
            .count()
            .min(self.segments.len().saturating_sub(1));
        self.drop_front_segments(below);
    }

    fn drop_front_segments(&mut self, count: usize) {
        for segment in self.segments.drain(..count) {
            self.dirty.remove(&segment.id);
            self.effects.push_back(LogEffect::DeleteSegment {
                generation: self.generation,
                segment: segment.id,
            });
        }
    }

    fn checkpoint_pending_progress(&self) -> bool {
        self.checkpoint.wanted || self.checkpoint.durable_start_offset != self.checkpointable_start()
    }

    /// The start offset a checkpoint may record now: never past the locally durable
    /// end. A start can run ahead of it (a follower applies a committed start, or a
    /// trim, before its own copy of the offsets below is synced); recorded as is, a
    /// crash that tore those offsets off would leave a log starting after its last
    /// segment ends, which Raft cannot continue. The rest of the move is recorded once
    /// the data below it is durable. The same holds with nothing durable yet: after a
    /// reset, the durable offset is the one before the reset's start, and a start moved
    /// past it before the first sync is not recorded (recorded in the reset marker, it
    /// would make recovery take the appended segments for the old log and drop them).
    fn checkpointable_start(&self) -> i64 {
        self.start_offset.min(self.durable_offset + 1)
    }

    /// Writes a checkpoint if one is wanted and due: at once when forced or when the
    /// start offset moved (DeleteRecords waits for it), else at most once per
    /// `checkpoint_interval_ms`. Never one that records what the last one emitted
    /// records (already on disk, or on its way there).
    fn maybe_checkpoint(&mut self, now: Instant, force: bool) {
        if !(force || self.checkpoint_pending_progress()) {
            return;
        }
        if self.checkpoint.last_emitted == Some(self.current_checkpoint()) {
            self.checkpoint.wanted = false;
            return;
        }
        if self.checkpoint.in_flight.is_some() {
            self.checkpoint.wanted = true;
            return;
        }
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        let due = self.checkpoint.written_at.is_none_or(|at| now >= at + interval);
        let start_moved = self.checkpoint.durable_start_offset != self.checkpointable_start();
        if !(force || start_moved || due) {
            self.checkpoint.wanted = true;
            return;
        }
        self.emit_checkpoint(now);
    }

    /// Emits a checkpoint of the current state. One already in flight is superseded:
    /// effects run in order, so the newer content lands last.
    fn emit_checkpoint(&mut self, now: Instant) {
        let checkpoint = self.current_checkpoint();
        let checkpoint_id = self.take_id();
        self.checkpoint.in_flight = Some((checkpoint_id, checkpoint.start_offset));
        self.checkpoint.wanted = false;
        self.checkpoint.written_at = Some(now);
        self.checkpoint.emitted_durable_offset = checkpoint.durable_offset;
        if let Some(term) = checkpoint.known_start_term() {
            self.start_term_known = Some((checkpoint.start_offset, term));
        }
        self.checkpoint.last_emitted = Some(checkpoint);
        self.effects.push_back(LogEffect::WriteCheckpoint {
            generation: self.generation,
            checkpoint_id,
            data: checkpoint.encode(),
        });
    }

    /// What a checkpoint written now would record.
    pub fn current_checkpoint(&self) -> Checkpoint {
        let (durable_segment, durable_position) = match self.durable_end {
            DurableEnd::At {
                segment, position, ..
            } => (segment, position),
            _ => (
                SegmentId {
                    base_offset: self.start_offset,
                    term: -1,
                },
                0,
            ),
        };
        let durable_offset = match self.durable_end {
            DurableEnd::At { .. } => self.durable_offset,
            _ => -1,
        };
        if let (Some(term), -1) = (self.reset_term, durable_offset) {
            // Nothing durable since a reset: keep the marker, at the reset's start
            // (where the checkpointable start stays until a sync), so recovery knows the
            // term before the start (and that older segments are not part of this log).
            return Checkpoint::reset_marker(self.checkpointable_start(), term);
        }
        let start_offset = self.checkpointable_start();
        Checkpoint {
            start_offset,
            durable_offset,
            durable_segment,
            durable_position,
            start_term: self.term_before(start_offset).unwrap_or(-1),
        }
    }

    fn on_checkpoint_written(&mut self, now: Instant, checkpoint_id: u64) {
        let Some((_, start_offset)) = self.checkpoint.in_flight.take_if(|(id, _)| *id == checkpoint_id)
        else {
            return;
        };
        if start_offset > self.checkpoint.durable_start_offset {
            self.checkpoint.durable_start_offset = start_offset;
            self.delete_segments_below_durable_start();
            self.events
                .push_back(LogEvent::StartOffsetDurable { start_offset });
        }
        if self.checkpoint_pending_progress() {
            self.maybe_checkpoint(now, false);
        }
    }

    /// Queues the repairs recovery decided on (cuts, deletions, index rewrites) ahead
    /// of everything else, then a sync of the segments recovery scanned — data found on
    /// disk after a crash may still sit in a volatile cache — and a fresh checkpoint,
    /// which the in-order contract runs after that sync.
    pub(crate) fn push_recovery_cleanup(&mut self, cleanup: Vec<LogEffect>, scanned: &[SegmentId]) {
        assert!(self.effects.is_empty(), "cleanup goes first");
        self.effects.extend(cleanup);
        self.dirty.extend(
            scanned
                .iter()
                .filter(|id| self.segments.iter().any(|s| s.id == **id)),
        );
        self.sync();
        // A fresh checkpoint of the recovered state, before any append: an older one
        // may name a segment that recovery deleted and an append could re-create.
        self.emit_checkpoint(Instant::ZERO);
    }

    /// Prepares a clean shutdown: writes the active segment's index, syncs, and writes
    /// a checkpoint once the sync completes.
    pub fn close(&mut self, now: Instant) {
        self.close_active_index();
        self.sync();
        self.checkpoint.wanted = true;
        if self.sync_in_flight.is_none() {
            self.maybe_checkpoint(now, true);
        }
    }

    /// Plans the file reads for a fetch of up to `max_bytes` starting at `offset`,
    /// never past `max_offset` (the high watermark) or what is written. The first
    /// batch is included whole even when larger than `max_bytes` (KIP-74).
    pub fn read_plan(&self, offset: i64, max_bytes: u64, max_offset: i64) -> Result<ReadPlan, OffsetError> {
        self.read_plan_from(self.start_offset, offset, max_bytes, max_offset)
    }

    /// [`Log::read_plan`] for Raft's replication: any offset from
    /// [`Log::retained_offset`] on, so whole entries can be read even when the start
    /// offset lies inside one.
    pub fn replication_read_plan(
        &self,
        offset: i64,
        max_bytes: u64,
        max_offset: i64,
    ) -> Result<ReadPlan, OffsetError> {
        self.read_plan_from(self.retained_offset(), offset, max_bytes, max_offset)
    }

    fn read_plan_from(
        &self,
        floor: i64,
        offset: i64,
        max_bytes: u64,
        max_offset: i64,
    ) -> Result<ReadPlan, OffsetError> {
        if offset < floor || offset > self.next_offset {
            return Err(self.out_of_range(offset));
        }
        let readable = max_offset.min(self.written_offset);
        let mut plan = ReadPlan::default();
        if offset > readable {
            return Ok(plan);
        }
        let Some(first) = self.segment_holding(offset) else {
            return Ok(plan);
        };
        let mut budget = max_bytes;
        for (i, segment) in self.segments.iter().enumerate().skip(first) {
            if segment.id.base_offset > readable || (i > first && budget == 0) {
                break;
            }
            let (start, len) = if i == first {
                let Some((entry, next_position)) = segment.index.lookup_offset(offset) else {
                    break;
                };
                let start = u64::from(entry.position);
                let hint_end = next_position.map_or(segment.size_bytes, u64::from);
                let want = (hint_end - start) + max_bytes.max(self.config.max_batch_bytes);
                (start, want.min(segment.size_bytes - start))
            } else {
                (0, budget.min(segment.size_bytes))
            };
            let written_end = self
                .unwritten
                .iter()
                .find(|w| w.segment == segment.id)
                .map_or(segment.size_bytes, |w| w.position);
            let len = len.min(written_end.saturating_sub(start));
            if len == 0 {
                continue;
            }
            budget = budget.saturating_sub(len);
            plan.ranges.push(FileRange {
                segment: segment.id,
                position: start,
                len_bytes: len,
            });
        }
        Ok(plan)
    }

    /// Plans the read that finds the first offset with a timestamp at or after
    /// `timestamp_ms`; `None` if no segment reaches it. Resolve with
    /// [`super::read::find_offset_for_timestamp`].
    pub fn timestamp_plan(&self, timestamp_ms: i64) -> Option<FileRange> {
        let segment = self.segments.iter().find(|s| {
            s.max_timestamp_ms >= timestamp_ms && s.last_offset() >= self.start_offset && !s.is_empty()
        })?;
        let (start, end) = segment.index.lookup_timestamp(timestamp_ms);
        let end = end.map_or(segment.size_bytes, u64::from).min(segment.size_bytes);
        let end = end
            .max(start as u64 + self.config.max_batch_bytes)
            .min(segment.size_bytes);
        Some(FileRange {
            segment: segment.id,
            position: u64::from(start),
            len_bytes: end - u64::from(start),
        })
    }

    fn segment_holding(&self, offset: i64) -> Option<usize> {
        let after = self.segments.partition_point(|s| s.id.base_offset <= offset);
        let i = after.checked_sub(1)?;
        (offset < self.segments[i].next_offset).then_some(i)
    }

    fn out_of_range(&self, offset: i64) -> OffsetError {
        OffsetError::OutOfRange {
            offset,
            start_offset: self.start_offset,
            next_offset: self.next_offset,
        }
    }
}
