//! Consumer groups: the coordinator of the groups that hash to one `__consumer_offsets`
//! partition, as a state machine fed by that partition's log (DESIGN.md §7).
//!
//! The coordinator lives beside the partition's replica. While the replica leads, the
//! coordinator serves the groups of its partition; every decision that must survive (a
//! committed offset, a completed rebalance, a deleted group) is written to the partition
//! as a record with `acks=all`, and the client is answered only once that record is
//! committed. A new leader rebuilds the state by replaying the partition from its log
//! start ([`records`] explains why a replay is exact); periodically the coordinator
//! writes a checkpoint of every live key and drops the log prefix before it, so a replay
//! is bounded by the state's size plus the writes since the last checkpoint.
//!
//! * [`records`] — the stored record format.
//! * [`classic`] — a group of the classic protocol (JoinGroup / SyncGroup / Heartbeat).
//! * [`consumer`] — a group of the KIP-848 protocol (ConsumerGroupHeartbeat).
//! * [`assignor`] — the server-side assignors of KIP-848 groups (uniform, range).
//! * [`coordinator`] — [`Coordinator`]: groups, offsets, loading, writes, timers.
//!
//! Requests arrive as [`GroupOp`]s (one group each; the broker splits multi-group
//! requests) tagged with a [`ReplyId`], and leave as [`GroupResult`]s.

pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod coordinator;
pub mod records;

pub use coordinator::{Coordinator, CoordinatorOutput, LoadError};

use crate::kafka::protocol::messages as m;
use std::collections::BTreeMap;

/// The internal topic groups live in.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The `__consumer_offsets` partition coordinating `group` (a stable hash of its id).
pub fn partition_for_group(group: &str, partitions: i32) -> i32 {
    let hash = crc32c::crc32c(group.as_bytes());
    i32::try_from(hash % u32::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Settings of the group coordinator (Kafka's names in the docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is
    /// created.
    pub offsets_partitions: i32,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new classic group waits for more
    /// members before its first rebalance completes.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`: members (and members-to-be) per group.
    pub max_size: usize,
    /// `offsets.retention.minutes`, in ms: committed offsets of an empty group expire
    /// this long after the group emptied (or after the commit, for simple groups).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub max_metadata_bytes: usize,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub consumer_heartbeat_interval_ms: i32,
    /// The assignor of KIP-848 groups whose members name none (`uniform` or `range`).
    pub consumer_default_assignor: String,
    /// Records written between two checkpoints of the coordinator's state.
    pub checkpoint_every_records: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_partitions: 16,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 10_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            max_metadata_bytes: 4096,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_default_assignor: "uniform".to_string(),
            checkpoint_every_records: 10_000,
        }
    }
}

/// Bugs the simulator plants to prove its checkers (feature `sim-bugs`, off by default;
/// set with `Coordinator::plant`). Every switch is off by default.
#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupBugs {
    /// OffsetCommit is answered before its record is committed.
    pub ack_commit_before_durable: bool,
    /// OffsetCommit skips the generation / member-epoch check.
    pub skip_generation_check: bool,
    /// KIP-848: a partition is handed out before its previous owner released it.
    pub hand_out_unreleased_partitions: bool,
    /// A checkpoint leaves out its last key.
    pub drop_checkpoint_key: bool,
}

/// Identifies a request waiting for its [`GroupResult`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct ReplyId(pub u64);

/// Partitions by topic, as requests name them.
pub type TopicPartitionList = Vec<(String, Vec<i32>)>;

/// Who sent a request (for DescribeGroups).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// The request header's client id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
}

/// One offset to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitEntry {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Leader epoch, -1 if unknown.
    pub leader_epoch: i32,
    /// Metadata.
    pub metadata: Option<String>,
}

