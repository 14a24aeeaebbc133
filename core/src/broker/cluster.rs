//! Cluster mode of the broker: the node is one of several, its metadata is the state of
//! the controller Raft group 0, and every partition is a Raft group over the brokers
//! the controller placed it on.
//!
//! What this module owns:
//!
//! * Shard 0 hosts this broker's [`ControllerReplica`]. Metadata commands (CreateTopics,
//!   DeleteTopics, CreatePartitions, config changes) are validated against the
//!   controller's state exactly as on a single node, turned into controller
//!   [`Command`]s (new topics placed by [`place`]), and proposed — by the controller
//!   leader itself, or forwarded to it ([`ClusterMessage::Propose`]). A request is
//!   answered once its commands are applied here, so a client that created a topic
//!   through this broker sees it in this broker's Metadata next.
//! * Every applied change becomes the broker's [`Metadata`] plus a [`ClusterView`]
//!   (brokers, placement, controller leader), sent to every shard, which hosts the
//!   partitions placed on this broker with their replicas as Raft voters.
//! * Raft messages of every group leave through one [`Outbox`] per shard (one frame per
//!   peer per turn) as [`BrokerEffect::SendPeer`]; frames from peers arrive at shard 0
//!   ([`BrokerInput::Peer`]), which hands each group's messages to the shard hosting it.
//! * Leaderships: each broker tells its peers which partitions it leads
//!   ([`ClusterMessage::Leaders`], on change and every [`GOSSIP_INTERVAL`]), so any broker
//!   answers Metadata and FindCoordinator with the right leader.
//! * The broker registers itself with the controller at start (and again until its
//!   registration is applied), and asks it for producer-id blocks.

use super::io::{BrokerEffect, PartitionKey, ShardId};
use super::metadata::Metadata;
use super::partitions::TopicPartition;
use super::shard::{CommandResults, MetadataCommand, NewTopic, OpRef, OpResult, PartitionOp, ShardMessage};
use super::{handlers, producer_handlers, Broker};
use crate::controller::{
    place, BrokerRegistration, Command, ControllerEffect, ControllerError, ControllerEvent, ControllerInput,
    ControllerReplica, ControllerState, LivenessTracker, Outcome,
};
use crate::kafka::ErrorCode;
use crate::raft::{ConfigChange, Effect as RaftEffect, Input as RaftInput, Message, Role};
use crate::rpc::{
    encode_cluster_frame, ClusterMessage, Frame, GroupId, LeaderNote, OpReference, Outbox, OutboxConfig,
    RemoteOp,
};
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How often a broker repeats the leaderships it holds to its peers.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(1_000);
/// How often an unapplied registration is proposed again.
const REGISTER_RETRY: Duration = Duration::from_millis(1_000);
/// How long an operation forwarded to a partition's leader may wait for its answer.
const REMOTE_OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command forwarded to the controller leader may wait for its answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);
/// Most commands waiting for the controller at once (beyond: REQUEST_TIMED_OUT).
const MAX_WAITING_COMMANDS: usize = 4_096;
/// A follower not heard from for this long leaves the in-sync replicas.
const ISR_MAX_SILENCE: Duration = Duration::from_secs(10);
/// A broker the controller leader has not heard from for this long is proposed dead
/// (placement then leaves it out); brokers report in with every frame they send, at
/// least every [`GOSSIP_INTERVAL`].
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(6);
/// Bits of a partition's Raft group id that hold the partition number.
const PARTITION_BITS: u32 = 20;

/// The Raft group id of a partition: its topic's revision and its number (group 0 is
/// the controller). Stable and equal on every broker.
pub fn group_of(key: &PartitionKey) -> GroupId {
    let revision = u64::try_from(key.revision).unwrap_or(0) + 1;
    let partition = u64::try_from(key.partition).unwrap_or(0) & ((1 << PARTITION_BITS) - 1);
    (revision << PARTITION_BITS) | partition
}

/// What a broker in a cluster is started with.
#[derive(Debug)]
pub struct ClusterSetup {
    /// Shard 0 only: this broker's member of controller group 0.
    pub controller: Option<ControllerReplica>,
    /// What this broker registers with (id, addresses, incarnation).
    pub registration: BrokerRegistration,
    /// The brokers to talk to first: (broker id, RPC address).
    pub seeds: Vec<(u64, String)>,
    /// Replication factor of topics created without one (capped by live brokers).
    pub default_replication_factor: i16,
}

/// A broker's addresses, as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Kafka listener host.
    pub host: String,
    /// Kafka listener port.
    pub port: u16,
    /// Broker-to-broker RPC address.
    pub rpc_addr: String,
    /// Whether the controller counts it alive.
    pub alive: bool,
}

/// The cluster as every shard sees it (sent by shard 0 before each metadata change).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClusterView {
    /// Registered brokers by id.
    pub brokers: BTreeMap<i32, BrokerAddress>,
    /// Replicas of every partition, by topic (first: preferred leader).
    pub assignments: BTreeMap<String, Vec<Vec<i32>>>,
    /// The controller leader, if known.
    pub controller: Option<i32>,
}

impl ClusterView {
    fn of(state: &ControllerState, controller: Option<i32>) -> ClusterView {
        let brokers = state
            .brokers
            .iter()
            .filter_map(|(id, info)| {
                let (host, port) = split_addr(&info.registration.kafka_addr)?;
                Some((
                    i32::try_from(*id).ok()?,
                    BrokerAddress {
                        host,
                        port,
                        rpc_addr: info.registration.rpc_addr.clone(),
                        alive: info.alive,
                    },
                ))
            })
            .collect();
        let assignments = state
            .assignments
            .iter()
            .map(|(topic, parts)| {
                let parts = parts
                    .iter()
                    .map(|a| a.replicas.iter().filter_map(|r| i32::try_from(*r).ok()).collect())
                    .collect();
                (topic.clone(), parts)
            })
            .collect();
        ClusterView {
            brokers,
            assignments,
            controller,
        }
    }

    /// The replicas of a partition.
    pub fn replicas(&self, topic: &str, partition: i32) -> Option<&[i32]> {
        let index = usize::try_from(partition).ok()?;
        self.assignments.get(topic)?.get(index).map(Vec::as_slice)
    }
}

/// `host:port` → parts.
fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
}

/// Who waits for a controller command.
#[derive(Clone, Debug)]
enum Waiter {
    /// One entry of a client's metadata request.
    Entry { batch: u64, slot: usize },
    /// A peer's forwarded proposal.
    Peer { node: u64, request: u64 },
    /// This broker's own registration.
    Registration,
    /// A producer-id block for a shard.
    ProducerIds { origin: ShardId },
    /// A liveness change proposed by this controller leader.
    Liveness,
}

