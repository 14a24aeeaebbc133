//! # Broker-to-broker transport
//!
//! [`PeerNet`] moves whole RPC frames ([`oxbow_core::rpc`]) between brokers over TCP,
//! with blocking std sockets on helper threads — never on the io_uring shard threads.
//! It owns:
//!
//! * the RPC listener and its acceptor thread (`oxbow-peer-accept`);
//! * one reader thread per accepted connection (`oxbow-peer-in-N`): a [`FrameDecoder`]
//!   splits the stream, frames addressed to this node go into one bounded inbound queue,
//!   and the `wake` callback rings the shard, which takes them with
//!   [`PeerNet::try_recv`] / [`PeerNet::drain`];
//! * one writer thread per known peer (`oxbow-peer-out-N`) with a bounded queue of
//!   encoded frames ([`PeerNet::send`]): it connects lazily (`TCP_NODELAY`, doubling
//!   backoff between failed connects), writes frames whole and batches what is queued
//!   into one `write_all`.
//!
//! Each direction between two brokers has its own connection: a broker writes only on
//! connections it opened and reads only on connections it accepted.
//!
//! **Loss, never blocking.** The shard-facing calls take one short lock and return. A
//! frame that meets a full queue, waits longer than [`PeerConfig::max_frame_age_ms`], or
//! is in a write that fails is dropped and counted in [`PeerStats`]; Raft retransmits.
//! Bad input from a peer — a malformed frame or one addressed to another node — closes
//! that connection with a warning naming the peer, never a panic.
//!
//! **Bounds.** Every queue is bounded in frames and bytes, each connection buffers at
//! most one frame ([`FrameLimits::max_frame_bytes`]), inbound connections are capped
//! ([`PeerConfig::max_inbound_connections`]), and connects and writes time out.
//! [`PeerNet::shutdown`] (or drop) stops every thread within about one
//! [`PeerConfig::connect_timeout_ms`].

use bytes::Bytes;
use oxbow_core::rpc::{Frame, FrameDecoder, FrameError, FrameLimits};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the acceptor checks for shutdown while no connection arrives.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// Largest single read from a peer connection.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// TCP keepalive on peer connections: idle time before the first probe, and between
/// probes, so a vanished host's connection ends instead of holding a thread.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A writer idle this long checks that the peer has not closed its connection before
/// writing on it (so the first frames after a peer restart are not written into a dead
/// socket).
const IDLE_CHECK: Duration = Duration::from_millis(5);

/// Called from transport threads when inbound frames are queued (the shard rings its
/// eventfd). Must be quick and must not block.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Configuration of a [`PeerNet`]. [`PeerConfig::new`] gives defaults for the bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// This broker's node id; inbound frames must be addressed to it.
    pub node_id: u64,
    /// The RPC listener's address (port 0 picks one; see [`PeerNet::local_addr`]).
    pub listen: SocketAddr,
    /// Bounds of inbound frames; a larger outbound frame is refused by `send`.
    pub limits: FrameLimits,
    /// Frames queued for one peer before `send` drops.
    pub max_queued_frames_per_peer: usize,
    /// Bytes queued for one peer before `send` drops (one frame is always accepted
    /// into an empty queue).
    pub max_queued_bytes_per_peer: usize,
    /// Frames received and not yet taken by the shard before more are dropped.
    pub max_inbound_frames: usize,
    /// Bytes of frames received and not yet taken before more are dropped (one frame
    /// is always accepted into an empty queue).
    pub max_inbound_bytes: usize,
    /// Accepted connections open at once; more are closed on arrival.
    pub max_inbound_connections: usize,
    /// A queued frame older than this is dropped instead of sent.
    pub max_frame_age_ms: u64,
    /// Most bytes gathered into one write (a larger frame is written alone).
    pub max_write_batch_bytes: usize,
    /// Wait after the first failed connect; doubles per failure.
    pub connect_backoff_min_ms: u64,
    /// Longest wait between connects.
    pub connect_backoff_max_ms: u64,
    /// Longest a connect may take.
    pub connect_timeout_ms: u64,
    /// Longest a write may block (a peer that stops reading); the connection is then
    /// dropped.
    pub write_timeout_ms: u64,
}

