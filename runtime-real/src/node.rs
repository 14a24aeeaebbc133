//! One Oxbow node on real hardware ([`start`] → [`NodeHandle`]): it owns a data
//! directory (locked against a second process), gives every partition found there to
//! the shard that owns it, runs one pinned shard thread per core serving the Kafka
//! API (each recovers its partitions — torn tails cut, a damaged partition left
//! unserved rather than cut — and reads its key-value log for their Raft hard states),
//! serves the admin HTTP listener, and stops cleanly ([`NodeHandle::stop`]: indexes,
//! syncs, checkpoints) on SIGINT or SIGTERM.

use crate::admin::{AdminServer, ShardLink};
use crate::clock::{wall_clock_ms, MonotonicClock};
use crate::config::NodeConfig;
use crate::shard::budget::ShardBudget;
use crate::shard::kv::KvConfig;
use crate::shard::net::{bind_reuseport, NetConfig};
use crate::shard::runtime::{
    read_metadata, run_shard, Control, ShardError, ShardExit, ShardReady, ShardSpec,
};
use crate::shard::smp::mesh;
use crate::storage::aligned::PoolConfig;
use crate::storage::executor::StorageConfig;
use oxbow_core::broker::{shard_for, ShardId, ShardMessage};
use oxbow_core::raft::RaftConfig;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::thread::JoinHandle;
use std::time::Duration;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The data directory could not be created or read.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another oxbow process")]
    Locked(PathBuf),
    /// A listener could not be bound.
    #[error("cannot listen on {option} {addr}: {source}")]
    Listen {
        /// The option naming the address.
        option: &'static str,
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard could not start or failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The object store of tiered storage could not be set up.
    #[error(transparent)]
    Store(#[from] crate::shard::store::StoreSetupError),
    /// A shard thread could not be created or panicked.
    #[error("shard {0}: thread failed")]
    ShardThread(u32),
    /// Storage did not close cleanly.
    #[error("{} files did not close cleanly: {}", .0.len(), .0.iter().map(|(f, e)| format!("{f}: {e}")).collect::<Vec<_>>().join("; "))]
    Close(Vec<(String, String)>),
    /// `node.cores` names a core this process may not run on.
    #[error("node.cores: core {core} is not one this process may run on ({allowed})")]
    Core {
        /// The core.
        core: usize,
        /// The cores allowed, as a CPU list.
        allowed: String,
    },
    /// Something else the OS refused (threads, eventfds).
    #[error("{0}")]
    Os(std::io::Error),
    /// The node could not join its cluster.
    #[error(transparent)]
    Cluster(#[from] crate::cluster_node::ClusterStartError),
}

/// A partition replica's directory: `kafka/<topic>/<partition>_<revision>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartitionDir {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Revision (the controller command that created this replica).
    pub revision: i64,
}

/// Lists the partition directories under `<data_dir>/kafka`, sorted.
pub fn find_partitions(data_dir: &Path) -> std::io::Result<Vec<PartitionDir>> {
    let kafka = data_dir.join("kafka");
    let mut found = Vec::new();
    let Ok(topics) = std::fs::read_dir(&kafka) else {
        return Ok(found);
    };
    for topic in topics {
        let topic = topic?;
        if !topic.file_type()?.is_dir() {
            continue;
        }
        let topic_name = topic.file_name().to_string_lossy().into_owned();
        for partition in std::fs::read_dir(topic.path())? {
            let partition = partition?;
            let name = partition.file_name().to_string_lossy().into_owned();
            let parsed = name
                .split_once('_')
                .and_then(|(p, r)| Some((p.parse::<i32>().ok()?, r.parse::<i64>().ok()?)));
            if let (Some((partition, revision)), true) = (parsed, partition.file_type()?.is_dir()) {
                found.push(PartitionDir {
                    topic: topic_name.clone(),
                    partition,
                    revision,
                });
            }
        }
    }
    found.sort();
    Ok(found)
}

fn lock_data_dir(data_dir: &Path) -> Result<File, NodeError> {
    let dir_error = |source| NodeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir.join("oxbow")).map_err(dir_error)?;
    std::fs::create_dir_all(data_dir.join("kafka")).map_err(dir_error)?;
    let lock = File::create(data_dir.join("oxbow").join("lock")).map_err(dir_error)?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(NodeError::Locked(data_dir.to_path_buf()));
    }
    Ok(lock)
}