/// A client's metadata request waiting for its commands.
#[derive(Debug)]
struct Batch {
    origin: ShardId,
    request: u64,
    results: CommandResults,
    open: usize,
}

/// Shard 0's controller host.
#[derive(Debug)]
struct ControllerHost {
    replica: ControllerReplica,
    registration: BrokerRegistration,
    /// When the registration may be proposed again (None: applied).
    register_at: Option<Instant>,
    /// Proposals waiting to be applied here: index → (term if proposed here, waiter).
    applying: BTreeMap<u64, Vec<(Option<u64>, Waiter)>>,
    /// Commands forwarded to the leader: request id → (waiter, deadline).
    forwarded: BTreeMap<u64, (Waiter, Instant)>,
    next_forward: u64,
    batches: BTreeMap<u64, Batch>,
    next_batch: u64,
    /// Peer addresses handed to the runtime.
    peers: BTreeMap<u64, String>,
    /// The state changed since the last broadcast.
    dirty: bool,
    /// While this broker leads the controller: who reported in when.
    liveness: Option<LivenessTracker>,
    /// Liveness proposals not applied yet (one round at a time).
    liveness_in_flight: usize,
}

/// A broker's cluster state (every shard; the controller host on shard 0).
#[derive(Debug)]
pub struct Cluster {
    node: u64,
    /// The latest view from shard 0.
    pub view: ClusterView,
    /// Known leaders: partition → (leader, epoch).
    pub leaders: BTreeMap<TopicPartition, (i32, i32)>,
    /// In-sync replicas as their leaders last reported them.
    pub isr: BTreeMap<TopicPartition, Vec<i32>>,
    outbox: Outbox,
    default_replication_factor: i16,
    host: Option<Box<ControllerHost>>,
    next_gossip_at: Instant,
    gossip_now: bool,
    /// Group id → partition, for routing incoming messages (shard 0).
    groups: BTreeMap<GroupId, PartitionKey>,
    /// Counters for `/metrics`.
    pub stats: ClusterStats,
    /// Operations forwarded to other brokers: (request, slot) → (kind, deadline).
    remote_waits: BTreeMap<(u64, u32), (u8, Instant)>,
    /// Shard 0: peers' operations running here: request → (peer, its reference, kind).
    remote_in: BTreeMap<u64, (u64, OpReference, u8)>,
}

/// Cluster counters of one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Raft messages not queued (too large, or too much pending): Raft sends again.
    pub raft_messages_dropped: u64,
    /// Registrations the controller refused.
    pub registration_refusals: u64,
    /// Why the last registration was refused.
    pub last_registration_error: Option<String>,
}

impl Cluster {
    /// Cluster state of one shard.
    pub fn new(node: u64, setup: ClusterSetup, now: Instant) -> Cluster {
        let host = setup.controller.map(|replica| {
            let peers = setup
                .seeds
                .iter()
                .filter(|(id, _)| *id != node)
                .cloned()
                .collect();
            Box::new(ControllerHost {
                replica,
                registration: setup.registration,
                register_at: Some(now),
                applying: BTreeMap::new(),
                forwarded: BTreeMap::new(),
                next_forward: 1,
                batches: BTreeMap::new(),
                next_batch: 1,
                peers,
                dirty: true,
                liveness: None,
                liveness_in_flight: 0,
            })
        });
        Cluster {
            node,
            view: ClusterView::default(),
            leaders: BTreeMap::new(),
            isr: BTreeMap::new(),
            outbox: Outbox::new(node, OutboxConfig::default()),
            default_replication_factor: setup.default_replication_factor.max(1),
            host,
            next_gossip_at: now + GOSSIP_INTERVAL,
            gossip_now: false,
            groups: BTreeMap::new(),
            stats: ClusterStats::default(),
            remote_waits: BTreeMap::new(),
            remote_in: BTreeMap::new(),
        }
    }

    /// The controller replica (shard 0).
    pub fn controller(&self) -> Option<&ControllerReplica> {
        self.host.as_ref().map(|h| &h.replica)
    }

    /// When [`handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let host = self.host.as_ref();
        [
            host.and_then(|h| h.replica.poll_timeout()),
            host.and_then(|h| h.register_at),
            host.and_then(|h| h.forwarded.values().map(|(_, d)| *d).min()),
            // While a round is being committed the tracker waits for it (no deadline
            // in the past to spin on).
            host.filter(|h| h.liveness_in_flight == 0)
                .and_then(|h| h.liveness.as_ref()?.poll_timeout(h.replica.state())),
            Some(self.next_gossip_at),
            self.remote_waits.values().map(|(_, d)| *d).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The peer addresses the runtime must know at start (shard 0).
pub fn start(broker: &mut Broker, now: Instant) {
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    if let Some(host) = cluster.host.as_ref() {
        for (node, addr) in &host.peers {
            broker.effects.push_back(BrokerEffect::SetPeer {
                node: *node,
                addr: addr.clone(),
            });
        }
    }
    pump_controller(broker, now);
}

/// Queues a Raft message of a partition for its peer.
pub fn send_raft(broker: &mut Broker, key: &PartitionKey, message: Message) {
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    if cluster.outbox.push(group_of(key), message).is_err() {
        // Too large or too much pending: Raft sends again.
        cluster.stats.raft_messages_dropped += 1;
    }
}

/// Turns everything queued in the outbox into frames for the runtime.
pub fn flush(broker: &mut Broker) {
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    for (node, bytes) in cluster.outbox.flush() {
        broker.effects.push_back(BrokerEffect::SendPeer { node, bytes });
    }
}

fn send_cluster(broker: &mut Broker, to: u64, messages: Vec<ClusterMessage>) {
    let Some(cluster) = broker.cluster.as_ref() else {
        return;
    };
    let bytes = encode_cluster_frame(cluster.node, to, messages);
    broker
        .effects
        .push_back(BrokerEffect::SendPeer { node: to, bytes });
}

/// A frame from a peer (shard 0): Raft messages go to their groups, cluster messages
/// are handled here.
pub fn on_frame(broker: &mut Broker, now: Instant, frame: Frame) {
    let from = frame.from;
    if let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) {
        let state = host.replica.state();
        if let (Some(tracker), Some(info)) = (host.liveness.as_mut(), state.brokers.get(&from)) {
            tracker.on_heartbeat(now, from, info.registration.epoch, state);
        }
    }
    for cm in frame.cluster {
        on_cluster_message(broker, now, from, cm);
    }
    let mut by_shard: BTreeMap<ShardId, Vec<(PartitionKey, Message)>> = BTreeMap::new();
    for gm in frame.messages {
        if gm.group == 0 {
            if let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) {
                host.replica
                    .handle(now, ControllerInput::Raft(RaftInput::Message(gm.message)));
            }
            continue;
        }
        let Some(key) = broker
            .cluster
            .as_ref()
            .and_then(|c| c.groups.get(&gm.group))
            .cloned()
        else {
            // Not created here yet (or deleted): Raft sends again.
            continue;
        };
        let shard = super::shard_for(&key.topic, key.partition, broker.shard_count);
        by_shard.entry(shard).or_default().push((key, gm.message));
    }
    for (shard, messages) in by_shard {
        if shard == broker.shard {
            deliver_raft(broker, now, messages);
        } else {
            broker.effects.push_back(BrokerEffect::ToShard {
                to: shard,
                message: ShardMessage::Raft { messages },
            });
        }
    }
    pump_controller(broker, now);
}

