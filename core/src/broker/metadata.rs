//! The node's topic metadata: which topics exist, their partition counts, revisions and
//! settings. On a single node shard 0 owns it, persists it, and tells the other shards;
//! the controller Raft group replaces this owner when the cluster lands, with the same
//! state and the same encoding as its snapshot.
//!
//! Encoding: magic `OXMD`, version u16, metadata version u64, next revision i64, (from
//! format version 2) next producer id i64, topic count u32, then per topic: name, topic id (16 bytes), partitions i32, revision i64,
//! config count u32 and (key, value) strings — strings as u16 length + UTF-8 — and a
//! trailing CRC32C. A damaged file is an error naming the problem, never a panic.

use crate::log::config::{ConfigError as LogConfigError, LogConfig};
use bytes::Bytes;
use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"OXMD";
const VERSION: u16 = 2;
/// Format version 1 lacked the next producer id (read as 0).
const VERSION_WITHOUT_PRODUCER_IDS: u16 = 1;

/// Topic settings Oxbow understands, with Kafka's names.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.type",
    REMOTE_WRITE,
    REMOTE_READ,
    REMOTE_RECOVERY,
    LOCAL_TARGET_BYTES,
    LOCAL_TARGET_MS,
];

/// `oxbow.remote.write`: the partition leader uploads the log to the object store
/// (Redpanda's `redpanda.remote.write`).
pub const REMOTE_WRITE: &str = "oxbow.remote.write";
/// `oxbow.remote.read`: offsets below the local start are served from the object store
/// (Redpanda's `redpanda.remote.read`).
pub const REMOTE_READ: &str = "oxbow.remote.read";
/// `oxbow.remote.recovery`: a partition created with no local data starts from the
/// manifest its prefix holds in the object store (Redpanda's `redpanda.remote.recovery`).
pub const REMOTE_RECOVERY: &str = "oxbow.remote.recovery";
/// `retention.local.target.bytes`: local bytes kept once uploaded (-1 = no bound).
pub const LOCAL_TARGET_BYTES: &str = "retention.local.target.bytes";
/// `retention.local.target.ms`: local age kept once uploaded (-1 = no bound).
pub const LOCAL_TARGET_MS: &str = "retention.local.target.ms";

/// Tiered-storage settings of a topic (its `oxbow.remote.*` and
/// `retention.local.target.*` configs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TopicTier {
    /// `oxbow.remote.write`.
    pub remote_write: bool,
    /// `oxbow.remote.read`.
    pub remote_read: bool,
    /// `oxbow.remote.recovery`.
    pub recovery: bool,
    /// `retention.local.target.bytes`.
    pub local_target_bytes: Option<u64>,
    /// `retention.local.target.ms`.
    pub local_target_ms: Option<u64>,
}

impl Default for TopicTier {
    fn default() -> Self {
        TopicTier {
            remote_write: false,
            remote_read: false,
            recovery: false,
            local_target_bytes: None,
            local_target_ms: Some(24 * 3_600 * 1_000),
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, MetadataError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(MetadataError::InvalidConfig {
            key: key.to_string(),
            value: value.to_string(),
            reason: "must be `true` or `false`".to_string(),
        }),
    }
}

/// The tiered-storage settings of a topic from its configs (others are ignored).
pub fn topic_tier_config(configs: &BTreeMap<String, String>) -> Result<TopicTier, MetadataError> {
    let mut tier = TopicTier::default();
    for (key, value) in configs {
        match key.as_str() {
            REMOTE_WRITE => tier.remote_write = parse_bool(key, value)?,
            REMOTE_READ => tier.remote_read = parse_bool(key, value)?,
            REMOTE_RECOVERY => tier.recovery = parse_bool(key, value)?,
            LOCAL_TARGET_BYTES => tier.local_target_bytes = parse_limit(key, value)?,
            LOCAL_TARGET_MS => tier.local_target_ms = parse_limit(key, value)?,
            _ => {}
        }
    }
    Ok(tier)
}

/// One topic.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TopicMeta {
    /// Topic id (Kafka's topic UUID).
    pub topic_id: [u8; 16],
    /// Number of partitions.
    pub partitions: i32,
    /// The metadata revision that created the topic (partition directories carry it).
    pub revision: i64,
    /// Settings that differ from the node defaults.
    pub configs: BTreeMap<String, String>,
}

/// All topics of the node.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Metadata {
    /// Bumped by every change.
    pub version: u64,
    /// Revision the next created topic gets.
    pub next_revision: i64,
    /// First producer id not yet handed out in a block (InitProducerId). Made durable
    /// before any id of a block is given to a client, so no id is ever reused across
    /// restarts. (The controller Raft group takes this over with the cluster.)
    pub next_producer_id: i64,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
}

