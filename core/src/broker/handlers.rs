//! Each Kafka API the broker serves: how a request becomes partition operations or a
//! metadata command, and how their results become the response.

use super::metadata::{self, describe_topic_config, topic_id, validate_topic_name, Metadata, TopicMeta};
use super::shard::{CommandResults, MetadataCommand, NewTopic, OpRef, OpResult, PartitionOp};
use super::{Broker, ConnectionId};
use crate::kafka::protocol::messages::{self as m, BrokerId, TopicName};
use crate::kafka::protocol::protocol::StrBytes;
use crate::kafka::{api_versions_response, DecodedRequest, ErrorCode, Request, RequestHeader, Response};
use crate::log::LogConfig;
use crate::partition::Acks;
use crate::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// A request waiting for its operations or command.
#[derive(Debug)]
pub struct Pending {
    connection: ConnectionId,
    header: RequestHeader,
    started: Instant,
    /// When the request gives up (produce timeout, fetch max wait).
    pub deadline: Option<Instant>,
    kind: PendingKind,
    results: Vec<Option<OpResult>>,
    remaining: usize,
}

/// The API of request `request` while it is pending.
pub(super) fn pending_api(broker: &Broker, request: u64) -> Option<crate::kafka::protocol::messages::ApiKey> {
    broker.requests.get(&request).map(|p| p.header.api_key)
}

