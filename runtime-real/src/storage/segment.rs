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
//! Space is reserved with `fallocate(FALLOC_FL_KEEP_SIZE)`: the blocks are allocated
//! up front (no allocation on the append path, no fragmentation), but the file size
//! grows only as we write. Padded writes leave the size at `align_up(end)`, i.e. at
//! most 4095 zero bytes past the logical end. [`SegmentFile::seal`] (when a newer
//! segment is created), [`SegmentFile::truncate`] and [`SegmentFile::close`] cut the
//! file to its exact logical length, which also returns the unused reservation. After
//! a crash, the file may end in up to 4095 zero bytes after the last batch; recovery in
//! core treats zeros after the last batch as a clean end and truncates them.
//!
//! We chose `KEEP_SIZE` over a plain `fallocate` (which would set the size to the whole
//! reservation) so that the size on disk is always within one block of the data: the
//! directory listing tells recovery where the data ends, and recovery scans one block
//! of padding, not 128 MiB of zeros.
//!
//! Every call is a positioned, synchronous system call through [`DataFile`]; the
//! structure (one aligned buffer per transfer, state committed only on success) is what
//! an io_uring loop needs, so the calls can move there without changing this logic.

use super::aligned::{align_down, align_up, AlignedBuf, BufferPool, BLOCK_BYTES, BLOCK_BYTES_U64};
use super::error::{StorageError, StorageResult};
use super::vfs::{DataFile, Vfs};
use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};

/// An open segment data file and our view of its logical content.
#[derive(Debug)]
pub struct SegmentFile<F> {
    file: F,
    path: PathBuf,
    /// Logical length: the bytes the log wrote.
    end_bytes: u64,
    /// Bytes `[align_down(end_bytes), end_bytes)`, at the start of a block-sized buffer.
    tail: Box<[u8]>,
    /// Size of the file on disk as we left it (≥ `end_bytes`).
    disk_len_bytes: u64,
    /// Whether data or size changed since the last successful `fdatasync`.
    unsynced: bool,
}

impl<F: DataFile> SegmentFile<F> {
    /// Creates an empty segment at `path` and reserves `preallocate_bytes`.
    ///
    /// An existing file of that name is emptied: the log creates a segment only when it
    /// holds no data under that name, so a leftover is the remains of a failed attempt.
    /// A file system that cannot preallocate (`EOPNOTSUPP`) is tolerated; a full one
    /// (`ENOSPC`) fails the creation.
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
        match file.allocate(preallocate_bytes) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => return Err(StorageError::io("fallocate", path, e)),
        }
        Ok(SegmentFile {
            file,
            path: path.to_path_buf(),
            end_bytes: 0,
            tail: vec![0; BLOCK_BYTES].into_boxed_slice(),
            disk_len_bytes: 0,
            unsynced: true,
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
            file,
            path: path.to_path_buf(),
            end_bytes,
            tail: vec![0; BLOCK_BYTES].into_boxed_slice(),
            disk_len_bytes: end_bytes,
            // We do not know whether what is there reached the disk (after a crash it
            // may sit in the device's cache): the first sync that names it flushes it.
            unsynced: true,
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
    /// into as few buffer-sized `pwrite`s as possible. All or nothing, as
    /// [`SegmentFile::append`].
    pub fn append_all(&mut self, pool: &BufferPool, position: u64, parts: &[&[u8]]) -> StorageResult<()> {
        if position != self.end_bytes {
            return Err(StorageError::NotAppend {
                path: self.path.clone(),
                position,
                end_bytes: self.end_bytes,
            });
        }
        if parts.iter().all(|part| part.is_empty()) {
            return Ok(());
        }
        let mut buf = pool.acquire()?;
        let capacity = buf.capacity();
        let mut chunk = Chunk {
            end: self.end_bytes,
            tail_len: block_offset(self.end_bytes),
            filled: block_offset(self.end_bytes),
        };
        buf.as_mut_slice()[..chunk.tail_len].copy_from_slice(&self.tail[..chunk.tail_len]);
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let taken = rest.len().min(capacity - chunk.filled);
                buf.as_mut_slice()[chunk.filled..chunk.filled + taken].copy_from_slice(&rest[..taken]);
                chunk.filled += taken;
                rest = &rest[taken..];
                if chunk.filled == capacity {
                    self.write_chunk(&mut buf, &mut chunk)?;
                }
            }
        }
        if chunk.filled > chunk.tail_len {
            self.write_chunk(&mut buf, &mut chunk)?;
        }
        self.tail[..chunk.tail_len].copy_from_slice(&buf.as_slice()[..chunk.tail_len]);
        self.end_bytes = chunk.end;
        self.disk_len_bytes = self.disk_len_bytes.max(align_up(chunk.end));
        self.unsynced = true;
        Ok(())
    }

    /// Writes the buffer's `filled` bytes (padded to the block) at the block holding
    /// the chunk's end; the partial last block moves to the buffer's head.
    fn write_chunk(&self, buf: &mut AlignedBuf, chunk: &mut Chunk) -> StorageResult<()> {
        let block_start = chunk.end - chunk.tail_len as u64;
        let padded = block_round_up(chunk.filled);
        buf.as_mut_slice()[chunk.filled..padded].fill(0);
        self.write_all(buf, padded, block_start)?;
        chunk.end = block_start + chunk.filled as u64;
        chunk.tail_len = chunk.filled % BLOCK_BYTES;
        buf.as_mut_slice()
            .copy_within(chunk.filled - chunk.tail_len..chunk.filled, 0);
        chunk.filled = chunk.tail_len;
        Ok(())
    }

    fn write_all(&self, buf: &AlignedBuf, len: usize, position: u64) -> StorageResult<()> {
        let mut done = 0;
        while done < len {
            match self
                .file
                .write_at(&buf.as_slice()[done..len], position + done as u64)
            {
                Ok(0) => {
                    return Err(StorageError::ShortWrite {
                        path: self.path.clone(),
                        written_bytes: done,
                        asked_bytes: len,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StorageError::io("pwrite", &self.path, e)),
            }
        }
        Ok(())
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

/// The state of an append in progress: the logical end reached on disk, the length
/// of its partial last block, and the bytes at the head of the buffer (that block plus
/// data not yet written).
#[derive(Debug)]
struct Chunk {
    end: u64,
    tail_len: usize,
    filled: usize,
}

/// Offset of `position` inside its block.
fn block_offset(position: u64) -> usize {
    (position % BLOCK_BYTES_U64) as usize
}

/// `len` rounded up to a whole number of blocks (for in-buffer lengths).
fn block_round_up(len: usize) -> usize {
    len.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}
