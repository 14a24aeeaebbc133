//! The storage engine's error type, and its translation into the log's
//! [`DiskError`](oxbow_core::log::io::DiskError).

use super::aligned::PoolExhausted;
use oxbow_core::log::io::DiskError;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong in the storage engine. Never a panic: every I/O failure ends here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`pwrite`, `fdatasync`, …).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Every aligned buffer is in use; retry once one is returned.
    #[error(transparent)]
    PoolExhausted(#[from] PoolExhausted),
    /// A write that does not start at the segment's end (writes must append).
    #[error("{}: write at byte {position}, but the segment ends at byte {end_bytes}", path.display())]
    NotAppend {
        /// The segment file.
        path: PathBuf,
        /// Where the write asked to start.
        position: u64,
        /// The segment's logical length.
        end_bytes: u64,
    },
    /// A truncation to a length beyond the segment's end.
    #[error("{}: cannot truncate to {len_bytes} bytes, the segment holds {end_bytes}", path.display())]
    TruncateBeyondEnd {
        /// The segment file.
        path: PathBuf,
        /// Requested length.
        len_bytes: u64,
        /// The segment's logical length.
        end_bytes: u64,
    },
    /// A segment file the operation needs does not exist.
    #[error("{}: no such segment", path.display())]
    NoSuchSegment {
        /// The missing file.
        path: PathBuf,
    },
    /// A pwrite that made no progress.
    #[error("{}: pwrite wrote {written_bytes} of {asked_bytes} bytes", path.display())]
    ShortWrite {
        /// The segment file.
        path: PathBuf,
        /// Bytes written by the call.
        written_bytes: usize,
        /// Bytes asked for.
        asked_bytes: usize,
    },
}

impl StorageError {
    /// Wraps an OS error with the operation and path.
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> StorageError {
        StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the device or quota is full (ENOSPC, EDQUOT).
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            }
            _ => false,
        }
    }

    /// The error as the log sees it: [`DiskError::NoSpace`] for a full disk, otherwise
    /// [`DiskError::Io`] with this error's message (operation, path, OS error).
    pub fn to_disk_error(&self) -> DiskError {
        if self.is_no_space() {
            DiskError::NoSpace
        } else {
            DiskError::Io(self.to_string())
        }
    }
}

/// Shorthand for results of this module.
pub type StorageResult<T> = Result<T, StorageError>;
