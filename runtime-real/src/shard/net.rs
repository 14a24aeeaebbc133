//! A shard's network reactor on io_uring: the Kafka listener, its connections and the
//! shard's doorbell, as one ring the shard thread waits on.
//!
//! The reactor does I/O only; it knows nothing of Kafka. It turns completions into
//! [`NetEvent`]s (connected, bytes received, closed, doorbell rung) and takes commands
//! ([`Reactor::send`], [`Reactor::close`]). [`Reactor::wait`] submits what is queued and
//! sleeps until a completion arrives or the shard's next deadline passes (the wait
//! carries the timeout, so no timer operation is needed).
//!
//! Other parts of the shard put their own operations on the same ring
//! ([`Reactor::push_external`], the shard's disk I/O): their completions come back,
//! untouched, from [`Reactor::poll_external`], and wake [`Reactor::wait`] like network
//! events do, so the shard waits on one ring for everything.
//!
//! # Buffers and safety
//!
//! Every operation in flight points into memory the reactor keeps alive until the
//! operation's completion arrives: each connection's receive buffer (a boxed slice
//! that never moves), the `Bytes` at the front of its send queue (heap memory that does
//! not move while the `Bytes` is held) and the boxed `msghdr` and `iovec` array the send
//! describes them with, the doorbell's 8-byte box. A connection's slot
//! is freed only when it has nothing in flight. [`Reactor::shutdown`] shuts every socket
//! down and waits for the outstanding completions; whatever has not completed by its
//! deadline is leaked rather than freed under the kernel.
//!
//! # Limits and back-pressure
//!
//! * One receive of at most `recv_buffer_bytes` in flight per connection, re-armed only
//!   by the [`Reactor::wait`] after its bytes were reported, so a connection paused by
//!   [`Reactor::set_conn_reading`] delivers at most one more receive.
//! * Per-connection send order is the order of [`Reactor::send`] calls and of the
//!   chunks within one; one send in flight per connection, a `sendmsg` gathering up to
//!   [`MAX_SEND_CHUNKS`] queued chunks (a response frame's header and the record sets
//!   it carries in their read buffers, and the frames queued after it); a partial send
//!   continues from where it stopped, mid-chunk or not.
//! * When a connection's queued output exceeds `max_send_queue_bytes`, the reactor stops
//!   reading from it (no new requests, so no new responses) until the queue drains
//!   below the bound. The queue can exceed the bound only by the responses to requests
//!   already read. [`Reactor::set_reading_paused`] stops reading from every connection
//!   (the shard's own back-pressure, e.g. a full SMP queue).
//! * At most `max_connections` connections; further accepts are closed at once.

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::smp::EventFd;

/// A connection of this reactor (unique for the reactor's life).
pub type ConnId = u64;

const OP_SHIFT: u32 = 56;
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_DOORBELL: u64 = 4;
const OP_EXTERNAL: u64 = 5;
const SLOT_MASK: u64 = (1 << OP_SHIFT) - 1;

/// Most queued chunks one send gathers (Linux's `UIO_MAXIOV` is 1024).
pub const MAX_SEND_CHUNKS: usize = 64;

/// Limits of the reactor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NetConfig {
    /// Entries of the io_uring submission queue.
    pub ring_entries: u32,
    /// Size of each connection's receive buffer.
    pub recv_buffer_bytes: usize,
    /// Output queued per connection above which the reactor stops reading from it.
    pub max_send_queue_bytes: usize,
    /// Most open connections per shard.
    pub max_connections: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            ring_entries: 1024,
            recv_buffer_bytes: 64 * 1024,
            max_send_queue_bytes: 8 * 1024 * 1024,
            max_connections: 10_000,
        }
    }
}

/// Something that happened on the network.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum NetEvent {
    /// A client connected.
    Connected(ConnId),
    /// Bytes arrived, in order.
    Received(ConnId, Bytes),
    /// The connection is closed (by the peer, an error, or [`Reactor::close`]);
    /// reported once per connection, after which its id is unknown.
    Closed(ConnId),
    /// The doorbell rang (another thread has something for this shard).
    Doorbell,
}

/// Counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NetStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused because `max_connections` were open.
    pub refused: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Connections open now.
    pub open_connections: u64,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    fd: OwnedFd,
    recv_buf: Box<[u8]>,
    recv_in_flight: bool,
    send_queue: VecDeque<Bytes>,
    send_queued_bytes: usize,
    /// Bytes of the queue's front already sent.
    send_offset: usize,
    send_in_flight: bool,
    /// What the send in flight gathers: it points into the queue's first chunks.
    send_iov: Box<[libc::iovec; MAX_SEND_CHUNKS]>,
    /// The send in flight's message header: it points at `send_iov`.
    send_msg: Box<libc::msghdr>,
    /// Close once the send queue is empty.
    close_requested: bool,
    /// No more reads or writes: the peer closed, an error, or a close took effect.
    dead: bool,
    /// `shutdown(2)` issued.
    shut: bool,
    /// Reading stopped by [`Reactor::set_conn_reading`].
    paused: bool,
}

impl Conn {
    fn in_flight(&self) -> bool {
        self.recv_in_flight || self.send_in_flight
    }

    /// Points the connection's message header at the first [`MAX_SEND_CHUNKS`] queued
    /// chunks (the first from `send_offset` on) and returns it.
    fn gather_send(&mut self) -> *const libc::msghdr {
        let mut count = 0;
        for (index, chunk) in self.send_queue.iter().take(MAX_SEND_CHUNKS).enumerate() {
            let rest = if index == 0 {
                &chunk[self.send_offset..]
            } else {
                &chunk[..]
            };
            self.send_iov[index] = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            count = index + 1;
        }
        self.send_msg.msg_iov = self.send_iov.as_mut_ptr();
        self.send_msg.msg_iovlen = count as _;
        &*self.send_msg
    }

    /// `sent_bytes` of the queue's front went out: pops the chunks sent whole and
    /// advances into the first one that was not.
    fn advance_send(&mut self, mut sent_bytes: usize) {
        while sent_bytes > 0 {
            let Some(front) = self.send_queue.front() else {
                tracing::error!(sent_bytes, "net: more bytes sent than queued");
                return;
            };
            let rest = front.len() - self.send_offset;
            if sent_bytes < rest {
                self.send_offset += sent_bytes;
                return;
            }
            sent_bytes -= rest;
            self.send_queue.pop_front();
            self.send_offset = 0;
        }
    }
}

/// A message header with no address, no control data and no iovecs yet.
fn empty_msghdr() -> Box<libc::msghdr> {
    // SAFETY: `msghdr` is plain old data; all-zero is a valid (empty) value.
    Box::new(unsafe { std::mem::zeroed() })
}

fn empty_iovecs() -> Box<[libc::iovec; MAX_SEND_CHUNKS]> {
    Box::new(
        [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_SEND_CHUNKS],
    )
}

/// One shard's ring, listener and connections.
pub struct Reactor {
    ring: IoUring,
    config: NetConfig,
    listener: Option<TcpListener>,
    accept_in_flight: bool,
    doorbell: Arc<EventFd>,
    doorbell_buf: Box<u64>,
    doorbell_in_flight: bool,
    slots: Vec<Option<Conn>>,
    free_slots: Vec<usize>,
    by_id: HashMap<ConnId, usize>,
    next_id: ConnId,
    /// Slots whose operations may need (re-)arming or whose slot may be freed.
    dirty: VecDeque<usize>,
    events: VecDeque<NetEvent>,
    reading_paused: bool,
    /// Bytes queued on every connection and not yet sent.
    queued_bytes_total: usize,
    /// Completions of external operations: (caller's id, result).
    external: VecDeque<(u64, i32)>,
    /// External operations pushed and not yet completed.
    external_in_flight: usize,
    stats: NetStats,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn user_data(op: u64, slot: usize) -> u64 {
    (op << OP_SHIFT) | (slot as u64 & SLOT_MASK)
}

impl Reactor {
    /// A reactor serving `listener` (already bound and listening) and woken by
    /// `doorbell`.
    pub fn new(listener: TcpListener, doorbell: Arc<EventFd>, config: NetConfig) -> io::Result<Reactor> {
        assert!(config.recv_buffer_bytes > 0 && config.max_connections > 0);
        let ring = IoUring::builder().build(config.ring_entries)?;
        Ok(Reactor {
            ring,
            config,
            listener: Some(listener),
            accept_in_flight: false,
            doorbell,
            doorbell_buf: Box::new(0),
            doorbell_in_flight: false,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            next_id: 1,
            dirty: VecDeque::new(),
            events: VecDeque::new(),
            reading_paused: false,
            queued_bytes_total: 0,
            external: VecDeque::new(),
            external_in_flight: 0,
            stats: NetStats::default(),
        })
    }