/// Raft messages for partitions of this shard.
pub fn deliver_raft(broker: &mut Broker, now: Instant, messages: Vec<(PartitionKey, Message)>) {
    for (key, message) in messages {
        if broker.partitions.hosts(&key) {
            broker.partitions.handle(
                now,
                super::BrokerInput::Partition {
                    key,
                    input: crate::partition::ReplicaInput::Message(message),
                },
            );
        }
    }
}

fn on_cluster_message(broker: &mut Broker, now: Instant, from: u64, message: ClusterMessage) {
    match message {
        ClusterMessage::Propose { request, command } => {
            let waiter = Waiter::Peer { node: from, request };
            match Command::decode(&command) {
                // Relayed once more if this broker knows a leader other than the sender
                // (a joining broker asks a seed, not knowing the leader yet).
                Ok(command) => propose_from(broker, now, command, waiter, Forwarding::RelayedFrom(from)),
                Err(error) => resolve(
                    broker,
                    now,
                    waiter,
                    Err((
                        ErrorCode::INVALID_REQUEST.0,
                        format!("undecodable command: {error}"),
                    )),
                ),
            }
        }
        ClusterMessage::Proposed {
            request,
            code,
            message,
            index,
        } => {
            let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) else {
                return;
            };
            let Some((waiter, _)) = host.forwarded.remove(&request) else {
                return;
            };
            if code == 0 {
                // Answer once it is applied here too (read-your-writes on this broker).
                let applied = host.replica.last_applied().map_or(0, |a| a.index + 1);
                if index < applied {
                    resolve(broker, now, waiter, Ok(None));
                } else {
                    host.applying.entry(index).or_default().push((None, waiter));
                }
            } else {
                resolve(broker, now, waiter, Err((code, message)));
            }
        }
        ClusterMessage::Leaders { notes } => {
            for note in notes {
                learn_leader(broker, note);
            }
        }
        ClusterMessage::RemoteOp {
            reference,
            topic,
            partition,
            op,
        } => run_remote_op(broker, now, from, reference, topic, partition, op),
        ClusterMessage::RemoteOpDone {
            reference,
            kind,
            code,
        } => {
            let op_ref = OpRef {
                origin: ShardId(reference.shard),
                request: reference.request,
                slot: reference.slot,
            };
            broker.on_op_result(now, op_ref, remote_result(kind, code));
        }
    }
}

/// The result a remote operation's answer stands for.
fn remote_result(kind: u8, code: i16) -> OpResult {
    use crate::rpc::cluster::{REMOTE_ADD, REMOTE_VERIFY};
    match (kind, code) {
        (REMOTE_VERIFY | REMOTE_ADD, 0) => OpResult::Txn(Box::new(crate::txn::TxnResult::Done)),
        (REMOTE_VERIFY | REMOTE_ADD, code) => OpResult::Txn(Box::new(crate::txn::TxnResult::Error(code))),
        // A marker's success is code 0 (all its caller looks at).
        (_, code) => OpResult::Error(code),
    }
}

/// The Kafka error code of a result (a coordinator's answer included).
fn result_code(result: &OpResult) -> i16 {
    match result {
        OpResult::Txn(r) => match **r {
            crate::txn::TxnResult::Error(code) => code,
            _ => 0,
        },
        other => other.error_code(),
    }
}

/// Shard 0: runs a peer's operation on the partition here and answers it when done.
fn run_remote_op(
    broker: &mut Broker,
    now: Instant,
    from: u64,
    reference: OpReference,
    topic: String,
    partition: i32,
    op: RemoteOp,
) {
    let kind = op.kind();
    let verify_only = matches!(op, RemoteOp::VerifyTxn { .. });
    let op = match op {
        RemoteOp::Marker { marker, timestamp_ms } => PartitionOp::WriteMarker { marker, timestamp_ms },
        RemoteOp::VerifyTxn {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
        }
        | RemoteOp::AddToTxn {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
        } => PartitionOp::Txn(Box::new(crate::txn::TxnOp::AddPartitions {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
            verify_only,
        })),
    };
    let request = broker.take_request_id();
    if let Some(cluster) = broker.cluster.as_mut() {
        cluster.remote_in.insert(request, (from, reference, kind));
    }
    let op_ref = OpRef {
        origin: broker.shard,
        request,
        slot: 0,
    };
    broker.run_op(now, op_ref, &topic, partition, op);
}

/// Whether `op_ref` belongs to a Produce or TxnOffsetCommit, whose transaction
/// protocol v2 adds partitions to the transaction on the client's behalf (a client's
/// own AddPartitionsToTxn goes to the coordinator it found, and is not relayed).
fn implicit_add(broker: &Broker, op_ref: OpRef) -> bool {
    use crate::kafka::protocol::messages::ApiKey;
    matches!(
        super::handlers::pending_api(broker, op_ref.request),
        Some(ApiKey::Produce | ApiKey::TxnOffsetCommit)
    )
}

