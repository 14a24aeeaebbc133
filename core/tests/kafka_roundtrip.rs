//! Every supported API at every version Oxbow advertises: requests encoded as a client
//! encodes them decode to what `kafka-protocol` decodes; responses encoded by Oxbow
//! decode as a client expects, with the right header version; error responses encode at
//! every version; the bounds check walks exactly what `kafka-protocol` reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kafka_support;

use kafka_support::*;
use oxbow_core::kafka::protocol::messages::ApiKey;
use oxbow_core::kafka::schema::check_request_body;
use oxbow_core::kafka::{encode_response, error_response, ErrorCode, Request, RequestError, Response};

#[test]
fn every_supported_request_decodes_at_every_advertised_version() {
    for (key, min, max) in supported() {
        for version in min..=max {
            let request = sample_request(key, version);
            let frame = client_frame(&request, version, 1000 + i32::from(version));
            let decoded = broker_decode(&frame).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            assert_eq!(decoded.header.api_key, key);
            assert_eq!(decoded.header.api_version, version);
            assert_eq!(decoded.header.correlation_id, 1000 + i32::from(version));
            assert_eq!(decoded.header.client_id.as_deref(), Some("oxbow-test-client"));
            assert_eq!(
                decoded.request,
                normalize(&request, version),
                "{key:?} v{version}"
            );
            assert_eq!(decoded.request.api_key(), key);
        }
    }
}

#[test]
fn the_bounds_check_walks_exactly_the_bytes_kafka_protocol_reads() {
    // Across kafka-protocol's whole range, not only ours: unsupported versions are still
    // decoded to answer UNSUPPORTED_VERSION. And for the planned APIs that already have a
    // schema, so supporting one is only a change of its row in the table.
    for (key, min, max) in decodable() {
        for version in min..=max {
            let request = sample_request(key, version);
            let body = encode_body(&request, version);
            let walked =
                check_request_body(key, version, &body).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            assert_eq!(walked, body.len(), "{key:?} v{version}");
            let mut rest = body.clone();
            let decoded = protocol_decode(key, &mut rest, version).unwrap();
            assert!(rest.is_empty(), "{key:?} v{version}: kafka-protocol left bytes");
            assert_eq!(
                decoded, request,
                "{key:?} v{version}: the sample survives a round trip"
            );
        }
    }
}

#[test]
fn the_transaction_apis_decode_and_versions_outside_their_range_are_refused() {
    for key in [
        ApiKey::AddPartitionsToTxn,
        ApiKey::AddOffsetsToTxn,
        ApiKey::EndTxn,
        ApiKey::WriteTxnMarkers,
        ApiKey::TxnOffsetCommit,
        ApiKey::DescribeProducers,
        ApiKey::DescribeTransactions,
        ApiKey::ListTransactions,
    ] {
        let (min, max) = oxbow_core::kafka::supported_versions(key).expect("supported");
        let (_, decodable_max) = decodable()
            .into_iter()
            .find(|(k, ..)| *k == key)
            .map(|(_, a, b)| (a, b))
            .unwrap();
        for version in min..=decodable_max {
            let frame = client_frame(&sample_request(key, version), version, 9);
            match broker_decode(&frame) {
                Ok(decoded) if version <= max => assert_eq!(decoded.header.api_key, key),
                Err(RequestError::UnsupportedVersion { .. }) if version > max => {}
                other => panic!("{key:?} v{version}: {other:?}"),
            }
        }
    }
    // Every API with a schema is served now; none is left planned.
    assert_eq!(planned_decodable(), vec![]);
}

