//! Aligned I/O buffers: one fixed pool per shard, allocated once at start-up.
//!
//! `O_DIRECT` needs the memory address, the file offset and the length of every transfer
//! aligned to the device's logical block size. [`BufferPool`] owns one contiguous,
//! [`BLOCK_BYTES`]-aligned region carved into `buffer_count` buffers of `buffer_bytes`
//! each. [`BufferPool::acquire`] hands out an [`AlignedBuf`] that returns itself to the
//! pool when dropped. The pool never grows: when every buffer is out, `acquire` answers
//! [`PoolExhausted`] and the caller applies back-pressure (leaves the operation queued)
//! instead of allocating.
//!
//! The pool is per shard and therefore single-threaded (`Rc`, not `Send`): create it on
//! the shard thread that uses it. Buffer addresses never move, so an io_uring loop can
//! later hand them to the kernel while an operation is in flight.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::fmt;
use std::ptr::NonNull;
use std::rc::Rc;

/// Alignment of every buffer, file offset and transfer length for direct I/O. 4 KiB
/// covers both 512-byte and 4 KiB logical-sector devices, and is the page size.
pub const BLOCK_BYTES: usize = 4096;

/// [`BLOCK_BYTES`] as a file offset.
pub const BLOCK_BYTES_U64: u64 = BLOCK_BYTES as u64;

/// Rounds `value` down to a multiple of [`BLOCK_BYTES`].
pub fn align_down(value: u64) -> u64 {
    value & !(BLOCK_BYTES_U64 - 1)
}

/// Rounds `value` up to a multiple of [`BLOCK_BYTES`] (saturating at the largest aligned
/// `u64`).
pub fn align_up(value: u64) -> u64 {
    align_down(value.saturating_add(BLOCK_BYTES_U64 - 1))
}

/// Size and number of buffers in a shard's pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PoolConfig {
    /// Number of buffers; the most direct-I/O transfers that can be in flight at once.
    pub buffer_count: usize,
    /// Size of each buffer, a multiple of [`BLOCK_BYTES`]. Larger transfers are split.
    pub buffer_bytes: usize,
}

impl Default for PoolConfig {
    /// 16 buffers of 256 KiB (4 MiB per shard): room for a 64 KiB batch plus its
    /// partial tail block many times over, small enough for a laptop.
    fn default() -> Self {
        PoolConfig {
            buffer_count: 16,
            buffer_bytes: 256 * 1024,
        }
    }
}

/// Why a pool could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolConfigError {
    /// A buffer size of zero or not a multiple of [`BLOCK_BYTES`], or no buffers.
    #[error("invalid buffer pool: {buffer_count} buffers of {buffer_bytes} bytes (need at least one buffer, sized a non-zero multiple of {BLOCK_BYTES})")]
    Invalid {
        /// Requested count.
        buffer_count: usize,
        /// Requested size.
        buffer_bytes: usize,
    },
    /// The allocator refused the region.
    #[error("cannot allocate {total_bytes} bytes for the buffer pool")]
    OutOfMemory {
        /// Size of the whole region.
        total_bytes: usize,
    },
}

/// Every buffer of the pool is in use.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("buffer pool exhausted: all {buffer_count} buffers of {buffer_bytes} bytes are in use")]
pub struct PoolExhausted {
    /// Size of the pool.
    pub buffer_count: usize,
    /// Size of each buffer.
    pub buffer_bytes: usize,
}

struct PoolInner {
    base: NonNull<u8>,
    layout: Layout,
    buffer_bytes: usize,
    buffer_count: usize,
    free: RefCell<Vec<usize>>,
    locked: std::cell::Cell<bool>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        if self.locked.get() {
            // SAFETY: unlocks the region locked by `BufferPool::lock`, still allocated.
            unsafe { libc::munlock(self.base.as_ptr().cast(), self.layout.size()) };
        }
        // SAFETY: `base` was returned by `alloc::alloc_zeroed(self.layout)` and is freed
        // exactly once, here; every `AlignedBuf` holds an `Rc` to this struct, so no
        // buffer outlives the region.
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// A shard's fixed pool of aligned buffers. Cloning shares the same pool.
#[derive(Clone)]
pub struct BufferPool {
    inner: Rc<PoolInner>,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("buffer_count", &self.inner.buffer_count)
            .field("buffer_bytes", &self.inner.buffer_bytes)
            .field("available", &self.available())
            .finish()
    }
}

