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
use kafka_protocol::messages::{self, ApiKey, ResponseHeader};
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
    let mut buf = BytesMut::new();
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
        Request::ApiVersions(_) => Response::ApiVersions(
            messages::ApiVersionsResponse::default()
                .with_error_code(code)
                .with_api_keys(supported_api_versions()),
        ),
        Request::CreateTopics(r) => Response::CreateTopics(create_topics(r, code)),
        Request::DeleteTopics(r) => Response::DeleteTopics(delete_topics(r, version, code)),
        Request::DeleteRecords(r) => Response::DeleteRecords(delete_records(r, code)),
        Request::OffsetForLeaderEpoch(r) => Response::OffsetForLeaderEpoch(offset_for_leader_epoch(r, code)),
        Request::DescribeConfigs(r) => Response::DescribeConfigs(describe_configs(r, code)),
        Request::AlterConfigs(r) => Response::AlterConfigs(alter_configs(r, code)),
        Request::CreatePartitions(r) => Response::CreatePartitions(create_partitions(r, code)),
        Request::IncrementalAlterConfigs(r) => {
            Response::IncrementalAlterConfigs(incremental_alter_configs(r, code))
        }
        Request::DescribeCluster(_) => {
            Response::DescribeCluster(messages::DescribeClusterResponse::default().with_error_code(code))
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