#[test]
fn every_supported_response_encodes_as_a_client_expects() {
    for (key, min, max) in supported() {
        for version in min..=max {
            let response = sample_response(key, version);
            let header = oxbow_core::kafka::RequestHeader {
                api_key: key,
                api_version: version,
                correlation_id: -7 - i32::from(version),
                client_id: None,
            };
            let frame =
                encode_response(&header, &response).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
            assert_eq!(size as usize, frame.len() - 4, "size prefix");
            let (correlation_id, decoded) = client_decode_any(&frame, key, version);
            assert_eq!(correlation_id, header.correlation_id, "{key:?} v{version}");
            // Encoding is deterministic and stable: decoding and re-encoding gives the
            // same bytes.
            let again = encode_response(&header, &decoded).unwrap();
            assert_eq!(again, frame, "{key:?} v{version}");
        }
    }
}

#[test]
fn api_versions_responses_always_use_header_v0() {
    for version in 0..=4 {
        let response = Response::ApiVersions(oxbow_core::kafka::api_versions_response());
        let header = oxbow_core::kafka::RequestHeader {
            api_key: ApiKey::ApiVersions,
            api_version: version,
            correlation_id: 0x0102_0304,
            client_id: None,
        };
        let frame = encode_response(&header, &response).unwrap();
        // Header v0 is the correlation id alone; the error code follows at once (no
        // tagged-field byte in between, even for flexible v3+).
        assert_eq!(&frame[4..8], &[1, 2, 3, 4]);
        assert_eq!(
            &frame[8..10],
            &[0, 0],
            "v{version}: error code right after the correlation id"
        );
    }
}

#[test]
fn error_responses_encode_at_every_version_and_carry_the_code() {
    for (key, min, max) in decodable() {
        for version in min..=max {
            let request = sample_request(key, version);
            for code in [ErrorCode::NOT_LEADER_OR_FOLLOWER, ErrorCode::UNSUPPORTED_VERSION] {
                let response = error_response(&request, version, code);
                assert_eq!(response.api_key(), key);
                let decoded = encode_decode_response(&response, key, version);
                assert!(
                    carries(&decoded, version, code),
                    "{key:?} v{version}: {code} missing from {decoded:?}"
                );
            }
        }
    }
}

