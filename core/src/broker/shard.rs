//! Work that crosses shards: which shard owns a partition, the per-partition operations
//! a request is broken into, their results, and the messages shards exchange. A request
//! landing on shard A for a partition of shard B becomes an [`PartitionOp`] sent to B;
//! B answers with an [`OpResult`]. Local partitions take the same path without the trip,
//! so there is one code path for both.

use super::io::{PartitionKey, ShardId};
use super::metadata::Metadata;
use crate::partition::Acks;
use crate::time::Instant;
use bytes::Bytes;

/// The shard that owns `partition` of `topic` (stable: a CRC of the name and number).
pub fn shard_for(topic: &str, partition: i32, shard_count: u32) -> ShardId {
    let crc = crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), &partition.to_be_bytes());
    ShardId(crc % shard_count.max(1))
}

/// Where an operation's result must go.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct OpRef {
    /// The shard holding the request.
    pub origin: ShardId,
    /// The request on that shard.
    pub request: u64,
    /// The slot of the result within the request.
    pub slot: u32,
}

/// One operation on one partition.
#[derive(Clone, PartialEq, Debug)]
pub enum PartitionOp {
    /// Append a producer's batch.
    Produce {
        /// The batch.
        batch: Bytes,
        /// Acknowledgement wanted.
        acks: Acks,
    },
    /// Read from `offset`; with `wait_until`, wait (up to then) for data if there is none.
    Fetch {
        /// First offset wanted.
        offset: i64,
        /// Size bound (the first batch is whole even if larger).
        max_bytes: u64,
        /// Long-poll deadline.
        wait_until: Option<Instant>,
        /// `read_committed`: stop at the last stable offset and list aborted
        /// transactions.
        read_committed: bool,
    },
    /// ListOffsets: -2 earliest, -1 latest, -3 newest timestamp, else a timestamp.
    ListOffsets {
        /// The timestamp or special value.
        timestamp: i64,
        /// `read_committed`: latest is the last stable offset.
        read_committed: bool,
    },
    /// OffsetForLeaderEpoch.
    EpochEnd {
        /// The epoch asked about.
        epoch: i32,
    },
    /// DeleteRecords up to `offset` (-1: the high watermark).
    DeleteRecords {
        /// New start offset.
        offset: i64,
    },
    /// Answered with `code` without touching the partition (e.g. a client writing to
    /// an internal topic).
    Refused {
        /// The error.
        code: i16,
    },
    /// A request for the group coordinator of a `__consumer_offsets` partition.
    Group(Box<crate::group::GroupOp>),
    /// A request for the transaction coordinator of a `__transaction_state` partition.
    Txn(Box<crate::txn::TxnOp>),
    /// DescribeProducers: the partition's producer state.
    DescribeProducers,
    /// TxnOffsetCommit for the group coordinator of a `__consumer_offsets` partition.
    TxnOffsetCommit(Box<crate::group::coordinator::txn_offsets::TxnCommit>),
    /// Write a transaction marker (the coordinator's, or WriteTxnMarkers).
    WriteMarker {
        /// The marker.
        marker: crate::txn::marker::Marker,
        /// Wall-clock timestamp to stamp it with.
        timestamp_ms: i64,
    },
}

/// The result of an operation.
#[derive(Clone, PartialEq, Debug)]
pub enum OpResult {
    /// Appended at `base_offset`.
    Produced {
        /// Base offset.
        base_offset: i64,
        /// Log start offset.
        log_start_offset: i64,
    },
    /// Read.
    Fetched {
        /// High watermark.
        high_watermark: i64,
        /// Log start offset.
        log_start_offset: i64,
        /// Last stable offset.
        last_stable_offset: i64,
        /// Aborted transactions of the range read (`read_committed`): (producer id,
        /// first offset).
        aborted: Vec<(i64, i64)>,
        /// Whole batches.
        records: Bytes,
    },
    /// An offset (and its timestamp, -1 if none).
    Offset {
        /// The offset, -1 if none matches.
        offset: i64,
        /// The timestamp found.
        timestamp: i64,
        /// Leader epoch.
        leader_epoch: i32,
    },
    /// OffsetForLeaderEpoch answer.
    EpochEnd {
        /// Largest epoch ≤ the one asked.
        epoch: i32,
        /// Where it ends.
        end_offset: i64,
    },
    /// DeleteRecords answer.
    RecordsDeleted {
        /// New low watermark.
        low_watermark: i64,
    },
    /// A group coordinator's answer.
    Group(Box<crate::group::GroupResult>),
    /// A transaction coordinator's answer.
    Txn(Box<crate::txn::TxnResult>),
    /// DescribeProducers answer.
    Producers(Vec<crate::txn::producer_state::ProducerSummary>),
    /// A Kafka error code.
    Error(i16),
}

