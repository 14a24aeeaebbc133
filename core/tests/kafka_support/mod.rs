//! Test support for the Kafka wire layer: a client's side of the conversation (encode
//! requests, decode responses, with `kafka-protocol` as a client would) and populated
//! sample requests and responses for every supported API at any version.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, Bytes, BytesMut};
use oxbow_core::kafka::protocol::messages::{self, ApiKey, RequestHeader, ResponseHeader};
use oxbow_core::kafka::protocol::protocol::{Decodable, Encodable, StrBytes};
use oxbow_core::kafka::request::decodable_versions;
use oxbow_core::kafka::{decode_request, DecodedRequest, FrameDecoder, Request, RequestError, Response};

/// Every supported API with Oxbow's range, from the table.
pub fn supported() -> Vec<(ApiKey, i16, i16)> {
    oxbow_core::kafka::API_TABLE
        .iter()
        .filter_map(|row| match row.status {
            oxbow_core::kafka::ApiStatus::Supported { min, max } => Some((row.key, min, max)),
            _ => None,
        })
        .collect()
}

/// Every API with a [`Request`] variant (supported, or planned but already decodable),
/// with the versions `kafka-protocol` decodes it at.
pub fn decodable() -> Vec<(ApiKey, i16, i16)> {
    oxbow_core::kafka::API_TABLE
        .iter()
        .filter_map(|row| {
            let (min, max) = decodable_versions(row.key)?;
            Some((row.key, min, max))
        })
        .collect()
}

/// The planned APIs that are already decodable (refused by the decoder until supported).
pub fn planned_decodable() -> Vec<(ApiKey, i16, i16)> {
    decodable()
        .into_iter()
        .filter(|&(key, _, _)| oxbow_core::kafka::supported_versions(key).is_none())
        .collect()
}

pub fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

pub fn topic(text: &'static str) -> messages::TopicName {
    messages::TopicName(s(text))
}

pub fn group(text: &'static str) -> messages::GroupId {
    messages::GroupId(s(text))
}

pub fn txn(text: &'static str) -> messages::TransactionalId {
    messages::TransactionalId(s(text))
}

/// A fake record batch: the broker never looks inside on this path.
pub fn records() -> Bytes {
    Bytes::from_static(b"\x00\x00\x00\x00\x00\x00\x00\x00batch-bytes")
}

/// The body bytes of `request` at `version`, as a client encodes them.
pub fn encode_body(request: &Request, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    match request {
        Request::Produce(r) => r.encode(&mut buf, version),
        Request::Fetch(r) => r.encode(&mut buf, version),
        Request::ListOffsets(r) => r.encode(&mut buf, version),
        Request::Metadata(r) => r.encode(&mut buf, version),
        Request::ApiVersions(r) => r.encode(&mut buf, version),
        Request::CreateTopics(r) => r.encode(&mut buf, version),
        Request::DeleteTopics(r) => r.encode(&mut buf, version),
        Request::DeleteRecords(r) => r.encode(&mut buf, version),
        Request::OffsetForLeaderEpoch(r) => r.encode(&mut buf, version),
        Request::DescribeConfigs(r) => r.encode(&mut buf, version),
        Request::AlterConfigs(r) => r.encode(&mut buf, version),
        Request::CreatePartitions(r) => r.encode(&mut buf, version),
        Request::IncrementalAlterConfigs(r) => r.encode(&mut buf, version),
        Request::DescribeCluster(r) => r.encode(&mut buf, version),
        Request::InitProducerId(r) => r.encode(&mut buf, version),
        Request::OffsetCommit(r) => r.encode(&mut buf, version),
        Request::OffsetFetch(r) => r.encode(&mut buf, version),
        Request::FindCoordinator(r) => r.encode(&mut buf, version),
        Request::JoinGroup(r) => r.encode(&mut buf, version),
        Request::Heartbeat(r) => r.encode(&mut buf, version),
        Request::LeaveGroup(r) => r.encode(&mut buf, version),
        Request::SyncGroup(r) => r.encode(&mut buf, version),
        Request::DescribeGroups(r) => r.encode(&mut buf, version),
        Request::ListGroups(r) => r.encode(&mut buf, version),
        Request::AddPartitionsToTxn(r) => r.encode(&mut buf, version),
        Request::AddOffsetsToTxn(r) => r.encode(&mut buf, version),
        Request::EndTxn(r) => r.encode(&mut buf, version),
        Request::WriteTxnMarkers(r) => r.encode(&mut buf, version),
        Request::TxnOffsetCommit(r) => r.encode(&mut buf, version),
        Request::DeleteGroups(r) => r.encode(&mut buf, version),
        Request::OffsetDelete(r) => r.encode(&mut buf, version),
        Request::DescribeProducers(r) => r.encode(&mut buf, version),
        Request::DescribeTransactions(r) => r.encode(&mut buf, version),
        Request::ListTransactions(r) => r.encode(&mut buf, version),
        Request::ConsumerGroupHeartbeat(r) => r.encode(&mut buf, version),
        Request::ConsumerGroupDescribe(r) => r.encode(&mut buf, version),
        other => panic!("no encoder for {:?}", other.api_key()),
    }
    .unwrap_or_else(|e| panic!("encode {:?} v{version}: {e}", request.api_key()));
    buf.freeze()
}