/// What kind of answer a request builds, with what it needs to build it.
#[derive(Debug)]
pub(super) enum PendingKind {
    /// Produce: one slot per (topic, partition); no answer for acks=0.
    Produce {
        slots: Vec<(String, i32)>,
        respond: bool,
    },
    /// Fetch: one slot per (topic, partition, offset, max bytes).
    Fetch {
        slots: Vec<(String, i32, i64, u64)>,
        min_bytes: u64,
        max_bytes: u64,
        wait_until: Instant,
        read_committed: bool,
    },
    /// ListOffsets.
    ListOffsets { slots: Vec<(String, i32)> },
    /// OffsetForLeaderEpoch.
    EpochEnd { slots: Vec<(String, i32)> },
    /// DeleteRecords.
    DeleteRecords { slots: Vec<(String, i32)> },
    /// A metadata command; the results arrive whole.
    Command,
    /// A consumer-group request: one slot per group (or per coordinator, ListGroups).
    Group(super::group_handlers::GroupPending),
    /// A transaction request (see `super::txn_handlers`).
    Txn(super::txn_handlers::TxnPending),
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn topic_uuid(meta: Option<&TopicMeta>) -> Uuid {
    meta.map_or(Uuid::nil(), |t| Uuid::from_bytes(t.topic_id))
}

/// Starts serving a decoded request `id` of `connection`.
pub fn start(broker: &mut Broker, now: Instant, id: u64, connection: ConnectionId, decoded: DecodedRequest) {
    let header = decoded.header.clone();
    let respond = decoded.expects_response();
    match decoded.request {
        Request::ApiVersions(_) => {
            let response = api_versions_response();
            broker.respond(connection, id, &header, Some(Response::ApiVersions(response)));
        }
        Request::Metadata(request) => {
            let response = metadata_response(broker, &request);
            broker.respond(connection, id, &header, Some(Response::Metadata(response)));
        }
        Request::DescribeCluster(_) => {
            let mut response = m::DescribeClusterResponse::default();
            response.cluster_id = str_bytes(cluster_id(broker));
            response.controller_id = BrokerId(super::cluster::controller_id(broker));
            response.brokers = super::cluster::brokers(broker)
                .into_iter()
                .map(|(id, host, port)| {
                    let mut node = m::describe_cluster_response::DescribeClusterBroker::default();
                    node.broker_id = BrokerId(id);
                    node.host = str_bytes(host);
                    node.port = i32::from(port);
                    node
                })
                .collect();
            broker.respond(connection, id, &header, Some(Response::DescribeCluster(response)));
        }
        Request::DescribeConfigs(request) => {
            let response = describe_configs(broker, &request);
            broker.respond(connection, id, &header, Some(Response::DescribeConfigs(response)));
        }
        // KIP-890: a transactional produce is first verified with its coordinator.
        Request::Produce(request) if super::txn_handlers::must_verify(broker, &request) => {
            super::txn_handlers::verify_produce(broker, now, (id, connection, header), respond, request)
        }
        Request::Produce(request) => start_produce(broker, now, id, connection, header, respond, request),
        Request::Fetch(request) => start_fetch(broker, now, id, connection, header, request),
        Request::ListOffsets(request) => {
            let mut ops = Vec::new();
            for topic in &request.topics {
                for p in &topic.partitions {
                    ops.push((
                        topic.name.0.as_str().to_string(),
                        p.partition_index,
                        PartitionOp::ListOffsets {
                            timestamp: p.timestamp,
                            read_committed: request.isolation_level == 1,
                        },
                    ));
                }
            }
            let kind = |slots| PendingKind::ListOffsets { slots };
            begin_simple(broker, now, id, connection, header, None, kind, ops);
        }
        Request::OffsetForLeaderEpoch(request) => {
            let mut ops = Vec::new();
            for topic in &request.topics {
                for p in &topic.partitions {
                    ops.push((
                        topic.topic.0.as_str().to_string(),
                        p.partition,
                        PartitionOp::EpochEnd {
                            epoch: p.leader_epoch,
                        },
                    ));
                }
            }
            let kind = |slots| PendingKind::EpochEnd { slots };
            begin_simple(broker, now, id, connection, header, None, kind, ops);
        }
        Request::DeleteRecords(request) => {
            let mut ops = Vec::new();
            for topic in &request.topics {
                for p in &topic.partitions {
                    ops.push((
                        topic.name.0.as_str().to_string(),
                        p.partition_index,
                        PartitionOp::DeleteRecords { offset: p.offset },
                    ));
                }
            }
            let deadline =
                Some(now + Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0).max(1)));
            let kind = |slots| PendingKind::DeleteRecords { slots };
            begin_simple(broker, now, id, connection, header, deadline, kind, ops);
        }
        Request::CreateTopics(request) => {
            let topics = request
                .topics
                .iter()
                .map(|t| {
                    let configs = t
                        .configs
                        .iter()
                        .map(|c| {
                            (
                                c.name.as_str().to_string(),
                                c.value.as_ref().map_or(String::new(), |v| v.as_str().to_string()),
                            )
                        })
                        .collect();
                    NewTopic {
                        name: t.name.0.as_str().to_string(),
                        partitions: if t.num_partitions == -1 {
                            1
                        } else {
                            t.num_partitions
                        },
                        replication_factor: t.replication_factor,
                        configs,
                    }
                })
                .collect();
            let command = MetadataCommand::CreateTopics {
                topics,
                validate_only: request.validate_only,
            };
            command_request(broker, now, id, connection, header, command);
        }
        Request::DeleteTopics(request) => {
            let mut topics: Vec<String> = request
                .topic_names
                .iter()
                .map(|t| t.0.as_str().to_string())
                .collect();
            topics.extend(
                request
                    .topics
                    .iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string())),
            );
            command_request(
                broker,
                now,
                id,
                connection,
                header,
                MetadataCommand::DeleteTopics { topics },
            );
        }
        Request::CreatePartitions(request) => {
            let topics = request
                .topics
                .iter()
                .map(|t| (t.name.0.as_str().to_string(), t.count))
                .collect();
            let command = MetadataCommand::CreatePartitions {
                topics,
                validate_only: request.validate_only,
            };
            command_request(broker, now, id, connection, header, command);
        }
        Request::AlterConfigs(request) => {
            let topics = request
                .resources
                .iter()
                .filter(|r| r.resource_type == 2)
                .map(|r| {
                    let changes = r
                        .configs
                        .iter()
                        .map(|c| {
                            (
                                c.name.as_str().to_string(),
                                c.value.as_ref().map(|v| v.as_str().to_string()),
                            )
                        })
                        .collect();
                    (r.resource_name.as_str().to_string(), changes)
                })
                .collect();
            let command = MetadataCommand::AlterConfigs {
                topics,
                replace: true,
                validate_only: request.validate_only,
            };
            command_request(broker, now, id, connection, header, command);
        }
        Request::IncrementalAlterConfigs(request) => {
            let topics = request
                .resources
                .iter()
                .filter(|r| r.resource_type == 2)
                .map(|r| {
                    let changes = r
                        .configs
                        .iter()
                        .map(|c| {
                            // 0 SET, 1 DELETE; APPEND/SUBTRACT apply to list configs, which
                            // Oxbow's topic settings are not: treated as SET.
                            let value = (c.config_operation != 1)
                                .then(|| c.value.as_ref().map_or(String::new(), |v| v.as_str().to_string()));
                            (c.name.as_str().to_string(), value)
                        })
                        .collect();
                    (r.resource_name.as_str().to_string(), changes)
                })
                .collect();
            let command = MetadataCommand::AlterConfigs {
                topics,
                replace: false,
                validate_only: request.validate_only,
            };
            command_request(broker, now, id, connection, header, command);
        }
        Request::InitProducerId(request) => {
            super::producer_handlers::start(broker, now, id, connection, header, request)
        }
        request @ (Request::FindCoordinator(_)
        | Request::JoinGroup(_)
        | Request::SyncGroup(_)
        | Request::Heartbeat(_)
        | Request::LeaveGroup(_)
        | Request::OffsetCommit(_)
        | Request::OffsetFetch(_)
        | Request::DescribeGroups(_)
        | Request::ListGroups(_)
        | Request::DeleteGroups(_)
        | Request::OffsetDelete(_)
        | Request::ConsumerGroupHeartbeat(_)
        | Request::ConsumerGroupDescribe(_)) => {
            super::group_handlers::start(broker, now, id, connection, header, request)
        }
        // The transaction APIs, and any decodable API without a handler (answered
        // UNSUPPORTED_VERSION there).
        request => super::txn_handlers::start(broker, now, id, connection, header, request),
    }
}