/// Sends an operation on a partition led by another broker to that broker (markers,
/// produce verifications and transaction protocol v2's implicit additions); false if
/// it must run here.
pub fn forward_op(
    broker: &mut Broker,
    now: Instant,
    op_ref: OpRef,
    topic: &str,
    partition: i32,
    op: &PartitionOp,
) -> bool {
    let Some((leader, _)) = leader_of(broker, topic, partition) else {
        return false;
    };
    // A peer's operation runs here or fails here: relaying it again could bounce it
    // between two brokers whose leader tables disagree for a moment.
    let from_peer = broker
        .cluster
        .as_ref()
        .is_none_or(|c| c.remote_in.contains_key(&op_ref.request) && op_ref.origin == broker.shard);
    if from_peer || leader == broker.node_id {
        return false;
    }
    let remote = match op {
        PartitionOp::WriteMarker { marker, timestamp_ms } => RemoteOp::Marker {
            marker: *marker,
            timestamp_ms: *timestamp_ms,
        },
        PartitionOp::Txn(txn) => match &**txn {
            crate::txn::TxnOp::AddPartitions {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                verify_only,
            } if *verify_only || implicit_add(broker, op_ref) => {
                let (transactional_id, partitions) = (transactional_id.clone(), partitions.clone());
                let (producer_id, producer_epoch) = (*producer_id, *producer_epoch);
                if *verify_only {
                    RemoteOp::VerifyTxn {
                        transactional_id,
                        producer_id,
                        producer_epoch,
                        partitions,
                    }
                } else {
                    RemoteOp::AddToTxn {
                        transactional_id,
                        producer_id,
                        producer_epoch,
                        partitions,
                    }
                }
            }
            _ => return false,
        },
        _ => return false,
    };
    let Ok(to) = u64::try_from(leader) else {
        return false;
    };
    let kind = remote.kind();
    if let Some(cluster) = broker.cluster.as_mut() {
        cluster
            .remote_waits
            .insert((op_ref.request, op_ref.slot), (kind, now + REMOTE_OP_TIMEOUT));
    }
    let reference = OpReference {
        shard: op_ref.origin.0,
        request: op_ref.request,
        slot: op_ref.slot,
    };
    let message = ClusterMessage::RemoteOp {
        reference,
        topic: topic.to_string(),
        partition,
        op: remote,
    };
    send_cluster(broker, to, vec![message]);
    true
}

/// A result on its origin shard: a peer's operation is answered to the peer (true:
/// consumed); a forwarded operation's wait ends (false: deliver as usual).
pub fn on_local_result(broker: &mut Broker, op_ref: OpRef, result: &OpResult) -> bool {
    let Some(cluster) = broker.cluster.as_mut() else {
        return false;
    };
    cluster.remote_waits.remove(&(op_ref.request, op_ref.slot));
    let Some((from, reference, kind)) = cluster.remote_in.remove(&op_ref.request) else {
        return false;
    };
    let done = ClusterMessage::RemoteOpDone {
        reference,
        kind,
        code: result_code(result),
    };
    send_cluster(broker, from, vec![done]);
    true
}

/// Forwarded operations whose answer did not come in time fail (retriable).
fn expire_remote_ops(broker: &mut Broker, now: Instant) {
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    let expired: Vec<((u64, u32), u8)> = cluster
        .remote_waits
        .iter()
        .filter(|(_, (_, deadline))| *deadline <= now)
        .map(|(key, (kind, _))| (*key, *kind))
        .collect();
    for (key, _) in &expired {
        cluster.remote_waits.remove(key);
    }
    for ((request, slot), kind) in expired {
        let op_ref = OpRef {
            origin: broker.shard,
            request,
            slot,
        };
        let result = remote_result(kind, ErrorCode::REQUEST_TIMED_OUT.0);
        broker.on_op_result(now, op_ref, result);
    }
}

/// Records a leadership heard from a peer and tells the other shards.
fn learn_leader(broker: &mut Broker, note: LeaderNote) {
    let wanted = broker
        .metadata
        .topics
        .get(&note.topic)
        .is_some_and(|t| t.revision == note.revision && note.partition < t.partitions);
    let Ok(leader) = i32::try_from(note.leader) else {
        return;
    };
    if !wanted {
        return;
    }
    let isr: Vec<i32> = note.isr.iter().filter_map(|id| i32::try_from(*id).ok()).collect();
    let key = PartitionKey {
        topic: note.topic,
        partition: note.partition,
        revision: note.revision,
    };
    for shard in (0..broker.shard_count)
        .map(ShardId)
        .filter(|s| *s != broker.shard)
    {
        broker.effects.push_back(BrokerEffect::ToShard {
            to: shard,
            message: ShardMessage::Leader {
                key: key.clone(),
                leader,
                epoch: note.epoch,
                isr: isr.clone(),
            },
        });
    }
    learn_leader_here(broker, key, leader, note.epoch, isr);
}

/// Records a leadership and its in-sync replicas on this shard (a newer epoch wins).
pub fn learn_leader_here(broker: &mut Broker, key: PartitionKey, leader: i32, epoch: i32, isr: Vec<i32>) {
    let tp = (key.topic, key.partition);
    record_leader(broker, &tp, leader, epoch);
    if let Some(cluster) = broker.cluster.as_mut() {
        if cluster.leaders.get(&tp) == Some(&(leader, epoch)) {
            cluster.isr.insert(tp, isr);
        }
    }
}

/// Keeps the leadership with the highest epoch; true if it changed.
pub fn record_leader(broker: &mut Broker, tp: &TopicPartition, leader: i32, epoch: i32) -> bool {
    let Some(cluster) = broker.cluster.as_mut() else {
        return false;
    };
    match cluster.leaders.get(tp) {
        Some((l, e)) if *e > epoch || (*e == epoch && *l == leader) => false,
        _ => {
            cluster.leaders.insert(tp.clone(), (leader, epoch));
            true
        }
    }
}

/// A leadership learned on this broker (a local replica's, or from another shard):
/// recorded, and gossiped when this broker is the leader.
pub fn note_leader(broker: &mut Broker, key: &PartitionKey, leader: i32, term: i32) {
    let tp = (key.topic.clone(), key.partition);
    if record_leader(broker, &tp, leader, term) && leader == broker.node_id {
        if let Some(cluster) = broker.cluster.as_mut() {
            cluster.gossip_now = true;
        }
    }
}

/// The Raft voters of a partition with their priorities: its replicas, the preferred
/// leader (first replica) on top, so leadership returns to it once it is back and
/// caught up (Raft's transfer to priority). Empty on a single node.
pub fn voters(broker: &Broker, topic: &str, partition: i32) -> Vec<(u64, crate::raft::Priority)> {
    let replicas: Vec<u64> = broker
        .cluster
        .as_ref()
        .and_then(|c| c.view.replicas(topic, partition))
        .map(|r| r.iter().filter_map(|id| u64::try_from(*id).ok()).collect())
        .unwrap_or_default();
    crate::controller::voter_priorities(&replicas)
}