impl BufferPool {
    /// Allocates the whole pool up front (zeroed).
    pub fn new(config: PoolConfig) -> Result<BufferPool, PoolConfigError> {
        let PoolConfig {
            buffer_count,
            buffer_bytes,
        } = config;
        let invalid = PoolConfigError::Invalid {
            buffer_count,
            buffer_bytes,
        };
        if buffer_count == 0 || buffer_bytes == 0 || buffer_bytes % BLOCK_BYTES != 0 {
            return Err(invalid);
        }
        let total_bytes = buffer_count.checked_mul(buffer_bytes).ok_or(invalid)?;
        let layout = Layout::from_size_align(total_bytes, BLOCK_BYTES)
            .map_err(|_| PoolConfigError::OutOfMemory { total_bytes })?;
        // SAFETY: `layout` has a non-zero size (both factors are non-zero).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(ptr).ok_or(PoolConfigError::OutOfMemory { total_bytes })?;
        // Hand out low indices first (pop from the back).
        let free = (0..buffer_count).rev().collect();
        Ok(BufferPool {
            inner: Rc::new(PoolInner {
                base,
                layout,
                buffer_bytes,
                buffer_count,
                free: RefCell::new(free),
                locked: std::cell::Cell::new(false),
            }),
        })
    }

    /// Locks the whole pool in memory (`mlock`): its pages are faulted in now and never
    /// swapped. Fails without permission (`RLIMIT_MEMLOCK` too low and no
    /// `CAP_IPC_LOCK`); the pool still works, unlocked.
    pub fn lock(&self) -> std::io::Result<()> {
        if self.inner.locked.get() {
            return Ok(());
        }
        // SAFETY: mlock of the pool's own live allocation, exactly its size.
        let locked = unsafe { libc::mlock(self.inner.base.as_ptr().cast(), self.inner.layout.size()) };
        if locked != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.inner.locked.set(true);
        Ok(())
    }

    /// Whether [`BufferPool::lock`] succeeded.
    pub fn is_locked(&self) -> bool {
        self.inner.locked.get()
    }

    /// Bytes of the whole pool.
    pub fn total_bytes(&self) -> usize {
        self.inner.layout.size()
    }

    /// Takes a buffer, or reports that all are in use. Never allocates.
    pub fn acquire(&self) -> Result<AlignedBuf, PoolExhausted> {
        let index = self.inner.free.borrow_mut().pop().ok_or(PoolExhausted {
            buffer_count: self.inner.buffer_count,
            buffer_bytes: self.inner.buffer_bytes,
        })?;
        Ok(AlignedBuf {
            pool: Rc::clone(&self.inner),
            index,
        })
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// Size of each buffer.
    pub fn buffer_bytes(&self) -> usize {
        self.inner.buffer_bytes
    }

    /// Number of buffers.
    pub fn buffer_count(&self) -> usize {
        self.inner.buffer_count
    }
}

/// One [`BLOCK_BYTES`]-aligned buffer of the pool; returns to the pool when dropped.
pub struct AlignedBuf {
    pool: Rc<PoolInner>,
    index: usize,
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("index", &self.index)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl AlignedBuf {
    /// Size of the buffer (a multiple of [`BLOCK_BYTES`]).
    pub fn capacity(&self) -> usize {
        self.pool.buffer_bytes
    }

    fn start(&self) -> *mut u8 {
        // SAFETY: `index < buffer_count`, so the offset stays inside the region of
        // `buffer_count * buffer_bytes` bytes (checked at construction not to overflow).
        unsafe { self.pool.base.as_ptr().add(self.index * self.pool.buffer_bytes) }
    }

    /// The whole buffer.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the range is inside the pool's live allocation (see `start`), was
        // initialised (zeroed) at allocation, and this index is lent to one `AlignedBuf`
        // at a time, so no `&mut` to it exists while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.start(), self.capacity()) }
    }

    /// The whole buffer, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` guarantees exclusive access to this
        // buffer, and no other `AlignedBuf` holds the same index.
        unsafe { std::slice::from_raw_parts_mut(self.start(), self.capacity()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let mut free = self.pool.free.borrow_mut();
        debug_assert!(!free.contains(&self.index), "buffer returned twice");
        free.push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_distinct_and_bounded() {
        let pool = BufferPool::new(PoolConfig {
            buffer_count: 2,
            buffer_bytes: 8192,
        })
        .unwrap();
        let mut a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        assert_eq!(a.as_slice().as_ptr() as usize % BLOCK_BYTES, 0);
        assert_eq!(b.as_slice().as_ptr() as usize % BLOCK_BYTES, 0);
        assert_ne!(a.as_slice().as_ptr(), b.as_slice().as_ptr());
        a.as_mut_slice()[8191] = 7;
        assert_eq!(pool.acquire().unwrap_err().buffer_count, 2);
        drop(b);
        assert_eq!(pool.available(), 1);
        let c = pool.acquire().unwrap();
        assert_eq!(c.capacity(), 8192);
    }

    #[test]
    fn rejects_bad_configs() {
        for (buffer_count, buffer_bytes) in [(0, 4096), (1, 0), (1, 1000)] {
            assert!(BufferPool::new(PoolConfig {
                buffer_count,
                buffer_bytes
            })
            .is_err());
        }
    }

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_down(4097), 4096);
        assert_eq!(align_up(4097), 8192);
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(4096), 4096);
    }
}