/// Topics only Oxbow writes (group and transaction state).
pub fn is_internal_topic(topic: &str) -> bool {
    topic == crate::group::OFFSETS_TOPIC || topic == crate::txn::coordinator::TXN_STATE_TOPIC
}

fn cluster_id(broker: &Broker) -> String {
    match broker.cluster {
        // One id for every broker of the cluster (clients compare them).
        Some(_) => "oxbow-cluster".to_string(),
        None => format!("oxbow-{}", broker.node_id),
    }
}

fn metadata_response(broker: &Broker, request: &m::MetadataRequest) -> m::MetadataResponse {
    let mut response = m::MetadataResponse::default();
    response.brokers = super::cluster::brokers(broker)
        .into_iter()
        .map(|(id, host, port)| {
            let mut node = m::metadata_response::MetadataResponseBroker::default();
            node.node_id = BrokerId(id);
            node.host = str_bytes(host);
            node.port = i32::from(port);
            node
        })
        .collect();
    response.cluster_id = Some(str_bytes(cluster_id(broker)));
    response.controller_id = BrokerId(super::cluster::controller_id(broker));
    // Topics asked for by name, or (v10+, e.g. KIP-848 consumers resolving their
    // assignment) by id alone.
    let wanted: Vec<Result<String, Uuid>> = match &request.topics {
        None => broker.metadata.topics.keys().cloned().map(Ok).collect(),
        Some(topics) => topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => Ok(n.0.as_str().to_string()),
                None => broker
                    .metadata
                    .topics
                    .iter()
                    .find(|(_, meta)| Uuid::from_bytes(meta.topic_id) == t.topic_id)
                    .map(|(name, _)| name.clone())
                    .ok_or(t.topic_id),
            })
            .collect(),
    };
    for wanted in wanted {
        let mut topic = m::metadata_response::MetadataResponseTopic::default();
        let topic_name = match wanted {
            Ok(topic_name) => topic_name,
            Err(id) => {
                topic.topic_id = id;
                topic.error_code = ErrorCode::UNKNOWN_TOPIC_ID.0;
                response.topics.push(topic);
                continue;
            }
        };
        topic.name = Some(name(&topic_name));
        match broker.metadata.topics.get(&topic_name) {
            None => topic.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
            Some(meta) => {
                topic.topic_id = Uuid::from_bytes(meta.topic_id);
                topic.is_internal = is_internal_topic(&topic_name);
                for index in 0..meta.partitions {
                    let mut partition = m::metadata_response::MetadataResponsePartition::default();
                    partition.partition_index = index;
                    let replicas: Vec<BrokerId> = match &broker.cluster {
                        Some(c) => c
                            .view
                            .replicas(&topic_name, index)
                            .unwrap_or_default()
                            .iter()
                            .map(|r| BrokerId(*r))
                            .collect(),
                        None => vec![BrokerId(broker.node_id)],
                    };
                    partition.replica_nodes = replicas;
                    partition.isr_nodes = super::cluster::in_sync_replicas(broker, &topic_name, index)
                        .into_iter()
                        .map(BrokerId)
                        .collect();
                    match super::cluster::leader_of(broker, &topic_name, index) {
                        Some((leader, epoch)) => {
                            partition.leader_id = BrokerId(leader);
                            partition.leader_epoch = epoch;
                        }
                        None => {
                            partition.leader_id = BrokerId(-1);
                            partition.leader_epoch = -1;
                            partition.error_code = ErrorCode::LEADER_NOT_AVAILABLE.0;
                        }
                    }
                    topic.partitions.push(partition);
                }
            }
        }
        response.topics.push(topic);
    }
    response
}

fn describe_configs(broker: &Broker, request: &m::DescribeConfigsRequest) -> m::DescribeConfigsResponse {
    let mut response = m::DescribeConfigsResponse::default();
    for resource in &request.resources {
        let mut result = m::describe_configs_response::DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let topic = resource.resource_name.as_str();
        let entries = match (resource.resource_type, broker.metadata.topics.get(topic)) {
            (2, Some(meta)) => match metadata::topic_log_config(&broker.log_defaults, &meta.configs) {
                Ok(config) => Ok(describe_topic_config(&config, &meta.configs)),
                Err(e) => Err((ErrorCode::INVALID_CONFIG, e.to_string())),
            },
            (2, None) => Err((
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("no topic `{topic}`"),
            )),
            // Broker resources: the node-wide log defaults.
            (4, _) => Ok(describe_topic_config(&broker.log_defaults, &BTreeMap::new())),
            _ => Err((
                ErrorCode::INVALID_REQUEST,
                "only topic and broker resources".to_string(),
            )),
        };
        match entries {
            Ok(entries) => {
                // Null (or an empty list) asks for every key.
                let wanted: Option<Vec<&str>> = resource
                    .configuration_keys
                    .as_ref()
                    .filter(|k| !k.is_empty())
                    .map(|k| k.iter().map(|s| s.as_str()).collect());
                for (key, value, is_default) in entries {
                    if wanted.as_ref().is_some_and(|w| !w.contains(&key.as_str())) {
                        continue;
                    }
                    let mut entry = m::describe_configs_response::DescribeConfigsResourceResult::default();
                    entry.name = str_bytes(key);
                    entry.value = Some(str_bytes(value));
                    // 1 = dynamic topic config, 5 = default config.
                    entry.config_source = if is_default { 5 } else { 1 };
                    result.configs.push(entry);
                }
            }
            Err((code, message)) => {
                result.error_code = code.0;
                result.error_message = Some(str_bytes(message));
            }
        }
        response.results.push(result);
    }
    response
}

