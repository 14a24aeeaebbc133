//! The node's configuration: one TOML file, every option with a default that works on
//! a laptop, command-line flags on top. A bad value is reported with the option's
//! name; unknown options are refused rather than silently ignored.

use oxbow_core::log::LogConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default Kafka listener.
pub const DEFAULT_KAFKA_ADDR: &str = "127.0.0.1:9092";
/// Default broker-to-broker RPC listener.
pub const DEFAULT_RPC_ADDR: &str = "127.0.0.1:33145";
/// Default admin HTTP listener.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9644";

/// Parses a size: bytes, or a number with `K`/`M`/`G`/`T` (powers of 1024, optional
/// `iB`/`B`): `4GiB`, `512M`, `1048576`.
pub fn parse_size_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 4GiB, 512MiB or 1048576"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use K, M, G or T)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (names the option and line).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the option.
        message: String,
    },
    /// An option has a value that cannot work.
    #[error("invalid option `{option}`: {reason}")]
    Invalid {
        /// The option, as written in the file.
        option: String,
        /// What is wrong.
        reason: String,
    },
}

/// `[node]`: identity, listeners, data directory.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Directory holding all data.
    pub data_dir: PathBuf,
    /// This broker's id.
    pub node_id: i32,
    /// Kafka listener address.
    pub kafka_addr: String,
    /// Broker-to-broker RPC listener address.
    pub rpc_addr: String,
    /// Admin HTTP listener address.
    pub admin_addr: String,
    /// The cluster's seed brokers as `ID@HOST:PORT` (broker id, RPC address), this
    /// broker included; empty: a single node. `--seeds`.
    pub seeds: Vec<String>,
    /// Shard threads, one pinned per core (0 = one per core of `cores`, or per
    /// available core). `--smp`.
    pub shards: u32,
    /// The cores shards are pinned to, as a CPU list (`"2-7"`, `"0,2,4"`); empty: every
    /// core this process may use. `--cores`.
    pub cores: String,
    /// The node's memory budget, split evenly over its shards (0: 256 MiB per shard).
    /// Each shard allocates and locks its direct-I/O buffers from its share at start-up
    /// and bounds its connections, request bytes and queued responses by the rest,
    /// applying back-pressure rather than allocating past it. `--memory`.
    pub memory_bytes: u64,
    /// Lock each shard's pre-allocated memory (`mlock`) where permitted.
    pub lock_memory: bool,
    /// Run segment writes and `fdatasync`s with blocking calls on the shard threads
    /// instead of on their io_uring rings (a fallback, and a baseline for benchmarks;
    /// the rings are used whenever the kernel supports their write and fsync).
    pub sync_disk_io: bool,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            data_dir: PathBuf::from("oxbow-data"),
            node_id: 0,
            kafka_addr: DEFAULT_KAFKA_ADDR.to_string(),
            rpc_addr: DEFAULT_RPC_ADDR.to_string(),
            admin_addr: DEFAULT_ADMIN_ADDR.to_string(),
            seeds: Vec::new(),
            shards: 0,
            cores: String::new(),
            memory_bytes: 0,
            lock_memory: true,
            sync_disk_io: false,
        }
    }
}

/// `[log]`: defaults for every partition's log (topics may override them).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `segment.bytes`.
    pub segment_bytes: u64,
    /// `segment.ms` (0 = never roll by age).
    pub segment_ms: u64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: u64,
    /// `retention.bytes` (-1 = unlimited).
    pub retention_bytes: i64,
    /// `retention.ms` (-1 = unlimited).
    pub retention_ms: i64,
    /// `max.message.bytes`.
    pub max_message_bytes: u64,
    /// Space reserved per new segment.
    pub preallocate_bytes: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        let d = LogConfig::default();
        LogSection {
            segment_bytes: d.segment_bytes,
            segment_ms: d.segment_ms.unwrap_or(0),
            index_interval_bytes: d.index_interval_bytes,
            retention_bytes: d.retention_bytes.map_or(-1, |b| b as i64),
            retention_ms: d.retention_ms.map_or(-1, |m| m as i64),
            max_message_bytes: d.max_batch_bytes,
            preallocate_bytes: d.preallocate_bytes,
        }
    }
}