/// Why a metadata file or a topic setting was refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The file is damaged or of another format.
    #[error("metadata file is damaged: {0}")]
    Damaged(&'static str),
    /// A topic setting is unknown.
    #[error("unknown topic config `{0}`")]
    UnknownConfig(String),
    /// A topic setting has a bad value.
    #[error("invalid value `{value}` for topic config `{key}`: {reason}")]
    InvalidConfig {
        /// The setting.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("topic name is empty, '.' or '..'".to_string());
    }
    if name.len() > 249 {
        return Err("topic name is longer than 249 characters".to_string());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err("topic name may only contain ASCII letters, digits, '.', '_' and '-'".to_string());
    }
    Ok(())
}

fn parse_limit(key: &str, value: &str) -> Result<Option<u64>, MetadataError> {
    let invalid = |reason: &str| MetadataError::InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let parsed: i64 = value.trim().parse().map_err(|_| invalid("not an integer"))?;
    match parsed {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some(n as u64)),
        _ => Err(invalid("must be -1 or a non-negative integer")),
    }
}

/// The log settings of a topic: node defaults overridden by the topic's configs.
pub fn topic_log_config(
    defaults: &LogConfig,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig, MetadataError> {
    let mut config = defaults.clone();
    for (key, value) in configs {
        match key.as_str() {
            "retention.ms" => config.retention_ms = parse_limit(key, value)?,
            "retention.bytes" => config.retention_bytes = parse_limit(key, value)?,
            "segment.bytes" => {
                config.segment_bytes = parse_limit(key, value)?.unwrap_or(defaults.segment_bytes);
            }
            "segment.ms" => config.segment_ms = parse_limit(key, value)?,
            "max.message.bytes" => {
                config.max_batch_bytes = parse_limit(key, value)?.unwrap_or(defaults.max_batch_bytes);
                config.recovery_read_bytes = config.recovery_read_bytes.max(config.max_batch_bytes);
            }
            "cleanup.policy" => {
                if value != "delete" {
                    return Err(MetadataError::InvalidConfig {
                        key: key.clone(),
                        value: value.clone(),
                        reason: "only `delete` is supported (compaction is not)".to_string(),
                    });
                }
            }
            "message.timestamp.type" => {
                if value != "CreateTime" {
                    return Err(MetadataError::InvalidConfig {
                        key: key.clone(),
                        value: value.clone(),
                        reason: "only `CreateTime` is supported".to_string(),
                    });
                }
            }
            REMOTE_WRITE | REMOTE_READ | REMOTE_RECOVERY | LOCAL_TARGET_BYTES | LOCAL_TARGET_MS => {}
            other => return Err(MetadataError::UnknownConfig(other.to_string())),
        }
    }
    topic_tier_config(configs)?;
    config.validate().map_err(|LogConfigError { option, reason }| {
        // A bad value may come from the node's defaults rather than the request:
        // name the value in force either way.
        let value = configs.get(option).cloned().unwrap_or_else(|| {
            describe_topic_config(&config, configs)
                .into_iter()
                .find(|(key, _, _)| key == option)
                .map_or_else(
                    || "(unset)".to_string(),
                    |(_, value, _)| format!("{value} (node default)"),
                )
        });
        MetadataError::InvalidConfig {
            key: option.to_string(),
            value,
            reason,
        }
    })?;
    Ok(config)
}

/// The effective value of every topic setting (for DescribeConfigs), and whether it is
/// the default.
pub fn describe_topic_config(
    config: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<(String, String, bool)> {
    let limit = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let values = [
        ("cleanup.policy", "delete".to_string()),
        ("retention.ms", limit(config.retention_ms)),
        ("retention.bytes", limit(config.retention_bytes)),
        ("segment.bytes", config.segment_bytes.to_string()),
        ("segment.ms", limit(config.segment_ms)),
        ("max.message.bytes", config.max_batch_bytes.to_string()),
        ("message.timestamp.type", "CreateTime".to_string()),
    ];
    let tier = topic_tier_config(overrides).unwrap_or_default();
    let tier_values = [
        (REMOTE_WRITE, tier.remote_write.to_string()),
        (REMOTE_READ, tier.remote_read.to_string()),
        (REMOTE_RECOVERY, tier.recovery.to_string()),
        (LOCAL_TARGET_BYTES, limit(tier.local_target_bytes)),
        (LOCAL_TARGET_MS, limit(tier.local_target_ms)),
    ];
    values
        .into_iter()
        .chain(tier_values)
        .map(|(key, value)| (key.to_string(), value, !overrides.contains_key(key)))
        .collect()
}

/// A topic id derived from the name and revision (stable across restarts, distinct for
/// a topic re-created under the same name).
pub fn topic_id(name: &str, revision: i64) -> [u8; 16] {
    let mut id = [0u8; 16];
    let a = crc32c::crc32c(name.as_bytes());
    let b = crc32c::crc32c(&revision.to_be_bytes());
    let c = crc32c::crc32c_append(a, &revision.to_le_bytes());
    let d = crc32c::crc32c_append(b, name.as_bytes());
    id[0..4].copy_from_slice(&a.to_be_bytes());
    id[4..8].copy_from_slice(&b.to_be_bytes());
    id[8..12].copy_from_slice(&c.to_be_bytes());
    id[12..16].copy_from_slice(&d.to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x80; // never the all-zero "no id"
    id
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], MetadataError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(MetadataError::Damaged("truncated"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], MetadataError> {
        let mut raw = [0u8; N];
        raw.copy_from_slice(self.take(N)?);
        Ok(raw)
    }
    fn string(&mut self) -> Result<String, MetadataError> {
        let len = u16::from_be_bytes(self.array()?);
        let raw = self.take(usize::from(len))?;
        String::from_utf8(raw.to_vec()).map_err(|_| MetadataError::Damaged("a name is not UTF-8"))
    }
}

impl Metadata {
    /// Encodes the whole state with a checksum.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.next_revision.to_be_bytes());
        out.extend_from_slice(&self.next_producer_id.to_be_bytes());
        out.extend_from_slice(&(self.topics.len() as u32).to_be_bytes());
        for (name, topic) in &self.topics {
            put_str(&mut out, name);
            out.extend_from_slice(&topic.topic_id);
            out.extend_from_slice(&topic.partitions.to_be_bytes());
            out.extend_from_slice(&topic.revision.to_be_bytes());
            out.extend_from_slice(&(topic.configs.len() as u32).to_be_bytes());
            for (key, value) in &topic.configs {
                put_str(&mut out, key);
                put_str(&mut out, value);
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    /// Decodes what [`Metadata::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Metadata, MetadataError> {
        if bytes.len() < 4 + 2 + 8 + 8 + 4 + 4 || &bytes[..4] != MAGIC {
            return Err(MetadataError::Damaged("not an Oxbow metadata file"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(MetadataError::Damaged("checksum mismatch"));
        }
        let mut r = Reader { bytes: body, at: 4 };
        let format = u16::from_be_bytes(r.array()?);
        if format != VERSION && format != VERSION_WITHOUT_PRODUCER_IDS {
            return Err(MetadataError::Damaged("unknown format version"));
        }
        let version = u64::from_be_bytes(r.array()?);
        let next_revision = i64::from_be_bytes(r.array()?);
        let next_producer_id = if format == VERSION {
            i64::from_be_bytes(r.array()?)
        } else {
            0
        };
        if next_producer_id < 0 {
            return Err(MetadataError::Damaged("negative next producer id"));
        }
        let count = u32::from_be_bytes(r.array()?);
        let mut topics = BTreeMap::new();
        for _ in 0..count {
            let name = r.string()?;
            let topic_id = r.array()?;
            let partitions = i32::from_be_bytes(r.array()?);
            let revision = i64::from_be_bytes(r.array()?);
            let config_count = u32::from_be_bytes(r.array()?);
            let mut configs = BTreeMap::new();
            for _ in 0..config_count {
                let key = r.string()?;
                configs.insert(key, r.string()?);
            }
            if partitions < 1 {
                return Err(MetadataError::Damaged("a topic without partitions"));
            }
            topics.insert(
                name,
                TopicMeta {
                    topic_id,
                    partitions,
                    revision,
                    configs,
                },
            );
        }
        if r.at != body.len() {
            return Err(MetadataError::Damaged("trailing bytes"));
        }
        Ok(Metadata {
            version,
            next_revision,
            next_producer_id,
            topics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let mut m = Metadata {
            version: 3,
            next_revision: 7,
            next_producer_id: 4000,
            ..Metadata::default()
        };
        m.topics.insert(
            "orders".to_string(),
            TopicMeta {
                topic_id: topic_id("orders", 5),
                partitions: 8,
                revision: 5,
                configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
            },
        );
        let bytes = m.encode();
        assert_eq!(Metadata::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 1;
            assert!(Metadata::decode(&damaged).is_err());
        }
        assert!(Metadata::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn topic_configs_apply_over_defaults_and_bad_ones_are_named() {
        let defaults = LogConfig::default();
        let configs = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), "2097152".to_string()),
        ]);
        let config = topic_log_config(&defaults, &configs).unwrap();
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.segment_bytes, 2 * 1024 * 1024);
        let bad = BTreeMap::from([("retention.ms".to_string(), "soon".to_string())]);
        assert!(topic_log_config(&defaults, &bad)
            .unwrap_err()
            .to_string()
            .contains("retention.ms"));
        let unknown = BTreeMap::from([("flavour".to_string(), "x".to_string())]);
        assert!(matches!(
            topic_log_config(&defaults, &unknown),
            Err(MetadataError::UnknownConfig(_))
        ));
        let small_defaults = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let error = topic_log_config(&small_defaults, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("4096 (node default)"), "{error}");
        assert!(validate_topic_name("a.b_c-1").is_ok());
        assert!(validate_topic_name("bad name").is_err());
    }
}
