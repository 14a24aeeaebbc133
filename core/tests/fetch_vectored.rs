//! Fetch responses encoded as chunk lists ([`encode_response_frame`]): the chunks back to
//! back are byte for byte the contiguous encoding ([`encode_response`]) at every Fetch
//! version `kafka-protocol` encodes (the broker's 4–12 among them), flexible versions'
//! compact lengths and tagged fields included; large record sets are sent from their own
//! buffers (no copy); a client decodes the result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kafka_support;

use bytes::Bytes;
use kafka_support::client_decode_response;
use oxbow_core::kafka::protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    PartitionData, SnapshotId,
};
use oxbow_core::kafka::protocol::messages::{ApiKey, BrokerId, FetchResponse, ProducerId, TopicName};
use oxbow_core::kafka::protocol::protocol::{Message, StrBytes};
use oxbow_core::kafka::vectored::SPLICE_MIN_BYTES;
use oxbow_core::kafka::{encode_response, encode_response_frame, RequestHeader, Response, ResponseFrame};

fn header(version: i16) -> RequestHeader {
    RequestHeader {
        api_key: ApiKey::Fetch,
        api_version: version,
        correlation_id: 0x0102_0304 + i32::from(version),
        client_id: None,
    }
}

/// Bytes whose content looks like length fields (runs of 0xff and 0x00), so a splice
/// that looked at record bytes would go wrong.
fn records(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| match (i / 7) % 3 {
            0 => 0xff,
            1 => 0x00,
            _ => (i as u8).wrapping_mul(31).wrapping_add(seed),
        })
        .collect::<Vec<u8>>()
        .into()
}

fn partition(version: i16, index: i32, records: Option<Bytes>) -> PartitionData {
    let mut p = PartitionData::default();
    p.partition_index = index;
    p.high_watermark = 1_000 + i64::from(index);
    p.last_stable_offset = -1;
    if version >= 5 {
        p.log_start_offset = 7;
    }
    p.preferred_read_replica = BrokerId(-1);
    p.records = records;
    p
}

/// A response exercising every field the version carries: two topics, record sets
/// large, small, empty and null, aborted transactions, and in flexible versions the
/// partitions' tagged fields and an unknown tagged field.
fn sample(version: i16, large: &[Bytes]) -> FetchResponse {
    let mut first = partition(version, 0, Some(large[0].clone()));
    let mut aborted = AbortedTransaction::default();
    aborted.producer_id = ProducerId(4001);
    aborted.first_offset = 12;
    first.aborted_transactions = Some(vec![aborted]);
    let mut errored = partition(version, 1, None);
    errored.error_code = 6;
    let small = partition(version, 2, Some(records(100, 3)));
    let empty = partition(version, 3, Some(Bytes::new()));
    let mut last = partition(version, 4, Some(large[1].clone()));
    if version >= 11 {
        last.preferred_read_replica = BrokerId(2);
    }
    if version >= 12 {
        let mut diverging = EpochEndOffset::default();
        diverging.epoch = 3;
        diverging.end_offset = 99;
        first.diverging_epoch = diverging;
        let mut leader = LeaderIdAndEpoch::default();
        leader.leader_id = BrokerId(1);
        leader.leader_epoch = 5;
        last.current_leader = leader;
        let mut snapshot = SnapshotId::default();
        snapshot.end_offset = 40;
        snapshot.epoch = 2;
        last.snapshot_id = snapshot;
        last.unknown_tagged_fields.insert(9, Bytes::from_static(b"tag"));
    }
    let mut topics = Vec::new();
    for (t, partitions) in [vec![first, errored, small], vec![empty, last]]
        .into_iter()
        .enumerate()
    {
        let mut topic = FetchableTopicResponse::default();
        if version < 13 {
            topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
        } else {
            topic.topic_id = uuid::Uuid::from_u128(0x1234 + t as u128);
        }
        topic.partitions = partitions;
        topics.push(topic);
    }
    let mut response = FetchResponse::default();
    response.throttle_time_ms = 3;
    if version >= 7 {
        response.error_code = 0;
        response.session_id = 77;
    }
    response.responses = topics;
    if version >= 16 {
        let mut endpoint = NodeEndpoint::default();
        endpoint.node_id = BrokerId(2);
        endpoint.host = StrBytes::from_static_str("broker-2");
        endpoint.port = 9092;
        response.node_endpoints = vec![endpoint];
    }
    response
}

