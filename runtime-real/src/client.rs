//! A small synchronous Kafka client for the `oxbow` command line (topic, produce,
//! consume, group, txn and cluster commands), with requests encoded and responses
//! decoded by `kafka-protocol` at the versions Oxbow serves. Benchmarks and tests use
//! real clients (librdkafka); this is for people at a terminal.
//!
//! Two layers:
//! - [`KafkaClient`] owns ONE TCP connection to one broker: framing, correlation ids.
//! - [`ClusterClient`] owns the view of a cluster: it bootstraps from `--brokers`, keeps
//!   a [`ClusterSnapshot`] (brokers by id, controller, partition leaders), opens a
//!   [`KafkaClient`] per broker id when first needed, and routes each request: per-
//!   partition requests (Produce, Fetch, ListOffsets, DescribeProducers, …) to each
//!   partition's leader, split by leader ([`split_by_leader`]); group and transaction
//!   requests to the coordinator FindCoordinator names; topic admin to the controller.
//!   On a "moved" error (NOT_LEADER_OR_FOLLOWER, NOT_COORDINATOR, NOT_CONTROLLER, …) or
//!   a dead connection it refreshes the metadata and retries with a growing pause, for
//!   a bounded time ([`RetryPolicy`]; decisions in [`retry_for_code`]), then fails naming
//!   the partition or coordinator and the broker last asked.
//!
//! A retried Produce after a dead connection may write its records twice (the first
//! attempt may have landed): the CLI producer is not idempotent, like any Kafka client
//! without `enable.idempotence`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use oxbow_core::kafka::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest response the client accepts.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection failed.
    #[error("cannot talk to {addr}: {source}")]
    Io {
        /// The broker.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The broker answered something the client cannot read.
    #[error("bad response from {addr}: {reason}")]
    Protocol {
        /// The broker.
        addr: String,
        /// What is wrong.
        reason: String,
    },
}

/// One connection to one broker.
#[derive(Debug)]
pub struct KafkaClient {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
}

impl KafkaClient {
    /// Connects to the first reachable address of `brokers` (`HOST:PORT[,...]`).
    pub fn connect(brokers: &str) -> Result<KafkaClient, ClientError> {
        let mut last_error = None;
        for addr in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let resolved = addr.to_socket_addrs().map(|mut a| a.next());
            let result = match resolved {
                Ok(Some(socket)) => TcpStream::connect_timeout(&socket, Duration::from_secs(5)),
                Ok(None) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")),
                Err(e) => Err(e),
            };
            match result {
                Ok(stream) => {
                    let io = |source| ClientError::Io {
                        addr: addr.to_string(),
                        source,
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .map_err(io)?;
                    stream.set_nodelay(true).map_err(io)?;
                    return Ok(KafkaClient {
                        addr: addr.to_string(),
                        stream,
                        correlation_id: 0,
                    });
                }
                Err(source) => {
                    last_error = Some(ClientError::Io {
                        addr: addr.to_string(),
                        source,
                    })
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::Io {
            addr: brokers.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no broker address given"),
        }))
    }

    /// The address this connection went to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` without waiting for an answer (Produce with acks=0).
    pub fn send_only<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<(), ClientError> {
        let frame = self.frame(key, version, request)?;
        self.stream.write_all(&frame).map_err(|source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        })
    }

    /// Encodes a request frame (size prefix, header, body) with the next correlation id.
    fn frame<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<BytesMut, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let protocol = |reason: String| ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        };
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("oxbow-cli")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, key.request_header_version(version))
            .map_err(|e| protocol(format!("encoding the request header: {e}")))?;
        request
            .encode(&mut payload, version)
            .map_err(|e| protocol(format!("encoding the request: {e}")))?;
        let mut frame = BytesMut::with_capacity(payload.len() + 4);
        frame.put_i32(payload.len() as i32);
        frame.extend_from_slice(&payload);
        Ok(frame)
    }

    /// Sends `request` (API `key`, `version`) and returns the decoded response.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let frame = self.frame(key, version, request)?;
        let protocol = |reason: String| ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        };
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(&frame).map_err(io)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io)?;
        let len = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if len > MAX_RESPONSE_BYTES {
            return Err(protocol(format!("a response of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).map_err(io)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .map_err(|e| protocol(format!("decoding the response header: {e}")))?;
        if header.correlation_id != self.correlation_id {
            return Err(protocol(format!(
                "correlation id {} where {} was expected",
                header.correlation_id, self.correlation_id
            )));
        }
        let response =
            Resp::decode(&mut body, version).map_err(|e| protocol(format!("decoding the response: {e}")))?;
        if body.has_remaining() {
            return Err(protocol(format!("{} bytes after the response", body.remaining())));
        }
        Ok(response)
    }
}

// ---------------------------------------------------------------------------------
// Retry decisions
// ---------------------------------------------------------------------------------

/// What to do after a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// Give up: asking again would get the same answer.
    No,
    /// The leader, coordinator or controller moved (or is being elected): refresh the
    /// metadata and ask again.
    Refresh,
    /// The connection died: drop it, refresh the metadata and ask again.
    Reconnect,
}

/// The retry decision for a Kafka error code from a broker.
pub fn retry_for_code(code: i16) -> Retry {
    match ErrorCode(code) {
        ErrorCode::NOT_LEADER_OR_FOLLOWER
        | ErrorCode::LEADER_NOT_AVAILABLE
        | ErrorCode::NOT_COORDINATOR
        | ErrorCode::COORDINATOR_NOT_AVAILABLE
        | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
        | ErrorCode::NOT_CONTROLLER
        | ErrorCode::FENCED_LEADER_EPOCH
        | ErrorCode::UNKNOWN_LEADER_EPOCH => Retry::Refresh,
        _ => Retry::No,
    }
}

/// An error that knows whether asking again (elsewhere) may help.
pub trait Retriable {
    /// The retry decision for this error.
    fn retry(&self) -> Retry;
}

impl Retriable for ClientError {
    fn retry(&self) -> Retry {
        match self {
            ClientError::Io { .. } => Retry::Reconnect,
            ClientError::Protocol { .. } => Retry::No,
        }
    }
}

/// How long and how often a [`ClusterClient`] asks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total time one call may spend retrying.
    pub budget_ms: u64,
    /// First pause between attempts (doubled up to `max_backoff_ms`).
    pub first_backoff_ms: u64,
    /// Longest pause between attempts.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget_ms: 10_000,
            first_backoff_ms: 50,
            max_backoff_ms: 500,
        }
    }
}

/// Growing pauses within one call's budget.
#[derive(Debug)]
struct Backoff {
    started: Instant,
    deadline: Instant,
    next_ms: u64,
    max_ms: u64,
}

impl Backoff {
    fn new(policy: RetryPolicy) -> Backoff {
        let started = Instant::now();
        Backoff {
            started,
            deadline: started + Duration::from_millis(policy.budget_ms),
            next_ms: policy.first_backoff_ms.max(1),
            max_ms: policy.max_backoff_ms.max(1),
        }
    }