impl OpResult {
    /// The error code of the result (0 for success).
    pub fn error_code(&self) -> i16 {
        match self {
            OpResult::Error(code) => *code,
            _ => 0,
        }
    }
}

/// A topic a CreateTopics request asks for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor asked for (-1: the default).
    pub replication_factor: i16,
    /// Settings.
    pub configs: Vec<(String, String)>,
}

/// Setting changes: key → `Some(value)` to set, `None` to delete.
pub type ConfigChanges = Vec<(String, Option<String>)>;

/// A metadata change asked of shard 0.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MetadataCommand {
    /// CreateTopics.
    CreateTopics {
        /// Topics.
        topics: Vec<NewTopic>,
        /// Check only.
        validate_only: bool,
    },
    /// DeleteTopics.
    DeleteTopics {
        /// Names.
        topics: Vec<String>,
    },
    /// CreatePartitions: (name, new total count).
    CreatePartitions {
        /// Topics.
        topics: Vec<(String, i32)>,
        /// Check only.
        validate_only: bool,
    },
    /// AlterConfigs (replace all) or IncrementalAlterConfigs (set/delete).
    AlterConfigs {
        /// Per topic: its name and changes.
        topics: Vec<(String, ConfigChanges)>,
        /// Replace the whole set (AlterConfigs) rather than change keys.
        replace: bool,
        /// Check only.
        validate_only: bool,
    },
}

/// Per-entry outcome of a metadata command: (name, error code, message).
pub type CommandResults = Vec<(String, i16, Option<String>)>;

/// A message between shards.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum ShardMessage {
    /// Run an operation on one of your partitions.
    Op {
        /// Where the result goes.
        op_ref: OpRef,
        /// The partition.
        key: PartitionKey,
        /// The operation.
        op: PartitionOp,
    },
    /// The result of an operation you asked for.
    OpDone {
        /// Which.
        op_ref: OpRef,
        /// The result.
        result: OpResult,
    },
    /// (To shard 0) apply a metadata command and answer with `CommandDone`.
    Command {
        /// The asking shard.
        origin: ShardId,
        /// The request on that shard.
        request: u64,
        /// The command.
        command: MetadataCommand,
    },
    /// The outcome of a command.
    CommandDone {
        /// The request.
        request: u64,
        /// Per-entry results.
        results: CommandResults,
    },
    /// (From shard 0) the metadata changed; here is all of it.
    MetadataChanged {
        /// The new state.
        metadata: Metadata,
    },
    /// Producer-id blocks for InitProducerId (see `super::producer_handlers`).
    ProducerIds(super::producer_handlers::ProducerIdMessage),
    /// A partition's leadership changed (for Metadata responses on every shard).
    LeaderEpoch {
        /// The partition.
        key: PartitionKey,
        /// Its leader epoch on this broker, or -1 while this broker does not lead it.
        leader_epoch: i32,
        /// The leader, if known (cluster mode), and its term.
        leader: Option<(i32, i32)>,
    },
    /// (From shard 0, cluster mode) the cluster view changed; it precedes the
    /// `MetadataChanged` it belongs to.
    ClusterChanged {
        /// The new view.
        view: super::cluster::ClusterView,
    },
    /// (From shard 0, cluster mode) a peer leads a partition at an epoch.
    Leader {
        /// The partition.
        key: PartitionKey,
        /// The leader.
        leader: i32,
        /// Its epoch.
        epoch: i32,
        /// The replicas in sync with it.
        isr: Vec<i32>,
    },
    /// (From shard 0, cluster mode) Raft messages from peers for partitions of this
    /// shard.
    Raft {
        /// The messages, in arrival order.
        messages: Vec<(PartitionKey, crate::raft::Message)>,
    },
}
