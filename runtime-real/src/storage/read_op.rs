//! One fetch read of a segment range as an operation an I/O backend runs: the aligned
//! window `O_DIRECT` needs around the asked range, a buffer of its own for the bytes,
//! and the hand-over of exactly the asked range as [`Bytes`] without a copy.
//!
//! A [`ReadOp`] owns what the kernel touches while it runs — its [`ReadBuf`] and an
//! `Rc` of the open file (a segment deleted by retention meanwhile stays readable, its
//! descriptor is not reused) — so it can sit on the shard's io_uring
//! (`shard::disk_ring`) or run with blocking calls ([`ReadOp::execute`]).
//!
//! Read buffers are not taken from the per-shard write pool: a fetch may ask for
//! megabytes, and the bytes leave the shard inside the response, so the buffer lives as
//! long as the [`Bytes`] made of it. The shard bounds the bytes of reads in flight
//! (`shard::disk_ring`), which bounds these allocations. A freed buffer is kept for
//! reuse by the thread that frees it, up to [`RECYCLED_BYTES_PER_THREAD`]: the
//! allocator maps every block of 128 KiB or more on its own (`shard::budget`), so a
//! fresh megabyte buffer per fetch cost a mapping, 256 page faults that zero it, and
//! an `munmap` — the largest share of the broker's CPU in a catch-up read profile.
//!
//! Short reads: a read that stops on a block boundary before the window's end
//! continues from there ([`ReadOp::advance`]); one that returns nothing, or stops
//! inside a block, is the end of the file, and the op finishes with what it has (core
//! treats a range that ends early like one that ends inside a batch).

use super::aligned::{align_down, align_up, BLOCK_BYTES, BLOCK_BYTES_U64};
use bytes::Bytes;
use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;

use super::vfs::DataFile;

/// Most bytes of freed read buffers each thread keeps for reuse.
pub const RECYCLED_BYTES_PER_THREAD: usize = 16 << 20;

/// Allocations are rounded up to a multiple of this, so freed buffers fit later reads.
const ALLOCATION_GRANULE_BYTES: usize = 64 * 1024;

/// Freed buffers of this thread, kept for reuse (bounded).
struct Recycled {
    buffers: Vec<(NonNull<u8>, Layout)>,
    bytes: usize,
}

impl Recycled {
    /// A kept buffer of exactly `layout`, if there is one.
    fn take(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let at = self.buffers.iter().position(|(_, l)| *l == layout)?;
        let (ptr, _) = self.buffers.swap_remove(at);
        self.bytes -= layout.size();
        Some(ptr)
    }

    /// Keeps `ptr` if there is room; gives it back otherwise.
    fn keep(&mut self, ptr: NonNull<u8>, layout: Layout) -> Option<NonNull<u8>> {
        if self.bytes + layout.size() > RECYCLED_BYTES_PER_THREAD {
            return Some(ptr);
        }
        self.bytes += layout.size();
        self.buffers.push((ptr, layout));
        None
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        for (ptr, layout) in self.buffers.drain(..) {
            // SAFETY: allocated with this layout by `ReadBuf::new`, owned only here.
            unsafe { alloc::dealloc(ptr.as_ptr(), layout) }
        }
    }
}

thread_local! {
    static RECYCLED: RefCell<Recycled> = const {
        RefCell::new(Recycled {
            buffers: Vec::new(),
            bytes: 0,
        })
    };
}

/// A block-aligned heap buffer owned by one read; the filled prefix is its content.
pub struct ReadBuf {
    ptr: NonNull<u8>,
    /// The allocation (its size rounded up to [`ALLOCATION_GRANULE_BYTES`]).
    layout: Layout,
    /// The usable size asked for.
    len: usize,
    filled: usize,
}

// SAFETY: a `ReadBuf` is the only owner of its allocation (no aliasing pointers), so
// moving it to another thread or sharing `&ReadBuf` (which only reads) is sound.
unsafe impl Send for ReadBuf {}
// SAFETY: see `Send`; `&self` methods never write.
unsafe impl Sync for ReadBuf {}

