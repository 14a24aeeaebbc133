//! Starting a node as a member of a cluster (`node.seeds` set): the seeds are parsed,
//! the broker-to-broker transport is bound, the controller's storage is opened and its
//! replica built from what it recovered, and every shard gets its share
//! ([`crate::shard::cluster_link::ShardCluster`]).
//!
//! Seeds are `ID@HOST:PORT` (broker id and RPC address): they are the voters of the
//! controller group 0, so every broker of a new cluster lists the same seeds, itself
//! included. A broker not among the seeds joins the running cluster they form: it
//! registers through them, and the controller leader adds it to group 0 as a learner
//! (it receives the metadata; partitions are placed on it like on any broker).

use crate::config::NodeConfig;
use crate::controller_store::{ControllerStore, ControllerStoreLimits};
use crate::peer::{PeerConfig, PeerNet};
use crate::shard::cluster_link::ShardCluster;
use oxbow_core::broker::cluster::ClusterSetup;
use oxbow_core::controller::{BrokerRegistration, ControllerConfig, ControllerReplica};
use oxbow_core::raft::Membership;
use oxbow_core::time::Instant;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterStartError {
    /// A seed is not `ID@HOST:PORT`.
    #[error("node.seeds: `{0}` is not ID@HOST:PORT (the broker id and RPC address of a seed broker)")]
    BadSeed(String),
    /// The node id cannot be a broker id.
    #[error("node.node_id {0} cannot be a broker id")]
    BadNodeId(i32),
    /// Two seeds name one broker id.
    #[error("node.seeds names broker {0} twice")]
    DuplicateSeed(u64),
    /// The data directory holds a single node's metadata.
    #[error(
        "{0} holds a single node's topics (oxbow/metadata); a cluster member starts from an empty data \
         directory or its own cluster data"
    )]
    SingleNodeData(String),
    /// The RPC listener.
    #[error("node.rpc_addr {addr}: {message}")]
    Rpc {
        /// The address.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The controller's storage or replica.
    #[error("controller: {0}")]
    Controller(String),
}

/// `ID@HOST:PORT` seeds → (id, address).
pub fn parse_seeds(seeds: &[String]) -> Result<Vec<(u64, String)>, ClusterStartError> {
    let mut out: Vec<(u64, String)> = Vec::new();
    for seed in seeds {
        let (id, addr) = seed
            .split_once('@')
            .ok_or_else(|| ClusterStartError::BadSeed(seed.clone()))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| ClusterStartError::BadSeed(seed.clone()))?;
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(ClusterStartError::BadSeed(seed.clone()));
        }
        if out.iter().any(|(known, _)| *known == id) {
            return Err(ClusterStartError::DuplicateSeed(id));
        }
        out.push((id, addr.trim().to_string()));
    }
    Ok(out)
}

/// What [`start`] built: one share per shard, and the transport (kept by the node).
#[derive(Debug)]
pub struct ClusterStart {
    /// One per shard, shard 0 first.
    pub shards: Vec<ShardCluster>,
    /// The transport.
    pub peer: Arc<PeerNet>,
}

/// Binds the transport, opens the controller and prepares every shard's share.
pub fn start(
    config: &NodeConfig,
    kafka_addr: SocketAddr,
    advertised_host: &str,
    shard_count: u32,
    now: Instant,
    incarnation: u64,
    wake_shard_0: Arc<dyn Fn() + Send + Sync>,
) -> Result<ClusterStart, ClusterStartError> {
    let data_dir = config.node.data_dir.as_path();
    let seeds = parse_seeds(&config.node.seeds)?;
    let node_id = config.node.node_id;
    let node = u64::try_from(node_id).map_err(|_| ClusterStartError::BadNodeId(node_id))?;
    if !seeds.iter().any(|(id, _)| *id == node) {
        tracing::info!(node, "not among the seeds: joining the running cluster they form");
    }
    if let Ok(Some(bytes)) = crate::shard::runtime::read_metadata(data_dir) {
        let has_topics = oxbow_core::broker::Metadata::decode(&bytes).is_ok_and(|m| !m.topics.is_empty());
        if has_topics {
            return Err(ClusterStartError::SingleNodeData(data_dir.display().to_string()));
        }
    }
    let rpc_error = |message: String| ClusterStartError::Rpc {
        addr: config.node.rpc_addr.clone(),
        message,
    };
    let listen: SocketAddr = config
        .node
        .rpc_addr
        .parse()
        .map_err(|e| rpc_error(format!("not IP:PORT ({e})")))?;
    let peer =
        PeerNet::start(PeerConfig::new(node, listen), wake_shard_0).map_err(|e| rpc_error(e.to_string()))?;
    let peer = Arc::new(peer);
    let controller_config = ControllerConfig::default();
    let (store, recovered) =
        ControllerStore::open(data_dir, ControllerStoreLimits::from_config(&controller_config))
            .map_err(|e| ClusterStartError::Controller(e.to_string()))?;
    let voters = Membership::with_voters(seeds.iter().map(|(id, _)| *id))
        .map_err(|e| ClusterStartError::Controller(e.to_string()))?;
    let log_entries = recovered.report.entries;
    let setup = recovered.into_setup(
        node,
        controller_config,
        voters,
        node.rotate_left(29) ^ incarnation,
    );
    let replica =
        ControllerReplica::new(now, setup).map_err(|e| ClusterStartError::Controller(e.to_string()))?;
    log_hydration(&replica, log_entries);
    let rpc_addr = match listen.ip().is_unspecified() {
        true => format!("{advertised_host}:{}", peer.local_addr().port()),
        false => peer.local_addr().to_string(),
    };
    let registration = BrokerRegistration {
        id: node,
        rpc_addr,
        kafka_addr: format!("{advertised_host}:{}", kafka_addr.port()),
        rack: None,
        epoch: incarnation,
    };
    let mut replica = Some(replica);
    let mut store = Some(store);
    let shards = (0..shard_count)
        .map(|shard| ShardCluster {
            peer: peer.clone(),
            controller_store: if shard == 0 { store.take() } else { None },
            setup: ClusterSetup {
                controller: if shard == 0 { replica.take() } else { None },
                registration: registration.clone(),
                seeds: seeds.clone(),
                default_replication_factor: config.kafka.default_replication_factor,
            },
        })
        .collect();
    Ok(ClusterStart { shards, peer })
}

/// Says at start-up where the controller's state came from: the snapshot file (its
/// position and what it holds) and how many log entries after it Raft replays once
/// their commit is known, or the log alone.
fn log_hydration(replica: &ControllerReplica, log_entries: usize) {
    let state = replica.state();
    match replica.snapshot_point() {
        Some(at) => tracing::info!(
            index = at.index,
            term = at.term,
            topics = state.metadata.topics.len(),
            brokers = state.brokers.len(),
            log_entries,
            "controller: hydrated from snapshot at index {} (term {}), replaying {log_entries} entries after it",
            at.index,
            at.term,
        ),
        None => tracing::info!(
            log_entries,
            "controller: no snapshot, replaying {log_entries} log entries from the start"
        ),
    }
}