/// Shard 0: a metadata command of a client request.
pub fn submit(broker: &mut Broker, now: Instant, origin: ShardId, request: u64, command: MetadataCommand) {
    let Some(state) = broker
        .cluster
        .as_ref()
        .and_then(|c| c.controller())
        .map(|r| r.state().clone())
    else {
        return;
    };
    // The replication factor a topic may ask for: as many brokers as the cluster has
    // (registered, or at least the controller's voters while brokers still register).
    // Placement then needs that many live brokers, or the request fails (retriable) —
    // never a silently under-replicated topic.
    let voters = broker
        .cluster
        .as_ref()
        .and_then(|c| c.controller())
        .map_or(1, |r| r.raft().membership().voters().len());
    let brokers = state.brokers.len().max(voters);
    let max_rf = i16::try_from(brokers).unwrap_or(i16::MAX).max(1);
    let mut candidate = state.metadata.clone();
    let (mut results, changed) =
        handlers::apply_command(&mut candidate, &broker.log_defaults, command.clone(), max_rf);
    if !changed {
        broker.command_done(now, origin, request, results);
        return;
    }
    let default_rf = broker
        .cluster
        .as_ref()
        .map_or(1, |c| c.default_replication_factor)
        .min(max_rf);
    let commands = commands_for(&state, &candidate, command, &mut results, default_rf);
    if commands.is_empty() {
        broker.command_done(now, origin, request, results);
        return;
    }
    let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) else {
        return;
    };
    let batch = host.next_batch;
    host.next_batch += 1;
    host.batches.insert(
        batch,
        Batch {
            origin,
            request,
            results,
            open: commands.len(),
        },
    );
    for (slot, command) in commands {
        propose(broker, now, command, Waiter::Entry { batch, slot }, true);
    }
    pump_controller(broker, now);
}

/// The controller commands that make `old` into `new` for `command`'s entries that
/// validated; an entry whose placement fails gets the error in `results`.
fn commands_for(
    state: &ControllerState,
    new: &Metadata,
    command: MetadataCommand,
    results: &mut CommandResults,
    default_rf: i16,
) -> Vec<(usize, Command)> {
    let ok = |results: &CommandResults, name: &str| {
        results.iter().position(|(n, code, _)| n == name && *code == 0)
    };
    let mut out = Vec::new();
    match command {
        MetadataCommand::CreateTopics {
            topics,
            validate_only: false,
        } => {
            for NewTopic {
                name,
                partitions,
                replication_factor,
                ..
            } in topics
            {
                let (Some(slot), Some(meta)) = (ok(results, &name), new.topics.get(&name)) else {
                    continue;
                };
                let rf = if replication_factor < 1 {
                    default_rf
                } else {
                    replication_factor
                };
                let count = usize::try_from(partitions).unwrap_or(0);
                match place(state, count, usize::try_from(rf).unwrap_or(1)) {
                    Ok(assignment) => out.push((
                        slot,
                        Command::CreateTopic {
                            name,
                            configs: meta.configs.clone(),
                            assignment,
                        },
                    )),
                    Err(e) => {
                        results[slot] = (name, ErrorCode::INVALID_REPLICATION_FACTOR.0, Some(e.to_string()));
                    }
                }
            }
        }
        MetadataCommand::DeleteTopics { topics } => {
            for name in topics {
                if let Some(slot) = ok(results, &name) {
                    out.push((slot, Command::DeleteTopic { name }));
                }
            }
        }
        MetadataCommand::CreatePartitions {
            topics,
            validate_only: false,
        } => {
            for (name, count) in topics {
                let Some(slot) = ok(results, &name) else {
                    continue;
                };
                let old = state.metadata.topics.get(&name).map_or(0, |t| t.partitions);
                let rf = state
                    .assignments
                    .get(&name)
                    .and_then(|a| a.first())
                    .map_or(1, |a| a.replicas.len());
                let added = usize::try_from(count - old).unwrap_or(0);
                match place(state, added, rf) {
                    Ok(assignment) => out.push((slot, Command::CreatePartitions { name, assignment })),
                    Err(e) => {
                        results[slot] = (name, ErrorCode::INVALID_REPLICATION_FACTOR.0, Some(e.to_string()));
                    }
                }
            }
        }
        MetadataCommand::AlterConfigs {
            topics,
            validate_only: false,
            ..
        } => {
            for (name, _) in topics {
                let (Some(slot), Some(before), Some(after)) = (
                    ok(results, &name),
                    state.metadata.topics.get(&name),
                    new.topics.get(&name),
                ) else {
                    continue;
                };
                let set: BTreeMap<String, String> = after
                    .configs
                    .iter()
                    .filter(|(k, v)| before.configs.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let delete: BTreeSet<String> = before
                    .configs
                    .keys()
                    .filter(|k| !after.configs.contains_key(*k))
                    .cloned()
                    .collect();
                if !set.is_empty() || !delete.is_empty() {
                    out.push((slot, Command::AlterTopicConfigs { name, set, delete }));
                }
            }
        }
        // Validation only: nothing to change.
        _ => {}
    }
    out
}

/// Shard 0: asks the controller for a producer-id block for `origin`.
pub fn allocate_producer_ids(broker: &mut Broker, now: Instant, origin: ShardId) {
    let command = Command::AllocateProducerIds {
        broker: broker.cluster.as_ref().map_or(0, |c| c.node),
        count: producer_handlers::PRODUCER_ID_BLOCK_SIZE as u32,
    };
    propose(broker, now, command, Waiter::ProducerIds { origin }, true);
    pump_controller(broker, now);
}

/// Proposes `command` if this broker leads the controller, else (when `may_forward`)
/// forwards it to the leader — or, with no leader known, to a peer that may know it.
fn propose(broker: &mut Broker, now: Instant, command: Command, waiter: Waiter, may_forward: bool) {
    let forwarding = match may_forward {
        true => Forwarding::Own,
        false => Forwarding::Never,
    };
    propose_from(broker, now, command, waiter, forwarding);
}

/// Where a proposal may go when this broker does not lead the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarding {
    /// This broker's own proposal: to the leader, or to a peer that may know it.
    Own,
    /// A peer's proposal relayed here: to the leader, never back to that peer.
    RelayedFrom(u64),
    /// Only while this broker leads (liveness rounds of a former leader are dropped).
    Never,
}

