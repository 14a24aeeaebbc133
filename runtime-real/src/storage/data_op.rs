//! The data-file operations the executor hands to an I/O backend — one block-aligned
//! `pwrite` from a pooled buffer, or one `fdatasync` — and their blocking execution.
//!
//! A [`DataOp`] owns everything the kernel touches while it runs: the aligned buffer
//! and a reference to the open file (so the descriptor cannot be closed, and its number
//! reused, before the operation completes). The executor keeps only the operation's
//! token; whoever runs the operation reports its [`OpResult`] back under that token.
//!
//! Two backends run them: [`DataOp::execute`] (positioned system calls on the calling
//! thread: tests, recovery, the synchronous fallback) and the shard's io_uring
//! (`shard::disk_ring`). Both treat a short write the same way: the rest is written
//! from where it stopped, and a write that makes no progress fails.

use super::aligned::AlignedBuf;
use super::vfs::DataFile;
use std::io;
use std::rc::Rc;

/// What one data operation does.
#[derive(Debug)]
pub enum DataOpKind {
    /// Write `buf[..len_bytes]` at `position` (both multiples of the block size).
    Write {
        /// The aligned source buffer (returned to the pool when the op is dropped).
        buf: AlignedBuf,
        /// Bytes to write.
        len_bytes: usize,
        /// File offset.
        position: u64,
    },
    /// `fdatasync` the file.
    SyncData,
}

/// One operation on a segment file, identified by the executor's token.
#[derive(Debug)]
pub struct DataOp<F> {
    /// The executor's name for this operation (see `PartitionStorage::complete`).
    pub token: u64,
    /// The file, kept open until the operation is dropped.
    pub file: Rc<F>,
    /// The operation.
    pub kind: DataOpKind,
}

/// Why a data operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpFailure {
    /// The system call failed.
    #[error(transparent)]
    Os(#[from] io::Error),
    /// A write stopped making progress.
    #[error("write stopped after {written_bytes} of {asked_bytes} bytes")]
    NoProgress {
        /// Bytes written before it stopped.
        written_bytes: usize,
        /// Bytes asked for.
        asked_bytes: usize,
    },
}

/// The outcome of one [`DataOp`].
pub type OpResult = Result<(), OpFailure>;

impl<F: DataFile> DataOp<F> {
    /// Runs the operation with blocking system calls on this thread.
    pub fn execute(&self) -> OpResult {
        match &self.kind {
            DataOpKind::Write {
                buf,
                len_bytes,
                position,
            } => write_all_at(&*self.file, &buf.as_slice()[..*len_bytes], *position),
            DataOpKind::SyncData => Ok(self.file.sync_data()?),
        }
    }
}

/// Writes all of `data` at `position`, continuing after short writes and `EINTR`.
pub fn write_all_at<F: DataFile + ?Sized>(file: &F, data: &[u8], position: u64) -> OpResult {
    let mut done = 0;
    while done < data.len() {
        match file.write_at(&data[done..], position + done as u64) {
            Ok(0) => {
                return Err(OpFailure::NoProgress {
                    written_bytes: done,
                    asked_bytes: data.len(),
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(OpFailure::Os(e)),
        }
    }
    Ok(())
}
