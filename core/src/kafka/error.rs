//! Kafka error codes, and the errors of the wire layer itself.
//!
//! [`ErrorCode`] is the protocol's `int16` error code as a type, with named constants for
//! the codes the broker returns. The log's raw constants (`log::batch::kafka_error`) are
//! the same numbers; [`ErrorCode::from`] and `i16::from` convert both ways.
//!
//! [`RequestError`] is everything that can go wrong turning a frame into a request, with
//! what the connection should do about it ([`RequestError::reply`]).

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

use crate::log::batch::kafka_error;

/// A Kafka protocol error code (`0` is success).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ErrorCode(pub i16);

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $code:expr;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($code);)*

            /// Every named code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The protocol's name for this code (`NOT_LEADER_OR_FOLLOWER`), or `None` for
            /// a code without a constant here.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(ErrorCode::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// An unexpected server error.
    UNKNOWN_SERVER_ERROR = -1;
    /// Success.
    NONE = 0;
    /// The requested offset is outside the partition's log.
    OFFSET_OUT_OF_RANGE = kafka_error::OFFSET_OUT_OF_RANGE;
    /// A message failed its CRC or framing check.
    CORRUPT_MESSAGE = kafka_error::CORRUPT_MESSAGE;
    /// The topic or partition does not exist on this broker.
    UNKNOWN_TOPIC_OR_PARTITION = 3;
    /// The fetch size is invalid.
    INVALID_FETCH_SIZE = 4;
    /// The partition has no leader right now (election in progress).
    LEADER_NOT_AVAILABLE = 5;
    /// This broker is not the leader (or a follower) for the partition.
    NOT_LEADER_OR_FOLLOWER = 6;
    /// The request timed out.
    REQUEST_TIMED_OUT = 7;
    /// The broker is not available.
    BROKER_NOT_AVAILABLE = 8;
    /// The replica is not available.
    REPLICA_NOT_AVAILABLE = 9;
    /// A batch is larger than the topic allows.
    MESSAGE_TOO_LARGE = kafka_error::MESSAGE_TOO_LARGE;
    /// Offset commit metadata is larger than allowed.
    OFFSET_METADATA_TOO_LARGE = 12;
    /// The server disconnected before a response was received.
    NETWORK_EXCEPTION = 13;
    /// The coordinator is loading.
    COORDINATOR_LOAD_IN_PROGRESS = 14;
    /// The coordinator is not available.
    COORDINATOR_NOT_AVAILABLE = 15;
    /// This broker is not the coordinator.
    NOT_COORDINATOR = 16;
    /// The topic name is invalid, or the request targets an internal topic illegally.
    INVALID_TOPIC_EXCEPTION = 17;
    /// A produce request's record set is larger than the segment size.
    RECORD_LIST_TOO_LARGE = 18;
    /// Fewer in-sync replicas than required.
    NOT_ENOUGH_REPLICAS = 19;
    /// Written, but to fewer in-sync replicas than required.
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20;
    /// `acks` is not -1, 0 or 1.
    INVALID_REQUIRED_ACKS = 21;
    /// The generation is not the group's current one.
    ILLEGAL_GENERATION = 22;
    /// The member's protocols do not match the group's.
    INCONSISTENT_GROUP_PROTOCOL = 23;
    /// The group id is invalid (empty).
    INVALID_GROUP_ID = 24;
    /// The member id is not in the group.
    UNKNOWN_MEMBER_ID = 25;
    /// The session timeout is outside the broker's range.
    INVALID_SESSION_TIMEOUT = 26;
    /// The group is rebalancing: rejoin.
    REBALANCE_IN_PROGRESS = 27;
    /// Not authorized for the topic.
    TOPIC_AUTHORIZATION_FAILED = 29;
    /// Not authorized for the cluster.
    CLUSTER_AUTHORIZATION_FAILED = 31;
    /// A record's timestamp is out of the acceptable range.
    INVALID_TIMESTAMP = 32;
    /// The API version is not supported.
    UNSUPPORTED_VERSION = 35;
    /// The topic already exists.
    TOPIC_ALREADY_EXISTS = 36;
    /// The number of partitions is invalid.
    INVALID_PARTITIONS = 37;
    /// The replication factor is invalid.
    INVALID_REPLICATION_FACTOR = 38;
    /// The replica assignment is invalid.
    INVALID_REPLICA_ASSIGNMENT = 39;
    /// A configuration is invalid.
    INVALID_CONFIG = 40;
    /// This broker is not the controller.
    NOT_CONTROLLER = 41;
    /// The request is malformed or inconsistent.
    INVALID_REQUEST = 42;
    /// The message format version does not support the request.
    UNSUPPORTED_FOR_MESSAGE_FORMAT = kafka_error::UNSUPPORTED_FOR_MESSAGE_FORMAT;
    /// The request violates a policy.
    POLICY_VIOLATION = 44;
    /// A producer sequence number is out of order.
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45;
    /// A producer sequence number was already written.
    DUPLICATE_SEQUENCE_NUMBER = 46;
    /// The producer epoch is stale.
    INVALID_PRODUCER_EPOCH = 47;
    /// A disk error on the broker.
    KAFKA_STORAGE_ERROR = kafka_error::KAFKA_STORAGE_ERROR;
    /// The producer id is not known.
    UNKNOWN_PRODUCER_ID = 59;
    /// The group still has members.
    NON_EMPTY_GROUP = 68;
    /// The group does not exist.
    GROUP_ID_NOT_FOUND = 69;
    /// The fetch session id was not found.
    FETCH_SESSION_ID_NOT_FOUND = 70;
    /// The fetch session epoch is invalid.
    INVALID_FETCH_SESSION_EPOCH = 71;
    /// The client's leader epoch is older than the broker's.
    FENCED_LEADER_EPOCH = 74;
    /// The client's leader epoch is newer than the broker's.
    UNKNOWN_LEADER_EPOCH = 75;
    /// The leader's high watermark has not caught up yet.
    OFFSET_NOT_AVAILABLE = 78;
    /// Join again with the member id the coordinator gave (KIP-394).
    MEMBER_ID_REQUIRED = 79;
    /// The group has as many members as it may.
    GROUP_MAX_SIZE_REACHED = 81;
    /// Another member took this static instance id.
    FENCED_INSTANCE_ID = 82;
    /// A record in the batch is invalid.
    INVALID_RECORD = kafka_error::INVALID_RECORD;
    /// The group's members subscribe to the topic.
    GROUP_SUBSCRIBED_TO_TOPIC = 86;
    /// An offset commit for the partition is in flight.
    UNSTABLE_OFFSET_COMMIT = 88;
    /// The request exceeds a throttling quota.
    THROTTLING_QUOTA_EXCEEDED = 89;
    /// The topic id is not known.
    UNKNOWN_TOPIC_ID = 100;
    /// The member epoch is fenced: rejoin with epoch 0.
    FENCED_MEMBER_EPOCH = 110;
    /// The static instance id is still owned by a member.
    UNRELEASED_INSTANCE_ID = 111;
    /// The server assignor asked for is not known.
    UNSUPPORTED_ASSIGNOR = 112;
    /// The member epoch is stale.
    STALE_MEMBER_EPOCH = 113;
}