/// Proposes here, or forwards to the leader as `forwarding` allows.
fn propose_from(broker: &mut Broker, now: Instant, command: Command, waiter: Waiter, forwarding: Forwarding) {
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    let node = cluster.node;
    let Some(host) = cluster.host.as_mut() else {
        return;
    };
    let waiting = host.applying.values().map(Vec::len).sum::<usize>() + host.forwarded.len();
    if waiting >= MAX_WAITING_COMMANDS {
        let error = Err((
            ErrorCode::REQUEST_TIMED_OUT.0,
            "too many commands waiting for the controller".into(),
        ));
        resolve(broker, now, waiter, error);
        return;
    }
    let sender = match forwarding {
        Forwarding::RelayedFrom(peer) => Some(peer),
        Forwarding::Own | Forwarding::Never => None,
    };
    let target = match host.replica.propose(now, &command) {
        Ok(at) => {
            host.applying
                .entry(at.index)
                .or_default()
                .push((Some(at.term), waiter));
            return;
        }
        Err(ControllerError::NotController { leader: Some(leader) })
            if forwarding != Forwarding::Never && leader != node =>
        {
            Ok(leader)
        }
        // No leader known (this broker is joining, or an election runs): ask a peer,
        // in turn, that may know it.
        Err(ControllerError::NotController { leader: None }) if forwarding == Forwarding::Own => {
            let peers: Vec<u64> = host.peers.keys().copied().collect();
            host.next_forward += 1;
            let index = usize::try_from(host.next_forward).unwrap_or(0) % peers.len().max(1);
            peers
                .get(index)
                .copied()
                .ok_or(ControllerError::NotController { leader: None })
        }
        Err(error) => Err(error),
    };
    match target {
        Ok(leader) if Some(leader) != sender => {
            let request = host.next_forward;
            host.next_forward += 1;
            host.forwarded.insert(request, (waiter, now + FORWARD_TIMEOUT));
            let message = ClusterMessage::Propose {
                request,
                command: command.encode(),
            };
            send_cluster(broker, leader, vec![message]);
        }
        Ok(_) => {
            let error = (
                ErrorCode::NOT_CONTROLLER.0,
                "the controller is not known here".to_string(),
            );
            resolve(broker, now, waiter, Err(error));
        }
        Err(error) => {
            let code = error.kafka_error_code();
            resolve(broker, now, waiter, Err((code, error.to_string())));
        }
    }
}

/// The controller leader makes every registered broker that is not yet a member of
/// group 0 a learner (it then receives the metadata log; the voters stay the seeds).
fn add_learners(broker: &mut Broker, now: Instant) {
    let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) else {
        return;
    };
    if !host.replica.is_leader() {
        return;
    }
    let membership = host.replica.raft().membership();
    let missing = host
        .replica
        .state()
        .brokers
        .keys()
        .copied()
        .find(|id| !membership.voters().contains_key(id) && !membership.learners().contains(id));
    if let Some(id) = missing {
        // Refused while another change is in flight: tried again on a later turn.
        let _ = host.replica.change_membership(now, ConfigChange::AddLearner(id));
    }
}

type Resolution = Result<Option<Outcome>, (i16, String)>;

/// Tells a waiter how its command ended.
fn resolve(broker: &mut Broker, now: Instant, waiter: Waiter, result: Resolution) {
    match waiter {
        Waiter::Entry { batch, slot } => {
            let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) else {
                return;
            };
            let Some(b) = host.batches.get_mut(&batch) else {
                return;
            };
            if let (Err((code, message)), Some(entry)) = (&result, b.results.get_mut(slot)) {
                entry.1 = *code;
                entry.2 = Some(message.clone());
            }
            b.open = b.open.saturating_sub(1);
            if b.open == 0 {
                if let Some(done) = host.batches.remove(&batch) {
                    broker.command_done(now, done.origin, done.request, done.results);
                }
            }
        }
        Waiter::Peer { node, request } => {
            let (code, message) = match &result {
                Ok(_) => (0, String::new()),
                Err((code, message)) => (*code, message.clone()),
            };
            let index = broker
                .cluster
                .as_ref()
                .and_then(|c| c.controller())
                .and_then(|r| r.last_applied())
                .map_or(0, |a| a.index);
            let reply = ClusterMessage::Proposed {
                request,
                code,
                message,
                index,
            };
            send_cluster(broker, node, vec![reply]);
        }
        Waiter::Registration => {
            if let (Err((_, message)), Some(cluster)) = (result, broker.cluster.as_mut()) {
                // Proposed again after REGISTER_RETRY.
                cluster.stats.registration_refusals += 1;
                cluster.stats.last_registration_error = Some(message);
            }
        }
        Waiter::Liveness => {
            if let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) {
                host.liveness_in_flight = host.liveness_in_flight.saturating_sub(1);
            }
        }
        Waiter::ProducerIds { origin } => {
            let message = match result {
                Ok(Some(Outcome::ProducerIds { first, count })) => {
                    producer_handlers::ProducerIdMessage::Block {
                        first,
                        count: i64::from(count),
                    }
                }
                _ => producer_handlers::ProducerIdMessage::Failed,
            };
            producer_handlers::deliver(broker, now, origin, message);
        }
    }
}

/// Shard 0: a storage completion for the controller.
pub fn on_controller_input(broker: &mut Broker, now: Instant, input: ControllerInput) {
    if let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) {
        host.replica.handle(now, input);
    }
    pump_controller(broker, now);
}

/// Runs timers: the controller's Raft, registration, forwarded deadlines, gossip.
pub fn handle_timeout(broker: &mut Broker, now: Instant) {
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    if now >= cluster.next_gossip_at {
        cluster.next_gossip_at = now + GOSSIP_INTERVAL;
        cluster.gossip_now = true;
    }
    expire_remote_ops(broker, now);
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    if cluster.host.is_none() {
        pump_controller(broker, now);
        return;
    }
    let Some(host) = cluster.host.as_mut() else {
        return;
    };
    if host.replica.poll_timeout().is_some_and(|t| t <= now) {
        host.replica.handle_timeout(now);
    }
    let expired: Vec<u64> = host
        .forwarded
        .iter()
        .filter(|(_, (_, d))| *d <= now)
        .map(|(r, _)| *r)
        .collect();
    let mut timed_out = Vec::new();
    for request in expired {
        if let Some((waiter, _)) = host.forwarded.remove(&request) {
            timed_out.push(waiter);
        }
    }
    for waiter in timed_out {
        let error = (
            ErrorCode::REQUEST_TIMED_OUT.0,
            "the controller did not answer".to_string(),
        );
        resolve(broker, now, waiter, Err(error));
    }
    pump_controller(broker, now);
}

