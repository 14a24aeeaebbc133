//! The effect executor of one partition directory: runs a log's
//! [`LogEffect`]s in emission order and reports [`LogCompletion`]s.
//!
//! # Shape
//!
//! Submit/complete, like an io_uring ring: [`PartitionStorage::submit`] queues an
//! effect (bounded: a full queue hands the effect back, which is the caller's
//! back-pressure), [`PartitionStorage::run`] advances what is queued, and
//! [`PartitionStorage::poll_completion`] yields the outcomes.
//!
//! Segment writes and `fdatasync`s are [`DataOp`]s. In [`IoMode::Inline`] `run`
//! executes them itself with blocking system calls (tests, recovery, the fallback). In
//! [`IoMode::Submitted`] `run` leaves them for the caller ([`PartitionStorage::take_op`]),
//! which runs them asynchronously — the shard submits them to its io_uring — and reports
//! each outcome with [`PartitionStorage::complete`], after which `run` continues. The
//! state machine is the same in both modes.
//!
//! # Pipeline and group commit
//!
//! * **Appends.** Consecutive writes to one segment are coalesced into one *append*:
//!   staged into aligned buffers (at most [`MAX_BUFFERS_PER_APPEND`] transfers in
//!   flight together, more in later steps) while the segment's logical end advances at
//!   once. One append per segment is in flight: the next one rewrites the partial last
//!   block the previous one wrote, so it waits — and, while it waits, collects every
//!   write queued behind it.
//! * **Syncs.** A [`LogEffect::Sync`] covers the appends started before it. It waits
//!   until they have completed; then the ready syncs form one *round*: one `fdatasync`
//!   per named segment written since the last one was submitted (and a directory
//!   fsync if a segment was created or deleted). An `fdatasync` therefore covers exactly
//!   the writes completed before it was submitted. One round is in flight at a time;
//!   syncs that become ready meanwhile share the next one. Writes keep flowing while a
//!   round is in flight. In `Inline` mode a round starts only when nothing else can
//!   progress, so one `fdatasync` serves every sync of a `run`.
//! * **Small files.** Index, checkpoint and state-file writes start in queue order at
//!   once, as [`FileJob`]s: run inline in [`IoMode::Inline`], handed out in
//!   [`IoMode::Submitted`] ([`PartitionStorage::take_file_job`]; the shard runs them on
//!   a helper thread, so its event loop never blocks in their `fdatasync`, `rename` and
//!   directory `fsync`) and reported with [`PartitionStorage::complete_file_job`]. Writes
//!   and syncs of segments go on meanwhile (these files are advisory and need no
//!   ordering with data syncs); jobs run in the order they were handed out.
//! * **Other effects.** Creating, truncating or deleting a segment and reading one wait
//!   until nothing is in flight — small-file jobs included, so a segment is deleted only
//!   after the checkpoint emitted before the deletion is durable — then run with
//!   blocking calls (they are rare).
//!
//! Completions are reported as operations finish: a `Written` may overtake the `Synced`
//! of an earlier sync, never the other way round for the writes a sync covers.
//!
//! # Failures
//!
//! Any failure of a data operation (create, write, sync, truncate, delete, read,
//! checkpoint) is reported as [`LogCompletion::Failed`] with the effect's generation:
//! ENOSPC/EDQUOT as [`DiskError::NoSpace`](oxbow_core::log::io::DiskError::NoSpace),
//! anything else as `DiskError::Io` naming the operation, path and OS error. A short
//! write is continued from where it stopped; one that makes no progress fails. A failed
//! append returns the segment's logical end to where the append started (nothing
//! already durable is touched) and fails every sync waiting for it. The executor keeps
//! serving later effects (the log starts a new generation and ignores completions of
//! older ones). Index files are advisory (checksummed, rebuilt by recovery): a failed
//! index write is logged and counted, not reported.

use super::aligned::BufferPool;
use super::data_op::{DataOp, DataOpKind, OpFailure, OpResult};
use super::error::{StorageError, StorageResult};
use super::file_job::{FileJob, FileJobKind};
use super::latency_histogram::LatencyHistogram;
use super::read_op::ReadOp;
use super::segment::{EndMark, PartsCursor, SegmentFile};
use super::vfs::{DirEntry, RealVfs, Vfs};
use bytes::Bytes;
use oxbow_core::log::io::{
    FileRange, LogCompletion, LogEffect, SegmentId, StampedBatch, CHECKPOINT_FILE_NAME, STATE_FILE_NAMES,
    TMP_SUFFIX,
};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

/// Most queued writes coalesced into one append.
const MAX_COALESCED_WRITES: usize = 256;
/// Most aligned buffers (transfers in flight together) one append holds at a time.
pub const MAX_BUFFERS_PER_APPEND: usize = 4;
/// Buffers appends leave in the pool for reads (fetches, truncations), when the pool
/// has more than that.
const BUFFERS_KEPT_FOR_READS: usize = 2;

