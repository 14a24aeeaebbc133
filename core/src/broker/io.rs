//! The per-shard broker's side of the sans-IO door: what the runtime hands in
//! ([`BrokerInput`]) and what it must do ([`BrokerEffect`]).
//!
//! # Contract with a shard runtime
//!
//! * One [`super::Broker`] per shard thread. The runtime owns sockets, files and the
//!   clock; the broker owns every decision.
//! * Connections: the runtime reads bytes and hands them over with
//!   [`BrokerInput::Received`]; the broker frames and decodes them (so a malformed or
//!   oversized frame is core's decision) and answers with [`BrokerEffect::Send`] /
//!   [`BrokerEffect::Close`]. Responses to one connection are emitted in request order.
//! * Partitions: every effect of a partition replica arrives as
//!   [`BrokerEffect::Partition`]; the runtime executes it against that partition's
//!   storage (in emission order per partition) and returns the completion as
//!   [`BrokerInput::Partition`]. [`BrokerEffect::OpenPartition`] always precedes the
//!   first disk effect of a new partition; [`BrokerEffect::RemovePartition`] follows
//!   the last.
//! * Fetch reads: [`BrokerEffect::ReadRanges`] asks for file ranges of a partition,
//!   answered by [`BrokerInput::RangesRead`].
//! * Node metadata (topics and their settings, until the controller replicates them):
//!   [`BrokerEffect::PersistMetadata`] writes the whole encoded state durably,
//!   answered by [`BrokerInput::MetadataPersisted`].
//! * Object store (tiered topics): [`BrokerEffect::Store`] is one operation for the
//!   runtime's object-store client, answered by exactly one [`BrokerInput::Store`]
//!   quoting its key and owner (the contract of [`crate::tier`]: `Ok` only once a put's
//!   object is whole, errors mapped to [`crate::tier::StoreError`]). A
//!   [`crate::tier::ObjectBody::LocalSegment`] put reads that range of the partition's
//!   segment file first. Never on the shard thread: produce must not wait on the store.
//! * Other shards: [`BrokerEffect::ToShard`] carries a message to another shard's
//!   broker, delivered there as [`BrokerInput::FromShard`] — message passing, no locks.
//!   Messages between one pair of shards are delivered in the order sent.
//! * Cluster mode: Raft messages leave as [`BrokerEffect::SendPeer`] frames to the
//!   peers named by [`BrokerEffect::SetPeer`]; every frame from a peer goes to shard 0
//!   as [`BrokerInput::Peer`]. Shard 0's controller storage effects are
//!   [`BrokerEffect::Controller`], answered by [`BrokerInput::Controller`].
//! * Time: every shard's `now` comes from one monotonic clock with one origin, so an
//!   [`crate::time::Instant`] in a message (a long-poll deadline) means the same
//!   moment on every shard.

use super::shard::ShardMessage;
use crate::log::{DiskError, FileRange};
use crate::partition::{ReadToken, ReplicaEffect, ReplicaInput};
use crate::tier::{StoreCompletion, TierEffect};
use bytes::Bytes;

/// A client connection, numbered by the runtime (unique per shard).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnectionId(pub u64);

/// A shard (one pinned core).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ShardId(pub u32);

/// Names one partition replica and where it lives on disk.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PartitionKey {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Revision: the metadata version that created this replica (a topic deleted and
    /// re-created gets a new directory).
    pub revision: i64,
}

impl PartitionKey {
    /// The replica's directory relative to the data directory.
    pub fn dir(&self) -> String {
        crate::log::io::partition_dir(&self.topic, self.partition, self.revision)
    }
}

/// Which state machine an object-store operation belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum StoreOwner {
    /// The partition's archiver of this leader term.
    Archiver {
        /// Leader term (completions for an earlier term's archiver are dropped).
        term: i64,
        /// Which archiver of the node issued it: a topic config change restarts the
        /// archiver within a term, and the new one numbers its operations afresh, so
        /// an answer meant for the old one must not be credited to the new one.
        generation: u64,
    },
    /// A remote read (Fetch / ListOffsets below the local start).
    Read,
    /// Topic recovery: finding a new partition's manifest before it is hosted.
    Recovery,
}

