//! The per-shard broker: the sans-IO state machine behind one shard's Kafka listener.
//!
//! It frames and decodes client bytes ([`crate::kafka`]), breaks each request into
//! per-partition operations run by the shard owning the partition ([`shard`],
//! [`partitions`]), parks requests until their condition holds (acks, long-poll min
//! bytes and max wait, timeouts), and answers each connection in request order. Topic
//! metadata ([`metadata`]) is owned by shard 0, made durable before a command is
//! acknowledged, and broadcast to every shard. See [`io`] for the runtime contract.
//!
//! * [`handlers`] — each Kafka API: request → operations, results → response.

pub mod cluster;
pub mod coordinators;
pub mod group_handlers;
pub mod handlers;
pub mod io;
pub mod metadata;
pub mod partitions;
pub mod producer_handlers;
pub mod shard;
pub mod txn_handlers;

pub use io::{BrokerEffect, BrokerInput, ConnectionId, PartitionKey, ShardId};
pub use metadata::{Metadata, TopicMeta};
pub use shard::{shard_for, ShardMessage};

use crate::kafka::{
    decode_request, encode_response_frame, FrameDecoder, RequestHeader, Response, ResponseFrame,
};
use crate::log::{Log, LogConfig};
use crate::raft::{HardState, RaftConfig};
use crate::time::Instant;
use bytes::{Buf, Bytes};
use handlers::Pending;
use partitions::{Partitions, TopicPartition};
use shard::{CommandResults, MetadataCommand, OpRef, OpResult, PartitionOp};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(10);
/// Most requests a connection may have waiting for their answers; beyond it the
/// broker stops reading from that connection until answers go out.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 128;

/// What a shard's broker is built from.
#[derive(Debug)]
pub struct BrokerSetup {
    /// This broker's id.
    pub node_id: i32,
    /// This shard.
    pub shard: ShardId,
    /// Number of shards on the node.
    pub shard_count: u32,
    /// Host clients should connect to.
    pub advertised_host: String,
    /// Port clients should connect to.
    pub advertised_port: u16,
    /// Log settings topics start from.
    pub log_defaults: LogConfig,
    /// Raft settings of partition groups.
    pub raft: RaftConfig,
    /// The metadata file's contents (shard 0 only; `None` for a new node).
    pub metadata: Option<Bytes>,
    /// Partitions of this shard found on disk.
    pub partitions: Vec<RecoveredPartition>,
    /// Wall-clock milliseconds since the Unix epoch at `Instant::ZERO` (for retention
    /// by record timestamps).
    pub wall_clock_origin_ms: i64,
    /// Largest request frame accepted.
    pub max_frame_bytes: u32,
    /// Settings of the consumer-group coordinators.
    pub group: crate::group::GroupConfig,
    /// Tiered storage: whether an object store is configured, and its settings.
    pub tier: partitions::TierSettings,
    /// Transaction coordinators and producer state (`[txn]`).
    pub txn: crate::txn::TxnSettings,
    /// Cluster mode: the controller (shard 0), this broker's registration and seeds.
    /// `None`: a single node whose metadata is the metadata file.
    pub cluster: Option<cluster::ClusterSetup>,
}

/// A partition recovered from disk.
#[derive(Debug)]
pub struct RecoveredPartition {
    /// Where it lives.
    pub key: PartitionKey,
    /// Its recovered log.
    pub log: Log,
    /// Its durable Raft hard state.
    pub hard_state: HardState,
}

/// Counters for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerMetrics {
    /// Requests by API name.
    pub requests: BTreeMap<String, u64>,
    /// Bytes received from clients.
    pub bytes_in: u64,
    /// Bytes sent to clients.
    pub bytes_out: u64,
    /// Open connections.
    pub connections: u64,
    /// Connections closed for bad input.
    pub protocol_errors: u64,
    /// Partitions hosted.
    pub partitions: u64,
    /// Produce requests answered and the sum of their latencies.
    pub produce_count: u64,
    /// Sum of produce latencies, nanoseconds.
    pub produce_latency_ns: u64,
    /// Fetch requests answered.
    pub fetch_count: u64,
    /// Sum of fetch latencies (long polls included), nanoseconds.
    pub fetch_latency_ns: u64,
    /// Partitions that could not be started (see the runtime's log).
    pub partition_errors: u64,
}