/// Shard 0: moves the controller's effects and events out, registers this broker,
/// broadcasts state changes and gossips leaderships.
pub fn pump_controller(broker: &mut Broker, now: Instant) {
    while let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) {
        let mut effects = Vec::new();
        while let Some(effect) = host.replica.poll_effect() {
            effects.push(effect);
        }
        let mut events = Vec::new();
        while let Some(event) = host.replica.poll_event() {
            events.push(event);
        }
        if effects.is_empty() && events.is_empty() {
            break;
        }
        for effect in effects {
            match effect {
                ControllerEffect::Raft(RaftEffect::Send(message)) => {
                    if let Some(cluster) = broker.cluster.as_mut() {
                        if cluster.outbox.push(0, message).is_err() {
                            cluster.stats.raft_messages_dropped += 1;
                        }
                    }
                }
                other => broker.effects.push_back(BrokerEffect::Controller(other)),
            }
        }
        for event in events {
            on_controller_event(broker, now, event);
        }
    }
    register(broker, now);
    add_learners(broker, now);
    track_liveness(broker, now);
    broadcast_if_changed(broker, now);
    gossip(broker, now);
}

fn on_controller_event(broker: &mut Broker, now: Instant, event: ControllerEvent) {
    let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) else {
        return;
    };
    match event {
        ControllerEvent::Applied { at, result, .. } => {
            host.dirty = true;
            let done: Vec<u64> = host.applying.range(..=at.index).map(|(i, _)| *i).collect();
            let mut resolved = Vec::new();
            for index in done {
                for (term, waiter) in host.applying.remove(&index).unwrap_or_default() {
                    let outcome = if index == at.index && term.is_none_or(|t| t == at.term) {
                        result
                            .clone()
                            .map(Some)
                            .map_err(|e| (e.code.0, e.message.clone()))
                    } else {
                        Err((
                            ErrorCode::NOT_CONTROLLER.0,
                            "the controller changed before the command was committed".to_string(),
                        ))
                    };
                    resolved.push((waiter, outcome));
                }
            }
            for (waiter, outcome) in resolved {
                resolve(broker, now, waiter, outcome);
            }
        }
        ControllerEvent::Restored { last } => {
            host.dirty = true;
            let done: Vec<u64> = host.applying.range(..=last.index).map(|(i, _)| *i).collect();
            let mut resolved = Vec::new();
            for index in done {
                for (_, waiter) in host.applying.remove(&index).unwrap_or_default() {
                    resolved.push(waiter);
                }
            }
            for waiter in resolved {
                let error = (
                    ErrorCode::NOT_CONTROLLER.0,
                    "the controller state was replaced by a snapshot; retry".into(),
                );
                resolve(broker, now, waiter, Err(error));
            }
        }
        ControllerEvent::RoleChanged { role, .. } => {
            host.dirty = true;
            if role == Role::Leader {
                // Proposals forwarded to a former leader are answered by the deadline.
                host.register_at.get_or_insert(now);
                host.liveness = Some(LivenessTracker::new(now, LIVENESS_TIMEOUT));
                // Rounds of an earlier term are answered (or lost) without us.
                host.liveness_in_flight = 0;
            } else {
                host.liveness = None;
            }
        }
        ControllerEvent::Failed { .. } => {
            // Kept in the replica (`failure()`), reported by the runtime.
        }
        _ => {}
    }
}

/// Proposes this broker's registration until it is applied.
fn register(broker: &mut Broker, now: Instant) {
    let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) else {
        return;
    };
    let id = host.registration.id;
    let registered = host
        .replica
        .state()
        .brokers
        .get(&id)
        .is_some_and(|b| b.registration == host.registration);
    if registered {
        host.register_at = None;
        return;
    }
    let Some(at) = host.register_at else {
        host.register_at = Some(now + REGISTER_RETRY);
        return;
    };
    if at > now {
        return;
    }
    host.register_at = Some(now + REGISTER_RETRY);
    let command = Command::RegisterBroker(host.registration.clone());
    propose(broker, now, command, Waiter::Registration, true);
}

/// The controller leader proposes what its liveness tracker observed (itself always
/// alive), one round at a time.
fn track_liveness(broker: &mut Broker, now: Instant) {
    let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) else {
        return;
    };
    if !host.replica.is_leader() || host.liveness_in_flight > 0 {
        return;
    }
    let state = host.replica.state();
    let id = host.registration.id;
    let Some(tracker) = host.liveness.as_mut() else {
        return;
    };
    if let Some(me) = state.brokers.get(&id) {
        tracker.on_heartbeat(now, id, me.registration.epoch, state);
    }
    let changes = tracker.changes(now, state);
    host.liveness_in_flight = changes.len();
    for command in changes {
        propose(broker, now, command, Waiter::Liveness, false);
    }
}

/// After applied changes: the new metadata and view go to every shard, and new peer
/// addresses to the runtime.
fn broadcast_if_changed(broker: &mut Broker, now: Instant) {
    let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) else {
        return;
    };
    if !std::mem::take(&mut host.dirty) {
        return;
    }
    let controller = host.replica.raft().leader().and_then(|l| i32::try_from(l).ok());
    let state = host.replica.state();
    let view = ClusterView::of(state, controller);
    let mut metadata = state.metadata.clone();
    metadata.version = host.replica.last_applied().map_or(0, |a| a.index);
    let node = broker.cluster.as_ref().map_or(0, |c| c.node);
    let mut new_peers = Vec::new();
    if let Some(host) = broker.cluster.as_mut().and_then(|c| c.host.as_mut()) {
        for (id, b) in &view.brokers {
            let Ok(id) = u64::try_from(*id) else { continue };
            if id != node && host.peers.get(&id) != Some(&b.rpc_addr) {
                host.peers.insert(id, b.rpc_addr.clone());
                new_peers.push((id, b.rpc_addr.clone()));
            }
        }
    }
    for (node, addr) in new_peers {
        broker.effects.push_back(BrokerEffect::SetPeer { node, addr });
    }
    let changed = broker.cluster.as_ref().is_some_and(|c| c.view != view) || broker.metadata != metadata;
    if !changed {
        return;
    }
    for shard in (1..broker.shard_count).map(ShardId) {
        broker.effects.push_back(BrokerEffect::ToShard {
            to: shard,
            message: ShardMessage::ClusterChanged { view: view.clone() },
        });
    }
    on_view(broker, view);
    broker.broadcast_metadata(now, metadata);
}