/// A running node: its shard threads, its admin server, its locked data directory.
#[derive(Debug)]
pub struct NodeHandle {
    kafka_addr: SocketAddr,
    admin_addr: SocketAddr,
    shard_count: u32,
    partitions: usize,
    shards: Vec<(ShardLink, JoinHandle<Result<ShardExit, ShardError>>)>,
    ready: Vec<ShardReady>,
    admin: Option<AdminServer>,
    /// The object-store helper thread (ends once every shard has stopped).
    store: Option<crate::shard::store::StoreService>,
    /// Cluster mode: the broker-to-broker transport (stopped after the shards).
    peer: Option<std::sync::Arc<crate::peer::PeerNet>>,
    _lock: File,
}

/// Capacity of each SMP queue between two shards, in messages.
pub const SMP_QUEUE_CAPACITY: usize = 1024;
/// Capacity of each shard's control channel (admin and node requests).
const CONTROL_CAPACITY: usize = 64;

/// Starts a node: locks the data directory, finds its partitions and gives each to the
/// shard [`shard_for`] names, binds the Kafka listeners (one per shard, `SO_REUSEPORT`)
/// and the admin listener, starts the shards (each recovers its partitions and reads
/// its key-value log) and returns once every shard serves.
pub fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    let data_dir = config.node.data_dir.clone();
    let allowed = crate::shard::affinity::allowed_cores();
    if let Some(&core) = config
        .shard_cores()
        .iter()
        .find(|c| !allowed.is_empty() && !allowed.contains(c))
    {
        return Err(NodeError::Core {
            core,
            allowed: crate::tune::cpulist::format_cpu_list(&allowed),
        });
    }
    let lock = lock_data_dir(&data_dir)?;
    let data_dir_error = |source| NodeError::DataDir {
        path: data_dir.clone(),
        source,
    };
    let shard_count = config.shard_count();
    let dirs = find_partitions(&data_dir).map_err(data_dir_error)?;
    let partitions = dirs.len();
    let mut by_shard: Vec<Vec<PartitionDir>> = (0..shard_count).map(|_| Vec::new()).collect();
    for dir in dirs {
        let ShardId(shard) = shard_for(&dir.topic, dir.partition, shard_count);
        let slot = shard as usize % by_shard.len();
        by_shard[slot].push(dir);
    }
    let mut metadata = read_metadata(&data_dir).map_err(data_dir_error)?;
    let listen_error = |option: &'static str, addr: &str| {
        let addr = addr.to_string();
        move |source| NodeError::Listen { option, addr, source }
    };
    let kafka: SocketAddr =
        config.node.kafka_addr.parse().map_err(|e| {
            listen_error("node.kafka_addr", &config.node.kafka_addr)(std::io::Error::other(e))
        })?;
    let (listeners, kafka_addr) = bind_reuseport(kafka, shard_count as usize, 1024)
        .map_err(listen_error("node.kafka_addr", &config.node.kafka_addr))?;
    let admin_listener = TcpListener::bind(&config.node.admin_addr)
        .map_err(listen_error("node.admin_addr", &config.node.admin_addr))?;
    let advertised_host = if kafka_addr.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        kafka_addr.ip().to_string()
    };
    let endpoints = mesh::<ShardMessage>(shard_count as usize, SMP_QUEUE_CAPACITY).map_err(NodeError::Os)?;
    let cores = config.shard_cores();
    let clock = MonotonicClock::start();
    let wall_clock_origin_ms = wall_clock_ms() - clock.now().as_millis() as i64;
    let group_config = config.group.to_config()?;
    let txn_settings = config.txn.to_settings()?;
    let tier_settings = config.tiered_storage.to_settings()?;
    let doorbells: Vec<_> = endpoints.iter().map(|e| e.doorbell().clone()).collect();
    let shard_0_doorbell = doorbells[0].clone();
    let (store_service, mut store_clients) =
        match crate::shard::store::build_store(&config.tiered_storage, &data_dir)? {
            Some(store) => {
                let (service, clients) =
                    crate::shard::store::StoreService::start(store, &config.tiered_storage, doorbells)?;
                (Some(service), clients.into_iter().map(Some).collect::<Vec<_>>())
            }
            None => (None, (0..shard_count).map(|_| None).collect()),
        };
    store_clients.reverse();
    let mut cluster = None;
    if !config.node.seeds.is_empty() {
        metadata = None;
        let bell = shard_0_doorbell.clone();
        let wake: std::sync::Arc<dyn Fn() + Send + Sync> = std::sync::Arc::new(move || bell.signal());
        cluster = Some(crate::cluster_node::start(
            &config,
            kafka_addr,
            &advertised_host,
            shard_count,
            clock.now(),
            u64::try_from(wall_clock_ms()).unwrap_or(0),
            wake,
        )?);
    }
    let peer = cluster.as_ref().map(|c| c.peer.clone());
    let mut cluster_shards = cluster.map(|c| c.shards).unwrap_or_default();
    cluster_shards.reverse();
    let net = NetConfig {
        max_send_queue_bytes: usize::try_from(config.kafka.max_send_queue_bytes).unwrap_or(usize::MAX),
        max_connections: config.kafka.max_connections_per_shard as usize,
        ..NetConfig::default()
    };
    let budget = ShardBudget::split(
        config.shard_memory_bytes(),
        PoolConfig::default(),
        net.recv_buffer_bytes,
        net.max_connections,
    );
    let mut node = NodeHandle {
        kafka_addr,
        admin_addr: admin_listener.local_addr().map_err(NodeError::Os)?,
        shard_count,
        partitions,
        shards: Vec::new(),
        ready: Vec::new(),
        admin: None,
        store: None,
        peer,
        _lock: lock,
    };
    let mut readiness = Vec::new();
    for ((shard, listener), (smp, partitions)) in
        (0u32..).zip(listeners).zip(endpoints.into_iter().zip(by_shard))
    {
        let spec = ShardSpec {
            shard,
            shard_count,
            core: (!cores.is_empty()).then(|| cores[shard as usize % cores.len()]),
            data_dir: data_dir.clone(),
            node_id: config.node.node_id,
            advertised_host: advertised_host.clone(),
            advertised_port: kafka_addr.port(),
            log_defaults: config.log_config(),
            raft: RaftConfig {
                entry_cache_bytes: budget.raft_entry_cache_bytes(),
                // When a partition's preferred leader dies, the others may campaign
                // after one election timeout (not three): failover in ~3 s; the
                // preferred replica takes leadership back once it returns.
                priority_relax_steps: 1,
                ..RaftConfig::default()
            },
            max_frame_bytes: config.kafka.max_frame_bytes,
            metadata: if shard == 0 { metadata.take() } else { None },
            partitions,
            net,
            pool: budget.pool,
            budget,
            lock_memory: config.node.lock_memory,
            storage: StorageConfig::default(),
            sync_disk_io: config.node.sync_disk_io,
            kv: KvConfig::default(),
            clock,
            wall_clock_origin_ms,
            group: group_config.clone(),
            tier: tier_settings.clone(),
            txn: txn_settings.clone(),
            store: store_clients.pop().flatten(),
            cluster: cluster_shards.pop(),
        };
        let (control, control_rx) = sync_channel(CONTROL_CAPACITY);
        let (ready_tx, ready_rx) = sync_channel(1);
        let link = ShardLink {
            control,
            doorbell: smp.doorbell().clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("oxbow-shard-{shard}"))
            .spawn(move || run_shard(spec, listener, smp, control_rx, ready_tx))
            .map_err(NodeError::Os)?;
        node.shards.push((link, thread));
        readiness.push(ready_rx);
    }
    for (shard, ready) in (0u32..).zip(readiness) {
        match ready.recv() {
            Ok(Ok(info)) => {
                tracing::info!(
                    shard,
                    core = ?info.core,
                    budget_bytes = info.budget.total_bytes,
                    locked = info.locked.is_ok(),
                    "shard serving"
                );
                node.ready.push(info);
            }
            Ok(Err(message)) => {
                let _ = node.stop();
                return Err(NodeError::Shard(ShardError::Start { shard, message }));
            }
            Err(_) => {
                let _ = node.stop();
                return Err(NodeError::ShardThread(shard));
            }
        }
    }
    node.store = store_service;
    let links = node.shards.iter().map(|(link, _)| link.clone()).collect();
    node.admin = Some(AdminServer::start(admin_listener, config.node.node_id, links).map_err(NodeError::Os)?);
    Ok(node)
}