/// Name of the temporary file a checkpoint is written to before it is renamed.
pub const CHECKPOINT_TMP_FILE_NAME: &str = "checkpoint.tmp";

/// Limits of one partition's executor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StorageConfig {
    /// Most effects queued and not yet run; [`PartitionStorage::submit`] refuses more.
    pub max_queued_effects: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            max_queued_effects: 4096,
        }
    }
}

/// Who executes the executor's writes and `fdatasync`s.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum IoMode {
    /// [`PartitionStorage::run`] executes them with blocking system calls.
    #[default]
    Inline,
    /// The caller takes them ([`PartitionStorage::take_op`]), runs them
    /// asynchronously and reports them ([`PartitionStorage::complete`]).
    Submitted,
}

/// Counters of what the executor did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StorageStats {
    /// Write effects executed successfully.
    pub writes: u64,
    /// Logical bytes appended.
    pub written_bytes: u64,
    /// Sync effects reported durable.
    pub syncs_completed: u64,
    /// `fdatasync` calls on segment files (group commit: ≤ syncs requested).
    pub fdatasyncs: u64,
    /// Directory fsyncs.
    pub dir_syncs: u64,
    /// `Failed` completions reported.
    pub failures: u64,
    /// Index writes that failed (advisory, not reported to the log).
    pub index_write_failures: u64,
    /// Checkpoints written durably (each one `fdatasync` and one directory fsync).
    pub checkpoints: u64,
    /// State files (producer-state snapshots) replaced durably.
    pub state_files: u64,
    /// State-file writes that failed (advisory, not reported to the log).
    pub state_file_failures: u64,
    /// Appends (coalesced writes) completed.
    pub appends: u64,
    /// Segment transfers (`pwrite`s of aligned buffers) completed.
    pub transfers: u64,
    /// Latency of the successful `fdatasync`s, from the start of their round (ring
    /// queueing included) to their completion.
    pub fdatasync_latency: LatencyHistogram,
}

/// The queue is full; the effect is handed back to be submitted later.
#[derive(Debug, thiserror::Error)]
#[error("storage queue full ({max_queued_effects} effects)")]
pub struct QueueFull {
    /// The limit that was hit.
    pub max_queued_effects: usize,
    /// The refused effect.
    pub effect: LogEffect,
}

/// A sync waiting for the appends started before it, then for its round.
#[derive(Debug)]
struct PendingSync {
    generation: u64,
    sync_id: u64,
    segments: Vec<SegmentId>,
    /// Appends with a lower sequence number must complete first.
    after_seq: u64,
}

/// Coalesced writes to one segment, staged and written in steps.
#[derive(Debug)]
struct Append {
    seq: u64,
    /// Generation and last offset of each write, in order.
    writes: Vec<(u64, i64)>,
    parts: Vec<Bytes>,
    cursor: PartsCursor,
    /// The segment's end before the append (restored if it fails).
    before: EndMark,
    in_flight: usize,
    error: Option<StorageError>,
}

/// The `fdatasync`s serving a set of ready syncs.
#[derive(Debug)]
struct SyncRound {
    syncs: Vec<PendingSync>,
    in_flight: usize,
    error: Option<StorageError>,
    /// When the round began: each `fdatasync`'s latency counts from here.
    started: std::time::Instant,
}

/// What a data operation in flight belongs to.
#[derive(Clone, Copy, Debug)]
enum OpOwner {
    Append(SegmentId),
    Sync(SegmentId),
    File(FileWhat),
}

/// What a small-file job writes, for its completion.
#[derive(Clone, Copy, Debug)]
enum FileWhat {
    Index,
    Checkpoint { generation: u64, checkpoint_id: u64 },
    StateFile,
}

/// Executes the disk effects of one partition's log in one directory.
#[derive(Debug)]
pub struct PartitionStorage<V: Vfs = RealVfs> {
    vfs: V,
    dir: PathBuf,
    pool: BufferPool,
    config: StorageConfig,
    mode: IoMode,
    segments: BTreeMap<SegmentId, SegmentFile<V::File>>,
    queue: VecDeque<LogEffect>,
    completions: VecDeque<LogCompletion>,
    /// Appends in progress, one per segment at most.
    appends: BTreeMap<SegmentId, Append>,
    next_append_seq: u64,
    pending_syncs: VecDeque<PendingSync>,
    round: Option<SyncRound>,
    /// Data operations not yet taken (or, inline, not yet executed).
    outbox: VecDeque<DataOp<V::File>>,
    /// Small-file jobs not yet taken ([`IoMode::Submitted`]).
    file_jobs: VecDeque<FileJob>,
    /// Small-file jobs queued or handed out and not yet completed.
    files_in_flight: usize,
    /// Data operations and small-file jobs handed out and not yet completed.
    owners: BTreeMap<u64, OpOwner>,
    next_token: u64,
    /// The last `run` stopped for want of a free aligned buffer.
    waiting_for_buffers: bool,
    /// A segment was created or deleted since the last directory fsync.
    dir_unsynced: bool,
    stats: StorageStats,
}