/// What `kafka-protocol` itself decodes from the client's bytes: the expected value.
pub fn normalize(request: &Request, version: i16) -> Request {
    let mut body = encode_body(request, version);
    protocol_decode(request.api_key(), &mut body, version).unwrap()
}

/// A body of API `key` decoded by `kafka-protocol` alone (no bounds check), consuming
/// what it reads from `body`.
pub fn protocol_decode(key: ApiKey, body: &mut Bytes, version: i16) -> Result<Request, String> {
    macro_rules! decode {
        ($($variant:ident),*) => {
            match key {
                $(ApiKey::$variant => Decodable::decode(body, version).map(Request::$variant),)*
                other => panic!("no decoder for {other:?}"),
            }
        };
    }
    decode!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        OffsetForLeaderEpoch,
        DescribeConfigs,
        AlterConfigs,
        CreatePartitions,
        IncrementalAlterConfigs,
        DescribeCluster,
        InitProducerId,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        WriteTxnMarkers,
        TxnOffsetCommit,
        DeleteGroups,
        OffsetDelete,
        DescribeProducers,
        DescribeTransactions,
        ListTransactions,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe
    )
    .map_err(|error| error.to_string())
}

/// A whole request frame (size prefix, header, body) as a client sends it.
pub fn client_frame(request: &Request, version: i16, correlation_id: i32) -> Bytes {
    let key = request.api_key();
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("oxbow-test-client")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, key.request_header_version(version))
        .unwrap();
    payload.extend_from_slice(&encode_body(request, version));
    framed(&payload)
}

/// `payload` with its size prefix.
pub fn framed(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.extend_from_slice(payload);
    out.freeze()
}

/// The payload of `frame` (size prefix removed), through a [`FrameDecoder`].
pub fn unframe(frame: &[u8]) -> Bytes {
    let mut decoder = FrameDecoder::default();
    assert_eq!(decoder.push(frame), frame.len());
    let payload = decoder.next_frame().unwrap().expect("a whole frame");
    assert_eq!(decoder.buffered_bytes(), 0, "exactly one frame");
    payload
}

/// The broker side: frame bytes in, decoded request out.
pub fn broker_decode(frame: &[u8]) -> Result<DecodedRequest, RequestError> {
    decode_request(unframe(frame))
}

/// The client side of a response frame: correlation id and body, decoded with the
/// header version the client expects for (`key`, `version`).
pub fn client_decode_response<R: Decodable>(frame: &[u8], key: ApiKey, version: i16) -> (i32, R) {
    let mut payload = unframe(frame);
    let header = ResponseHeader::decode(&mut payload, key.response_header_version(version)).unwrap();
    let body = R::decode(&mut payload, version).unwrap();
    assert!(
        payload.is_empty(),
        "{key:?} v{version}: {} trailing bytes",
        payload.len()
    );
    (header.correlation_id, body)
}