/// `[kafka]`: the Kafka listener.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Largest request frame accepted; a larger one closes its connection.
    pub max_frame_bytes: u32,
    /// Output queued per connection above which the shard stops reading from it.
    pub max_send_queue_bytes: u64,
    /// Most open client connections per shard.
    pub max_connections_per_shard: u32,
    /// `default.replication.factor`: replicas of a topic created without a replication
    /// factor (cluster mode; capped by the live brokers).
    pub default_replication_factor: i16,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            max_frame_bytes: oxbow_core::kafka::DEFAULT_MAX_FRAME_BYTES,
            max_send_queue_bytes: 8 * 1024 * 1024,
            max_connections_per_shard: 10_000,
            default_replication_factor: 3,
        }
    }
}

/// `[group]`: the consumer-group coordinator (Kafka's names in the docs).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSection {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when created.
    pub offsets_partitions: i32,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`.
    pub max_size: usize,
    /// `offsets.retention.minutes`.
    pub offsets_retention_minutes: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub max_metadata_bytes: usize,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub consumer_heartbeat_interval_ms: i32,
    /// Assignor of KIP-848 groups whose members name none: `uniform` or `range`.
    pub consumer_default_assignor: String,
    /// Records written to a coordinator partition between two checkpoints.
    pub checkpoint_every_records: u64,
}

impl Default for GroupSection {
    fn default() -> Self {
        let d = oxbow_core::group::GroupConfig::default();
        GroupSection {
            offsets_partitions: d.offsets_partitions,
            min_session_timeout_ms: d.min_session_timeout_ms,
            max_session_timeout_ms: d.max_session_timeout_ms,
            initial_rebalance_delay_ms: d.initial_rebalance_delay_ms,
            max_size: d.max_size,
            offsets_retention_minutes: d.offsets_retention_ms / 60_000,
            offsets_retention_check_interval_ms: d.offsets_retention_check_interval_ms,
            max_metadata_bytes: d.max_metadata_bytes,
            consumer_session_timeout_ms: d.consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms: d.consumer_heartbeat_interval_ms,
            consumer_default_assignor: d.consumer_default_assignor,
            checkpoint_every_records: d.checkpoint_every_records,
        }
    }
}

impl GroupSection {
    /// The coordinator's settings, or the first option that cannot work.
    pub fn to_config(&self) -> Result<oxbow_core::group::GroupConfig, ConfigError> {
        let invalid = |option: &str, reason: &str| ConfigError::Invalid {
            option: format!("group.{option}"),
            reason: reason.to_string(),
        };
        if !(1..=10_000).contains(&self.offsets_partitions) {
            return Err(invalid("offsets_partitions", "must be between 1 and 10000"));
        }
        if self.min_session_timeout_ms <= 0 || self.max_session_timeout_ms < self.min_session_timeout_ms {
            return Err(invalid(
                "max_session_timeout_ms",
                "must be positive and at least min_session_timeout_ms",
            ));
        }
        if self.initial_rebalance_delay_ms < 0 {
            return Err(invalid("initial_rebalance_delay_ms", "must not be negative"));
        }
        if self.max_size == 0 {
            return Err(invalid("max_size", "must be at least 1"));
        }
        if self.offsets_retention_minutes <= 0 || self.offsets_retention_check_interval_ms <= 0 {
            return Err(invalid(
                "offsets_retention_minutes",
                "retention and its check interval must be positive",
            ));
        }
        if self.consumer_session_timeout_ms <= 0
            || self.consumer_heartbeat_interval_ms <= 0
            || self.consumer_heartbeat_interval_ms >= self.consumer_session_timeout_ms
        {
            return Err(invalid(
                "consumer_heartbeat_interval_ms",
                "must be positive and below consumer_session_timeout_ms",
            ));
        }
        if !oxbow_core::group::assignor::ASSIGNORS.contains(&self.consumer_default_assignor.as_str()) {
            return Err(invalid(
                "consumer_default_assignor",
                "must be `uniform` or `range`",
            ));
        }
        if self.checkpoint_every_records == 0 {
            return Err(invalid("checkpoint_every_records", "must be at least 1"));
        }
        Ok(oxbow_core::group::GroupConfig {
            offsets_partitions: self.offsets_partitions,
            min_session_timeout_ms: self.min_session_timeout_ms,
            max_session_timeout_ms: self.max_session_timeout_ms,
            initial_rebalance_delay_ms: self.initial_rebalance_delay_ms,
            max_size: self.max_size,
            offsets_retention_ms: self.offsets_retention_minutes.saturating_mul(60_000),
            offsets_retention_check_interval_ms: self.offsets_retention_check_interval_ms,
            max_metadata_bytes: self.max_metadata_bytes,
            consumer_session_timeout_ms: self.consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms: self.consumer_heartbeat_interval_ms,
            consumer_default_assignor: self.consumer_default_assignor.clone(),
            checkpoint_every_records: self.checkpoint_every_records,
        })
    }
}

/// `[txn]`: transaction coordinators and idempotent producers' state (Kafka's names in
/// the docs).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TxnSection {
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state` when
    /// it is created.
    pub state_partitions: i32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask
    /// for (InitProducerId beyond it gets INVALID_TRANSACTION_TIMEOUT).
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_check_interval_ms: u64,
    /// `transactional.id.expiration.ms`: a finished transactional id idle this long is
    /// forgotten.
    pub id_expiration_ms: i64,
    /// `producer.id.expiration.ms`: a partition forgets a producer idle this long.
    pub producer_id_expiration_ms: i64,
    /// Most producers a partition tracks; beyond it the least recently written is
    /// forgotten (its next batch is then refused UNKNOWN_PRODUCER_ID unless it starts
    /// a new sequence).
    pub max_producers_per_partition: usize,
    /// Longest interval between producer-state snapshots of a partition taking writes.
    pub producer_snapshot_interval_ms: u64,
    /// Wait before a coordinator retries a marker a partition refused.
    pub marker_retry_ms: u64,
    /// Records written to a coordinator partition between two checkpoints.
    pub checkpoint_every_records: u64,
    /// Longest a request (InitProducerId, AddPartitionsToTxn, EndTxn) waits at the
    /// coordinator for its id's previous transaction to finish ending (EndTxn is
    /// answered at the durable decision; the markers follow) before it is answered
    /// CONCURRENT_TRANSACTIONS.
    pub ending_wait_ms: u64,
}

