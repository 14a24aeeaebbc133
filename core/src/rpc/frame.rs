//! RPC frames between two brokers: a fixed header and a body of many group messages.
//!
//! ```text
//! length   u32  bytes after this field (header rest + body)
//! version  u16  FRAME_VERSION
//! kind     u16  FrameKind
//! crc32c   u32  of version, kind and body
//! body:    from u64, to u64, count u32, then per message: group u64, term u64, and
//!          - Raft frames: a tagged message body (any Raft message)
//!          - Heartbeats: commit (opt u64), round u64
//!          - HeartbeatResponses: round u64, received (opt u64)
//! ```
//!
//! All integers big-endian. Decoding is bounded by [`FrameLimits`]: the length is
//! checked before anything is buffered, every count against the bytes that remain,
//! so a garbage stream costs at most one bounded buffer and yields a [`FrameError`].

use bytes::Bytes;

use super::cluster::{put_cluster_message, read_cluster_message, ClusterMessage, MIN_CLUSTER_MESSAGE_BYTES};
use super::message::{
    is_heartbeat, is_heartbeat_resp, put_body, put_heartbeat, put_heartbeat_resp, read_body, read_heartbeat,
    read_heartbeat_resp,
};
use crate::controller::codec::{DecodeError, Put, Reader};
use crate::raft::{Message, MessageBody, NodeId};

/// Version of the frame format written by this build.
pub const FRAME_VERSION: u16 = 1;
/// Bytes of the fixed header (length, version, kind, checksum).
pub const FRAME_HEADER_BYTES: usize = 4 + 2 + 2 + 4;
/// Bytes of the body's fixed start (from, to, count).
const BODY_PREFIX_BYTES: usize = 8 + 8 + 4;
/// Smallest message in any frame: group, term, a tag or a compact heartbeat answer.
const MIN_MESSAGE_BYTES: usize = 8 + 8 + 1;

/// A Raft group id; group 0 is the controller.
pub type GroupId = u64;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// Any Raft messages of many groups.
    Raft,
    /// Coalesced heartbeats of every group the two brokers share.
    Heartbeats,
    /// The answers to coalesced heartbeats.
    HeartbeatResponses,
    /// Cluster messages (forwarded controller commands, leaderships): see
    /// [`super::cluster`].
    Cluster,
}

impl FrameKind {
    fn code(self) -> u16 {
        match self {
            FrameKind::Raft => 1,
            FrameKind::Heartbeats => 2,
            FrameKind::HeartbeatResponses => 3,
            FrameKind::Cluster => 4,
        }
    }

    fn from_code(code: u16) -> Result<Self, FrameError> {
        match code {
            1 => Ok(FrameKind::Raft),
            2 => Ok(FrameKind::Heartbeats),
            3 => Ok(FrameKind::HeartbeatResponses),
            4 => Ok(FrameKind::Cluster),
            other => Err(FrameError::UnknownKind(other)),
        }
    }

    /// The kind of frame that carries `message`.
    pub fn for_message(message: &Message) -> FrameKind {
        if is_heartbeat(message) {
            FrameKind::Heartbeats
        } else if is_heartbeat_resp(message) {
            FrameKind::HeartbeatResponses
        } else {
            FrameKind::Raft
        }
    }
}

/// One message of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMessage {
    /// The group.
    pub group: GroupId,
    /// The message (its `from`/`to` are the frame's).
    pub message: Message,
}

/// A decoded frame: messages from one broker to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub kind: FrameKind,
    /// Sending broker.
    pub from: NodeId,
    /// Receiving broker.
    pub to: NodeId,
    /// The Raft messages, in the order sent (empty in a cluster frame).
    pub messages: Vec<GroupMessage>,
    /// The cluster messages, in the order sent (only in a [`FrameKind::Cluster`] frame).
    pub cluster: Vec<ClusterMessage>,
}

/// Bounds of the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame (header included).
    pub max_frame_bytes: usize,
    /// Most messages in one frame.
    pub max_messages: usize,
    /// Most entries in one append message.
    pub max_entries_per_message: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_frame_bytes: 16 << 20,
            max_messages: 100_000,
            max_entries_per_message: 100_000,
        }
    }
}