/// Starts a request whose slots are simply (topic, partition) per operation.
#[allow(clippy::too_many_arguments)]
fn begin_simple(
    broker: &mut Broker,
    now: Instant,
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    deadline: Option<Instant>,
    kind: fn(Vec<(String, i32)>) -> PendingKind,
    ops: Vec<(String, i32, PartitionOp)>,
) {
    let slots = ops.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    begin(broker, now, id, connection, header, deadline, kind(slots), ops);
}

/// Groups per-partition answers by topic, in topic order, keeping partition order.
fn by_topic<P>(
    slots: &[(String, i32)],
    results: &[Option<OpResult>],
    mut part: impl FnMut(i32, Option<&OpResult>) -> P,
) -> BTreeMap<String, Vec<P>> {
    let mut grouped: BTreeMap<String, Vec<P>> = BTreeMap::new();
    for ((topic, partition), result) in slots.iter().zip(results) {
        grouped
            .entry(topic.clone())
            .or_default()
            .push(part(*partition, result.as_ref()));
    }
    grouped
}

#[allow(clippy::too_many_arguments)]
pub(super) fn begin(
    broker: &mut Broker,
    now: Instant,
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    deadline: Option<Instant>,
    kind: PendingKind,
    ops: Vec<(String, i32, PartitionOp)>,
) {
    let count = ops.len();
    broker.requests.insert(
        id,
        Pending {
            connection,
            header,
            started: now,
            deadline,
            kind,
            results: vec![None; count],
            remaining: count,
        },
    );
    if count == 0 {
        finish(broker, now, id);
        return;
    }
    for (slot, (topic, partition, op)) in ops.into_iter().enumerate() {
        let op_ref = OpRef {
            origin: broker.shard,
            request: id,
            slot: slot as u32,
        };
        broker.run_op(now, op_ref, &topic, partition, op);
    }
}

pub(super) fn start_produce(
    broker: &mut Broker,
    now: Instant,
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    respond: bool,
    request: m::ProduceRequest,
) {
    let acks = Acks::from_kafka(request.acks);
    let mut ops = Vec::new();
    let mut slots = Vec::new();
    for topic in request.topic_data {
        let topic_name = topic.name.0.as_str().to_string();
        for partition in topic.partition_data {
            slots.push((topic_name.clone(), partition.index));
            let op = match (acks, partition.records) {
                // Internal topics are written by their coordinators only.
                _ if is_internal_topic(&topic_name) => PartitionOp::Refused {
                    code: ErrorCode::INVALID_TOPIC_EXCEPTION.0,
                },
                (Some(acks), Some(batch)) => PartitionOp::Produce { batch, acks },
                // Answered with an error below, through the same path.
                _ => PartitionOp::Produce {
                    batch: bytes::Bytes::new(),
                    acks: Acks::All,
                },
            };
            ops.push((topic_name.clone(), partition.index, op));
        }
    }
    if acks.is_none() {
        // INVALID_REQUIRED_ACKS for every partition, without touching the log.
        let count = slots.len();
        broker.requests.insert(
            id,
            Pending {
                connection,
                header,
                started: now,
                deadline: None,
                kind: PendingKind::Produce { slots, respond },
                results: vec![Some(OpResult::Error(ErrorCode::INVALID_REQUIRED_ACKS.0)); count],
                remaining: 0,
            },
        );
        finish(broker, now, id);
        return;
    }
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0).max(1));
    begin(
        broker,
        now,
        id,
        connection,
        header,
        Some(now + timeout),
        PendingKind::Produce { slots, respond },
        ops,
    );
}

fn start_fetch(
    broker: &mut Broker,
    now: Instant,
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    request: m::FetchRequest,
) {
    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let wait_until = now + max_wait;
    let max_bytes = u64::try_from(request.max_bytes).unwrap_or(0).max(1);
    let min_bytes = u64::try_from(request.min_bytes).unwrap_or(0);
    let mut slots = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let partition_max = u64::try_from(p.partition_max_bytes).unwrap_or(0).max(1);
            slots.push((
                topic.topic.0.as_str().to_string(),
                p.partition,
                p.fetch_offset,
                partition_max,
            ));
        }
    }
    let read_committed = request.isolation_level == 1;
    let kind = PendingKind::Fetch {
        slots: slots.clone(),
        min_bytes,
        max_bytes,
        wait_until,
        read_committed,
    };
    // First round without waiting; long-poll rounds follow if too little came back.
    let ops = slots
        .into_iter()
        .map(|(t, p, offset, max)| {
            let op = PartitionOp::Fetch {
                offset,
                max_bytes: max,
                wait_until: None,
                read_committed,
            };
            (t, p, op)
        })
        .collect();
    // The first round's reads are awaited even past `max_wait` (a fetch answers what
    // its partitions hold, also with max_wait_ms=0), up to a bound that keeps a stalled
    // disk from holding the request forever; long-poll rounds end at `wait_until`.
    let first_round_deadline = wait_until.max(now + FIRST_FETCH_ROUND_BOUND);
    begin(
        broker,
        now,
        id,
        connection,
        header,
        Some(first_round_deadline),
        kind,
        ops,
    );
}

