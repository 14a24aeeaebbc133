//! Fault injection for the file layer: [`FaultyVfs`] wraps any [`Vfs`] and fails chosen
//! operations with a chosen errno (ENOSPC, EIO, …) until told otherwise.
//!
//! Tests keep a [`Faults`] handle, shared with the wrapper, and flip rules on and off
//! while the storage engine runs: "every write fails with ENOSPC from now", "the next
//! sync fails with EIO", "space is back". A failing write writes nothing.

use super::vfs::{DataFile, DirEntry, Vfs};
use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::rc::Rc;

/// The kinds of operation a rule can fail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum FaultOp {
    /// Data-file `pwrite`.
    Write,
    /// Data-file `pread`.
    Read,
    /// Data-file `fdatasync`.
    Sync,
    /// Data-file `fallocate`.
    Allocate,
    /// Data-file `ftruncate`.
    Truncate,
    /// Opening (or creating) a data file.
    Open,
    /// Writing a small (index or checkpoint) file.
    SmallFileWrite,
    /// Directory `fsync`.
    SyncDir,
    /// `unlink`.
    Remove,
}

#[derive(Clone, Copy, Debug)]
struct Rule {
    op: FaultOp,
    errno: i32,
    /// Failures left; `None` fails until cleared.
    remaining: Option<u32>,
}

/// The shared switchboard of a [`FaultyVfs`]; cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: Rc<RefCell<Vec<Rule>>>,
    injected: Rc<RefCell<u64>>,
}

impl Faults {
    /// Fails every `op` with `errno` until [`Faults::clear`].
    pub fn fail_always(&self, op: FaultOp, errno: i32) {
        self.rules.borrow_mut().push(Rule {
            op,
            errno,
            remaining: None,
        });
    }

    /// Fails the next `times` of `op` with `errno`.
    pub fn fail_times(&self, op: FaultOp, errno: i32, times: u32) {
        self.rules.borrow_mut().push(Rule {
            op,
            errno,
            remaining: Some(times),
        });
    }

    /// Removes every rule (the disk is healthy again).
    pub fn clear(&self) {
        self.rules.borrow_mut().clear();
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        *self.injected.borrow()
    }

    fn check(&self, op: FaultOp) -> io::Result<()> {
        let mut rules = self.rules.borrow_mut();
        let Some(position) = rules.iter().position(|rule| rule.op == op) else {
            return Ok(());
        };
        let errno = rules[position].errno;
        if let Some(remaining) = rules[position].remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                rules.remove(position);
            }
        }
        *self.injected.borrow_mut() += 1;
        Err(io::Error::from_raw_os_error(errno))
    }
}

/// A [`Vfs`] that fails operations as its [`Faults`] say, and otherwise delegates.
#[derive(Clone, Debug)]
pub struct FaultyVfs<V> {
    inner: V,
    faults: Faults,
}

impl<V: Vfs> FaultyVfs<V> {
    /// Wraps `inner`; returns the wrapper and the handle that controls it.
    pub fn new(inner: V) -> (FaultyVfs<V>, Faults) {
        let faults = Faults::default();
        (
            FaultyVfs {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

/// A data file of a [`FaultyVfs`].
#[derive(Debug)]
pub struct FaultyFile<F> {
    inner: F,
    faults: Faults,
}

impl<F: DataFile> DataFile for FaultyFile<F> {
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize> {
        self.faults.check(FaultOp::Write)?;
        self.inner.write_at(buf, position)
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.faults.check(FaultOp::Read)?;
        self.inner.read_at(buf, position)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.check(FaultOp::Sync)?;
        self.inner.sync_data()
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        self.faults.check(FaultOp::Allocate)?;
        self.inner.allocate(len_bytes)
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.faults.check(FaultOp::Truncate)?;
        self.inner.set_len(len_bytes)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.inner.size_bytes()
    }
}

impl<V: Vfs> Vfs for FaultyVfs<V> {
    type File = FaultyFile<V::File>;

    fn open_data(&self, path: &Path, create: bool) -> io::Result<Self::File> {
        self.faults.check(FaultOp::Open)?;
        Ok(FaultyFile {
            inner: self.inner.open_data(path, create)?,
            faults: self.faults.clone(),
        })
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.faults.check(FaultOp::SyncDir)?;
        self.inner.sync_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.faults.check(FaultOp::Remove)?;
        self.inner.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn write_small_file(&self, path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
        self.faults.check(FaultOp::SmallFileWrite)?;
        self.inner.write_small_file(path, data, durable)
    }

    fn read_small_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read_small_file(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.list_dir(path)
    }
}