/// A new cluster view (every shard): kept, and the group routing table rebuilt.
pub fn on_view(broker: &mut Broker, view: ClusterView) {
    if let Some(cluster) = broker.cluster.as_mut() {
        cluster.view = view;
    }
}

/// Rebuilds the group → partition routing table from the metadata (shard 0).
pub fn on_metadata(broker: &mut Broker) {
    let metadata = &broker.metadata;
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    cluster.groups.clear();
    for (topic, meta) in &metadata.topics {
        for partition in 0..meta.partitions {
            let key = PartitionKey {
                topic: topic.clone(),
                partition,
                revision: meta.revision,
            };
            cluster.groups.insert(group_of(&key), key);
        }
    }
    let topics = &metadata.topics;
    let exists =
        |(topic, partition): &TopicPartition| topics.get(topic).is_some_and(|t| *partition < t.partitions);
    cluster.leaders.retain(|tp, _| exists(tp));
    cluster.isr.retain(|tp, _| exists(tp));
}

/// Tells every peer the partitions this shard leads, with their in-sync replicas (on a
/// leadership change here, and every [`GOSSIP_INTERVAL`]); every shard does this for
/// its own partitions.
fn gossip(broker: &mut Broker, now: Instant) {
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    if !std::mem::take(&mut cluster.gossip_now) {
        return;
    }
    let led = broker.partitions.led(now, ISR_MAX_SILENCE);
    let node = cluster.node;
    let mut notes = Vec::with_capacity(led.len());
    // ISRs that changed, for this broker's other shards (Metadata is served by all).
    let mut local = Vec::new();
    for (key, epoch, isr) in led {
        let tp = (key.topic.clone(), key.partition);
        let isr_ids: Vec<i32> = isr.iter().filter_map(|id| i32::try_from(*id).ok()).collect();
        if cluster.leaders.get(&tp).is_some_and(|(_, e)| *e <= epoch)
            && cluster.isr.get(&tp) != Some(&isr_ids)
        {
            cluster.isr.insert(tp, isr_ids.clone());
            local.push((key.clone(), epoch, isr_ids));
        }
        notes.push(LeaderNote {
            topic: key.topic,
            partition: key.partition,
            revision: key.revision,
            leader: node,
            epoch,
            isr,
        });
    }
    let leader = broker.node_id;
    for (key, epoch, isr) in local {
        for shard in (0..broker.shard_count)
            .map(ShardId)
            .filter(|s| *s != broker.shard)
        {
            broker.effects.push_back(BrokerEffect::ToShard {
                to: shard,
                message: ShardMessage::Leader {
                    key: key.clone(),
                    leader,
                    epoch,
                    isr: isr.clone(),
                },
            });
        }
    }
    let Some(cluster) = broker.cluster.as_mut() else {
        return;
    };
    if notes.is_empty() {
        return;
    }
    let peers: Vec<u64> = cluster
        .view
        .brokers
        .keys()
        .filter_map(|id| u64::try_from(*id).ok())
        .filter(|id| *id != node)
        .collect();
    for peer in peers {
        for chunk in notes.chunks(2_048) {
            let message = ClusterMessage::Leaders {
                notes: chunk.to_vec(),
            };
            send_cluster(broker, peer, vec![message]);
        }
    }
}

/// Whether `broker` hosts a replica of `topic`/`partition` in cluster mode (always
/// true on a single node).
pub fn is_replica(broker: &Broker, topic: &str, partition: i32) -> bool {
    match broker.cluster.as_ref() {
        None => true,
        Some(c) => c
            .view
            .replicas(topic, partition)
            .is_some_and(|r| r.contains(&broker.node_id)),
    }
}

/// The leader of a partition and its epoch, as far as this shard knows.
pub fn leader_of(broker: &Broker, topic: &str, partition: i32) -> Option<(i32, i32)> {
    let tp = (topic.to_string(), partition);
    match broker.cluster.as_ref() {
        None => broker
            .epochs
            .get(&tp)
            .copied()
            .filter(|e| *e >= 0)
            .map(|e| (broker.node_id, e)),
        Some(c) => c
            .leaders
            .get(&tp)
            .copied()
            .filter(|(leader, _)| c.view.brokers.get(leader).is_some_and(|b| b.alive)),
    }
}

/// The in-sync replicas of a partition as its leader last reported them (all replicas
/// while no report came in; this broker on a single node).
pub fn in_sync_replicas(broker: &Broker, topic: &str, partition: i32) -> Vec<i32> {
    let Some(c) = broker.cluster.as_ref() else {
        return vec![broker.node_id];
    };
    match c.isr.get(&(topic.to_string(), partition)) {
        Some(isr) => isr.clone(),
        None => c.view.replicas(topic, partition).unwrap_or_default().to_vec(),
    }
}

/// The brokers clients may connect to: (id, host, port).
pub fn brokers(broker: &Broker) -> Vec<(i32, String, u16)> {
    match broker.cluster.as_ref() {
        Some(c) if !c.view.brokers.is_empty() => c
            .view
            .brokers
            .iter()
            .filter(|(_, b)| b.alive)
            .map(|(id, b)| (*id, b.host.clone(), b.port))
            .collect(),
        _ => vec![(broker.node_id, broker.host.clone(), broker.port)],
    }
}

/// A broker's Kafka address.
pub fn address_of(broker: &Broker, node: i32) -> Option<(String, u16)> {
    brokers(broker)
        .into_iter()
        .find(|(id, ..)| *id == node)
        .map(|(_, host, port)| (host, port))
}

/// The controller leader Kafka clients are told about (this broker on a single node;
/// -1 while there is none).
pub fn controller_id(broker: &Broker) -> i32 {
    match broker.cluster.as_ref() {
        None => broker.node_id,
        Some(c) => c.view.controller.unwrap_or(-1),
    }
}

/// Cluster counters of one shard, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// Raft messages dropped before framing (too large, outbox full).
    pub raft_messages_dropped: u64,
    /// Partitions this shard leads.
    pub partitions_led: u64,
    /// Whether this broker leads the controller (shard 0).
    pub controller_leader: bool,
}

/// The counters of `broker`'s shard.
pub fn metrics(broker: &Broker) -> ClusterMetrics {
    let Some(c) = broker.cluster.as_ref() else {
        return ClusterMetrics::default();
    };
    ClusterMetrics {
        raft_messages_dropped: c.stats.raft_messages_dropped,
        // Only the partitions hosted here: `epochs` holds the whole node's leaders.
        partitions_led: broker.partitions.led_count() as u64,
        controller_leader: c.controller().is_some_and(ControllerReplica::is_leader),
    }
}