/// Decodes a response frame as a client into the [`Response`] enum.
pub fn client_decode_any(frame: &[u8], key: ApiKey, version: i16) -> (i32, Response) {
    macro_rules! any {
        ($($variant:ident),*) => {
            match key {
                $(ApiKey::$variant => {
                    let (id, body) = client_decode_response(frame, key, version);
                    (id, Response::$variant(body))
                })*
                other => panic!("no decoder for {other:?}"),
            }
        };
    }
    any!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        OffsetForLeaderEpoch,
        DescribeConfigs,
        AlterConfigs,
        CreatePartitions,
        IncrementalAlterConfigs,
        DescribeCluster,
        InitProducerId,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        WriteTxnMarkers,
        TxnOffsetCommit,
        DeleteGroups,
        OffsetDelete,
        DescribeProducers,
        DescribeTransactions,
        ListTransactions,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe
    )
}

/// A request of API `key` with every field valid at `version` set to a non-default value.
pub fn sample_request(key: ApiKey, v: i16) -> Request {
    use messages::*;
    match key {
        ApiKey::Produce => {
            use produce_request::*;
            let partitions = vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records())),
                PartitionProduceData::default()
                    .with_index(7)
                    .with_records(Some(records())),
            ];
            let mut t = TopicProduceData::default().with_partition_data(partitions);
            if v <= 12 {
                t = t.with_name(topic("orders"));
            }
            Request::Produce(
                ProduceRequest::default()
                    .with_transactional_id(Some(TransactionalId(s("txn-1"))))
                    .with_acks(-1)
                    .with_timeout_ms(1500)
                    .with_topic_data(vec![t.clone(), t]),
            )
        }
        ApiKey::Fetch => {
            use fetch_request::*;
            let mut p = FetchPartition::default()
                .with_partition(3)
                .with_fetch_offset(42)
                .with_partition_max_bytes(1 << 20);
            if v >= 9 {
                p = p.with_current_leader_epoch(5);
            }
            if v >= 12 {
                p = p.with_last_fetched_epoch(4);
            }
            if v >= 5 {
                p = p.with_log_start_offset(1);
            }
            if v >= 18 {
                p = p.with_high_watermark(40);
            }
            let mut t = FetchTopic::default().with_partitions(vec![p.clone(), p]);
            if v <= 12 {
                t = t.with_topic(topic("orders"));
            }
            let mut r = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(50 << 20)
                .with_isolation_level(1)
                .with_topics(vec![t]);
            if v <= 14 {
                r = r.with_replica_id(BrokerId(-1));
            }
            if v >= 7 {
                let mut f = ForgottenTopic::default().with_partitions(vec![1, 2]);
                if v <= 12 {
                    f = f.with_topic(topic("old"));
                }
                r = r
                    .with_session_id(9)
                    .with_session_epoch(2)
                    .with_forgotten_topics_data(vec![f]);
            }
            if v >= 11 {
                r = r.with_rack_id(s("rack-a"));
            }
            if v >= 12 {
                r = r.with_cluster_id(Some(s("cluster-1")));
            }
            if v >= 15 {
                r = r.with_replica_state(
                    ReplicaState::default()
                        .with_replica_id(BrokerId(2))
                        .with_replica_epoch(6),
                );
            }
            Request::Fetch(r)
        }
        ApiKey::ListOffsets => {
            use list_offsets_request::*;
            let mut p = ListOffsetsPartition::default()
                .with_partition_index(1)
                .with_timestamp(-2);
            if v >= 4 {
                p = p.with_current_leader_epoch(3);
            }
            let t = ListOffsetsTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![p]);
            let mut r = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![t]);
            if v >= 2 {
                r = r.with_isolation_level(1);
            }
            if v >= 10 {
                r = r.with_timeout_ms(2000);
            }
            Request::ListOffsets(r)
        }
        ApiKey::Metadata => {
            use metadata_request::*;
            let t = MetadataRequestTopic::default().with_name(Some(topic("orders")));
            let mut r = MetadataRequest::default().with_topics(Some(vec![t.clone(), t]));
            if (8..=10).contains(&v) {
                r = r.with_include_cluster_authorized_operations(true);
            }
            if v >= 8 {
                r = r.with_include_topic_authorized_operations(true);
            }
            Request::Metadata(r)
        }
        ApiKey::ApiVersions => {
            let mut r = ApiVersionsRequest::default();
            if v >= 3 {
                r = r
                    .with_client_software_name(s("oxbow-test"))
                    .with_client_software_version(s("1.0.0"));
            }
            Request::ApiVersions(r)
        }
        ApiKey::CreateTopics => {
            use create_topics_request::*;
            let t = CreatableTopic::default()
                .with_name(topic("orders"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(vec![BrokerId(1), BrokerId(2)])])
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("1000")))]);
            Request::CreateTopics(
                CreateTopicsRequest::default()
                    .with_topics(vec![t])
                    .with_timeout_ms(3000)
                    .with_validate_only(true),
            )
        }
        ApiKey::DeleteTopics => {
            use delete_topics_request::*;
            let mut r = DeleteTopicsRequest::default().with_timeout_ms(1000);
            if v >= 6 {
                r = r.with_topics(vec![DeleteTopicState::default().with_name(Some(topic("orders")))]);
            } else {
                r = r.with_topic_names(vec![topic("orders"), topic("events")]);
            }
            Request::DeleteTopics(r)
        }
        ApiKey::DeleteRecords => {
            use delete_records_request::*;
            let t = DeleteRecordsTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(2)
                    .with_offset(100)]);
            Request::DeleteRecords(
                DeleteRecordsRequest::default()
                    .with_topics(vec![t])
                    .with_timeout_ms(1000),
            )
        }
        ApiKey::OffsetForLeaderEpoch => {
            use offset_for_leader_epoch_request::*;
            let p = OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(3)
                .with_leader_epoch(2);
            let t = OffsetForLeaderTopic::default()
                .with_topic(topic("orders"))
                .with_partitions(vec![p]);
            let mut r = OffsetForLeaderEpochRequest::default().with_topics(vec![t]);
            if v >= 3 {
                r = r.with_replica_id(BrokerId(-1));
            }
            Request::OffsetForLeaderEpoch(r)
        }
        ApiKey::DescribeConfigs => {
            use describe_configs_request::*;
            let res = DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"))
                .with_configuration_keys(Some(vec![s("retention.ms"), s("segment.bytes")]));
            let mut r = DescribeConfigsRequest::default()
                .with_resources(vec![res])
                .with_include_synonyms(true);
            if v >= 3 {
                r = r.with_include_documentation(true);
            }
            Request::DescribeConfigs(r)
        }
        ApiKey::AlterConfigs => {
            use alter_configs_request::*;
            let res = AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("60000")))]);
            Request::AlterConfigs(
                AlterConfigsRequest::default()
                    .with_resources(vec![res])
                    .with_validate_only(true),
            )
        }
        ApiKey::CreatePartitions => {
            use create_partitions_request::*;
            let t = CreatePartitionsTopic::default()
                .with_name(topic("orders"))
                .with_count(6)
                .with_assignments(Some(vec![
                    CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)])
                ]));
            Request::CreatePartitions(
                CreatePartitionsRequest::default()
                    .with_topics(vec![t])
                    .with_timeout_ms(1000)
                    .with_validate_only(true),
            )
        }
        ApiKey::IncrementalAlterConfigs => {
            use incremental_alter_configs_request::*;
            let res = AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("retention.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(s("1048576")))]);
            Request::IncrementalAlterConfigs(
                IncrementalAlterConfigsRequest::default()
                    .with_resources(vec![res])
                    .with_validate_only(true),
            )
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000);
            if v >= 3 {
                r = r.with_producer_id(ProducerId(7)).with_producer_epoch(2);
            }
            Request::InitProducerId(r)
        }
        ApiKey::DescribeCluster => {
            let mut r = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
            if v >= 1 {
                r = r.with_endpoint_type(1);
            }
            if v >= 2 {
                r = r.with_include_fenced_brokers(true);
            }
            Request::DescribeCluster(r)
        }
        ApiKey::OffsetCommit => {
            use offset_commit_request::*;
            let mut p = OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)
                .with_committed_metadata(Some(s("meta")));
            if v >= 6 {
                p = p.with_committed_leader_epoch(2);
            }
            let t = OffsetCommitRequestTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![p.clone(), p.with_partition_index(3)]);
            let mut r = OffsetCommitRequest::default()
                .with_group_id(group("consumers"))
                .with_generation_id_or_member_epoch(3)
                .with_member_id(s("member-1"))
                .with_topics(vec![t]);
            if v >= 7 {
                r = r.with_group_instance_id(Some(s("instance-1")));
            }
            if v <= 4 {
                r = r.with_retention_time_ms(86_400_000);
            }
            Request::OffsetCommit(r)
        }
        ApiKey::OffsetFetch => {
            use offset_fetch_request::*;
            let mut r = OffsetFetchRequest::default();
            if v <= 7 {
                let t = OffsetFetchRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partition_indexes(vec![0, 3]);
                r = r.with_group_id(group("consumers")).with_topics(Some(vec![t]));
            } else {
                let t = OffsetFetchRequestTopics::default()
                    .with_name(topic("orders"))
                    .with_partition_indexes(vec![0, 3]);
                let mut g = OffsetFetchRequestGroup::default()
                    .with_group_id(group("consumers"))
                    .with_topics(Some(vec![t]));
                if v >= 9 {
                    g = g.with_member_id(Some(s("member-1"))).with_member_epoch(4);
                }
                r = r.with_groups(vec![g.clone(), g.with_group_id(group("others"))]);
            }
            if v >= 7 {
                r = r.with_require_stable(true);
            }
            Request::OffsetFetch(r)
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if v <= 3 {
                r = r.with_key(s("txn-1"));
            }
            if v >= 1 {
                r = r.with_key_type(1);
            }
            if v >= 4 {
                r = r.with_coordinator_keys(vec![s("txn-1"), s("txn-2")]);
            }
            Request::FindCoordinator(r)
        }
        ApiKey::JoinGroup => {
            use join_group_request::*;
            let p = JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"\x00\x03subscription"));
            let mut r = JoinGroupRequest::default()
                .with_group_id(group("consumers"))
                .with_session_timeout_ms(45_000)
                .with_member_id(s("member-1"))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![p.clone(), p.with_name(s("roundrobin"))]);
            if v >= 1 {
                r = r.with_rebalance_timeout_ms(300_000);
            }
            if v >= 5 {
                r = r.with_group_instance_id(Some(s("instance-1")));
            }
            if v >= 8 {
                r = r.with_reason(Some(s("rejoining")));
            }
            Request::JoinGroup(r)
        }
        ApiKey::Heartbeat => {
            let mut r = HeartbeatRequest::default()
                .with_group_id(group("consumers"))
                .with_generation_id(3)
                .with_member_id(s("member-1"));
            if v >= 3 {
                r = r.with_group_instance_id(Some(s("instance-1")));
            }
            Request::Heartbeat(r)
        }
        ApiKey::LeaveGroup => {
            use leave_group_request::*;
            let mut r = LeaveGroupRequest::default().with_group_id(group("consumers"));
            if v <= 2 {
                r = r.with_member_id(s("member-1"));
            } else {
                let mut m = MemberIdentity::default()
                    .with_member_id(s("member-1"))
                    .with_group_instance_id(Some(s("instance-1")));
                if v >= 5 {
                    m = m.with_reason(Some(s("shutting down")));
                }
                r = r.with_members(vec![m.clone(), m.with_member_id(s("member-2"))]);
            }
            Request::LeaveGroup(r)
        }
        ApiKey::SyncGroup => {
            use sync_group_request::*;
            let a = SyncGroupRequestAssignment::default()
                .with_member_id(s("member-1"))
                .with_assignment(Bytes::from_static(b"\x00\x03assignment"));
            let mut r = SyncGroupRequest::default()
                .with_group_id(group("consumers"))
                .with_generation_id(3)
                .with_member_id(s("member-1"))
                .with_assignments(vec![a.clone(), a.with_member_id(s("member-2"))]);
            if v >= 3 {
                r = r.with_group_instance_id(Some(s("instance-1")));
            }
            if v >= 5 {
                r = r
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")));
            }
            Request::SyncGroup(r)
        }
        ApiKey::DescribeGroups => {
            let mut r =
                DescribeGroupsRequest::default().with_groups(vec![group("consumers"), group("others")]);
            if v >= 3 {
                r = r.with_include_authorized_operations(true);
            }
            Request::DescribeGroups(r)
        }
        ApiKey::ListGroups => {
            let mut r = ListGroupsRequest::default();
            if v >= 4 {
                r = r.with_states_filter(vec![s("Stable"), s("Empty")]);
            }
            if v >= 5 {
                r = r.with_types_filter(vec![s("classic")]);
            }
            Request::ListGroups(r)
        }
        ApiKey::DeleteGroups => Request::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![group("consumers"), group("others")]),
        ),
        ApiKey::OffsetDelete => {
            use offset_delete_request::*;
            let p = OffsetDeleteRequestPartition::default().with_partition_index(2);
            let t = OffsetDeleteRequestTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![p.clone(), p.with_partition_index(5)]);
            Request::OffsetDelete(
                OffsetDeleteRequest::default()
                    .with_group_id(group("consumers"))
                    .with_topics(vec![t]),
            )
        }
        ApiKey::ConsumerGroupHeartbeat => {
            use consumer_group_heartbeat_request::*;
            let t = TopicPartitions::default()
                .with_topic_id(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef))
                .with_partitions(vec![0, 1]);
            let mut r = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(group("consumers"))
                .with_member_id(s("member-1"))
                .with_member_epoch(5)
                .with_instance_id(Some(s("instance-1")))
                .with_rack_id(Some(s("rack-a")))
                .with_rebalance_timeout_ms(300_000)
                .with_subscribed_topic_names(Some(vec![topic("orders")]))
                .with_server_assignor(Some(s("uniform")))
                .with_topic_partitions(Some(vec![t]));
            if v >= 1 {
                r = r.with_subscribed_topic_regex(Some(s("ord.*")));
            }
            Request::ConsumerGroupHeartbeat(r)
        }
        ApiKey::ConsumerGroupDescribe => Request::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![group("consumers"), group("others")])
                .with_include_authorized_operations(true),
        ),
        ApiKey::AddPartitionsToTxn => {
            use add_partitions_to_txn_request::*;
            let t = AddPartitionsToTxnTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![0, 3]);
            let mut r = AddPartitionsToTxnRequest::default();
            if v >= 4 {
                let x = AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(txn("txn-1"))
                    .with_producer_id(ProducerId(7))
                    .with_producer_epoch(1)
                    .with_verify_only(true)
                    .with_topics(vec![t]);
                r = r.with_transactions(vec![x.clone(), x.with_transactional_id(txn("txn-2"))]);
            } else {
                r = r
                    .with_v3_and_below_transactional_id(txn("txn-1"))
                    .with_v3_and_below_producer_id(ProducerId(7))
                    .with_v3_and_below_producer_epoch(1)
                    .with_v3_and_below_topics(vec![t.clone(), t.with_name(topic("events"))]);
            }
            Request::AddPartitionsToTxn(r)
        }
        ApiKey::AddOffsetsToTxn => Request::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(txn("txn-1"))
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(1)
                .with_group_id(group("consumers")),
        ),
        ApiKey::EndTxn => Request::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(txn("txn-1"))
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(1)
                .with_committed(true),
        ),
        ApiKey::WriteTxnMarkers => {
            use write_txn_markers_request::*;
            let t = WritableTxnMarkerTopic::default()
                .with_name(topic("orders"))
                .with_partition_indexes(vec![0, 3]);
            let m = WritableTxnMarker::default()
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(1)
                .with_transaction_result(true)
                .with_topics(vec![t])
                .with_coordinator_epoch(2);
            Request::WriteTxnMarkers(
                WriteTxnMarkersRequest::default()
                    .with_markers(vec![m.clone(), m.with_producer_id(ProducerId(8))]),
            )
        }
        ApiKey::TxnOffsetCommit => {
            use txn_offset_commit_request::*;
            let mut p = TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)
                .with_committed_metadata(Some(s("meta")));
            if v >= 2 {
                p = p.with_committed_leader_epoch(2);
            }
            let t = TxnOffsetCommitRequestTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![p.clone(), p.with_partition_index(3)]);
            let mut r = TxnOffsetCommitRequest::default()
                .with_transactional_id(txn("txn-1"))
                .with_group_id(group("consumers"))
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(1)
                .with_topics(vec![t]);
            if v >= 3 {
                r = r
                    .with_generation_id(3)
                    .with_member_id(s("member-1"))
                    .with_group_instance_id(Some(s("instance-1")));
            }
            Request::TxnOffsetCommit(r)
        }
        ApiKey::DescribeProducers => {
            use describe_producers_request::*;
            let t = TopicRequest::default()
                .with_name(topic("orders"))
                .with_partition_indexes(vec![0, 3]);
            Request::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![t]))
        }
        ApiKey::DescribeTransactions => Request::DescribeTransactions(
            DescribeTransactionsRequest::default().with_transactional_ids(vec![txn("txn-1"), txn("txn-2")]),
        ),
        ApiKey::ListTransactions => {
            let mut r = ListTransactionsRequest::default()
                .with_state_filters(vec![s("Ongoing")])
                .with_producer_id_filters(vec![ProducerId(7), ProducerId(8)]);
            if v >= 1 {
                r = r.with_duration_filter(60_000);
            }
            if v >= 2 {
                r = r.with_transactional_id_pattern(Some(s("txn-.*")));
            }
            Request::ListTransactions(r)
        }
        other => panic!("no sample for {other:?}"),
    }
}

