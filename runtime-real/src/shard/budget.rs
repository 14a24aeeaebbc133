//! A shard's memory budget (`node.memory_bytes` split evenly over the shards) and the
//! admission of request bytes that keeps the shard inside it.
//!
//! # The split ([`ShardBudget`])
//!
//! * An eighth (at most the default pool) is the direct-I/O buffer pool, allocated at
//!   start-up and locked with `mlock` where permitted — a fixed cost.
//! * An eighth bounds connections: each holds a receive buffer and at most one more
//!   receive's worth of bytes waiting for admission (the reactor re-arms a receive only
//!   after its bytes were handed over, and not at all on a paused connection), so the
//!   shard accepts at most `share / (2 × recv_buffer_bytes)` connections (fewer if
//!   `kafka.max_connections_per_shard` says so) and refuses the rest.
//! * Half is the request window ([`Admission`]): bytes of requests the broker holds
//!   (being received, decoded, written) until their responses go out.
//! * A sixteenth (at most Raft's default) bounds each partition's Raft entry cache.
//! * The rest bounds responses queued on sockets: above it the shard stops reading
//!   from every connection until they drain.
//!
//! # Admission
//!
//! The runtime passes every received chunk through [`Admission::receive`]. A Kafka frame
//! is reserved whole once its 4-byte size has arrived, so a window full
//! of half-received frames (which could never complete) is impossible. It is charged its
//! size, a produce too: the log writes a produce's batches from the frame itself (it
//! copies only each batch's header, to stamp the offsets; see
//! `oxbow_core::log::StampedBatch`). It is assembled in a buffer of exactly its size and
//! handed to the broker whole, so what the broker holds is what was charged (no buffer
//! grown by doubling). A frame that does not fit waits, its connection stops being read,
//! and the bytes already received stay here (at most one receive). Waiting connections
//! are admitted in arrival order as the window frees, so a large frame is not starved by
//! small ones. A request's bytes are released when the response with its correlation
//! id is sent (responses go out in request order, so earlier requests without a
//! response — `acks=0` produces — are released with it); `acks=0` produces with no
//! later response are released when the shard is quiet (nothing queued anywhere),
//! when they are necessarily done. A frame larger than the window (refused by the
//! broker anyway, as `kafka.max_frame_bytes` is below it) is passed through
//! unreserved so the broker can answer the error.

use super::frame_pool::FramePool;
use bytes::{Buf, Bytes};
use std::collections::{BTreeMap, VecDeque};

use super::net::ConnId;
use crate::storage::aligned::PoolConfig;

/// Per-shard budget when `node.memory_bytes` is 0.
pub const DEFAULT_SHARD_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

/// The least budget a shard runs with.
pub const MIN_SHARD_MEMORY_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes of a Kafka size prefix.
const SIZE_PREFIX_BYTES: u64 = 4;

/// The least budget per shard for frames of up to `max_frame_bytes`: the request
/// window (half) must hold one whole frame.
pub fn min_shard_memory_bytes(max_frame_bytes: u32) -> u64 {
    (2 * (u64::from(max_frame_bytes) + SIZE_PREFIX_BYTES)).max(MIN_SHARD_MEMORY_BYTES)
}

/// How one shard's budget is spent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ShardBudget {
    /// The shard's whole budget.
    pub total_bytes: u64,
    /// The direct-I/O pool (pre-allocated, locked).
    pub pool: PoolConfig,
    /// Connections the shard accepts.
    pub max_connections: usize,
    /// Request bytes the broker may hold.
    pub request_window_bytes: u64,
    /// Response bytes queued on sockets above which reading stops.
    pub send_window_bytes: u64,
}

impl ShardBudget {
    /// Splits `total_bytes` (see the module docs). `pool`: the pool wanted when the
    /// budget allows; `recv_buffer_bytes`: each connection's receive buffer;
    /// `max_connections`: the configured cap.
    pub fn split(
        total_bytes: u64,
        pool: PoolConfig,
        recv_buffer_bytes: usize,
        max_connections: usize,
    ) -> ShardBudget {
        let eighth = total_bytes / 8;
        let buffer_bytes = pool.buffer_bytes.max(1) as u64;
        let buffers = (eighth / buffer_bytes).clamp(2, pool.buffer_count.max(2) as u64);
        let pool = PoolConfig {
            buffer_count: usize::try_from(buffers).unwrap_or(2),
            buffer_bytes: pool.buffer_bytes,
        };
        let pool_bytes = buffers * buffer_bytes;
        let per_connection = 2 * recv_buffer_bytes.max(1) as u64;
        let connections = usize::try_from(eighth / per_connection).unwrap_or(usize::MAX);
        let request_window_bytes = total_bytes / 2;
        let raft_cache_bytes = raft_entry_cache_bytes(total_bytes) as u64;
        ShardBudget {
            total_bytes,
            pool,
            max_connections: connections.clamp(1, max_connections.max(1)),
            request_window_bytes,
            send_window_bytes: total_bytes
                .saturating_sub(pool_bytes)
                .saturating_sub(eighth)
                .saturating_sub(request_window_bytes)
                .saturating_sub(raft_cache_bytes)
                .max(1),
        }
    }