/// Longest a fetch waits for its first round of reads.
const FIRST_FETCH_ROUND_BOUND: Duration = Duration::from_secs(10);

fn command_request(
    broker: &mut Broker,
    now: Instant,
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    command: MetadataCommand,
) {
    broker.requests.insert(
        id,
        Pending {
            connection,
            header,
            started: now,
            deadline: None,
            kind: PendingKind::Command,
            results: Vec::new(),
            remaining: 1,
        },
    );
    broker.submit_command(now, id, command);
}

/// A result for slot `op_ref.slot` of request `op_ref.request` (ignored if the request
/// already answered, e.g. after its deadline).
pub fn on_result(broker: &mut Broker, now: Instant, op_ref: OpRef, result: OpResult) {
    let Some(pending) = broker.requests.get_mut(&op_ref.request) else {
        return;
    };
    let Some(slot) = pending.results.get_mut(op_ref.slot as usize) else {
        return;
    };
    if slot.is_none() {
        pending.remaining -= 1;
    }
    *slot = Some(result);
    let done = pending.remaining == 0;
    if let PendingKind::Fetch {
        min_bytes,
        wait_until,
        ..
    } = &pending.kind
    {
        let bytes = fetched_bytes(&pending.results);
        if bytes >= *min_bytes.max(&1) || any_error(&pending.results) {
            finish(broker, now, op_ref.request);
        } else if done {
            // min_bytes 0 asks for an answer at once, data or not.
            if *min_bytes == 0 || now >= *wait_until {
                finish(broker, now, op_ref.request);
            } else {
                long_poll(broker, now, op_ref.request);
            }
        }
        return;
    }
    if done {
        finish(broker, now, op_ref.request);
    }
}

fn fetched_bytes(results: &[Option<OpResult>]) -> u64 {
    results
        .iter()
        .map(|r| match r {
            Some(OpResult::Fetched { records, .. }) => records.len() as u64,
            _ => 0,
        })
        .sum()
}

fn any_error(results: &[Option<OpResult>]) -> bool {
    results
        .iter()
        .any(|r| r.as_ref().is_some_and(|r| r.error_code() != 0))
}

/// Re-issues a fetch's operations, each waiting at its partition for new data.
fn long_poll(broker: &mut Broker, now: Instant, id: u64) {
    let Some(pending) = broker.requests.get_mut(&id) else {
        return;
    };
    let PendingKind::Fetch {
        slots,
        wait_until,
        read_committed,
        ..
    } = &pending.kind
    else {
        return;
    };
    let slots = slots.clone();
    let wait_until = *wait_until;
    let read_committed = *read_committed;
    pending.deadline = Some(wait_until);
    pending.results = vec![None; slots.len()];
    pending.remaining = slots.len();
    for (slot, (topic, partition, offset, max_bytes)) in slots.into_iter().enumerate() {
        let op_ref = OpRef {
            origin: broker.shard,
            request: id,
            slot: slot as u32,
        };
        let op = PartitionOp::Fetch {
            offset,
            max_bytes,
            wait_until: Some(wait_until),
            read_committed,
        };
        broker.run_op(now, op_ref, &topic, partition, op);
    }
}

/// The deadline of a request passed: answer with what there is.
pub fn expire(broker: &mut Broker, now: Instant, id: u64) {
    let Some(pending) = broker.requests.get_mut(&id) else {
        return;
    };
    if matches!(pending.kind, PendingKind::Command) {
        return;
    }
    for slot in pending.results.iter_mut().filter(|s| s.is_none()) {
        *slot = Some(match pending.kind {
            PendingKind::Fetch { .. } => OpResult::Fetched {
                high_watermark: -1,
                log_start_offset: -1,
                last_stable_offset: -1,
                aborted: Vec::new(),
                records: bytes::Bytes::new(),
            },
            _ => OpResult::Error(ErrorCode::REQUEST_TIMED_OUT.0),
        });
    }
    finish(broker, now, id);
}

/// The results of a metadata command arrived.
pub fn on_command_done(broker: &mut Broker, now: Instant, id: u64, results: CommandResults) {
    let Some(pending) = broker.requests.remove(&id) else {
        return;
    };
    let response = command_response(broker, &pending.header, results);
    broker.respond(pending.connection, id, &pending.header, Some(response));
    let _ = now;
}

