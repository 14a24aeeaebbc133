//! What happens to requests Oxbow cannot serve: unknown and unsupported APIs, versions we
//! lack (with the KIP-511 ApiVersions fallback), malformed headers and bodies, and
//! impossible lengths. Plus the version table and the error codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kafka_support;

use bytes::{BufMut, BytesMut};
use kafka_support::*;
use oxbow_core::kafka::protocol::messages::{self, ApiKey};
use oxbow_core::kafka::protocol::protocol::{Encodable, StrBytes};
use oxbow_core::kafka::request::api_versions_fallback;
use oxbow_core::kafka::{decode_request, ApiStatus, ErrorCode, RequestError, API_TABLE};

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A payload of just a header (api key, version, correlation id, client id) + `body`.
fn payload(key: i16, version: i16, correlation_id: i32, body: &[u8]) -> bytes::Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(key);
    buf.put_i16(version);
    buf.put_i32(correlation_id);
    buf.put_i16(-1); // null client id
    buf.extend_from_slice(body);
    buf.freeze()
}

/// Parses an ApiVersions v0 response frame by hand, as librdkafka does when its
/// request version was refused: size, correlation id, error code, [key, min, max].
fn parse_v0(frame: &[u8]) -> (i32, i16, Vec<(i16, i16, i16)>) {
    let be16 = |at: usize| i16::from_be_bytes([frame[at], frame[at + 1]]);
    let be32 = |at: usize| i32::from_be_bytes(frame[at..at + 4].try_into().unwrap());
    assert_eq!(be32(0) as usize, frame.len() - 4, "size prefix");
    let correlation_id = be32(4);
    let error = be16(8);
    let count = be32(10) as usize;
    let entries = (0..count)
        .map(|i| (be16(14 + 6 * i), be16(16 + 6 * i), be16(18 + 6 * i)))
        .collect();
    assert_eq!(
        14 + 6 * count,
        frame.len(),
        "nothing after the array (v0 has no throttle time)"
    );
    (correlation_id, error, entries)
}

#[test]
fn api_versions_newer_than_ours_gets_the_v0_fallback() {
    // A flexible (header v2) ApiVersions v127 request, as a future client would send.
    let request = messages::ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("librdkafka"))
        .with_client_software_version(StrBytes::from_static_str("2.6.0"));
    let mut buf = BytesMut::new();
    messages::RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(4)
        .with_correlation_id(0x11223344)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")))
        .encode(&mut buf, 2)
        .unwrap();
    request.encode(&mut buf, 4).unwrap();
    buf[2..4].copy_from_slice(&127i16.to_be_bytes());
    let error = decode_request(buf.freeze()).unwrap_err();
    assert!(matches!(
        error,
        RequestError::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            api_version: 127,
            ..
        }
    ));
    let reply = error.reply().expect("ApiVersions is always answered");
    let (correlation_id, code, entries) = parse_v0(&reply);
    assert_eq!(correlation_id, 0x11223344);
    assert_eq!(code, ErrorCode::UNSUPPORTED_VERSION.0);
    assert!(
        entries.contains(&(ApiKey::ApiVersions as i16, 0, 4)),
        "the client retries with v4 at most"
    );
    assert_eq!(entries.len(), supported().len());
    assert_eq!(reply, api_versions_fallback(0x11223344));
    insta::assert_snapshot!("api_versions_v0_fallback", hex(&reply));
}

#[test]
fn the_fallback_also_answers_garbage_after_the_fixed_header() {
    // The body is never parsed: only the correlation id is needed.
    let error = decode_request(payload(ApiKey::ApiVersions as i16, 9, 77, b"\xff\xff\xff")).unwrap_err();
    let (correlation_id, code, _) = parse_v0(&error.reply().unwrap());
    assert_eq!((correlation_id, code), (77, 35));
}

#[test]
fn api_versions_at_every_supported_version_decodes_normally() {
    for version in 0..=4 {
        let frame = client_frame(&sample_request(ApiKey::ApiVersions, version), version, 1);
        assert!(broker_decode(&frame).is_ok(), "v{version}");
    }
}

