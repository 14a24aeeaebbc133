//! The small-file work of a partition directory — replacing its checkpoint or a state
//! file atomically and durably, rewriting an index — as [`FileJob`]s that need no
//! shard-thread state, so the shard can hand them to a helper thread
//! (`shard::file_worker`) instead of blocking its event loop in `fdatasync`, `rename`
//! and a directory `fsync`.
//!
//! A job owns everything it touches (paths and bytes) and runs with blocking calls
//! through a [`Vfs`]: on the helper thread in production, on the calling thread in
//! [`super::executor::IoMode::Inline`]. Its outcome goes back to the executor under
//! the job's token.

use super::error::{StorageError, StorageResult};
use super::vfs::Vfs;
use bytes::Bytes;
use std::path::PathBuf;

/// What one job does.
#[derive(Debug)]
pub enum FileJobKind {
    /// Replaces `path` atomically and durably: `data` into `tmp`, `fdatasync`, rename
    /// over `path`, `fsync` of `dir` (the old content or the new, never a mix).
    Replace {
        /// The directory holding both files.
        dir: PathBuf,
        /// The temporary file, in `dir`.
        tmp: PathBuf,
        /// The file replaced, in `dir`.
        path: PathBuf,
        /// The new content.
        data: Bytes,
    },
    /// Overwrites `path` with `data`, not durably (an advisory file recovery rebuilds).
    Overwrite {
        /// The file.
        path: PathBuf,
        /// The new content.
        data: Bytes,
    },
}

/// One small-file job, identified by the executor's token.
#[derive(Debug)]
pub struct FileJob {
    /// The executor's name for this job (see `PartitionStorage::complete_file_job`).
    pub token: u64,
    /// The work.
    pub kind: FileJobKind,
}

impl FileJobKind {
    /// Runs the job with blocking calls on this thread.
    pub fn execute<V: Vfs + ?Sized>(&self, vfs: &V) -> StorageResult<()> {
        match self {
            FileJobKind::Replace { dir, tmp, path, data } => {
                vfs.write_small_file(tmp, data, true)
                    .map_err(|e| StorageError::io("write", tmp, e))?;
                vfs.rename(tmp, path)
                    .map_err(|e| StorageError::io("rename", tmp, e))?;
                vfs.sync_dir(dir).map_err(|e| StorageError::io("fsync", dir, e))
            }
            FileJobKind::Overwrite { path, data } => vfs
                .write_small_file(path, data, false)
                .map_err(|e| StorageError::io("write", path, e)),
        }
    }
}