    /// Bytes of the pre-allocated direct-I/O pool.
    pub fn pool_bytes(&self) -> u64 {
        (self.pool.buffer_count as u64).saturating_mul(self.pool.buffer_bytes as u64)
    }

    /// Bytes of large request-frame buffers the shard keeps idle for reuse between
    /// requests ([`super::frame_pool`]): an eighth of the request window, on top of it
    /// (idle buffers are not in flight, so the window does not count them). The shard's
    /// memory under overload is measured whole by `tests/tune_memory_budget.rs`.
    pub fn idle_frame_bytes(&self) -> usize {
        usize::try_from(self.request_window_bytes / 8).unwrap_or(usize::MAX)
    }

    /// The bound of each partition's Raft recent-entry cache (entries kept in memory
    /// for followers and tail readers): a sixteenth of the shard's budget, at most
    /// Raft's default (16 MiB, reached at the default 256 MiB budget). Known gap: the
    /// bound is per partition, so a shard with many partitions written at once may
    /// hold more than one sixteenth in caches.
    pub fn raft_entry_cache_bytes(&self) -> usize {
        raft_entry_cache_bytes(self.total_bytes)
    }
}

/// See [`ShardBudget::raft_entry_cache_bytes`].
fn raft_entry_cache_bytes(total_bytes: u64) -> usize {
    let default = oxbow_core::raft::RaftConfig::default().entry_cache_bytes;
    usize::try_from(total_bytes / 16).map_or(default, |share| share.min(default))
}

/// Makes the allocator hand large buffers (request frames, batches) back to the
/// operating system when they are freed. glibc raises its mmap threshold to the size of
/// each large block freed (up to 32 MiB), after which megabyte-sized requests come from
/// the heap and stay there: a node that held 8 MiB of requests grew by tens of MiB it
/// no longer used, invisible to the shards' budgets. A fixed threshold keeps what the
/// process holds close to what the budgets account for. Call before the shards start.
pub fn release_large_buffers_to_the_os() {
    /// Blocks from this size up are mapped on their own and unmapped when freed.
    const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only changes allocator parameters; it is called before the
    // shard threads start allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// The process's resident memory now (`VmRSS` in `/proc/self/status`); `None` where
/// that file is missing or unreadable. Read at start-up, it is the node's fixed cost —
/// code, thread stacks, io_uring rings, the shards' pre-allocated pools — on top of
/// which load-dependent memory is bounded by the shards' budgets.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss_bytes(&status)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Counters of the request window.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AdmissionStats {
    /// The window.
    pub window_bytes: u64,
    /// Bytes reserved now.
    pub used_bytes: u64,
    /// Most bytes ever reserved.
    pub peak_used_bytes: u64,
    /// Times a connection had to wait for the window.
    pub waits: u64,
    /// Connections waiting now.
    pub waiting: u64,
}

/// A request whose bytes are reserved.
#[derive(Debug)]
struct Reserved {
    bytes: u64,
    /// Its correlation id, once its header has arrived.
    correlation_id: Option<i32>,
    /// No response will come (an `acks=0` produce), or cannot be told.
    no_response: bool,
}

/// Kafka's api key of Produce.
const PRODUCE_API_KEY: i16 = 0;

