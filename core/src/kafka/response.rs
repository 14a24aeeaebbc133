//! Response encoding, and error responses for any supported request.
//!
//! [`encode_response`] writes a whole frame: the size prefix, the response header at the
//! version the API and request version imply (v0 for non-flexible versions, v1 with
//! tagged fields for flexible ones, and always v0 for ApiVersions so a client can read
//! the answer before it knows our versions), then the body at the request's version.
//!
//! [`error_response`] mirrors a request's topics, partitions or resources with one error
//! code, so the broker can refuse any request uniformly (NOT_LEADER_OR_FOLLOWER,
//! UNSUPPORTED_VERSION, REQUEST_TIMED_OUT, …). Offsets, watermarks and epochs in it are
//! -1 ("unknown"), as Kafka sends them with an error.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{self, ApiKey, BrokerId, ProducerId, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use super::error::{EncodeError, ErrorCode};
use super::frame::SIZE_PREFIX_BYTES;
use super::request::{Request, RequestHeader};
use super::versions::supported_api_versions;

macro_rules! define_response {
    ($($variant:ident($request:ident, $response:ident),)*) => {
        /// A response of a supported API, with `kafka-protocol`'s body type.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum Response {
            $(
                #[doc = concat!("A ", stringify!($variant), " response.")]
                $variant(messages::$response),
            )*
        }

        impl Response {
            /// The response's API.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Response::$variant(_) => ApiKey::$variant,)*
                }
            }

            /// The encoded body's size, to allocate the frame once (a fetch response
            /// carries megabytes of records; growing the buffer would copy them).
            fn body_size_bytes(&self, version: i16) -> Option<usize> {
                match self {
                    $(Response::$variant(body) => body.compute_size(version).ok(),)*
                }
            }

            fn encode_body(&self, buf: &mut BytesMut, version: i16) -> Result<(), String> {
                let encoded = match self {
                    $(Response::$variant(body) => body.encode(buf, version),)*
                };
                encoded.map_err(|error| error.to_string())
            }
        }
    };
}

with_supported_apis!(define_response);

