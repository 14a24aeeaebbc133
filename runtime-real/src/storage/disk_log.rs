//! A partition log on disk: core's [`Log`] driven through a [`PartitionStorage`].
//!
//! [`open_partition_log`] (or [`DiskLog::open_in_dir`]) lists the partition directory,
//! hands recovery the index files and the checkpoint, reads the ranges recovery asks
//! for, and runs the repairs the recovered log asks for first (torn tail cut, indexes
//! rewritten, what was found synced). [`DiskLog::pump`] then moves the log's effects to
//! the executor, runs them, and feeds the completions back until both sides are idle.
//! Events ([`oxbow_core::log::LogEvent`]) stay in the log for its owner to poll.
//! [`recover_partition`] does the recovery alone and hands back the log and its storage
//! separately (the broker owns the log inside its replica; the shard owns the storage).

use super::aligned::BufferPool;
use super::error::StorageError;
use super::executor::{PartitionStorage, StorageConfig};
use super::vfs::{RealVfs, Vfs};
use bytes::Bytes;
use oxbow_core::log::checkpoint::Checkpoint;
use oxbow_core::log::io::{partition_dir, SegmentId, CHECKPOINT_FILE_NAME, STATE_FILE_NAMES};
use oxbow_core::log::read::{trim_fetched, CorruptRead};
use oxbow_core::log::{
    DirEntry, Log, LogConfig, LogRecovery, OffsetError, RecoveryError, RecoveryInput, RecoveryReport,
    RecoveryStep,
};
use oxbow_core::time::Instant;
use std::path::Path;

/// Why a partition log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenLogError {
    /// The directory or a file could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Synced data is damaged; nothing was cut (fetch it from a replica).
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

