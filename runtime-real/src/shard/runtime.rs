//! One shard thread: core's [`Broker`] driven by the shard's io_uring reactor, its SMP
//! endpoint, its partitions' storage and its key-value log.
//!
//! # The loop
//!
//! Each turn: network events and SMP messages become broker inputs, control requests
//! (metrics, shutdown) are answered, due timers run; then the broker's effects are
//! executed until it is quiet — sends and closes go to the reactor, disk effects to
//! the partition's [`PartitionStorage`] (run, completions fed back), hard states to
//! the key-value log (one `fdatasync` per turn for all partitions), metadata to its
//! file, messages to other shards onto the SMP queues. Then the reactor waits for a
//! completion, the doorbell, or the broker's next deadline.
//!
//! # Back-pressure
//!
//! * A connection is not read while [`Broker::wants_input`] says no, nor while its
//!   queued output is over the reactor's bound.
//! * Memory: the shard's budget ([`ShardBudget`]) bounds what it holds. Request bytes
//!   pass through the shard's [`Admission`] window (a connection whose next frame does
//!   not fit stops being read until responses free the window), and while the
//!   responses queued on all sockets exceed the budget's send window the shard stops
//!   reading from every connection.
//! * A full SMP queue keeps the message in a per-recipient overflow queue, retried
//!   every turn; while the overflow holds more than [`MAX_SMP_OVERFLOW`] messages the
//!   shard stops reading from every client (the source of new cross-shard work). The
//!   shard always drains its own inboxes, so two shards full towards each other still
//!   make progress.
//! * A full storage queue is run to empty before more effects are submitted.
//!
//! # Disk I/O
//!
//! Segment writes and `fdatasync`s run on the shard's io_uring ([`DiskRing`], on the
//! reactor's ring): each partition's executor ([`PartitionStorage`] in
//! [`IoMode::Submitted`]) stages appends into aligned buffers and hands the transfers and
//! syncs over; their completions come back with the network's, and the executor reports
//! a sync durable only once an `fdatasync` submitted after its writes completed has
//! finished (group commit). While one partition's flush is in flight its new appends
//! are written, and every partition of the shard can have a flush in flight at once.
//! Creating, truncating and deleting segments, checkpoints, indexes, reads for fetches,
//! the key-value log and the metadata file still use blocking calls on the shard thread
//! (rare, or small). Where the kernel lacks io_uring's write or fsync operation, or
//! `node.sync_disk_io` is set, writes and syncs run with blocking calls too
//! ([`IoMode::Inline`]), as the start-up log says.

use super::budget::{Admission, AdmissionStats, ShardBudget};
use super::disk_ring::{DiskRing, Finished, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_READ_BYTES};
use super::fetch_reads::FetchReads;
use super::file_worker::FileWorker;
use super::frame_pool::FramePool;
use super::hard_states::HardStateQueue;
use super::kv::{decode_hard_state, KvConfig, KvLog};
use super::net::{NetConfig, NetEvent, NetStats, Reactor};
use super::smp::{EventFd, SmpEndpoint};
use super::store::StoreOp;
use crate::clock::MonotonicClock;
use crate::node::PartitionDir;
use crate::storage::aligned::{BufferPool, PoolConfig};
use crate::storage::disk_log::recover_partition;
use crate::storage::executor::{IoMode, PartitionStorage, StorageConfig, StorageStats};
use crate::storage::latency_histogram::LatencyHistogram;
use crate::storage::vfs::RealVfs;
use bytes::Bytes;
use oxbow_core::broker::io::StoreOwner;
use oxbow_core::broker::{
    Broker, BrokerEffect, BrokerInput, BrokerMetrics, BrokerSetup, ConnectionId, PartitionKey,
    RecoveredPartition, ShardId, ShardMessage,
};
use oxbow_core::log::{DiskError, FileRange, LogConfig, LogEffect};
use oxbow_core::partition::{ReadToken, ReplicaEffect, ReplicaInput};
use oxbow_core::raft::{HardState, RaftConfig};
use oxbow_core::tier::{ObjectBody, StoreCompletion, StoreError, TierEffect};
use oxbow_core::time::Instant;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

/// Messages held back by full SMP queues above which the shard stops reading clients.
pub const MAX_SMP_OVERFLOW: usize = 4096;
/// Most SMP messages taken from the inboxes per turn (the rest wait for the next turn).
const MAX_SMP_PER_TURN: usize = 4096;
/// How long a stopping shard waits for its disk operations in flight.
const SHUTDOWN_DISK_WAIT: Duration = Duration::from_secs(10);
/// Most rounds of effects executed per turn before the network is looked at again.
const MAX_EFFECT_ROUNDS: usize = 64;
/// How long a shard waits before retrying a failed key-value log flush (a full or
/// failing disk: retrying at once would spin the shard and flood the log).
const KV_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Name of the node metadata file under `<data>/oxbow`.
pub const METADATA_FILE_NAME: &str = "metadata";

/// Everything a shard thread starts from.
#[derive(Debug)]
pub struct ShardSpec {
    /// This shard.
    pub shard: u32,
    /// Shards on the node.
    pub shard_count: u32,
    /// The core to pin to, if any.
    pub core: Option<usize>,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// Broker id.
    pub node_id: i32,
    /// Host clients are told to connect to.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// Log defaults.
    pub log_defaults: LogConfig,
    /// Raft settings.
    pub raft: RaftConfig,
    /// Largest request frame.
    pub max_frame_bytes: u32,
    /// Metadata file contents (shard 0 only).
    pub metadata: Option<Bytes>,
    /// Partition directories this shard owns.
    pub partitions: Vec<PartitionDir>,
    /// Reactor limits.
    pub net: NetConfig,
    /// Buffer pool.
    pub pool: PoolConfig,
    /// The shard's memory budget (its `pool` and `max_connections` are used in place
    /// of `pool` and `net.max_connections`).
    pub budget: ShardBudget,
    /// Lock the pre-allocated memory (`mlock`) where permitted.
    pub lock_memory: bool,
    /// Per-partition executor limits.
    pub storage: StorageConfig,
    /// Run segment writes and `fdatasync`s with blocking calls on the shard thread
    /// instead of on its io_uring.
    pub sync_disk_io: bool,
    /// Key-value log limits.
    pub kv: KvConfig,
    /// The node's clock (one origin for every shard).
    pub clock: MonotonicClock,
    /// Wall-clock milliseconds at the clock's origin.
    pub wall_clock_origin_ms: i64,
    /// Consumer-group coordinator settings.
    pub group: oxbow_core::group::GroupConfig,
    /// Tiered-storage settings.
    pub tier: oxbow_core::broker::partitions::TierSettings,
    /// Transaction coordinator and producer-state settings (`[txn]`).
    pub txn: oxbow_core::txn::TxnSettings,
    /// This shard's handle on the node's object store (`None`: tiered storage off).
    pub store: Option<super::store::StoreClient>,
    /// Cluster mode: the transport, the controller (shard 0) and its storage.
    pub cluster: Option<super::cluster_link::ShardCluster>,
}