impl<V: Vfs> PartitionStorage<V> {
    /// Opens (creating if needed) the partition directory `dir`. Segment files are
    /// opened lazily, when an effect needs them. Data operations run inline until
    /// [`PartitionStorage::set_io_mode`] says otherwise.
    pub fn open(vfs: V, dir: &Path, pool: BufferPool, config: StorageConfig) -> StorageResult<Self> {
        vfs.create_dir_all(dir)
            .map_err(|e| StorageError::io("mkdir", dir, e))?;
        Ok(PartitionStorage {
            vfs,
            dir: dir.to_path_buf(),
            pool,
            config,
            mode: IoMode::Inline,
            segments: BTreeMap::new(),
            queue: VecDeque::new(),
            completions: VecDeque::new(),
            appends: BTreeMap::new(),
            next_append_seq: 0,
            pending_syncs: VecDeque::new(),
            round: None,
            outbox: VecDeque::new(),
            file_jobs: VecDeque::new(),
            files_in_flight: 0,
            owners: BTreeMap::new(),
            next_token: 0,
            waiting_for_buffers: false,
            dir_unsynced: true,
            stats: StorageStats::default(),
        })
    }

    /// Chooses who executes writes and syncs from now on.
    pub fn set_io_mode(&mut self, mode: IoMode) {
        self.mode = mode;
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the executor has done so far.
    pub fn stats(&self) -> StorageStats {
        self.stats
    }

    /// Effects queued and not yet started.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Data operations and small-file jobs handed out (or waiting in the outbox) and
    /// not yet completed.
    pub fn ops_in_flight(&self) -> usize {
        self.owners.len()
    }

    /// Small-file jobs queued or handed out and not yet completed.
    pub fn files_in_flight(&self) -> usize {
        self.files_in_flight
    }

    /// Whether the last [`PartitionStorage::run`] stopped for want of a free aligned
    /// buffer (run again once operations in flight return theirs).
    pub fn waiting_for_buffers(&self) -> bool {
        self.waiting_for_buffers
    }

    /// Nothing queued, nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.is_quiescent()
    }

    /// Queues an effect; hands it back when the queue is full.
    pub fn submit(&mut self, effect: LogEffect) -> Result<(), Box<QueueFull>> {
        if self.queue.len() >= self.config.max_queued_effects {
            return Err(Box::new(QueueFull {
                max_queued_effects: self.config.max_queued_effects,
                effect,
            }));
        }
        self.queue.push_back(effect);
        Ok(())
    }

    /// The next completion, in the order the effects finished.
    pub fn poll_completion(&mut self) -> Option<LogCompletion> {
        self.completions.pop_front()
    }

    /// The next data operation to run ([`IoMode::Submitted`]); report its outcome with
    /// [`PartitionStorage::complete`].
    pub fn take_op(&mut self) -> Option<DataOp<V::File>> {
        self.outbox.pop_front()
    }

    /// The next small-file job to run ([`IoMode::Submitted`]); report its outcome with
    /// [`PartitionStorage::complete_file_job`]. Jobs must run in the order taken.
    pub fn take_file_job(&mut self) -> Option<FileJob> {
        self.file_jobs.pop_front()
    }

    /// Takes the outcome of a data operation handed out by
    /// [`PartitionStorage::take_op`]; call [`PartitionStorage::run`] afterwards.
    pub fn complete(&mut self, token: u64, result: OpResult) {
        match self.owners.remove(&token) {
            Some(OpOwner::Append(segment)) => self.transfer_done(segment, result),
            Some(OpOwner::Sync(segment)) => self.fdatasync_done(segment, result),
            Some(OpOwner::File(what)) => {
                // The caller's mistake: fail the job rather than lose its completion.
                let error = io::Error::other("a file job was reported as a data operation");
                let error = StorageError::io("complete", &self.dir, error);
                self.files_in_flight = self.files_in_flight.saturating_sub(1);
                self.file_job_done(what, Err(error));
            }
            None => tracing::warn!(token, "storage: completion of an unknown operation ignored"),
        }
    }

    /// Takes the outcome of a small-file job handed out by
    /// [`PartitionStorage::take_file_job`]; call [`PartitionStorage::run`] afterwards.
    pub fn complete_file_job(&mut self, token: u64, result: StorageResult<()>) {
        match self.owners.get(&token) {
            Some(OpOwner::File(what)) => {
                let what = *what;
                self.owners.remove(&token);
                self.files_in_flight = self.files_in_flight.saturating_sub(1);
                self.file_job_done(what, result);
            }
            Some(_) => tracing::error!(
                token,
                "storage: a data operation completed as a file job; ignored"
            ),
            None => tracing::warn!(token, "storage: completion of an unknown file job ignored"),
        }
    }

