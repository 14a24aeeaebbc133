//! The effect executor of one partition directory: runs a log's
//! [`LogEffect`]s in emission order and reports [`LogCompletion`]s.
//!
//! # Shape
//!
//! Submit/complete, like an io_uring ring: [`PartitionStorage::submit`] queues an
//! effect (bounded: a full queue hands the effect back, which is the caller's
//! back-pressure), [`PartitionStorage::run`] executes what is queued, and
//! [`PartitionStorage::poll_completion`] yields the outcomes. Today `run` performs
//! positioned system calls on the calling thread; a per-shard io_uring loop can replace
//! its body without changing the interface.
//!
//! # Group commit
//!
//! `run` executes writes as they come but defers [`LogEffect::Sync`]s: consecutive
//! writes and syncs form one window, closed by any other effect, a failed write or the
//! end of the queue. Closing the window `fdatasync`s each segment that has unsynced
//! data once, fsyncs the directory if a segment was created or deleted, and then reports
//! every sync of the window as [`LogCompletion::Synced`]. Executing a later write before
//! an earlier sync's `fdatasync` only makes more data durable than promised, never less.
//!
//! # Failures
//!
//! Any failure of a data operation (create, write, sync, truncate, delete, read,
//! checkpoint) is reported as [`LogCompletion::Failed`] with the effect's generation:
//! ENOSPC/EDQUOT as [`DiskError::NoSpace`](oxbow_core::log::io::DiskError::NoSpace),
//! anything else as `DiskError::Io` naming the operation, path and OS error. The
//! executor keeps serving later effects (the log starts a new generation and ignores
//! completions of older ones). A failed write leaves the segment's logical end where it
//! was, so nothing already durable is touched. Index files are advisory (checksummed,
//! rebuilt by recovery): a failed index write is logged and counted, not reported.

use super::aligned::BufferPool;
use super::error::{StorageError, StorageResult};
use super::segment::SegmentFile;
use super::vfs::{DirEntry, RealVfs, Vfs};
use bytes::Bytes;
use oxbow_core::log::io::{
    FileRange, LogCompletion, LogEffect, SegmentId, CHECKPOINT_FILE_NAME, STATE_FILE_NAMES, TMP_SUFFIX,
};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

/// Most queued writes executed together as one coalesced append.
const MAX_COALESCED_WRITES: usize = 256;

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

/// A sync deferred to the end of its group-commit window.
#[derive(Debug)]
struct PendingSync {
    generation: u64,
    sync_id: u64,
    segments: Vec<SegmentId>,
}

/// Executes the disk effects of one partition's log in one directory.
#[derive(Debug)]
pub struct PartitionStorage<V: Vfs = RealVfs> {
    vfs: V,
    dir: PathBuf,
    pool: BufferPool,
    config: StorageConfig,
    segments: BTreeMap<SegmentId, SegmentFile<V::File>>,
    queue: VecDeque<LogEffect>,
    completions: VecDeque<LogCompletion>,
    pending_syncs: Vec<PendingSync>,
    /// A segment was created or deleted since the last directory fsync.
    dir_unsynced: bool,
    stats: StorageStats,
}

