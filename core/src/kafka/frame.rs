//! Kafka framing: a connection's byte stream cut into size-prefixed frames.
//!
//! Every Kafka request and response is a 4-byte big-endian `int32` size followed by that
//! many bytes. [`FrameDecoder`] is sans-IO: the runtime hands it whatever bytes the
//! socket produced ([`FrameDecoder::push`]) and takes complete frames out
//! ([`FrameDecoder::next_frame`]), each the payload without its size prefix.
//!
//! Limits: a frame larger than `max_frame_bytes` (default 100 MiB, Kafka's
//! `socket.request.max.bytes`) or with a size ≤ 0 is a [`FrameError`]; the decoder then
//! stays failed and the runtime closes the connection. The decoder never buffers more
//! than [`FrameDecoder::capacity_bytes`]; `push` takes only what fits, so a runtime that
//! stops reading the socket while the decoder is full gets back-pressure for free.
//! Nothing here panics on any input.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes in a frame's size prefix.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// Kafka's default `socket.request.max.bytes`: 100 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 100 * 1024 * 1024;

/// A size prefix the decoder refuses. The connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is larger than the configured maximum.
    #[error("frame of {size_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    TooLarge {
        /// The size the prefix announced.
        size_bytes: u32,
        /// The configured maximum.
        max_bytes: u32,
    },
    /// The size prefix is zero or negative.
    #[error("invalid frame size {size_bytes}: must be positive")]
    InvalidSize {
        /// The size the prefix announced.
        size_bytes: i32,
    },
}

/// Cuts a byte stream into frames. One per connection.
///
/// Memory: between frames the decoder holds no buffer; a frame pushed whole into an
/// empty decoder is copied once into an allocation of exactly its size, which the
/// returned frame owns — or, through [`FrameDecoder::push_bytes`] when the pushed
/// `Bytes` is exactly one frame (as the real runtime's admission hands them over), not
/// copied at all.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: u32,
    /// A whole frame's payload taken without a copy; it precedes `buffer`.
    whole: Option<Bytes>,
    buffer: BytesMut,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder accepting frames of at most `max_frame_bytes` (payload, without the
    /// prefix). `max_frame_bytes` is clamped to `1..=i32::MAX`.
    pub fn new(max_frame_bytes: u32) -> Self {
        let max_frame_bytes = max_frame_bytes.clamp(1, i32::MAX as u32);
        FrameDecoder {
            max_frame_bytes,
            whole: None,
            buffer: BytesMut::new(),
            failed: None,
        }
    }

    /// The largest payload accepted.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// The most bytes the decoder ever holds: one maximal frame with its prefix.
    pub fn capacity_bytes(&self) -> usize {
        SIZE_PREFIX_BYTES + self.max_frame_bytes as usize
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() + self.whole.as_ref().map_or(0, |w| SIZE_PREFIX_BYTES + w.len())
    }

    /// How many more bytes [`FrameDecoder::push`] would take now.
    pub fn free_bytes(&self) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        self.capacity_bytes().saturating_sub(self.buffered_bytes())
    }

    /// Like [`FrameDecoder::push`], but when nothing is buffered and `data` is exactly
    /// one whole, valid frame, keeps it as it is: the frame returned is a slice of
    /// `data`, not a copy. Anything else is copied as `push` does.
    pub fn push_bytes(&mut self, data: &Bytes) -> usize {
        if self.failed.is_none() && self.whole.is_none() && self.buffer.is_empty() {
            if let Some(prefix) = data.get(..SIZE_PREFIX_BYTES) {
                let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                let exact = usize::try_from(size)
                    .is_ok_and(|size| size > 0 && SIZE_PREFIX_BYTES + size == data.len());
                if exact && size as u32 <= self.max_frame_bytes {
                    self.whole = Some(data.slice(SIZE_PREFIX_BYTES..));
                    return data.len();
                }
            }
        }
        self.push(data)
    }

    /// Appends as much of `data` as fits ([`FrameDecoder::free_bytes`]) and returns how
    /// many bytes were taken; the caller keeps the rest for after it has drained frames.
    /// A failed decoder takes nothing.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let taken = data.len().min(self.free_bytes());
        self.buffer.extend_from_slice(&data[..taken]);
        taken
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed, or the
    /// error that makes the connection unusable (returned again on every later call).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if let Some(whole) = self.whole.take() {
            return Ok(Some(whole));
        }
        let Some(size_bytes) = self.peek_size()? else {
            return Ok(None);
        };
        let frame_end = SIZE_PREFIX_BYTES + size_bytes;
        if self.buffer.len() < frame_end {
            return Ok(None);
        }
        let mut frame = if self.buffer.len() == frame_end {
            // The buffer holds exactly this frame: the frame takes the allocation and
            // the decoder keeps none (a split would leave the decoder sharing it, so an
            // idle connection would pin a frame-sized buffer).
            std::mem::take(&mut self.buffer)
        } else {
            self.buffer.split_to(frame_end)
        };
        frame.advance(SIZE_PREFIX_BYTES);
        let frame = frame.freeze();
        assert_eq!(frame.len(), size_bytes, "split a whole frame");
        Ok(Some(frame))
    }

    /// The payload size of the frame at the head of the buffer, validated, once its
    /// prefix has arrived.
    fn peek_size(&mut self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buffer.get(..SIZE_PREFIX_BYTES) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let error = if size <= 0 {
            FrameError::InvalidSize { size_bytes: size }
        } else if size as u32 > self.max_frame_bytes {
            FrameError::TooLarge {
                size_bytes: size as u32,
                max_bytes: self.max_frame_bytes,
            }
        } else {
            return Ok(Some(size as usize));
        };
        self.failed = Some(error);
        self.buffer = BytesMut::new();
        Err(error)
    }
}

/// Prefixes `payload` with its size, as a frame ready for the socket. Test and client
/// helper; responses are framed by [`crate::kafka::encode_response`].
pub fn frame(payload: &[u8]) -> Option<Bytes> {
    let size = i32::try_from(payload.len()).ok()?;
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + payload.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(payload);
    Some(out.freeze())
}