#[test]
fn an_unsupported_version_of_another_api_is_answered_with_unsupported_version() {
    // Produce v13 (topic ids) is known to kafka-protocol but above our range.
    let request = sample_request(ApiKey::Produce, 13);
    let error = broker_decode(&client_frame(&request, 13, 42)).unwrap_err();
    assert!(matches!(
        error,
        RequestError::UnsupportedVersion {
            api_key: ApiKey::Produce,
            api_version: 13,
            min_version: 3,
            max_version: 12,
            ..
        }
    ));
    assert_eq!(error.correlation_id(), Some(42));
    let reply = error.reply().expect("decodable at v13, so answerable");
    let (id, response): (i32, messages::ProduceResponse) =
        client_decode_response(&reply, ApiKey::Produce, 13);
    assert_eq!(id, 42);
    assert_eq!(response.responses.len(), 2);
    for partition in response.responses.iter().flat_map(|t| &t.partition_responses) {
        assert_eq!(partition.error_code, ErrorCode::UNSUPPORTED_VERSION.0);
    }
    // Fetch v13 speaks topic ids: the answer mirrors them.
    let error = broker_decode(&client_frame(&sample_request(ApiKey::Fetch, 13), 13, 43)).unwrap_err();
    let (_, response): (i32, messages::FetchResponse) =
        client_decode_response(&error.reply().unwrap(), ApiKey::Fetch, 13);
    assert_eq!(response.error_code, 35);
}

#[test]
fn a_version_unknown_even_to_kafka_protocol_closes_the_connection() {
    // Produce v2 (message format v1) and a far-future Fetch.
    for (key, version) in [(ApiKey::Produce, 2), (ApiKey::Fetch, 200), (ApiKey::Metadata, -1)] {
        let error = decode_request(payload(key as i16, version, 5, b"")).unwrap_err();
        assert!(
            matches!(error, RequestError::UnsupportedVersion { .. }),
            "{key:?} v{version}"
        );
        assert_eq!(error.reply(), None, "{key:?} v{version}");
    }
}

#[test]
fn unknown_api_keys_close_the_connection() {
    for key in [-1i16, 999, i16::MAX] {
        let error = decode_request(payload(key, 0, 9, b"")).unwrap_err();
        assert!(
            matches!(error, RequestError::UnknownApiKey { api_key, correlation_id: 9, .. } if api_key == key)
        );
        assert_eq!(error.reply(), None);
    }
}

#[test]
fn planned_and_unlisted_apis_close_the_connection() {
    for key in [
        ApiKey::SaslAuthenticate,
        ApiKey::SaslHandshake,
        ApiKey::DescribeAcls,
        ApiKey::Vote,
    ] {
        let error = decode_request(payload(key as i16, 0, 3, b"")).unwrap_err();
        assert!(
            matches!(error, RequestError::UnsupportedApi { api_key, .. } if api_key == key),
            "{key:?}"
        );
        assert_eq!(error.reply(), None);
    }
}

#[test]
fn short_frames_are_truncated_headers() {
    for len in 0..8 {
        let error = decode_request(bytes::Bytes::from(vec![0u8; len])).unwrap_err();
        assert!(matches!(error, RequestError::TruncatedHeader { size_bytes } if size_bytes == len));
        assert_eq!(error.correlation_id(), None);
        assert_eq!(error.reply(), None);
    }
}

#[test]
fn malformed_headers_and_bodies_close_the_connection() {
    let cases: Vec<(&str, bytes::Bytes)> = vec![
        ("client id length -2", {
            let mut p = payload(ApiKey::Metadata as i16, 1, 1, b"");
            let mut v = p.to_vec();
            v[8..10].copy_from_slice(&(-2i16).to_be_bytes());
            p = v.into();
            p
        }),
        ("client id longer than the frame", {
            let mut v = payload(ApiKey::Metadata as i16, 1, 1, b"").to_vec();
            v[8..10].copy_from_slice(&100i16.to_be_bytes());
            v.into()
        }),
        ("client id not UTF-8", {
            let mut v = payload(ApiKey::Metadata as i16, 1, 1, b"").to_vec();
            v[8..10].copy_from_slice(&2i16.to_be_bytes());
            v.extend_from_slice(&[0xff, 0xfe]);
            v.extend_from_slice(&0i32.to_be_bytes());
            v.into()
        }),
        ("empty body", payload(ApiKey::Produce as i16, 3, 1, b"")),
        (
            "topic array of 2^31-1 in 10 bytes",
            payload(ApiKey::Metadata as i16, 1, 1, &i32::MAX.to_be_bytes()),
        ),
        (
            "negative array length",
            payload(ApiKey::Metadata as i16, 1, 1, &(-5i32).to_be_bytes()),
        ),
    ];
    for (name, frame) in cases {
        let error = decode_request(frame).unwrap_err();
        assert!(matches!(error, RequestError::Malformed { .. }), "{name}: {error}");
        assert_eq!(error.reply(), None, "{name}");
    }
}

