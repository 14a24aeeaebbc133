//! # Broker-to-broker RPC frames
//!
//! What brokers say to each other about their Raft groups, as bytes: versioned,
//! CRC32C-checksummed frames ([`frame`]) each carrying many messages of many groups
//! for one broker pair, and the coalesced heartbeats of every group two brokers share
//! (DESIGN.md §7, "heartbeats per node pair"). [`Outbox`] batches outgoing messages per
//! peer; [`FrameDecoder`] reassembles incoming frames from a byte stream within fixed
//! bounds. Sans-IO: the runtime owns the sockets.
//!
//! * [`frame`] — frame layout, encode, bounded decode.
//! * [`message`] — the encoding of each Raft message body.
//! * [`outbox`] — batching per peer and heartbeat coalescing.
//! * [`cluster`] — the non-Raft messages: forwarded controller commands, leaderships.

pub mod cluster;
pub mod frame;
pub mod message;
pub mod outbox;

pub use cluster::{ClusterMessage, LeaderNote, OpReference, RemoteOp};
pub use frame::{
    decode_frame, encode_cluster_frame, encode_frame, frame_size, Frame, FrameDecoder, FrameError, FrameKind,
    FrameLimits, GroupId, GroupMessage, FRAME_HEADER_BYTES, FRAME_VERSION,
};
pub use outbox::{Outbox, OutboxConfig, OutboxError};