impl Default for TxnSection {
    fn default() -> Self {
        let c = oxbow_core::txn::TxnConfig::default();
        let p = oxbow_core::txn::ProducerStateConfig::default();
        TxnSection {
            state_partitions: c.state_partitions,
            max_timeout_ms: c.max_timeout_ms,
            abort_check_interval_ms: c.abort_check_interval_ms,
            id_expiration_ms: c.id_expiration_ms,
            producer_id_expiration_ms: p.expiration_ms,
            max_producers_per_partition: p.max_producers,
            producer_snapshot_interval_ms: p.snapshot_interval_ms,
            marker_retry_ms: c.marker_retry_ms,
            checkpoint_every_records: c.checkpoint_records,
            ending_wait_ms: c.ending_wait_ms,
        }
    }
}

impl TxnSection {
    /// The broker's transaction settings, or the first option that cannot work.
    pub fn to_settings(&self) -> Result<oxbow_core::txn::TxnSettings, ConfigError> {
        let invalid = |option: &str, reason: &str| ConfigError::Invalid {
            option: format!("txn.{option}"),
            reason: reason.to_string(),
        };
        if !(1..=10_000).contains(&self.state_partitions) {
            return Err(invalid("state_partitions", "must be between 1 and 10000"));
        }
        if self.max_timeout_ms <= 0 {
            return Err(invalid("max_timeout_ms", "must be positive"));
        }
        if self.abort_check_interval_ms == 0 || self.marker_retry_ms == 0 {
            return Err(invalid(
                "abort_check_interval_ms",
                "the abort check and marker retry intervals must be positive",
            ));
        }
        if self.id_expiration_ms <= 0 {
            return Err(invalid("id_expiration_ms", "must be positive"));
        }
        if self.producer_id_expiration_ms <= 0 {
            return Err(invalid("producer_id_expiration_ms", "must be positive"));
        }
        if self.max_producers_per_partition == 0 {
            return Err(invalid("max_producers_per_partition", "must be at least 1"));
        }
        if self.producer_snapshot_interval_ms == 0 {
            return Err(invalid("producer_snapshot_interval_ms", "must be positive"));
        }
        if self.checkpoint_every_records == 0 {
            return Err(invalid("checkpoint_every_records", "must be at least 1"));
        }
        Ok(oxbow_core::txn::TxnSettings {
            coordinator: oxbow_core::txn::TxnConfig {
                state_partitions: self.state_partitions,
                max_timeout_ms: self.max_timeout_ms,
                abort_check_interval_ms: self.abort_check_interval_ms,
                id_expiration_ms: self.id_expiration_ms,
                marker_retry_ms: self.marker_retry_ms,
                checkpoint_records: self.checkpoint_every_records,
                ending_wait_ms: self.ending_wait_ms,
            },
            // The update fills the planted-bug switches core has with its `sim-bugs`
            // feature (on when the simulator is built in the same workspace); without
            // it every field is named and clippy calls the update needless.
            #[allow(clippy::needless_update)]
            producers: oxbow_core::txn::ProducerStateConfig {
                expiration_ms: self.producer_id_expiration_ms,
                max_producers: self.max_producers_per_partition,
                snapshot_interval_ms: self.producer_snapshot_interval_ms,
                ..oxbow_core::txn::ProducerStateConfig::default()
            },
        })
    }
}