#[test]
fn absurd_lengths_are_refused_before_anything_is_allocated() {
    // Each of these would make kafka-protocol reserve gigabytes (Vec::with_capacity of
    // the announced count) — an allocation failure aborts the process.
    let mut fetch_v12 = BytesMut::new();
    fetch_v12.put_i32(-1); // replica id
    fetch_v12.put_i32(500);
    fetch_v12.put_i32(1);
    fetch_v12.put_i32(1 << 20);
    fetch_v12.put_i8(0);
    fetch_v12.put_i32(0);
    fetch_v12.put_i32(-1);
    fetch_v12.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // compact array of 2^32-2 topics
    let mut produce_v3 = BytesMut::new();
    produce_v3.put_i16(-1); // transactional id
    produce_v3.put_i16(1);
    produce_v3.put_i32(1000);
    produce_v3.put_i32(1); // one topic
    produce_v3.put_i16(1);
    produce_v3.put_u8(b't');
    produce_v3.put_i32(i32::MAX); // 2^31-1 partitions
    let mut delete_topics_v1 = BytesMut::new();
    delete_topics_v1.put_i32(0x4000_0000);
    let cases = [
        (ApiKey::Fetch, 12i16, fetch_v12),
        (ApiKey::Produce, 3, produce_v3),
        (ApiKey::DeleteTopics, 1, delete_topics_v1),
    ];
    for (key, version, body) in cases {
        let mut header = BytesMut::new();
        messages::RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut header, key.request_header_version(version))
            .unwrap();
        header.extend_from_slice(&body);
        let error = decode_request(header.freeze()).unwrap_err();
        match &error {
            RequestError::Malformed { reason, .. } => {
                assert!(reason.contains("impossible length"), "{reason}")
            }
            other => panic!("{key:?}: {other}"),
        }
    }
}

#[test]
fn the_table_is_consistent_with_kafka_protocol() {
    let mut keys: Vec<i16> = API_TABLE.iter().map(|row| row.key as i16).collect();
    let sorted = {
        let mut k = keys.clone();
        k.sort();
        k
    };
    assert_eq!(keys, sorted, "rows in api-key order");
    keys.dedup();
    assert_eq!(keys.len(), API_TABLE.len(), "one row per api");
    for row in API_TABLE {
        if let ApiStatus::Supported { min, max } = row.status {
            let known = row.key.valid_versions();
            assert!(
                known.min <= min && min <= max && max <= known.max,
                "{:?}",
                row.key
            );
        }
    }
    let advertised: Vec<(i16, i16, i16)> = oxbow_core::kafka::api_versions_response()
        .api_keys
        .iter()
        .map(|v| (v.api_key, v.min_version, v.max_version))
        .collect();
    let expected: Vec<(i16, i16, i16)> = supported()
        .iter()
        .map(|&(k, min, max)| (k as i16, min, max))
        .collect();
    assert_eq!(advertised, expected);
    let table: Vec<String> = API_TABLE
        .iter()
        .map(|row| match row.status {
            ApiStatus::Supported { min, max } => {
                format!("{:>2} {:?} v{min}..=v{max}", row.key as i16, row.key)
            }
            ApiStatus::Planned { area } => format!("{:>2} {:?} planned ({area})", row.key as i16, row.key),
        })
        .collect();
    insta::assert_snapshot!("api_table", table.join("\n"));
}

#[test]
fn error_codes_match_kafka_protocol_and_the_log() {
    use oxbow_core::kafka::protocol::ResponseError;
    use oxbow_core::log::batch::kafka_error;
    for &code in ErrorCode::ALL {
        let name = code.name().unwrap();
        if code == ErrorCode::NONE {
            continue;
        }
        let theirs = ResponseError::try_from_code(code.0).unwrap_or_else(|| panic!("{name}"));
        let camel: String = name
            .split('_')
            .map(|w| w[..1].to_string() + &w[1..].to_lowercase())
            .collect();
        assert_eq!(
            format!("{theirs:?}").to_lowercase(),
            camel.to_lowercase(),
            "{name} = {}",
            code.0
        );
    }
    assert_eq!(
        ErrorCode::from(kafka_error::CORRUPT_MESSAGE),
        ErrorCode::CORRUPT_MESSAGE
    );
    assert_eq!(
        i16::from(ErrorCode::KAFKA_STORAGE_ERROR),
        kafka_error::KAFKA_STORAGE_ERROR
    );
    assert_eq!(
        ErrorCode::NOT_LEADER_OR_FOLLOWER.to_string(),
        "NOT_LEADER_OR_FOLLOWER (6)"
    );
    assert_eq!(ErrorCode(1234).to_string(), "error code 1234");
    assert!(ErrorCode::NOT_LEADER_OR_FOLLOWER.is_retriable());
    assert!(!ErrorCode::UNSUPPORTED_VERSION.is_retriable());
}