struct Connection {
    decoder: FrameDecoder,
    /// Request ids in arrival order, waiting to be answered in that order.
    order: VecDeque<u64>,
    /// Encoded answers that are ready but wait for earlier ones.
    ready: BTreeMap<u64, Option<ResponseFrame>>,
}

/// The broker of one shard.
pub struct Broker {
    node_id: i32,
    shard: ShardId,
    shard_count: u32,
    host: String,
    port: u16,
    log_defaults: LogConfig,
    wall_clock_origin_ms: i64,
    max_frame_bytes: u32,
    /// Latest metadata (on shard 0: including changes not yet durable).
    metadata: Metadata,
    /// On shard 0: the last durable metadata, and commands waiting for durability.
    durable_metadata: Metadata,
    persist_waits: Vec<(u64, ShardId, u64, CommandResults)>,
    partitions: Partitions,
    /// Leader epoch of every partition on the node, -1 while leaderless.
    epochs: BTreeMap<TopicPartition, i32>,
    connections: BTreeMap<ConnectionId, Connection>,
    requests: BTreeMap<u64, Pending>,
    next_request: u64,
    effects: VecDeque<BrokerEffect>,
    next_retention_at: Instant,
    metrics: BrokerMetrics,
    group_config: crate::group::GroupConfig,
    /// This shard's block of producer ids (InitProducerId).
    producer_ids: producer_handlers::ProducerIds,
    /// Markers this shard's transaction coordinators are writing: request id →
    /// (coordinator partition, coordinator token).
    txn_marker_ops: BTreeMap<u64, (TopicPartition, u64)>,
    /// Cluster mode: the view, leaders, outbox (and the controller on shard 0).
    cluster: Option<cluster::Cluster>,
    /// Cluster mode: partitions found on disk, hosted once the controller's metadata
    /// names them.
    recovered: BTreeMap<TopicPartition, RecoveredPartition>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.node_id)
            .field("shard", &self.shard)
            .field("partitions", &self.partitions.len())
            .field("connections", &self.connections.len())
            .finish()
    }
}

impl Broker {
    /// Builds the broker of one shard. Shard 0 decodes the metadata and tells the
    /// other shards about it as its first effects.
    pub fn new(setup: BrokerSetup, now: Instant) -> Result<Broker, String> {
        let cluster_mode = setup.cluster.is_some();
        let metadata = match (&setup.metadata, setup.shard) {
            _ if cluster_mode => Metadata::default(),
            (Some(bytes), ShardId(0)) => Metadata::decode(bytes).map_err(|e| e.to_string())?,
            // Partitions on disk but no metadata: starting would delete them as
            // unknown. Refuse, and let a person look.
            (None, ShardId(0)) if !setup.partitions.is_empty() => {
                return Err(format!(
                    "{} partition directories exist but the metadata file is missing; refusing to start \
                     (restore the metadata file or move the partition directories away)",
                    setup.partitions.len()
                ))
            }
            _ => Metadata::default(),
        };
        let mut broker = Broker {
            node_id: setup.node_id,
            shard: setup.shard,
            shard_count: setup.shard_count.max(1),
            host: setup.advertised_host,
            port: setup.advertised_port,
            log_defaults: setup.log_defaults,
            wall_clock_origin_ms: setup.wall_clock_origin_ms,
            max_frame_bytes: setup.max_frame_bytes,
            durable_metadata: metadata.clone(),
            metadata: Metadata::default(),
            persist_waits: Vec::new(),
            partitions: {
                // A cluster's partitions share their peers: their heartbeats leave
                // together, one compact frame per peer and interval.
                let mut raft = setup.raft;
                raft.coalesced_heartbeats |= setup.cluster.is_some();
                let mut partitions = Partitions::new(setup.node_id, raft);
                partitions.configure_groups(setup.group.clone(), setup.wall_clock_origin_ms);
                partitions.tier.set_settings(setup.tier.clone());
                partitions.txn.set_config(setup.txn.coordinator.clone());
                partitions.txn.set_producer_config(setup.txn.producers);
                partitions
            },
            group_config: setup.group,
            epochs: BTreeMap::new(),
            connections: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_request: 1,
            effects: VecDeque::new(),
            next_retention_at: now + RETENTION_INTERVAL,
            metrics: BrokerMetrics::default(),
            producer_ids: producer_handlers::ProducerIds::default(),
            txn_marker_ops: BTreeMap::new(),
            cluster: None,
            recovered: BTreeMap::new(),
        };
        if let Some(cluster_setup) = setup.cluster {
            let node = u64::try_from(setup.node_id).map_err(|_| "negative node id".to_string())?;
            broker.cluster = Some(cluster::Cluster::new(node, cluster_setup, now));
            for recovered in setup.partitions {
                let tp = (recovered.key.topic.clone(), recovered.key.partition);
                broker.recovered.insert(tp, recovered);
            }
            cluster::start(&mut broker, now);
            broker.pump(now);
            return Ok(broker);
        }
        for recovered in setup.partitions {
            let config = broker.log_config_for(&metadata, &recovered.key.topic);
            let mut log = recovered.log;
            log.set_config(config);
            let tp = (recovered.key.topic.clone(), recovered.key.partition);
            broker
                .partitions
                .host(now, recovered.key, log, recovered.hard_state, &[])?;
            let tier = broker.tier_config_for(&metadata, &tp.0);
            broker.partitions.set_tier(now, &tp, tier);
        }
        if broker.shard == ShardId(0) {
            broker.broadcast_metadata(now, metadata);
        }
        broker.pump(now);
        Ok(broker)
    }

