//! The consumer-group APIs: FindCoordinator answers from the metadata (creating
//! `__consumer_offsets` on first use); every other group request is split per group and
//! sent to the coordinator of the group's `__consumer_offsets` partition
//! ([`crate::group::Coordinator`], hosted by the shard owning that partition); the
//! answers are put back together in the request's shape and version.

use super::coordinators::{self, CoordinatorTopic};
use super::handlers::{begin, PendingKind};
use super::shard::{OpResult, PartitionOp};
use super::{Broker, ConnectionId};
use crate::group::{
    classic, consumer, partition_for_group, ClientInfo, CommitEntry, FetchedOffset, GroupOp, GroupResult,
    PartitionErrors, TopicPartitionList, OFFSETS_TOPIC,
};
use crate::kafka::protocol::messages::{self as m, BrokerId, GroupId, TopicName};
use crate::kafka::protocol::protocol::StrBytes;
use crate::kafka::{ErrorCode, Request, RequestHeader, Response};
use crate::time::Instant;
use std::collections::BTreeMap;

/// What a group request needs to build its answer once its operations are done.
#[derive(Debug)]
pub struct GroupPending {
    api: GroupApi,
    /// The group of each operation slot.
    groups: Vec<String>,
}

#[derive(Debug)]
enum GroupApi {
    Join,
    Sync,
    Heartbeat,
    Leave {
        version: i16,
    },
    Commit {
        rejected: PartitionErrors,
        order: Vec<(String, Vec<i32>)>,
    },
    Fetch {
        version: i16,
    },
    Describe,
    List,
    Delete,
    DeleteOffsets,
    ConsumerHeartbeat,
    ConsumerDescribe,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The partition count of `__consumer_offsets`, if it exists.
fn offsets_partitions(broker: &Broker) -> Option<i32> {
    broker.metadata.topics.get(OFFSETS_TOPIC).map(|t| t.partitions)
}

/// Starts a group request.
pub fn start(
    broker: &mut Broker,
    now: Instant,
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    request: Request,
) {
    let version = header.api_version;
    let client = ClientInfo {
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        client_host: broker.peer_of(connection),
    };
    let (api, ops): (GroupApi, Vec<(String, GroupOp)>) = match request {
        Request::FindCoordinator(request) => {
            let response = find_coordinator(broker, now, &request, version);
            broker.respond(connection, id, &header, Some(Response::FindCoordinator(response)));
            return;
        }
        Request::JoinGroup(request) => (
            GroupApi::Join,
            vec![(
                request.group_id.0.as_str().to_string(),
                GroupOp::Join {
                    request,
                    version,
                    client,
                },
            )],
        ),
        Request::SyncGroup(request) => (
            GroupApi::Sync,
            vec![(
                request.group_id.0.as_str().to_string(),
                GroupOp::Sync { request, version },
            )],
        ),
        Request::Heartbeat(request) => (
            GroupApi::Heartbeat,
            vec![(
                request.group_id.0.as_str().to_string(),
                GroupOp::Heartbeat { request },
            )],
        ),
        Request::LeaveGroup(request) => (
            GroupApi::Leave { version },
            vec![(
                request.group_id.0.as_str().to_string(),
                GroupOp::Leave { request, version },
            )],
        ),
        Request::OffsetCommit(request) => commit_ops(broker, request, version),
        Request::OffsetFetch(request) => fetch_ops(request, version),
        Request::DescribeGroups(request) => (
            GroupApi::Describe,
            request
                .groups
                .iter()
                .map(|g| {
                    (
                        g.0.as_str().to_string(),
                        GroupOp::Describe {
                            group: g.0.as_str().to_string(),
                        },
                    )
                })
                .collect(),
        ),
        Request::DeleteGroups(request) => (
            GroupApi::Delete,
            request
                .groups_names
                .iter()
                .map(|g| {
                    (
                        g.0.as_str().to_string(),
                        GroupOp::Delete {
                            group: g.0.as_str().to_string(),
                        },
                    )
                })
                .collect(),
        ),
        Request::OffsetDelete(request) => {
            let group = request.group_id.0.as_str().to_string();
            let topics = request
                .topics
                .iter()
                .map(|t| {
                    (
                        t.name.0.as_str().to_string(),
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            (
                GroupApi::DeleteOffsets,
                vec![(group.clone(), GroupOp::DeleteOffsets { group, topics })],
            )
        }
        Request::ListGroups(request) => {
            let states: Vec<String> = request
                .states_filter
                .iter()
                .map(|s| s.as_str().to_string())
                .collect();
            let types: Vec<String> = request
                .types_filter
                .iter()
                .map(|s| s.as_str().to_string())
                .collect();
            let Some(count) = offsets_partitions(broker) else {
                broker.respond(
                    connection,
                    id,
                    &header,
                    Some(Response::ListGroups(m::ListGroupsResponse::default())),
                );
                return;
            };
            // One operation per coordinator partition (in a cluster: those this broker
            // leads, as Kafka lists a broker's own groups); the slot names are for errors
            // only.
            let node = broker.node_id;
            let mine: Vec<i32> = (0..count)
                .filter(|p| {
                    broker.cluster.is_none()
                        || super::cluster::leader_of(broker, OFFSETS_TOPIC, *p)
                            .is_some_and(|(l, _)| l == node)
                })
                .collect();
            if mine.is_empty() {
                let response = Response::ListGroups(m::ListGroupsResponse::default());
                broker.respond(connection, id, &header, Some(response));
                return;
            }
            let groups: Vec<String> = mine.iter().map(|p| format!("#{p}")).collect();
            let ops: Vec<(String, i32, PartitionOp)> = mine
                .into_iter()
                .map(|p| {
                    let op = GroupOp::List {
                        states: states.clone(),
                        types: types.clone(),
                    };
                    (OFFSETS_TOPIC.to_string(), p, PartitionOp::Group(Box::new(op)))
                })
                .collect();
            let pending = GroupPending {
                api: GroupApi::List,
                groups,
            };
            begin(
                broker,
                now,
                id,
                connection,
                header,
                None,
                PendingKind::Group(pending),
                ops,
            );
            return;
        }
        Request::ConsumerGroupHeartbeat(request) => (
            GroupApi::ConsumerHeartbeat,
            vec![(
                request.group_id.0.as_str().to_string(),
                GroupOp::ConsumerHeartbeat { request, client },
            )],
        ),
        Request::ConsumerGroupDescribe(request) => (
            GroupApi::ConsumerDescribe,
            request
                .group_ids
                .iter()
                .map(|g| {
                    (
                        g.0.as_str().to_string(),
                        GroupOp::ConsumerDescribe {
                            group: g.0.as_str().to_string(),
                        },
                    )
                })
                .collect(),
        ),
        other => {
            let response = crate::kafka::error_response(&other, version, ErrorCode::UNSUPPORTED_VERSION);
            broker.respond(connection, id, &header, Some(response));
            return;
        }
    };
    let count = offsets_partitions(broker);
    let groups: Vec<String> = ops.iter().map(|(g, _)| g.clone()).collect();
    let ops: Vec<(String, i32, PartitionOp)> = ops
        .into_iter()
        .map(|(group, op)| {
            // Without the offsets topic, the partition does not exist and the
            // operation fails UNKNOWN_TOPIC_OR_PARTITION, answered as NOT_COORDINATOR.
            let partition = count.map_or(0, |c| partition_for_group(&group, c));
            (
                OFFSETS_TOPIC.to_string(),
                partition,
                PartitionOp::Group(Box::new(op)),
            )
        })
        .collect();
    let pending = GroupPending { api, groups };
    begin(
        broker,
        now,
        id,
        connection,
        header,
        None,
        PendingKind::Group(pending),
        ops,
    );
}

fn commit_ops(
    broker: &Broker,
    request: m::OffsetCommitRequest,
    version: i16,
) -> (GroupApi, Vec<(String, GroupOp)>) {
    let group = request.group_id.0.as_str().to_string();
    let mut rejected = PartitionErrors::new();
    let mut order = Vec::new();
    let mut entries = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.as_str().to_string();
        let meta = broker.metadata.topics.get(&name);
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            partitions.push(p.partition_index);
            if meta.is_none_or(|t| p.partition_index < 0 || p.partition_index >= t.partitions) {
                rejected
                    .entry(name.clone())
                    .or_default()
                    .push((p.partition_index, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0));
                continue;
            }
            entries.push(CommitEntry {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref().map(|m| m.as_str().to_string()),
            });
        }
        order.push((name, partitions));
    }
    let op = GroupOp::Commit {
        group: group.clone(),
        generation_or_epoch: request.generation_id_or_member_epoch,
        member_id: request.member_id.as_str().to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.as_str().to_string()),
        entries,
    };
    (GroupApi::Commit { rejected, order }, vec![(group, op)])
}

fn fetch_ops(request: m::OffsetFetchRequest, version: i16) -> (GroupApi, Vec<(String, GroupOp)>) {
    let require_stable = request.require_stable;
    let ops = if version < 8 {
        let group = request.group_id.0.as_str().to_string();
        let topics: Option<TopicPartitionList> = request.topics.as_ref().map(|topics| {
            topics
                .iter()
                .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
                .collect()
        });
        vec![(
            group.clone(),
            GroupOp::FetchOffsets {
                group,
                topics,
                require_stable,
                member: None,
            },
        )]
    } else {
        request
            .groups
            .iter()
            .map(|g| {
                let group = g.group_id.0.as_str().to_string();
                let topics: Option<TopicPartitionList> = g.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let member = g
                    .member_id
                    .as_ref()
                    .filter(|id| !id.is_empty())
                    .map(|id| (id.as_str().to_string(), g.member_epoch));
                (
                    group.clone(),
                    GroupOp::FetchOffsets {
                        group,
                        topics,
                        require_stable,
                        member,
                    },
                )
            })
            .collect()
    };
    (GroupApi::Fetch { version }, ops)
}

/// FindCoordinator: the broker leading the group's `__consumer_offsets` partition.
fn find_coordinator(
    broker: &mut Broker,
    now: Instant,
    request: &m::FindCoordinatorRequest,
    version: i16,
) -> m::FindCoordinatorResponse {
    let keys: Vec<String> = if version < 4 {
        vec![request.key.as_str().to_string()]
    } else {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.as_str().to_string())
            .collect()
    };
    let coordinators: Vec<m::find_coordinator_response::Coordinator> = keys
        .iter()
        .map(|key| {
            let mut c = m::find_coordinator_response::Coordinator::default();
            c.key = str_bytes(key);
            c.node_id = BrokerId(-1);
            let found = coordinator_for(broker, now, key, request.key_type).and_then(|node| {
                match super::cluster::address_of(broker, node) {
                    Some(address) => Ok((node, address)),
                    None => Err((
                        ErrorCode::COORDINATOR_NOT_AVAILABLE.0,
                        "the coordinator's broker is not registered",
                    )),
                }
            });
            match found {
                Ok((node, (host, port))) => {
                    c.error_message = None;
                    c.node_id = BrokerId(node);
                    c.host = str_bytes(&host);
                    c.port = i32::from(port);
                }
                Err((code, message)) => {
                    c.error_code = code;
                    c.error_message = Some(str_bytes(message));
                }
            }
            c
        })
        .collect();
    let mut response = m::FindCoordinatorResponse::default();
    if version < 4 {
        if let Some(c) = coordinators.into_iter().next() {
            response.error_code = c.error_code;
            response.error_message = c.error_message;
            response.node_id = c.node_id;
            response.host = c.host;
            response.port = c.port;
        }
    } else {
        response.coordinators = coordinators;
    }
    response
}

