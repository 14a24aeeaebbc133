//! The Kafka client side of the wire, as a real client speaks it (`kafka-protocol`
//! with its `client` feature): the four requests the simulated clients send —
//! CreateTopics, Metadata, Produce (one one-record batch, acks=all) and Fetch — encoded
//! into size-prefixed frames, and the responses decoded from the broker's bytes.
//!
//! Owns nothing but encoding: what a client does with an answer is in
//! [`super::clients`].

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey, BrokerId, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use oxbow_core::log::batch::{iter_batches, BATCH_HEADER_BYTES};
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::records::parse_uncompressed_records;

/// The topic every simulated client works on.
pub const TOPIC: &str = "events";
/// CreateTopics version the admin speaks.
pub const CREATE_TOPICS_VERSION: i16 = 7;
/// IncrementalAlterConfigs version the admin speaks.
pub const ALTER_CONFIGS_VERSION: i16 = 1;
/// Metadata version the clients speak.
pub const METADATA_VERSION: i16 = 12;
/// Produce version the producers speak.
pub const PRODUCE_VERSION: i16 = 9;
/// Fetch version the consumers speak (topics by name).
pub const FETCH_VERSION: i16 = 12;
/// Wall-clock milliseconds the records carry (fixed: no wall clock in a run).
const RECORD_TIMESTAMP_MS: i64 = 1_700_000_000_000;

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// `body` with its request header, size-prefixed.
pub fn frame<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, String> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("oxbow-sim")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, key.request_header_version(version))
        .map_err(|e| format!("encode header: {e}"))?;
    body.encode(&mut payload, version)
        .map_err(|e| format!("encode {key:?}: {e}"))?;
    let len = i32::try_from(payload.len()).map_err(|_| "frame too large".to_string())?;
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    out.put_i32(len);
    out.extend_from_slice(&payload);
    Ok(out.freeze())
}

/// Splits the first whole frame (size prefix removed) off `buffer`, if there is one.
pub fn take_frame(buffer: &mut BytesMut) -> Option<Bytes> {
    let prefix: [u8; 4] = buffer.get(..4)?.try_into().ok()?;
    let len = usize::try_from(i32::from_be_bytes(prefix)).ok()?;
    if buffer.len() < 4 + len {
        return None;
    }
    let whole = buffer.split_to(4 + len).freeze();
    Some(whole.slice(4..))
}

/// The correlation id of a response payload.
pub fn correlation_id(payload: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(payload.get(..4)?.try_into().ok()?))
}

/// Decodes a response payload of `key` at `version`.
pub fn decode<R: Decodable>(payload: &Bytes, key: ApiKey, version: i16) -> Result<R, String> {
    let mut bytes = payload.clone();
    ResponseHeader::decode(&mut bytes, key.response_header_version(version))
        .map_err(|e| format!("{key:?} v{version} header: {e}"))?;
    let body = R::decode(&mut bytes, version).map_err(|e| format!("{key:?} v{version}: {e}"))?;
    if !bytes.is_empty() {
        return Err(format!("{key:?} v{version}: {} trailing bytes", bytes.len()));
    }
    Ok(body)
}

/// CreateTopics of [`TOPIC`].
pub fn create_topics(partitions: i32, replication_factor: i16) -> m::CreateTopicsRequest {
    let mut topic = m::create_topics_request::CreatableTopic::default();
    topic.name = topic_name();
    topic.num_partitions = partitions;
    topic.replication_factor = replication_factor;
    let mut request = m::CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 5_000;
    request
}

/// The error code and message of [`TOPIC`] in a CreateTopics response.
pub fn create_topics_error(response: &m::CreateTopicsResponse) -> Option<(i16, String)> {
    response
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == TOPIC)
        .map(|t| {
            let message = t
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            (t.error_code, message)
        })
}

/// IncrementalAlterConfigs of [`TOPIC`]: SET `name` to `value`.
pub fn alter_config(name: &'static str, value: String) -> m::IncrementalAlterConfigsRequest {
    let mut config = m::incremental_alter_configs_request::AlterableConfig::default();
    config.name = StrBytes::from_static_str(name);
    config.config_operation = 0;
    config.value = Some(StrBytes::from_string(value));
    let mut resource = m::incremental_alter_configs_request::AlterConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_static_str(TOPIC);
    resource.configs = vec![config];
    let mut request = m::IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    request
}