/// Encodes `response` as the answer to the request with `header`: a complete frame with
/// its size prefix, ready for the socket.
pub fn encode_response(header: &RequestHeader, response: &Response) -> Result<Bytes, EncodeError> {
    let api_key = header.api_key;
    let api_version = header.api_version;
    if response.api_key() != api_key {
        return Err(EncodeError::ApiMismatch {
            request: api_key,
            response: response.api_key(),
        });
    }
    let protocol = |reason: String| EncodeError::Protocol {
        api_key,
        api_version,
        reason,
    };
    // The header is a few bytes (a correlation id and, in flexible versions, tags).
    const HEADER_ROOM_BYTES: usize = 64;
    let capacity = response.body_size_bytes(api_version).unwrap_or(0) + SIZE_PREFIX_BYTES + HEADER_ROOM_BYTES;
    let mut buf = BytesMut::with_capacity(capacity);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut buf, api_key.response_header_version(api_version))
        .map_err(|error| protocol(format!("header: {error}")))?;
    response.encode_body(&mut buf, api_version).map_err(protocol)?;
    let size_bytes = buf.len() - SIZE_PREFIX_BYTES;
    let size = i32::try_from(size_bytes).map_err(|_| EncodeError::TooLarge { size_bytes })?;
    buf[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// The response answering `request` (at `version`) with `code` in every error field it
/// has. Valid at every version the request type decodes at.
pub fn error_response(request: &Request, version: i16, code: ErrorCode) -> Response {
    let code = code.0;
    match request {
        Request::Produce(r) => Response::Produce(produce(r, code)),
        Request::Fetch(r) => Response::Fetch(fetch(r, version, code)),
        Request::ListOffsets(r) => Response::ListOffsets(list_offsets(r, code)),
        Request::Metadata(r) => Response::Metadata(metadata(r, version, code)),
        Request::OffsetCommit(r) => Response::OffsetCommit(offset_commit(r, code)),
        Request::OffsetFetch(r) => Response::OffsetFetch(offset_fetch(r, version, code)),
        Request::FindCoordinator(r) => Response::FindCoordinator(find_coordinator(r, version, code)),
        Request::JoinGroup(_) => {
            Response::JoinGroup(messages::JoinGroupResponse::default().with_error_code(code))
        }
        Request::Heartbeat(_) => {
            Response::Heartbeat(messages::HeartbeatResponse::default().with_error_code(code))
        }
        Request::LeaveGroup(r) => Response::LeaveGroup(leave_group(r, version, code)),
        Request::SyncGroup(_) => {
            Response::SyncGroup(messages::SyncGroupResponse::default().with_error_code(code))
        }
        Request::DescribeGroups(r) => Response::DescribeGroups(describe_groups(r, code)),
        Request::ListGroups(_) => {
            Response::ListGroups(messages::ListGroupsResponse::default().with_error_code(code))
        }
        Request::ApiVersions(_) => Response::ApiVersions(
            messages::ApiVersionsResponse::default()
                .with_error_code(code)
                .with_api_keys(supported_api_versions()),
        ),
        Request::CreateTopics(r) => Response::CreateTopics(create_topics(r, code)),
        Request::DeleteTopics(r) => Response::DeleteTopics(delete_topics(r, version, code)),
        Request::DeleteRecords(r) => Response::DeleteRecords(delete_records(r, code)),
        Request::OffsetForLeaderEpoch(r) => Response::OffsetForLeaderEpoch(offset_for_leader_epoch(r, code)),
        Request::InitProducerId(_) => Response::InitProducerId(
            messages::InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        Request::AddPartitionsToTxn(r) => {
            Response::AddPartitionsToTxn(add_partitions_to_txn(r, version, code))
        }
        Request::AddOffsetsToTxn(_) => {
            Response::AddOffsetsToTxn(messages::AddOffsetsToTxnResponse::default().with_error_code(code))
        }
        Request::EndTxn(_) => Response::EndTxn(messages::EndTxnResponse::default().with_error_code(code)),
        Request::WriteTxnMarkers(r) => Response::WriteTxnMarkers(write_txn_markers(r, code)),
        Request::TxnOffsetCommit(r) => Response::TxnOffsetCommit(txn_offset_commit(r, code)),
        Request::DescribeConfigs(r) => Response::DescribeConfigs(describe_configs(r, code)),
        Request::AlterConfigs(r) => Response::AlterConfigs(alter_configs(r, code)),
        Request::CreatePartitions(r) => Response::CreatePartitions(create_partitions(r, code)),
        Request::DeleteGroups(r) => Response::DeleteGroups(delete_groups(r, code)),
        Request::IncrementalAlterConfigs(r) => {
            Response::IncrementalAlterConfigs(incremental_alter_configs(r, code))
        }
        Request::OffsetDelete(r) => Response::OffsetDelete(offset_delete(r, code)),
        Request::DescribeCluster(_) => {
            Response::DescribeCluster(messages::DescribeClusterResponse::default().with_error_code(code))
        }
        Request::DescribeProducers(r) => Response::DescribeProducers(describe_producers(r, code)),
        Request::DescribeTransactions(r) => Response::DescribeTransactions(describe_transactions(r, code)),
        Request::ListTransactions(_) => {
            Response::ListTransactions(messages::ListTransactionsResponse::default().with_error_code(code))
        }
        Request::ConsumerGroupHeartbeat(_) => Response::ConsumerGroupHeartbeat(
            messages::ConsumerGroupHeartbeatResponse::default().with_error_code(code),
        ),
        Request::ConsumerGroupDescribe(r) => {
            Response::ConsumerGroupDescribe(consumer_group_describe(r, code))
        }
    }
}

fn produce(request: &messages::ProduceRequest, code: i16) -> messages::ProduceResponse {
    use messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    let topics = request.topic_data.iter().map(|topic| {
        let partitions = topic.partition_data.iter().map(|partition| {
            PartitionProduceResponse::default()
                .with_index(partition.index)
                .with_error_code(code)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
        });
        TopicProduceResponse::default()
            .with_name(topic.name.clone())
            .with_topic_id(topic.topic_id)
            .with_partition_responses(partitions.collect())
    });
    messages::ProduceResponse::default().with_responses(topics.collect())
}

fn fetch(request: &messages::FetchRequest, version: i16, code: i16) -> messages::FetchResponse {
    use messages::fetch_response::{FetchableTopicResponse, PartitionData};
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            PartitionData::default()
                .with_partition_index(partition.partition)
                .with_error_code(code)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_records(Some(Bytes::new()))
        });
        FetchableTopicResponse::default()
            .with_topic(topic.topic.clone())
            .with_topic_id(topic.topic_id)
            .with_partitions(partitions.collect())
    });
    let response = messages::FetchResponse::default().with_responses(topics.collect());
    // The top-level error exists from v7 (fetch sessions); before that only partitions.
    if version >= 7 {
        response.with_error_code(code)
    } else {
        response
    }
}