/// Something that happened, for the broker.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum BrokerInput {
    /// A client connected.
    Connected {
        /// Its id.
        connection: ConnectionId,
    },
    /// Bytes arrived on a connection.
    Received {
        /// The connection.
        connection: ConnectionId,
        /// The bytes, in order.
        bytes: Bytes,
    },
    /// A connection closed (by the peer or after [`BrokerEffect::Close`]).
    Disconnected {
        /// The connection.
        connection: ConnectionId,
    },
    /// Completion of a [`BrokerEffect::Partition`].
    Partition {
        /// The partition.
        key: PartitionKey,
        /// The completion.
        input: ReplicaInput,
    },
    /// Completion of a [`BrokerEffect::ReadRanges`].
    RangesRead {
        /// The read.
        token: ReadToken,
        /// The bytes of each range, or the disk error.
        result: Result<Vec<Bytes>, DiskError>,
    },
    /// Completion of a [`BrokerEffect::PersistMetadata`].
    MetadataPersisted {
        /// The version written.
        version: u64,
        /// Whether it is durable.
        result: Result<(), DiskError>,
    },
    /// Completion of a [`BrokerEffect::Store`].
    Store {
        /// The partition.
        key: PartitionKey,
        /// Quoted from the effect.
        owner: StoreOwner,
        /// The answer.
        completion: StoreCompletion,
    },
    /// A message from another shard.
    FromShard {
        /// Sender.
        from: ShardId,
        /// The message.
        message: ShardMessage,
    },
    /// (Shard 0, cluster mode) a frame from a peer broker.
    Peer(crate::rpc::Frame),
    /// (Shard 0, cluster mode) completion of a [`BrokerEffect::Controller`].
    Controller(crate::controller::ControllerInput),
}

/// Something the runtime must do for the broker.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum BrokerEffect {
    /// Send one response frame on a connection: its chunks, in order.
    Send {
        /// The connection.
        connection: ConnectionId,
        /// The frame (a Fetch response's record sets are chunks of their own, the
        /// buffers they were read into).
        frame: crate::kafka::ResponseFrame,
    },
    /// Close a connection (after sending what was queued before this effect).
    Close {
        /// The connection.
        connection: ConnectionId,
        /// Why (for the runtime's log).
        reason: String,
    },
    /// Prepare storage for a new partition replica (create its directory).
    OpenPartition {
        /// The partition.
        key: PartitionKey,
    },
    /// Delete a partition replica's storage (topic deleted).
    RemovePartition {
        /// The partition.
        key: PartitionKey,
    },
    /// An effect of a partition replica.
    Partition {
        /// The partition.
        key: PartitionKey,
        /// The effect.
        effect: ReplicaEffect,
    },
    /// Read file ranges of a partition for a fetch; answer with
    /// [`BrokerInput::RangesRead`].
    ReadRanges {
        /// The partition.
        key: PartitionKey,
        /// Quote in the answer.
        token: ReadToken,
        /// The ranges.
        ranges: Vec<FileRange>,
    },
    /// Durably replace the node's metadata file with `data`.
    PersistMetadata {
        /// Version, quoted in the answer.
        version: u64,
        /// Encoded metadata.
        data: Bytes,
    },
    /// One object-store operation; answer with [`BrokerInput::Store`].
    Store {
        /// The partition (whose segment files a local-segment put reads).
        key: PartitionKey,
        /// Quote in the answer.
        owner: StoreOwner,
        /// The operation.
        effect: TierEffect,
    },
    /// Deliver a message to another shard (in order per pair of shards).
    ToShard {
        /// Recipient.
        to: ShardId,
        /// The message (plain data, `Send`).
        message: ShardMessage,
    },
    /// (Cluster mode) send an encoded RPC frame to a peer broker. Frames may be lost
    /// (Raft sends again); frames to one peer leave in order.
    SendPeer {
        /// The peer's broker id.
        node: u64,
        /// One whole frame.
        bytes: Bytes,
    },
    /// (Shard 0, cluster mode) a peer's RPC address (new or changed).
    SetPeer {
        /// The peer's broker id.
        node: u64,
        /// `host:port` of its RPC listener.
        addr: String,
    },
    /// (Shard 0, cluster mode) a storage effect of the controller replica; answer with
    /// [`BrokerInput::Controller`] (see [`crate::controller`], "Hosting it").
    Controller(crate::controller::ControllerEffect),
}