fn coordinator_for(broker: &mut Broker, now: Instant, key: &str, key_type: i8) -> coordinators::Coordinator {
    if key_type == 1 {
        return super::txn_handlers::coordinator_for(broker, now, key);
    }
    if key_type != 0 {
        return Err((
            ErrorCode::INVALID_REQUEST.0,
            "unknown key type (0: group, 1: transactional id)",
        ));
    }
    let topic = CoordinatorTopic {
        name: OFFSETS_TOPIC,
        partitions_when_created: broker.group_config.offsets_partitions,
        partition_of: partition_for_group,
        creating: "creating __consumer_offsets",
        no_leader: "the group's coordinator has no leader yet",
        empty_key: "empty group id",
    };
    coordinators::coordinator_on(broker, now, &topic, key)
}

fn as_group(result: &OpResult) -> Option<&GroupResult> {
    match result {
        OpResult::Group(r) => Some(r),
        _ => None,
    }
}

fn group_error(result: Option<&OpResult>) -> Option<i16> {
    match result {
        None => Some(ErrorCode::REQUEST_TIMED_OUT.0),
        Some(OpResult::Group(r)) => match **r {
            GroupResult::Error(code) => Some(coordinator_error(code)),
            _ => None,
        },
        Some(other) => Some(coordinator_error(other.error_code())),
    }
}