fn list_offsets(request: &messages::ListOffsetsRequest, code: i16) -> messages::ListOffsetsResponse {
    use messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index)
                .with_error_code(code)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1)
        });
        ListOffsetsTopicResponse::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.collect())
    });
    messages::ListOffsetsResponse::default().with_topics(topics.collect())
}

fn metadata(request: &messages::MetadataRequest, version: i16, code: i16) -> messages::MetadataResponse {
    use messages::metadata_response::MetadataResponseTopic;
    let topics = request.topics.iter().flatten().map(|topic| {
        MetadataResponseTopic::default()
            .with_error_code(code)
            .with_name(topic.name.clone())
            .with_topic_id(topic.topic_id)
    });
    let response = messages::MetadataResponse::default().with_topics(topics.collect());
    // The top-level error exists from v13; before that only topics carry one.
    if version >= 13 {
        response.with_error_code(code)
    } else {
        response
    }
}

fn create_topics(request: &messages::CreateTopicsRequest, code: i16) -> messages::CreateTopicsResponse {
    use messages::create_topics_response::CreatableTopicResult;
    let topics = request.topics.iter().map(|topic| {
        CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_error_code(code)
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    });
    messages::CreateTopicsResponse::default().with_topics(topics.collect())
}

fn delete_topics(
    request: &messages::DeleteTopicsRequest,
    version: i16,
    code: i16,
) -> messages::DeleteTopicsResponse {
    use messages::delete_topics_response::DeletableTopicResult;
    let result = |name, topic_id| {
        DeletableTopicResult::default()
            .with_name(name)
            .with_topic_id(topic_id)
            .with_error_code(code)
    };
    let results = if version >= 6 {
        request
            .topics
            .iter()
            .map(|topic| result(topic.name.clone(), topic.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|name| result(Some(name.clone()), Default::default()))
            .collect()
    };
    messages::DeleteTopicsResponse::default().with_responses(results)
}

fn delete_records(request: &messages::DeleteRecordsRequest, code: i16) -> messages::DeleteRecordsResponse {
    use messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            DeleteRecordsPartitionResult::default()
                .with_partition_index(partition.partition_index)
                .with_low_watermark(-1)
                .with_error_code(code)
        });
        DeleteRecordsTopicResult::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.collect())
    });
    messages::DeleteRecordsResponse::default().with_topics(topics.collect())
}

fn offset_for_leader_epoch(
    request: &messages::OffsetForLeaderEpochRequest,
    code: i16,
) -> messages::OffsetForLeaderEpochResponse {
    use messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            EpochEndOffset::default()
                .with_error_code(code)
                .with_partition(partition.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1)
        });
        OffsetForLeaderTopicResult::default()
            .with_topic(topic.topic.clone())
            .with_partitions(partitions.collect())
    });
    messages::OffsetForLeaderEpochResponse::default().with_topics(topics.collect())
}

fn describe_configs(
    request: &messages::DescribeConfigsRequest,
    code: i16,
) -> messages::DescribeConfigsResponse {
    use messages::describe_configs_response::DescribeConfigsResult;
    let results = request.resources.iter().map(|resource| {
        DescribeConfigsResult::default()
            .with_error_code(code)
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone())
    });
    messages::DescribeConfigsResponse::default().with_results(results.collect())
}

fn alter_configs(request: &messages::AlterConfigsRequest, code: i16) -> messages::AlterConfigsResponse {
    use messages::alter_configs_response::AlterConfigsResourceResponse;
    let responses = request.resources.iter().map(|resource| {
        AlterConfigsResourceResponse::default()
            .with_error_code(code)
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone())
    });
    messages::AlterConfigsResponse::default().with_responses(responses.collect())
}