fn command_response(broker: &Broker, header: &RequestHeader, results: CommandResults) -> Response {
    use crate::kafka::protocol::messages::ApiKey;
    let message = |m: Option<String>| m.map(str_bytes);
    match header.api_key {
        ApiKey::CreateTopics => {
            let mut response = m::CreateTopicsResponse::default();
            for (topic, code, msg) in results {
                let mut result = m::create_topics_response::CreatableTopicResult::default();
                let meta = broker.metadata.topics.get(&topic);
                result.topic_id = if code == 0 { topic_uuid(meta) } else { Uuid::nil() };
                result.num_partitions = if code == 0 {
                    meta.map_or(-1, |t| t.partitions)
                } else {
                    -1
                };
                result.replication_factor = if code == 0 { 1 } else { -1 };
                result.name = name(&topic);
                result.error_code = code;
                result.error_message = message(msg);
                response.topics.push(result);
            }
            Response::CreateTopics(response)
        }
        ApiKey::DeleteTopics => {
            let mut response = m::DeleteTopicsResponse::default();
            for (topic, code, msg) in results {
                let mut result = m::delete_topics_response::DeletableTopicResult::default();
                result.name = Some(name(&topic));
                result.error_code = code;
                result.error_message = message(msg);
                response.responses.push(result);
            }
            Response::DeleteTopics(response)
        }
        ApiKey::CreatePartitions => {
            let mut response = m::CreatePartitionsResponse::default();
            for (topic, code, msg) in results {
                let mut result = m::create_partitions_response::CreatePartitionsTopicResult::default();
                result.name = name(&topic);
                result.error_code = code;
                result.error_message = message(msg);
                response.results.push(result);
            }
            Response::CreatePartitions(response)
        }
        ApiKey::AlterConfigs => {
            let mut response = m::AlterConfigsResponse::default();
            for (topic, code, msg) in results {
                let mut result = m::alter_configs_response::AlterConfigsResourceResponse::default();
                result.resource_type = 2;
                result.resource_name = str_bytes(topic);
                result.error_code = code;
                result.error_message = message(msg);
                response.responses.push(result);
            }
            Response::AlterConfigs(response)
        }
        _ => {
            let mut response = m::IncrementalAlterConfigsResponse::default();
            for (topic, code, msg) in results {
                let mut result =
                    m::incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                result.resource_type = 2;
                result.resource_name = str_bytes(topic);
                result.error_code = code;
                result.error_message = message(msg);
                response.responses.push(result);
            }
            Response::IncrementalAlterConfigs(response)
        }
    }
}

