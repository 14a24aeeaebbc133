//! One segment data file under direct I/O: appends of any length, aligned reads that
//! return exactly the asked range, durable truncation.
//!
//! # How unaligned appends work
//!
//! `O_DIRECT` transfers whole 4 KiB blocks ([`BLOCK_BYTES`]) at aligned offsets. A
//! [`SegmentFile`] tracks the segment's *logical* length itself and keeps a copy of the
//! partial last block (the *tail*: bytes `[align_down(end), end)`). An append copies the
//! tail and the new data into a pooled aligned buffer, pads it with zeros to the next
//! block boundary and writes it at `align_down(end)` — so the tail block is rewritten,
//! with identical bytes for the part that was already there, plus the new bytes.
//!
//! Rewriting already-synced bytes is safe against torn writes: devices write a sector
//! (512 B or 4 KiB) atomically, so a crash in the middle of the rewrite leaves each
//! sector either old or new, and both versions carry the same bytes below the old end.
//! Only bytes past the old logical end, which nobody has been promised, can be torn.
//!
//! # File length on disk
//!
//! Space is reserved with `fallocate(FALLOC_FL_KEEP_SIZE)` ahead of the appends: the
//! blocks are allocated before the data reaches them (few allocations on the append
//! path, little fragmentation), but the file size grows only as we write. The
//! reservation grows with the data, doubling from [`MIN_RESERVE_BYTES`] up to the
//! segment's `preallocate_bytes`: a segment never reserves more than
//! `max(MIN_RESERVE_BYTES, bytes written)` ahead of its data, so a node's reservations
//! stay within its data plus 64 KiB per partition — 10,000 partitions holding only
//! their Raft no-op reserve 640 MiB, not 10,000 × `preallocate_bytes`. A reservation
//! the file system refuses (full, or no `fallocate`) is only a lost optimisation: the
//! segment stops reserving, the appends go on, and a disk that is really full fails
//! them with ENOSPC, which the log reports.
//!
//! **Zeros ahead.** An append whose last transfer grows the file also writes zeros
//! after its data, to the end of its transfer buffer: at least
//! [`ZERO_AHEAD_MIN_BYTES`] and at most `max(ZERO_AHEAD_MIN_BYTES, bytes written)`
//! when the buffer has room. The appends that follow land inside the file's size, on
//! blocks already written, which changes no file-system metadata: their write
//! completes without a detour through a kernel worker (io_uring cannot issue a direct
//! write that grows the file without blocking), and their `fdatasync` is a bare cache
//! flush — without this, every `fdatasync` wrote the inode (the size moved, reserved
//! extents became written ones) and, with several partitions syncing at once, they
//! queued on those metadata blocks: 8 files syncing together managed about half the
//! `fdatasync`s per second of zero-filled files on this kind of disk. The price is
//! writing most bytes twice (zeros, then data), in large sequential transfers, and
//! only while the segment grows. The zeros are written in the same transfer as the
//! data before them, and a segment has one append in flight, so no later data can be
//! overwritten by them. A segment stops writing zeros ahead once the file system
//! refuses one of its reservations or writes (a full disk: the data alone may still
//! fit).
//!
//! [`SegmentFile::seal`] (when a newer segment is created), [`SegmentFile::truncate`]
//! and [`SegmentFile::close`] cut the file to its exact logical length, which also
//! returns the unused reservation. After a crash, the active segment may end in zeros
//! after its last batch (the block padding and the zeros ahead); recovery in core
//! treats zeros after the last batch as a clean end and cuts them, reading them in
//! `recovery_read_bytes` steps until the first batch header that is not there.
//!
//! We chose `KEEP_SIZE` over a plain `fallocate` (which would set the size to the whole
//! reservation) so that the size on disk stays within one transfer buffer of the data,
//! and recovery scans at most that much padding, not 128 MiB of zeros; and because
//! a plain `fallocate` leaves *unwritten* extents, whose first write still changes
//! metadata.
//!
//! Appends are *staged* ([`SegmentFile::stage`]): the bytes of one transfer are copied
//! into an aligned buffer and the logical end advances at once, while the transfer
//! itself runs elsewhere — on the shard's io_uring, or as a positioned system call
//! ([`SegmentFile::append_all`]). A failed transfer returns the segment to its
//! [`EndMark`]. Reads, syncs and truncation are positioned, synchronous system calls
//! through [`DataFile`].

