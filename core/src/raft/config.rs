//! [`RaftConfig`]: every timing and limit of one Raft group, with the seed's defaults.

use std::time::Duration;

/// Timings and limits of one Raft group. `Default` gives the seed's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// Leader heartbeat interval (seed: 150 ms).
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for this long starts an election (seed: 1.5 s).
    /// Also the check-quorum period and the leader-lease length.
    pub election_timeout: Duration,
    /// A random extra in `[0, election_jitter)` added to a follower's first election
    /// timeout so that followers of a dead leader do not all start at once.
    pub election_jitter: Duration,
    /// After a failed (split) election, retry after a random delay in
    /// `[split_vote_retry_min, split_vote_retry_max)` (seed: 150–300 ms).
    pub split_vote_retry_min: Duration,
    /// See `split_vote_retry_min`.
    pub split_vote_retry_max: Duration,
    /// Run a pre-vote round before bumping the term (seed: on).
    pub pre_vote: bool,
    /// A leader steps down if it does not hear a majority within an election timeout, and
    /// followers that heard a leader within the timeout ignore vote requests (seed: on).
    pub check_quorum: bool,
    /// Unacknowledged AppendEntries messages in flight per follower.
    pub max_inflight_appends: usize,
    /// Maximum entry bytes in one AppendEntries message (at least one entry is sent).
    pub max_append_bytes: usize,
    /// Bytes of recent entries kept in memory to serve followers and apply.
    pub entry_cache_bytes: usize,
    /// Rate for recovery traffic (entries read back from disk, snapshot chunks), in bytes
    /// per second, shared by all followers of the group.
    pub recovery_rate_bytes_per_sec: u64,
    /// Bytes per InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// A follower whose oldest unacknowledged append (or snapshot chunk) is older than
    /// this is probed again from its match offset. A fallback: losses are normally
    /// detected within one heartbeat round (see `HeartbeatResponse::received`).
    pub retransmit_timeout: Duration,
    /// Proposals are refused once this many entry bytes are uncommitted.
    pub max_uncommitted_bytes: usize,
    /// A learner is promotable once it is within this many offsets of the leader's log.
    pub learner_catch_up_offsets: u64,
    /// How many steps the priority requirement takes to relax from the highest voter
    /// priority down to 1 when no leader is elected (one step per election timeout).
    pub priority_relax_steps: u32,
    /// A leader hands leadership to a caught-up voter of higher priority.
    pub auto_transfer_to_priority: bool,
    /// A leadership transfer that has not completed by this time is abandoned.
    pub transfer_timeout: Duration,
    /// Heartbeats are produced by the runtime calling `Raft::take_heartbeats` once per
    /// interval for all groups (to coalesce them per peer node) instead of by the
    /// engine's own timer.
    pub coalesced_heartbeats: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval: Duration::from_millis(150),
            election_timeout: Duration::from_millis(1500),
            election_jitter: Duration::from_millis(150),
            split_vote_retry_min: Duration::from_millis(150),
            split_vote_retry_max: Duration::from_millis(300),
            pre_vote: true,
            check_quorum: true,
            max_inflight_appends: 64,
            max_append_bytes: 1 << 20,
            entry_cache_bytes: 16 << 20,
            recovery_rate_bytes_per_sec: 100 << 20,
            snapshot_chunk_bytes: 1 << 20,
            retransmit_timeout: Duration::from_secs(5),
            max_uncommitted_bytes: 64 << 20,
            learner_catch_up_offsets: 1000,
            priority_relax_steps: 3,
            auto_transfer_to_priority: true,
            transfer_timeout: Duration::from_millis(1500),
            coalesced_heartbeats: false,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The election timeout must exceed the heartbeat interval.
    #[error("election timeout must exceed the heartbeat interval")]
    ElectionNotAboveHeartbeat,
    /// A zero duration, size or count where a positive one is needed.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The split-vote retry range is empty or reversed.
    #[error("split-vote retry range is empty")]
    EmptyRetryRange,
}

impl RaftConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Zero("heartbeat_interval"));
        }
        if self.election_timeout <= self.heartbeat_interval {
            return Err(ConfigError::ElectionNotAboveHeartbeat);
        }
        if self.split_vote_retry_max <= self.split_vote_retry_min {
            return Err(ConfigError::EmptyRetryRange);
        }
        let positive = [
            (self.max_inflight_appends, "max_inflight_appends"),
            (self.max_append_bytes, "max_append_bytes"),
            (self.snapshot_chunk_bytes, "snapshot_chunk_bytes"),
            (self.max_uncommitted_bytes, "max_uncommitted_bytes"),
        ];
        for (v, name) in positive {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.recovery_rate_bytes_per_sec == 0 {
            return Err(ConfigError::Zero("recovery_rate_bytes_per_sec"));
        }
        if self.priority_relax_steps == 0 {
            return Err(ConfigError::Zero("priority_relax_steps"));
        }
        if self.retransmit_timeout.is_zero() {
            return Err(ConfigError::Zero("retransmit_timeout"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_and_valid() {
        let c = RaftConfig::default();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(150));
        assert_eq!(c.election_timeout, Duration::from_millis(1500));
        assert!(c.pre_vote && c.check_quorum);
        assert_eq!(c.validate(), Ok(()));
        let bad = RaftConfig {
            election_timeout: Duration::from_millis(100),
            ..c.clone()
        };
        assert_eq!(bad.validate(), Err(ConfigError::ElectionNotAboveHeartbeat));
        let bad = RaftConfig {
            max_inflight_appends: 0,
            ..c
        };
        assert_eq!(bad.validate(), Err(ConfigError::Zero("max_inflight_appends")));
    }
}
