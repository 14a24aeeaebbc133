//! The byte-level codec shared by controller commands, controller snapshots and the
//! broker-to-broker RPC frames: big-endian integers, `u16`-length strings and
//! `u32`-length byte strings, written into a `Vec<u8>` and read back by a [`Reader`]
//! that checks every length against the bytes that remain before it slices or
//! allocates, so garbage input yields a [`DecodeError`], never a panic or an
//! allocation larger than the input.

use bytes::Bytes;

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("truncated: needed {needed_bytes} more bytes at byte {at}")]
    Truncated {
        /// Where the read started.
        at: usize,
        /// Bytes it needed.
        needed_bytes: usize,
    },
    /// A string is not UTF-8.
    #[error("a string at byte {0} is not UTF-8")]
    NotUtf8(usize),
    /// A value is outside its allowed range or an enum tag is unknown.
    #[error("invalid {what}: {value}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value found.
        value: i64,
    },
    /// The checksum does not match the bytes.
    #[error("checksum mismatch")]
    Checksum,
    /// Wrong magic bytes: not this format.
    #[error("not a {0}")]
    BadMagic(&'static str),
    /// A format version this build does not know.
    #[error("unknown {what} version {version}")]
    UnknownVersion {
        /// Which format.
        what: &'static str,
        /// The version found.
        version: u16,
    },
    /// Bytes left over after the value.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A count or size above the configured bound.
    #[error("{what} of {value} exceeds the limit of {limit}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The bound.
        limit: u64,
    },
}

/// Appends big-endian values to a buffer.
pub(crate) trait Put {
    fn put_u8v(&mut self, v: u8);
    fn put_u16v(&mut self, v: u16);
    fn put_u32v(&mut self, v: u32);
    fn put_u64v(&mut self, v: u64);
    fn put_i32v(&mut self, v: i32);
    /// A string of at most `u16::MAX` bytes (longer ones are refused by validation
    /// before they get here; the assertion guards the invariant).
    fn put_str(&mut self, s: &str);
    fn put_bytes32(&mut self, b: &[u8]);
    fn put_opt_u64(&mut self, v: Option<u64>);
}

impl Put for Vec<u8> {
    fn put_u8v(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16v(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32v(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64v(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_i32v(&mut self, v: i32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_str(&mut self, s: &str) {
        let len = u16::try_from(s.len());
        assert!(len.is_ok(), "strings are validated to fit a u16 length");
        self.put_u16v(len.unwrap_or(u16::MAX));
        self.extend_from_slice(s.as_bytes());
    }
    fn put_bytes32(&mut self, b: &[u8]) {
        let len = u32::try_from(b.len());
        assert!(len.is_ok(), "byte strings are bounded far below 4 GiB");
        self.put_u32v(len.unwrap_or(u32::MAX));
        self.extend_from_slice(b);
    }
    fn put_opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.put_u8v(0),
            Some(v) => {
                self.put_u8v(1);
                self.put_u64v(v);
            }
        }
    }
}

/// Reads big-endian values, checking every length against what remains.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                at: self.at,
                needed_bytes: n - self.remaining(),
            });
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::Invalid {
                what: "boolean",
                value: i64::from(other),
            }),
        }
    }
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        let at = self.at;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_string)
            .map_err(|_| DecodeError::NotUtf8(at))
    }
    pub(crate) fn bytes32(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
    pub(crate) fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        if self.bool()? {
            Ok(Some(self.u64()?))
        } else {
            Ok(None)
        }
    }
    /// A count of items each at least `min_item_bytes` long: refused when the rest of
    /// the input could not hold that many, so no loop or allocation trusts it.
    pub(crate) fn count(&mut self, what: &'static str, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        let fits = count.saturating_mul(min_item_bytes.max(1)) <= self.remaining();
        if !fits {
            return Err(DecodeError::TooLarge {
                what,
                value: count as u64,
                limit: (self.remaining() / min_item_bytes.max(1)) as u64,
            });
        }
        Ok(count)
    }
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// Splits `bytes` into the body and its trailing CRC32C and checks it.
pub(crate) fn split_checked(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError::Truncated {
            at: 0,
            needed_bytes: 4 - bytes.len(),
        });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(DecodeError::Checksum);
    }
    Ok(body)
}

/// Appends the CRC32C of everything in `out`.
pub(crate) fn seal(out: &mut Vec<u8>) {
    let crc = crc32c::crc32c(out);
    out.put_u32v(crc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_beyond_the_input_are_errors() {
        let mut r = Reader::new(&[0, 5, b'a']);
        assert!(matches!(r.string(), Err(DecodeError::Truncated { .. })));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert!(matches!(r.count("things", 8), Err(DecodeError::TooLarge { .. })));
        let mut r = Reader::new(&[2]);
        assert!(r.bool().is_err());
    }

    #[test]
    fn seal_and_check() {
        let mut out = vec![1, 2, 3];
        seal(&mut out);
        assert_eq!(split_checked(&out).unwrap(), &[1, 2, 3]);
        out[1] ^= 1;
        assert_eq!(split_checked(&out), Err(DecodeError::Checksum));
    }
}