fn contiguous(version: i16, response: &FetchResponse) -> Bytes {
    encode_response(&header(version), &Response::Fetch(response.clone())).unwrap()
}

fn vectored(version: i16, response: &FetchResponse) -> ResponseFrame {
    encode_response_frame(&header(version), Response::Fetch(response.clone())).unwrap()
}

#[test]
fn chunks_back_to_back_are_the_contiguous_encoding_at_every_version() {
    // 40 KiB (a 3-byte compact length) and 2 MiB + 3 (a 4-byte one).
    let large = [records(40 * 1024, 1), records((2 << 20) + 3, 2)];
    let versions = FetchResponse::VERSIONS;
    assert!(
        versions.min <= 4 && versions.max >= 12,
        "the broker's Fetch versions"
    );
    for version in versions.min..=versions.max {
        let response = sample(version, &large);
        let expected = contiguous(version, &response);
        let frame = vectored(version, &response);
        assert_eq!(frame.len_bytes(), expected.len(), "v{version}");
        assert_eq!(frame.to_contiguous(), expected, "v{version}");
        let chunks = frame.chunks();
        // header, record set, header, record set, trailing fields (when there are any).
        assert!(chunks.len() >= 4, "v{version}: {} chunks", chunks.len());
        assert!(chunks.iter().all(|c| !c.is_empty()), "v{version}: an empty chunk");
        assert!(
            chunks[0].len() >= 8,
            "v{version}: size and correlation id in the first chunk"
        );
        for set in &large {
            assert!(
                chunks
                    .iter()
                    .any(|c| c.as_ptr() == set.as_ptr() && c.len() == set.len()),
                "v{version}: a large record set was copied"
            );
        }
        let (id, decoded): (i32, FetchResponse) = client_decode_response(&expected, ApiKey::Fetch, version);
        assert_eq!(id, header(version).correlation_id);
        assert_eq!(decoded, response, "v{version}: a client reads what was sent");
    }
}

#[test]
fn small_record_sets_stay_in_one_chunk() {
    let below = [records(SPLICE_MIN_BYTES - 1, 4), records(10, 5)];
    for version in [4, 11, 12] {
        let response = sample(version, &below);
        let frame = vectored(version, &response);
        assert_eq!(frame.chunks().len(), 1, "v{version}");
        assert_eq!(
            frame.to_contiguous(),
            contiguous(version, &response),
            "v{version}"
        );
    }
    // Exactly at the threshold, the record set is spliced.
    let at = [records(SPLICE_MIN_BYTES, 6), records(10, 7)];
    for version in [4, 12] {
        let response = sample(version, &at);
        let frame = vectored(version, &response);
        assert!(frame.chunks().len() > 1, "v{version}");
        assert_eq!(
            frame.to_contiguous(),
            contiguous(version, &response),
            "v{version}"
        );
    }
}

#[test]
fn other_responses_and_errors_are_unchanged() {
    let header = header(12);
    let response = Response::ApiVersions(Default::default());
    let mut api_versions = header.clone();
    api_versions.api_key = ApiKey::ApiVersions;
    api_versions.api_version = 3;
    let frame = encode_response_frame(&api_versions, response.clone()).unwrap();
    assert_eq!(
        frame.chunks(),
        [encode_response(&api_versions, &response).unwrap()]
    );
    // A Fetch response answering another API is refused as by the contiguous encoder.
    let mut produce = header;
    produce.api_key = ApiKey::Produce;
    let large = [records(SPLICE_MIN_BYTES, 1), records(SPLICE_MIN_BYTES, 2)];
    assert!(encode_response_frame(&produce, Response::Fetch(sample(12, &large))).is_err());
    // A field the version cannot carry is refused too (preferred replica before v11).
    let mut bad = sample(10, &large);
    bad.responses[0].partitions[0].preferred_read_replica = BrokerId(3);
    assert!(encode_response_frame(&self::header(10), Response::Fetch(bad)).is_err());
}