impl ErrorCode {
    /// Whether the code means success.
    pub fn is_none(self) -> bool {
        self == ErrorCode::NONE
    }

    /// Whether a client may retry the request unchanged (per Kafka's error table).
    pub fn is_retriable(self) -> bool {
        ResponseError::try_from_code(self.0).is_some_and(|e| e.is_retriable())
    }
}

impl From<i16> for ErrorCode {
    fn from(code: i16) -> Self {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for i16 {
    fn from(code: ErrorCode) -> Self {
        code.0
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "error code {}", self.0),
        }
    }
}

/// A frame that could not be turned into a supported request.
///
/// What the connection does about it is [`RequestError::reply`]: either a frame to send
/// (and carry on) or `None` (close the connection). Closing is what Kafka does for every
/// request it cannot parse or does not serve, because without a parsed body there is no
/// response the client could match to its request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Fewer than the 8 bytes every request header starts with.
    /// Reply: none, close the connection.
    #[error("request header truncated: frame of {size_bytes} bytes, need at least 8")]
    TruncatedHeader {
        /// Frame length.
        size_bytes: usize,
    },
    /// An api key that `kafka-protocol` does not know. Reply: none, close (as Kafka does).
    #[error("unknown api key {api_key} (v{api_version}, correlation id {correlation_id})")]
    UnknownApiKey {
        /// The raw api key.
        api_key: i16,
        /// The raw version.
        api_version: i16,
        /// The correlation id.
        correlation_id: i32,
    },
    /// A Kafka API Oxbow does not serve (absent from ApiVersions, or planned).
    /// Reply: none, close (as Kafka does for APIs it does not expose).
    #[error("api {api_key:?} is not supported (v{api_version}, correlation id {correlation_id})")]
    UnsupportedApi {
        /// The API.
        api_key: ApiKey,
        /// The raw version.
        api_version: i16,
        /// The correlation id.
        correlation_id: i32,
    },
    /// A supported API at a version outside [`crate::kafka::versions::API_TABLE`]'s range.
    ///
    /// Reply: for ApiVersions, the v0-format UNSUPPORTED_VERSION answer with our versions
    /// (KIP-511: the client retries with a version we have). For other APIs, when the body
    /// could still be decoded (`kafka-protocol` knows the version), an error response at
    /// the client's version with UNSUPPORTED_VERSION for every topic/partition/resource;
    /// otherwise none, close.
    #[error("{api_key:?} v{api_version} is not supported (supported v{min_version}..=v{max_version})")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The requested version.
        api_version: i16,
        /// The correlation id.
        correlation_id: i32,
        /// Our lowest version of this API.
        min_version: i16,
        /// Our highest version of this API.
        max_version: i16,
        /// The answer to send, computed while decoding (see above).
        reply: Option<Bytes>,
    },
    /// The header or body does not parse at the stated version (truncated, garbage,
    /// impossible lengths, invalid UTF-8, …). Reply: none, close — Kafka closes too, and
    /// the broker goes on serving every other connection.
    #[error("malformed {api_key:?} v{api_version} request (correlation id {correlation_id}): {reason}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version.
        api_version: i16,
        /// The correlation id.
        correlation_id: i32,
        /// What is wrong.
        reason: String,
    },
}