impl std::fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuf")
            .field("capacity", &self.layout.size())
            .field("filled", &self.filled)
            .finish()
    }
}

impl ReadBuf {
    /// A buffer of `capacity_bytes` (a non-zero multiple of [`BLOCK_BYTES`]), reused
    /// from this thread's freed buffers or freshly allocated and zeroed (either way its
    /// bytes are initialised); `None` if the size is not such a multiple or the
    /// allocator refuses.
    pub fn new(capacity_bytes: usize) -> Option<ReadBuf> {
        if capacity_bytes == 0 || capacity_bytes % BLOCK_BYTES != 0 {
            return None;
        }
        let size = capacity_bytes.checked_next_multiple_of(ALLOCATION_GRANULE_BYTES)?;
        let layout = Layout::from_size_align(size, BLOCK_BYTES).ok()?;
        let reused = RECYCLED
            .try_with(|recycled| recycled.borrow_mut().take(layout))
            .ok()
            .flatten();
        let ptr = match reused {
            Some(ptr) => ptr,
            // SAFETY: the layout has a non-zero size.
            None => NonNull::new(unsafe { alloc::alloc_zeroed(layout) })?,
        };
        Some(ReadBuf {
            ptr,
            layout,
            len: capacity_bytes,
            filled: 0,
        })
    }

    /// Size of the buffer.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Bytes filled so far.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// The unfilled rest of the buffer, for the kernel to read into.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: the allocation holds at least `capacity` bytes, all initialised (zeroed
        // when allocated, or earlier content when reused), and `&mut self` is the only
        // access to it.
        let whole = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity()) };
        &mut whole[self.filled..]
    }

    /// Marks `n` more bytes as filled (clamped to the capacity).
    pub fn advance(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.capacity());
    }
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: as in `spare_mut`; the filled prefix lies inside the allocation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.filled) }
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        let (ptr, layout) = (self.ptr, self.layout);
        let refused = RECYCLED
            .try_with(|recycled| recycled.borrow_mut().keep(ptr, layout))
            .unwrap_or(Some(ptr));
        if let Some(ptr) = refused {
            // SAFETY: allocated in `new` with this layout, freed once, here.
            unsafe { alloc::dealloc(ptr.as_ptr(), layout) }
        }
    }
}

/// The aligned window around a byte range: where to read, how much, and where the range
/// sits inside it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadWindow {
    /// Aligned file offset of the window's first byte.
    pub position: u64,
    /// Aligned window length.
    pub len_bytes: u64,
    /// Offset of the asked range inside the window.
    pub skip_bytes: u64,
    /// Length of the asked range (already clipped to the segment's end).
    pub range_bytes: u64,
}

impl ReadWindow {
    /// The window for `[position, position + len_bytes)` clipped to `end_bytes`;
    /// `None` when nothing of the range lies below the end.
    pub fn new(position: u64, len_bytes: u64, end_bytes: u64) -> Option<ReadWindow> {
        let end = position.saturating_add(len_bytes).min(end_bytes);
        if position >= end {
            return None;
        }
        let start = align_down(position);
        Some(ReadWindow {
            position: start,
            len_bytes: align_up(end) - start,
            skip_bytes: position - start,
            range_bytes: end - position,
        })
    }
}

/// Why a read op could not be made or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadOpError {
    /// No buffer of the window's size could be allocated.
    #[error("cannot allocate a {len_bytes}-byte read buffer")]
    NoBuffer {
        /// The window's size.
        len_bytes: u64,
    },
    /// The read system call failed.
    #[error(transparent)]
    Os(#[from] io::Error),
}

/// A read of one segment range in flight: the file, the buffer, the window.
#[derive(Debug)]
pub struct ReadOp<F> {
    /// The file, kept open until the op is dropped.
    pub file: Rc<F>,
    buf: ReadBuf,
    window: ReadWindow,
    /// Whether the file ended before the window did.
    at_eof: bool,
}

