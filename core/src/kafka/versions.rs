//! The one table of Kafka APIs and versions Oxbow speaks.
//!
//! [`API_TABLE`] is the single source of truth: it answers ApiVersions and it decides
//! which requests the decoder accepts. An API is either [`ApiStatus::Supported`] with an
//! inclusive version range, or [`ApiStatus::Planned`] — listed so the roadmap is visible,
//! absent from ApiVersions, and refused like an unknown API until its issue lands.
//!
//! Ranges are chosen so librdkafka 2.x, kafka-python and the Java client negotiate a
//! version (a client picks the highest version both sides support), staying at or below
//! the versions that switch a request from topic names to topic ids (Fetch v13,
//! Produce v13, DeleteTopics v6, OffsetCommit and OffsetFetch v10), so the broker can
//! work with names only. Transaction protocol v2 (KIP-890 part 2) is served end to
//! end — Produce v12, EndTxn v5, TxnOffsetCommit v5, AddPartitionsToTxn v4-5 — and
//! ApiVersions v3+ finalizes the `transaction.version` feature at 2, which is what
//! tells a client to use it. Minimums are the oldest versions `kafka-protocol` still
//! implements (Produce v3 and Fetch v4 are the first with record batch v2, the only
//! format the log stores).
//!
//! To support a planned API: flip its row to `Supported`, after adding its row to
//! `with_supported_apis!` in `mod.rs`, its schema in `schema.rs` and its error-response
//! builder in `response.rs` (the transaction APIs already have all three).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// Whether and how Oxbow supports an API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiStatus {
    /// Accepted at versions `min..=max`, advertised in ApiVersions.
    Supported {
        /// Lowest accepted version.
        min: i16,
        /// Highest accepted version.
        max: i16,
    },
    /// Not yet implemented; `area` names the future module (`group`, `txn`, …).
    Planned {
        /// The part of Oxbow that will serve it.
        area: &'static str,
    },
}

/// One row of the API table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiRow {
    /// The API.
    pub key: ApiKey,
    /// Its status.
    pub status: ApiStatus,
}

const fn supported(key: ApiKey, min: i16, max: i16) -> ApiRow {
    ApiRow {
        key,
        status: ApiStatus::Supported { min, max },
    }
}

const fn planned(key: ApiKey, area: &'static str) -> ApiRow {
    ApiRow {
        key,
        status: ApiStatus::Planned { area },
    }
}

/// Every API Oxbow knows about, in api-key order. APIs absent from this table (and
/// unknown keys) are refused by closing the connection, as Kafka does.
pub const API_TABLE: &[ApiRow] = &[
    supported(ApiKey::Produce, 3, 12),
    supported(ApiKey::Fetch, 4, 12),
    supported(ApiKey::ListOffsets, 1, 7),
    supported(ApiKey::Metadata, 0, 12),
    supported(ApiKey::OffsetCommit, 2, 9),
    supported(ApiKey::OffsetFetch, 1, 9),
    supported(ApiKey::FindCoordinator, 0, 6),
    supported(ApiKey::JoinGroup, 0, 9),
    supported(ApiKey::Heartbeat, 0, 4),
    supported(ApiKey::LeaveGroup, 0, 5),
    supported(ApiKey::SyncGroup, 0, 5),
    supported(ApiKey::DescribeGroups, 0, 6),
    supported(ApiKey::ListGroups, 0, 5),
    planned(ApiKey::SaslHandshake, "security"),
    supported(ApiKey::ApiVersions, 0, 4),
    supported(ApiKey::CreateTopics, 2, 7),
    supported(ApiKey::DeleteTopics, 1, 5),
    supported(ApiKey::DeleteRecords, 0, 2),
    supported(ApiKey::InitProducerId, 0, 5),
    supported(ApiKey::OffsetForLeaderEpoch, 2, 4),
    supported(ApiKey::AddPartitionsToTxn, 0, 5),
    supported(ApiKey::AddOffsetsToTxn, 0, 4),
    supported(ApiKey::EndTxn, 0, 5),
    supported(ApiKey::WriteTxnMarkers, 1, 1),
    supported(ApiKey::TxnOffsetCommit, 0, 5),
    supported(ApiKey::DescribeConfigs, 1, 4),
    supported(ApiKey::AlterConfigs, 0, 2),
    planned(ApiKey::SaslAuthenticate, "security"),
    supported(ApiKey::CreatePartitions, 0, 3),
    supported(ApiKey::DeleteGroups, 0, 2),
    supported(ApiKey::IncrementalAlterConfigs, 0, 1),
    supported(ApiKey::OffsetDelete, 0, 0),
    supported(ApiKey::DescribeCluster, 0, 1),
    supported(ApiKey::DescribeProducers, 0, 0),
    supported(ApiKey::DescribeTransactions, 0, 0),
    supported(ApiKey::ListTransactions, 0, 0),
    supported(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    supported(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The inclusive version range Oxbow accepts for `key`, or `None` when the API is not
/// supported (planned or absent).
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    API_TABLE
        .iter()
        .find(|row| row.key == key)
        .and_then(|row| match row.status {
            ApiStatus::Supported { min, max } => Some((min, max)),
            ApiStatus::Planned { .. } => None,
        })
}

/// The rows of [`API_TABLE`] that are supported, as ApiVersions entries, in key order.
pub fn supported_api_versions() -> Vec<ApiVersion> {
    API_TABLE
        .iter()
        .filter_map(|row| match row.status {
            ApiStatus::Supported { min, max } => Some(
                ApiVersion::default()
                    .with_api_key(row.key as i16)
                    .with_min_version(min)
                    .with_max_version(max),
            ),
            ApiStatus::Planned { .. } => None,
        })
        .collect()
}

/// The `transaction.version` feature level Oxbow serves (2: KIP-890 part 2).
pub const TRANSACTION_VERSION: i16 = 2;

/// The ApiVersions answer to a valid request: no error, every supported API, and
/// (v3+, tagged) the features: `transaction.version` supported 0-2 and finalized at 2.
pub fn api_versions_response() -> ApiVersionsResponse {
    use kafka_protocol::messages::api_versions_response::{FinalizedFeatureKey, SupportedFeatureKey};
    use kafka_protocol::protocol::StrBytes;
    let name = StrBytes::from_static_str("transaction.version");
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(supported_api_versions())
        .with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(name.clone())
            .with_min_version(0)
            .with_max_version(TRANSACTION_VERSION)])
        .with_finalized_features_epoch(0)
        .with_finalized_features(vec![FinalizedFeatureKey::default()
            .with_name(name)
            .with_min_version_level(TRANSACTION_VERSION)
            .with_max_version_level(TRANSACTION_VERSION)])
}