/// Why a fetch read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadLogError {
    /// The offset is outside the log.
    #[error(transparent)]
    Offset(#[from] OffsetError),
    /// The disk read failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The bytes read are not whole valid batches.
    #[error(transparent)]
    Corrupt(#[from] CorruptRead),
}

/// A [`Log`] and the storage that executes its effects.
#[derive(Debug)]
pub struct DiskLog<V: Vfs = RealVfs> {
    log: Log,
    storage: PartitionStorage<V>,
}

/// Opens (recovering) the log of one partition replica under `data_dir`, in
/// `<data_dir>/kafka/<topic>/<partition>_<revision>`, with the real file system.
pub fn open_partition_log(
    data_dir: &Path,
    topic: &str,
    partition: i32,
    revision: i64,
    config: LogConfig,
    pool: BufferPool,
    now: Instant,
) -> Result<(DiskLog, RecoveryReport), OpenLogError> {
    let dir = data_dir.join(partition_dir(topic, partition, revision));
    DiskLog::open_in_dir(
        RealVfs::direct(),
        &dir,
        config,
        pool,
        StorageConfig::default(),
        now,
    )
}

/// Recovers the log kept in `dir` (creating the directory if needed) and returns it
/// with the storage that will execute its effects, kept apart so that the log can live
/// inside a partition replica while the runtime owns the storage. The repairs the
/// recovered log asks for (torn tail cut, indexes rewritten, a sync of what was found)
/// are still queued in the log as effects, and the state files found (the
/// producer-state snapshot) wait in the log for the replica to take: the owner of the log must poll and execute
/// them first, in order, like any other effect.
pub fn recover_partition<V: Vfs>(
    vfs: V,
    dir: &Path,
    config: LogConfig,
    pool: BufferPool,
    storage_config: StorageConfig,
) -> Result<(Log, PartitionStorage<V>, RecoveryReport), OpenLogError> {
    let mut storage = PartitionStorage::open(vfs, dir, pool, storage_config)?;
    let input = recovery_input(&mut storage)?;
    let mut recovery = LogRecovery::new(config, input);
    while let RecoveryStep::Read(range) = recovery.poll() {
        let data = storage.read(range)?;
        recovery.feed(range, data);
    }
    let (log, report) = recovery.finish()?;
    Ok((log, storage, report))
}

impl<V: Vfs> DiskLog<V> {
    /// Opens (recovering) the log kept in `dir`, creating the directory if needed.
    pub fn open_in_dir(
        vfs: V,
        dir: &Path,
        config: LogConfig,
        pool: BufferPool,
        storage_config: StorageConfig,
        now: Instant,
    ) -> Result<(DiskLog<V>, RecoveryReport), OpenLogError> {
        let (log, storage, report) = recover_partition(vfs, dir, config, pool, storage_config)?;
        let mut disk_log = DiskLog { log, storage };
        disk_log.pump(now);
        Ok((disk_log, report))
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The log, to append, sync, truncate, poll events.
    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }

    /// The storage executing the log's effects.
    pub fn storage(&self) -> &PartitionStorage<V> {
        &self.storage
    }

    /// Executes the log's effects and feeds back completions until neither side has
    /// anything left; returns the number of effects executed. A full storage queue is
    /// drained before more effects are taken (back-pressure, not growth).
    pub fn pump(&mut self, now: Instant) -> usize {
        let mut executed = 0;
        loop {
            let mut submitted = 0;
            while let Some(effect) = self.log.poll_effect() {
                if let Err(full) = self.storage.submit(effect) {
                    executed += self.run_and_complete(now);
                    // The queue is empty now, so this cannot fail; if it does, the
                    // effect is handed back once more and we stop here.
                    if let Err(full) = self.storage.submit(full.effect) {
                        tracing::error!(error = %full, "storage queue refused an effect twice");
                        return executed;
                    }
                }
                submitted += 1;
            }
            if submitted == 0 && self.storage.queued() == 0 {
                return executed;
            }
            executed += self.run_and_complete(now);
        }
    }

    fn run_and_complete(&mut self, now: Instant) -> usize {
        let executed = self.storage.run();
        while let Some(completion) = self.storage.poll_completion() {
            self.log.handle_completion(now, completion);
        }
        executed
    }

    /// Reads whole batches for a fetch from `offset`, up to `max_bytes` (the first
    /// batch whole), never past `max_offset`.
    pub fn read(&mut self, offset: i64, max_bytes: u64, max_offset: i64) -> Result<Bytes, ReadLogError> {
        let plan = self.log.read_plan(offset, max_bytes, max_offset)?;
        let mut chunks = Vec::with_capacity(plan.ranges.len());
        for range in plan.ranges {
            chunks.push(self.storage.read(range)?);
        }
        Ok(trim_fetched(&chunks, offset, max_offset, max_bytes)?)
    }

    /// Clean shutdown: the log writes its active index, syncs and checkpoints; then the
    /// files are cut to their exact lengths and synced.
    pub fn close(mut self, now: Instant) -> Result<(), StorageError> {
        self.log.close(now);
        self.pump(now);
        self.storage.close()
    }
}

/// Lists the directory and loads what recovery needs up front: index files, the
/// checkpoint, and the state files of the partition's state machines (the
/// producer-state snapshot, which the replica recovers from before reading the log
/// suffix after it). Leftover temporary files (a crash mid-write) are removed first.
fn recovery_input<V: Vfs>(storage: &mut PartitionStorage<V>) -> Result<RecoveryInput, StorageError> {
    storage.remove_checkpoint_tmp()?;
    let mut input = RecoveryInput::default();
    for entry in storage.list_dir()? {
        if let Some(segment) = SegmentId::parse_index_file_name(&entry.name) {
            if let Some(bytes) = storage.read_small_file(&entry.name)? {
                input.index_files.push((segment, Bytes::from(bytes)));
            }
        }
        input.files.push(DirEntry {
            name: entry.name,
            len_bytes: entry.len_bytes,
        });
    }
    input.checkpoint = storage.read_small_file(CHECKPOINT_FILE_NAME)?.map(Bytes::from);
    for name in STATE_FILE_NAMES {
        if let Some(bytes) = storage.read_small_file(name)? {
            input.state_files.insert(name.to_string(), Bytes::from(bytes));
        }
    }
    Ok(input)
}

/// Decodes the checkpoint file of a partition directory, if any (for tools and tests).
pub fn read_checkpoint<V: Vfs>(storage: &PartitionStorage<V>) -> Result<Option<Checkpoint>, StorageError> {
    Ok(storage
        .read_small_file(CHECKPOINT_FILE_NAME)?
        .and_then(|bytes| Checkpoint::decode(&bytes)))
}