impl NodeHandle {
    /// The Kafka listeners' address (the real port when 0 was configured).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// Each shard's core and memory, as reported when it started.
    pub fn shard_info(&self) -> &[ShardReady] {
        &self.ready
    }

    /// Partition directories found at start-up.
    pub fn partitions_found(&self) -> usize {
        self.partitions
    }

    /// Whether a shard thread has stopped on its own (a failure).
    pub fn shard_failed(&self) -> bool {
        self.shards.iter().any(|(_, thread)| thread.is_finished())
    }

    /// Clean shutdown: every shard stops accepting, closes its broker (indexes, sync,
    /// checkpoints), drains its effects and closes its storage; then the admin server
    /// stops. Reports any shard that failed or did not close cleanly.
    pub fn stop(mut self) -> Result<(), NodeError> {
        for (link, _) in &self.shards {
            // A full control channel means the shard is not draining it: it is gone.
            let _ = link.control.try_send(Control::Shutdown);
            link.doorbell.signal();
        }
        let mut first_error = None;
        let mut close_failures = Vec::new();
        for (shard, (_, thread)) in (0u32..).zip(self.shards.drain(..)) {
            match thread.join() {
                Ok(Ok(exit)) => close_failures.extend(exit.close_failures),
                Ok(Err(error)) => {
                    first_error.get_or_insert(NodeError::Shard(error));
                }
                Err(_) => {
                    first_error.get_or_insert(NodeError::ShardThread(shard));
                }
            }
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(store) = self.store.take() {
            store.join();
        }
        if let Some(peer) = self.peer.take() {
            // The shards held the other references; they are gone.
            if let Ok(peer) = std::sync::Arc::try_unwrap(peer) {
                peer.shutdown();
            }
        }
        match first_error {
            Some(error) => Err(error),
            None if !close_failures.is_empty() => Err(NodeError::Close(close_failures)),
            None => Ok(()),
        }
    }
}

/// Blocks SIGINT and SIGTERM for this thread and the threads it starts later, so
/// [`wait_for_shutdown_signal`] can take them synchronously. Call first in `main`.
pub fn block_shutdown_signals() {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits up to `timeout` for SIGINT or SIGTERM (blocked by [`block_shutdown_signals`]);
/// returns its name, or `None` if neither came.
pub fn wait_for_shutdown_signal_timeout(timeout: Duration) -> Option<&'static str> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: sigtimedwait on a local set of signals this thread has blocked, with a
    // local timespec; no siginfo is requested.
    let signal = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts)
    };
    match signal {
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => None,
    }
}

/// Waits for SIGINT or SIGTERM (blocked by [`block_shutdown_signals`]); returns its name.
pub fn wait_for_shutdown_signal() -> &'static str {
    // SAFETY: sigwait on a local set of signals this thread has blocked.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut signal: libc::c_int = 0;
        loop {
            if libc::sigwait(&set, &mut signal) == 0 {
                return if signal == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
            }
        }
    }
}