    /// Advances every queued effect as far as it can go (see the module doc); returns
    /// the number of effects started. Inline, it returns once nothing is in flight or
    /// only buffers are missing; submitted, once everything left waits for an operation
    /// in flight or a buffer.
    pub fn run(&mut self) -> usize {
        let mut started = 0;
        loop {
            started += self.advance();
            if self.mode == IoMode::Submitted {
                // A round that finished at once (nothing to flush) may unblock the queue.
                if self.start_round() && self.round.is_none() {
                    continue;
                }
                return started;
            }
            if let Some(op) = self.outbox.pop_front() {
                let result = op.execute();
                let token = op.token;
                drop(op);
                self.complete(token, result);
                continue;
            }
            if let Some(job) = self.file_jobs.pop_front() {
                // Queued while submitted (the mode changed since, e.g. at close).
                let result = job.kind.execute(&self.vfs);
                self.complete_file_job(job.token, result);
                continue;
            }
            if !self.start_round() {
                return started;
            }
        }
    }

    /// Reads a byte range of a segment for a fetch (clipped to the segment's end).
    pub fn read(&mut self, range: FileRange) -> StorageResult<Bytes> {
        let pool = self.pool.clone();
        self.segment_mut(range.segment)?
            .read(&pool, range.position, range.len_bytes)
    }

    /// A fetch read of a byte range of a segment (clipped to the segment's end) as an
    /// operation for the shard's io_uring; `None` when the range is empty.
    pub fn read_op(&mut self, range: FileRange) -> StorageResult<Option<ReadOp<V::File>>> {
        self.segment_mut(range.segment)?
            .read_op(range.position, range.len_bytes)
    }

    /// The regular files of the partition directory with their sizes, sorted by name.
    pub fn list_dir(&self) -> StorageResult<Vec<DirEntry>> {
        self.vfs
            .list_dir(&self.dir)
            .map_err(|e| StorageError::io("readdir", &self.dir, e))
    }