use super::aligned::{align_down, align_up, AlignedBuf, BufferPool, BLOCK_BYTES, BLOCK_BYTES_U64};
use super::data_op::{write_all_at, OpFailure};
use super::error::{StorageError, StorageResult};
use super::read_op::{ReadOp, ReadWindow};
use super::vfs::{DataFile, Vfs};
use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// An open segment data file and our view of its logical content.
#[derive(Debug)]
pub struct SegmentFile<F> {
    /// Shared with data operations in flight, which keep it open.
    file: Rc<F>,
    path: PathBuf,
    /// Logical length: the bytes the log wrote.
    end_bytes: u64,
    /// Bytes `[align_down(end_bytes), end_bytes)`, at the start of a block-sized buffer.
    tail: Box<[u8]>,
    /// Size of the file on disk as we left it (≥ `end_bytes`).
    disk_len_bytes: u64,
    /// Whether data or size changed since the last successful `fdatasync`.
    unsynced: bool,
    /// Most bytes this segment reserves (0: it reserves nothing more).
    reserve_limit_bytes: u64,
    /// Bytes reserved from the start of the file so far.
    reserved_bytes: u64,
    /// Whether appends that grow the file write zeros ahead (off once the file system
    /// refused a reservation or a write: near a full disk, zeros must not take the
    /// room the data needs).
    zero_ahead: bool,
}

/// The first reservation of a segment; later ones double it (see the module doc).
pub const MIN_RESERVE_BYTES: u64 = 64 * 1024;

/// Zeros an append that grows the file writes past its data, at least (up to the
/// transfer buffer's end; see the module doc).
pub const ZERO_AHEAD_MIN_BYTES: usize = 64 * 1024;

impl<F: DataFile> SegmentFile<F> {
    /// Creates an empty segment at `path`; up to `preallocate_bytes` are reserved as
    /// its appends grow (see the module doc).
    ///
    /// An existing file of that name is emptied: the log creates a segment only when it
    /// holds no data under that name, so a leftover is the remains of a failed attempt.
    pub fn create<V: Vfs<File = F>>(
        vfs: &V,
        path: &Path,
        preallocate_bytes: u64,
    ) -> StorageResult<SegmentFile<F>> {
        let file = vfs
            .open_data(path, true)
            .map_err(|e| StorageError::io("create", path, e))?;
        let existing_bytes = file
            .size_bytes()
            .map_err(|e| StorageError::io("fstat", path, e))?;
        if existing_bytes > 0 {
            file.set_len(0)
                .map_err(|e| StorageError::io("ftruncate", path, e))?;
        }
        Ok(SegmentFile {
            file: Rc::new(file),
            path: path.to_path_buf(),
            end_bytes: 0,
            tail: vec![0; BLOCK_BYTES].into_boxed_slice(),
            disk_len_bytes: 0,
            unsynced: true,
            reserve_limit_bytes: preallocate_bytes,
            reserved_bytes: 0,
            zero_ahead: true,
        })
    }