/// Disk counters of a shard.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DiskCounters {
    /// Bytes appended to segments.
    pub written_bytes: u64,
    /// Appends to segments (one or several batches written together).
    pub appends: u64,
    /// Aligned segment writes the appends took.
    pub transfers: u64,
    /// Log syncs reported durable (each answered by an `fdatasync`, which may answer
    /// several).
    pub syncs_completed: u64,
    /// `fdatasync`s of segment files.
    pub fdatasyncs: u64,
    /// Their latency, from the start of their round to their completion.
    pub fdatasync_latency: LatencyHistogram,
    /// Directory fsyncs.
    pub dir_syncs: u64,
    /// Failed disk effects.
    pub failures: u64,
    /// Key-value log flushes (each one `fdatasync`).
    pub kv_flushes: u64,
    /// Key-value log flush failures.
    pub kv_failures: u64,
    /// Metadata files written.
    pub metadata_writes: u64,
}

/// A shard's counters, sent to the admin server on request.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    /// The shard.
    pub shard: u32,
    /// The broker's counters.
    pub broker: BrokerMetrics,
    /// The shard's group coordinators' counters, summed.
    pub groups: oxbow_core::group::GroupMetrics,
    /// The shard's transaction counters (coordinators and producer state).
    pub txns: oxbow_core::txn::TxnShardMetrics,
    /// Network counters.
    pub net: NetStats,
    /// Disk counters.
    pub disk: DiskCounters,
    /// Raft messages dropped (no peers on a single node).
    pub raft_messages_dropped: u64,
    /// The Raft counters of the shard's partitions, summed.
    pub raft: oxbow_core::raft::RaftTotals,
    /// SMP messages sent.
    pub smp_sent: u64,
    /// SMP messages held back by a full queue (now).
    pub smp_overflow: u64,
    /// The memory budget's request window.
    pub admission: AdmissionStats,
    /// Response bytes queued on sockets (now).
    pub queued_send_bytes: u64,
    /// Times reading stopped because queued responses exceeded the send window.
    pub send_window_pauses: u64,
    /// Tiered storage: archivers, uploads, remote reads.
    pub tier: oxbow_core::broker::partitions::TierStats,
    /// Object-store operations of the node (ok, errors, timeouts, throttled, queue
    /// full, bytes put, bytes got) — the same node-wide values on every shard.
    pub store: [u64; 7],
    /// Local segment reads for uploads that failed.
    pub store_local_read_failures: u64,
    /// Cluster mode: transport and controller counters (zero on a single node).
    pub cluster: ClusterMetrics,
}

/// A shard's cluster counters; node-wide ones (the transport, the controller) are
/// reported by shard 0 only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// Frames this shard handed to the transport.
    pub frames_sent: u64,
    /// Frames the transport refused from this shard.
    pub frames_dropped: u64,
    /// Raft messages core dropped (too large, outbox full).
    pub raft_messages_dropped: u64,
    /// Partitions this shard leads.
    pub partitions_led: u64,
    /// Shard 0: frames received from peers.
    pub frames_received: u64,
    /// Shard 0: failed connects to peers.
    pub connect_failures: u64,
    /// Shard 0: peers connected now.
    pub connected_peers: u64,
    /// Shard 0: 1 while this broker leads the controller group.
    pub controller_leader: u64,
    /// Shard 0: controller storage failures.
    pub controller_store_errors: u64,
}

/// What a shard reports once it serves: where it runs and the memory it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardReady {
    /// The shard.
    pub shard: u32,
    /// The core it is pinned to (`None`: not pinned).
    pub core: Option<usize>,
    /// Its memory budget.
    pub budget: ShardBudget,
    /// Bytes allocated at start-up (the direct-I/O pool).
    pub preallocated_bytes: u64,
    /// `Ok` if the pre-allocated memory is locked, else why not.
    pub locked: Result<(), String>,
}

/// A request from outside the shard (admin server, node).
#[derive(Debug)]
pub enum Control {
    /// Send a [`ShardSnapshot`] (the reply channel is bounded; a full one is skipped).
    Metrics(SyncSender<ShardSnapshot>),
    /// Stop: close the broker and storage cleanly and return.
    Shutdown,
}