    /// Sleeps before the next attempt; `false` (without sleeping) once the budget is spent.
    fn pause(&mut self) -> bool {
        let pause = Duration::from_millis(self.next_ms);
        if Instant::now() + pause > self.deadline {
            return false;
        }
        std::thread::sleep(pause);
        self.next_ms = (self.next_ms * 2).min(self.max_ms);
        true
    }

    fn waited_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

// ---------------------------------------------------------------------------------
// The metadata snapshot
// ---------------------------------------------------------------------------------

/// A topic partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_string(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A broker as Metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerInfo {
    /// Broker (node) id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: i32,
}

impl BrokerInfo {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A partition as Metadata shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// The partition's error in Metadata (LEADER_NOT_AVAILABLE while electing).
    pub error_code: i16,
    /// Leader broker id (-1: none).
    pub leader_id: i32,
    /// Leader epoch (= Raft term).
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
    /// Replicas whose broker is offline.
    pub offline: Vec<i32>,
}

impl PartitionInfo {
    /// Replicas that are not in the ISR.
    pub fn lagging(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.isr.contains(r))
            .collect()
    }

    /// The leader's id, if the partition has one.
    pub fn leader(&self) -> Option<i32> {
        (self.leader_id >= 0).then_some(self.leader_id)
    }
}

/// A topic as Metadata shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicInfo {
    /// The topic's error in Metadata (UNKNOWN_TOPIC_OR_PARTITION: no such topic).
    pub error_code: i16,
    /// Whether it is an internal topic.
    pub internal: bool,
    /// Partitions by index.
    pub partitions: BTreeMap<i32, PartitionInfo>,
}

/// What the client last learnt from Metadata: brokers, controller, partition leaders.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterSnapshot {
    /// Cluster id, if the broker named one.
    pub cluster_id: Option<String>,
    /// The controller's broker id, if known.
    pub controller_id: Option<i32>,
    /// Brokers by id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name (only those asked about).
    pub topics: BTreeMap<String, TopicInfo>,
}

impl ClusterSnapshot {
    /// Takes in a Metadata response: brokers and controller are replaced; the topics it
    /// lists are replaced, others kept.
    pub fn update(&mut self, response: &m::MetadataResponse) {
        self.cluster_id = response.cluster_id.as_ref().map(|c| c.as_str().to_string());
        self.controller_id = (response.controller_id.0 >= 0).then_some(response.controller_id.0);
        self.brokers = response
            .brokers
            .iter()
            .map(|b| {
                let info = BrokerInfo {
                    id: b.node_id.0,
                    host: b.host.as_str().to_string(),
                    port: b.port,
                };
                (info.id, info)
            })
            .collect();
        for t in &response.topics {
            let Some(name) = t.name.as_ref() else { continue };
            self.topics.insert(name.0.as_str().to_string(), topic_info(t));
        }
    }

    /// The leader of `tp`, if the snapshot knows one.
    pub fn leader_of(&self, tp: &TopicPartition) -> Option<i32> {
        self.topics
            .get(&tp.topic)
            .and_then(|t| t.partitions.get(&tp.partition))
            .and_then(PartitionInfo::leader)
    }
}

fn ids(nodes: &[kafka_protocol::messages::BrokerId]) -> Vec<i32> {
    nodes.iter().map(|n| n.0).collect()
}

fn topic_info(t: &m::metadata_response::MetadataResponseTopic) -> TopicInfo {
    TopicInfo {
        error_code: t.error_code,
        internal: t.is_internal,
        partitions: t
            .partitions
            .iter()
            .map(|p| {
                let info = PartitionInfo {
                    partition: p.partition_index,
                    error_code: p.error_code,
                    leader_id: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: ids(&p.replica_nodes),
                    isr: ids(&p.isr_nodes),
                    offline: ids(&p.offline_replicas),
                };
                (info.partition, info)
            })
            .collect(),
    }
}

/// Per-partition items grouped by the broker that leads each partition, and the items
/// whose partition has no known leader.
#[derive(Debug)]
#[non_exhaustive]
pub struct Split<T> {
    /// Items by leader broker id.
    pub by_leader: BTreeMap<i32, BTreeMap<TopicPartition, T>>,
    /// Items whose partition has no leader in the snapshot.
    pub leaderless: BTreeMap<TopicPartition, T>,
}

/// Groups `items` by their partition's leader in `snapshot` (a multi-partition request
/// becomes one request per leader).
pub fn split_by_leader<T>(snapshot: &ClusterSnapshot, items: BTreeMap<TopicPartition, T>) -> Split<T> {
    let mut split = Split {
        by_leader: BTreeMap::new(),
        leaderless: BTreeMap::new(),
    };
    for (tp, item) in items {
        match snapshot.leader_of(&tp) {
            Some(leader) => {
                split.by_leader.entry(leader).or_default().insert(tp, item);
            }
            None => {
                split.leaderless.insert(tp, item);
            }
        }
    }
    split
}

// ---------------------------------------------------------------------------------
// The cluster client
// ---------------------------------------------------------------------------------

/// Why a [`ClusterClient`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Talking to a broker failed (no bootstrap broker answered, or a broker is down).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A broker refused (Kafka error code and message).
    #[error("{what}: {message} (Kafka error {code})")]
    Refused {
        /// What was asked.
        what: String,
        /// The error code.
        code: i16,
        /// The broker's message, or the code's name.
        message: String,
    },
    /// Metadata names a broker id the client has no address for.
    #[error("broker {id} is not in the cluster's metadata")]
    UnknownBroker {
        /// The broker id.
        id: i32,
    },
    /// The retry budget ran out.
    #[error("{what}: gave up after {waited_ms} ms; last attempt{}: {last}", broker_text(.broker.as_ref()))]
    GaveUp {
        /// What was asked (a partition, a coordinator, the controller).
        what: String,
        /// The broker last asked, if any.
        broker: Option<(i32, String)>,
        /// The last failure.
        last: String,
        /// Time spent.
        waited_ms: u64,
    },
}

fn broker_text(broker: Option<&(i32, String)>) -> String {
    broker.map_or_else(String::new, |(id, addr)| format!(" (broker {id} at {addr})"))
}

impl Retriable for ClusterError {
    fn retry(&self) -> Retry {
        match self {
            ClusterError::Client(e) => e.retry(),
            ClusterError::Refused { code, .. } => retry_for_code(*code),
            ClusterError::UnknownBroker { .. } => Retry::Refresh,
            ClusterError::GaveUp { .. } => Retry::No,
        }
    }
}

