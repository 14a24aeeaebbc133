//! Hostile input never panics and never allocates unboundedly: arbitrary bytes,
//! truncations and bit flips of valid requests, and length fields overwritten with
//! absurd values. Where the bounds check accepts a body, `kafka-protocol` reads exactly
//! the bytes it walked (the decoder reports a mismatch as "bounds check walked", which
//! must never appear).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kafka_support;

use bytes::Bytes;
use kafka_support::*;
use oxbow_core::kafka::protocol::messages::ApiKey;
use oxbow_core::kafka::schema::check_request_body;
use oxbow_core::kafka::{decode_request, supported_versions, RequestError};
use proptest::prelude::*;

/// A valid request payload (no size prefix) for a supported API at any version
/// `kafka-protocol` decodes, so unsupported-version paths are covered too.
fn valid_payload() -> impl Strategy<Value = (ApiKey, i16, Vec<u8>)> {
    let apis: Vec<(ApiKey, i16, i16)> = decodable()
        .into_iter()
        .filter(|&(key, _, _)| supported_versions(key).is_some())
        .collect();
    proptest::sample::select(apis).prop_flat_map(|(key, min, max)| {
        (min..=max).prop_map(move |version| {
            let frame = client_frame(&sample_request(key, version), version, 77);
            (key, version, frame[4..].to_vec())
        })
    })
}

/// A valid body (no header) of an API that has a schema, at any version
/// `kafka-protocol` decodes (once only the planned APIs; every schema is walked the same
/// way).
fn schema_body() -> impl Strategy<Value = (ApiKey, i16, Vec<u8>)> {
    proptest::sample::select(decodable()).prop_flat_map(|(key, min, max)| {
        (min..=max).prop_map(move |version| {
            let body = encode_body(&sample_request(key, version), version);
            (key, version, body.to_vec())
        })
    })
}

/// What the decoder does for a planned API once it is supported: the bounds check, then
/// `kafka-protocol` only if it passed, which must read exactly the bytes walked.
fn check_planned(key: ApiKey, version: i16, body: Vec<u8>) -> Result<(), TestCaseError> {
    if let Ok(walked) = check_request_body(key, version, &body) {
        let mut rest = Bytes::from(body);
        let before = rest.len();
        if protocol_decode(key, &mut rest, version).is_ok() {
            prop_assert_eq!(
                before - rest.len(),
                walked,
                "{:?} v{}: schema and decoder disagree",
                key,
                version
            );
        }
    }
    Ok(())
}

/// Decodes and checks the invariants every outcome must satisfy.
fn check(payload: Vec<u8>) -> Result<(), TestCaseError> {
    match decode_request(Bytes::from(payload)) {
        Ok(decoded) => prop_assert_eq!(decoded.request.api_key(), decoded.header.api_key),
        Err(RequestError::Malformed { reason, .. }) => {
            prop_assert!(
                !reason.contains("bounds check walked"),
                "schema and decoder disagree: {}",
                reason
            )
        }
        Err(error) => {
            // Replies, when there are any, are well-framed.
            if let Some(reply) = error.reply() {
                let size = i32::from_be_bytes(reply[..4].try_into().unwrap());
                prop_assert_eq!(size as usize, reply.len() - 4);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(payload)?;
    }

    /// Arbitrary bodies behind a valid header of every supported API and version.
    #[test]
    fn arbitrary_bodies_never_panic(
        (key, version, _) in valid_payload(),
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut payload = Vec::new();
        payload.extend_from_slice(&(key as i16).to_be_bytes());
        payload.extend_from_slice(&version.to_be_bytes());
        payload.extend_from_slice(&1i32.to_be_bytes());
        payload.extend_from_slice(&(-1i16).to_be_bytes());
        payload.extend_from_slice(&body);
        check(payload)?;
    }

    /// Every proper prefix of a valid request is refused (there is nothing optional at
    /// the end of a body), and never panics.
    #[test]
    fn truncated_requests_are_refused((key, version, payload) in valid_payload(), cut in any::<prop::sample::Index>()) {
        let len = cut.index(payload.len());
        let outcome = decode_request(Bytes::copy_from_slice(&payload[..len]));
        let supported = supported_versions(key).is_some_and(|(min, max)| (min..=max).contains(&version));
        if supported {
            prop_assert!(outcome.is_err(), "{:?} v{} cut at {}/{} decoded", key, version, len, payload.len());
        }
        check(payload[..len].to_vec())?;
    }

    #[test]
    fn bit_flips_never_panic(
        (_, _, payload) in valid_payload(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut payload = payload;
        for (at, bit) in flips {
            let i = at.index(payload.len());
            payload[i] ^= 1 << bit;
        }
        check(payload)?;
    }

    /// Any 4 or 5 bytes overwritten with the largest int32 or varint — the shape of an
    /// absurd array, string or bytes length — is refused without a huge allocation.
    #[test]
    fn absurd_lengths_anywhere_never_panic(
        (_, _, payload) in valid_payload(),
        at in any::<prop::sample::Index>(),
        which in 0usize..4,
    ) {
        let patterns: [&[u8]; 4] = [
            &[0x7f, 0xff, 0xff, 0xff],
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x80, 0x80, 0x80, 0x80, 0x08],
            &[0x40, 0x00, 0x00, 0x00],
        ];
        let pattern = patterns[which];
        let mut payload = payload;
        let start = at.index(payload.len());
        for (i, byte) in pattern.iter().enumerate() {
            if let Some(slot) = payload.get_mut(start + i) {
                *slot = *byte;
            }
        }
        check(payload)?;
    }

    /// Every schema against truncations, bit flips and absurd lengths.
    #[test]
    fn schemas_walk_what_kafka_protocol_reads(
        (key, version, body) in schema_body(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..3),
        at in any::<prop::sample::Index>(),
        absurd in any::<bool>(),
    ) {
        let len = cut.index(body.len() + 1);
        if len < body.len() {
            prop_assert!(check_request_body(key, version, &body[..len]).is_err(), "{:?} v{} cut at {}", key, version, len);
        }
        check_planned(key, version, body[..len].to_vec())?;
        let mut body = body;
        for (at, bit) in flips {
            if !body.is_empty() {
                let i = at.index(body.len());
                body[i] ^= 1 << bit;
            }
        }
        if absurd && !body.is_empty() {
            let start = at.index(body.len());
            for (i, byte) in [0xff, 0xff, 0xff, 0xff, 0x0f].iter().enumerate() {
                if let Some(slot) = body.get_mut(start + i) {
                    *slot = *byte;
                }
            }
        }
        check_planned(key, version, body)?;
    }
}
