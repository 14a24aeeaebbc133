//! [`Outbox`]: batches the Raft messages a broker sends — of every group — into one
//! frame per peer broker and kind, and coalesces heartbeats: once per heartbeat
//! interval the runtime hands in what every group it leads has to say
//! ([`crate::raft::Raft::take_heartbeats`]), and each peer gets one compact
//! heartbeat frame holding all groups the two brokers share; the answers (each group's
//! `HeartbeatResp` send effects) travel back in one compact frame the same way.
//!
//! Bounds: each message is encoded when pushed; a message bigger than a frame is
//! refused ([`OutboxError::TooLarge`]; keep `RaftConfig::max_append_bytes` and
//! `snapshot_chunk_bytes` well below `max_frame_bytes`), and at most
//! `max_pending_bytes` wait for a flush ([`OutboxError::Full`]: drop the message, Raft
//! resends). A flush splits a peer's messages over as many frames as needed, in order.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::frame::{put_message, seal_frame, FrameKind, GroupId, GroupMessage, FRAME_HEADER_BYTES};
use crate::controller::codec::Put;
use crate::raft::{Message, NodeId};

/// Bounds of an [`Outbox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Largest frame produced (header included); match the peer's `FrameLimits`.
    pub max_frame_bytes: usize,
    /// Most encoded bytes waiting for a flush, over all peers.
    pub max_pending_bytes: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_frame_bytes: 16 << 20,
            max_pending_bytes: 64 << 20,
        }
    }
}

/// Why a message was not queued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The message is not from this broker.
    #[error("message from {from} pushed into the outbox of broker {node}")]
    NotOurs {
        /// The message's sender.
        from: NodeId,
        /// This broker.
        node: NodeId,
    },
    /// The message alone exceeds a frame.
    #[error("message of {size_bytes} bytes exceeds frames of {max_bytes}")]
    TooLarge {
        /// Its encoded size.
        size_bytes: usize,
        /// The frame bound.
        max_bytes: usize,
    },
    /// Too many bytes wait for a flush.
    #[error("outbox full ({pending_bytes} bytes pending)")]
    Full {
        /// Bytes waiting.
        pending_bytes: usize,
    },
}

/// Messages from this broker waiting to be framed, per (peer, kind). See module docs.
#[derive(Debug)]
pub struct Outbox {
    node: NodeId,
    config: OutboxConfig,
    /// Encoded messages per destination and kind, in push order.
    pending: BTreeMap<(NodeId, FrameKind), Vec<Vec<u8>>>,
    pending_bytes: usize,
}

/// Bytes of a frame body's fixed start (from, to, count).
const BODY_PREFIX_BYTES: usize = 8 + 8 + 4;

impl Outbox {
    /// An empty outbox of broker `node`.
    pub fn new(node: NodeId, config: OutboxConfig) -> Self {
        Outbox {
            node,
            config,
            pending: BTreeMap::new(),
            pending_bytes: 0,
        }
    }

    /// Bytes waiting for a flush.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Queues one message of `group`.
    pub fn push(&mut self, group: GroupId, message: Message) -> Result<(), OutboxError> {
        if message.from != self.node {
            return Err(OutboxError::NotOurs {
                from: message.from,
                node: self.node,
            });
        }
        let kind = FrameKind::for_message(&message);
        let to = message.to;
        let mut encoded = Vec::new();
        let fits_kind = put_message(&mut encoded, kind, &GroupMessage { group, message });
        assert!(fits_kind.is_ok(), "the kind is chosen from the message");
        let max_body = self
            .config
            .max_frame_bytes
            .saturating_sub(FRAME_HEADER_BYTES + BODY_PREFIX_BYTES);
        if encoded.len() > max_body {
            return Err(OutboxError::TooLarge {
                size_bytes: encoded.len(),
                max_bytes: self.config.max_frame_bytes,
            });
        }
        if self.pending_bytes + encoded.len() > self.config.max_pending_bytes {
            return Err(OutboxError::Full {
                pending_bytes: self.pending_bytes,
            });
        }
        self.pending_bytes += encoded.len();
        self.pending.entry((to, kind)).or_default().push(encoded);
        Ok(())
    }

    /// Queues the heartbeats every led group returned from `take_heartbeats` this
    /// interval; they leave as one compact frame per peer on the next flush.
    pub fn push_heartbeats(
        &mut self,
        groups: impl IntoIterator<Item = (GroupId, Vec<Message>)>,
    ) -> Result<(), OutboxError> {
        for (group, heartbeats) in groups {
            for message in heartbeats {
                self.push(group, message)?;
            }
        }
        Ok(())
    }

    /// Everything queued, as frames: `(peer, frame bytes)`, ordered by peer, then kind,
    /// then push order.
    pub fn flush(&mut self) -> Vec<(NodeId, Bytes)> {
        let max_body = self.config.max_frame_bytes.saturating_sub(FRAME_HEADER_BYTES);
        let mut frames = Vec::new();
        for ((to, kind), messages) in std::mem::take(&mut self.pending) {
            let mut start = 0;
            while start < messages.len() {
                let mut size = BODY_PREFIX_BYTES;
                let mut end = start;
                while end < messages.len() && size + messages[end].len() <= max_body {
                    size += messages[end].len();
                    end += 1;
                }
                assert!(end > start, "every queued message fits a frame");
                frames.push((to, self.frame(to, kind, &messages[start..end], size)));
                start = end;
            }
        }
        self.pending_bytes = 0;
        frames
    }

    fn frame(&self, to: NodeId, kind: FrameKind, messages: &[Vec<u8>], size: usize) -> Bytes {
        let mut body = Vec::with_capacity(size);
        body.put_u64v(self.node);
        body.put_u64v(to);
        body.put_u32v(u32::try_from(messages.len()).unwrap_or(u32::MAX));
        for m in messages {
            body.extend_from_slice(m);
        }
        seal_frame(kind, &body)
    }
}