    fn log_config_for(&self, metadata: &Metadata, topic: &str) -> LogConfig {
        metadata
            .topics
            .get(topic)
            .and_then(|t| metadata::topic_log_config(&self.log_defaults, &t.configs).ok())
            .unwrap_or_else(|| self.log_defaults.clone())
    }

    fn tier_config_for(&self, metadata: &Metadata, topic: &str) -> metadata::TopicTier {
        metadata
            .topics
            .get(topic)
            .and_then(|t| metadata::topic_tier_config(&t.configs).ok())
            .unwrap_or_default()
    }

    /// The node's tiered-storage settings.
    pub fn tier_settings(&self) -> partitions::TierSettings {
        self.partitions.tier.settings().clone()
    }

    /// Tiered-storage counters of this shard, for `/metrics`.
    pub fn tier_stats(&self) -> partitions::TierStats {
        self.partitions.tier.stats()
    }

    /// The client address of a connection, for DescribeGroups (not tracked yet).
    fn peer_of(&self, _connection: ConnectionId) -> String {
        String::new()
    }

    /// Group-coordinator counters of this shard, for `/metrics`.
    pub fn group_metrics(&self) -> crate::group::GroupMetrics {
        self.partitions.group_metrics()
    }

    /// The Raft counters of this shard's partitions (hosted now or before).
    pub fn raft_totals(&self) -> crate::raft::RaftTotals {
        self.partitions.raft_totals()
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> BrokerMetrics {
        let mut metrics = self.metrics.clone();
        metrics.partitions = self.partitions.len() as u64;
        metrics.connections = self.connections.len() as u64;
        metrics
    }

    /// Transaction counters of this shard.
    pub fn txn_metrics(&self) -> crate::txn::TxnShardMetrics {
        self.partitions.txn_metrics()
    }

    /// Cluster counters of this shard (zeros on a single node).
    pub fn cluster_metrics(&self) -> cluster::ClusterMetrics {
        cluster::metrics(self)
    }

    /// (Simulator, tests) This shard's controller replica: shard 0 in cluster mode.
    pub fn controller(&self) -> Option<&crate::controller::ControllerReplica> {
        self.cluster.as_ref().and_then(|c| c.controller())
    }

    /// (Simulator, tests) Every partition replica this shard hosts, in key order.
    pub fn partition_replicas(&self) -> Vec<(PartitionKey, &crate::partition::Replica)> {
        self.partitions
            .keys()
            .into_iter()
            .filter_map(|key| {
                let replica = self.partitions.replica(&(key.topic.clone(), key.partition))?;
                Some((key, replica))
            })
            .collect()
    }

    /// The next thing the runtime must do.
    pub fn poll_effect(&mut self) -> Option<BrokerEffect> {
        self.effects.pop_front()
    }

    /// When [`Broker::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.requests.values().filter_map(|p| p.deadline);
        let cluster = self.cluster.as_ref().and_then(|c| c.poll_timeout());
        [
            self.partitions.poll_timeout(),
            Some(self.next_retention_at),
            cluster,
        ]
        .into_iter()
        .flatten()
        .chain(requests)
        .min()
    }

