//! The engine's side of the sans-IO door: [`Input`]s the runtime hands in and
//! [`Effect`]s it must carry out. See the module docs of [`super`] for the contract.

use bytes::Bytes;

use super::message::{Message, SnapshotMeta};
use super::types::{Entry, HardState, Index, LogId, NodeId, ReadId, Role, Term, WriteId};

/// Something that happened outside the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A message from a peer.
    Message(Message),
    /// Every write effect with id `<= write_id` is durable (in emission order).
    WriteDurable {
        /// The newest durable write.
        write_id: WriteId,
    },
    /// This hard state (the newest one requested, or an older one) is durable.
    HardStateDurable(HardState),
    /// Result of [`Effect::ReadEntries`].
    EntriesRead {
        /// The read this answers.
        read_id: ReadId,
        /// Entries starting with the one that contains `from_index`, contiguous, or why
        /// not.
        result: Result<Vec<Entry>, ReadError>,
    },
    /// Result of [`Effect::ReadSnapshotChunk`].
    SnapshotChunkRead {
        /// The read this answers.
        read_id: ReadId,
        /// The chunk, or why not.
        result: Result<SnapshotChunkData, ReadError>,
    },
}

/// Bytes read from a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunkData {
    /// The bytes starting at the requested offset.
    pub data: Bytes,
    /// Whether they reach the end of the snapshot.
    pub done: bool,
}

/// Why a read could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The offsets were compacted away (a snapshot will be sent instead).
    #[error("offsets compacted")]
    Compacted,
    /// The snapshot asked for no longer exists.
    #[error("snapshot gone")]
    SnapshotGone,
    /// The storage failed.
    #[error("storage error")]
    Storage,
}

/// Who a read of entries is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReadTarget {
    /// To replicate to this follower.
    Peer(NodeId),
    /// To apply committed entries locally.
    Apply,
}

/// Something the runtime must do. Writes (`Append`, `Truncate`, `WriteSnapshotChunk`,
/// `InstallSnapshot`) must be executed in the order emitted and acknowledged with
/// [`Input::WriteDurable`]; `PersistHardState` with [`Input::HardStateDurable`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Send a message to `message.to`.
    Send(Message),
    /// Persist term and vote (in the per-shard key-value log).
    PersistHardState(HardState),
    /// Append entries at the end of the log (the first starts right after the log's end).
    Append {
        /// Id of this write.
        write_id: WriteId,
        /// The entries, contiguous.
        entries: Vec<Entry>,
    },
    /// Remove every entry at offset `>= from_index` (before appending conflicting ones).
    Truncate {
        /// Id of this write.
        write_id: WriteId,
        /// First offset removed; always the first offset of an entry.
        from_index: Index,
    },
    /// Store one received snapshot chunk (at `offset` of snapshot `meta`).
    WriteSnapshotChunk {
        /// Id of this write.
        write_id: WriteId,
        /// Which snapshot.
        meta: SnapshotMeta,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
        /// Last chunk.
        done: bool,
    },
    /// Make the fully received snapshot `meta` the node's snapshot: drop log entries
    /// through `meta.last.index`, or the whole log if `discard_log`. The state machine is
    /// loaded later, on [`Effect::RestoreSnapshot`].
    InstallSnapshot {
        /// Id of this write.
        write_id: WriteId,
        /// The snapshot.
        meta: SnapshotMeta,
        /// The log does not contain the snapshot's last entry: drop all of it.
        discard_log: bool,
    },
    /// The log prefix through `through_index` may be deleted (a snapshot covers it).
    CompactLog {
        /// Last offset that may be deleted.
        through_index: Index,
    },
    /// Read entries from the log, starting with the entry that contains `from_index`,
    /// up to about `max_bytes` (at least one entry); answer with [`Input::EntriesRead`].
    ReadEntries {
        /// Id to quote in the answer.
        read_id: ReadId,
        /// Who it is for (informational).
        target: ReadTarget,
        /// First offset wanted.
        from_index: Index,
        /// Size bound.
        max_bytes: usize,
    },
    /// Read `max_bytes` of snapshot `snapshot` from byte `offset`; answer with
    /// [`Input::SnapshotChunkRead`].
    ReadSnapshotChunk {
        /// Id to quote in the answer.
        read_id: ReadId,
        /// The follower it is for.
        peer: NodeId,
        /// The snapshot.
        snapshot: LogId,
        /// Byte offset.
        offset: u64,
        /// Size bound.
        max_bytes: usize,
    },
    /// Apply these committed entries to the state machine, in order.
    Apply {
        /// Contiguous committed entries following the last applied ones.
        entries: Vec<Entry>,
    },
    /// Load the state machine from the (installed, durable) snapshot `meta`.
    RestoreSnapshot {
        /// The snapshot.
        meta: SnapshotMeta,
    },
    /// The commit offset advanced (high watermark = `commit + 1`).
    CommitAdvanced {
        /// Last committed offset.
        commit: Index,
    },
    /// Role, term or known leader changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The term.
        term: Term,
        /// The leader, if known.
        leader: Option<NodeId>,
    },
}