    /// Whether the kernel supports every opcode in `opcodes` on this ring.
    pub fn supports(&self, opcodes: &[u8]) -> bool {
        let mut probe = io_uring::Probe::new();
        if self.ring.submitter().register_probe(&mut probe).is_err() {
            return false;
        }
        opcodes.iter().all(|code| probe.is_supported(*code))
    }

    /// Queues another part of the shard's operation on the ring (submitted with the
    /// next [`Reactor::wait`]); its completion comes back from
    /// [`Reactor::poll_external`] with `id` (the low 56 bits are kept).
    ///
    /// # Safety
    ///
    /// Every buffer and file the entry refers to must stay valid until the completion
    /// has been polled (the caller owns them; the reactor only carries the entry).
    pub unsafe fn push_external(&mut self, entry: squeue::Entry, id: u64) -> io::Result<()> {
        let entry = entry.user_data((OP_EXTERNAL << OP_SHIFT) | (id & SLOT_MASK));
        // SAFETY: the caller guarantees the entry's buffers outlive the operation.
        unsafe { self.push(&entry)? };
        self.external_in_flight += 1;
        Ok(())
    }

    /// The next completion of an external operation: its id and result (bytes, or a
    /// negated errno).
    pub fn poll_external(&mut self) -> Option<(u64, i32)> {
        self.external.pop_front()
    }

    /// External operations pushed whose completions have not arrived.
    pub fn external_in_flight(&self) -> usize {
        self.external_in_flight
    }

    /// Counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NetEvent> {
        self.events.pop_front()
    }