    /// Reads a small file of the directory (an index or the checkpoint); `None` if it
    /// does not exist.
    pub fn read_small_file(&self, name: &str) -> StorageResult<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        match self.vfs.read_small_file(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("read", &path, e)),
        }
    }

    /// Removes a temporary checkpoint left by a crash in the middle of a checkpoint
    /// write (the real checkpoint is intact: it is replaced only by a rename).
    pub fn remove_checkpoint_tmp(&mut self) -> StorageResult<()> {
        let state_tmps = STATE_FILE_NAMES.iter().map(|name| format!("{name}{TMP_SUFFIX}"));
        for name in std::iter::once(CHECKPOINT_TMP_FILE_NAME.to_string()).chain(state_tmps) {
            let tmp = self.dir.join(name);
            match self.vfs.remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("unlink", &tmp, e)),
            }
        }
        Ok(())
    }

    /// Logical length of a segment as the executor knows it (opening it if needed).
    pub fn segment_len_bytes(&mut self, segment: SegmentId) -> StorageResult<u64> {
        Ok(self.segment_mut(segment)?.end_bytes())
    }

    /// Runs what is queued (inline), then seals and syncs every open segment (exact
    /// lengths on disk) and the directory. Operations still in flight elsewhere (a
    /// caller that did not wait for [`PartitionStorage::is_idle`]) are not waited for.
    pub fn close(mut self) -> StorageResult<()> {
        self.mode = IoMode::Inline;
        self.run();
        if !self.owners.is_empty() {
            tracing::warn!(dir = %self.dir.display(), ops = self.owners.len(), "storage: closing with operations in flight");
        }
        let segments = std::mem::take(&mut self.segments);
        for (_, file) in segments {
            file.close()?;
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("fsync", &self.dir, e))
    }

    fn segment_path(&self, segment: SegmentId) -> PathBuf {
        self.dir.join(segment.file_name())
    }

    /// The open segment, opening an existing file if needed.
    fn segment_mut(&mut self, segment: SegmentId) -> StorageResult<&mut SegmentFile<V::File>> {
        let path = self.dir.join(segment.file_name());
        match self.segments.entry(segment) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => Ok(entry.insert(SegmentFile::open(&self.vfs, &path, &self.pool)?)),
        }
    }

    fn is_quiescent(&self) -> bool {
        self.appends.is_empty()
            && self.round.is_none()
            && self.pending_syncs.is_empty()
            && self.outbox.is_empty()
            && self.files_in_flight == 0
    }

    /// Buffers an append may take now.
    fn free_write_buffers(&self) -> usize {
        let kept = BUFFERS_KEPT_FOR_READS.min(self.pool.buffer_count().saturating_sub(1));
        self.pool.available().saturating_sub(kept)
    }

    /// Starts what the queue's head allows, in order; returns the effects started.
    fn advance(&mut self) -> usize {
        self.waiting_for_buffers = false;
        let waiting: Vec<SegmentId> = self
            .appends
            .iter()
            .filter(|(_, append)| append.in_flight == 0)
            .map(|(segment, _)| *segment)
            .collect();
        for segment in waiting {
            self.step_append(segment);
        }
        let mut started = 0;
        while let Some(effect) = self.queue.front() {
            match effect {
                LogEffect::Write { segment, .. } => {
                    if self.appends.contains_key(segment) || self.waiting_for_buffers {
                        break;
                    }
                    if self.free_write_buffers() == 0 {
                        self.waiting_for_buffers = true;
                        break;
                    }
                    started += self.start_append();
                }
                LogEffect::Sync { .. } => {
                    if let Some(LogEffect::Sync {
                        generation,
                        sync_id,
                        segments,
                    }) = self.queue.pop_front()
                    {
                        self.pending_syncs.push_back(PendingSync {
                            generation,
                            sync_id,
                            segments,
                            after_seq: self.next_append_seq,
                        });
                    }
                    started += 1;
                }
                LogEffect::WriteIndex { .. }
                | LogEffect::WriteCheckpoint { .. }
                | LogEffect::WriteStateFile { .. } => {
                    if let Some(effect) = self.queue.pop_front() {
                        self.start_file_job(effect);
                    }
                    started += 1;
                }
                other => {
                    if !self.is_quiescent() {
                        break;
                    }
                    if self.pool.available() == 0 && needs_buffer(other) {
                        self.waiting_for_buffers = true;
                        break;
                    }
                    if let Some(effect) = self.queue.pop_front() {
                        self.execute_other(effect);
                    }
                    started += 1;
                }
            }
        }
        started
    }

    /// Starts an append with the write at the queue's head and the writes right behind
    /// it that continue it; returns the number of writes taken.
    fn start_append(&mut self) -> usize {
        let Some(LogEffect::Write {
            generation,
            segment,
            position,
            data,
            last_offset,
        }) = self.queue.pop_front()
        else {
            return 0;
        };
        let mut end = position + data.len() as u64;
        let mut writes = vec![(generation, last_offset)];
        let mut parts = Vec::new();
        push_parts(&mut parts, data);
        while let Some(LogEffect::Write {
            segment: next_segment,
            position: next_position,
            data: next_data,
            ..
        }) = self.queue.front()
        {
            if *next_segment != segment || *next_position != end || writes.len() >= MAX_COALESCED_WRITES {
                break;
            }
            end += next_data.len() as u64;
            if let Some(LogEffect::Write {
                generation,
                data,
                last_offset,
                ..
            }) = self.queue.pop_front()
            {
                writes.push((generation, last_offset));
                push_parts(&mut parts, data);
            }
        }
        let taken = writes.len();
        let before = match self
            .segment_mut(segment)
            .and_then(|file| file.check_append(position).map(|()| file.mark_end()))
        {
            Ok(before) => before,
            Err(error) => {
                self.fail_generations(writes.iter().map(|(generation, _)| *generation), &error);
                return taken;
            }
        };
        let seq = self.next_append_seq;
        self.next_append_seq += 1;
        self.appends.insert(
            segment,
            Append {
                seq,
                writes,
                parts,
                cursor: PartsCursor::default(),
                before,
                in_flight: 0,
                error: None,
            },
        );
        self.step_append(segment);
        taken
    }

    /// Stages the append's next transfers (as many buffers as it may take), or
    /// finishes it when it is done or failed.
    fn step_append(&mut self, segment: SegmentId) {
        let budget = self.free_write_buffers().min(MAX_BUFFERS_PER_APPEND);
        let Some(append) = self.appends.get_mut(&segment) else {
            return;
        };
        if append.in_flight > 0 {
            return;
        }
        if append.error.is_some() || append.cursor.is_done(&append.parts) {
            self.finish_append(segment);
            return;
        }
        if budget == 0 {
            self.waiting_for_buffers = true;
            return;
        }
        let Some(file) = self.segments.get_mut(&segment) else {
            // Appends start on an open segment, and nothing closes one under them.
            append.error = Some(StorageError::NoSuchSegment {
                path: self.dir.join(segment.file_name()),
            });
            self.finish_append(segment);
            return;
        };
        for _ in 0..budget {
            if append.cursor.is_done(&append.parts) {
                break;
            }
            let Ok(mut buf) = self.pool.acquire() else {
                break;
            };
            let staged = file.stage(&mut buf, &append.parts, &mut append.cursor);
            let token = self.next_token;
            self.next_token += 1;
            self.owners.insert(token, OpOwner::Append(segment));
            self.outbox.push_back(DataOp {
                token,
                file: file.file().clone(),
                kind: DataOpKind::Write {
                    buf,
                    len_bytes: staged.len_bytes,
                    position: staged.position,
                },
            });
            append.in_flight += 1;
        }
    }

    fn transfer_done(&mut self, segment: SegmentId, result: OpResult) {
        let Some(append) = self.appends.get_mut(&segment) else {
            return;
        };
        append.in_flight -= 1;
        match result {
            Ok(()) => {
                self.stats.transfers += 1;
                if let Some(file) = self.segments.get_mut(&segment) {
                    file.mark_written();
                }
            }
            Err(failure) => {
                if append.error.is_none() {
                    append.error = Some(match self.segments.get(&segment) {
                        Some(file) => file.write_error(failure),
                        None => {
                            StorageError::io("pwrite", &self.dir.join(segment.file_name()), into_io(failure))
                        }
                    });
                }
            }
        }
        if append.in_flight == 0 {
            self.step_append(segment);
        }
    }

    /// Reports a finished append: each write, or — if it failed — one failure per
    /// generation involved, including the syncs that were waiting for it.
    fn finish_append(&mut self, segment: SegmentId) {
        let Some(append) = self.appends.remove(&segment) else {
            return;
        };
        match append.error {
            None => {
                self.stats.appends += 1;
                for ((generation, last_offset), data) in append.writes.into_iter().zip(&append.parts) {
                    self.stats.writes += 1;
                    self.stats.written_bytes += data.len() as u64;
                    self.completions.push_back(LogCompletion::Written {
                        generation,
                        last_offset,
                    });
                }
            }
            Some(error) => {
                if let Some(file) = self.segments.get_mut(&segment) {
                    file.restore_end(append.before);
                }
                // Syncs queued after this append cover it: they cannot succeed.
                let (failed, kept): (VecDeque<PendingSync>, VecDeque<PendingSync>) =
                    std::mem::take(&mut self.pending_syncs)
                        .into_iter()
                        .partition(|sync| sync.after_seq > append.seq);
                self.pending_syncs = kept;
                let generations = append.writes.iter().map(|(generation, _)| *generation);
                let generations: Vec<u64> = generations
                    .chain(failed.iter().map(|sync| sync.generation))
                    .collect();
                self.fail_generations(generations, &error);
            }
        }
    }

    /// Starts a round for the syncs whose appends have all completed, if no round is in
    /// flight. Returns whether syncs were taken.
    fn start_round(&mut self) -> bool {
        if self.round.is_some() {
            return false;
        }
        let oldest_append = self.appends.values().map(|append| append.seq).min();
        let ready = self
            .pending_syncs
            .iter()
            .take_while(|sync| oldest_append.is_none_or(|seq| sync.after_seq <= seq))
            .count();
        if ready == 0 {
            return false;
        }
        let syncs: Vec<PendingSync> = self.pending_syncs.drain(..ready).collect();
        let named: BTreeSet<SegmentId> = syncs
            .iter()
            .flat_map(|sync| sync.segments.iter().copied())
            .collect();
        let mut round = SyncRound {
            syncs,
            in_flight: 0,
            error: None,
            started: std::time::Instant::now(),
        };
        if let Err(error) = self.sync_dir_if_needed() {
            round.error = Some(error);
        } else {
            for segment in named {
                // A segment not open yet is opened and flushed: after recovery the log
                // asks to sync what it found on disk. One that no longer exists has
                // nothing to sync.
                let file = match self.segment_mut(segment) {
                    Ok(file) => match file.take_unsynced() {
                        true => file.file().clone(),
                        false => continue,
                    },
                    Err(StorageError::NoSuchSegment { .. }) => continue,
                    Err(error) => {
                        round.error = Some(error);
                        break;
                    }
                };
                let op = DataOp {
                    token: self.next_token,
                    file,
                    kind: DataOpKind::SyncData,
                };
                self.next_token += 1;
                self.owners.insert(op.token, OpOwner::Sync(segment));
                self.outbox.push_back(op);
                round.in_flight += 1;
            }
        }
        self.round = Some(round);
        self.maybe_finish_round();
        true
    }

    fn fdatasync_done(&mut self, segment: SegmentId, result: OpResult) {
        let path = self.dir.join(segment.file_name());
        if result.is_err() {
            // Not flushed: the next sync must try again.
            if let Some(file) = self.segments.get_mut(&segment) {
                file.mark_written();
            }
        }
        let Some(round) = self.round.as_mut() else {
            return;
        };
        round.in_flight -= 1;
        match result {
            Ok(()) => {
                self.stats.fdatasyncs += 1;
                self.stats.fdatasync_latency.record(round.started.elapsed());
            }
            Err(failure) => {
                if round.error.is_none() {
                    round.error = Some(StorageError::io("fdatasync", &path, into_io(failure)));
                }
            }
        }
        self.maybe_finish_round();
    }

    /// Reports the round's syncs once its last `fdatasync` completed.
    fn maybe_finish_round(&mut self) {
        if self.round.as_ref().is_none_or(|round| round.in_flight > 0) {
            return;
        }
        let Some(round) = self.round.take() else {
            return;
        };
        match round.error {
            None => {
                for sync in round.syncs {
                    self.stats.syncs_completed += 1;
                    self.completions.push_back(LogCompletion::Synced {
                        generation: sync.generation,
                        sync_id: sync.sync_id,
                    });
                }
            }
            Some(error) => {
                self.fail_generations(round.syncs.iter().map(|sync| sync.generation), &error);
            }
        }
    }

    fn sync_dir_if_needed(&mut self) -> StorageResult<()> {
        if self.dir_unsynced {
            self.vfs
                .sync_dir(&self.dir)
                .map_err(|e| StorageError::io("fsync", &self.dir, e))?;
            self.dir_unsynced = false;
            self.stats.dir_syncs += 1;
        }
        Ok(())
    }

    fn execute_other(&mut self, effect: LogEffect) {
        let generation = effect.generation();
        let result = match effect {
            LogEffect::CreateSegment {
                segment,
                preallocate_bytes,
                ..
            } => self.create_segment(segment, preallocate_bytes),
            LogEffect::TruncateSegment {
                segment, len_bytes, ..
            } => self.truncate_segment(segment, len_bytes),
            LogEffect::DeleteSegment { segment, .. } => self.delete_segment(segment),
            effect @ (LogEffect::WriteIndex { .. }
            | LogEffect::WriteCheckpoint { .. }
            | LogEffect::WriteStateFile { .. }) => {
                self.start_file_job(effect);
                Ok(())
            }
            LogEffect::ResetLog {
                sync_id,
                segments,
                checkpoint,
                ..
            } => self.reset_log(&segments, checkpoint).map(|()| {
                self.completions
                    .push_back(LogCompletion::Synced { generation, sync_id })
            }),
            LogEffect::Read { read_id, range, .. } => self.read(range).map(|data| {
                self.completions.push_back(LogCompletion::Read {
                    generation,
                    read_id,
                    data,
                })
            }),
            // Writes and syncs are handled by `advance`; nothing else exists yet.
            other => {
                tracing::warn!(?other, "storage: unknown effect ignored");
                Ok(())
            }
        };
        if let Err(error) = result {
            self.fail(generation, &error);
        }
    }

    fn create_segment(&mut self, segment: SegmentId, preallocate_bytes: u64) -> StorageResult<()> {
        // Older segments are closed for appends: cut their padding and reservation.
        for (id, file) in self.segments.range_mut(..segment) {
            if let Err(error) = file.seal() {
                tracing::warn!(segment = %id, %error, "storage: cannot seal segment");
            }
        }
        let path = self.segment_path(segment);
        self.segments.remove(&segment);
        self.dir_unsynced = true;
        match SegmentFile::create(&self.vfs, &path, preallocate_bytes) {
            Ok(file) => {
                self.segments.insert(segment, file);
                Ok(())
            }
            Err(error) => {
                // Leave no half-made file behind (best effort; recovery copes with an
                // empty segment anyway).
                let _ = self.vfs.remove_file(&path);
                Err(error)
            }
        }
    }

    fn truncate_segment(&mut self, segment: SegmentId, len_bytes: u64) -> StorageResult<()> {
        let pool = self.pool.clone();
        self.segment_mut(segment)?.truncate(&pool, len_bytes)
    }

    fn delete_segment(&mut self, segment: SegmentId) -> StorageResult<()> {
        self.segments.remove(&segment);
        self.dir_unsynced = true;
        let index_path = self.dir.join(segment.index_file_name());
        match self.vfs.remove_file(&index_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %index_path.display(), %error, "storage: cannot delete index")
            }
        }
        let path = self.segment_path(segment);
        match self.vfs.remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("unlink", &path, e)),
        }
    }

    /// [`LogEffect::ResetLog`], in the crash-safe order its contract gives: the marker
    /// checkpoint (durable), then the old segments from the last to the first, then a
    /// directory fsync so no deletion is undone by a crash after the new log's first
    /// segment exists.
    fn reset_log(&mut self, segments: &[SegmentId], checkpoint: Bytes) -> StorageResult<()> {
        self.replace_job(CHECKPOINT_TMP_FILE_NAME, CHECKPOINT_FILE_NAME, checkpoint)
            .execute(&self.vfs)?;
        for segment in segments.iter().rev() {
            self.delete_segment(*segment)?;
        }
        self.sync_dir_if_needed()
    }

    /// Starts the small-file job of an index, checkpoint or state-file effect: at once
    /// inline, or handed out in [`IoMode::Submitted`].
    fn start_file_job(&mut self, effect: LogEffect) {
        let (what, kind) = match effect {
            LogEffect::WriteIndex { segment, data, .. } => (
                FileWhat::Index,
                FileJobKind::Overwrite {
                    path: self.dir.join(segment.index_file_name()),
                    data,
                },
            ),
            LogEffect::WriteCheckpoint {
                generation,
                checkpoint_id,
                data,
            } => (
                FileWhat::Checkpoint {
                    generation,
                    checkpoint_id,
                },
                self.replace_job(CHECKPOINT_TMP_FILE_NAME, CHECKPOINT_FILE_NAME, data),
            ),
            LogEffect::WriteStateFile { name, data, .. } => {
                if !STATE_FILE_NAMES.contains(&name) {
                    tracing::warn!(name, "storage: unknown state file refused");
                    self.stats.state_file_failures += 1;
                    return;
                }
                let tmp = format!("{name}{TMP_SUFFIX}");
                (FileWhat::StateFile, self.replace_job(&tmp, name, data))
            }
            other => {
                tracing::error!(?other, "storage: not a small-file effect; ignored");
                return;
            }
        };
        let job = FileJob {
            token: self.next_token,
            kind,
        };
        self.next_token += 1;
        if self.mode == IoMode::Inline {
            let result = job.kind.execute(&self.vfs);
            self.file_job_done(what, result);
            return;
        }
        self.owners.insert(job.token, OpOwner::File(what));
        self.files_in_flight += 1;
        self.file_jobs.push_back(job);
    }

    /// A temp file + fdatasync + rename + directory fsync job: the file is either the
    /// old or the new one, never a mix.
    fn replace_job(&self, tmp: &str, name: &str, data: Bytes) -> FileJobKind {
        FileJobKind::Replace {
            dir: self.dir.clone(),
            tmp: self.dir.join(tmp),
            path: self.dir.join(name),
            data,
        }
    }

    /// A small-file job finished (inline, or reported by the caller, who has already
    /// taken it off `files_in_flight`).
    fn file_job_done(&mut self, what: FileWhat, result: StorageResult<()>) {
        match (what, result) {
            (FileWhat::Index, Ok(())) => {}
            (FileWhat::Index, Err(error)) => {
                self.stats.index_write_failures += 1;
                tracing::warn!(%error, "storage: index write failed (recovery rebuilds it)");
            }
            (
                FileWhat::Checkpoint {
                    generation,
                    checkpoint_id,
                },
                Ok(()),
            ) => {
                self.stats.checkpoints += 1;
                self.stats.dir_syncs += 1;
                self.completions.push_back(LogCompletion::CheckpointWritten {
                    generation,
                    checkpoint_id,
                });
            }
            (FileWhat::Checkpoint { generation, .. }, Err(error)) => self.fail(generation, &error),
            (FileWhat::StateFile, Ok(())) => {
                self.stats.state_files += 1;
                self.stats.dir_syncs += 1;
            }
            (FileWhat::StateFile, Err(error)) => {
                self.stats.state_file_failures += 1;
                tracing::warn!(%error, "storage: state file write failed (recovery reads more of the log)");
            }
        }
    }

    /// One failure per distinct generation of `generations`.
    fn fail_generations(&mut self, generations: impl IntoIterator<Item = u64>, error: &StorageError) {
        let distinct: BTreeSet<u64> = generations.into_iter().collect();
        for generation in distinct {
            self.fail(generation, error);
        }
    }

    fn fail(&mut self, generation: u64, error: &StorageError) {
        tracing::warn!(generation, %error, "storage: effect failed");
        self.stats.failures += 1;
        self.completions.push_back(LogCompletion::Failed {
            generation,
            error: error.to_disk_error(),
        });
    }
}

/// Adds a batch's pieces (the stamped header, then its records) to an append's parts.
fn push_parts(parts: &mut Vec<Bytes>, batch: StampedBatch) {
    let pieces = [batch.header, batch.records];
    parts.extend(pieces.into_iter().filter(|piece| !piece.is_empty()));
}

/// Whether executing `effect` (other than a write) takes an aligned buffer from the pool.
fn needs_buffer(effect: &LogEffect) -> bool {
    matches!(effect, LogEffect::Read { .. } | LogEffect::TruncateSegment { .. })
}

/// A data operation's failure as an OS error (syncs fail only that way).
fn into_io(failure: OpFailure) -> io::Error {
    match failure {
        OpFailure::Os(error) => error,
        other => io::Error::other(other.to_string()),
    }
}