fn incremental_alter_configs(
    request: &messages::IncrementalAlterConfigsRequest,
    code: i16,
) -> messages::IncrementalAlterConfigsResponse {
    use messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let responses = request.resources.iter().map(|resource| {
        AlterConfigsResourceResponse::default()
            .with_error_code(code)
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone())
    });
    messages::IncrementalAlterConfigsResponse::default().with_responses(responses.collect())
}

fn create_partitions(
    request: &messages::CreatePartitionsRequest,
    code: i16,
) -> messages::CreatePartitionsResponse {
    use messages::create_partitions_response::CreatePartitionsTopicResult;
    let results = request.topics.iter().map(|topic| {
        CreatePartitionsTopicResult::default()
            .with_name(topic.name.clone())
            .with_error_code(code)
    });
    messages::CreatePartitionsResponse::default().with_results(results.collect())
}

fn offset_commit(request: &messages::OffsetCommitRequest, code: i16) -> messages::OffsetCommitResponse {
    use messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            OffsetCommitResponsePartition::default()
                .with_partition_index(partition.partition_index)
                .with_error_code(code)
        });
        OffsetCommitResponseTopic::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.collect())
    });
    messages::OffsetCommitResponse::default().with_topics(topics.collect())
}

fn offset_fetch(
    request: &messages::OffsetFetchRequest,
    version: i16,
    code: i16,
) -> messages::OffsetFetchResponse {
    use messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    };
    let response = messages::OffsetFetchResponse::default();
    // v8 batches groups, each with its own error; before, one group per request.
    if version >= 8 {
        let groups = request.groups.iter().map(|group| {
            let topics = group.topics.iter().flatten().map(|topic| {
                let partitions = topic.partition_indexes.iter().map(|&index| {
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(index)
                        .with_committed_offset(-1)
                        .with_error_code(code)
                });
                OffsetFetchResponseTopics::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions.collect())
            });
            OffsetFetchResponseGroup::default()
                .with_group_id(group.group_id.clone())
                .with_topics(topics.collect())
                .with_error_code(code)
        });
        return response.with_groups(groups.collect());
    }
    let topics = request.topics.iter().flatten().map(|topic| {
        let partitions = topic.partition_indexes.iter().map(|&index| {
            OffsetFetchResponsePartition::default()
                .with_partition_index(index)
                .with_committed_offset(-1)
                .with_error_code(code)
        });
        OffsetFetchResponseTopic::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.collect())
    });
    let response = response.with_topics(topics.collect());
    // The top-level error exists from v2; in v1 only partitions carry one.
    if version >= 2 {
        response.with_error_code(code)
    } else {
        response
    }
}

fn find_coordinator(
    request: &messages::FindCoordinatorRequest,
    version: i16,
    code: i16,
) -> messages::FindCoordinatorResponse {
    use messages::find_coordinator_response::Coordinator;
    let response = messages::FindCoordinatorResponse::default();
    // v4 batches keys, one coordinator (and error) per key; before, one answer.
    if version >= 4 {
        let coordinators = request.coordinator_keys.iter().map(|key| {
            Coordinator::default()
                .with_key(key.clone())
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(code)
        });
        response.with_coordinators(coordinators.collect())
    } else {
        response
            .with_error_code(code)
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    }
}

fn leave_group(
    request: &messages::LeaveGroupRequest,
    version: i16,
    code: i16,
) -> messages::LeaveGroupResponse {
    use messages::leave_group_response::MemberResponse;
    let response = messages::LeaveGroupResponse::default().with_error_code(code);
    // Members (and their errors) exist from v3; before, one member per request.
    if version < 3 {
        return response;
    }
    let members = request.members.iter().map(|member| {
        MemberResponse::default()
            .with_member_id(member.member_id.clone())
            .with_group_instance_id(member.group_instance_id.clone())
            .with_error_code(code)
    });
    response.with_members(members.collect())
}

fn describe_groups(request: &messages::DescribeGroupsRequest, code: i16) -> messages::DescribeGroupsResponse {
    use messages::describe_groups_response::DescribedGroup;
    let groups = request.groups.iter().map(|group_id| {
        DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_error_code(code)
    });
    messages::DescribeGroupsResponse::default().with_groups(groups.collect())
}