/// Received bytes kept as the chunks they arrived in: holding them copies nothing.
#[derive(Debug, Default)]
struct Chunks {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.parts.push_back(bytes);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Copies the first `out.len()` bytes into `out`; false if fewer are held.
    fn peek(&self, out: &mut [u8]) -> bool {
        if self.len < out.len() {
            return false;
        }
        let mut filled = 0;
        for part in &self.parts {
            let n = part.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&part[..n]);
            filled += n;
            if filled == out.len() {
                break;
            }
        }
        true
    }

    /// Removes the first `n` bytes (at most what is held), handing each piece to `take`.
    fn drain(&mut self, mut n: usize, mut take: impl FnMut(Bytes)) {
        while n > 0 {
            let Some(part) = self.parts.front_mut() else {
                return;
            };
            let piece = if part.len() <= n {
                self.parts.pop_front().unwrap_or_default()
            } else {
                part.split_to(n)
            };
            n -= piece.len();
            self.len -= piece.len();
            take(piece);
        }
    }
}

#[derive(Debug, Default)]
struct Conn {
    /// Received, not yet admitted (waiting for the window or a frame's first bytes).
    held: Chunks,
    /// The admitted frame being assembled, and its size (large ones in a buffer from
    /// the shard's [`FramePool`]).
    frame: Option<(Vec<u8>, usize)>,
    /// Bytes of an oversized frame still to pass through unreserved.
    passthrough: u64,
    reserved: VecDeque<Reserved>,
    waiting: bool,
}

/// A shard's request window (see the module docs).
#[derive(Debug)]
pub struct Admission {
    window_bytes: u64,
    max_frame_bytes: u64,
    used_bytes: u64,
    conns: BTreeMap<ConnId, Conn>,
    waiting: VecDeque<ConnId>,
    stats: AdmissionStats,
    frames: FramePool,
}

impl Admission {
    /// Large frames are received into buffers of `frames` (reused while it has them).
    pub fn with_frame_pool(mut self, frames: FramePool) -> Admission {
        self.frames = frames;
        self
    }

    /// A window of `window_bytes` for frames of at most `max_frame_bytes`.
    pub fn new(window_bytes: u64, max_frame_bytes: u32) -> Admission {
        Admission {
            window_bytes,
            max_frame_bytes: u64::from(max_frame_bytes),
            used_bytes: 0,
            conns: BTreeMap::new(),
            waiting: VecDeque::new(),
            stats: AdmissionStats {
                window_bytes,
                ..AdmissionStats::default()
            },
            frames: FramePool::new(0),
        }
    }