/// All results are in (or the deadline passed): build and send the response.
fn finish(broker: &mut Broker, now: Instant, id: u64) {
    let Some(pending) = broker.requests.remove(&id) else {
        return;
    };
    let latency_ns = u64::try_from((now - pending.started).as_nanos()).unwrap_or(u64::MAX);
    let take = |r: Option<&OpResult>| {
        r.cloned()
            .unwrap_or(OpResult::Error(ErrorCode::REQUEST_TIMED_OUT.0))
    };
    let response = match &pending.kind {
        PendingKind::Produce { slots, respond } => {
            broker.metrics.produce_count += 1;
            broker.metrics.produce_latency_ns += latency_ns;
            if !respond {
                None
            } else {
                let mut response = m::ProduceResponse::default();
                let grouped = by_topic(slots, &pending.results, |partition, result| {
                    let mut p = m::produce_response::PartitionProduceResponse::default();
                    p.index = partition;
                    p.log_append_time_ms = -1;
                    match take(result) {
                        OpResult::Produced {
                            base_offset,
                            log_start_offset,
                        } => {
                            p.base_offset = base_offset;
                            p.log_start_offset = log_start_offset;
                        }
                        other => {
                            p.error_code = other.error_code();
                            p.base_offset = -1;
                            p.log_start_offset = -1;
                        }
                    }
                    p
                });
                for (topic, partitions) in grouped {
                    let mut t = m::produce_response::TopicProduceResponse::default();
                    t.name = name(&topic);
                    t.partition_responses = partitions;
                    response.responses.push(t);
                }
                Some(Response::Produce(response))
            }
        }
        PendingKind::Fetch { slots, max_bytes, .. } => {
            broker.metrics.fetch_count += 1;
            broker.metrics.fetch_latency_ns += latency_ns;
            let mut response = m::FetchResponse::default();
            let mut budget = *max_bytes;
            let topic_slots: Vec<(String, i32)> = slots.iter().map(|(t, p, _, _)| (t.clone(), *p)).collect();
            let grouped = by_topic(&topic_slots, &pending.results, |partition, result| {
                let mut p = m::fetch_response::PartitionData::default();
                p.partition_index = partition;
                p.last_stable_offset = -1;
                p.high_watermark = -1;
                p.log_start_offset = -1;
                p.preferred_read_replica = BrokerId(-1);
                p.records = Some(bytes::Bytes::new());
                match result {
                    Some(OpResult::Fetched {
                        high_watermark,
                        log_start_offset,
                        last_stable_offset,
                        aborted,
                        records,
                    }) => {
                        p.high_watermark = *high_watermark;
                        p.last_stable_offset = *last_stable_offset;
                        p.log_start_offset = *log_start_offset;
                        p.aborted_transactions = super::txn_handlers::aborted_transactions(aborted);
                        // The response as a whole respects max_bytes, except that the
                        // first non-empty partition is always whole (KIP-74).
                        let len = records.len() as u64;
                        if len > 0 && (len <= budget || budget == *max_bytes) {
                            budget = budget.saturating_sub(len);
                            p.records = Some(records.clone());
                        }
                    }
                    Some(other) => {
                        p.error_code = other.error_code();
                        p.records = None;
                    }
                    None => {}
                }
                p
            });
            for (topic, partitions) in grouped {
                let mut t = m::fetch_response::FetchableTopicResponse::default();
                t.topic = name(&topic);
                t.topic_id = topic_uuid(broker.metadata.topics.get(&topic));
                t.partitions = partitions;
                response.responses.push(t);
            }
            Some(Response::Fetch(response))
        }
        PendingKind::ListOffsets { slots } => {
            let list_offsets_version = pending.header.api_version;
            let mut response = m::ListOffsetsResponse::default();
            let grouped = by_topic(slots, &pending.results, |partition, result| {
                let mut p = m::list_offsets_response::ListOffsetsPartitionResponse::default();
                p.partition_index = partition;
                match take(result) {
                    OpResult::Offset {
                        offset,
                        timestamp,
                        leader_epoch,
                    } => {
                        p.offset = offset;
                        p.timestamp = timestamp;
                        // The leader epoch is in the answer from v4 on; setting it on an
                        // older version makes the response unencodable.
                        if list_offsets_version >= 4 {
                            p.leader_epoch = leader_epoch;
                        }
                    }
                    other => {
                        p.error_code = other.error_code();
                        p.offset = -1;
                        p.timestamp = -1;
                    }
                }
                p
            });
            for (topic, partitions) in grouped {
                let mut t = m::list_offsets_response::ListOffsetsTopicResponse::default();
                t.name = name(&topic);
                t.partitions = partitions;
                response.topics.push(t);
            }
            Some(Response::ListOffsets(response))
        }
        PendingKind::EpochEnd { slots } => {
            let mut response = m::OffsetForLeaderEpochResponse::default();
            let grouped = by_topic(slots, &pending.results, |partition, result| {
                let mut p = m::offset_for_leader_epoch_response::EpochEndOffset::default();
                p.partition = partition;
                match take(result) {
                    OpResult::EpochEnd { epoch, end_offset } => {
                        p.leader_epoch = epoch;
                        p.end_offset = end_offset;
                    }
                    other => {
                        p.error_code = other.error_code();
                        p.leader_epoch = -1;
                        p.end_offset = -1;
                    }
                }
                p
            });
            for (topic, partitions) in grouped {
                let mut t = m::offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
                t.topic = name(&topic);
                t.partitions = partitions;
                response.topics.push(t);
            }
            Some(Response::OffsetForLeaderEpoch(response))
        }
        PendingKind::DeleteRecords { slots } => {
            let mut response = m::DeleteRecordsResponse::default();
            let grouped = by_topic(slots, &pending.results, |partition, result| {
                let mut p = m::delete_records_response::DeleteRecordsPartitionResult::default();
                p.partition_index = partition;
                match take(result) {
                    OpResult::RecordsDeleted { low_watermark } => p.low_watermark = low_watermark,
                    other => {
                        p.error_code = other.error_code();
                        p.low_watermark = -1;
                    }
                }
                p
            });
            for (topic, partitions) in grouped {
                let mut t = m::delete_records_response::DeleteRecordsTopicResult::default();
                t.name = name(&topic);
                t.partitions = partitions;
                response.topics.push(t);
            }
            Some(Response::DeleteRecords(response))
        }
        PendingKind::Command => return,
        PendingKind::Group(group) => Some(super::group_handlers::response(
            group,
            &pending.header,
            &pending.results,
        )),
        PendingKind::Txn(txn) => {
            // A verified transactional produce continues as a produce under the same id.
            if let Some((respond, request)) = super::txn_handlers::verified_produce(txn, &pending.results) {
                let (connection, header) = (pending.connection, pending.header);
                start_produce(broker, now, id, connection, header, respond, request);
                return;
            }
            // A TxnOffsetCommit v5 whose offsets partition joined the transaction.
            if let Some(request) = super::txn_handlers::offsets_added(txn, &pending.results) {
                let request_ref = (id, pending.connection, pending.header);
                super::txn_handlers::commit_added_offsets(broker, now, request_ref, request);
                return;
            }
            super::txn_handlers::response(txn, &pending.header, &pending.results)
        }
    };
    broker.respond(pending.connection, id, &pending.header, response);
}