/// Why bytes are not a frame (or a frame cannot be built).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared length is below the header or above the limit.
    #[error("frame length {length_bytes} outside {min_bytes}..={max_bytes}")]
    BadLength {
        /// Declared.
        length_bytes: u64,
        /// Smallest possible.
        min_bytes: u64,
        /// Configured bound.
        max_bytes: u64,
    },
    /// A version this build does not speak.
    #[error("unsupported frame version {0}")]
    UnsupportedVersion(u16),
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u16),
    /// The checksum does not match.
    #[error("frame checksum mismatch")]
    Checksum,
    /// The body is malformed.
    #[error("malformed frame body: {0}")]
    Body(#[from] DecodeError),
    /// Too many messages.
    #[error("{count} messages in one frame, limit {limit}")]
    TooManyMessages {
        /// Found.
        count: usize,
        /// Bound.
        limit: usize,
    },
    /// A message does not belong in a frame of this kind or broker pair (encoding).
    #[error("message {0} does not fit this frame")]
    Mismatch(&'static str),
    /// An earlier frame of this stream was refused; the stream is out of step and the
    /// connection must be closed.
    #[error("the stream is broken by an earlier bad frame")]
    StreamBroken,
}

pub(super) fn put_message(out: &mut Vec<u8>, kind: FrameKind, m: &GroupMessage) -> Result<(), FrameError> {
    out.put_u64v(m.group);
    out.put_u64v(m.message.term);
    match (kind, &m.message.body) {
        (FrameKind::Heartbeats, MessageBody::Heartbeat(h)) => put_heartbeat(out, h),
        (FrameKind::HeartbeatResponses, MessageBody::HeartbeatResp(h)) => put_heartbeat_resp(out, h),
        (FrameKind::Raft, body) => put_body(out, body),
        (_, body) => return Err(FrameError::Mismatch(body.name())),
    }
    Ok(())
}

/// Encodes one frame. Every message must go from `frame.from` to `frame.to` and, for
/// heartbeat kinds, be a heartbeat (answer).
pub fn encode_frame(frame: &Frame) -> Result<Bytes, FrameError> {
    let mut body = Vec::new();
    body.put_u64v(frame.from);
    body.put_u64v(frame.to);
    if frame.kind == FrameKind::Cluster {
        if !frame.messages.is_empty() {
            return Err(FrameError::Mismatch("raft message in a cluster frame"));
        }
        body.put_u32v(u32::try_from(frame.cluster.len()).unwrap_or(u32::MAX));
        for m in &frame.cluster {
            put_cluster_message(&mut body, m);
        }
        return Ok(seal_frame(frame.kind, &body));
    }
    if !frame.cluster.is_empty() {
        return Err(FrameError::Mismatch("cluster message in a raft frame"));
    }
    body.put_u32v(u32::try_from(frame.messages.len()).unwrap_or(u32::MAX));
    for m in &frame.messages {
        if m.message.from != frame.from || m.message.to != frame.to {
            return Err(FrameError::Mismatch("addressed to another broker pair"));
        }
        put_message(&mut body, frame.kind, m)?;
    }
    Ok(seal_frame(frame.kind, &body))
}

pub(super) fn seal_frame(kind: FrameKind, body: &[u8]) -> Bytes {
    let mut checked = Vec::with_capacity(4 + body.len());
    checked.put_u16v(FRAME_VERSION);
    checked.put_u16v(kind.code());
    checked.extend_from_slice(body);
    let crc = crc32c::crc32c(&checked);
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    out.put_u32v(u32::try_from(FRAME_HEADER_BYTES - 4 + body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&checked[..4]);
    out.put_u32v(crc);
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The total size of the frame starting at `bytes`, once its length field is there
/// (checked against the limits), or `None` if fewer than 4 bytes are available.
pub fn frame_size(bytes: &[u8], limits: &FrameLimits) -> Result<Option<usize>, FrameError> {
    let Some(raw) = bytes.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
    let total = length.saturating_add(4);
    let min = FRAME_HEADER_BYTES + BODY_PREFIX_BYTES;
    if total < min || total > limits.max_frame_bytes {
        return Err(FrameError::BadLength {
            length_bytes: total as u64,
            min_bytes: min as u64,
            max_bytes: limits.max_frame_bytes as u64,
        });
    }
    Ok(Some(total))
}

/// Decodes the frame at the start of `bytes`: `Ok(None)` if it is not all there yet,
/// else the frame and the bytes it used.
pub fn decode_frame(bytes: &[u8], limits: &FrameLimits) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(total) = frame_size(bytes, limits)? else {
        return Ok(None);
    };
    let Some(frame_bytes) = bytes.get(..total) else {
        return Ok(None);
    };
    let version = u16::from_be_bytes([frame_bytes[4], frame_bytes[5]]);
    if version != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let kind_code = u16::from_be_bytes([frame_bytes[6], frame_bytes[7]]);
    let stored_crc = u32::from_be_bytes([frame_bytes[8], frame_bytes[9], frame_bytes[10], frame_bytes[11]]);
    let body = &frame_bytes[FRAME_HEADER_BYTES..];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&frame_bytes[4..8]), body);
    if crc != stored_crc {
        return Err(FrameError::Checksum);
    }
    let kind = FrameKind::from_code(kind_code)?;
    let frame = decode_body(kind, body, limits)?;
    Ok(Some((frame, total)))
}