    /// Counters.
    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            used_bytes: self.used_bytes,
            waiting: self.waiting.len() as u64,
            ..self.stats
        }
    }

    /// Bytes reserved now.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// Whether a connection waits for the window (do not read from it).
    pub fn is_waiting(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.waiting)
    }

    /// Bytes received from `conn`: returns what may be handed to the broker now, in
    /// order. The rest is kept until the window has room.
    pub fn receive(&mut self, conn: ConnId, bytes: Bytes) -> Vec<Bytes> {
        let state = self.conns.entry(conn).or_default();
        state.held.push(bytes);
        if state.waiting {
            return Vec::new();
        }
        self.pump(conn)
    }

    /// A response was sent on `conn` (`frame`: the whole response, size prefix first):
    /// releases the requests it answers. Returns bytes now admitted, per connection.
    pub fn sent(&mut self, conn: ConnId, frame: &[u8]) -> Vec<(ConnId, Bytes)> {
        let Some(correlation_id) = frame
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return Vec::new();
        };
        let Some(state) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        let Some(position) = state
            .reserved
            .iter()
            .position(|r| r.correlation_id == Some(correlation_id))
        else {
            return Vec::new();
        };
        let released: u64 = state.reserved.drain(..=position).map(|r| r.bytes).sum();
        self.release(released)
    }

    /// The shard is quiet (no effect, storage or key-value work queued): requests that
    /// get no response are done; releases them. Returns bytes now admitted.
    pub fn quiet(&mut self) -> Vec<(ConnId, Bytes)> {
        let mut released = 0;
        for state in self.conns.values_mut() {
            // The frame still being received (the newest reservation) is not done.
            let keep_last = state.frame.is_some();
            let len = state.reserved.len();
            let mut index = 0;
            state.reserved.retain(|r| {
                let in_progress = keep_last && index + 1 == len;
                index += 1;
                if r.no_response && !in_progress {
                    released += r.bytes;
                    false
                } else {
                    true
                }
            });
        }
        if released == 0 {
            return Vec::new();
        }
        self.release(released)
    }

    /// Whether anything could be released by [`Admission::quiet`].
    pub fn has_no_response(&self) -> bool {
        self.conns
            .values()
            .any(|c| c.reserved.iter().any(|r| r.no_response))
    }

    /// A connection closed: everything it held is released.
    pub fn closed(&mut self, conn: ConnId) -> Vec<(ConnId, Bytes)> {
        let Some(state) = self.conns.remove(&conn) else {
            return Vec::new();
        };
        self.waiting.retain(|c| *c != conn);
        let released: u64 = state.reserved.iter().map(|r| r.bytes).sum();
        self.release(released)
    }

    fn release(&mut self, bytes: u64) -> Vec<(ConnId, Bytes)> {
        assert!(bytes <= self.used_bytes, "released more than reserved");
        self.used_bytes -= bytes;
        let mut admitted = Vec::new();
        while let Some(&conn) = self.waiting.front() {
            if let Some(state) = self.conns.get_mut(&conn) {
                state.waiting = false;
            }
            let delivered = self.pump(conn);
            admitted.extend(delivered.into_iter().map(|b| (conn, b)));
            if self.is_waiting(conn) {
                break;
            }
            self.waiting.pop_front();
        }
        admitted
    }

    /// Delivers what the window admits of `conn`'s held bytes: whole frames.
    fn pump(&mut self, conn: ConnId) -> Vec<Bytes> {
        let mut out = Vec::new();
        let Some(state) = self.conns.get_mut(&conn) else {
            return out;
        };
        loop {
            if state.passthrough > 0 {
                let n = usize::try_from(state.passthrough)
                    .unwrap_or(usize::MAX)
                    .min(state.held.len());
                if n == 0 {
                    break;
                }
                state.passthrough -= n as u64;
                state.held.drain(n, |piece| out.push(piece));
                continue;
            }
            if let Some((frame, frame_len)) = state.frame.as_mut() {
                let missing = *frame_len - frame.len();
                let n = missing.min(state.held.len());
                state.held.drain(n, |piece| frame.extend_from_slice(&piece));
                if n < missing {
                    break;
                }
                let (frame, _) = state.frame.take().unwrap_or_default();
                let whole = self.frames.freeze(frame);
                let header = parse_header(&whole);
                if let Some(last) = state.reserved.back_mut() {
                    last.correlation_id = header.correlation_id;
                    last.no_response = header.no_response;
                }
                out.push(whole);
                continue;
            }
            let mut head = [0u8; SIZE_PREFIX_BYTES as usize];
            if !state.held.peek(&mut head) {
                break;
            }
            let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let frame_bytes = u64::try_from(size).unwrap_or(0) + SIZE_PREFIX_BYTES;
            if size < 0
                || frame_bytes > self.window_bytes
                || frame_bytes > self.max_frame_bytes + SIZE_PREFIX_BYTES
            {
                // The broker refuses it and closes the connection: pass everything.
                state.passthrough = u64::MAX;
                continue;
            }
            let first_in_line = self.waiting.front().is_none_or(|c| *c == conn);
            if self.used_bytes + frame_bytes > self.window_bytes || !first_in_line {
                if !state.waiting {
                    state.waiting = true;
                    self.stats.waits += 1;
                    if !self.waiting.contains(&conn) {
                        self.waiting.push_back(conn);
                    }
                }
                break;
            }
            self.used_bytes += frame_bytes;
            self.stats.peak_used_bytes = self.stats.peak_used_bytes.max(self.used_bytes);
            state.reserved.push_back(Reserved {
                bytes: frame_bytes,
                correlation_id: None,
                no_response: true,
            });
            let frame_len = usize::try_from(frame_bytes).unwrap_or(usize::MAX);
            state.frame = Some((self.frames.take(frame_len), frame_len));
        }
        out
    }
}

/// What the runtime needs from a request header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    correlation_id: Option<i32>,
    /// No response will come: an `acks=0` produce — or a header that cannot be read
    /// (treated alike, so it is released when the shard is quiet and never leaks).
    no_response: bool,
}

/// Reads a whole request frame (size prefix included): correlation id, and for a
/// produce request its `acks`.
fn parse_header(frame: &[u8]) -> Header {
    let mut buf = frame.get(4..).unwrap_or_default();
    let (Some(api_key), Some(api_version), Some(correlation_id)) =
        (get_i16(&mut buf), get_i16(&mut buf), get_i32(&mut buf))
    else {
        return Header {
            correlation_id: None,
            no_response: true,
        };
    };
    if api_key != PRODUCE_API_KEY {
        return Header {
            correlation_id: Some(correlation_id),
            no_response: false,
        };
    }
    Header {
        correlation_id: Some(correlation_id),
        // Unreadable acks: treated as no response, so the bytes are released when the
        // shard is quiet and never leak.
        no_response: produce_acks(buf, api_version).is_none_or(|acks| acks == 0),
    }
}