    /// Runs timers: Raft, long polls, request timeouts, retention.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.partitions.handle_timeout(now);
        cluster::handle_timeout(self, now);
        if now >= self.next_retention_at {
            self.next_retention_at = now + RETENTION_INTERVAL;
            let wall_ms = self.wall_clock_origin_ms + (now.as_millis() as i64);
            self.partitions.enforce_retention(now, wall_ms);
        }
        let expired: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.expire(now, id);
        }
        self.pump(now);
    }

    /// Prepares shutdown: every log writes its index, syncs and checkpoints.
    pub fn close(&mut self, now: Instant) {
        self.partitions.close(now);
        self.pump(now);
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: BrokerInput) {
        match input {
            BrokerInput::Connected { connection } => {
                self.connections.insert(
                    connection,
                    Connection {
                        decoder: FrameDecoder::new(self.max_frame_bytes),
                        order: VecDeque::new(),
                        ready: BTreeMap::new(),
                    },
                );
            }
            BrokerInput::Received { connection, bytes } => self.on_received(now, connection, bytes),
            BrokerInput::Disconnected { connection } => {
                self.connections.remove(&connection);
            }
            input @ (BrokerInput::Partition { .. }
            | BrokerInput::RangesRead { .. }
            | BrokerInput::Store { .. }) => {
                self.partitions.handle(now, input);
            }
            BrokerInput::MetadataPersisted { version, result } => {
                self.on_metadata_persisted(now, version, result)
            }
            BrokerInput::FromShard { message, .. } => self.on_shard_message(now, message),
            BrokerInput::Peer(frame) => cluster::on_frame(self, now, frame),
            BrokerInput::Controller(input) => cluster::on_controller_input(self, now, input),
        }
        self.pump(now);
    }

    /// Whether the runtime should read more from a connection (back-pressure).
    pub fn wants_input(&self, connection: ConnectionId) -> bool {
        self.connections
            .get(&connection)
            .is_some_and(|c| c.order.len() < MAX_IN_FLIGHT_PER_CONNECTION && c.decoder.free_bytes() > 0)
    }

    fn on_received(&mut self, now: Instant, connection: ConnectionId, bytes: Bytes) {
        self.metrics.bytes_in += bytes.len() as u64;
        let mut rest = bytes;
        loop {
            let Some(conn) = self.connections.get_mut(&connection) else {
                return;
            };
            let taken = conn.decoder.push_bytes(&rest);
            rest.advance(taken);
            loop {
                let Some(conn) = self.connections.get_mut(&connection) else {
                    return;
                };
                match conn.decoder.next_frame() {
                    Ok(Some(frame)) => self.on_frame(now, connection, frame),
                    Ok(None) => break,
                    Err(error) => {
                        self.close_connection(connection, format!("bad frame: {error}"));
                        return;
                    }
                }
            }
            if rest.is_empty() || taken == 0 {
                if !rest.is_empty() {
                    // The decoder is full of one huge frame it is still waiting on; it
                    // cannot take more until that frame completes, which `push`
                    // guarantees it eventually does.
                    self.close_connection(connection, "frame larger than the decoder can hold".to_string());
                }
                return;
            }
        }
    }

    fn close_connection(&mut self, connection: ConnectionId, reason: String) {
        if self.connections.remove(&connection).is_some() {
            self.metrics.protocol_errors += 1;
            self.effects.push_back(BrokerEffect::Close { connection, reason });
        }
    }

    fn on_frame(&mut self, now: Instant, connection: ConnectionId, frame: Bytes) {
        let decoded = match decode_request(frame) {
            Ok(decoded) => decoded,
            Err(error) => {
                match error.reply() {
                    Some(reply) => {
                        let id = self.take_request_id();
                        if let Some(conn) = self.connections.get_mut(&connection) {
                            conn.order.push_back(id);
                            conn.ready.insert(id, Some(ResponseFrame::from(reply)));
                        }
                        self.flush(connection);
                    }
                    None => self.close_connection(connection, format!("bad request: {error}")),
                }
                return;
            }
        };
        *self
            .metrics
            .requests
            .entry(format!("{:?}", decoded.header.api_key))
            .or_default() += 1;
        let id = self.take_request_id();
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.order.push_back(id);
        }
        handlers::start(self, now, id, connection, decoded);
    }

    fn take_request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Records the answer of request `id` (or `None`: nothing to send, e.g. acks=0).
    fn respond(
        &mut self,
        connection: ConnectionId,
        id: u64,
        header: &RequestHeader,
        response: Option<Response>,
    ) {
        let frame = match response.map(|r| encode_response_frame(header, r)) {
            None => None,
            Some(Ok(frame)) => Some(frame),
            Some(Err(error)) => {
                self.close_connection(connection, format!("cannot encode response: {error}"));
                return;
            }
        };
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.ready.insert(id, frame);
        }
        self.flush(connection);
    }

    fn flush(&mut self, connection: ConnectionId) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        while let Some(id) = conn.order.front().copied() {
            let Some(answer) = conn.ready.remove(&id) else {
                break;
            };
            conn.order.pop_front();
            if let Some(frame) = answer {
                self.metrics.bytes_out += frame.len_bytes() as u64;
                self.effects.push_back(BrokerEffect::Send { connection, frame });
            }
        }
    }

    /// Routes an operation to the shard owning the partition.
    fn run_op(&mut self, now: Instant, op_ref: OpRef, topic: &str, partition: i32, op: PartitionOp) {
        let Some(meta) = self
            .metadata
            .topics
            .get(topic)
            .filter(|t| partition >= 0 && partition < t.partitions)
        else {
            self.on_op_result(
                now,
                op_ref,
                OpResult::Error(crate::kafka::ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0),
            );
            return;
        };
        let key = PartitionKey {
            topic: topic.to_string(),
            partition,
            revision: meta.revision,
        };
        if cluster::forward_op(self, now, op_ref, topic, partition, &op) {
            return;
        }
        if !cluster::is_replica(self, topic, partition) {
            // Not hosted on this broker: the client's metadata is stale.
            let code = crate::kafka::ErrorCode::NOT_LEADER_OR_FOLLOWER.0;
            self.on_op_result(now, op_ref, OpResult::Error(code));
            return;
        }
        let owner = shard_for(topic, partition, self.shard_count);
        if owner == self.shard {
            self.partitions.run(now, op_ref, (key.topic, key.partition), op);
        } else {
            self.effects.push_back(BrokerEffect::ToShard {
                to: owner,
                message: ShardMessage::Op { op_ref, key, op },
            });
        }
    }

    fn on_op_result(&mut self, now: Instant, op_ref: OpRef, result: OpResult) {
        if op_ref.origin != self.shard {
            self.effects.push_back(BrokerEffect::ToShard {
                to: op_ref.origin,
                message: ShardMessage::OpDone { op_ref, result },
            });
            return;
        }
        if cluster::on_local_result(self, op_ref, &result) {
            return;
        }
        if let Some(result) = txn_handlers::on_marker_result(self, now, op_ref, result) {
            handlers::on_result(self, now, op_ref, result);
        }
    }

    fn on_shard_message(&mut self, now: Instant, message: ShardMessage) {
        match message {
            ShardMessage::Op { op_ref, key, op } => {
                let tp = (key.topic.clone(), key.partition);
                if self.partitions.hosts(&key) {
                    self.partitions.run(now, op_ref, tp, op);
                } else {
                    let code = crate::kafka::ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0;
                    self.on_op_result(now, op_ref, OpResult::Error(code));
                }
            }
            ShardMessage::OpDone { op_ref, result } => {
                if cluster::on_local_result(self, op_ref, &result) {
                    return;
                }
                if let Some(result) = txn_handlers::on_marker_result(self, now, op_ref, result) {
                    handlers::on_result(self, now, op_ref, result);
                }
            }
            ShardMessage::Command {
                origin,
                request,
                command,
            } => self.apply_command(now, origin, request, command),
            ShardMessage::CommandDone { request, results } => {
                handlers::on_command_done(self, now, request, results)
            }
            ShardMessage::MetadataChanged { metadata } => self.on_metadata_changed(now, metadata),
            ShardMessage::LeaderEpoch {
                key,
                leader_epoch,
                leader,
            } => {
                if let Some((leader, term)) = leader {
                    cluster::note_leader(self, &key, leader, term);
                }
                self.epochs.insert((key.topic, key.partition), leader_epoch);
            }
            ShardMessage::ClusterChanged { view } => cluster::on_view(self, view),
            ShardMessage::Leader {
                key,
                leader,
                epoch,
                isr,
            } => cluster::learn_leader_here(self, key, leader, epoch, isr),
            ShardMessage::Raft { messages } => cluster::deliver_raft(self, now, messages),
            ShardMessage::ProducerIds(message) => producer_handlers::on_message(self, now, message),
        }
    }

    /// Sends a metadata command to shard 0 (or applies it, on shard 0).
    fn submit_command(&mut self, now: Instant, request: u64, command: MetadataCommand) {
        if self.shard == ShardId(0) {
            self.apply_command(now, self.shard, request, command);
        } else {
            self.effects.push_back(BrokerEffect::ToShard {
                to: ShardId(0),
                message: ShardMessage::Command {
                    origin: self.shard,
                    request,
                    command,
                },
            });
        }
    }

    /// Shard 0: applies a command to the metadata; answers once it is durable.
    fn apply_command(&mut self, now: Instant, origin: ShardId, request: u64, command: MetadataCommand) {
        if self.cluster.is_some() {
            cluster::submit(self, now, origin, request, command);
            return;
        }
        let (results, changed) = handlers::apply_command(&mut self.metadata, &self.log_defaults, command, 1);
        if !changed {
            self.command_done(now, origin, request, results);
            return;
        }
        self.metadata.version += 1;
        let version = self.metadata.version;
        self.persist_waits.push((version, origin, request, results));
        self.effects.push_back(BrokerEffect::PersistMetadata {
            version,
            data: self.metadata.encode(),
        });
    }

    fn command_done(&mut self, now: Instant, origin: ShardId, request: u64, results: CommandResults) {
        if origin == self.shard {
            handlers::on_command_done(self, now, request, results);
        } else {
            self.effects.push_back(BrokerEffect::ToShard {
                to: origin,
                message: ShardMessage::CommandDone { request, results },
            });
        }
    }

    fn on_metadata_persisted(
        &mut self,
        now: Instant,
        version: u64,
        result: Result<(), crate::log::DiskError>,
    ) {
        let durable = result.is_ok();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.persist_waits)
            .into_iter()
            .partition(|(v, ..)| *v <= version);
        self.persist_waits = waiting;
        match result {
            Ok(()) => {
                if version >= self.durable_metadata.version {
                    self.durable_metadata = self.metadata.clone();
                    self.durable_metadata.version = version.max(self.durable_metadata.version);
                }
                let metadata = self.metadata.clone();
                self.broadcast_metadata(now, metadata);
                for (_, origin, request, results) in done {
                    self.command_done(now, origin, request, results);
                }
            }
            Err(error) => {
                // Roll back to what is durable; every command not yet durable fails.
                self.metadata = self.durable_metadata.clone();
                let code = crate::kafka::ErrorCode::KAFKA_STORAGE_ERROR.0;
                let all = done.into_iter().chain(std::mem::take(&mut self.persist_waits));
                for (_, origin, request, results) in all.collect::<Vec<_>>() {
                    let failed = results
                        .into_iter()
                        .map(|(name, _, _)| (name, code, Some(format!("metadata not durable: {error}"))))
                        .collect();
                    self.command_done(now, origin, request, failed);
                }
            }
        }
        producer_handlers::on_metadata_persisted(self, now, version, durable);
    }

    /// Shard 0: applies `metadata` here and sends it to every other shard.
    fn broadcast_metadata(&mut self, now: Instant, metadata: Metadata) {
        for shard in (1..self.shard_count).map(ShardId) {
            self.effects.push_back(BrokerEffect::ToShard {
                to: shard,
                message: ShardMessage::MetadataChanged {
                    metadata: metadata.clone(),
                },
            });
        }
        self.metadata = metadata.clone();
        self.on_metadata_changed(now, metadata);
    }

    /// Whether `metadata` has this broker host partition `key` (that incarnation).
    fn wants_replica(&self, metadata: &Metadata, key: &PartitionKey) -> bool {
        metadata
            .topics
            .get(&key.topic)
            .is_some_and(|t| t.revision == key.revision && key.partition < t.partitions)
            && cluster::is_replica(self, &key.topic, key.partition)
    }

    /// Makes this shard's partitions match `metadata`: create, remove, reconfigure.
    fn on_metadata_changed(&mut self, now: Instant, metadata: Metadata) {
        if self.shard != ShardId(0) {
            self.metadata = metadata.clone();
        }
        cluster::on_metadata(self);
        for key in self.partitions.keys() {
            let wanted = self.wants_replica(&metadata, &key);
            let tp = (key.topic.clone(), key.partition);
            if wanted {
                let config = self.log_config_for(&metadata, &key.topic);
                self.partitions.set_log_config(&tp, config);
                let tier = self.tier_config_for(&metadata, &key.topic);
                self.partitions.set_tier(now, &tp, tier);
            } else {
                self.partitions.remove(&tp);
                self.epochs.remove(&tp);
            }
        }
        for key in self.partitions.tier_recovering_keys() {
            if !self.wants_replica(&metadata, &key) {
                self.partitions.tier_cancel_recovery(&key);
            }
        }
        for (topic, meta) in &metadata.topics {
            for partition in 0..meta.partitions {
                if shard_for(topic, partition, self.shard_count) != self.shard {
                    continue;
                }
                let key = PartitionKey {
                    topic: topic.clone(),
                    partition,
                    revision: meta.revision,
                };
                if self.partitions.hosts(&key)
                    || self.partitions.tier_recovering(&key)
                    || !cluster::is_replica(self, topic, partition)
                {
                    continue;
                }
                let voters = cluster::voters(self, topic, partition);
                let config = self.log_config_for(&metadata, topic);
                let tp = (key.topic.clone(), key.partition);
                let (log, hard_state) = match self.recovered.remove(&tp) {
                    Some(found) if found.key == key => {
                        let mut log = found.log;
                        log.set_config(config);
                        (log, found.hard_state)
                    }
                    other => {
                        if let Some(other) = other {
                            // Another incarnation of the topic: left on disk, untouched.
                            self.recovered.insert(tp.clone(), other);
                        }
                        // A recovery topic's new partition starts from the store's
                        // manifest, hosted once that is read.
                        let tier = self.tier_config_for(&metadata, topic);
                        if self
                            .partitions
                            .tier_recover(now, key.clone(), config.clone(), &voters, tier)
                        {
                            continue;
                        }
                        self.effects
                            .push_back(BrokerEffect::OpenPartition { key: key.clone() });
                        (Log::new(config, 0), HardState::default())
                    }
                };
                if self.partitions.host(now, key, log, hard_state, &voters).is_err() {
                    self.metrics.partition_errors += 1;
                } else {
                    let tier = self.tier_config_for(&metadata, topic);
                    self.partitions.set_tier(now, &tp, tier);
                }
            }
        }
        let topics: crate::group::Topics = metadata
            .topics
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    crate::group::TopicInfo {
                        id: t.topic_id,
                        partitions: t.partitions,
                    },
                )
            })
            .collect();
        self.partitions.set_topics(now, topics);
        self.epochs.retain(|(topic, partition), _| {
            metadata
                .topics
                .get(topic)
                .is_some_and(|t| *partition < t.partitions)
        });
    }

    /// Moves partition results, epoch changes and effects out of the partition table.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some((op_ref, result)) = self.partitions.results.pop_front() {
                progressed = true;
                self.on_op_result(now, op_ref, result);
            }
            while let Some((key, epoch, leader, term)) = self.partitions.epoch_changes.pop_front() {
                progressed = true;
                self.epochs.insert((key.topic.clone(), key.partition), epoch);
                let leader = leader.and_then(|l| i32::try_from(l).ok()).map(|l| (l, term));
                if let Some((leader, term)) = leader {
                    cluster::note_leader(self, &key, leader, term);
                }
                for shard in (0..self.shard_count).map(ShardId).filter(|s| *s != self.shard) {
                    self.effects.push_back(BrokerEffect::ToShard {
                        to: shard,
                        message: ShardMessage::LeaderEpoch {
                            key: key.clone(),
                            leader_epoch: epoch,
                            leader,
                        },
                    });
                }
            }
            while let Some(effect) = self.partitions.effects.pop_front() {
                progressed = true;
                match effect {
                    BrokerEffect::Partition {
                        key,
                        effect: crate::partition::ReplicaEffect::Send(message),
                    } if self.cluster.is_some() => cluster::send_raft(self, &key, message),
                    effect => self.effects.push_back(effect),
                }
            }
            progressed |= txn_handlers::route_markers(self, now);
            if !progressed {
                break;
            }
        }
        cluster::pump_controller(self, now);
        cluster::flush(self);
    }

    fn expire(&mut self, now: Instant, id: u64) {
        handlers::expire(self, now, id);
    }
}