/// Which object store tiered topics use.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// A directory on this machine (`filesystem_dir`, default `<data_dir>/tiered`).
    #[default]
    Filesystem,
    /// An S3-compatible endpoint.
    S3,
    /// No object store: `oxbow.remote.*` topic configs are accepted but stay local.
    None,
}

/// `[tiered_storage]`: the object store of tiered topics (`oxbow.remote.write`,
/// `oxbow.remote.read`) and the archivers' pace.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TieredStorageSection {
    /// `filesystem` (default), `s3` or `none`.
    pub store: StoreKind,
    /// The filesystem store's directory ("" = `<data_dir>/tiered`).
    pub filesystem_dir: PathBuf,
    /// S3 endpoint URL ("" = AWS for `s3_region`).
    pub s3_endpoint: String,
    /// S3 region.
    pub s3_region: String,
    /// S3 bucket.
    pub s3_bucket: String,
    /// S3 access key id.
    pub s3_access_key_id: String,
    /// S3 secret access key.
    pub s3_secret_access_key: String,
    /// Allow a plain-HTTP endpoint (test servers such as moto, MinIO on loopback).
    pub s3_allow_http: bool,
    /// Upload the committed part of an active segment once its oldest un-uploaded data
    /// is this old (closed segments go at once).
    pub upload_lag_ms: u64,
    /// A store request that has not answered in this time is abandoned and retried.
    pub request_timeout_ms: u64,
    /// How often each archiver applies total retention (`retention.bytes/ms`) and lists
    /// its prefix for orphans.
    pub housekeeping_interval_ms: u64,
    /// Bytes of downloaded segment chunks each partition's remote-read cache keeps.
    pub cache_bytes: u64,
    /// Download granularity of remote reads (ranged gets).
    pub chunk_bytes: u64,
    /// Store operations queued per node before the shards hold further ones back.
    pub max_queued_ops: usize,
    /// Store operations running at once.
    pub max_concurrent_ops: usize,
}

