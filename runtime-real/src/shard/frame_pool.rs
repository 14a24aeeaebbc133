//! A shard's pool of large request-frame buffers, reused instead of allocated afresh.
//!
//! The node keeps glibc's mmap threshold at 128 KiB ([`super::budget::release_large_buffers_to_the_os`])
//! so freed request memory goes back to the system and RSS stays within the shard
//! budgets. The price was that every large frame (a produce request of a megabyte) was
//! a fresh `mmap` whose pages were faulted in while the frame was received and unmapped
//! when its last reference went: page faults and `munmap` were a quarter of a busy
//! node's CPU samples. The pool keeps up to `max_idle_bytes` of such buffers — a small
//! part of the budget, counted in it by the caller — and hands them out again, their
//! pages already resident.
//!
//! A frame is received into a buffer from [`FramePool::take`] and frozen with
//! [`FramePool::freeze`] into [`Bytes`] whose owner returns the buffer to the pool when
//! the last slice of it is dropped, on whichever thread that happens (batches travel to
//! other shards). Buffers come back only while the pool lives and has room; otherwise
//! they are freed as before.

use bytes::Bytes;
use std::sync::{Arc, Mutex, Weak};

/// Frames smaller than this are allocated as before (their buffers are not mapped on
/// their own, so they cost no page faults of their own).
pub const MIN_POOLED_FRAME_BYTES: usize = 128 * 1024;
/// New buffers are rounded up to a multiple of this, so frames of similar sizes share.
const ROUND_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Idle {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// The pool (see the module docs). Cheap to clone: clones share the buffers.
#[derive(Clone, Debug)]
pub struct FramePool {
    idle: Arc<Mutex<Idle>>,
    max_idle_bytes: usize,
}

/// The owner behind a frozen frame: gives its buffer back when dropped.
#[derive(Debug)]
struct Recycled {
    buf: Vec<u8>,
    pool: Weak<Mutex<Idle>>,
    max_idle_bytes: usize,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let Ok(mut idle) = pool.lock() else {
            return;
        };
        let capacity = self.buf.capacity();
        if idle.bytes + capacity <= self.max_idle_bytes {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            idle.bytes += capacity;
            idle.buffers.push(buf);
        }
    }
}

impl FramePool {
    /// A pool keeping at most `max_idle_bytes` of buffers between uses.
    pub fn new(max_idle_bytes: usize) -> FramePool {
        FramePool {
            idle: Arc::new(Mutex::new(Idle::default())),
            max_idle_bytes,
        }
    }

    /// An empty buffer for a frame of `len_bytes`: a pooled one that fits (at least
    /// `len_bytes`, at most twice that), or a new one.
    pub fn take(&self, len_bytes: usize) -> Vec<u8> {
        if len_bytes >= MIN_POOLED_FRAME_BYTES {
            if let Ok(mut idle) = self.idle.lock() {
                let fitting = idle
                    .buffers
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() >= len_bytes && b.capacity() / 2 <= len_bytes)
                    .min_by_key(|(_, b)| b.capacity())
                    .map(|(i, _)| i);
                if let Some(i) = fitting {
                    let buf = idle.buffers.swap_remove(i);
                    idle.bytes -= buf.capacity();
                    return buf;
                }
            }
            return Vec::with_capacity(len_bytes.div_ceil(ROUND_BYTES) * ROUND_BYTES);
        }
        Vec::with_capacity(len_bytes)
    }

    /// The filled buffer as `Bytes`; large ones come back to the pool when dropped.
    pub fn freeze(&self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < MIN_POOLED_FRAME_BYTES {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Recycled {
            buf,
            pool: Arc::downgrade(&self.idle),
            max_idle_bytes: self.max_idle_bytes,
        })
    }

    /// Bytes of buffers idle in the pool now.
    pub fn idle_bytes(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_frame_buffer_comes_back_when_its_last_slice_drops_and_is_reused() {
        let pool = FramePool::new(4 << 20);
        let mut buf = pool.take(1_000_000);
        buf.extend_from_slice(&vec![7u8; 1_000_000]);
        let address = buf.as_ptr();
        let frame = pool.freeze(buf);
        let batch = frame.slice(100..200);
        drop(frame);
        assert_eq!(pool.idle_bytes(), 0, "a slice still holds it");
        assert_eq!(&batch[..], &[7u8; 100][..]);
        drop(batch);
        assert!(pool.idle_bytes() >= 1_000_000);
        let again = pool.take(990_000);
        assert_eq!(again.as_ptr(), address, "the same buffer, pages already resident");
        assert!(again.is_empty());
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bound_and_skips_small_or_ill_fitting_frames() {
        let pool = FramePool::new(1 << 20);
        let frames: Vec<Bytes> = (0..3)
            .map(|_| {
                let mut buf = pool.take(600_000);
                buf.resize(600_000, 1);
                pool.freeze(buf)
            })
            .collect();
        drop(frames);
        assert!(pool.idle_bytes() <= 1 << 20, "{}", pool.idle_bytes());
        assert!(pool.idle_bytes() > 0);
        // A buffer more than twice the frame's size is not used for it.
        let small = pool.take(200_000);
        assert!(small.capacity() < 400_000);
        // Small frames are plain allocations, never pooled.
        let tiny = pool.freeze(b"x".to_vec());
        drop(tiny);
        assert!(pool.idle_bytes() <= 1 << 20);
    }

    #[test]
    fn buffers_dropped_after_the_pool_are_freed() {
        let pool = FramePool::new(4 << 20);
        let mut buf = pool.take(300_000);
        buf.resize(300_000, 3);
        let frame = pool.freeze(buf);
        drop(pool);
        assert_eq!(frame.len(), 300_000);
        drop(frame);
    }
}