    /// Opens an existing segment; its logical length is its size on disk (recovery has
    /// cut it to the valid prefix, or will with [`SegmentFile::truncate`]). It counts as
    /// unsynced until its first sync.
    pub fn open<V: Vfs<File = F>>(vfs: &V, path: &Path, pool: &BufferPool) -> StorageResult<SegmentFile<F>> {
        let file = vfs.open_data(path, false).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StorageError::NoSuchSegment {
                    path: path.to_path_buf(),
                }
            } else {
                StorageError::io("open", path, e)
            }
        })?;
        let end_bytes = file
            .size_bytes()
            .map_err(|e| StorageError::io("fstat", path, e))?;
        let mut segment = SegmentFile {
            file: Rc::new(file),
            path: path.to_path_buf(),
            end_bytes,
            tail: vec![0; BLOCK_BYTES].into_boxed_slice(),
            disk_len_bytes: end_bytes,
            // We do not know whether what is there reached the disk (after a crash it
            // may sit in the device's cache): the first sync that names it flushes it.
            unsynced: true,
            // An existing segment keeps whatever it reserved before.
            reserve_limit_bytes: 0,
            reserved_bytes: 0,
            zero_ahead: true,
        };
        segment.load_tail(pool)?;
        Ok(segment)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logical length in bytes.
    pub fn end_bytes(&self) -> u64 {
        self.end_bytes
    }

    /// Whether anything changed since the last successful sync.
    pub fn is_unsynced(&self) -> bool {
        self.unsynced
    }

    /// Appends `data` at `position`, which must be the logical end. On error the
    /// logical end and tail are unchanged (bytes past the end may have been written).
    pub fn append(&mut self, pool: &BufferPool, position: u64, data: &[u8]) -> StorageResult<()> {
        self.append_all(pool, position, &[data])
    }

    /// Appends `parts` one after the other at `position` (the logical end), coalesced
    /// into as few buffer-sized `pwrite`s as possible, on this thread. All or nothing,
    /// as [`SegmentFile::append`].
    pub fn append_all(&mut self, pool: &BufferPool, position: u64, parts: &[&[u8]]) -> StorageResult<()> {
        self.check_append(position)?;
        let mut cursor = PartsCursor::default();
        if cursor.is_done(parts) {
            return Ok(());
        }
        let mut buf = pool.acquire()?;
        let mark = self.mark_end();
        while !cursor.is_done(parts) {
            let staged = self.stage(&mut buf, parts, &mut cursor);
            let written = write_all_at(&*self.file, &buf.as_slice()[..staged.len_bytes], staged.position);
            if let Err(failure) = written {
                self.restore_end(mark);
                return Err(self.write_error(failure));
            }
        }
        self.mark_written();
        Ok(())
    }

    /// Fails unless `position` is the logical end (writes must append).
    pub fn check_append(&self, position: u64) -> StorageResult<()> {
        if position != self.end_bytes {
            return Err(StorageError::NotAppend {
                path: self.path.clone(),
                position,
                end_bytes: self.end_bytes,
            });
        }
        Ok(())
    }

    /// The logical end and tail as they are now, to return to if the writes staged
    /// after this point fail.
    pub fn mark_end(&self) -> EndMark {
        EndMark {
            end_bytes: self.end_bytes,
            tail: self.tail.clone(),
            disk_len_bytes: self.disk_len_bytes,
        }
    }

    /// Returns to a [`SegmentFile::mark_end`] (staged writes failed). The segment
    /// stops writing zeros ahead: if the disk is full, the data alone may still fit.
    pub fn restore_end(&mut self, mark: EndMark) {
        self.zero_ahead = false;
        self.end_bytes = mark.end_bytes;
        self.tail = mark.tail;
        self.disk_len_bytes = self.disk_len_bytes.max(mark.disk_len_bytes);
    }

    /// Stages the next transfer of an append: copies the partial last block and as
    /// much of `parts` (from `cursor` on) as fits into `buf`, pads it with zeros to
    /// whole blocks, and advances the logical end and tail as if the transfer had been
    /// written. The caller writes `buf[..len_bytes]` at `position` (positioned or
    /// asynchronously), then calls [`SegmentFile::mark_written`] — or
    /// [`SegmentFile::restore_end`] if it failed.
    ///
    /// Transfers staged one after the other overlap only in the partial last block, so
    /// one must complete before the next is submitted unless the earlier one ended on a
    /// block boundary (a full buffer).
    pub fn stage<P: AsRef<[u8]>>(
        &mut self,
        buf: &mut AlignedBuf,
        parts: &[P],
        cursor: &mut PartsCursor,
    ) -> Staged {
        let capacity = buf.capacity();
        let tail_len = block_offset(self.end_bytes);
        let block_start = self.end_bytes - tail_len as u64;
        let out = buf.as_mut_slice();
        out[..tail_len].copy_from_slice(&self.tail[..tail_len]);
        let mut filled = tail_len;
        while filled < capacity {
            let Some(part) = parts.get(cursor.part) else {
                break;
            };
            let rest = &part.as_ref()[cursor.offset..];
            let taken = rest.len().min(capacity - filled);
            out[filled..filled + taken].copy_from_slice(&rest[..taken]);
            filled += taken;
            cursor.offset += taken;
            if cursor.offset == part.as_ref().len() {
                cursor.part += 1;
                cursor.offset = 0;
            }
        }
        let padded = block_round_up(filled);
        self.end_bytes = block_start + filled as u64;
        let grows_file = block_start + padded as u64 > self.disk_len_bytes;
        let len_bytes = if self.zero_ahead && grows_file && cursor.is_done(parts) {
            // The last transfer of an append that grows the file: write zeros ahead.
            let written = usize::try_from(self.end_bytes).unwrap_or(usize::MAX);
            let ahead = block_round_up(written.min(capacity).max(ZERO_AHEAD_MIN_BYTES));
            padded.saturating_add(ahead).min(capacity).max(padded)
        } else {
            padded
        };
        out[filled..len_bytes].fill(0);
        let new_tail_len = filled % BLOCK_BYTES;
        self.tail.fill(0);
        self.tail[..new_tail_len].copy_from_slice(&out[filled - new_tail_len..filled]);
        self.disk_len_bytes = self.disk_len_bytes.max(block_start + len_bytes as u64);
        self.reserve_through(align_up(self.end_bytes));
        Staged {
            position: block_start,
            len_bytes,
        }
    }

    /// Size of the file on disk as this segment left it: the logical end, the zeros
    /// written ahead of it (see the module doc), and nothing more.
    pub fn disk_len_bytes(&self) -> u64 {
        self.disk_len_bytes
    }

    /// Grows the reservation, doubling, until it covers `end_bytes` (or reaches the
    /// segment's limit). A refusal ends the segment's reservations: logged, otherwise
    /// ignored (see the module doc).
    fn reserve_through(&mut self, end_bytes: u64) {
        let limit = self.reserve_limit_bytes;
        if self.reserved_bytes >= end_bytes || self.reserved_bytes >= limit {
            return;
        }
        let mut target = self.reserved_bytes;
        while target < end_bytes && target < limit {
            target = (target + target.max(MIN_RESERVE_BYTES)).min(limit);
        }
        match self.file.allocate(target) {
            Ok(()) => self.reserved_bytes = target,
            Err(error) => {
                self.reserve_limit_bytes = 0;
                if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
                    self.zero_ahead = false;
                    tracing::warn!(
                        path = %self.path.display(),
                        len_bytes = target,
                        %error,
                        "storage: cannot reserve segment space; appending without a reservation"
                    );
                }
            }
        }
    }

    /// Records that staged data reached the file: the next sync must flush it.
    pub fn mark_written(&mut self) {
        self.unsynced = true;
    }

    /// Takes the "written since the last sync" flag for an `fdatasync` about to be
    /// submitted elsewhere; hand it back with [`SegmentFile::mark_written`] if that
    /// sync fails.
    pub fn take_unsynced(&mut self) -> bool {
        std::mem::take(&mut self.unsynced)
    }

    /// The open file, shared with operations in flight.
    pub fn file(&self) -> &Rc<F> {
        &self.file
    }

    /// The error of a failed write of this segment.
    pub fn write_error(&self, failure: OpFailure) -> StorageError {
        match failure {
            OpFailure::Os(e) => StorageError::io("pwrite", &self.path, e),
            OpFailure::NoProgress {
                written_bytes,
                asked_bytes,
            } => StorageError::ShortWrite {
                path: self.path.clone(),
                written_bytes,
                asked_bytes,
            },
        }
    }

    /// Reads into `buf[..len]` from the aligned `position`, until `len` bytes or end of
    /// file; returns the bytes read.
    fn read_full(&self, buf: &mut AlignedBuf, len: usize, position: u64) -> StorageResult<usize> {
        let mut done = 0;
        while done < len {
            match self
                .file
                .read_at(&mut buf.as_mut_slice()[done..len], position + done as u64)
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StorageError::io("pread", &self.path, e)),
            }
        }
        Ok(done)
    }

    /// Reads `[position, position + len_bytes)`, clipped to the logical end (shorter or
    /// empty past it). Reads the aligned superset and returns exactly the range.
    pub fn read(&self, pool: &BufferPool, position: u64, len_bytes: u64) -> StorageResult<Bytes> {
        let end = position.saturating_add(len_bytes).min(self.end_bytes);
        if position >= end {
            return Ok(Bytes::new());
        }
        let mut buf = pool.acquire()?;
        let capacity = buf.capacity() as u64;
        // `end - position` is bounded by the segment's length.
        let mut out = Vec::with_capacity(usize::try_from(end - position).unwrap_or(0));
        let mut cursor = align_down(position);
        let aligned_end = align_up(end);
        while cursor < end {
            let want = (aligned_end - cursor).min(capacity);
            // `want` ≤ capacity, which is a usize.
            let want_usize = want as usize;
            let got = self.read_full(&mut buf, want_usize, cursor)?;
            let from = cursor.max(position);
            let to = (cursor + got as u64).min(end);
            if from < to {
                out.extend_from_slice(&buf.as_slice()[(from - cursor) as usize..(to - cursor) as usize]);
            }
            if got < want_usize {
                break; // end of file
            }
            cursor += want;
        }
        Ok(Bytes::from(out))
    }

    /// A read of `[position, position + len_bytes)` clipped to the logical end, as an
    /// operation to run elsewhere (the shard's io_uring); `None` when the range holds
    /// nothing below the end.
    pub fn read_op(&self, position: u64, len_bytes: u64) -> StorageResult<Option<ReadOp<F>>> {
        let Some(window) = ReadWindow::new(position, len_bytes, self.end_bytes) else {
            return Ok(None);
        };
        ReadOp::new(Rc::clone(&self.file), window).map(Some).map_err(|e| {
            StorageError::io(
                "read buffer",
                &self.path,
                io::Error::new(io::ErrorKind::OutOfMemory, e),
            )
        })
    }

    /// `fdatasync` if anything changed since the last sync; returns whether it synced.
    pub fn sync(&mut self) -> StorageResult<bool> {
        if !self.unsynced {
            return Ok(false);
        }
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &self.path, e))?;
        self.unsynced = false;
        Ok(true)
    }

    /// Cuts the segment to `len_bytes` (≤ its logical end) and makes the cut durable.
    pub fn truncate(&mut self, pool: &BufferPool, len_bytes: u64) -> StorageResult<()> {
        if len_bytes > self.end_bytes {
            return Err(StorageError::TruncateBeyondEnd {
                path: self.path.clone(),
                len_bytes,
                end_bytes: self.end_bytes,
            });
        }
        self.file
            .set_len(len_bytes)
            .map_err(|e| StorageError::io("ftruncate", &self.path, e))?;
        self.end_bytes = len_bytes;
        self.disk_len_bytes = len_bytes;
        self.unsynced = true;
        self.sync()?;
        self.load_tail(pool)
    }

    /// Cuts the zero padding after the logical end and the unused reservation (no
    /// sync: the next sync of this file, or the journal, makes it durable; until then a
    /// crash leaves zeros that recovery treats as a clean end).
    pub fn seal(&mut self) -> StorageResult<()> {
        if self.disk_len_bytes == self.end_bytes {
            return Ok(());
        }
        self.file
            .set_len(self.end_bytes)
            .map_err(|e| StorageError::io("ftruncate", &self.path, e))?;
        self.disk_len_bytes = self.end_bytes;
        self.unsynced = true;
        Ok(())
    }

    /// Seals the file (exact length on disk) and syncs it if anything changed.
    pub fn close(mut self) -> StorageResult<()> {
        self.seal()?;
        self.sync().map(|_| ())
    }

    /// Loads the partial last block from disk into `tail`.
    fn load_tail(&mut self, pool: &BufferPool) -> StorageResult<()> {
        self.tail.fill(0);
        let tail_len = block_offset(self.end_bytes);
        if tail_len == 0 {
            return Ok(());
        }
        let mut buf = pool.acquire()?;
        let got = self.read_full(&mut buf, BLOCK_BYTES, align_down(self.end_bytes))?;
        if got < tail_len {
            return Err(StorageError::io(
                "pread",
                &self.path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("last block holds {got} bytes, expected {tail_len}"),
                ),
            ));
        }
        self.tail[..tail_len].copy_from_slice(&buf.as_slice()[..tail_len]);
        Ok(())
    }
}

/// Where an append stands in its parts: the next byte to copy.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PartsCursor {
    part: usize,
    offset: usize,
}

impl PartsCursor {
    /// Whether every byte of `parts` has been staged.
    pub fn is_done<P: AsRef<[u8]>>(&self, parts: &[P]) -> bool {
        let mut rest = parts.iter().skip(self.part);
        let current_done = rest.next().is_none_or(|part| part.as_ref().len() == self.offset);
        current_done && rest.all(|part| part.as_ref().is_empty())
    }
}

/// One staged transfer: `len_bytes` of the buffer go to `position`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Staged {
    /// File offset (block-aligned).
    pub position: u64,
    /// Bytes to write (whole blocks).
    pub len_bytes: usize,
}

/// A segment's logical end and tail at one point (see [`SegmentFile::mark_end`]).
#[derive(Clone, Debug)]
pub struct EndMark {
    end_bytes: u64,
    tail: Box<[u8]>,
    disk_len_bytes: u64,
}

/// Offset of `position` inside its block.
fn block_offset(position: u64) -> usize {
    (position % BLOCK_BYTES_U64) as usize
}

/// `len` rounded up to a whole number of blocks (for in-buffer lengths).
fn block_round_up(len: usize) -> usize {
    len.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}