/// Errors of reaching a coordinator, in the form group clients react to.
fn coordinator_error(code: i16) -> i16 {
    if code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0 || code == ErrorCode::NOT_LEADER_OR_FOLLOWER.0 {
        ErrorCode::NOT_COORDINATOR.0
    } else {
        code
    }
}

/// Builds the answer of a group request from its operations' results.
pub fn response(pending: &GroupPending, header: &RequestHeader, results: &[Option<OpResult>]) -> Response {
    let version = header.api_version;
    let first = results.first().and_then(|r| r.as_ref());
    let error = group_error(first);
    let result = match first {
        Some(OpResult::Group(r)) => Some(&**r),
        _ => None,
    };
    match &pending.api {
        GroupApi::Join => Response::JoinGroup(match (result, error) {
            (Some(GroupResult::Join(r)), _) => r.clone(),
            (_, code) => classic::join_error(code.unwrap_or(0), "", version),
        }),
        GroupApi::Sync => Response::SyncGroup(match (result, error) {
            (Some(GroupResult::Sync(r)), _) => r.clone(),
            (_, code) => classic::sync_error(code.unwrap_or(0)),
        }),
        GroupApi::Heartbeat => {
            let mut response = m::HeartbeatResponse::default();
            response.error_code = match (result, error) {
                (Some(GroupResult::Heartbeat(code)), _) => *code,
                (_, code) => code.unwrap_or(0),
            };
            Response::Heartbeat(response)
        }
        GroupApi::Leave { version } => Response::LeaveGroup(match (result, error) {
            (Some(GroupResult::Leave(r)), _) => {
                let mut r = r.clone();
                if *version < 3 {
                    r.members.clear();
                }
                r
            }
            (_, code) => {
                let mut r = m::LeaveGroupResponse::default();
                r.error_code = code.unwrap_or(0);
                r
            }
        }),
        GroupApi::Commit { rejected, order } => {
            let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
            for (topic, partitions) in rejected {
                for (p, code) in partitions {
                    codes.insert((topic.clone(), *p), *code);
                }
            }
            match (result, error) {
                (Some(GroupResult::Committed(errors)), _) => {
                    for (topic, partitions) in errors {
                        for (p, code) in partitions {
                            codes.entry((topic.clone(), *p)).or_insert(*code);
                        }
                    }
                }
                (_, code) => {
                    for (topic, partitions) in order {
                        for p in partitions {
                            codes.entry((topic.clone(), *p)).or_insert(code.unwrap_or(0));
                        }
                    }
                }
            }
            let mut response = m::OffsetCommitResponse::default();
            for (topic, partitions) in order {
                let mut t = m::offset_commit_response::OffsetCommitResponseTopic::default();
                t.name = TopicName(str_bytes(topic));
                for p in partitions {
                    let mut entry = m::offset_commit_response::OffsetCommitResponsePartition::default();
                    entry.partition_index = *p;
                    entry.error_code = codes.get(&(topic.clone(), *p)).copied().unwrap_or(0);
                    t.partitions.push(entry);
                }
                response.topics.push(t);
            }
            Response::OffsetCommit(response)
        }
        GroupApi::Fetch { version } => fetch_response(pending, results, *version),
        GroupApi::Describe => {
            let mut response = m::DescribeGroupsResponse::default();
            for (group, result) in pending.groups.iter().zip(results) {
                let described = match result.as_ref().and_then(as_group) {
                    Some(GroupResult::Described(d)) => {
                        let mut d = d.clone();
                        // Before v6 an unknown group is a dead group without an error.
                        if version < 6 && d.error_code == ErrorCode::GROUP_ID_NOT_FOUND.0 {
                            d.error_code = 0;
                        }
                        d
                    }
                    _ => {
                        let mut d = m::describe_groups_response::DescribedGroup::default();
                        d.group_id = GroupId(str_bytes(group));
                        d.error_code = group_error(result.as_ref()).unwrap_or(0);
                        d
                    }
                };
                response.groups.push(described);
            }
            Response::DescribeGroups(response)
        }
        GroupApi::List => {
            let mut response = m::ListGroupsResponse::default();
            for result in results {
                match result.as_ref().and_then(as_group) {
                    Some(GroupResult::Listed(groups)) => response.groups.extend(groups.iter().cloned()),
                    _ => {
                        if response.error_code == 0 {
                            response.error_code = group_error(result.as_ref()).unwrap_or(0);
                        }
                    }
                }
            }
            Response::ListGroups(response)
        }
        GroupApi::Delete => {
            let mut response = m::DeleteGroupsResponse::default();
            for (group, result) in pending.groups.iter().zip(results) {
                let mut entry = m::delete_groups_response::DeletableGroupResult::default();
                entry.group_id = GroupId(str_bytes(group));
                entry.error_code = match result.as_ref().and_then(as_group) {
                    Some(GroupResult::Deleted(code)) => *code,
                    _ => group_error(result.as_ref()).unwrap_or(0),
                };
                response.results.push(entry);
            }
            Response::DeleteGroups(response)
        }
        GroupApi::DeleteOffsets => {
            let mut response = m::OffsetDeleteResponse::default();
            match (result, error) {
                (Some(GroupResult::OffsetsDeleted { error, partitions }), _) => {
                    response.error_code = *error;
                    for (topic, partitions) in partitions {
                        let mut t = m::offset_delete_response::OffsetDeleteResponseTopic::default();
                        t.name = TopicName(str_bytes(topic));
                        for (p, code) in partitions {
                            let mut entry =
                                m::offset_delete_response::OffsetDeleteResponsePartition::default();
                            entry.partition_index = *p;
                            entry.error_code = *code;
                            t.partitions.push(entry);
                        }
                        response.topics.push(t);
                    }
                }
                (_, code) => response.error_code = code.unwrap_or(0),
            }
            Response::OffsetDelete(response)
        }
        GroupApi::ConsumerHeartbeat => Response::ConsumerGroupHeartbeat(match (result, error) {
            (Some(GroupResult::ConsumerHeartbeat(r)), _) => r.clone(),
            (_, code) => consumer::heartbeat_error(code.unwrap_or(0), ""),
        }),
        GroupApi::ConsumerDescribe => {
            let mut response = m::ConsumerGroupDescribeResponse::default();
            for (group, result) in pending.groups.iter().zip(results) {
                let described = match result.as_ref().and_then(as_group) {
                    Some(GroupResult::ConsumerDescribed(d)) => d.clone(),
                    _ => {
                        let mut d = m::consumer_group_describe_response::DescribedGroup::default();
                        d.group_id = GroupId(str_bytes(group));
                        d.error_code = group_error(result.as_ref()).unwrap_or(0);
                        d
                    }
                };
                response.groups.push(described);
            }
            Response::ConsumerGroupDescribe(response)
        }
    }
}