/// A populated response for the sample request: the error response with code 0 and,
/// for the data-carrying APIs, real-looking data.
pub fn sample_response(key: ApiKey, v: i16) -> Response {
    use messages::*;
    let request = sample_request(key, v);
    let base = oxbow_core::kafka::error_response(&request, v, oxbow_core::kafka::ErrorCode::NONE);
    match base {
        Response::Produce(mut r) => {
            for t in &mut r.responses {
                for p in &mut t.partition_responses {
                    p.base_offset = 100;
                    p.log_start_offset = 0;
                }
            }
            Response::Produce(r.with_throttle_time_ms(0))
        }
        Response::Fetch(mut r) => {
            for t in &mut r.responses {
                for p in &mut t.partitions {
                    p.high_watermark = 120;
                    p.last_stable_offset = 120;
                    p.log_start_offset = 0;
                    p.records = Some(records());
                    if v >= 4 {
                        p.aborted_transactions = Some(vec![fetch_response::AbortedTransaction::default()
                            .with_producer_id(ProducerId(7))
                            .with_first_offset(10)]);
                    }
                }
            }
            Response::Fetch(r)
        }
        Response::Metadata(mut r) => {
            use metadata_response::*;
            r.brokers = vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(0))
                .with_host(s("127.0.0.1"))
                .with_port(9092)];
            if v >= 2 {
                r.cluster_id = Some(s("oxbow-cluster"));
            }
            if v >= 1 {
                r.controller_id = BrokerId(0);
            }
            for t in &mut r.topics {
                let mut p = MetadataResponsePartition::default()
                    .with_partition_index(0)
                    .with_leader_id(BrokerId(0))
                    .with_replica_nodes(vec![BrokerId(0)])
                    .with_isr_nodes(vec![BrokerId(0)]);
                if v >= 7 {
                    p = p.with_leader_epoch(3);
                }
                t.partitions = vec![p];
                if v >= 8 {
                    t.topic_authorized_operations = 0;
                }
            }
            if (8..=10).contains(&v) {
                r.cluster_authorized_operations = 0;
            }
            Response::Metadata(r)
        }
        Response::DescribeCluster(r) => {
            use describe_cluster_response::*;
            let r = r
                .with_cluster_id(s("oxbow-cluster"))
                .with_controller_id(BrokerId(0))
                .with_brokers(vec![DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(0))
                    .with_host(s("127.0.0.1"))
                    .with_port(9092)]);
            Response::DescribeCluster(if v >= 1 { r.with_endpoint_type(1) } else { r })
        }
        Response::FindCoordinator(mut r) => {
            if v >= 4 {
                for c in &mut r.coordinators {
                    c.node_id = BrokerId(0);
                    c.host = s("127.0.0.1");
                    c.port = 9092;
                }
            } else {
                r.node_id = BrokerId(0);
                r.host = s("127.0.0.1");
                r.port = 9092;
            }
            Response::FindCoordinator(r)
        }
        Response::JoinGroup(r) => {
            use join_group_response::*;
            let mut m = JoinGroupResponseMember::default()
                .with_member_id(s("member-1"))
                .with_metadata(Bytes::from_static(b"\x00\x03subscription"));
            if v >= 5 {
                m = m.with_group_instance_id(Some(s("instance-1")));
            }
            let mut r = r
                .with_generation_id(4)
                .with_protocol_name(Some(s("range")))
                .with_leader(s("member-1"))
                .with_member_id(s("member-1"))
                .with_members(vec![m]);
            if v >= 7 {
                r = r.with_protocol_type(Some(s("consumer")));
            }
            if v >= 9 {
                r = r.with_skip_assignment(true);
            }
            Response::JoinGroup(r)
        }
        Response::SyncGroup(r) => {
            let mut r = r.with_assignment(Bytes::from_static(b"\x00\x03assignment"));
            if v >= 5 {
                r = r
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")));
            }
            Response::SyncGroup(r)
        }
        Response::OffsetFetch(mut r) => {
            for p in r.topics.iter_mut().flat_map(|t| &mut t.partitions) {
                p.committed_offset = 42;
                p.metadata = Some(s("meta"));
                if v >= 5 {
                    p.committed_leader_epoch = 2;
                }
            }
            for p in r
                .groups
                .iter_mut()
                .flat_map(|g| &mut g.topics)
                .flat_map(|t| &mut t.partitions)
            {
                p.committed_offset = 42;
                p.committed_leader_epoch = 2;
                p.metadata = None;
            }
            Response::OffsetFetch(r)
        }
        Response::DescribeGroups(mut r) => {
            use describe_groups_response::*;
            for g in &mut r.groups {
                g.group_state = s("Stable");
                g.protocol_type = s("consumer");
                g.protocol_data = s("range");
                let mut m = DescribedGroupMember::default()
                    .with_member_id(s("member-1"))
                    .with_client_id(s("client-1"))
                    .with_client_host(s("/127.0.0.1"))
                    .with_member_metadata(Bytes::from_static(b"subscription"))
                    .with_member_assignment(Bytes::from_static(b"assignment"));
                if v >= 4 {
                    m = m.with_group_instance_id(Some(s("instance-1")));
                }
                g.members = vec![m];
                if v >= 3 {
                    g.authorized_operations = 0;
                }
            }
            Response::DescribeGroups(r)
        }
        Response::ListGroups(r) => {
            use list_groups_response::*;
            let mut g = ListedGroup::default()
                .with_group_id(group("consumers"))
                .with_protocol_type(s("consumer"));
            if v >= 4 {
                g = g.with_group_state(s("Stable"));
            }
            if v >= 5 {
                g = g.with_group_type(s("classic"));
            }
            Response::ListGroups(r.with_groups(vec![g]))
        }
        Response::ConsumerGroupHeartbeat(r) => {
            use consumer_group_heartbeat_response::*;
            let t = TopicPartitions::default()
                .with_topic_id(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef))
                .with_partitions(vec![0, 1]);
            Response::ConsumerGroupHeartbeat(
                r.with_member_id(Some(s("member-1")))
                    .with_member_epoch(6)
                    .with_heartbeat_interval_ms(5000)
                    .with_assignment(Some(Assignment::default().with_topic_partitions(vec![t]))),
            )
        }
        other => other,
    }
}

/// The response as a client reads it back after `kafka-protocol` encodes it at `version`.
pub fn encode_decode_response(response: &Response, key: ApiKey, version: i16) -> Response {
    let header = oxbow_core::kafka::RequestHeader {
        api_key: key,
        api_version: version,
        correlation_id: 0,
        client_id: None,
    };
    let frame = oxbow_core::kafka::encode_response(&header, response).unwrap();
    client_decode_any(&frame, key, version).1
}