impl<V: Vfs> PartitionStorage<V> {
    /// Opens (creating if needed) the partition directory `dir`. Segment files are
    /// opened lazily, when an effect needs them.
    pub fn open(vfs: V, dir: &Path, pool: BufferPool, config: StorageConfig) -> StorageResult<Self> {
        vfs.create_dir_all(dir)
            .map_err(|e| StorageError::io("mkdir", dir, e))?;
        Ok(PartitionStorage {
            vfs,
            dir: dir.to_path_buf(),
            pool,
            config,
            segments: BTreeMap::new(),
            queue: VecDeque::new(),
            completions: VecDeque::new(),
            pending_syncs: Vec::new(),
            dir_unsynced: true,
            stats: StorageStats::default(),
        })
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the executor has done so far.
    pub fn stats(&self) -> StorageStats {
        self.stats
    }

    /// Effects queued and not yet run.
    pub fn queued(&self) -> usize {
        self.queue.len()
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

    /// The next completion, in the order the effects were executed (syncs after the
    /// writes of their window).
    pub fn poll_completion(&mut self) -> Option<LogCompletion> {
        self.completions.pop_front()
    }

    /// Executes every queued effect (see the module doc for group commit); returns the
    /// number executed. Stops early, leaving effects queued, only when the buffer pool
    /// has no free buffer (back-pressure from other users of the shard's pool).
    pub fn run(&mut self) -> usize {
        let mut executed = 0;
        while let Some(effect) = self.queue.pop_front() {
            if self.pool.available() == 0 && needs_buffer(&effect) {
                self.queue.push_front(effect);
                break;
            }
            executed += 1;
            match effect {
                LogEffect::Write {
                    generation,
                    segment,
                    position,
                    data,
                    last_offset,
                } => self.write_coalesced(generation, segment, position, data, last_offset),
                LogEffect::Sync {
                    generation,
                    sync_id,
                    segments,
                } => self.pending_syncs.push(PendingSync {
                    generation,
                    sync_id,
                    segments,
                }),
                other => {
                    self.flush_syncs();
                    self.execute_other(other);
                }
            }
        }
        self.flush_syncs();
        executed
    }

    /// Reads a byte range of a segment for a fetch (clipped to the segment's end).
    pub fn read(&mut self, range: FileRange) -> StorageResult<Bytes> {
        let pool = self.pool.clone();
        self.segment_mut(range.segment)?
            .read(&pool, range.position, range.len_bytes)
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

    /// Runs what is queued, then seals and syncs every open segment (exact lengths on
    /// disk) and the directory.
    pub fn close(mut self) -> StorageResult<()> {
        self.run();
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

    /// Executes a write together with the writes queued right behind it that append to
    /// the same segment: one copy into aligned buffers, as few `pwrite`s as the buffer
    /// size allows. Reports each write, or one failure per generation involved.
    fn write_coalesced(
        &mut self,
        generation: u64,
        segment: SegmentId,
        position: u64,
        data: Bytes,
        last_offset: i64,
    ) {
        let mut end = position + data.len() as u64;
        let mut batch = vec![(generation, last_offset, data)];
        while let Some(LogEffect::Write {
            segment: next_segment,
            position: next_position,
            data: next_data,
            ..
        }) = self.queue.front()
        {
            if *next_segment != segment || *next_position != end || batch.len() >= MAX_COALESCED_WRITES {
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
                batch.push((generation, last_offset, data));
            }
        }
        let parts: Vec<&[u8]> = batch.iter().map(|(_, _, data)| &data[..]).collect();
        let pool = self.pool.clone();
        let result = self
            .segment_mut(segment)
            .and_then(|file| file.append_all(&pool, position, &parts));
        match result {
            Ok(()) => {
                for (generation, last_offset, data) in batch {
                    self.stats.writes += 1;
                    self.stats.written_bytes += data.len() as u64;
                    self.completions.push_back(LogCompletion::Written {
                        generation,
                        last_offset,
                    });
                }
            }
            Err(error) => {
                self.flush_syncs();
                let generations: BTreeSet<u64> = batch.iter().map(|(generation, _, _)| *generation).collect();
                for generation in generations {
                    self.fail(generation, &error);
                }
            }
        }
    }

    /// Closes the group-commit window: one `fdatasync` per unsynced segment named by
    /// the pending syncs, the directory if needed, then one completion per sync.
    fn flush_syncs(&mut self) {
        if self.pending_syncs.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_syncs);
        let named: BTreeSet<SegmentId> = pending
            .iter()
            .flat_map(|sync| sync.segments.iter().copied())
            .collect();
        match self.sync_segments(&named) {
            Ok(()) => {
                for sync in pending {
                    self.stats.syncs_completed += 1;
                    self.completions.push_back(LogCompletion::Synced {
                        generation: sync.generation,
                        sync_id: sync.sync_id,
                    });
                }
            }
            Err(error) => {
                let generations: BTreeSet<u64> = pending.iter().map(|sync| sync.generation).collect();
                for generation in generations {
                    self.fail(generation, &error);
                }
            }
        }
    }

    fn sync_segments(&mut self, named: &BTreeSet<SegmentId>) -> StorageResult<()> {
        for segment in named {
            // A segment not open yet is opened and flushed: after recovery the log asks
            // to sync what it found on disk. One that no longer exists has nothing to
            // sync.
            let file = match self.segment_mut(*segment) {
                Ok(file) => file,
                Err(StorageError::NoSuchSegment { .. }) => continue,
                Err(error) => return Err(error),
            };
            if file.sync()? {
                self.stats.fdatasyncs += 1;
            }
        }
        self.sync_dir_if_needed()
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
            LogEffect::WriteIndex { segment, data, .. } => {
                self.write_index(segment, &data);
                Ok(())
            }
            LogEffect::WriteCheckpoint {
                checkpoint_id, data, ..
            } => self.write_checkpoint(&data).map(|()| {
                self.stats.checkpoints += 1;
                self.completions.push_back(LogCompletion::CheckpointWritten {
                    generation,
                    checkpoint_id,
                })
            }),
            LogEffect::WriteStateFile { name, data, .. } => {
                self.write_state_file(name, &data);
                Ok(())
            }
            LogEffect::ResetLog {
                sync_id,
                segments,
                checkpoint,
                ..
            } => self.reset_log(&segments, &checkpoint).map(|()| {
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
            // Writes and syncs are handled by `run`; nothing else exists yet.
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
    fn reset_log(&mut self, segments: &[SegmentId], checkpoint: &[u8]) -> StorageResult<()> {
        self.write_checkpoint(checkpoint)?;
        for segment in segments.iter().rev() {
            self.delete_segment(*segment)?;
        }
        self.sync_dir_if_needed()
    }

    fn write_index(&mut self, segment: SegmentId, data: &[u8]) {
        let path = self.dir.join(segment.index_file_name());
        if let Err(error) = self.vfs.write_small_file(&path, data, false) {
            self.stats.index_write_failures += 1;
            tracing::warn!(path = %path.display(), %error, "storage: index write failed (recovery rebuilds it)");
        }
    }

    /// Temp file + fdatasync + rename + directory fsync: the checkpoint is either the
    /// old or the new one, never a mix.
    fn write_checkpoint(&mut self, data: &[u8]) -> StorageResult<()> {
        let tmp = self.dir.join(CHECKPOINT_TMP_FILE_NAME);
        let path = self.dir.join(CHECKPOINT_FILE_NAME);
        self.vfs
            .write_small_file(&tmp, data, true)
            .map_err(|e| StorageError::io("write", &tmp, e))?;
        self.vfs
            .rename(&tmp, &path)
            .map_err(|e| StorageError::io("rename", &tmp, e))?;
        self.dir_unsynced = true;
        self.sync_dir_if_needed()
    }

    /// Like a checkpoint (temp file, fdatasync, rename, directory fsync), but advisory:
    /// a failure is logged and counted, and recovery reads more of the log instead.
    fn write_state_file(&mut self, name: &str, data: &[u8]) {
        if !STATE_FILE_NAMES.contains(&name) {
            tracing::warn!(name, "storage: unknown state file refused");
            self.stats.state_file_failures += 1;
            return;
        }
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let path = self.dir.join(name);
        let written = self
            .vfs
            .write_small_file(&tmp, data, true)
            .map_err(|e| StorageError::io("write", &tmp, e))
            .and_then(|()| {
                self.vfs
                    .rename(&tmp, &path)
                    .map_err(|e| StorageError::io("rename", &tmp, e))
            })
            .and_then(|()| {
                self.dir_unsynced = true;
                self.sync_dir_if_needed()
            });
        match written {
            Ok(()) => self.stats.state_files += 1,
            Err(error) => {
                self.stats.state_file_failures += 1;
                tracing::warn!(%error, "storage: state file write failed (recovery reads more of the log)");
            }
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

/// Whether executing `effect` takes an aligned buffer from the pool.
fn needs_buffer(effect: &LogEffect) -> bool {
    matches!(
        effect,
        LogEffect::Write { .. } | LogEffect::Read { .. } | LogEffect::TruncateSegment { .. }
    )
}
