//! Settings of one partition log, with Kafka's names and defaults. Every bound here
//! is a limit with a documented behaviour when reached.

/// Settings of one partition log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment once the active one would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll once the active segment's first append is this old.
    pub segment_ms: Option<u64>,
    /// `index.interval.bytes`: bytes of batches between two sparse index entries.
    pub index_interval_bytes: u64,
    /// `retention.bytes`: delete oldest closed segments while the log is larger.
    pub retention_bytes: Option<u64>,
    /// `retention.ms`: delete closed segments whose newest record is older.
    pub retention_ms: Option<u64>,
    /// `max.message.bytes`: largest batch accepted (larger gets MESSAGE_TOO_LARGE).
    pub max_batch_bytes: u64,
    /// Space reserved with `fallocate` when a segment is created.
    pub preallocate_bytes: u64,
    /// Most time between two checkpoints while data is being synced.
    pub checkpoint_interval_ms: u64,
    /// Size of the reads recovery asks for while scanning a segment.
    pub recovery_read_bytes: u64,
}

/// 128 MiB, the default `segment.bytes`.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
/// A week, the default `retention.ms` and `segment.ms`.
pub const ONE_WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: Some(ONE_WEEK_MS),
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(ONE_WEEK_MS),
            max_batch_bytes: 1024 * 1024 + 12,
            preallocate_bytes: 32 * 1024 * 1024,
            checkpoint_interval_ms: 1000,
            recovery_read_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A setting that cannot work.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("invalid log setting `{option}`: {reason}")]
pub struct ConfigError {
    /// The option's Kafka name.
    pub option: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl LogConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |option, reason: &str| {
            Err(ConfigError {
                option,
                reason: reason.to_string(),
            })
        };
        if self.segment_bytes < 1024 * 1024 {
            return fail("segment.bytes", "must be at least 1 MiB");
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return fail(
                "segment.bytes",
                "must be below 4 GiB (index positions are 32-bit)",
            );
        }
        if self.index_interval_bytes == 0 {
            return fail("index.interval.bytes", "must be positive");
        }
        // A batch larger than segment.bytes is allowed (as in Kafka): it gets a segment
        // of its own.
        if self.max_batch_bytes < 61 || self.max_batch_bytes > u64::from(u32::MAX) / 2 {
            return fail("max.message.bytes", "must hold a batch header and be below 2 GiB");
        }
        if self.recovery_read_bytes < self.max_batch_bytes {
            return fail("recovery_read_bytes", "must be at least max.message.bytes");
        }
        if self.segment_ms == Some(0) {
            return fail("segment.ms", "must be positive");
        }
        Ok(())
    }
}