fn delete_groups(request: &messages::DeleteGroupsRequest, code: i16) -> messages::DeleteGroupsResponse {
    use messages::delete_groups_response::DeletableGroupResult;
    let results = request.groups_names.iter().map(|group_id| {
        DeletableGroupResult::default()
            .with_group_id(group_id.clone())
            .with_error_code(code)
    });
    messages::DeleteGroupsResponse::default().with_results(results.collect())
}

fn offset_delete(request: &messages::OffsetDeleteRequest, code: i16) -> messages::OffsetDeleteResponse {
    use messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            OffsetDeleteResponsePartition::default()
                .with_partition_index(partition.partition_index)
                .with_error_code(code)
        });
        OffsetDeleteResponseTopic::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.collect())
    });
    messages::OffsetDeleteResponse::default()
        .with_error_code(code)
        .with_topics(topics.collect())
}

fn consumer_group_describe(
    request: &messages::ConsumerGroupDescribeRequest,
    code: i16,
) -> messages::ConsumerGroupDescribeResponse {
    use messages::consumer_group_describe_response::DescribedGroup;
    let groups = request.group_ids.iter().map(|group_id| {
        DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_error_code(code)
    });
    messages::ConsumerGroupDescribeResponse::default().with_groups(groups.collect())
}

fn add_partitions_to_txn(
    request: &messages::AddPartitionsToTxnRequest,
    version: i16,
    code: i16,
) -> messages::AddPartitionsToTxnResponse {
    use messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
    };
    let topic_results = |topics: &[AddPartitionsToTxnTopic]| {
        topics
            .iter()
            .map(|topic| {
                let partitions = topic.partitions.iter().map(|&index| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(index)
                        .with_partition_error_code(code)
                });
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_results_by_partition(partitions.collect())
            })
            .collect()
    };
    let response = messages::AddPartitionsToTxnResponse::default();
    // v4 batches transactions and adds a top-level error; before, one transaction.
    if version >= 4 {
        let results = request.transactions.iter().map(|transaction| {
            AddPartitionsToTxnResult::default()
                .with_transactional_id(transaction.transactional_id.clone())
                .with_topic_results(topic_results(&transaction.topics))
        });
        response
            .with_error_code(code)
            .with_results_by_transaction(results.collect())
    } else {
        response.with_results_by_topic_v3_and_below(topic_results(&request.v3_and_below_topics))
    }
}

fn write_txn_markers(
    request: &messages::WriteTxnMarkersRequest,
    code: i16,
) -> messages::WriteTxnMarkersResponse {
    use messages::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    let markers = request.markers.iter().map(|marker| {
        let topics = marker.topics.iter().map(|topic| {
            let partitions = topic.partition_indexes.iter().map(|&index| {
                WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(index)
                    .with_error_code(code)
            });
            WritableTxnMarkerTopicResult::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions.collect())
        });
        WritableTxnMarkerResult::default()
            .with_producer_id(marker.producer_id)
            .with_topics(topics.collect())
    });
    messages::WriteTxnMarkersResponse::default().with_markers(markers.collect())
}

fn txn_offset_commit(
    request: &messages::TxnOffsetCommitRequest,
    code: i16,
) -> messages::TxnOffsetCommitResponse {
    use messages::txn_offset_commit_response::{
        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    };
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(partition.partition_index)
                .with_error_code(code)
        });
        TxnOffsetCommitResponseTopic::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.collect())
    });
    messages::TxnOffsetCommitResponse::default().with_topics(topics.collect())
}

fn describe_producers(
    request: &messages::DescribeProducersRequest,
    code: i16,
) -> messages::DescribeProducersResponse {
    use messages::describe_producers_response::{PartitionResponse, TopicResponse};
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partition_indexes.iter().map(|&index| {
            PartitionResponse::default()
                .with_partition_index(index)
                .with_error_code(code)
        });
        TopicResponse::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.collect())
    });
    messages::DescribeProducersResponse::default().with_topics(topics.collect())
}

fn describe_transactions(
    request: &messages::DescribeTransactionsRequest,
    code: i16,
) -> messages::DescribeTransactionsResponse {
    use messages::describe_transactions_response::TransactionState;
    let states = request.transactional_ids.iter().map(|transactional_id| {
        TransactionState::default()
            .with_error_code(code)
            .with_transactional_id(transactional_id.clone())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    });
    messages::DescribeTransactionsResponse::default().with_transaction_states(states.collect())
}