/// A request about one group.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum GroupOp {
    /// JoinGroup.
    Join {
        /// The request.
        request: m::JoinGroupRequest,
        /// Its version.
        version: i16,
        /// Who asks.
        client: ClientInfo,
    },
    /// SyncGroup.
    Sync {
        /// The request.
        request: m::SyncGroupRequest,
        /// Its version.
        version: i16,
    },
    /// Heartbeat.
    Heartbeat {
        /// The request.
        request: m::HeartbeatRequest,
    },
    /// LeaveGroup.
    Leave {
        /// The request.
        request: m::LeaveGroupRequest,
        /// Its version.
        version: i16,
    },
    /// OffsetCommit of one group (partitions already checked to exist).
    Commit {
        /// Group.
        group: String,
        /// Generation (classic) or member epoch (KIP-848); -1 for a simple commit.
        generation_or_epoch: i32,
        /// Member id ("" for a simple commit).
        member_id: String,
        /// Static instance id.
        instance_id: Option<String>,
        /// The offsets.
        entries: Vec<CommitEntry>,
    },
    /// OffsetFetch of one group (`None`: every partition with an offset).
    FetchOffsets {
        /// Group.
        group: String,
        /// Partitions asked for.
        topics: Option<TopicPartitionList>,
        /// Fail partitions with a commit in flight (UNSTABLE_OFFSET_COMMIT).
        require_stable: bool,
        /// KIP-848: the member asking and its epoch, checked when given.
        member: Option<(String, i32)>,
    },
    /// OffsetDelete.
    DeleteOffsets {
        /// Group.
        group: String,
        /// Partitions.
        topics: TopicPartitionList,
    },
    /// DescribeGroups of one group.
    Describe {
        /// Group.
        group: String,
    },
    /// DeleteGroups of one group.
    Delete {
        /// Group.
        group: String,
    },
    /// ListGroups on this coordinator.
    List {
        /// States wanted (empty: all).
        states: Vec<String>,
        /// Types wanted ("classic", "consumer"; empty: all).
        types: Vec<String>,
    },
    /// ConsumerGroupHeartbeat.
    ConsumerHeartbeat {
        /// The request.
        request: m::ConsumerGroupHeartbeatRequest,
        /// Who asks.
        client: ClientInfo,
    },
    /// ConsumerGroupDescribe of one group.
    ConsumerDescribe {
        /// Group.
        group: String,
    },
}

impl GroupOp {
    /// The group the request is about (`None` for ListGroups).
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupOp::Join { request, .. } => Some(request.group_id.0.as_str()),
            GroupOp::Sync { request, .. } => Some(request.group_id.0.as_str()),
            GroupOp::Heartbeat { request } => Some(request.group_id.0.as_str()),
            GroupOp::Leave { request, .. } => Some(request.group_id.0.as_str()),
            GroupOp::ConsumerHeartbeat { request, .. } => Some(request.group_id.0.as_str()),
            GroupOp::Commit { group, .. }
            | GroupOp::FetchOffsets { group, .. }
            | GroupOp::DeleteOffsets { group, .. }
            | GroupOp::Describe { group }
            | GroupOp::Delete { group }
            | GroupOp::ConsumerDescribe { group } => Some(group),
            GroupOp::List { .. } => None,
        }
    }
}

/// A fetched offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    /// Partition.
    pub partition: i32,
    /// Offset, -1 if none.
    pub offset: i64,
    /// Leader epoch, -1 if none.
    pub leader_epoch: i32,
    /// Metadata.
    pub metadata: Option<String>,
    /// Error code.
    pub error: i16,
}

/// Per-partition error codes by topic.
pub type PartitionErrors = BTreeMap<String, Vec<(i32, i16)>>;

/// The answer to a [`GroupOp`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum GroupResult {
    /// JoinGroup.
    Join(m::JoinGroupResponse),
    /// SyncGroup.
    Sync(m::SyncGroupResponse),
    /// Heartbeat: the error code.
    Heartbeat(i16),
    /// LeaveGroup.
    Leave(m::LeaveGroupResponse),
    /// OffsetCommit: error per partition.
    Committed(PartitionErrors),
    /// OffsetFetch: group error, offsets by topic.
    Offsets {
        /// Group-level error.
        error: i16,
        /// Offsets.
        topics: BTreeMap<String, Vec<FetchedOffset>>,
    },
    /// OffsetDelete: group error, per-partition errors.
    OffsetsDeleted {
        /// Group-level error.
        error: i16,
        /// Per partition.
        partitions: PartitionErrors,
    },
    /// DescribeGroups.
    Described(m::describe_groups_response::DescribedGroup),
    /// DeleteGroups: the error code.
    Deleted(i16),
    /// ListGroups.
    Listed(Vec<m::list_groups_response::ListedGroup>),
    /// ConsumerGroupHeartbeat.
    ConsumerHeartbeat(m::ConsumerGroupHeartbeatResponse),
    /// ConsumerGroupDescribe.
    ConsumerDescribed(m::consumer_group_describe_response::DescribedGroup),
    /// The coordinator cannot answer (not coordinator, loading, storage error).
    Error(i16),
}

/// What the coordinator knows of a topic (for KIP-848 assignments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic id.
    pub id: [u8; 16],
    /// Partition count.
    pub partitions: i32,
}

/// Topics by name.
pub type Topics = BTreeMap<String, TopicInfo>;

/// Counters for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupMetrics {
    /// Groups by state name.
    pub groups_by_state: BTreeMap<String, u64>,
    /// Rebalances completed.
    pub rebalances: u64,
    /// Offsets committed.
    pub offset_commits: u64,
}