impl PeerConfig {
    /// A configuration with default bounds.
    pub fn new(node_id: u64, listen: SocketAddr) -> Self {
        PeerConfig {
            node_id,
            listen,
            limits: FrameLimits::default(),
            max_queued_frames_per_peer: 4096,
            max_queued_bytes_per_peer: 64 << 20,
            max_inbound_frames: 16 * 1024,
            max_inbound_bytes: 256 << 20,
            max_inbound_connections: 256,
            max_frame_age_ms: 5_000,
            max_write_batch_bytes: 1 << 20,
            connect_backoff_min_ms: 50,
            connect_backoff_max_ms: 1_000,
            connect_timeout_ms: 1_000,
            write_timeout_ms: 5_000,
        }
    }

    fn validate(&self) -> Result<(), PeerError> {
        let checks = [
            (
                self.limits.max_frame_bytes > 0,
                "limits.max_frame_bytes must be positive",
            ),
            (
                self.max_queued_frames_per_peer > 0,
                "max_queued_frames_per_peer must be positive",
            ),
            (
                self.max_queued_bytes_per_peer > 0,
                "max_queued_bytes_per_peer must be positive",
            ),
            (self.max_inbound_frames > 0, "max_inbound_frames must be positive"),
            (self.max_inbound_bytes > 0, "max_inbound_bytes must be positive"),
            (
                self.max_inbound_connections > 0,
                "max_inbound_connections must be positive",
            ),
            (
                self.max_write_batch_bytes > 0,
                "max_write_batch_bytes must be positive",
            ),
            (
                self.connect_backoff_min_ms > 0,
                "connect_backoff_min_ms must be positive",
            ),
            (
                self.connect_backoff_min_ms <= self.connect_backoff_max_ms,
                "connect_backoff_min_ms must not exceed connect_backoff_max_ms",
            ),
            (self.connect_timeout_ms > 0, "connect_timeout_ms must be positive"),
            (self.write_timeout_ms > 0, "write_timeout_ms must be positive"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(PeerError::Config(message)),
            None => Ok(()),
        }
    }
}

/// Why the transport cannot start or take a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// A configuration value is out of range.
    #[error("peer transport: {0}")]
    Config(&'static str),
    /// The listener cannot be bound or set up.
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A thread cannot be started.
    #[error("cannot start thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The node is this broker itself.
    #[error("node {0} is this broker, not a peer")]
    SelfPeer(u64),
}

/// Why [`PeerNet::send`] dropped a frame (each is counted in [`PeerStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No peer with this node id ([`PeerNet::set_peer`] first).
    #[error("unknown peer")]
    UnknownPeer,
    /// The peer's queue is full (it is slow or unreachable).
    #[error("peer queue full")]
    QueueFull,
    /// The frame is larger than [`FrameLimits::max_frame_bytes`]; the peer would refuse it.
    #[error("frame of {frame_bytes} bytes exceeds the limit of {max_bytes}")]
    TooLarge {
        /// The frame's size.
        frame_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
}

/// Counters and gauges of a [`PeerNet`] since it started, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Frames written to peers.
    pub frames_sent: u64,
    /// Bytes written to peers.
    pub bytes_sent: u64,
    /// Valid frames addressed to this node read from peers (including those then
    /// dropped because the inbound queue was full).
    pub frames_received: u64,
    /// Bytes read from peer connections.
    pub bytes_received: u64,
    /// Frames refused by `send`: the peer's queue was full.
    pub frames_dropped_queue_full: u64,
    /// Frames refused by `send`: no such peer.
    pub frames_dropped_unknown_peer: u64,
    /// Frames refused by `send`: larger than the frame limit.
    pub frames_dropped_too_large: u64,
    /// Queued frames dropped for waiting longer than `max_frame_age_ms`.
    pub frames_dropped_stale: u64,
    /// Frames in a write that failed (the connection was dropped).
    pub frames_dropped_write_failed: u64,
    /// Queued frames dropped because their peer was removed or the transport stopped.
    pub frames_dropped_closed: u64,
    /// Received frames dropped because the inbound queue was full.
    pub frames_dropped_inbound_full: u64,
    /// Inbound connections closed for a malformed frame.
    pub connections_closed_malformed: u64,
    /// Inbound connections closed for a frame addressed to another node.
    pub connections_closed_wrong_destination: u64,
    /// Inbound connections closed on arrival (too many open).
    pub connections_refused: u64,
    /// Outbound connections established.
    pub connects: u64,
    /// Outbound connects that failed.
    pub connect_failures: u64,
    /// Outbound writes that failed.
    pub write_failures: u64,
    /// Peers with an outbound connection now.
    pub connected_peers: u64,
    /// Inbound connections open now.
    pub inbound_connections: u64,
    /// Frames queued to all peers now.
    pub queued_frames: u64,
    /// Frames received and not yet taken by the shard now.
    pub inbound_queued_frames: u64,
}