fn get_i16(buf: &mut &[u8]) -> Option<i16> {
    (buf.len() >= 2).then(|| buf.get_i16())
}

fn get_i32(buf: &mut &[u8]) -> Option<i32> {
    (buf.len() >= 4).then(|| buf.get_i32())
}

fn get_uvarint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.first()?;
        buf.advance(1);
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn skip(buf: &mut &[u8], n: usize) -> Option<()> {
    (buf.len() >= n).then(|| buf.advance(n))
}

/// A produce request's `acks`, from the bytes after the correlation id.
fn produce_acks(mut buf: &[u8], api_version: i16) -> Option<i16> {
    let flexible = api_version >= 9;
    // client_id: a nullable string with an i16 length in every header version.
    let client_id = get_i16(&mut buf)?;
    skip(&mut buf, usize::try_from(client_id).unwrap_or(0))?;
    if flexible {
        for _ in 0..get_uvarint(&mut buf)? {
            get_uvarint(&mut buf)?;
            let size = get_uvarint(&mut buf)?;
            skip(&mut buf, usize::try_from(size).ok()?)?;
        }
    }
    if api_version >= 3 {
        // transactional_id
        if flexible {
            let len_plus_one = get_uvarint(&mut buf)?;
            skip(&mut buf, usize::try_from(len_plus_one.saturating_sub(1)).ok()?)?;
        } else {
            let len = get_i16(&mut buf)?;
            skip(&mut buf, usize::try_from(len).unwrap_or(0))?;
        }
    }
    get_i16(&mut buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(api_key: i16, version: i16, correlation_id: i32, body: &[u8], total: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&((total - 4) as i32).to_be_bytes());
        f.extend_from_slice(&api_key.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&correlation_id.to_be_bytes());
        f.extend_from_slice(&3i16.to_be_bytes());
        f.extend_from_slice(b"cli");
        f.extend_from_slice(body);
        f.resize(total, 0);
        f
    }

    fn response(correlation_id: i32) -> Vec<u8> {
        let mut r = 4i32.to_be_bytes().to_vec();
        r.extend_from_slice(&correlation_id.to_be_bytes());
        r
    }

    fn total(chunks: &[Bytes]) -> usize {
        chunks.iter().map(Bytes::len).sum()
    }

    #[test]
    fn frames_are_admitted_whole_and_released_by_their_response() {
        let mut a = Admission::new(1000, 900);
        // Two 600-byte metadata requests (api 3) on one connection: the second waits.
        let mut bytes = frame(3, 12, 7, &[], 600);
        bytes.extend(frame(3, 12, 8, &[], 600));
        let first = a.receive(1, Bytes::from(bytes));
        assert_eq!(total(&first), 600);
        assert!(a.is_waiting(1));
        assert_eq!(a.used_bytes(), 600);
        assert_eq!(a.stats().waits, 1);
        // A response for an unknown correlation id releases nothing.
        assert!(a.sent(1, &response(99)).is_empty());
        let admitted = a.sent(1, &response(7));
        assert_eq!(admitted.iter().map(|(_, b)| b.len()).sum::<usize>(), 600);
        assert!(!a.is_waiting(1));
        assert_eq!(a.used_bytes(), 600);
        a.sent(1, &response(8));
        assert_eq!(a.used_bytes(), 0);
    }

    #[test]
    fn waiting_connections_are_served_in_arrival_order() {
        let mut a = Admission::new(1000, 900);
        assert_eq!(total(&a.receive(1, Bytes::from(frame(3, 1, 1, &[], 800)))), 800);
        assert!(a.receive(2, Bytes::from(frame(3, 1, 1, &[], 900))).is_empty());
        // A small frame behind the large waiter waits too (no starvation).
        assert!(a.receive(3, Bytes::from(frame(3, 1, 1, &[], 200))).is_empty());
        assert!(a.is_waiting(2) && a.is_waiting(3));
        let admitted = a.sent(1, &response(1));
        assert_eq!(admitted.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![2]);
        assert!(a.is_waiting(3));
        let admitted = a.closed(2);
        assert_eq!(admitted.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![3]);
        assert_eq!(a.used_bytes(), 200);
    }

    #[test]
    fn split_frames_reserve_at_their_prefix() {
        let mut a = Admission::new(1000, 900);
        let f = frame(3, 1, 5, &[], 700);
        assert!(a.receive(1, Bytes::copy_from_slice(&f[..2])).is_empty());
        assert_eq!(a.used_bytes(), 0);
        // Reserved once the api key is here; delivered whole, once complete.
        assert_eq!(total(&a.receive(1, Bytes::copy_from_slice(&f[2..10]))), 0);
        assert_eq!(a.used_bytes(), 700);
        assert_eq!(total(&a.receive(1, Bytes::copy_from_slice(&f[10..300]))), 0);
        let whole = a.receive(1, Bytes::copy_from_slice(&f[300..]));
        assert_eq!(whole.len(), 1);
        assert_eq!(&whole[0][..], &f[..]);
        a.sent(1, &response(5));
        assert_eq!(a.used_bytes(), 0);
    }

    #[test]
    fn acks_zero_produces_are_released_when_quiet() {
        let mut a = Admission::new(10_000, 9000);
        // Produce v8: transactional_id null (-1), acks 0.
        let mut body = (-1i16).to_be_bytes().to_vec();
        body.extend_from_slice(&0i16.to_be_bytes());
        a.receive(1, Bytes::from(frame(0, 8, 1, &body, 300)));
        // Produce v9 (flexible): no tagged fields, transactional_id null (0), acks -1.
        let mut flexible = vec![0u8, 0u8];
        flexible.extend_from_slice(&(-1i16).to_be_bytes());
        a.receive(1, Bytes::from(frame(0, 9, 2, &flexible, 300)));
        // Each produce is charged its size, like any frame (the log writes its batches
        // from the frame, copying only their headers).
        assert_eq!(a.used_bytes(), 600);
        assert!(a.has_no_response());
        a.quiet();
        assert_eq!(a.used_bytes(), 300, "the acks=-1 produce stays until answered");
        a.sent(1, &response(2));
        assert_eq!(a.used_bytes(), 0);
    }

    #[test]
    fn a_produce_is_charged_its_size_and_what_does_not_fit_waits() {
        let mut a = Admission::new(1000, 900);
        let produce = frame(0, 8, 1, &[], 600);
        assert_eq!(total(&a.receive(1, Bytes::from(produce.clone()))), 600);
        assert_eq!(a.used_bytes(), 600, "charged its size");
        assert_eq!(total(&a.receive(2, Bytes::from(frame(3, 1, 1, &[], 50)))), 50);
        // A second produce of 600 does not fit beside it and waits.
        assert!(a.receive(3, Bytes::from(produce)).is_empty());
        assert!(a.is_waiting(3));
        let admitted = a.sent(1, &response(1));
        assert_eq!(admitted.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![3]);
        assert_eq!(a.used_bytes(), 650);
    }

    #[test]
    fn oversized_frames_pass_unreserved() {
        let mut a = Admission::new(1000, 900);
        let delivered = a.receive(1, Bytes::from(frame(3, 1, 1, &[], 2000)));
        assert_eq!(total(&delivered), 2000);
        assert_eq!(a.used_bytes(), 0);
    }

    #[test]
    fn resident_memory_is_read_from_the_status_file() {
        let status = "Name:\toxbow\nVmHWM:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(2 << 20));
        assert_eq!(vm_rss_bytes("VmRSS:\tlots kB\n"), None);
        assert_eq!(vm_rss_bytes(""), None);
        assert!(resident_bytes().is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn budget_split_adds_up() {
        let b = ShardBudget::split(64 << 20, PoolConfig::default(), 64 * 1024, 10_000);
        assert_eq!(b.request_window_bytes, 32 << 20);
        assert_eq!(b.pool_bytes(), 4 << 20);
        assert_eq!(b.max_connections, 64);
        assert_eq!(b.raft_entry_cache_bytes(), 4 << 20);
        assert_eq!(
            b.pool_bytes()
                + (8 << 20)
                + b.request_window_bytes
                + b.raft_entry_cache_bytes() as u64
                + b.send_window_bytes,
            64 << 20
        );
        let small = ShardBudget::split(MIN_SHARD_MEMORY_BYTES, PoolConfig::default(), 64 * 1024, 10_000);
        assert_eq!(small.pool.buffer_count, 8);
        assert_eq!(min_shard_memory_bytes(100 << 20), 2 * ((100 << 20) + 4));
    }
}