fn decode_body(kind: FrameKind, body: &[u8], limits: &FrameLimits) -> Result<Frame, FrameError> {
    let mut r = Reader::new(body);
    let from = r.u64()?;
    let to = r.u64()?;
    if kind == FrameKind::Cluster {
        return decode_cluster_body(from, to, r, limits);
    }
    let count = r.count("messages", MIN_MESSAGE_BYTES)?;
    if count > limits.max_messages {
        return Err(FrameError::TooManyMessages {
            count,
            limit: limits.max_messages,
        });
    }
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let group = r.u64()?;
        let term = r.u64()?;
        let body = match kind {
            FrameKind::Raft => read_body(&mut r, limits.max_entries_per_message)?,
            FrameKind::Heartbeats => MessageBody::Heartbeat(read_heartbeat(&mut r)?),
            FrameKind::HeartbeatResponses => MessageBody::HeartbeatResp(read_heartbeat_resp(&mut r)?),
            FrameKind::Cluster => return Err(FrameError::Mismatch("cluster frame")),
        };
        messages.push(GroupMessage {
            group,
            message: Message { from, to, term, body },
        });
    }
    r.finish()?;
    Ok(Frame {
        kind,
        from,
        to,
        messages,
        cluster: Vec::new(),
    })
}

fn decode_cluster_body(
    from: NodeId,
    to: NodeId,
    mut r: Reader<'_>,
    limits: &FrameLimits,
) -> Result<Frame, FrameError> {
    let count = r.count("cluster messages", MIN_CLUSTER_MESSAGE_BYTES)?;
    if count > limits.max_messages {
        return Err(FrameError::TooManyMessages {
            count,
            limit: limits.max_messages,
        });
    }
    let mut cluster = Vec::with_capacity(count);
    for _ in 0..count {
        cluster.push(read_cluster_message(&mut r)?);
    }
    r.finish()?;
    Ok(Frame {
        kind: FrameKind::Cluster,
        from,
        to,
        messages: Vec::new(),
        cluster,
    })
}

/// Encodes cluster messages from `from` to `to` as one frame.
pub fn encode_cluster_frame(from: NodeId, to: NodeId, messages: Vec<ClusterMessage>) -> Bytes {
    let mut body = Vec::new();
    body.put_u64v(from);
    body.put_u64v(to);
    body.put_u32v(u32::try_from(messages.len()).unwrap_or(u32::MAX));
    for m in &messages {
        put_cluster_message(&mut body, m);
    }
    seal_frame(FrameKind::Cluster, &body)
}

/// Reassembles frames from a byte stream (one connection), holding at most one
/// frame's bytes beyond what was consumed.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: FrameLimits,
    buffer: Vec<u8>,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder with these bounds.
    pub fn new(limits: FrameLimits) -> Self {
        FrameDecoder {
            limits,
            buffer: Vec::new(),
            failed: false,
        }
    }

    /// How many bytes the decoder can take now without exceeding its bound (the
    /// caller reads at most this much from the socket).
    pub fn capacity_bytes(&self) -> usize {
        self.limits.max_frame_bytes.saturating_sub(self.buffer.len())
    }

    /// Adds received bytes; at most [`FrameDecoder::capacity_bytes`] are taken, the
    /// count is returned (none once the stream is broken).
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        if self.failed {
            return 0;
        }
        let n = bytes.len().min(self.capacity_bytes());
        self.buffer.extend_from_slice(&bytes[..n]);
        n
    }

    /// The next whole frame, if one is buffered. After an error the stream is out of
    /// step: the connection must be closed (every later call returns
    /// [`FrameError::StreamBroken`] without looking at more bytes).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.failed {
            return Err(FrameError::StreamBroken);
        }
        match decode_frame(&self.buffer, &self.limits) {
            Ok(Some((frame, used))) => {
                self.buffer.drain(..used);
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = true;
                self.buffer = Vec::new();
                Err(e)
            }
        }
    }
}