/// Which broker a request goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Any broker (Metadata, FindCoordinator).
    Any,
    /// The controller if Metadata names one, else any broker (topic admin).
    Controller,
    /// One broker by id.
    Broker(i32),
    /// The coordinator of a consumer group.
    GroupCoordinator(String),
    /// The coordinator of a transactional id.
    TxnCoordinator(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Any => write!(f, "any broker"),
            Target::Controller => write!(f, "the controller"),
            Target::Broker(id) => write!(f, "broker {id}"),
            Target::GroupCoordinator(g) => write!(f, "the coordinator of group {g}"),
            Target::TxnCoordinator(t) => write!(f, "the coordinator of transactional id {t}"),
        }
    }
}

/// A Kafka API and the version the client speaks.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Api {
    /// The API.
    pub key: ApiKey,
    /// Its version.
    pub version: i16,
}

/// The state of one partition's request across attempts.
struct Pending<T> {
    items: BTreeMap<TopicPartition, T>,
    /// The last failure of each pending partition: broker asked and why.
    last: BTreeMap<TopicPartition, (Option<i32>, String)>,
}

impl<T> Pending<T> {
    /// Keeps `share` for the next attempt: `broker` failed it because of `reason`.
    fn put_back(&mut self, broker: Option<i32>, reason: &str, share: BTreeMap<TopicPartition, T>) {
        for (tp, item) in share {
            self.last.insert(tp.clone(), (broker, reason.to_string()));
            self.items.insert(tp, item);
        }
    }
}

/// Sorts a leader's answers: final ones (success or a non-retriable error) into
/// `answers`, retriable ones back into `pending` with their share's item.
fn take_answers<T, Out>(
    leader: i32,
    mut share: BTreeMap<TopicPartition, T>,
    read: Vec<(TopicPartition, i16, Out)>,
    answers: &mut BTreeMap<TopicPartition, Out>,
    pending: &mut Pending<T>,
) {
    for (tp, code, out) in read {
        match (retry_for_code(code), share.remove(&tp)) {
            (Retry::No, _) | (_, None) => {
                answers.insert(tp, out);
            }
            (_, Some(item)) => {
                pending.put_back(Some(leader), &code_name(code), BTreeMap::from([(tp, item)]));
            }
        }
    }
}

/// What [`ClusterClient::call_partitioned_partial`] got.
#[derive(Debug)]
#[non_exhaustive]
pub struct Partial<Out> {
    /// Final answers by partition.
    pub answers: BTreeMap<TopicPartition, Out>,
    /// Why some partitions have no answer (the budget ran out), if some have none.
    pub gave_up: Option<ClusterError>,
}

/// A cluster-aware client: bootstraps from `--brokers`, keeps a [`ClusterSnapshot`],
/// opens one [`KafkaClient`] per broker id when first needed, and sends each request
/// where it belongs ([`Target`], or each partition's leader), refreshing the metadata
/// and retrying (see [`Retry`], [`RetryPolicy`]) when leadership moves.
#[derive(Debug)]
pub struct ClusterClient {
    policy: RetryPolicy,
    snapshot: ClusterSnapshot,
    /// Connections by broker id.
    connections: BTreeMap<i32, KafkaClient>,
    /// The connection made to a bootstrap address (used for "any broker").
    bootstrap: Option<KafkaClient>,
    /// The `--brokers` list, for reconnecting when every known broker is gone.
    bootstrap_list: String,
    /// Coordinators found, by (key type, key).
    coordinators: BTreeMap<(i8, String), i32>,
    /// Which known broker "any broker" tries next once the bootstrap connection is gone.
    any_cursor: usize,
}

impl ClusterClient {
    /// Connects to the first reachable address of `brokers` (`HOST:PORT[,...]`) and
    /// reads the cluster's brokers and controller.
    pub fn connect(brokers: &str) -> Result<ClusterClient, ClusterError> {
        ClusterClient::with_policy(brokers, RetryPolicy::default())
    }

    /// [`ClusterClient::connect`] with a retry policy.
    pub fn with_policy(brokers: &str, policy: RetryPolicy) -> Result<ClusterClient, ClusterError> {
        let mut client = ClusterClient {
            policy,
            snapshot: ClusterSnapshot::default(),
            connections: BTreeMap::new(),
            bootstrap: Some(KafkaClient::connect(brokers)?),
            bootstrap_list: brokers.to_string(),
            coordinators: BTreeMap::new(),
            any_cursor: 0,
        };
        client.refresh()?;
        Ok(client)
    }

    /// The retry policy of later calls.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Sets the retry policy of later calls.
    pub fn set_policy(&mut self, policy: RetryPolicy) {
        self.policy = policy;
    }

    /// The metadata last read.
    pub fn snapshot(&self) -> &ClusterSnapshot {
        &self.snapshot
    }