/// The error code of [`TOPIC`] in an IncrementalAlterConfigs response.
pub fn alter_config_error(response: &m::IncrementalAlterConfigsResponse) -> Option<i16> {
    response
        .responses
        .iter()
        .find(|r| r.resource_name.as_str() == TOPIC)
        .map(|r| r.error_code)
}

/// Metadata of [`TOPIC`].
pub fn metadata() -> m::MetadataRequest {
    let mut topic = m::metadata_request::MetadataRequestTopic::default();
    topic.name = Some(topic_name());
    let mut request = m::MetadataRequest::default();
    request.topics = Some(vec![topic]);
    request.allow_auto_topic_creation = false;
    request
}

/// The leaders of [`TOPIC`]'s partitions in a Metadata response: partition → broker.
pub fn leaders(response: &m::MetadataResponse) -> Vec<(i32, i32)> {
    response
        .topics
        .iter()
        .filter(|t| t.error_code == 0 && t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.error_code == 0 && p.leader_id >= BrokerId(0))
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect()
}

/// Produce (acks=all) of one record carrying `payload` to `partition`.
pub fn produce(partition: i32, payload: Vec<u8>, timeout_ms: i32) -> m::ProduceRequest {
    let batch = build_batch(
        &[NewRecord::value(payload, RECORD_TIMESTAMP_MS)],
        BatchOptions::default(),
    );
    let mut data = m::produce_request::PartitionProduceData::default();
    data.index = partition;
    data.records = Some(batch);
    let mut topic = m::produce_request::TopicProduceData::default();
    topic.name = topic_name();
    topic.partition_data = vec![data];
    let mut request = m::ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = timeout_ms;
    request.topic_data = vec![topic];
    request
}

/// (error code, base offset) of `partition` in a Produce response.
pub fn produce_result(response: &m::ProduceResponse, partition: i32) -> Option<(i16, i64)> {
    response
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == TOPIC)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .map(|p| (p.error_code, p.base_offset))
}

/// Fetch of `partition` from `offset`.
pub fn fetch(partition: i32, offset: i64, max_wait_ms: i32) -> m::FetchRequest {
    let mut p = m::fetch_request::FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = 64 * 1024;
    p.current_leader_epoch = -1;
    p.last_fetched_epoch = -1;
    p.log_start_offset = -1;
    let mut topic = m::fetch_request::FetchTopic::default();
    topic.topic = topic_name();
    topic.partitions = vec![p];
    let mut request = m::FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 256 * 1024;
    request.topics = vec![topic];
    request
}

/// What a Fetch response says about one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Kafka error code.
    pub error_code: i16,
    /// High watermark.
    pub high_watermark: i64,
    /// Data records: (offset, value).
    pub records: Vec<(i64, Option<u64>)>,
    /// The offset after the last batch returned (control batches included).
    pub next_offset: Option<i64>,
}

/// The partition's part of a Fetch response; batches are parsed (control batches
/// skipped). A batch that does not parse is an error.
pub fn fetched(response: &m::FetchResponse, partition: i32) -> Result<Option<Fetched>, String> {
    let Some(p) = response
        .responses
        .iter()
        .filter(|t| t.topic.0.as_str() == TOPIC)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
    else {
        return Ok(None);
    };
    let mut out = Fetched {
        error_code: p.error_code,
        high_watermark: p.high_watermark,
        ..Fetched::default()
    };
    if let Some(records) = &p.records {
        parse_batches(records, &mut out)?;
    }
    Ok(Some(out))
}

fn parse_batches(records: &Bytes, out: &mut Fetched) -> Result<(), String> {
    let mut batches = iter_batches(records);
    for (at, header) in batches.by_ref() {
        out.next_offset = Some(header.base_offset + i64::from(header.last_offset_delta) + 1);
        if header.is_control() {
            continue;
        }
        let body = records.slice(at + BATCH_HEADER_BYTES..at + header.size_bytes());
        let parsed = parse_uncompressed_records(&body, header.record_count)
            .map_err(|e| format!("batch at offset {}: {e}", header.base_offset))?;
        for record in parsed {
            let value = record.value.as_deref().and_then(crate::history::payload_value);
            out.records
                .push((header.base_offset + record.offset_delta, value));
        }
    }
    // A fetch may end in a partial batch (cut at the byte limit): legal.
    Ok(())
}