/// The running transport. See the module docs.
pub struct PeerNet {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    peers: RwLock<BTreeMap<u64, PeerLink>>,
    /// Writer threads of removed peers, joined at shutdown (finished ones are reaped
    /// whenever peers change, so this stays small).
    retired: Mutex<Vec<JoinHandle<()>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PeerNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerNet")
            .field("node_id", &self.shared.config.node_id)
            .field("local_addr", &self.local_addr)
            .field("peers", &read(&self.peers).keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// State shared by the handle and every thread.
struct Shared {
    config: PeerConfig,
    wake: Wake,
    stop: AtomicBool,
    inbound: Mutex<InboundQueue>,
    /// Open accepted connections: id → (a clone to shut it down, its reader thread).
    readers: Mutex<BTreeMap<u64, (TcpStream, JoinHandle<()>)>>,
    counters: Counters,
}

#[derive(Default)]
struct InboundQueue {
    frames: VecDeque<(Frame, usize)>,
    bytes: usize,
}

/// One peer's outbound side, shared by the handle and its writer thread.
struct Outbound {
    node: u64,
    state: Mutex<OutState>,
    /// Signalled on: queue empty → not empty, address change, close.
    changed: Condvar,
}

struct OutState {
    addr: SocketAddr,
    /// Bumped on every address change; the writer reconnects when it differs from its
    /// connection's.
    addr_version: u64,
    closed: bool,
    frames: VecDeque<Queued>,
    bytes: usize,
    /// A clone of the live connection, so it can be shut down from outside the writer.
    stream: Option<TcpStream>,
}

struct Queued {
    frame: Bytes,
    queued_at: Instant,
}

struct PeerLink {
    out: Arc<Outbound>,
    writer: JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_received: AtomicU64,
    frames_dropped_queue_full: AtomicU64,
    frames_dropped_unknown_peer: AtomicU64,
    frames_dropped_too_large: AtomicU64,
    frames_dropped_stale: AtomicU64,
    frames_dropped_write_failed: AtomicU64,
    frames_dropped_closed: AtomicU64,
    frames_dropped_inbound_full: AtomicU64,
    connections_closed_malformed: AtomicU64,
    connections_closed_wrong_destination: AtomicU64,
    connections_refused: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    write_failures: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Locks, ignoring poisoning: every critical section leaves its state consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, PeerError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(body)
        .map_err(|source| PeerError::Spawn { name, source })
}

impl PeerNet {
    /// Binds the RPC listener and starts the acceptor. `wake` is called (from transport
    /// threads) whenever inbound frames were queued.
    pub fn start(config: PeerConfig, wake: Wake) -> Result<PeerNet, PeerError> {
        config.validate()?;
        let listen_error = |source| PeerError::Listen {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let shared = Arc::new(Shared {
            config,
            wake,
            stop: AtomicBool::new(false),
            inbound: Mutex::new(InboundQueue::default()),
            readers: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
        });
        let acceptor_shared = shared.clone();
        let acceptor = spawn("oxbow-peer-accept".to_string(), move || {
            run_acceptor(&listener, &acceptor_shared)
        })?;
        tracing::info!(node = shared.config.node_id, addr = %local_addr, "peer: listening");
        Ok(PeerNet {
            shared,
            local_addr,
            peers: RwLock::new(BTreeMap::new()),
            retired: Mutex::new(Vec::new()),
            acceptor: Some(acceptor),
        })
    }

    /// The address the RPC listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This broker's node id.
    pub fn node_id(&self) -> u64 {
        self.shared.config.node_id
    }

    /// Adds peer `node` at `addr`, or changes its address (its connection is then
    /// remade; frames queued stay queued). Idempotent. Starts the peer's writer thread
    /// the first time; it connects when there is something to send.
    pub fn set_peer(&self, node: u64, addr: SocketAddr) -> Result<(), PeerError> {
        if node == self.shared.config.node_id {
            return Err(PeerError::SelfPeer(node));
        }
        let mut peers = write(&self.peers);
        if let Some(link) = peers.get(&node) {
            let mut state = lock(&link.out.state);
            if state.addr != addr {
                tracing::info!(peer = node, from = %state.addr, to = %addr, "peer: address changed");
                state.addr = addr;
                state.addr_version += 1;
                if let Some(stream) = &state.stream {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                link.out.changed.notify_all();
            }
            return Ok(());
        }
        let out = Arc::new(Outbound {
            node,
            state: Mutex::new(OutState {
                addr,
                addr_version: 0,
                closed: false,
                frames: VecDeque::new(),
                bytes: 0,
                stream: None,
            }),
            changed: Condvar::new(),
        });
        let (writer_out, shared) = (out.clone(), self.shared.clone());
        let writer = spawn(format!("oxbow-peer-out-{node}"), move || {
            run_writer(&writer_out, &shared)
        })?;
        peers.insert(node, PeerLink { out, writer });
        drop(peers);
        self.reap_retired();
        Ok(())
    }

    /// Forgets peer `node`: its queued frames are dropped, its connection closed, its
    /// writer stops. Unknown nodes are ignored.
    pub fn remove_peer(&self, node: u64) {
        let Some(link) = write(&self.peers).remove(&node) else {
            return;
        };
        close(&link.out);
        lock(&self.retired).push(link.writer);
        self.reap_retired();
    }

    /// Queues one encoded frame (from `encode_frame`) for peer `node`. Never blocks: a
    /// full queue first sheds frames older than `max_frame_age_ms`, then refuses.
    pub fn send(&self, node: u64, frame: Bytes) -> Result<(), SendError> {
        let counters = &self.shared.counters;
        let peers = read(&self.peers);
        let Some(link) = peers.get(&node) else {
            add(&counters.frames_dropped_unknown_peer, 1);
            return Err(SendError::UnknownPeer);
        };
        let max_bytes = self.shared.config.limits.max_frame_bytes;
        if frame.len() > max_bytes {
            add(&counters.frames_dropped_too_large, 1);
            return Err(SendError::TooLarge {
                frame_bytes: frame.len(),
                max_bytes,
            });
        }
        let config = &self.shared.config;
        let mut state = lock(&link.out.state);
        let full = |s: &OutState| {
            s.frames.len() >= config.max_queued_frames_per_peer
                || (!s.frames.is_empty() && s.bytes + frame.len() > config.max_queued_bytes_per_peer)
        };
        let now = Instant::now();
        if full(&state) {
            drop_stale(&mut state, now, config, counters);
        }
        if full(&state) {
            add(&counters.frames_dropped_queue_full, 1);
            return Err(SendError::QueueFull);
        }
        let was_empty = state.frames.is_empty();
        state.bytes += frame.len();
        state.frames.push_back(Queued {
            frame,
            queued_at: now,
        });
        drop(state);
        if was_empty {
            link.out.changed.notify_all();
        }
        Ok(())
    }

    /// The next received frame, if any. Never blocks.
    pub fn try_recv(&self) -> Option<Frame> {
        let mut inbound = lock(&self.shared.inbound);
        let (frame, size_bytes) = inbound.frames.pop_front()?;
        inbound.bytes -= size_bytes;
        Some(frame)
    }

    /// Up to `max` received frames, oldest first. Never blocks.
    pub fn drain(&self, max: usize) -> Vec<Frame> {
        let mut guard = lock(&self.shared.inbound);
        let inbound = &mut *guard;
        let n = max.min(inbound.frames.len());
        let mut frames = Vec::with_capacity(n);
        for (frame, size_bytes) in inbound.frames.drain(..n) {
            inbound.bytes -= size_bytes;
            frames.push(frame);
        }
        frames
    }

    /// The transport's counters and gauges.
    pub fn stats(&self) -> PeerStats {
        let c = &self.shared.counters;
        let (mut connected_peers, mut queued_frames) = (0, 0);
        for link in read(&self.peers).values() {
            let state = lock(&link.out.state);
            connected_peers += u64::from(state.stream.is_some());
            queued_frames += state.frames.len() as u64;
        }
        PeerStats {
            frames_sent: get(&c.frames_sent),
            bytes_sent: get(&c.bytes_sent),
            frames_received: get(&c.frames_received),
            bytes_received: get(&c.bytes_received),
            frames_dropped_queue_full: get(&c.frames_dropped_queue_full),
            frames_dropped_unknown_peer: get(&c.frames_dropped_unknown_peer),
            frames_dropped_too_large: get(&c.frames_dropped_too_large),
            frames_dropped_stale: get(&c.frames_dropped_stale),
            frames_dropped_write_failed: get(&c.frames_dropped_write_failed),
            frames_dropped_closed: get(&c.frames_dropped_closed),
            frames_dropped_inbound_full: get(&c.frames_dropped_inbound_full),
            connections_closed_malformed: get(&c.connections_closed_malformed),
            connections_closed_wrong_destination: get(&c.connections_closed_wrong_destination),
            connections_refused: get(&c.connections_refused),
            connects: get(&c.connects),
            connect_failures: get(&c.connect_failures),
            write_failures: get(&c.write_failures),
            connected_peers,
            inbound_connections: lock(&self.shared.readers).len() as u64,
            queued_frames,
            inbound_queued_frames: lock(&self.shared.inbound).frames.len() as u64,
        }
    }

    /// Stops every thread and closes every connection; waits for the threads (at most
    /// about one connect timeout). Frames still queued are dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let peers = std::mem::take(&mut *write(&self.peers));
        for link in peers.values() {
            close(&link.out);
        }
        for link in peers.into_values() {
            let _ = link.writer.join();
        }
        for writer in std::mem::take(&mut *lock(&self.retired)) {
            let _ = writer.join();
        }
        // The acceptor is gone, so no reader is added after this.
        let readers = std::mem::take(&mut *lock(&self.shared.readers));
        for (stream, _) in readers.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, reader) in readers.into_values() {
            let _ = reader.join();
        }
    }

    fn reap_retired(&self) {
        let mut retired = lock(&self.retired);
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *retired)
            .into_iter()
            .partition(|h| h.is_finished());
        *retired = running;
        drop(retired);
        for handle in done {
            let _ = handle.join();
        }
    }
}

impl Drop for PeerNet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Tells a writer to stop and unblocks it wherever it waits.
fn close(out: &Outbound) {
    let mut state = lock(&out.state);
    state.closed = true;
    if let Some(stream) = &state.stream {
        let _ = stream.shutdown(Shutdown::Both);
    }
    out.changed.notify_all();
}

/// Drops frames at the front of the queue older than `max_frame_age_ms`.
fn drop_stale(state: &mut OutState, now: Instant, config: &PeerConfig, counters: &Counters) {
    let max_age = Duration::from_millis(config.max_frame_age_ms);
    let mut dropped = 0;
    while let Some(front) = state.frames.front() {
        if now.saturating_duration_since(front.queued_at) <= max_age {
            break;
        }
        state.bytes -= front.frame.len();
        state.frames.pop_front();
        dropped += 1;
    }
    add(&counters.frames_dropped_stale, dropped);
}

// ---- inbound ---------------------------------------------------------------------

fn run_acceptor(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut next_conn_id = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                next_conn_id += 1;
                admit(stream, peer, next_conn_id, shared);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(error) => {
                tracing::warn!(%error, "peer: accept failed");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// Starts a reader for an accepted connection, unless too many are open.
fn admit(stream: TcpStream, peer: SocketAddr, conn_id: u64, shared: &Arc<Shared>) {
    let mut readers = lock(&shared.readers);
    if readers.len() >= shared.config.max_inbound_connections {
        add(&shared.counters.connections_refused, 1);
        tracing::warn!(%peer, open = readers.len(), "peer: too many inbound connections; closing the new one");
        return;
    }
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| set_keepalive(&stream))
        .and_then(|()| stream.try_clone());
    let clone = match setup {
        Ok(clone) => clone,
        Err(error) => {
            tracing::warn!(%peer, %error, "peer: cannot set up inbound connection");
            return;
        }
    };
    let reader_shared = shared.clone();
    // The lock is held while spawning, so the reader's own removal waits for the insert.
    match spawn(format!("oxbow-peer-in-{conn_id}"), move || {
        run_reader(stream, peer, conn_id, &reader_shared)
    }) {
        Ok(handle) => {
            readers.insert(conn_id, (clone, handle));
            tracing::debug!(%peer, conn_id, "peer: inbound connection");
        }
        Err(error) => tracing::warn!(%peer, %error, "peer: cannot start reader"),
    }
}

/// Why a reader stopped reading.
#[derive(Debug, thiserror::Error)]
enum ReadEnd {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameError),
    #[error("frame from node {from} addressed to node {to}, not this node")]
    WrongDestination { from: u64, to: u64 },
}

fn run_reader(mut stream: TcpStream, peer: SocketAddr, conn_id: u64, shared: &Shared) {
    let end = read_frames(&mut stream, shared);
    let stopping = shared.stop.load(Ordering::SeqCst);
    match end {
        Ok(()) => tracing::debug!(%peer, conn_id, "peer: inbound connection closed by the peer"),
        Err(ReadEnd::Io(error)) if stopping => tracing::debug!(%peer, %error, "peer: reader stopped"),
        Err(ReadEnd::Io(error)) => tracing::debug!(%peer, %error, "peer: inbound connection failed"),
        Err(error) => {
            let counter = match error {
                ReadEnd::WrongDestination { .. } => &shared.counters.connections_closed_wrong_destination,
                _ => &shared.counters.connections_closed_malformed,
            };
            add(counter, 1);
            tracing::warn!(node = shared.config.node_id, %peer, %error, "peer: closing inbound connection");
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    lock(&shared.readers).remove(&conn_id);
}

/// Reads and queues frames until the peer closes the connection (`Ok`) or it fails.
fn read_frames(stream: &mut TcpStream, shared: &Shared) -> Result<(), ReadEnd> {
    let limits = shared.config.limits;
    let mut decoder = FrameDecoder::new(limits);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        // Never read more than the decoder takes: a whole frame always fits its bound.
        let room = decoder.capacity_bytes().min(chunk.len());
        if room == 0 {
            return Err(ReadEnd::Malformed(FrameError::StreamBroken));
        }
        let n = match stream.read(&mut chunk[..room]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        add(&shared.counters.bytes_received, n);
        let taken = decoder.push(&chunk[..n]);
        debug_assert_eq!(taken, n, "read no more than the decoder's capacity");
        let mut queued = false;
        let result = queue_frames(&mut decoder, shared, &mut queued);
        if queued {
            (shared.wake)();
        }
        result?;
    }
}

/// Queues every whole frame the decoder holds.
fn queue_frames(decoder: &mut FrameDecoder, shared: &Shared, queued: &mut bool) -> Result<(), ReadEnd> {
    let max_frame_bytes = shared.config.limits.max_frame_bytes;
    loop {
        let buffered_before = max_frame_bytes - decoder.capacity_bytes();
        let Some(frame) = decoder.next_frame()? else {
            return Ok(());
        };
        let size_bytes = buffered_before - (max_frame_bytes - decoder.capacity_bytes());
        if frame.to != shared.config.node_id {
            return Err(ReadEnd::WrongDestination {
                from: frame.from,
                to: frame.to,
            });
        }
        add(&shared.counters.frames_received, 1);
        let config = &shared.config;
        let mut inbound = lock(&shared.inbound);
        let full = inbound.frames.len() >= config.max_inbound_frames
            || (!inbound.frames.is_empty() && inbound.bytes + size_bytes > config.max_inbound_bytes);
        if full {
            add(&shared.counters.frames_dropped_inbound_full, 1);
        } else {
            inbound.bytes += size_bytes;
            inbound.frames.push_back((frame, size_bytes));
        }
        *queued = true;
    }
}

// ---- outbound --------------------------------------------------------------------

/// What the writer waits for next.
enum Next {
    /// Frames are queued for this address (version).
    Send { addr: SocketAddr, addr_version: u64 },
    /// The peer was removed or the transport stops.
    Stop,
}

fn run_writer(out: &Outbound, shared: &Shared) {
    let backoff_min = Duration::from_millis(shared.config.connect_backoff_min_ms);
    let mut writer = Writer {
        out,
        shared,
        conn: None,
        backoff: backoff_min,
        failing: false,
        last_write: Instant::now(),
        batch: Vec::new(),
    };
    while let Next::Send { addr, addr_version } = wait_for_frames(out, shared) {
        if writer.connected(addr, addr_version) {
            writer.write_batch(addr);
        }
    }
    disconnect(out, &mut writer.conn);
    let mut state = lock(&out.state);
    add(&shared.counters.frames_dropped_closed, state.frames.len());
    state.frames.clear();
    state.bytes = 0;
}

/// A writer thread's connection state.
struct Writer<'a> {
    out: &'a Outbound,
    shared: &'a Shared,
    /// The connection and the address version it was made for.
    conn: Option<(TcpStream, u64)>,
    /// Wait after the next failed connect.
    backoff: Duration,
    /// The last connect failed (log the next failure quietly, the recovery loudly).
    failing: bool,
    last_write: Instant,
    /// Reused buffer of the frames of one write.
    batch: Vec<u8>,
}

impl Writer<'_> {
    /// Makes sure there is a live connection to `addr`; false after a failed connect
    /// (and its backoff).
    fn connected(&mut self, addr: SocketAddr, addr_version: u64) -> bool {
        let (out, config, counters) = (self.out, &self.shared.config, &self.shared.counters);
        if let Some((stream, version)) = &self.conn {
            if *version != addr_version || (self.last_write.elapsed() >= IDLE_CHECK && peer_closed(stream)) {
                disconnect(out, &mut self.conn);
            }
        }
        if self.conn.is_some() {
            return true;
        }
        match connect(addr, config) {
            Ok((stream, clone)) => {
                add(&counters.connects, 1);
                if self.failing {
                    tracing::info!(peer = out.node, %addr, "peer: connected");
                } else {
                    tracing::debug!(peer = out.node, %addr, "peer: connected");
                }
                self.failing = false;
                self.backoff = Duration::from_millis(config.connect_backoff_min_ms);
                let mut state = lock(&out.state);
                if state.closed || state.addr_version != addr_version {
                    // Closed or moved while connecting: start over (or stop).
                    let _ = stream.shutdown(Shutdown::Both);
                    return false;
                }
                state.stream = Some(clone);
                drop(state);
                self.conn = Some((stream, addr_version));
                true
            }
            Err(error) => {
                add(&counters.connect_failures, 1);
                if self.failing {
                    tracing::debug!(peer = out.node, %addr, %error, "peer: connect failed");
                } else {
                    tracing::warn!(peer = out.node, %addr, %error, "peer: connect failed; retrying with backoff");
                }
                self.failing = true;
                self.backoff = if back_off(out, self.shared, self.backoff, addr_version) {
                    Duration::from_millis(config.connect_backoff_min_ms)
                } else {
                    (self.backoff * 2).min(Duration::from_millis(config.connect_backoff_max_ms))
                };
                false
            }
        }
    }

    /// Writes the queued frames (one batch) on the connection; a failed write drops
    /// them and the connection.
    fn write_batch(&mut self, addr: SocketAddr) {
        let (out, config, counters) = (self.out, &self.shared.config, &self.shared.counters);
        let Some((stream, _)) = &mut self.conn else {
            return;
        };
        self.batch.clear();
        if self.batch.capacity() > config.max_write_batch_bytes {
            self.batch = Vec::new();
        }
        let frames = take_batch(out, config, counters, &mut self.batch);
        if frames == 0 {
            return;
        }
        match stream.write_all(&self.batch) {
            Ok(()) => {
                add(&counters.frames_sent, frames);
                add(&counters.bytes_sent, self.batch.len());
                self.last_write = Instant::now();
            }
            Err(error) => {
                add(&counters.write_failures, 1);
                add(&counters.frames_dropped_write_failed, frames);
                if !self.shared.stop.load(Ordering::SeqCst) {
                    tracing::warn!(peer = out.node, %addr, %error, frames, "peer: write failed; reconnecting");
                }
                disconnect(out, &mut self.conn);
            }
        }
    }
}

/// Waits until frames are queued (dropping stale ones) or the writer must stop.
fn wait_for_frames(out: &Outbound, shared: &Shared) -> Next {
    let mut state = lock(&out.state);
    loop {
        if state.closed || shared.stop.load(Ordering::SeqCst) {
            return Next::Stop;
        }
        drop_stale(&mut state, Instant::now(), &shared.config, &shared.counters);
        if !state.frames.is_empty() {
            return Next::Send {
                addr: state.addr,
                addr_version: state.addr_version,
            };
        }
        state = out.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
    }
}

/// Waits `backoff`, or less if the writer must stop or the address changed (then
/// returns true: retry now).
fn back_off(out: &Outbound, shared: &Shared, backoff: Duration, addr_version: u64) -> bool {
    let deadline = Instant::now() + backoff;
    let mut state = lock(&out.state);
    loop {
        if state.closed || shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        if state.addr_version != addr_version {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        state = out
            .changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Moves queued frames into `batch`, up to `max_write_batch_bytes` (at least one
/// frame); returns how many.
fn take_batch(out: &Outbound, config: &PeerConfig, counters: &Counters, batch: &mut Vec<u8>) -> usize {
    let mut state = lock(&out.state);
    drop_stale(&mut state, Instant::now(), config, counters);
    let mut frames = 0;
    while let Some(front) = state.frames.front() {
        if frames > 0 && batch.len() + front.frame.len() > config.max_write_batch_bytes {
            break;
        }
        batch.extend_from_slice(&front.frame);
        state.bytes -= front.frame.len();
        state.frames.pop_front();
        frames += 1;
    }
    frames
}

fn disconnect(out: &Outbound, conn: &mut Option<(TcpStream, u64)>) {
    if let Some((stream, _)) = conn.take() {
        let _ = stream.shutdown(Shutdown::Both);
        lock(&out.state).stream = None;
    }
}

/// Connects to `addr`: the stream and a clone of it (to shut it down from outside).
fn connect(addr: SocketAddr, config: &PeerConfig) -> io::Result<(TcpStream, TcpStream)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(config.connect_timeout_ms))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_millis(config.write_timeout_ms)))?;
    set_keepalive(&stream)?;
    let clone = stream.try_clone()?;
    Ok((stream, clone))
}

fn set_keepalive(stream: &TcpStream) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Whether the peer has closed an outbound connection (it never writes on it, so
/// readable means end of stream or an error).
fn peer_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PeerConfig {
        PeerConfig::new(1, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    #[test]
    fn peer_config_rejects_bad_bounds() {
        assert!(config().validate().is_ok());
        let mut bad = config();
        bad.max_queued_frames_per_peer = 0;
        assert!(matches!(bad.validate(), Err(PeerError::Config(_))));
        let mut bad = config();
        bad.connect_backoff_min_ms = 2_000;
        assert!(matches!(bad.validate(), Err(PeerError::Config(_))));
    }

    #[test]
    fn peer_stale_frames_drop_from_the_front() {
        let mut cfg = config();
        cfg.max_frame_age_ms = 100;
        let counters = Counters::default();
        let now = Instant::now();
        let old = now.checked_sub(Duration::from_millis(500)).unwrap_or(now);
        let mut state = OutState {
            addr: cfg.listen,
            addr_version: 0,
            closed: false,
            frames: VecDeque::new(),
            bytes: 0,
            stream: None,
        };
        for (queued_at, len) in [(old, 3), (old, 4), (now, 5)] {
            state.frames.push_back(Queued {
                frame: Bytes::from(vec![0u8; len]),
                queued_at,
            });
            state.bytes += len;
        }
        drop_stale(&mut state, now, &cfg, &counters);
        assert_eq!(state.frames.len(), 1);
        assert_eq!(state.bytes, 5);
        assert_eq!(get(&counters.frames_dropped_stale), 2);
    }

    #[test]
    fn peer_send_refuses_unknown_self_and_oversized() {
        let net = PeerNet::start(config(), Arc::new(|| {})).unwrap();
        assert_eq!(net.send(9, Bytes::from_static(b"x")), Err(SendError::UnknownPeer));
        assert!(matches!(
            net.set_peer(1, net.local_addr()),
            Err(PeerError::SelfPeer(1))
        ));
        net.set_peer(2, SocketAddr::from(([127, 0, 0, 1], 9))).unwrap();
        let big = Bytes::from(vec![0u8; config().limits.max_frame_bytes + 1]);
        assert!(matches!(net.send(2, big), Err(SendError::TooLarge { .. })));
        let stats = net.stats();
        assert_eq!(
            (stats.frames_dropped_unknown_peer, stats.frames_dropped_too_large),
            (1, 1)
        );
        net.shutdown();
    }
}
