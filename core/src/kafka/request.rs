//! Request decoding: one frame's payload into a [`RequestHeader`] and a typed [`Request`].
//!
//! Order of checks (each failure is a [`RequestError`] saying whether to answer or close):
//! 1. the fixed 8 header bytes (api key, version, correlation id) are present;
//! 2. the api key is known, and supported per [`crate::kafka::versions::API_TABLE`];
//! 3. the version is in our range — else UNSUPPORTED_VERSION (ApiVersions: the KIP-511
//!    v0-format fallback);
//! 4. the rest of the header parses at the header version the api key and version imply
//!    (v1, or v2 with tagged fields for flexible versions);
//! 5. the body passes the bounds check ([`crate::kafka::schema`]) and then decodes with
//!    `kafka-protocol`, consuming exactly what the bounds check walked.
//!
//! Trailing bytes after the body are ignored, as Kafka does.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{self, ApiKey};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};

use super::error::{ErrorCode, RequestError};
use super::response::{encode_response, error_response, Response};
use super::schema::check_request_body;
use super::versions::{api_versions_response, supported_versions};

/// Bytes every request header starts with: api key, api version, correlation id.
pub const FIXED_HEADER_BYTES: usize = 8;

/// A decoded request header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// The API.
    pub api_key: ApiKey,
    /// The API version the body (and the response) use.
    pub api_version: i16,
    /// Echoed in the response so the client can match it.
    pub correlation_id: i32,
    /// The client's self-chosen id, if sent.
    pub client_id: Option<StrBytes>,
}

/// A request ready for the broker: its header and its typed body.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedRequest {
    /// The header.
    pub header: RequestHeader,
    /// The body.
    pub request: Request,
}

impl DecodedRequest {
    /// The response that answers this request with `code` everywhere it can carry one.
    pub fn error_response(&self, code: ErrorCode) -> Response {
        error_response(&self.request, self.header.api_version, code)
    }

    /// Whether the client waits for a response. Only a Produce with `acks = 0` does not:
    /// Kafka sends nothing back for it, and signals a failure by closing the connection.
    pub fn expects_response(&self) -> bool {
        !matches!(&self.request, Request::Produce(produce) if produce.acks == 0)
    }
}

macro_rules! define_request {
    ($($variant:ident($request:ident, $response:ident),)*) => {
        /// A request of a supported API, with `kafka-protocol`'s body type.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum Request {
            $(
                #[doc = concat!("A ", stringify!($variant), " request.")]
                $variant(messages::$request),
            )*
        }

        impl Request {
            /// The request's API.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Request::$variant(_) => ApiKey::$variant,)*
                }
            }
        }

        /// The versions `kafka-protocol` decodes requests of API `key` at; `None` if the API
        /// has no variant here. Usually `key.valid_versions()`, but the request type can stop
        /// earlier (OffsetCommit and OffsetFetch: v10 is listed, the request types end at v9).
        pub fn decodable_versions(key: ApiKey) -> Option<(i16, i16)> {
            let range = match key {
                $(ApiKey::$variant => <messages::$request as Message>::VERSIONS,)*
                _ => return None,
            };
            Some((range.min, range.max))
        }

        /// Decodes a body of API `key`; `None` if the API has no variant here.
        fn decode_body(key: ApiKey, body: &mut Bytes, version: i16) -> Option<Result<Request, String>> {
            let decoded = match key {
                $(ApiKey::$variant => messages::$request::decode(body, version).map(Request::$variant),)*
                _ => return None,
            };
            Some(decoded.map_err(|error| error.to_string()))
        }
    };
}

with_supported_apis!(define_request);

/// Decodes one frame's payload (without its size prefix) into a request.
pub fn decode_request(frame: Bytes) -> Result<DecodedRequest, RequestError> {
    let Some(fixed) = frame.get(..FIXED_HEADER_BYTES) else {
        return Err(RequestError::TruncatedHeader {
            size_bytes: frame.len(),
        });
    };
    let raw_key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let api_version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        return Err(RequestError::UnknownApiKey {
            api_key: raw_key,
            api_version,
            correlation_id,
        });
    };
    let Some((min_version, max_version)) = supported_versions(api_key) else {
        return Err(RequestError::UnsupportedApi {
            api_key,
            api_version,
            correlation_id,
        });
    };
    if !(min_version..=max_version).contains(&api_version) {
        let reply = unsupported_version_reply(api_key, api_version, correlation_id, frame);
        return Err(RequestError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
            min_version,
            max_version,
            reply,
        });
    }
    decode_known(api_key, api_version, correlation_id, frame)
}

/// Header and body of a request whose api key and version `kafka-protocol` implements.
fn decode_known(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    mut frame: Bytes,
) -> Result<DecodedRequest, RequestError> {
    let malformed = |reason: String| RequestError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let header_version = api_key.request_header_version(api_version);
    let header = messages::RequestHeader::decode(&mut frame, header_version)
        .map_err(|error| malformed(format!("header: {error}")))?;
    let walked_bytes = check_request_body(api_key, api_version, &frame)
        .map_err(|error| malformed(format!("body: {error}")))?;
    let before_bytes = frame.remaining();
    let request = decode_body(api_key, &mut frame, api_version)
        .ok_or_else(|| malformed("no decoder for this api".to_string()))?
        .map_err(|error| malformed(format!("body: {error}")))?;
    let decoded_bytes = before_bytes - frame.remaining();
    if decoded_bytes != walked_bytes {
        return Err(malformed(format!(
            "body: decoded {decoded_bytes} bytes but the bounds check walked {walked_bytes}"
        )));
    }
    let header = RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id,
    };
    Ok(DecodedRequest { header, request })
}

/// The frame answering a request at a version we do not support, if there is one.
fn unsupported_version_reply(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    frame: Bytes,
) -> Option<Bytes> {
    if api_key == ApiKey::ApiVersions {
        return Some(api_versions_fallback(correlation_id));
    }
    let (known_min, known_max) = decodable_versions(api_key)?;
    if !(known_min..=known_max).contains(&api_version) {
        return None;
    }
    let decoded = decode_known(api_key, api_version, correlation_id, frame).ok()?;
    encode_response(
        &decoded.header,
        &decoded.error_response(ErrorCode::UNSUPPORTED_VERSION),
    )
    .ok()
}

/// The KIP-511 answer to an ApiVersions request at a version we lack: a v0-format
/// response (header v0, error UNSUPPORTED_VERSION, our supported versions), which any
/// client can parse whatever version it sent, and from which it picks a version to retry.
pub fn api_versions_fallback(correlation_id: i32) -> Bytes {
    let header = RequestHeader {
        api_key: ApiKey::ApiVersions,
        api_version: 0,
        correlation_id,
        client_id: None,
    };
    let body = api_versions_response().with_error_code(ErrorCode::UNSUPPORTED_VERSION.0);
    match encode_response(&header, &Response::ApiVersions(body)) {
        Ok(bytes) => bytes,
        // The body is ours and valid at v0; failing here is a bug in this module.
        Err(error) => panic!("encoding the ApiVersions v0 fallback failed: {error}"),
    }
}