impl<F: DataFile> ReadOp<F> {
    /// A read of `window` from `file`, with its buffer allocated.
    pub fn new(file: Rc<F>, window: ReadWindow) -> Result<ReadOp<F>, ReadOpError> {
        let len_bytes = window.len_bytes;
        let buf = usize::try_from(len_bytes)
            .ok()
            .and_then(ReadBuf::new)
            .ok_or(ReadOpError::NoBuffer { len_bytes })?;
        Ok(ReadOp {
            file,
            buf,
            window,
            at_eof: false,
        })
    }

    /// The window this op reads.
    pub fn window(&self) -> ReadWindow {
        self.window
    }

    /// Whether the op has read all it will (the window is full, or the file ended).
    pub fn is_done(&self) -> bool {
        self.at_eof || self.buf.filled() >= self.buf.capacity()
    }

    /// Where the next transfer reads: its file offset and the buffer to fill.
    pub fn next_transfer(&mut self) -> (u64, &mut [u8]) {
        let position = self.window.position + self.buf.filled() as u64;
        (position, self.buf.spare_mut())
    }

    /// Records a transfer that read `n` bytes; `0`, or a count that leaves the buffer
    /// off a block boundary, means the file ended there.
    pub fn advance(&mut self, n: usize) {
        self.buf.advance(n);
        if n == 0 || (self.buf.filled() as u64) % BLOCK_BYTES_U64 != 0 {
            self.at_eof = true;
        }
    }

    /// The asked range, as far as it was read, without copying (the buffer becomes the
    /// storage of the returned bytes).
    pub fn finish(self) -> Bytes {
        let from = usize::try_from(self.window.skip_bytes).unwrap_or(usize::MAX);
        let filled = self.buf.filled();
        if filled <= from {
            return Bytes::new();
        }
        let to = usize::try_from(self.window.skip_bytes + self.window.range_bytes)
            .unwrap_or(usize::MAX)
            .min(filled);
        Bytes::from_owner(self.buf).slice(from..to)
    }

    /// Runs the read with blocking positioned reads on this thread.
    pub fn execute(mut self) -> Result<Bytes, ReadOpError> {
        while !self.is_done() {
            let file = Rc::clone(&self.file);
            let (position, spare) = self.next_transfer();
            match file.read_at(spare, position) {
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadOpError::Os(e)),
            }
        }
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_and_clipped() {
        let w = ReadWindow::new(5000, 100, 1 << 20).unwrap();
        assert_eq!(
            (w.position, w.len_bytes, w.skip_bytes, w.range_bytes),
            (4096, 4096, 904, 100)
        );
        let w = ReadWindow::new(4000, 10_000, 9000).unwrap();
        assert_eq!(
            (w.position, w.len_bytes, w.skip_bytes, w.range_bytes),
            (0, 12288, 4000, 5000)
        );
        assert_eq!(ReadWindow::new(9000, 10, 9000), None);
        assert_eq!(ReadWindow::new(9000, 0, 20_000), None);
    }

    #[test]
    fn buffers_refuse_unaligned_sizes() {
        assert!(ReadBuf::new(0).is_none());
        assert!(ReadBuf::new(100).is_none());
        let mut buf = ReadBuf::new(8192).unwrap();
        assert_eq!(buf.spare_mut().len(), 8192);
        assert_eq!(buf.spare_mut().as_ptr() as usize % BLOCK_BYTES, 0);
        buf.advance(10_000);
        assert_eq!(buf.filled(), 8192);
    }

    #[test]
    fn freed_buffers_are_reused_within_the_bound() {
        let first = ReadBuf::new(1 << 20).unwrap();
        let address = first.ptr;
        drop(first);
        let again = ReadBuf::new((1 << 20) - 4096).unwrap();
        assert_eq!(again.ptr, address, "same rounded size: the freed buffer");
        assert_eq!(again.capacity(), (1 << 20) - 4096);
        let many: Vec<_> = (0..40).map(|_| ReadBuf::new(1 << 20).unwrap()).collect();
        drop(many);
        let kept = RECYCLED.with(|r| r.borrow().bytes);
        assert!(kept <= RECYCLED_BYTES_PER_THREAD, "{kept} bytes kept");
    }
}