    /// Metadata of `topics` (`None`: every topic), from any broker; the snapshot takes
    /// it in.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> Result<m::MetadataResponse, ClusterError> {
        let mut request = m::MetadataRequest::default();
        request.allow_auto_topic_creation = false;
        request.topics = topics.map(|names| {
            names
                .iter()
                .map(|t| {
                    let mut requested = m::metadata_request::MetadataRequestTopic::default();
                    requested.name = Some(TopicName(StrBytes::from_string(t.to_string())));
                    requested
                })
                .collect()
        });
        let metadata = Api {
            key: ApiKey::Metadata,
            version: 12,
        };
        let response: m::MetadataResponse = self.call(&Target::Any, metadata, &request)?;
        self.take_in(&response);
        Ok(response)
    }

    /// Reads again the metadata of the brokers and of every topic the snapshot knows.
    pub fn refresh(&mut self) -> Result<(), ClusterError> {
        let known: Vec<String> = self.snapshot.topics.keys().cloned().collect();
        let names: Vec<&str> = known.iter().map(String::as_str).collect();
        self.metadata(Some(&names)).map(|_| ())
    }

    /// The topic's metadata, read if the snapshot does not have it.
    pub fn topic(&mut self, name: &str) -> Result<&TopicInfo, ClusterError> {
        if !self.snapshot.topics.contains_key(name) {
            self.metadata(Some(&[name]))?;
        }
        self.snapshot
            .topics
            .get(name)
            .ok_or_else(|| ClusterError::Refused {
                what: format!("topic {name}"),
                code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
                message: "the broker did not answer about it".to_string(),
            })
    }

    fn take_in(&mut self, response: &m::MetadataResponse) {
        self.snapshot.update(response);
        // One broker: the bootstrap connection is that broker (whatever address it
        // advertises); otherwise it serves as "any broker" only.
        if let (1, Some(id)) = (
            self.snapshot.brokers.len(),
            self.snapshot.brokers.keys().next().copied(),
        ) {
            if let Some(bootstrap) = self.bootstrap.take() {
                self.connections.entry(id).or_insert(bootstrap);
            }
        }
    }

    /// Runs `op` on the connection to `target`, retrying per [`Retry`] within the
    /// policy's budget; when it runs out, the error names the target and the broker.
    pub fn with_target<T, E>(
        &mut self,
        target: &Target,
        mut op: impl FnMut(&mut KafkaClient) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: Retriable + From<ClusterError> + std::fmt::Display,
    {
        let mut backoff = Backoff::new(self.policy);
        loop {
            let (broker, error) = match self.resolve(target) {
                Err(error) => (None, E::from(error)),
                Ok(id) => match self.connection(id).map_err(E::from) {
                    Err(error) => (id, error),
                    Ok(client) => match op(client) {
                        Ok(value) => return Ok(value),
                        Err(error) => (id, error),
                    },
                },
            };
            let retry = error.retry();
            if retry == Retry::No {
                return Err(error);
            }
            self.forget(target, broker, retry);
            if !backoff.pause() {
                return Err(E::from(ClusterError::GaveUp {
                    what: target.to_string(),
                    broker: broker.and_then(|id| self.broker_label(id)),
                    last: error.to_string(),
                    waited_ms: backoff.waited_ms(),
                }));
            }
            // A failed refresh shows on the next attempt.
            if !matches!(target, Target::Any) {
                let _ = self.refresh();
            }
        }
    }

    /// Calls `target` with one request, retrying per [`Retry`] (a retriable error code
    /// in a response body is the caller's to handle, with [`Self::with_target`]).
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        target: &Target,
        api: Api,
        request: &Req,
    ) -> Result<Resp, ClusterError> {
        self.with_target::<Resp, ClusterError>(target, |c| Ok(c.call(api.key, api.version, request)?))
    }

    /// Sends one per-partition request per leader of `items`' partitions (`build` makes
    /// a request from a leader's share; `read` lists a response's partitions with their
    /// error codes) and retries the partitions whose answer was retriable, or whose
    /// leader could not be reached, after refreshing the metadata. Returns every
    /// partition's final answer (non-retriable errors included, for the caller to
    /// check); partitions a response left out are absent. Fails if a partition has no
    /// answer when the budget runs out.
    pub fn call_partitioned<T, Req, Resp, Out>(
        &mut self,
        api: Api,
        items: BTreeMap<TopicPartition, T>,
        build: impl Fn(&BTreeMap<TopicPartition, T>) -> Req,
        read: impl Fn(Resp) -> Vec<(TopicPartition, i16, Out)>,
    ) -> Result<BTreeMap<TopicPartition, Out>, ClusterError>
    where
        Req: Encodable,
        Resp: Decodable,
    {
        let partial = self.call_partitioned_partial(api, items, build, read)?;
        match partial.gave_up {
            Some(error) => Err(error),
            None => Ok(partial.answers),
        }
    }

    /// [`Self::call_partitioned`], but when the budget runs out it returns the answers
    /// it has, with why the others have none (for views that show what they can).
    pub fn call_partitioned_partial<T, Req, Resp, Out>(
        &mut self,
        api: Api,
        items: BTreeMap<TopicPartition, T>,
        build: impl Fn(&BTreeMap<TopicPartition, T>) -> Req,
        read: impl Fn(Resp) -> Vec<(TopicPartition, i16, Out)>,
    ) -> Result<Partial<Out>, ClusterError>
    where
        Req: Encodable,
        Resp: Decodable,
    {
        let mut backoff = Backoff::new(self.policy);
        let mut answers = BTreeMap::new();
        let mut pending = Pending {
            items,
            last: BTreeMap::new(),
        };
        loop {
            self.load_topics(pending.items.keys())?;
            self.check_topics(pending.items.keys())?;
            let split = split_by_leader(&self.snapshot, std::mem::take(&mut pending.items));
            for (tp, item) in split.leaderless {
                pending.last.insert(tp.clone(), (None, "no leader".to_string()));
                pending.items.insert(tp, item);
            }
            for (leader, share) in split.by_leader {
                let request = build(&share);
                let response = self
                    .connection(Some(leader))
                    .and_then(|c| Ok(c.call::<Req, Resp>(api.key, api.version, &request)?));
                match response {
                    Ok(response) => take_answers(leader, share, read(response), &mut answers, &mut pending),
                    Err(error) if error.retry() != Retry::No => {
                        self.drop_connection(Some(leader));
                        pending.put_back(Some(leader), &error.to_string(), share);
                    }
                    Err(error) => return Err(error),
                }
            }
            if pending.items.is_empty() {
                return Ok(Partial {
                    answers,
                    gave_up: None,
                });
            }
            if !backoff.pause() {
                let gave_up = Some(self.gave_up(&pending, backoff.waited_ms()));
                return Ok(Partial { answers, gave_up });
            }
            // A failed refresh shows on the next attempt.
            let _ = self.refresh();
        }
    }

    /// Sends `request` to the leader of `tp` without waiting for an answer (Produce
    /// with acks=0); waits, within the budget, for the partition to have a leader.
    pub fn send_only_to_leader<Req: Encodable>(
        &mut self,
        tp: &TopicPartition,
        api: Api,
        request: &Req,
    ) -> Result<(), ClusterError> {
        let mut backoff = Backoff::new(self.policy);
        loop {
            self.load_topics(std::iter::once(tp))?;
            if let Some(leader) = self.snapshot.leader_of(tp) {
                let client = self.connection(Some(leader))?;
                return Ok(client.send_only(api.key, api.version, request)?);
            }
            if !backoff.pause() {
                return Err(ClusterError::GaveUp {
                    what: tp.to_string(),
                    broker: None,
                    last: "no leader".to_string(),
                    waited_ms: backoff.waited_ms(),
                });
            }
            self.refresh()?;
        }
    }

    /// Every broker's id and address, as Metadata lists them.
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        self.snapshot.brokers.values().cloned().collect()
    }

    fn gave_up<T>(&self, pending: &Pending<T>, waited_ms: u64) -> ClusterError {
        let first = pending.items.keys().next();
        let (broker, last) = first
            .and_then(|tp| pending.last.get(tp))
            .cloned()
            .unwrap_or((None, "no answer".to_string()));
        let more = pending.items.len().saturating_sub(1);
        let what = match (first, more) {
            (Some(tp), 0) => format!("partition {tp}"),
            (Some(tp), n) => format!("partition {tp} (and {n} more)"),
            (None, _) => "partitions".to_string(),
        };
        ClusterError::GaveUp {
            what,
            broker: broker.and_then(|id| self.broker_label(id)),
            last,
            waited_ms,
        }
    }

    fn broker_label(&self, id: i32) -> Option<(i32, String)> {
        let addr = self
            .snapshot
            .brokers
            .get(&id)
            .map_or_else(|| "an unknown address".to_string(), BrokerInfo::addr);
        Some((id, addr))
    }

    /// Reads the metadata of those of `tps`' topics the snapshot does not know.
    fn load_topics<'a>(&mut self, tps: impl Iterator<Item = &'a TopicPartition>) -> Result<(), ClusterError> {
        let missing: BTreeSet<&str> = tps
            .map(|tp| tp.topic.as_str())
            .filter(|t| !self.snapshot.topics.contains_key(*t))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = missing.into_iter().map(str::to_string).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.metadata(Some(&refs)).map(|_| ())
    }

    /// Fails at once if one of `tps`' topics has a non-retriable error in the metadata
    /// (UNKNOWN_TOPIC_OR_PARTITION: it does not exist).
    fn check_topics<'a>(
        &self,
        mut tps: impl Iterator<Item = &'a TopicPartition>,
    ) -> Result<(), ClusterError> {
        let refused = tps.find_map(|tp| {
            let code = self.snapshot.topics.get(&tp.topic)?.error_code;
            (code != 0 && retry_for_code(code) == Retry::No).then_some((tp, code))
        });
        match refused {
            Some((tp, code)) => Err(ClusterError::Refused {
                what: format!("partition {tp}"),
                code,
                message: code_name(code),
            }),
            None => Ok(()),
        }
    }

    /// The broker id `target` means now (`None`: any broker).
    fn resolve(&mut self, target: &Target) -> Result<Option<i32>, ClusterError> {
        match target {
            Target::Any => Ok(self.any_id()),
            Target::Controller => Ok(self.snapshot.controller_id.or_else(|| self.any_id())),
            Target::Broker(id) => Ok(Some(*id)),
            Target::GroupCoordinator(key) => self.coordinator(0, key).map(Some),
            Target::TxnCoordinator(key) => self.coordinator(1, key).map(Some),
        }
    }

    /// Forgets what a retriable failure made stale: the coordinator, the connection.
    fn forget(&mut self, target: &Target, broker: Option<i32>, retry: Retry) {
        match target {
            Target::GroupCoordinator(key) => {
                self.coordinators.remove(&(0, key.clone()));
            }
            Target::TxnCoordinator(key) => {
                self.coordinators.remove(&(1, key.clone()));
            }
            _ => {}
        }
        if retry == Retry::Reconnect {
            self.drop_connection(broker);
        }
    }

    /// Closes the connection to broker `id` (`None`: the bootstrap connection) after it
    /// failed; "any broker" moves on to the next known one.
    fn drop_connection(&mut self, id: Option<i32>) {
        match id {
            Some(id) => {
                self.connections.remove(&id);
                self.any_cursor = self.any_cursor.wrapping_add(1);
            }
            None => self.bootstrap = None,
        }
    }

    /// The broker "any broker" means now: `None` for the bootstrap connection (opened
    /// again from the `--brokers` list if it died and no broker is known), else an open
    /// connection, else a known broker (moving on to the next one after each failure).
    fn any_id(&self) -> Option<i32> {
        if self.bootstrap.is_some() {
            return None;
        }
        if let Some(id) = self.connections.keys().next() {
            return Some(*id);
        }
        let count = self.snapshot.brokers.len();
        if count == 0 {
            return None;
        }
        self.snapshot.brokers.keys().nth(self.any_cursor % count).copied()
    }

    /// The coordinator of `key` (FindCoordinator v3; key type 0 a group, 1 a
    /// transactional id), found once and cached until a request says it moved.
    fn coordinator(&mut self, key_type: i8, key: &str) -> Result<i32, ClusterError> {
        if let Some(id) = self.coordinators.get(&(key_type, key.to_string())) {
            return Ok(*id);
        }
        let mut request = m::FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(key.to_string());
        request.key_type = key_type;
        let api = Api {
            key: ApiKey::FindCoordinator,
            version: 3,
        };
        let any = self.any_id();
        let answer = self.connection(any).and_then(|client| {
            Ok(client.call::<_, m::FindCoordinatorResponse>(api.key, api.version, &request)?)
        });
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                if error.retry() == Retry::Reconnect {
                    self.drop_connection(any);
                }
                return Err(error);
            }
        };
        if response.error_code != 0 {
            return Err(ClusterError::Refused {
                what: format!("find the coordinator of `{key}`"),
                code: response.error_code,
                message: response
                    .error_message
                    .map_or_else(|| code_name(response.error_code), |m| m.as_str().to_string()),
            });
        }
        let id = response.node_id.0;
        self.snapshot.brokers.entry(id).or_insert_with(|| BrokerInfo {
            id,
            host: response.host.as_str().to_string(),
            port: response.port,
        });
        self.coordinators.insert((key_type, key.to_string()), id);
        Ok(id)
    }

    /// The connection to broker `id` (opened now if needed), or to any broker.
    fn connection(&mut self, id: Option<i32>) -> Result<&mut KafkaClient, ClusterError> {
        let Some(id) = id else {
            return self.any_connection();
        };
        if !self.connections.contains_key(&id) {
            let info = self
                .snapshot
                .brokers
                .get(&id)
                .ok_or(ClusterError::UnknownBroker { id })?;
            let client = KafkaClient::connect(&info.addr())?;
            self.connections.insert(id, client);
        }
        self.connections
            .get_mut(&id)
            .ok_or(ClusterError::UnknownBroker { id })
    }

    /// The bootstrap connection, opened again from the `--brokers` list if needed.
    fn any_connection(&mut self) -> Result<&mut KafkaClient, ClusterError> {
        let client = match self.bootstrap.take() {
            Some(client) => client,
            None => KafkaClient::connect(&self.bootstrap_list)?,
        };
        Ok(self.bootstrap.insert(client))
    }
}