/// Why a shard failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// Start-up failed.
    #[error("shard {shard}: {message}")]
    Start {
        /// The shard.
        shard: u32,
        /// What failed.
        message: String,
    },
    /// The event loop failed.
    #[error("shard {shard}: io_uring: {source}")]
    Ring {
        /// The shard.
        shard: u32,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a shard reports when it stops.
#[derive(Debug, Default)]
pub struct ShardExit {
    /// Partitions whose storage did not close cleanly, with why.
    pub close_failures: Vec<(String, String)>,
}

/// The shard's partitions' storage, keyed by partition.
type Storages = BTreeMap<PartitionKey, PartitionStorage<RealVfs>>;

struct Shard {
    id: u32,
    data_dir: PathBuf,
    clock: MonotonicClock,
    broker: Broker,
    reactor: Reactor,
    smp: SmpEndpoint<ShardMessage>,
    doorbell: Arc<EventFd>,
    control: Receiver<Control>,
    pool: BufferPool,
    storage_config: StorageConfig,
    storages: Storages,
    /// Each storage's owner id on the disk ring, and back.
    storage_owners: BTreeMap<u64, PartitionKey>,
    owner_ids: BTreeMap<PartitionKey, u64>,
    next_owner: u64,
    /// Writes and syncs on the ring (`None`: blocking calls, [`IoMode::Inline`]).
    disk_ring: Option<DiskRing>,
    /// Checkpoint, state-file and index writes off the shard thread; present exactly
    /// when `disk_ring` is (storages are then in `IoMode::Submitted`).
    files: Option<FileWorker>,
    /// The broker's range reads on the ring, until each request is answered.
    fetch_reads: FetchReads,
    /// Partitions whose storage has queued effects or completions.
    storage_dirty: BTreeSet<PartitionKey>,
    /// Partitions whose storage waits for an aligned buffer (run again on the next
    /// disk completion).
    buffer_waiters: BTreeSet<PartitionKey>,
    /// Counters of storages already closed or removed.
    retired: StorageStats,
    kv: KvLog,
    /// Hard states buffered in the kv log (reported durable after its flush) or
    /// waiting for room in its buffer.
    hard_states: HardStateQueue,
    /// After a failed kv log flush: not retried before this time.
    kv_retry_at: Option<Instant>,
    /// Failed kv log flushes in a row (the first and the recovery are logged).
    kv_failures_in_a_row: u64,
    overflow: Vec<VecDeque<ShardMessage>>,
    overflow_len: usize,
    paused: BTreeSet<ConnectionId>,
    admission: Admission,
    /// Bytes admitted for connections that waited, not yet handed to the broker.
    admitted: VecDeque<(ConnectionId, Bytes)>,
    send_window_bytes: usize,
    /// Reading stopped for every connection: SMP overflow, send window.
    smp_paused: bool,
    send_paused: bool,
    send_window_pauses: u64,
    inputs: VecDeque<BrokerInput>,
    disk: DiskCounters,
    raft_messages_dropped: u64,
    smp_sent: u64,
    stopping: bool,
    /// The last turn stopped at the effect-round limit with work left.
    more_effects: bool,
    /// The node's object store (tiered storage).
    store: Option<super::store::StoreClient>,
    store_local_read_failures: u64,
    /// Cluster mode: peer frames and the controller's storage.
    cluster: Option<super::cluster_link::ClusterLink>,
}

/// Runs one shard on the calling thread until a [`Control::Shutdown`]. Reports on
/// `ready` once it serves (or why it could not start).
pub fn run_shard(
    spec: ShardSpec,
    listener: TcpListener,
    smp: SmpEndpoint<ShardMessage>,
    control: Receiver<Control>,
    ready: SyncSender<Result<ShardReady, String>>,
) -> Result<ShardExit, ShardError> {
    let id = spec.shard;
    let start_error = |message: String| ShardError::Start { shard: id, message };
    let shard = match Shard::start(spec, listener, smp, control) {
        Ok((shard, info)) => {
            let _ = ready.send(Ok(info));
            shard
        }
        Err(message) => {
            let _ = ready.send(Err(message.clone()));
            return Err(start_error(message));
        }
    };
    shard.run()
}

impl Shard {
    fn start(
        spec: ShardSpec,
        listener: TcpListener,
        smp: SmpEndpoint<ShardMessage>,
        control: Receiver<Control>,
    ) -> Result<(Shard, ShardReady), String> {
        let mut core = spec.core;
        if let Some(c) = spec.core {
            if let Err(error) = super::affinity::pin_current_thread(c) {
                tracing::warn!(shard = spec.shard, core = c, %error, "cannot pin shard thread; running unpinned");
                core = None;
            }
        }
        let budget = spec.budget;
        let pool = BufferPool::new(budget.pool).map_err(|e| format!("buffer pool: {e}"))?;
        let locked = if spec.lock_memory {
            pool.lock().map_err(|e| format!("mlock: {e}"))
        } else {
            Err("node.lock_memory is off".to_string())
        };
        if let Err(reason) = &locked {
            tracing::warn!(shard = spec.shard, %reason, "shard memory not locked (raise `ulimit -l` or grant CAP_IPC_LOCK)");
        }
        let ready = ShardReady {
            shard: spec.shard,
            core,
            budget,
            preallocated_bytes: pool.total_bytes() as u64,
            locked,
        };
        let (kv, kv_recovery) =
            KvLog::open(&spec.data_dir.join("oxbow"), spec.shard, spec.kv).map_err(|e| e.to_string())?;
        if kv_recovery.torn_bytes > 0 {
            tracing::warn!(
                shard = spec.shard,
                torn_bytes = kv_recovery.torn_bytes,
                "kv log: torn tail cut"
            );
        }
        let mut storages = Storages::new();
        let mut recovered = Vec::new();
        for dir in &spec.partitions {
            let key = PartitionKey {
                topic: dir.topic.clone(),
                partition: dir.partition,
                revision: dir.revision,
            };
            let path = spec.data_dir.join(key.dir());
            match recover_partition(
                RealVfs::direct(),
                &path,
                spec.log_defaults.clone(),
                pool.clone(),
                spec.storage,
            ) {
                Ok((log, storage, report)) => {
                    tracing::info!(
                        shard = spec.shard,
                        partition = %path.display(),
                        segments = report.segments,
                        torn_tails = report.torn_tails.len(),
                        "partition recovered"
                    );
                    let hard_state = kv
                        .get(&key.dir())
                        .and_then(|bytes| decode_hard_state(bytes))
                        .unwrap_or_default();
                    storages.insert(key.clone(), storage);
                    recovered.push(RecoveredPartition { key, log, hard_state });
                }
                Err(error) => {
                    tracing::error!(partition = %path.display(), %error, "partition NOT SERVED: recovery failed");
                }
            }
        }
        let now = spec.clock.now();
        let storage_dirty = storages.keys().cloned().collect();
        let (cluster_setup, cluster) = match spec.cluster {
            Some(c) => (
                Some(c.setup),
                Some(super::cluster_link::ClusterLink::new(c.peer, c.controller_store)),
            ),
            None => (None, None),
        };
        let broker = Broker::new(
            BrokerSetup {
                node_id: spec.node_id,
                shard: ShardId(spec.shard),
                shard_count: spec.shard_count,
                advertised_host: spec.advertised_host,
                advertised_port: spec.advertised_port,
                log_defaults: spec.log_defaults,
                raft: spec.raft,
                metadata: spec.metadata,
                partitions: recovered,
                wall_clock_origin_ms: spec.wall_clock_origin_ms,
                max_frame_bytes: spec.max_frame_bytes,
                group: spec.group,
                tier: spec.tier,
                txn: spec.txn,
                cluster: cluster_setup,
            },
            now,
        )
        .map_err(|e| format!("broker: {e}"))?;
        let doorbell = smp.doorbell().clone();
        let net = NetConfig {
            max_connections: budget.max_connections,
            ..spec.net
        };
        let reactor = Reactor::new(listener, doorbell.clone(), net).map_err(|e| format!("io_uring: {e}"))?;
        let disk_ring = if spec.sync_disk_io {
            tracing::info!(
                shard = spec.shard,
                "disk I/O: blocking writes and fdatasyncs on the shard thread (node.sync_disk_io)"
            );
            None
        } else if !reactor.supports(&[
            io_uring::opcode::Write::CODE,
            io_uring::opcode::Fsync::CODE,
            io_uring::opcode::Read::CODE,
        ]) {
            tracing::warn!(
                shard = spec.shard,
                "disk I/O: this kernel's io_uring lacks write, fsync or read; blocking calls on the shard thread instead"
            );
            None
        } else {
            tracing::info!(
                shard = spec.shard,
                "disk I/O: writes, fdatasyncs and fetch reads on the shard's io_uring"
            );
            Some(DiskRing::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_READ_BYTES))
        };
        let files = match disk_ring {
            Some(_) => Some(
                FileWorker::start(spec.shard, RealVfs::direct(), doorbell.clone())
                    .map_err(|e| format!("file worker thread: {e}"))?,
            ),
            None => None,
        };
        let io_mode = if disk_ring.is_some() {
            IoMode::Submitted
        } else {
            IoMode::Inline
        };
        for storage in storages.values_mut() {
            storage.set_io_mode(io_mode);
        }
        let owner_ids: BTreeMap<PartitionKey, u64> = storages.keys().cloned().zip(0..).collect();
        let storage_owners = owner_ids.iter().map(|(key, id)| (*id, key.clone())).collect();
        let next_owner = owner_ids.len() as u64;
        tracing::info!(
            shard = spec.shard,
            core = ?core,
            budget_bytes = budget.total_bytes,
            preallocated_bytes = ready.preallocated_bytes,
            locked = ready.locked.is_ok(),
            request_window_bytes = budget.request_window_bytes,
            send_window_bytes = budget.send_window_bytes,
            max_connections = budget.max_connections,
            "shard memory"
        );
        let shard_count = smp.shard_count();
        let shard = Shard {
            id: spec.shard,
            data_dir: spec.data_dir,
            clock: spec.clock,
            broker,
            reactor,
            smp,
            doorbell,
            control,
            pool,
            storage_config: spec.storage,
            storages,
            storage_owners,
            owner_ids,
            next_owner,
            disk_ring,
            files,
            fetch_reads: FetchReads::default(),
            storage_dirty,
            buffer_waiters: BTreeSet::new(),
            retired: StorageStats::default(),
            kv,
            hard_states: HardStateQueue::default(),
            kv_retry_at: None,
            kv_failures_in_a_row: 0,
            overflow: (0..shard_count).map(|_| VecDeque::new()).collect(),
            overflow_len: 0,
            paused: BTreeSet::new(),
            admission: Admission::new(budget.request_window_bytes, spec.max_frame_bytes)
                .with_frame_pool(FramePool::new(budget.idle_frame_bytes())),
            admitted: VecDeque::new(),
            send_window_bytes: usize::try_from(budget.send_window_bytes).unwrap_or(usize::MAX),
            smp_paused: false,
            send_paused: false,
            send_window_pauses: 0,
            inputs: VecDeque::new(),
            disk: DiskCounters::default(),
            raft_messages_dropped: 0,
            smp_sent: 0,
            stopping: false,
            more_effects: false,
            store: spec.store,
            store_local_read_failures: 0,
            cluster,
        };
        Ok((shard, ready))
    }

    fn run(mut self) -> Result<ShardExit, ShardError> {
        loop {
            let now = self.clock.now();
            self.take_network(now);
            self.take_disk();
            self.take_smp(now);
            self.take_peer_frames();
            self.take_store();
            self.take_control();
            if self.stopping {
                return Ok(self.shutdown());
            }
            if self.broker.poll_timeout().is_some_and(|at| at <= now) {
                self.broker.handle_timeout(now);
            }
            self.execute_effects();
            self.retry_overflow();
            self.smp.flush_wakeups();
            self.release_when_quiet();
            self.update_send_window();
            self.resume_connections();
            let timeout = self.wait_timeout();
            self.reactor
                .wait(Some(timeout))
                .map_err(|source| ShardError::Ring {
                    shard: self.id,
                    source,
                })?;
        }
    }

    /// How long the reactor may sleep.
    fn wait_timeout(&self) -> Duration {
        if self.more_effects
            || !self.admitted.is_empty()
            || self.reactor.has_events()
            || self.smp.has_incoming()
            || !self.inputs.is_empty()
            || !self.storage_dirty.is_empty()
        {
            return Duration::ZERO;
        }
        if self.overflow_len > 0 {
            return Duration::from_millis(1);
        }
        let now = self.clock.now();
        let kv_retry = self.kv.has_pending().then(|| self.kv_retry_at.unwrap_or(now));
        match self.broker.poll_timeout().into_iter().chain(kv_retry).min() {
            Some(at) if at <= now => Duration::ZERO,
            Some(at) => at.saturating_duration_since(now).min(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        }
    }

    fn take_network(&mut self, now: Instant) {
        while let Some(event) = self.reactor.poll_event() {
            match event {
                NetEvent::Connected(id) => self.broker.handle(
                    now,
                    BrokerInput::Connected {
                        connection: ConnectionId(id),
                    },
                ),
                NetEvent::Received(id, bytes) => {
                    let connection = ConnectionId(id);
                    // Bytes admitted earlier go first (they were received first).
                    self.flush_admitted(now);
                    for bytes in self.admission.receive(id, bytes) {
                        self.broker
                            .handle(now, BrokerInput::Received { connection, bytes });
                    }
                    if (!self.broker.wants_input(connection) || self.admission.is_waiting(id))
                        && self.paused.insert(connection)
                    {
                        self.reactor.set_conn_reading(id, false);
                    }
                }
                NetEvent::Closed(id) => {
                    let connection = ConnectionId(id);
                    self.paused.remove(&connection);
                    self.flush_admitted(now);
                    self.admitted.retain(|(c, _)| *c != connection);
                    let admitted = self.admission.closed(id);
                    self.queue_admitted(admitted);
                    self.broker.handle(now, BrokerInput::Disconnected { connection });
                }
                NetEvent::Doorbell => {
                    self.doorbell.drain();
                }
            }
        }
    }

    fn take_smp(&mut self, now: Instant) {
        let broker = &mut self.broker;
        self.smp.drain(MAX_SMP_PER_TURN, |from, message| {
            broker.handle(
                now,
                BrokerInput::FromShard {
                    from: ShardId(from as u32),
                    message,
                },
            )
        });
    }

    fn cluster_metrics(&self) -> ClusterMetrics {
        let Some(link) = self.cluster.as_ref() else {
            return ClusterMetrics::default();
        };
        let stats = link.stats();
        let core = self.broker.cluster_metrics();
        let mut metrics = ClusterMetrics {
            frames_sent: stats.frames_sent,
            frames_dropped: stats.frames_dropped,
            raft_messages_dropped: core.raft_messages_dropped,
            partitions_led: core.partitions_led,
            controller_leader: u64::from(core.controller_leader),
            ..ClusterMetrics::default()
        };
        if self.id == 0 {
            let peer = link.peer().stats();
            metrics.frames_received = peer.frames_received;
            metrics.connect_failures = peer.connect_failures;
            metrics.connected_peers = peer.connected_peers;
            metrics.controller_store_errors = stats.controller_store_errors;
        }
        metrics
    }

    /// Shard 0 in a cluster: frames from peers.
    fn take_peer_frames(&mut self) {
        if self.id != 0 {
            return;
        }
        if let Some(link) = self.cluster.as_mut() {
            link.take_frames(&mut self.inputs);
        }
    }

    fn take_control(&mut self) {
        loop {
            match self.control.try_recv() {
                Ok(Control::Metrics(reply)) => {
                    let _ = reply.try_send(self.snapshot());
                }
                Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => self.stopping = true,
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    fn snapshot(&self) -> ShardSnapshot {
        let mut disk = self.disk;
        let mut storage = self.retired;
        for s in self.storages.values() {
            add_stats(&mut storage, s.stats());
        }
        disk.written_bytes = storage.written_bytes;
        disk.appends = storage.appends;
        disk.transfers = storage.transfers;
        disk.syncs_completed = storage.syncs_completed;
        disk.fdatasyncs = storage.fdatasyncs;
        disk.fdatasync_latency = storage.fdatasync_latency;
        disk.dir_syncs = storage.dir_syncs;
        disk.failures = storage.failures;
        disk.kv_flushes = self.kv.stats().flushes;
        disk.kv_failures = self.kv.stats().failures;
        ShardSnapshot {
            shard: self.id,
            broker: self.broker.metrics(),
            groups: self.broker.group_metrics(),
            txns: self.broker.txn_metrics(),
            net: self.reactor.stats(),
            disk,
            raft_messages_dropped: self.raft_messages_dropped,
            raft: self.broker.raft_totals(),
            smp_sent: self.smp_sent,
            smp_overflow: self.overflow_len as u64,
            admission: self.admission.stats(),
            queued_send_bytes: self.reactor.total_queued_bytes() as u64,
            send_window_pauses: self.send_window_pauses,
            tier: self.broker.tier_stats(),
            store: self.store.as_ref().map_or([0; 7], |s| {
                let c = s.counters();
                let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                [
                    load(&c.ok),
                    load(&c.errors),
                    load(&c.timeouts),
                    load(&c.throttled),
                    load(&c.queue_full),
                    load(&c.put_bytes),
                    load(&c.get_bytes),
                ]
            }),
            store_local_read_failures: self.store_local_read_failures,
            cluster: self.cluster_metrics(),
        }
    }

    fn resume_connections(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let ready: Vec<ConnectionId> = self
            .paused
            .iter()
            .copied()
            .filter(|c| self.broker.wants_input(*c) && !self.admission.is_waiting(c.0))
            .collect();
        for connection in ready {
            self.paused.remove(&connection);
            self.reactor.set_conn_reading(connection.0, true);
        }
    }

    fn queue_admitted(&mut self, admitted: Vec<(u64, Bytes)>) {
        self.admitted
            .extend(admitted.into_iter().map(|(c, b)| (ConnectionId(c), b)));
    }

    /// Hands bytes the window admitted (of connections that waited) to the broker.
    fn flush_admitted(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while let Some((connection, bytes)) = self.admitted.pop_front() {
            progress = true;
            self.broker
                .handle(now, BrokerInput::Received { connection, bytes });
        }
        progress
    }

    /// With nothing queued anywhere, requests that get no response (`acks=0`
    /// produces) are done: their bytes leave the window.
    fn release_when_quiet(&mut self) {
        let quiet = !self.more_effects
            && self.inputs.is_empty()
            && self.storage_dirty.is_empty()
            && !self.kv.has_pending()
            && self.overflow_len == 0;
        if quiet && self.admission.has_no_response() {
            let admitted = self.admission.quiet();
            self.queue_admitted(admitted);
        }
    }

    /// Stops reading from every connection while queued responses exceed the send
    /// window; resumes below half of it.
    fn update_send_window(&mut self) {
        let queued = self.reactor.total_queued_bytes();
        if !self.send_paused && queued > self.send_window_bytes {
            self.send_paused = true;
            self.send_window_pauses += 1;
        } else if self.send_paused && queued <= self.send_window_bytes / 2 {
            self.send_paused = false;
        }
        self.reactor
            .set_reading_paused(self.smp_paused || self.send_paused);
    }

    /// Executes the broker's effects, runs storage and the kv log, and feeds every
    /// completion back, until the broker is quiet (or a bounded number of rounds).
    fn execute_effects(&mut self) {
        self.more_effects = false;
        for _ in 0..MAX_EFFECT_ROUNDS {
            let mut progress = false;
            while let Some(effect) = self.broker.poll_effect() {
                progress = true;
                self.execute(effect);
            }
            progress |= self.run_storage();
            progress |= self.flush_kv();
            let now = self.clock.now();
            progress |= self.flush_admitted(now);
            while let Some(input) = self.inputs.pop_front() {
                progress = true;
                self.broker.handle(now, input);
            }
            if !progress {
                return;
            }
        }
        // The round limit stopped us with work left: do not sleep before the next turn.
        self.more_effects = true;
    }

    fn execute(&mut self, effect: BrokerEffect) {
        match effect {
            BrokerEffect::Send { connection, frame } => {
                // The first chunk holds the size prefix and the correlation id.
                let head = frame.chunks().first().cloned().unwrap_or_default();
                let admitted = self.admission.sent(connection.0, &head);
                self.queue_admitted(admitted);
                self.reactor.send(connection.0, frame.into_chunks());
            }
            BrokerEffect::Close { connection, reason } => {
                tracing::debug!(shard = self.id, connection = connection.0, %reason, "closing connection");
                self.reactor.close(connection.0);
            }
            BrokerEffect::OpenPartition { key } => self.open_partition(key),
            BrokerEffect::RemovePartition { key } => self.remove_partition(&key),
            BrokerEffect::Partition { key, effect } => self.execute_replica(key, effect),
            BrokerEffect::ReadRanges { key, token, ranges } => self.start_broker_read(&key, token, &ranges),
            BrokerEffect::PersistMetadata { version, data } => {
                let result = write_metadata(&self.data_dir, &data);
                if let Err(error) = &result {
                    tracing::error!(%error, "cannot persist the node metadata");
                } else {
                    self.disk.metadata_writes += 1;
                }
                self.inputs
                    .push_back(BrokerInput::MetadataPersisted { version, result });
            }
            BrokerEffect::ToShard { to, message } => self.send_to_shard(to.0 as usize, message),
            BrokerEffect::Store { key, owner, effect } => self.submit_store(key, owner, effect),
            effect @ (BrokerEffect::SendPeer { .. }
            | BrokerEffect::SetPeer { .. }
            | BrokerEffect::Controller(_)) => match self.cluster.as_mut() {
                Some(link) => {
                    if let Some(other) = link.execute(effect, &mut self.inputs) {
                        tracing::warn!(shard = self.id, ?other, "cluster effect not handled");
                    }
                }
                None => tracing::warn!(
                    shard = self.id,
                    ?effect,
                    "cluster effect on a single node ignored"
                ),
            },
            other => tracing::warn!(shard = self.id, ?other, "unknown broker effect ignored"),
        }
    }

    /// Answers from the object store, for the broker.
    fn take_store(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        while let Some(answer) = store.poll() {
            self.inputs.push_back(BrokerInput::Store {
                key: answer.partition,
                owner: answer.owner,
                completion: answer.completion,
            });
        }
    }

    /// Hands an object-store operation to the store thread (a local-segment put reads
    /// its bytes here first); an operation that cannot be queued is answered at once.
    fn submit_store(&mut self, key: PartitionKey, owner: StoreOwner, effect: TierEffect) {
        let op = effect.op();
        let answer = |result| BrokerInput::Store {
            key: key.clone(),
            owner,
            completion: StoreCompletion { op, result },
        };
        let what = match effect {
            TierEffect::Put {
                key: object, body, ..
            } => {
                let bytes = match body {
                    ObjectBody::Bytes(bytes) => bytes,
                    ObjectBody::LocalSegment {
                        segment,
                        position_bytes,
                        len_bytes,
                    } => {
                        let range = FileRange {
                            segment,
                            position: position_bytes,
                            len_bytes,
                        };
                        match self.read_ranges(&key, &[range]) {
                            Ok(mut chunks) if chunks.len() == 1 => chunks.remove(0),
                            _ => {
                                self.store_local_read_failures += 1;
                                self.inputs.push_back(answer(Err(StoreError::LocalReadFailed)));
                                return;
                            }
                        }
                    }
                    _ => {
                        self.inputs.push_back(answer(Err(StoreError::LocalReadFailed)));
                        return;
                    }
                };
                StoreOp::Put { key: object, bytes }
            }
            TierEffect::Get {
                key: object, range, ..
            } => StoreOp::Get { key: object, range },
            TierEffect::Delete { key: object, .. } => StoreOp::Delete { key: object },
            TierEffect::List { prefix, .. } => StoreOp::List { prefix },
            _ => {
                self.inputs.push_back(answer(Err(StoreError::Unavailable)));
                return;
            }
        };
        let Some(store) = self.store.as_ref() else {
            self.inputs.push_back(answer(Err(StoreError::Unavailable)));
            return;
        };
        if let Err(refused) = store.submit(key.clone(), owner, op, what) {
            self.inputs.push_back(BrokerInput::Store {
                key: refused.partition,
                owner: refused.owner,
                completion: refused.completion,
            });
        }
    }

    fn open_partition(&mut self, key: PartitionKey) {
        let path = self.data_dir.join(key.dir());
        match PartitionStorage::open(RealVfs::direct(), &path, self.pool.clone(), self.storage_config) {
            Ok(mut storage) => {
                if self.disk_ring.is_some() {
                    storage.set_io_mode(IoMode::Submitted);
                }
                let owner = self.next_owner;
                self.next_owner += 1;
                if let Some(old) = self.owner_ids.insert(key.clone(), owner) {
                    self.storage_owners.remove(&old);
                }
                self.storage_owners.insert(owner, key.clone());
                // The new directory's entry must be durable before its files matter.
                if let Some(parent) = path.parent() {
                    if let Err(error) = sync_dir(parent) {
                        tracing::warn!(dir = %parent.display(), %error, "cannot fsync topic directory");
                    }
                }
                self.storages.insert(key, storage);
            }
            Err(error) => {
                // Its disk effects will fail (no storage) and the replica reports it.
                tracing::error!(partition = %path.display(), %error, "cannot open partition storage");
            }
        }
    }

    fn remove_partition(&mut self, key: &PartitionKey) {
        self.finish_file_jobs_of(key);
        if let Some(storage) = self.storages.remove(key) {
            add_stats(&mut self.retired, storage.stats());
        }
        // Operations still in flight stay owned by the disk ring; their outcomes are
        // dropped.
        if let Some(owner) = self.owner_ids.remove(key) {
            self.storage_owners.remove(&owner);
        }
        self.storage_dirty.remove(key);
        self.buffer_waiters.remove(key);
        let path = self.data_dir.join(key.dir());
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::error!(partition = %path.display(), %error, "cannot delete partition"),
        }
        if let Some(topic_dir) = path.parent() {
            // Remove the topic directory once its last partition is gone (fails
            // harmlessly while others remain).
            let _ = std::fs::remove_dir(topic_dir);
            if let Some(kafka_dir) = topic_dir.parent() {
                let _ = sync_dir(kafka_dir);
            }
        }
        self.hard_states.forget(key);
        match self.kv.delete(&key.dir()) {
            Ok(Ok(())) => {}
            Ok(Err(_full)) => {
                self.flush_kv();
                if !matches!(self.kv.delete(&key.dir()), Ok(Ok(()))) {
                    // Harmless beyond a few bytes: the key names this incarnation's
                    // directory (its revision), which nothing reuses.
                    tracing::warn!(partition = %key.dir(), "kv log: hard state of a removed partition left behind (buffer still full)");
                }
            }
            Err(error) => tracing::error!(%error, "kv log: cannot delete hard state"),
        }
    }

    fn execute_replica(&mut self, key: PartitionKey, effect: ReplicaEffect) {
        match effect {
            ReplicaEffect::Disk(effect) => self.submit_disk(key, effect),
            ReplicaEffect::ReadRanges { token, ranges } => {
                let result = self.read_ranges(&key, &ranges);
                self.inputs.push_back(BrokerInput::Partition {
                    key,
                    input: ReplicaInput::RangesRead { token, result },
                });
            }
            ReplicaEffect::PersistHardState(hard_state) => self.persist_hard_state(key, hard_state),
            ReplicaEffect::Send(message) => {
                self.raft_messages_dropped += 1;
                tracing::debug!(?message, "raft message dropped: no peers on a single node");
            }
            other => tracing::warn!(shard = self.id, ?other, "unknown replica effect ignored"),
        }
    }

    fn submit_disk(&mut self, key: PartitionKey, effect: LogEffect) {
        let Some(storage) = self.storages.get_mut(&key) else {
            let generation = effect.generation();
            self.inputs.push_back(BrokerInput::Partition {
                key,
                input: ReplicaInput::Disk(oxbow_core::log::LogCompletion::Failed {
                    generation,
                    error: DiskError::Io("partition storage is not open".to_string()),
                }),
            });
            return;
        };
        if let Err(full) = storage.submit(effect) {
            // Back-pressure: run what is queued; then the queue has room unless it
            // waits for operations in flight.
            storage.run();
            let effect = full.effect;
            if let Err(full) = storage.submit(effect) {
                tracing::error!(error = %full, "storage queue refused an effect twice; failing it");
                let generation = full.effect.generation();
                self.inputs.push_back(BrokerInput::Partition {
                    key: key.clone(),
                    input: ReplicaInput::Disk(oxbow_core::log::LogCompletion::Failed {
                        generation,
                        error: DiskError::Io("storage queue full".to_string()),
                    }),
                });
            }
        }
        self.storage_dirty.insert(key);
    }

    /// Runs every storage with queued effects or new disk completions, hands their
    /// writes and syncs to the disk ring, and feeds their completions back.
    fn run_storage(&mut self) -> bool {
        let mut progress = false;
        for key in std::mem::take(&mut self.storage_dirty) {
            let Some(storage) = self.storages.get_mut(&key) else {
                continue;
            };
            storage.run();
            while let Some(completion) = storage.poll_completion() {
                progress = true;
                self.inputs.push_back(BrokerInput::Partition {
                    key: key.clone(),
                    input: ReplicaInput::Disk(completion),
                });
            }
            let Some(ring) = self.disk_ring.as_mut() else {
                if storage.queued() > 0 {
                    // Stopped by an exhausted buffer pool: try again next round.
                    self.storage_dirty.insert(key);
                }
                continue;
            };
            let owner = self.owner_ids.get(&key).copied().unwrap_or(u64::MAX);
            while let Some(op) = storage.take_op() {
                if let Err(error) = ring.submit(&mut self.reactor, owner, op) {
                    tracing::error!(shard = self.id, %error, "disk ring: cannot submit; retried next turn");
                }
            }
            while let Some(job) = storage.take_file_job() {
                let token = job.token;
                let submitted = match self.files.as_mut() {
                    Some(files) => files.submit(owner, job).map_err(|job| job.kind),
                    None => Err(job.kind),
                };
                if let Err(kind) = submitted {
                    // No helper thread (it died): run the job here rather than lose it.
                    tracing::error!(
                        shard = self.id,
                        "file worker gone; writing a small file on the shard thread"
                    );
                    storage.complete_file_job(token, kind.execute(&RealVfs::direct()));
                    self.storage_dirty.insert(key.clone());
                }
            }
            if storage.waiting_for_buffers() {
                if ring.in_flight() == 0 {
                    // Nothing in flight will return a buffer (a read holds it): retry.
                    self.storage_dirty.insert(key);
                } else {
                    self.buffer_waiters.insert(key);
                }
            }
        }
        progress
    }

    /// Finished small-file jobs, to their storages (which run again). Returns whether
    /// any came back.
    fn take_file_jobs(&mut self) -> bool {
        let Some(files) = self.files.as_mut() else {
            return false;
        };
        let mut any = false;
        while let Some((owner, token, result)) = files.poll() {
            any = true;
            let storage = self
                .storage_owners
                .get(&owner)
                .and_then(|key| self.storages.get_mut(key).map(|storage| (key, storage)));
            match storage {
                Some((key, storage)) => {
                    storage.complete_file_job(token, result);
                    self.storage_dirty.insert(key.clone());
                }
                None => {
                    if let Err(error) = result {
                        tracing::warn!(shard = self.id, %error, "small-file write of a removed partition failed");
                    }
                }
            }
        }
        any
    }

    /// Waits (blocking, bounded) until the small-file jobs of `key`'s storage are done,
    /// so a partition directory is never removed under a job writing into it.
    fn finish_file_jobs_of(&mut self, key: &PartitionKey) {
        let started = std::time::Instant::now();
        while self.storages.get(key).is_some_and(|s| s.files_in_flight() > 0) {
            if started.elapsed() > SHUTDOWN_DISK_WAIT {
                tracing::error!(shard = self.id, partition = %key.dir(), "small-file jobs still running at removal");
                return;
            }
            if !self.take_file_jobs() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Disk completions from the ring, to their storages (which run again).
    fn take_disk(&mut self) {
        self.take_file_jobs();
        let Some(ring) = self.disk_ring.as_mut() else {
            return;
        };
        let mut any = false;
        while let Some((id, result)) = self.reactor.poll_external() {
            any = true;
            let (done, outcome) = match ring.complete(&mut self.reactor, id, result) {
                None => continue,
                Some(Finished::Data(done, outcome)) => (done, outcome),
                Some(Finished::Read(tag, result)) => {
                    let result = result.map_err(|e| DiskError::Io(format!("fetch read: {e}")));
                    if let Some((token, result)) = self.fetch_reads.finished(tag, result) {
                        self.inputs.push_back(BrokerInput::RangesRead { token, result });
                    }
                    continue;
                }
            };
            let Some(key) = self.storage_owners.get(&done.owner) else {
                continue; // the partition was removed
            };
            if let Some(storage) = self.storages.get_mut(key) {
                storage.complete(done.token, outcome);
                self.storage_dirty.insert(key.clone());
            }
        }
        if ring.has_waiting() {
            if let Err(error) = ring.submit_waiting(&mut self.reactor) {
                tracing::error!(shard = self.id, %error, "disk ring: cannot submit; retried next turn");
            }
        }
        if any {
            // Buffers came back.
            self.storage_dirty.append(&mut self.buffer_waiters);
        }
    }

    /// Reads the ranges of a `BrokerEffect::ReadRanges` on the ring (the answer comes
    /// with the last completion, see `take_disk`), or with blocking reads without one.
    fn start_broker_read(&mut self, key: &PartitionKey, token: ReadToken, ranges: &[FileRange]) {
        let (Some(ring), Some(storage)) = (self.disk_ring.as_mut(), self.storages.get_mut(key)) else {
            let result = self.read_ranges(key, ranges);
            self.inputs.push_back(BrokerInput::RangesRead { token, result });
            return;
        };
        if ranges.is_empty() {
            self.inputs.push_back(BrokerInput::RangesRead {
                token,
                result: Ok(Vec::new()),
            });
            return;
        }
        let request = self.fetch_reads.start(token, ranges.len());
        for (index, range) in ranges.iter().enumerate() {
            let tag = FetchReads::tag(request, index);
            let done_now = match storage.read_op(*range) {
                Ok(Some(op)) => {
                    if let Err(error) = ring.submit_read(&mut self.reactor, tag, op) {
                        // Queued in the ring: it goes on with the next completion.
                        tracing::warn!(shard = self.id, %error, "disk ring: read queued, not submitted");
                    }
                    continue;
                }
                Ok(None) => Ok(Bytes::new()),
                Err(error) => Err(error.to_disk_error()),
            };
            if let Some((token, result)) = self.fetch_reads.finished(tag, done_now) {
                self.inputs.push_back(BrokerInput::RangesRead { token, result });
            }
        }
    }

    fn read_ranges(&mut self, key: &PartitionKey, ranges: &[FileRange]) -> Result<Vec<Bytes>, DiskError> {
        let Some(storage) = self.storages.get_mut(key) else {
            return Err(DiskError::Io("partition storage is not open".to_string()));
        };
        ranges
            .iter()
            .map(|range| storage.read(*range).map_err(|e| e.to_disk_error()))
            .collect()
    }

    fn persist_hard_state(&mut self, key: PartitionKey, hard_state: HardState) {
        let waited = self.hard_states.unbuffered_len();
        if let Err(error) = self.hard_states.persist(&mut self.kv, key, hard_state) {
            tracing::error!(%error, "kv log: hard state refused");
        }
        if self.hard_states.unbuffered_len() > 0 {
            // The buffer is full: a flush makes room (or, while a failed flush waits
            // for its retry, the hard state waits in order for the next one).
            self.flush_kv();
            if waited == 0 && self.hard_states.unbuffered_len() > 0 {
                tracing::warn!(
                    shard = self.id,
                    "kv log buffer full: hard states wait for the next flush"
                );
            }
        }
    }

    /// One `fdatasync` for every hard state buffered since the last flush. After a
    /// failure, the next attempt waits [`KV_RETRY_INTERVAL`].
    fn flush_kv(&mut self) -> bool {
        if !self.kv.has_pending() {
            return false;
        }
        let now = self.clock.now();
        if self.kv_retry_at.is_some_and(|at| now < at) {
            return false;
        }
        match self.kv.flush() {
            Ok(()) => {
                if self.kv_failures_in_a_row > 0 {
                    tracing::warn!(
                        shard = self.id,
                        failures = self.kv_failures_in_a_row,
                        "kv log flushed again after failures"
                    );
                }
                self.kv_retry_at = None;
                self.kv_failures_in_a_row = 0;
                for (key, hard_state) in self.hard_states.take_durable() {
                    self.inputs.push_back(BrokerInput::Partition {
                        key,
                        input: ReplicaInput::HardStateDurable(hard_state),
                    });
                }
                // Those that found the buffer full go in now (flushed on the next
                // call, which the effect loop makes at once).
                if let Err(error) = self.hard_states.buffer_waiting(&mut self.kv) {
                    tracing::error!(%error, "kv log: hard state refused");
                }
                true
            }
            Err(error) => {
                // Stays buffered and retried later; the replicas wait (safe).
                if self.kv_failures_in_a_row == 0 {
                    tracing::error!(shard = self.id, %error, "kv log flush failed; retrying every {} ms until it succeeds", KV_RETRY_INTERVAL.as_millis());
                }
                self.kv_failures_in_a_row += 1;
                self.kv_retry_at = Some(now + KV_RETRY_INTERVAL);
                false
            }
        }
    }

    fn send_to_shard(&mut self, to: usize, message: ShardMessage) {
        if to >= self.overflow.len() {
            tracing::error!(shard = self.id, to, "message for an unknown shard dropped");
            return;
        }
        if !self.overflow[to].is_empty() {
            self.overflow[to].push_back(message);
            self.overflow_len += 1;
        } else if let Err(message) = self.smp.try_send(to, message) {
            self.overflow[to].push_back(message);
            self.overflow_len += 1;
        } else {
            self.smp_sent += 1;
        }
        if self.overflow_len > MAX_SMP_OVERFLOW {
            self.smp_paused = true;
            self.reactor.set_reading_paused(true);
        }
    }

    fn retry_overflow(&mut self) {
        if self.overflow_len == 0 {
            return;
        }
        for to in 0..self.overflow.len() {
            while let Some(message) = self.overflow[to].pop_front() {
                match self.smp.try_send(to, message) {
                    Ok(()) => {
                        self.overflow_len -= 1;
                        self.smp_sent += 1;
                    }
                    Err(message) => {
                        self.overflow[to].push_front(message);
                        break;
                    }
                }
            }
        }
        if self.overflow_len <= MAX_SMP_OVERFLOW / 2 {
            self.smp_paused = false;
            self.reactor
                .set_reading_paused(self.smp_paused || self.send_paused);
        }
    }

    /// Clean stop: no new connections, the broker closes its partitions (indexes,
    /// sync, checkpoint), the effects are drained, storage and the kv log are closed.
    fn shutdown(mut self) -> ShardExit {
        let now = self.clock.now();
        self.reactor.stop_accepting();
        self.broker.close(now);
        // Drain until quiet, delivering what other shards still send and waiting for
        // the disk operations in flight (a while: a slow disk must not lose a sync).
        let started = std::time::Instant::now();
        let mut rounds = 0;
        while rounds < 16 {
            self.execute_effects();
            self.retry_overflow();
            self.smp.flush_wakeups();
            let now = self.clock.now();
            self.take_smp(now);
            let disk_busy = self.disk_ring.as_ref().is_some_and(|ring| ring.in_flight() > 0)
                || self.files.as_ref().is_some_and(|files| files.in_flight() > 0);
            if disk_busy && started.elapsed() < SHUTDOWN_DISK_WAIT {
                if let Err(error) = self.reactor.wait(Some(Duration::from_millis(10))) {
                    tracing::error!(shard = self.id, %error, "io_uring wait failed during shutdown");
                    break;
                }
                self.take_disk();
                continue;
            }
            rounds += 1;
            if self.inputs.is_empty() && self.storage_dirty.is_empty() && !self.kv.has_pending() {
                break;
            }
        }
        if let Some(ring) = self.disk_ring.take() {
            if ring.in_flight() > 0 {
                // The kernel may still use their buffers: never free them.
                tracing::error!(
                    shard = self.id,
                    ops = ring.in_flight(),
                    "disk operations still in flight at shutdown; leaking their buffers"
                );
                std::mem::forget(ring);
            }
        }
        let mut exit = ShardExit::default();
        for (key, storage) in std::mem::take(&mut self.storages) {
            if let Err(error) = storage.close() {
                exit.close_failures.push((key.dir(), error.to_string()));
            }
        }
        if let Err(error) = self.kv.flush() {
            exit.close_failures
                .push((format!("shard-{}.kv", self.id), error.to_string()));
        }
        self.reactor.shutdown(Duration::from_secs(1));
        exit
    }
}

fn add_stats(total: &mut StorageStats, stats: StorageStats) {
    total.written_bytes += stats.written_bytes;
    total.appends += stats.appends;
    total.transfers += stats.transfers;
    total.syncs_completed += stats.syncs_completed;
    total.fdatasyncs += stats.fdatasyncs;
    total.fdatasync_latency.merge(&stats.fdatasync_latency);
    total.dir_syncs += stats.dir_syncs;
    total.failures += stats.failures;
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the node metadata file, if any.
pub fn read_metadata(data_dir: &Path) -> std::io::Result<Option<Bytes>> {
    let path = data_dir.join("oxbow").join(METADATA_FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(Bytes::from(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the node metadata file atomically: temporary file, `fdatasync`, rename,
/// directory fsync — the old or the new contents, never a mix.
pub fn write_metadata(data_dir: &Path, data: &[u8]) -> Result<(), DiskError> {
    use std::io::Write as _;
    let dir = data_dir.join("oxbow");
    let tmp = dir.join(format!("{METADATA_FILE_NAME}.tmp"));
    let path = dir.join(METADATA_FILE_NAME);
    let to_disk = |op: &str, path: &Path, e: std::io::Error| {
        if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            DiskError::NoSpace
        } else {
            DiskError::Io(format!("{op} {}: {e}", path.display()))
        }
    };
    let mut file = std::fs::File::create(&tmp).map_err(|e| to_disk("create", &tmp, e))?;
    file.write_all(data).map_err(|e| to_disk("write", &tmp, e))?;
    file.sync_data().map_err(|e| to_disk("fdatasync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| to_disk("rename", &tmp, e))?;
    sync_dir(&dir).map_err(|e| to_disk("fsync", &dir, e))
}
