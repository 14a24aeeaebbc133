//! The file layer under the storage engine: the few system calls it makes, behind two
//! traits so tests can inject faults ([`super::fault`]) and the calls can later move onto
//! a per-shard io_uring loop without touching the segment logic.
//!
//! [`RealVfs`] is the production implementation: positioned `pread`/`pwrite` on files
//! opened with `O_DIRECT`, `fdatasync`, `fallocate(FALLOC_FL_KEEP_SIZE)`, `ftruncate`,
//! and plain buffered I/O for the small index and checkpoint files.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// One open segment data file. Offsets, lengths and buffer addresses handed to
/// [`DataFile::write_at`] and [`DataFile::read_at`] are multiples of
/// [`super::aligned::BLOCK_BYTES`] (direct I/O), except that a read may return fewer
/// bytes at end of file.
pub trait DataFile: std::fmt::Debug {
    /// `pwrite`: writes `buf` at `position`, returning the bytes written.
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize>;
    /// `pread`: reads into `buf` from `position`, returning the bytes read (0 at end).
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize>;
    /// `fdatasync`: makes written data (and the size) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves `len_bytes` from offset 0 without changing the file size
    /// (`fallocate(FALLOC_FL_KEEP_SIZE)`).
    fn allocate(&self, len_bytes: u64) -> io::Result<()>;
    /// `ftruncate`.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
    /// The file size the file system reports (`fstat`).
    fn size_bytes(&self) -> io::Result<u64>;
}

/// A directory entry as recovery needs it: a name and a length.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirEntry {
    /// File name (no directory part).
    pub name: String,
    /// File size in bytes.
    pub len_bytes: u64,
}

/// The file system operations of the storage engine.
pub trait Vfs: std::fmt::Debug {
    /// The open data-file type.
    type File: DataFile;
    /// Opens a segment data file for direct I/O, creating it when `create` is set.
    fn open_data(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// `mkdir -p`.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// `fsync` of a directory, making created, renamed and removed entries durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// `unlink`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `rename`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates or replaces a small file with `data` (buffered I/O); `fdatasync`s it
    /// when `durable`.
    fn write_small_file(&self, path: &Path, data: &[u8], durable: bool) -> io::Result<()>;
    /// Reads a whole small file.
    fn read_small_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Regular files of a directory with their sizes, sorted by name.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
}

/// The real file system.
#[derive(Clone, Copy, Debug)]
pub struct RealVfs {
    direct_io: bool,
}

impl Default for RealVfs {
    fn default() -> Self {
        RealVfs::direct()
    }
}

impl RealVfs {
    /// Data files opened with `O_DIRECT` (production).
    pub fn direct() -> RealVfs {
        RealVfs { direct_io: true }
    }

    /// Data files through the page cache: for file systems without `O_DIRECT` support
    /// (some overlay and network file systems). Same alignment rules, same syncs.
    pub fn buffered() -> RealVfs {
        RealVfs { direct_io: false }
    }
}

/// A segment file of [`RealVfs`].
#[derive(Debug)]
pub struct RealFile {
    file: File,
}

impl From<File> for RealFile {
    /// A file opened elsewhere (tests: one opened write-only, whose reads fail).
    fn from(file: File) -> RealFile {
        RealFile { file }
    }
}

impl AsRawFd for RealFile {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl DataFile for RealFile {
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize> {
        self.file.write_at(buf, position)
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.file.read_at(buf, position)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len_bytes).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the descriptor is owned by `self.file` and open for the whole call;
        // fallocate reads no memory of ours.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

impl Vfs for RealVfs {
    type File = RealFile;

    fn open_data(&self, path: &Path, create: bool) -> io::Result<RealFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(create);
        if self.direct_io {
            options.custom_flags(libc::O_DIRECT);
        }
        Ok(RealFile {
            file: options.open(path)?,
        })
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn write_small_file(&self, path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
        let file = File::create(path)?;
        file.write_all_at(data, 0)?;
        if durable {
            file.sync_data()?;
        }
        Ok(())
    }

    fn read_small_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if !metadata.is_file() {
                continue;
            }
            // Names that are not UTF-8 are not ours; skip them.
            if let Ok(name) = entry.file_name().into_string() {
                entries.push(DirEntry {
                    name,
                    len_bytes: metadata.len(),
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }
}