    /// Whether events (or external completions) are waiting to be polled.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty() || !self.external.is_empty()
    }

    /// Queues `chunks` on a connection, in order, after everything queued before; they
    /// are sent back to back (gathered into as few sends as [`MAX_SEND_CHUNKS`] allows).
    /// Returns false (and drops the chunks) if the connection is unknown or already dead.
    pub fn send(&mut self, id: ConnId, chunks: impl IntoIterator<Item = Bytes>) -> bool {
        let Some(&slot) = self.by_id.get(&id) else {
            return false;
        };
        let Some(conn) = self.slots[slot].as_mut() else {
            return false;
        };
        if conn.dead || conn.close_requested {
            return false;
        }
        let mut queued = false;
        for bytes in chunks.into_iter().filter(|b| !b.is_empty()) {
            conn.send_queued_bytes += bytes.len();
            self.queued_bytes_total += bytes.len();
            conn.send_queue.push_back(bytes);
            queued = true;
        }
        if queued {
            self.dirty.push_back(slot);
        }
        true
    }

    /// Closes a connection once what was queued before has been sent.
    pub fn close(&mut self, id: ConnId) {
        if let Some(&slot) = self.by_id.get(&id) {
            if let Some(conn) = self.slots[slot].as_mut() {
                conn.close_requested = true;
                self.dirty.push_back(slot);
            }
        }
    }

    /// Bytes queued and not yet sent on a connection.
    pub fn queued_bytes(&self, id: ConnId) -> usize {
        self.by_id
            .get(&id)
            .and_then(|&slot| self.slots[slot].as_ref())
            .map_or(0, |conn| conn.send_queued_bytes)
    }

    /// Bytes queued on every connection and not yet sent.
    pub fn total_queued_bytes(&self) -> usize {
        self.queued_bytes_total
    }

    /// Stops (or resumes) reading from every connection.
    pub fn set_reading_paused(&mut self, paused: bool) {
        if self.reading_paused != paused {
            self.reading_paused = paused;
            if !paused {
                self.dirty.extend(self.by_id.values().copied());
            }
        }
    }

    /// Stops (`false`) or resumes (`true`) reading from one connection (the
    /// application's back-pressure: it has enough requests of that client in hand).
    pub fn set_conn_reading(&mut self, id: ConnId, reading: bool) {
        if let Some(&slot) = self.by_id.get(&id) {
            if let Some(conn) = self.slots[slot].as_mut() {
                if conn.paused == reading {
                    conn.paused = !reading;
                    self.dirty.push_back(slot);
                }
            }
        }
    }

    /// Stops accepting: the listener is closed once its accept completes.
    pub fn stop_accepting(&mut self) {
        if let Some(listener) = &self.listener {
            // Wakes a pending accept (it fails with EINVAL), after which the listener
            // is dropped.
            // SAFETY: shutdown on a descriptor we own; no memory involved.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
            if !self.accept_in_flight {
                self.listener = None;
            }
        }
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.by_id.len()
    }

    /// Submits what is queued and waits until at least one completion arrives or
    /// `timeout` passes (`Some(ZERO)`: do not sleep; `None`: no timeout). Completions
    /// become events.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.arm()?;
        let want = usize::from(!self.has_events());
        let result = match timeout {
            Some(timeout) if want > 0 && !timeout.is_zero() => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            Some(_) => self.ring.submit(),
            None => self.ring.submit_and_wait(want),
        };
        match result {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        self.reap();
        // Operations the completions call for are armed by the next `wait`, after the
        // caller has seen the events: a receive is not re-armed before its bytes are
        // handed over, so a connection the caller pauses holds at most one receive.
        Ok(())
    }

    /// Pushes a submission, flushing the queue to the kernel if it is full.
    ///
    /// # Safety
    ///
    /// Every buffer the entry points to must stay valid until its completion.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller guarantees the entry's buffers outlive the operation.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Arms the accept, the doorbell and the receives and sends of dirty connections;
    /// frees the slots of dead connections with nothing in flight.
    fn arm(&mut self) -> io::Result<()> {
        if !self.accept_in_flight {
            if let Some(listener) = &self.listener {
                let entry = opcode::Accept::new(
                    types::Fd(listener.as_raw_fd()),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(user_data(OP_ACCEPT, 0));
                // SAFETY: accept with no address buffers; the listener outlives the
                // operation (it is dropped only after the completion).
                unsafe { self.push(&entry)? };
                self.accept_in_flight = true;
            }
        }
        if !self.doorbell_in_flight {
            let buf: *mut u64 = &mut *self.doorbell_buf;
            let entry = opcode::Read::new(types::Fd(self.doorbell.raw_fd()), buf.cast(), 8)
                .build()
                .user_data(user_data(OP_DOORBELL, 0));
            // SAFETY: the boxed u64 lives as long as the reactor, and the reactor waits
            // for (or leaks on) outstanding completions before dropping it.
            unsafe { self.push(&entry)? };
            self.doorbell_in_flight = true;
        }
        while let Some(slot) = self.dirty.pop_front() {
            self.arm_slot(slot)?;
        }
        Ok(())
    }

    fn arm_slot(&mut self, slot: usize) -> io::Result<()> {
        let reading_paused = self.reading_paused;
        let max_send_queue_bytes = self.config.max_send_queue_bytes;
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if conn.close_requested && conn.send_queue.is_empty() {
            conn.dead = true;
        }
        if conn.dead {
            if !conn.shut {
                conn.shut = true;
                // Wakes a pending receive (it completes with 0 bytes).
                // SAFETY: shutdown on a descriptor we own; no memory involved.
                unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
            }
            if !conn.in_flight() {
                let id = conn.id;
                self.queued_bytes_total -= conn.send_queued_bytes;
                self.slots[slot] = None;
                self.free_slots.push(slot);
                self.by_id.remove(&id);
                self.stats.open_connections = self.by_id.len() as u64;
                self.events.push_back(NetEvent::Closed(id));
            }
            return Ok(());
        }
        let fd = conn.fd.as_raw_fd();
        if !conn.send_in_flight && !conn.send_queue.is_empty() {
            let msg = conn.gather_send();
            let entry = opcode::SendMsg::new(types::Fd(fd), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(user_data(OP_SEND, slot));
            conn.send_in_flight = true;
            // SAFETY: the message header and iovec array are boxed in the connection,
            // and the chunks they point to stay in its queue (their heap memory does
            // not move), until this send's completion; the slot is not freed while
            // the send is in flight.
            unsafe { self.push(&entry)? };
        }
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let wants_read = !reading_paused
            && !conn.paused
            && !conn.close_requested
            && conn.send_queued_bytes < max_send_queue_bytes;
        if wants_read && !conn.recv_in_flight {
            let len = u32::try_from(conn.recv_buf.len()).unwrap_or(u32::MAX);
            let entry = opcode::Recv::new(types::Fd(fd), conn.recv_buf.as_mut_ptr(), len)
                .build()
                .user_data(user_data(OP_RECV, slot));
            conn.recv_in_flight = true;
            // SAFETY: the boxed receive buffer lives in the slot, which is not freed
            // while this receive is in flight.
            unsafe { self.push(&entry)? };
        }
        Ok(())
    }

    /// Turns every available completion into state changes and events.
    fn reap(&mut self) {
        let completions: Vec<cqueue::Entry> = self.ring.completion().collect();
        for cqe in completions {
            let op = cqe.user_data() >> OP_SHIFT;
            let slot = (cqe.user_data() & SLOT_MASK) as usize;
            let result = cqe.result();
            match op {
                OP_ACCEPT => self.accepted(result),
                OP_DOORBELL => {
                    self.doorbell_in_flight = false;
                    self.events.push_back(NetEvent::Doorbell);
                }
                OP_RECV => self.received(slot, result),
                OP_SEND => self.sent(slot, result),
                OP_EXTERNAL => {
                    self.external_in_flight = self.external_in_flight.saturating_sub(1);
                    self.external.push_back((slot as u64, result));
                }
                other => tracing::error!(op = other, "net: completion of an unknown operation"),
            }
        }
    }

    fn accepted(&mut self, result: i32) {
        self.accept_in_flight = false;
        if result < 0 {
            let error = io::Error::from_raw_os_error(-result);
            if self.listener.is_some() && !matches!(-result, libc::EINVAL | libc::ECANCELED) {
                tracing::warn!(%error, "net: accept failed");
            }
            return;
        }
        // SAFETY: a successful accept returns a new descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(result as RawFd) };
        if self.by_id.len() >= self.config.max_connections {
            self.stats.refused += 1;
            tracing::warn!(
                max = self.config.max_connections,
                "net: too many connections, refusing one"
            );
            return;
        }
        set_nodelay(&fd);
        let id = self.next_id;
        self.next_id += 1;
        let conn = Conn {
            id,
            fd,
            recv_buf: vec![0u8; self.config.recv_buffer_bytes].into_boxed_slice(),
            recv_in_flight: false,
            send_queue: VecDeque::new(),
            send_queued_bytes: 0,
            send_offset: 0,
            send_in_flight: false,
            send_iov: empty_iovecs(),
            send_msg: empty_msghdr(),
            close_requested: false,
            dead: false,
            shut: false,
            paused: false,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot] = Some(conn);
                slot
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, slot);
        self.stats.accepted += 1;
        self.stats.open_connections = self.by_id.len() as u64;
        self.events.push_back(NetEvent::Connected(id));
        self.dirty.push_back(slot);
    }

    fn received(&mut self, slot: usize, result: i32) {
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            tracing::error!(slot, "net: receive completion for a free slot");
            return;
        };
        conn.recv_in_flight = false;
        if result > 0 && !conn.dead {
            let n = result as usize;
            self.stats.received_bytes += n as u64;
            let bytes = Bytes::copy_from_slice(&conn.recv_buf[..n]);
            self.events.push_back(NetEvent::Received(conn.id, bytes));
        } else if result == 0 || (result < 0 && -result != libc::EAGAIN && -result != libc::EINTR) {
            // The peer closed (or the connection failed): nothing more to read, and
            // nobody to answer.
            conn.dead = true;
        }
        self.dirty.push_back(slot);
    }

    fn sent(&mut self, slot: usize, result: i32) {
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            tracing::error!(slot, "net: send completion for a free slot");
            return;
        };
        conn.send_in_flight = false;
        if result < 0 {
            if -result != libc::EAGAIN && -result != libc::EINTR {
                conn.dead = true;
            }
        } else {
            let n = (result as usize).min(conn.send_queued_bytes);
            self.stats.sent_bytes += n as u64;
            conn.advance_send(n);
            conn.send_queued_bytes -= n;
            self.queued_bytes_total -= n;
        }
        self.dirty.push_back(slot);
    }

    /// Closes every connection and the listener, and waits up to `deadline` for the
    /// operations in flight to complete. Buffers of operations still in flight then are
    /// leaked (never freed under the kernel). Returns the ids of connections closed
    /// here (their `Closed` events are not reported).
    pub fn shutdown(mut self, deadline: Duration) -> Vec<ConnId> {
        self.stop_accepting();
        let ids: Vec<ConnId> = self.by_id.keys().copied().collect();
        for slot in 0..self.slots.len() {
            if let Some(conn) = self.slots[slot].as_mut() {
                conn.dead = true;
                self.dirty.push_back(slot);
            }
        }
        let started = std::time::Instant::now();
        loop {
            // The doorbell read stays in flight; it is cancelled below.
            let busy = self.accept_in_flight || self.slots.iter().flatten().any(Conn::in_flight);
            if !busy || started.elapsed() >= deadline {
                break;
            }
            while let Some(slot) = self.dirty.pop_front() {
                if self.arm_slot(slot).is_err() {
                    break;
                }
            }
            let _ = self.ring.submit();
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
        }
        if self.doorbell_in_flight {
            let cancel = opcode::AsyncCancel::new(user_data(OP_DOORBELL, 0)).build();
            // SAFETY: a cancel carries no buffers.
            if unsafe { self.push(&cancel) }.is_ok() {
                let ts = types::Timespec::from(Duration::from_millis(50));
                let args = types::SubmitArgs::new().timespec(&ts);
                let _ = self.ring.submitter().submit_with_args(2, &args);
                for cqe in self.ring.completion() {
                    if cqe.user_data() == user_data(OP_DOORBELL, 0) {
                        self.doorbell_in_flight = false;
                    }
                }
            }
        }
        let busy = self.accept_in_flight
            || self.doorbell_in_flight
            || self.external_in_flight > 0
            || self.slots.iter().flatten().any(Conn::in_flight);
        if busy {
            tracing::warn!("net: operations still in flight at shutdown; leaking their buffers");
            std::mem::forget(self.slots);
            std::mem::forget(self.doorbell_buf);
            std::mem::forget(self.ring);
        }
        ids
    }
}

fn set_nodelay(fd: &OwnedFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a local int of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Binds `count` listeners to `addr` with `SO_REUSEPORT`, so the kernel spreads
/// connections over them. A port of 0 is resolved by the first bind and reused by the
/// others. Returns the listeners and the address they are bound to.
pub fn bind_reuseport(
    addr: std::net::SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(Vec<TcpListener>, std::net::SocketAddr)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut bound = addr;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&bound.into())?;
        socket.listen(backlog)?;
        if let Some(local) = socket.local_addr()?.as_socket() {
            bound = local;
        }
        listeners.push(TcpListener::from(socket));
    }
    Ok((listeners, bound))
}