/// Whether every error field a client reads in `response` (at `version`) holds `code`,
/// and at least one does.
fn carries(response: &Response, version: i16, code: ErrorCode) -> bool {
    let c = code.0;
    let codes: Vec<i16> = match response {
        Response::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect(),
        Response::Fetch(r) => r
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        Response::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        Response::Metadata(r) => r.topics.iter().map(|t| t.error_code).collect(),
        Response::ApiVersions(r) => vec![r.error_code],
        Response::CreateTopics(r) => r.topics.iter().map(|t| t.error_code).collect(),
        Response::DeleteTopics(r) => r.responses.iter().map(|t| t.error_code).collect(),
        Response::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        Response::OffsetForLeaderEpoch(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        Response::DescribeConfigs(r) => r.results.iter().map(|t| t.error_code).collect(),
        Response::AlterConfigs(r) => r.responses.iter().map(|t| t.error_code).collect(),
        Response::CreatePartitions(r) => r.results.iter().map(|t| t.error_code).collect(),
        Response::IncrementalAlterConfigs(r) => r.responses.iter().map(|t| t.error_code).collect(),
        Response::DescribeCluster(r) => vec![r.error_code],
        Response::InitProducerId(r) => vec![r.error_code],
        Response::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        Response::OffsetFetch(r) => {
            let top = (2..=7).contains(&version).then_some(r.error_code);
            let partitions = r.topics.iter().flat_map(|t| &t.partitions).map(|p| p.error_code);
            let groups = r.groups.iter().flat_map(|g| {
                let partitions = g.topics.iter().flat_map(|t| &t.partitions).map(|p| p.error_code);
                std::iter::once(g.error_code).chain(partitions)
            });
            top.into_iter().chain(partitions).chain(groups).collect()
        }
        Response::FindCoordinator(r) if version >= 4 => r.coordinators.iter().map(|c| c.error_code).collect(),
        Response::FindCoordinator(r) => vec![r.error_code],
        Response::JoinGroup(r) => vec![r.error_code],
        Response::Heartbeat(r) => vec![r.error_code],
        Response::LeaveGroup(r) => std::iter::once(r.error_code)
            .chain(r.members.iter().map(|m| m.error_code))
            .collect(),
        Response::SyncGroup(r) => vec![r.error_code],
        Response::DescribeGroups(r) => r.groups.iter().map(|g| g.error_code).collect(),
        Response::ListGroups(r) => vec![r.error_code],
        Response::DeleteGroups(r) => r.results.iter().map(|g| g.error_code).collect(),
        Response::OffsetDelete(r) => std::iter::once(r.error_code)
            .chain(r.topics.iter().flat_map(|t| &t.partitions).map(|p| p.error_code))
            .collect(),
        Response::ConsumerGroupHeartbeat(r) => vec![r.error_code],
        Response::ConsumerGroupDescribe(r) => r.groups.iter().map(|g| g.error_code).collect(),
        Response::AddPartitionsToTxn(r) => {
            let top = (version >= 4).then_some(r.error_code);
            let topics = r
                .results_by_transaction
                .iter()
                .flat_map(|x| &x.topic_results)
                .chain(&r.results_by_topic_v3_and_below);
            let partitions = topics
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code);
            top.into_iter().chain(partitions).collect()
        }
        Response::AddOffsetsToTxn(r) => vec![r.error_code],
        Response::EndTxn(r) => vec![r.error_code],
        Response::WriteTxnMarkers(r) => r
            .markers
            .iter()
            .flat_map(|m| &m.topics)
            .flat_map(|t| &t.partitions)
            .map(|p| p.error_code)
            .collect(),
        Response::TxnOffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        Response::DescribeProducers(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        Response::DescribeTransactions(r) => r.transaction_states.iter().map(|t| t.error_code).collect(),
        Response::ListTransactions(r) => vec![r.error_code],
        _ => vec![],
    };
    !codes.is_empty() && codes.iter().all(|&x| x == c)
}

#[test]
fn a_response_for_another_api_is_refused() {
    let header = oxbow_core::kafka::RequestHeader {
        api_key: ApiKey::Produce,
        api_version: 9,
        correlation_id: 1,
        client_id: None,
    };
    let response = sample_response(ApiKey::Fetch, 9);
    assert!(matches!(
        encode_response(&header, &response),
        Err(oxbow_core::kafka::EncodeError::ApiMismatch { .. })
    ));
}

#[test]
fn decoded_request_error_response_uses_the_header_version() {
    let request = sample_request(ApiKey::Fetch, 12);
    let decoded = broker_decode(&client_frame(&request, 12, 5)).unwrap();
    let response = decoded.error_response(ErrorCode::NOT_LEADER_OR_FOLLOWER);
    let frame = encode_response(&decoded.header, &response).unwrap();
    let (id, body): (i32, oxbow_core::kafka::protocol::messages::FetchResponse) =
        client_decode_response(&frame, ApiKey::Fetch, 12);
    assert_eq!(id, 5);
    assert_eq!(body.error_code, ErrorCode::NOT_LEADER_OR_FOLLOWER.0);
    assert_eq!(body.responses[0].topic.0.as_str(), "orders");
    assert_eq!(body.responses[0].partitions.len(), 2);
    let _ = Request::Fetch(Default::default());
}

#[test]
fn only_acks_0_produce_goes_unanswered() {
    for (key, min, _) in supported() {
        let decoded = broker_decode(&client_frame(&sample_request(key, min), min, 1)).unwrap();
        assert!(decoded.expects_response(), "{key:?}");
    }
    let Request::Produce(produce) = sample_request(ApiKey::Produce, 9) else {
        unreachable!()
    };
    let request = Request::Produce(produce.with_acks(0));
    let decoded = broker_decode(&client_frame(&request, 9, 1)).unwrap();
    assert!(!decoded.expects_response());
}