/// The protocol's name of `code` (`NOT_LEADER_OR_FOLLOWER`), or the number.
pub fn code_name(code: i16) -> String {
    ErrorCode(code).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::BrokerId;

    fn broker(id: i32) -> m::metadata_response::MetadataResponseBroker {
        let mut b = m::metadata_response::MetadataResponseBroker::default();
        b.node_id = BrokerId(id);
        b.host = StrBytes::from_string(format!("host{id}"));
        b.port = 9092;
        b
    }

    /// Partition `index` led by `leader` (-1: none), replicas `replicas`, ISR `isr`.
    fn partition(
        index: i32,
        leader: i32,
        replicas: &[i32],
        isr: &[i32],
    ) -> m::metadata_response::MetadataResponsePartition {
        let mut p = m::metadata_response::MetadataResponsePartition::default();
        p.partition_index = index;
        p.leader_id = BrokerId(leader);
        p.leader_epoch = if leader >= 0 { 3 } else { -1 };
        p.error_code = if leader >= 0 {
            0
        } else {
            ErrorCode::LEADER_NOT_AVAILABLE.0
        };
        p.replica_nodes = replicas.iter().map(|r| BrokerId(*r)).collect();
        p.isr_nodes = isr.iter().map(|r| BrokerId(*r)).collect();
        p
    }

    fn topic(
        name: &str,
        partitions: Vec<m::metadata_response::MetadataResponsePartition>,
    ) -> m::metadata_response::MetadataResponseTopic {
        let mut t = m::metadata_response::MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
        t.partitions = partitions;
        t
    }

    /// Three brokers, controller 2; `orders` with partitions led by 1, 2, 1 and none.
    fn three_brokers() -> m::MetadataResponse {
        let mut response = m::MetadataResponse::default();
        response.brokers = vec![broker(1), broker(2), broker(3)];
        response.controller_id = BrokerId(2);
        response.cluster_id = Some(StrBytes::from_static_str("c1"));
        response.topics = vec![topic(
            "orders",
            vec![
                partition(0, 1, &[1, 2, 3], &[1, 2, 3]),
                partition(1, 2, &[2, 3, 1], &[2, 1]),
                partition(2, 1, &[1, 3, 2], &[1]),
                partition(3, -1, &[3, 1, 2], &[]),
            ],
        )];
        response
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("orders", partition)
    }

    #[test]
    fn a_snapshot_takes_in_brokers_controller_and_leaders() {
        let mut snapshot = ClusterSnapshot::default();
        snapshot.update(&three_brokers());
        assert_eq!(snapshot.controller_id, Some(2));
        assert_eq!(snapshot.cluster_id.as_deref(), Some("c1"));
        assert_eq!(snapshot.brokers.len(), 3);
        assert_eq!(snapshot.brokers[&3].addr(), "host3:9092");
        assert_eq!(snapshot.leader_of(&tp(1)), Some(2));
        assert_eq!(snapshot.leader_of(&tp(3)), None);
        assert_eq!(snapshot.leader_of(&tp(9)), None);
        assert_eq!(snapshot.leader_of(&TopicPartition::new("other", 0)), None);
        let orders = &snapshot.topics["orders"];
        assert_eq!(orders.partitions[&1].lagging(), vec![3]);
        assert_eq!(orders.partitions[&2].lagging(), vec![3, 2]);
        assert!(orders.partitions[&0].lagging().is_empty());
    }

    #[test]
    fn a_metadata_answer_about_some_topics_keeps_the_others() {
        let mut snapshot = ClusterSnapshot::default();
        snapshot.update(&three_brokers());
        let mut later = m::MetadataResponse::default();
        later.brokers = vec![broker(1), broker(3)];
        later.controller_id = BrokerId(-1);
        later.topics = vec![topic("audit", vec![partition(0, 3, &[3], &[3])])];
        snapshot.update(&later);
        assert_eq!(snapshot.controller_id, None, "-1 means no controller known");
        assert_eq!(snapshot.brokers.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(snapshot.leader_of(&tp(0)), Some(1), "orders is kept");
        assert_eq!(snapshot.leader_of(&TopicPartition::new("audit", 0)), Some(3));
    }

    #[test]
    fn a_multi_partition_request_is_split_by_leader() {
        let mut snapshot = ClusterSnapshot::default();
        snapshot.update(&three_brokers());
        let items: BTreeMap<TopicPartition, i64> = (0..5).map(|p| (tp(p), i64::from(p) * 10)).collect();
        let split = split_by_leader(&snapshot, items);
        assert_eq!(split.by_leader.len(), 2);
        let one: Vec<_> = split.by_leader[&1]
            .iter()
            .map(|(tp, o)| (tp.partition, *o))
            .collect();
        assert_eq!(one, vec![(0, 0), (2, 20)]);
        let two: Vec<_> = split.by_leader[&2]
            .iter()
            .map(|(tp, o)| (tp.partition, *o))
            .collect();
        assert_eq!(two, vec![(1, 10)]);
        // Partition 3 has no leader; partition 4 is not in the metadata.
        let leaderless: Vec<i32> = split.leaderless.keys().map(|tp| tp.partition).collect();
        assert_eq!(leaderless, vec![3, 4]);
    }

    #[test]
    fn moved_leaders_coordinators_and_controllers_are_retried_after_a_refresh() {
        for code in [
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            ErrorCode::LEADER_NOT_AVAILABLE,
            ErrorCode::NOT_COORDINATOR,
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
            ErrorCode::NOT_CONTROLLER,
            ErrorCode::FENCED_LEADER_EPOCH,
            ErrorCode::UNKNOWN_LEADER_EPOCH,
        ] {
            assert_eq!(retry_for_code(code.0), Retry::Refresh, "{code}");
        }
    }

    #[test]
    fn other_errors_are_final() {
        for code in [
            ErrorCode::NONE,
            ErrorCode::UNKNOWN_SERVER_ERROR,
            ErrorCode::OFFSET_OUT_OF_RANGE,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode::REQUEST_TIMED_OUT,
            ErrorCode::NOT_ENOUGH_REPLICAS,
            ErrorCode::GROUP_ID_NOT_FOUND,
            ErrorCode::NON_EMPTY_GROUP,
        ] {
            assert_eq!(retry_for_code(code.0), Retry::No, "{code}");
        }
    }

    #[test]
    fn a_dead_connection_is_reopened_and_a_garbled_answer_is_final() {
        let dead = ClientError::Io {
            addr: "host1:9092".to_string(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"),
        };
        assert_eq!(dead.retry(), Retry::Reconnect);
        assert_eq!(ClusterError::Client(dead).retry(), Retry::Reconnect);
        let garbled = ClientError::Protocol {
            addr: "host1:9092".to_string(),
            reason: "junk".to_string(),
        };
        assert_eq!(garbled.retry(), Retry::No);
        assert_eq!(ClusterError::UnknownBroker { id: 7 }.retry(), Retry::Refresh);
        let refused = ClusterError::Refused {
            what: "x".to_string(),
            code: ErrorCode::NOT_COORDINATOR.0,
            message: String::new(),
        };
        assert_eq!(refused.retry(), Retry::Refresh);
    }

    #[test]
    fn giving_up_names_the_partition_and_the_broker() {
        let error = ClusterError::GaveUp {
            what: "partition orders/3".to_string(),
            broker: Some((2, "host2:9092".to_string())),
            last: "NOT_LEADER_OR_FOLLOWER".to_string(),
            waited_ms: 10_000,
        };
        assert_eq!(error.retry(), Retry::No);
        assert_eq!(
            error.to_string(),
            "partition orders/3: gave up after 10000 ms; last attempt (broker 2 at host2:9092): \
             NOT_LEADER_OR_FOLLOWER"
        );
    }

    #[test]
    fn backoff_stops_at_the_budget() {
        let mut none = Backoff::new(RetryPolicy {
            budget_ms: 0,
            first_backoff_ms: 10,
            max_backoff_ms: 10,
        });
        assert!(!none.pause());
        let mut some = Backoff::new(RetryPolicy {
            budget_ms: 30,
            first_backoff_ms: 1,
            max_backoff_ms: 4,
        });
        let mut pauses = 0;
        while some.pause() {
            pauses += 1;
            assert!(pauses < 100, "the budget bounds the pauses");
        }
        assert!(pauses >= 3, "{pauses}");
        assert_eq!(some.next_ms, 4, "pauses double up to the maximum");
    }

    // -----------------------------------------------------------------------------
    // Against fake brokers on loopback: Metadata, ListOffsets and FindCoordinator
    // answered from a shared script, so leadership can move between requests.
    // -----------------------------------------------------------------------------

    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// What the fake cluster says and does.
    #[derive(Debug, Default)]
    struct Script {
        /// Broker id → address.
        addrs: BTreeMap<i32, String>,
        /// Partition → the leader Metadata names in its first `stale_answers` answers
        /// about `orders` (stale answers), `leaders` after.
        stale: BTreeMap<i32, i32>,
        /// How many answers about `orders` are stale (0 is taken as 1).
        stale_answers: u32,
        /// Partition → the broker that really leads it.
        leaders: BTreeMap<i32, i32>,
        /// Metadata answers about `orders` so far.
        topic_answers: u32,
        /// FindCoordinator answers, in turn (the last repeats).
        coordinators: Vec<i32>,
        /// Requests served, as (broker id, API key).
        served: Vec<(i32, i16)>,
        /// Brokers that are down: they close every connection.
        down: BTreeSet<i32>,
    }

    type Shared = Arc<Mutex<Script>>;

    /// Binds `count` fake brokers (ids 1..=count) serving `script`; returns their
    /// addresses by id.
    fn fake_cluster(count: i32, script: &Shared) -> BTreeMap<i32, String> {
        let mut addrs = BTreeMap::new();
        for id in 1..=count {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            addrs.insert(id, addr);
            let script = Arc::clone(script);
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let script = Arc::clone(&script);
                    std::thread::spawn(move || serve(id, stream, &script));
                }
            });
        }
        script.lock().expect("lock").addrs = addrs.clone();
        addrs
    }

    /// An address nothing listens on.
    fn dead_addr() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    }

    fn serve(id: i32, mut stream: TcpStream, script: &Shared) {
        loop {
            let mut size = [0u8; 4];
            if stream.read_exact(&mut size).is_err() {
                return;
            }
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            if stream.read_exact(&mut body).is_err() {
                return;
            }
            let mut body = Bytes::from(body);
            let key = i16::from_be_bytes([body[0], body[1]]);
            let version = i16::from_be_bytes([body[2], body[3]]);
            let api = ApiKey::try_from(key).expect("api key");
            let header =
                RequestHeader::decode(&mut body, api.request_header_version(version)).expect("header");
            let mut payload = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut payload, api.response_header_version(version))
                .expect("encode header");
            let mut script = script.lock().expect("lock");
            if script.down.contains(&id) {
                return;
            }
            script.served.push((id, key));
            match api {
                ApiKey::Metadata => {
                    let request = m::MetadataRequest::decode(&mut body, version).expect("metadata");
                    metadata_answer(&mut script, &request).encode(&mut payload, version)
                }
                ApiKey::ListOffsets => {
                    let request = m::ListOffsetsRequest::decode(&mut body, version).expect("list offsets");
                    list_offsets_answer(&script, id, &request).encode(&mut payload, version)
                }
                ApiKey::FindCoordinator => {
                    let turn = script.served.iter().filter(|(_, k)| *k == key).count();
                    let coordinator = script.coordinators[(turn - 1).min(script.coordinators.len() - 1)];
                    let (host, port) = script.addrs[&coordinator].rsplit_once(':').expect("addr");
                    m::FindCoordinatorResponse::default()
                        .with_node_id(BrokerId(coordinator))
                        .with_host(StrBytes::from_string(host.to_string()))
                        .with_port(port.parse().expect("port"))
                        .encode(&mut payload, version)
                }
                other => panic!("the fake broker does not serve {other:?}"),
            }
            .expect("encode");
            drop(script);
            let mut frame = BytesMut::new();
            frame.put_i32(payload.len() as i32);
            frame.extend_from_slice(&payload);
            if stream.write_all(&frame).is_err() {
                return;
            }
        }
    }

    fn metadata_answer(script: &mut Script, request: &m::MetadataRequest) -> m::MetadataResponse {
        let mut response = m::MetadataResponse::default();
        response.controller_id = BrokerId(1);
        for (id, addr) in &script.addrs {
            let (host, port) = addr.rsplit_once(':').expect("addr");
            let mut b = broker(*id);
            b.host = StrBytes::from_string(host.to_string());
            b.port = port.parse().expect("port");
            response.brokers.push(b);
        }
        let asks_orders = request
            .topics
            .iter()
            .flatten()
            .any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "orders"));
        if asks_orders {
            script.topic_answers += 1;
            let stale = script.topic_answers <= script.stale_answers.max(1);
            let leaders = if stale { &script.stale } else { &script.leaders };
            let partitions = leaders
                .iter()
                .map(|(p, leader)| partition(*p, *leader, &[1, 2], &[1, 2]))
                .collect();
            response.topics = vec![topic("orders", partitions)];
        }
        response
    }

    /// Each partition's offset is 100 × the answering broker's id, or NOT_LEADER.
    fn list_offsets_answer(
        script: &Script,
        id: i32,
        request: &m::ListOffsetsRequest,
    ) -> m::ListOffsetsResponse {
        let mut response = m::ListOffsetsResponse::default();
        for t in &request.topics {
            let mut answer = m::list_offsets_response::ListOffsetsTopicResponse::default();
            answer.name = t.name.clone();
            for p in &t.partitions {
                let mut pa = m::list_offsets_response::ListOffsetsPartitionResponse::default();
                pa.partition_index = p.partition_index;
                if script.leaders.get(&p.partition_index) == Some(&id) {
                    pa.offset = i64::from(id) * 100;
                } else {
                    pa.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER.0;
                    pa.offset = -1;
                }
                answer.partitions.push(pa);
            }
            response.topics.push(answer);
        }
        response
    }

    const LIST_OFFSETS: Api = Api {
        key: ApiKey::ListOffsets,
        version: 7,
    };

    /// ListOffsets (latest) of `partitions` of `orders`: partition → (code, offset).
    fn latest(
        client: &mut ClusterClient,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, (i16, i64)>, ClusterError> {
        let items: BTreeMap<TopicPartition, ()> = partitions.iter().map(|p| (tp(*p), ())).collect();
        let build = |items: &BTreeMap<TopicPartition, ()>| {
            let mut t = m::list_offsets_request::ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_static_str("orders"));
            t.partitions = items
                .keys()
                .map(|tp| {
                    let mut p = m::list_offsets_request::ListOffsetsPartition::default();
                    p.partition_index = tp.partition;
                    p.timestamp = -1;
                    p
                })
                .collect();
            let mut request = m::ListOffsetsRequest::default();
            request.topics = vec![t];
            request
        };
        let read = |response: m::ListOffsetsResponse| {
            response
                .topics
                .into_iter()
                .flat_map(|t| t.partitions)
                .map(|p| (tp(p.partition_index), p.error_code, (p.error_code, p.offset)))
                .collect::<Vec<_>>()
        };
        let answers = client.call_partitioned(LIST_OFFSETS, items, build, read)?;
        Ok(answers.into_iter().map(|(tp, a)| (tp.partition, a)).collect())
    }

    fn served(script: &Shared, key: ApiKey) -> Vec<i32> {
        let script = script.lock().expect("lock");
        script
            .served
            .iter()
            .filter(|(_, k)| *k == key as i16)
            .map(|(id, _)| *id)
            .collect()
    }

    #[test]
    fn a_request_split_by_leader_follows_a_moved_leader() {
        let script = Shared::default();
        {
            let mut s = script.lock().expect("lock");
            // Metadata first says broker 1 leads both; partition 0 has moved to 2.
            s.stale = BTreeMap::from([(0, 1), (1, 1), (2, 2)]);
            s.leaders = BTreeMap::from([(0, 2), (1, 1), (2, 2)]);
        }
        let addrs = fake_cluster(2, &script);
        // Bootstrap from broker 2 only: broker 1 is found from Metadata.
        let mut client = ClusterClient::connect(&addrs[&2]).expect("connect");
        let answers = latest(&mut client, &[0, 1, 2]).expect("answers");
        assert_eq!(
            answers,
            BTreeMap::from([(0, (0, 200)), (1, (0, 100)), (2, (0, 200))])
        );
        // One request per leader, then partition 0 again to its new leader.
        let mut asked = served(&script, ApiKey::ListOffsets);
        asked.sort_unstable();
        assert_eq!(asked, vec![1, 2, 2]);
    }

    #[test]
    fn a_dead_leader_is_left_for_the_one_metadata_names_next() {
        let script = Shared::default();
        let addrs = fake_cluster(2, &script);
        {
            let mut s = script.lock().expect("lock");
            // Broker 3 is down; Metadata first names it, then broker 2.
            s.addrs.insert(3, dead_addr());
            s.stale = BTreeMap::from([(0, 3)]);
            s.leaders = BTreeMap::from([(0, 2)]);
        }
        let mut client = ClusterClient::connect(&addrs[&1]).expect("connect");
        let answers = latest(&mut client, &[0]).expect("answers");
        assert_eq!(answers, BTreeMap::from([(0, (0, 200))]));
    }

    #[test]
    fn a_partition_that_never_finds_its_leader_fails_naming_it_and_the_broker() {
        let script = Shared::default();
        {
            let mut s = script.lock().expect("lock");
            // Metadata always names broker 1, which is never the leader.
            s.stale = BTreeMap::from([(0, 1)]);
            s.leaders = BTreeMap::from([(0, 2)]);
            s.stale_answers = u32::MAX;
        }
        let addrs = fake_cluster(2, &script);
        let policy = RetryPolicy {
            budget_ms: 200,
            first_backoff_ms: 10,
            max_backoff_ms: 50,
        };
        let mut client = ClusterClient::with_policy(&addrs[&1], policy).expect("connect");
        let error = latest(&mut client, &[0]).expect_err("no leader ever answers");
        let text = error.to_string();
        assert!(text.starts_with("partition orders/0: gave up after"), "{text}");
        assert!(text.contains(&format!("(broker 1 at {})", addrs[&1])), "{text}");
        assert!(text.contains("NOT_LEADER_OR_FOLLOWER"), "{text}");
    }

    #[test]
    fn when_the_bootstrap_broker_dies_another_known_broker_answers() {
        let script = Shared::default();
        script.lock().expect("lock").coordinators = vec![2];
        let addrs = fake_cluster(2, &script);
        let mut client = ClusterClient::connect(&addrs[&1]).expect("connect");
        script.lock().expect("lock").down.insert(1);
        client
            .metadata(Some(&["orders"]))
            .expect("broker 2 answers Metadata");
        let target = Target::GroupCoordinator("billing".to_string());
        let coordinator = client
            .with_target::<String, ClusterError>(&target, |c| Ok(c.addr().to_string()))
            .expect("broker 2 answers FindCoordinator");
        assert_eq!(coordinator, addrs[&2]);
        assert_eq!(served(&script, ApiKey::FindCoordinator), vec![2]);
    }

    #[test]
    fn a_partial_call_keeps_the_answers_it_got_when_a_partition_has_no_leader() {
        let script = Shared::default();
        {
            let mut s = script.lock().expect("lock");
            s.stale = BTreeMap::from([(0, 1), (1, -1)]);
            s.leaders = BTreeMap::from([(0, 1), (1, -1)]);
        }
        let addrs = fake_cluster(1, &script);
        let policy = RetryPolicy {
            budget_ms: 100,
            first_backoff_ms: 10,
            max_backoff_ms: 20,
        };
        let mut client = ClusterClient::with_policy(&addrs[&1], policy).expect("connect");
        let items = BTreeMap::from([(tp(0), ()), (tp(1), ())]);
        let build = |_: &BTreeMap<TopicPartition, ()>| {
            let mut t = m::list_offsets_request::ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_static_str("orders"));
            t.partitions = vec![m::list_offsets_request::ListOffsetsPartition::default()];
            let mut request = m::ListOffsetsRequest::default();
            request.topics = vec![t];
            request
        };
        let read = |response: m::ListOffsetsResponse| {
            response
                .topics
                .into_iter()
                .flat_map(|t| t.partitions)
                .map(|p| (tp(p.partition_index), p.error_code, p.offset))
                .collect::<Vec<_>>()
        };
        let partial = client
            .call_partitioned_partial(LIST_OFFSETS, items, build, read)
            .expect("a partial answer");
        assert_eq!(partial.answers, BTreeMap::from([(tp(0), 100)]));
        let gave_up = partial.gave_up.expect("partition 1 has no answer").to_string();
        assert!(gave_up.starts_with("partition orders/1: gave up"), "{gave_up}");
        assert!(gave_up.ends_with("no leader"), "{gave_up}");
    }

    #[test]
    fn a_coordinator_that_moved_is_looked_up_again() {
        let script = Shared::default();
        script.lock().expect("lock").coordinators = vec![1, 2];
        let addrs = fake_cluster(2, &script);
        let mut client = ClusterClient::connect(&addrs[&1]).expect("connect");
        let broker_one = addrs[&1].clone();
        let target = Target::GroupCoordinator("billing".to_string());
        let answered = client
            .with_target::<String, ClusterError>(&target, |c| {
                if c.addr() == broker_one {
                    return Err(ClusterError::Refused {
                        what: "describe group billing".to_string(),
                        code: ErrorCode::NOT_COORDINATOR.0,
                        message: "moved".to_string(),
                    });
                }
                Ok(c.addr().to_string())
            })
            .expect("the second coordinator answers");
        assert_eq!(answered, addrs[&2]);
        assert_eq!(served(&script, ApiKey::FindCoordinator).len(), 2);
    }
}