/// Applies a metadata command to `metadata` (shard 0). Returns per-entry results and
/// whether anything changed.
pub fn apply_command(
    metadata: &mut Metadata,
    defaults: &LogConfig,
    command: MetadataCommand,
    max_replication_factor: i16,
) -> (CommandResults, bool) {
    let ok = |topic: &str| (topic.to_string(), 0i16, None);
    let fail = |topic: &str, code: ErrorCode, message: String| (topic.to_string(), code.0, Some(message));
    let mut results = Vec::new();
    let mut changed = false;
    match command {
        MetadataCommand::CreateTopics {
            topics,
            validate_only,
        } => {
            for NewTopic {
                name: topic,
                partitions,
                replication_factor,
                configs,
            } in topics
            {
                let configs: BTreeMap<String, String> = configs.into_iter().collect();
                let result = if let Err(reason) = validate_topic_name(&topic) {
                    fail(&topic, ErrorCode::INVALID_TOPIC_EXCEPTION, reason)
                } else if metadata.topics.contains_key(&topic) {
                    fail(
                        &topic,
                        ErrorCode::TOPIC_ALREADY_EXISTS,
                        format!("topic `{topic}` already exists"),
                    )
                } else if replication_factor > max_replication_factor
                    || replication_factor == 0
                    || replication_factor < -1
                {
                    let reason = match max_replication_factor {
                        1 => format!("replication factor {replication_factor}: this node is the only broker (use 1 or -1)"),
                        live => format!(
                            "replication factor {replication_factor}: {live} live brokers (use 1 to {live}, or -1)"
                        ),
                    };
                    fail(&topic, ErrorCode::INVALID_REPLICATION_FACTOR, reason)
                } else if !(1..=100_000).contains(&partitions) {
                    fail(
                        &topic,
                        ErrorCode::INVALID_PARTITIONS,
                        format!("{partitions} partitions: must be 1 to 100000"),
                    )
                } else if let Err(e) = metadata::topic_log_config(defaults, &configs) {
                    fail(&topic, ErrorCode::INVALID_CONFIG, e.to_string())
                } else {
                    if !validate_only {
                        let revision = metadata.next_revision;
                        metadata.next_revision += 1;
                        metadata.topics.insert(
                            topic.clone(),
                            TopicMeta {
                                topic_id: topic_id(&topic, revision),
                                partitions,
                                revision,
                                configs,
                            },
                        );
                        changed = true;
                    }
                    ok(&topic)
                };
                results.push(result);
            }
        }
        MetadataCommand::DeleteTopics { topics } => {
            for topic in topics {
                if is_internal_topic(&topic) {
                    results.push(fail(
                        &topic,
                        ErrorCode::INVALID_TOPIC_EXCEPTION,
                        format!("`{topic}` is internal: deleting it would lose the groups' or transactions' state"),
                    ));
                } else if metadata.topics.remove(&topic).is_some() {
                    changed = true;
                    results.push(ok(&topic));
                } else {
                    results.push(fail(
                        &topic,
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("no topic `{topic}`"),
                    ));
                }
            }
        }
        MetadataCommand::CreatePartitions {
            topics,
            validate_only,
        } => {
            for (topic, count) in topics {
                let result = match metadata.topics.get_mut(&topic) {
                    // Groups and transactional ids map to partitions by a hash over
                    // the partition count.
                    Some(_) if is_internal_topic(&topic) => fail(
                        &topic,
                        ErrorCode::INVALID_PARTITIONS,
                        format!("`{topic}` is internal: its partition count is fixed"),
                    ),
                    None => fail(
                        &topic,
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("no topic `{topic}`"),
                    ),
                    Some(meta) if count <= meta.partitions || count > 100_000 => fail(
                        &topic,
                        ErrorCode::INVALID_PARTITIONS,
                        format!(
                            "topic has {} partitions; the new count must be larger (and at most 100000)",
                            meta.partitions
                        ),
                    ),
                    Some(meta) => {
                        if !validate_only {
                            meta.partitions = count;
                            changed = true;
                        }
                        ok(&topic)
                    }
                };
                results.push(result);
            }
        }
        MetadataCommand::AlterConfigs {
            topics,
            replace,
            validate_only,
        } => {
            for (topic, changes) in topics {
                let result = match metadata.topics.get_mut(&topic) {
                    None => fail(
                        &topic,
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("no topic `{topic}`"),
                    ),
                    Some(meta) => {
                        let mut configs = if replace {
                            BTreeMap::new()
                        } else {
                            meta.configs.clone()
                        };
                        for (key, value) in changes {
                            match value {
                                Some(value) => configs.insert(key, value),
                                None => configs.remove(&key),
                            };
                        }
                        match metadata::topic_log_config(defaults, &configs) {
                            Err(e) => fail(&topic, ErrorCode::INVALID_CONFIG, e.to_string()),
                            Ok(_) => {
                                if !validate_only && configs != meta.configs {
                                    meta.configs = configs;
                                    changed = true;
                                }
                                ok(&topic)
                            }
                        }
                    }
                };
                results.push(result);
            }
        }
    }
    (results, changed)
}