impl RequestError {
    /// The frame to send to the client (size prefix included) before reading the next
    /// request, or `None`: close the connection.
    pub fn reply(&self) -> Option<Bytes> {
        match self {
            RequestError::UnsupportedVersion { reply, .. } => reply.clone(),
            _ => None,
        }
    }

    /// The request's correlation id, when the header got that far.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            RequestError::TruncatedHeader { .. } => None,
            RequestError::UnknownApiKey { correlation_id, .. }
            | RequestError::UnsupportedApi { correlation_id, .. }
            | RequestError::UnsupportedVersion { correlation_id, .. }
            | RequestError::Malformed { correlation_id, .. } => Some(*correlation_id),
        }
    }
}

/// A response that could not be encoded. These are broker bugs, not client faults: the
/// broker should log it and close the connection (the client would otherwise wait).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The response is for a different API than the request it answers.
    #[error("response for {response:?} does not answer a {request:?} request")]
    ApiMismatch {
        /// The request's API.
        request: ApiKey,
        /// The response's API.
        response: ApiKey,
    },
    /// `kafka-protocol` refused the message at this version (a field set that the version
    /// cannot carry, an over-long string, an unknown version).
    #[error("cannot encode {api_key:?} v{api_version} response: {reason}")]
    Protocol {
        /// The API.
        api_key: ApiKey,
        /// The version.
        api_version: i16,
        /// What `kafka-protocol` said.
        reason: String,
    },
    /// The encoded response does not fit a frame's `int32` size.
    #[error("response of {size_bytes} bytes does not fit a Kafka frame")]
    TooLarge {
        /// Encoded size.
        size_bytes: usize,
    },
}