fn fetch_response(pending: &GroupPending, results: &[Option<OpResult>], version: i16) -> Response {
    let per_group: Vec<(i16, BTreeMap<String, Vec<FetchedOffset>>)> = results
        .iter()
        .map(|result| match result.as_ref().and_then(as_group) {
            Some(GroupResult::Offsets { error, topics }) => (*error, topics.clone()),
            _ => (group_error(result.as_ref()).unwrap_or(0), BTreeMap::new()),
        })
        .collect();
    let mut response = m::OffsetFetchResponse::default();
    if version < 8 {
        let (error, topics) = per_group.into_iter().next().unwrap_or_default();
        response.error_code = error;
        for (topic, offsets) in topics {
            let mut t = m::offset_fetch_response::OffsetFetchResponseTopic::default();
            t.name = TopicName(str_bytes(&topic));
            for o in offsets {
                let mut p = m::offset_fetch_response::OffsetFetchResponsePartition::default();
                p.partition_index = o.partition;
                p.committed_offset = o.offset;
                p.committed_leader_epoch = o.leader_epoch;
                p.metadata = o.metadata.as_deref().map(str_bytes);
                // v1 has no top-level error: the group's error goes on each partition.
                p.error_code = if version < 2 && error != 0 { error } else { o.error };
                t.partitions.push(p);
            }
            response.topics.push(t);
        }
    } else {
        for (group, (error, topics)) in pending.groups.iter().zip(per_group) {
            let mut g = m::offset_fetch_response::OffsetFetchResponseGroup::default();
            g.group_id = GroupId(str_bytes(group));
            g.error_code = error;
            for (topic, offsets) in topics {
                let mut t = m::offset_fetch_response::OffsetFetchResponseTopics::default();
                t.name = TopicName(str_bytes(&topic));
                for o in offsets {
                    let mut p = m::offset_fetch_response::OffsetFetchResponsePartitions::default();
                    p.partition_index = o.partition;
                    p.committed_offset = o.offset;
                    p.committed_leader_epoch = o.leader_epoch;
                    p.metadata = o.metadata.as_deref().map(str_bytes);
                    p.error_code = o.error;
                    t.partitions.push(p);
                }
                g.topics.push(t);
            }
            response.groups.push(g);
        }
    }
    Response::OffsetFetch(response)
}