impl Default for TieredStorageSection {
    fn default() -> Self {
        TieredStorageSection {
            store: StoreKind::Filesystem,
            filesystem_dir: PathBuf::new(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".to_string(),
            s3_bucket: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_allow_http: false,
            upload_lag_ms: 5_000,
            request_timeout_ms: 10_000,
            housekeeping_interval_ms: 30_000,
            cache_bytes: 64 << 20,
            chunk_bytes: 1 << 20,
            max_queued_ops: 1_024,
            max_concurrent_ops: 32,
        }
    }
}

impl TieredStorageSection {
    /// The core settings, or the first option that cannot work.
    pub fn to_settings(&self) -> Result<oxbow_core::broker::partitions::TierSettings, ConfigError> {
        let invalid = |option: &str, reason: &str| ConfigError::Invalid {
            option: format!("tiered_storage.{option}"),
            reason: reason.to_string(),
        };
        if self.store == StoreKind::S3 {
            if self.s3_bucket.is_empty() {
                return Err(invalid("s3_bucket", "must be set when store = \"s3\""));
            }
            if self.s3_region.is_empty() {
                return Err(invalid("s3_region", "must be set when store = \"s3\""));
            }
            if self.s3_endpoint.starts_with("http://") && !self.s3_allow_http {
                return Err(invalid(
                    "s3_endpoint",
                    "is plain http: set s3_allow_http = true to allow it",
                ));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms", "must be positive"));
        }
        if self.housekeeping_interval_ms == 0 {
            return Err(invalid("housekeeping_interval_ms", "must be positive"));
        }
        if self.chunk_bytes < 4096 {
            return Err(invalid("chunk_bytes", "must be at least 4096"));
        }
        if self.cache_bytes < 4 * self.chunk_bytes {
            return Err(invalid(
                "cache_bytes",
                "must hold at least four chunks (4 * chunk_bytes)",
            ));
        }
        if self.max_queued_ops == 0 || self.max_concurrent_ops == 0 {
            return Err(invalid(
                "max_queued_ops",
                "queue and concurrency must be positive",
            ));
        }
        let timeout = std::time::Duration::from_millis(self.request_timeout_ms);
        let base = oxbow_core::tier::TierConfig {
            upload_lag: std::time::Duration::from_millis(self.upload_lag_ms),
            // A request abandoned at the client timeout may still land at the store
            // until its own deadline: give it as long again.
            store_request_lifetime: timeout * 2,
            backoff_max: timeout.min(std::time::Duration::from_secs(10)),
            housekeeping_interval: std::time::Duration::from_millis(self.housekeeping_interval_ms),
            ..oxbow_core::tier::TierConfig::default()
        };
        base.validate().map_err(|reason| invalid("(archiver)", &reason))?;
        let read_cache = oxbow_core::tier::read::ReadCacheConfig {
            chunk_size_bytes: self.chunk_bytes,
            max_chunk_bytes: self.cache_bytes,
            ..oxbow_core::tier::read::ReadCacheConfig::default()
        };
        Ok(oxbow_core::broker::partitions::TierSettings {
            enabled: self.store != StoreKind::None,
            base,
            read_cache,
        })
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// `[node]`.
    pub node: NodeSection,
    /// `[log]`.
    pub log: LogSection,
    /// `[kafka]`.
    pub kafka: KafkaSection,
    /// `[group]`.
    pub group: GroupSection,
    /// `[txn]`.
    pub txn: TxnSection,
    /// `[tune]`: what `oxbow tune` may change.
    pub tune: crate::tune::TuneSettings,
    /// `[tiered_storage]`: the object store.
    pub tiered_storage: TieredStorageSection,
}

/// Command-line overrides of `[node]` options.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--node-id`.
    pub node_id: Option<i32>,
    /// `--kafka-addr`.
    pub kafka_addr: Option<String>,
    /// `--rpc-addr`.
    pub rpc_addr: Option<String>,
    /// `--admin-addr`.
    pub admin_addr: Option<String>,
    /// `--seeds`.
    pub seeds: Option<Vec<String>>,
    /// `--cores`.
    pub cores: Option<String>,
    /// `--smp`.
    pub shards: Option<u32>,
    /// `--memory`.
    pub memory_bytes: Option<u64>,
}

impl NodeConfig {
    /// Parses TOML text (`path` only names the source in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Loads the file if given (defaults otherwise), applies the overrides, validates.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<NodeConfig, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                NodeConfig::from_toml(&text, path)?
            }
            None => NodeConfig::default(),
        };
        let node = &mut config.node;
        if let Some(v) = overrides.data_dir {
            node.data_dir = v;
        }
        if let Some(v) = overrides.node_id {
            node.node_id = v;
        }
        if let Some(v) = overrides.kafka_addr {
            node.kafka_addr = v;
        }
        if let Some(v) = overrides.rpc_addr {
            node.rpc_addr = v;
        }
        if let Some(v) = overrides.admin_addr {
            node.admin_addr = v;
        }
        if let Some(v) = overrides.seeds {
            node.seeds = v;
        }
        if let Some(v) = overrides.cores {
            node.cores = v;
        }
        if let Some(v) = overrides.shards {
            node.shards = v;
        }
        if let Some(v) = overrides.memory_bytes {
            node.memory_bytes = v;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every option, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option: &str, reason: String| ConfigError::Invalid {
            option: option.to_string(),
            reason,
        };
        self.group.to_config()?;
        self.txn.to_settings()?;
        self.tiered_storage.to_settings()?;
        for (option, addr) in [
            ("node.kafka_addr", &self.node.kafka_addr),
            ("node.rpc_addr", &self.node.rpc_addr),
            ("node.admin_addr", &self.node.admin_addr),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|e| invalid(option, format!("`{addr}` is not an IP:port address ({e})")))?;
        }
        if let Err(error) = crate::cluster_node::parse_seeds(&self.node.seeds) {
            return Err(invalid("node.seeds", error.to_string()));
        }
        if self.kafka.default_replication_factor < 1 {
            return Err(invalid(
                "kafka.default_replication_factor",
                "must be at least 1".to_string(),
            ));
        }
        if self.node.node_id < 0 {
            return Err(invalid("node.node_id", "must be 0 or more".to_string()));
        }
        if self.node.shards > 1024 {
            return Err(invalid(
                "node.shards",
                format!("{} is more than 1024", self.node.shards),
            ));
        }
        if self.kafka.max_frame_bytes < 1024 {
            return Err(invalid(
                "kafka.max_frame_bytes",
                "must be at least 1024".to_string(),
            ));
        }
        if self.kafka.max_send_queue_bytes < 64 * 1024 {
            return Err(invalid(
                "kafka.max_send_queue_bytes",
                "must be at least 65536".to_string(),
            ));
        }
        if self.kafka.max_connections_per_shard == 0 {
            return Err(invalid(
                "kafka.max_connections_per_shard",
                "must be at least 1".to_string(),
            ));
        }
        // Whether the cores exist here is checked when a node starts (`oxbow tune` may
        // plan for another machine's tree).
        self.cores().map_err(|e| invalid("node.cores", e.to_string()))?;
        let shard_memory_bytes = self.shard_memory_bytes();
        let needed = crate::shard::budget::min_shard_memory_bytes(self.kafka.max_frame_bytes);
        if shard_memory_bytes < needed {
            return Err(invalid(
                "node.memory_bytes",
                format!(
                    "{shard_memory_bytes} bytes per shard ({} shards) is less than the {needed} a shard needs with kafka.max_frame_bytes = {}",
                    self.shard_count(),
                    self.kafka.max_frame_bytes
                ),
            ));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "must not be empty".to_string()));
        }
        self.log_config()
            .validate()
            .map_err(|e| invalid(&format!("log ({})", e.option), e.reason))?;
        Ok(())
    }

    /// Number of shards to run: `node.shards`, or one per core of `node.cores`, or one
    /// per core this process may use (at least one).
    pub fn shard_count(&self) -> u32 {
        if self.node.shards > 0 {
            return self.node.shards;
        }
        let cores = match self.cores() {
            Ok(cores) if !cores.is_empty() => cores.len(),
            _ => crate::shard::affinity::allowed_cores().len(),
        };
        u32::try_from(cores).unwrap_or(1).clamp(1, 1024)
    }

    /// `node.cores` parsed (empty: not restricted).
    pub fn cores(&self) -> Result<Vec<usize>, crate::tune::cpulist::CpuListError> {
        crate::tune::cpulist::parse_cpu_list(&self.node.cores)
    }

    /// The cores shards are pinned to, in order: `node.cores`, or every core this
    /// process may use (empty if neither is known).
    pub fn shard_cores(&self) -> Vec<usize> {
        match self.cores() {
            Ok(cores) if !cores.is_empty() => cores,
            _ => crate::shard::affinity::allowed_cores(),
        }
    }

    /// Each shard's share of the memory budget.
    pub fn shard_memory_bytes(&self) -> u64 {
        match self.node.memory_bytes {
            0 => crate::shard::budget::DEFAULT_SHARD_MEMORY_BYTES,
            total => total / u64::from(self.shard_count()),
        }
    }

    /// The log settings in core's terms.
    pub fn log_config(&self) -> LogConfig {
        let l = &self.log;
        LogConfig {
            segment_bytes: l.segment_bytes,
            segment_ms: (l.segment_ms > 0).then_some(l.segment_ms),
            index_interval_bytes: l.index_interval_bytes,
            retention_bytes: u64::try_from(l.retention_bytes).ok(),
            retention_ms: u64::try_from(l.retention_ms).ok(),
            max_batch_bytes: l.max_message_bytes,
            preallocate_bytes: l.preallocate_bytes,
            ..LogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_without_a_file() {
        let config = NodeConfig::load(None, Overrides::default()).unwrap();
        assert_eq!(config.node.data_dir, PathBuf::from("oxbow-data"));
        assert_eq!(config.node.kafka_addr, "127.0.0.1:9092");
        assert_eq!(config.log_config(), LogConfig::default());
    }

    #[test]
    fn errors_name_the_option() {
        let path = Path::new("oxbow.toml");
        let err = NodeConfig::from_toml("[node]\nkafka_adr = \"x\"\n", path).unwrap_err();
        assert!(err.to_string().contains("kafka_adr"), "{err}");
        let err = NodeConfig::from_toml("[log]\nsegment_bytes = \"big\"\n", path).unwrap_err();
        assert!(err.to_string().contains("segment_bytes"), "{err}");
        let config = NodeConfig::from_toml("[node]\nkafka_addr = \"localhost\"\n", path).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("node.kafka_addr"), "{err}");
        let config = NodeConfig::from_toml("[log]\nsegment_bytes = 10\n", path).unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("segment.bytes"));
    }

    #[test]
    fn tiered_storage_errors_name_the_option() {
        let path = Path::new("oxbow.toml");
        let config = NodeConfig::from_toml("", path).unwrap();
        assert!(config.tiered_storage.to_settings().unwrap().enabled);
        let err = NodeConfig::from_toml("[tiered_storage]\nstore = \"ftp\"\n", path).unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
        let config = NodeConfig::from_toml("[tiered_storage]\nstore = \"s3\"\n", path).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("tiered_storage.s3_bucket"), "{err}");
        let text =
            "[tiered_storage]\nstore = \"s3\"\ns3_bucket = \"b\"\ns3_endpoint = \"http://127.0.0.1:1\"\n";
        let err = NodeConfig::from_toml(text, path).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("s3_allow_http"), "{err}");
        let config = NodeConfig::from_toml("[tiered_storage]\ncache_bytes = 1\n", path).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("tiered_storage.cache_bytes"), "{err}");
        let config = NodeConfig::from_toml("[tiered_storage]\nstore = \"none\"\n", path).unwrap();
        assert!(!config.tiered_storage.to_settings().unwrap().enabled);
    }

    #[test]
    fn sizes_cores_and_budgets() {
        assert_eq!(parse_size_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size_bytes("1048576").unwrap(), 1 << 20);
        assert!(parse_size_bytes("4X").is_err() && parse_size_bytes("").is_err());
        let path = Path::new("oxbow.toml");
        let config = NodeConfig::from_toml("[node]\ncores = \"0-\"\n", path).unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("node.cores"));
        let config = NodeConfig::from_toml("[node]\nshards = 2\nmemory_bytes = 1048576\n", path).unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("node.memory_bytes"));
        let config = NodeConfig::from_toml("[node]\nshards = 2\nmemory_bytes = 536870912\n", path).unwrap();
        assert_eq!(config.shard_memory_bytes(), 256 << 20);
        let config = NodeConfig::from_toml("[txn]\nmax_producers_per_partition = 0\n", path).unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("txn.max_producers_per_partition"));
        let config = NodeConfig::from_toml(
            "[txn]\nmax_timeout_ms = 60000\nproducer_id_expiration_ms = 5000\n",
            path,
        )
        .unwrap();
        let settings = config.txn.to_settings().unwrap();
        assert_eq!(settings.coordinator.max_timeout_ms, 60_000);
        assert_eq!(settings.producers.expiration_ms, 5_000);
        assert!(NodeConfig::from_toml("[txn]\nmax_timeout = 1\n", path).is_err());
        let config = NodeConfig::from_toml("[tune]\ncpu_idle = false\n", path).unwrap();
        assert!(!config.tune.cpu_idle && config.tune.cpu_governor);
        assert!(NodeConfig::from_toml("[tune]\ncpu_idel = false\n", path).is_err());
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxbow.toml");
        std::fs::write(&file, "[node]\nnode_id = 3\ndata_dir = \"/tmp/a\"\n").unwrap();
        let config = NodeConfig::load(
            Some(&file),
            Overrides {
                data_dir: Some(PathBuf::from("/tmp/b")),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.node.node_id, 3);
        assert_eq!(config.node.data_dir, PathBuf::from("/tmp/b"));
    }
}

#[cfg(test)]
mod readme_tests {
    use super::NodeConfig;

    /// The README's "complete file with the defaults" is complete and says the defaults.
    #[test]
    fn the_readme_config_block_is_the_defaults() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("A complete file with the defaults:\n\n```toml\n")
            .expect("the README has its config block");
        let block = &readme[start..];
        let block = &block[block.find("```toml\n").unwrap_or(0) + 8..];
        let block = &block[..block.find("```").unwrap_or(block.len())];
        let parsed: NodeConfig = toml::from_str(block).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, NodeConfig::default());
        for section in ["[node]", "[log]", "[kafka]", "[group]", "[txn]", "[tune]"] {
            assert!(
                block.contains(section),
                "the README's config block lacks {section}"
            );
        }
    }
}
