//! The per-shard key-value log (DESIGN.md §7): small durable records of every partition
//! on a shard — today each partition's Raft hard state — in one append-only,
//! checksummed file, `<data>/oxbow/shard-<n>.kv`, so one `fdatasync` serves every
//! partition that changed since the last one.
//!
//! # Format
//!
//! A sequence of records, each `crc32c: u32 LE | body_len: u32 LE | body`, where the
//! checksum covers `body_len` and the body, and the body is
//! `kind: u8 (1 = put, 2 = delete) | key_len: u16 LE | key | value`. The last record for
//! a key wins.
//!
//! # Durability and recovery
//!
//! [`KvLog::put`] and [`KvLog::delete`] only buffer; [`KvLog::flush`] appends the buffer
//! and `fdatasync`s once, after which every buffered change is durable. A crash can
//! only tear the unsynced tail, so at start-up a record that fails its checksum or runs
//! past the end of the file is cut off *if nothing valid follows it* (a torn tail);
//! a damaged record followed by valid ones is damage to synced data and is refused
//! ([`KvError::Corrupt`]): losing a Raft vote silently would break Raft's safety.
//!
//! # Compaction
//!
//! When the file grows past `max(compact_min_bytes, compact_ratio × live bytes)`, a flush
//! rewrites it with only the live records: temporary file, `fdatasync`, rename,
//! directory fsync — the old or the new file, never a mix. A leftover temporary file
//! (a crash during compaction) is removed at start-up.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const RECORD_HEADER_BYTES: usize = 8;
const BODY_HEADER_BYTES: usize = 3;

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest value accepted.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why the key-value log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Synced data is damaged (a bad record with valid records after it).
    #[error("{path}: damaged record at byte {position} with valid records after it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged record starts.
        position: u64,
    },
    /// A key or value is larger than the format allows.
    #[error("key-value record too large: key {key_bytes} bytes (max {MAX_KEY_BYTES}), value {value_bytes} bytes (max {MAX_VALUE_BYTES})")]
    TooLarge {
        /// Key size.
        key_bytes: usize,
        /// Value size.
        value_bytes: usize,
    },
}

/// Limits of a key-value log.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KvConfig {
    /// The file is never compacted below this size.
    pub compact_min_bytes: u64,
    /// Compact when the file is this many times the size of its live records.
    pub compact_ratio: u64,
    /// Most bytes buffered between flushes; [`KvLog::put`] refuses more (flush first).
    pub max_pending_bytes: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            compact_min_bytes: 1024 * 1024,
            compact_ratio: 4,
            max_pending_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What start-up found.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct KvRecovery {
    /// Valid records read.
    pub records: u64,
    /// Bytes of a torn tail cut off (0 if the file ended cleanly).
    pub torn_bytes: u64,
    /// A temporary file of an interrupted compaction was removed.
    pub removed_tmp: bool,
}

/// Counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct KvStats {
    /// Successful flushes (each one `fdatasync`).
    pub flushes: u64,
    /// Bytes appended.
    pub written_bytes: u64,
    /// Compactions.
    pub compactions: u64,
    /// Failed flushes (the changes stay buffered and are retried).
    pub failures: u64,
}

/// The buffer is full: flush before adding more.
#[derive(Debug, thiserror::Error)]
#[error("key-value log buffer full ({max_pending_bytes} bytes): flush first")]
pub struct PendingFull {
    /// The limit.
    pub max_pending_bytes: usize,
}

/// One shard's key-value log.
#[derive(Debug)]
pub struct KvLog {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    config: KvConfig,
    entries: BTreeMap<String, Bytes>,
    /// Length of the file's valid records.
    file_bytes: u64,
    /// Encoded changes not yet written.
    pending: Vec<u8>,
    stats: KvStats,
}

/// The key-value log file of shard `shard` in `dir` (`<data>/oxbow`).
pub fn kv_path(dir: &Path, shard: u32) -> PathBuf {
    dir.join(format!("shard-{shard}.kv"))
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KvError + 'a {
    move |source| KvError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Encodes one record.
fn encode_record(out: &mut Vec<u8>, kind: u8, key: &str, value: &[u8]) {
    let body_len = BODY_HEADER_BYTES + key.len() + value.len();
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded record: kind, key, value, and its encoded length.
type Decoded<'a> = (u8, &'a str, &'a [u8], usize);

/// Decodes the record at the start of `bytes`, or `None` if it is torn or damaged.
fn decode_record(bytes: &[u8]) -> Option<Decoded<'_>> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    let crc = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let body_len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    if !(BODY_HEADER_BYTES..=BODY_HEADER_BYTES + MAX_KEY_BYTES + MAX_VALUE_BYTES).contains(&body_len) {
        return None;
    }
    let total = RECORD_HEADER_BYTES + body_len;
    let record = bytes.get(..total)?;
    if crc32c::crc32c(&record[4..]) != crc {
        return None;
    }
    let body = &record[RECORD_HEADER_BYTES..];
    let kind = body[0];
    let key_len = u16::from_le_bytes([body[1], body[2]]) as usize;
    let key = body.get(BODY_HEADER_BYTES..BODY_HEADER_BYTES + key_len)?;
    let key = std::str::from_utf8(key).ok()?;
    let value = &body[BODY_HEADER_BYTES + key_len..];
    if kind != KIND_PUT && kind != KIND_DELETE {
        return None;
    }
    Some((kind, key, value, total))
}

/// Whether any valid record starts at or after `from`.
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|at| decode_record(&bytes[at..]).is_some())
}

impl KvLog {
    /// Opens (creating if needed) shard `shard`'s log in `dir`, recovering its records.
    pub fn open(dir: &Path, shard: u32, config: KvConfig) -> Result<(KvLog, KvRecovery), KvError> {
        let path = kv_path(dir, shard);
        let tmp = path.with_extension("kv.tmp");
        let mut recovery = KvRecovery::default();
        match std::fs::remove_file(&tmp) {
            Ok(()) => recovery.removed_tmp = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("unlink", &tmp)(e)),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let bytes = std::fs::read(&path).map_err(io_error("read", &path))?;
        let mut entries = BTreeMap::new();
        let mut at = 0;
        while at < bytes.len() {
            match decode_record(&bytes[at..]) {
                Some((kind, key, value, len)) => {
                    if kind == KIND_PUT {
                        entries.insert(key.to_string(), Bytes::copy_from_slice(value));
                    } else {
                        entries.remove(key);
                    }
                    recovery.records += 1;
                    at += len;
                }
                None if valid_record_after(&bytes, at + 1) => {
                    return Err(KvError::Corrupt {
                        path,
                        position: at as u64,
                    })
                }
                None => break,
            }
        }
        recovery.torn_bytes = (bytes.len() - at) as u64;
        if recovery.torn_bytes > 0 {
            tracing::warn!(path = %path.display(), torn_bytes = recovery.torn_bytes, "kv log: cutting a torn tail");
            file.set_len(at as u64).map_err(io_error("ftruncate", &path))?;
            file.sync_data().map_err(io_error("fdatasync", &path))?;
        }
        let log = KvLog {
            dir: dir.to_path_buf(),
            path,
            file,
            config,
            entries,
            file_bytes: at as u64,
            pending: Vec::new(),
            stats: KvStats::default(),
        };
        Ok((log, recovery))
    }

    /// The durable-or-buffered value of `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.get(key)
    }

    /// Every key and value, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Counters.
    pub fn stats(&self) -> KvStats {
        self.stats
    }

    /// Size of the file's valid records.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Whether changes are buffered and not yet durable.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn check_size(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        if key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            return Err(KvError::TooLarge {
                key_bytes: key.len(),
                value_bytes: value.len(),
            });
        }
        Ok(())
    }

    fn check_room(&self, key: &str, value: &[u8]) -> Result<(), PendingFull> {
        let record_bytes = RECORD_HEADER_BYTES + BODY_HEADER_BYTES + key.len() + value.len();
        if self.pending.len() + record_bytes > self.config.max_pending_bytes {
            return Err(PendingFull {
                max_pending_bytes: self.config.max_pending_bytes,
            });
        }
        Ok(())
    }

    /// Sets `key` to `value` (durable after the next [`KvLog::flush`]). `Ok(Err(_))`:
    /// the buffer is full, flush and retry.
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<Result<(), PendingFull>, KvError> {
        self.check_size(key, value)?;
        if let Err(full) = self.check_room(key, value) {
            return Ok(Err(full));
        }
        encode_record(&mut self.pending, KIND_PUT, key, value);
        self.entries
            .insert(key.to_string(), Bytes::copy_from_slice(value));
        Ok(Ok(()))
    }

    /// Removes `key` (durable after the next [`KvLog::flush`]).
    pub fn delete(&mut self, key: &str) -> Result<Result<(), PendingFull>, KvError> {
        self.check_size(key, &[])?;
        if !self.entries.contains_key(key) {
            return Ok(Ok(()));
        }
        if let Err(full) = self.check_room(key, &[]) {
            return Ok(Err(full));
        }
        encode_record(&mut self.pending, KIND_DELETE, key, &[]);
        self.entries.remove(key);
        Ok(Ok(()))
    }

    /// Appends the buffered changes and `fdatasync`s once; then compacts if the file
    /// has grown past its bound. On failure the changes stay buffered (retry later) and
    /// the file is cut back to its last valid record.
    pub fn flush(&mut self) -> Result<(), KvError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .write_all_at(&self.pending, self.file_bytes)
            .map_err(io_error("pwrite", &self.path))
            .and_then(|()| self.file.sync_data().map_err(io_error("fdatasync", &self.path)));
        if let Err(error) = written {
            self.stats.failures += 1;
            // Best effort: a partial append would be cut at start-up anyway.
            let _ = self.file.set_len(self.file_bytes);
            return Err(error);
        }
        self.file_bytes += self.pending.len() as u64;
        self.stats.written_bytes += self.pending.len() as u64;
        self.stats.flushes += 1;
        self.pending.clear();
        if self.file_bytes > self.compact_threshold_bytes() {
            if let Err(error) = self.compact() {
                // The appended file is intact and durable; compaction is retried on the
                // next flush.
                tracing::warn!(%error, "kv log: compaction failed");
            }
        }
        Ok(())
    }

    fn live_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|(k, v)| (RECORD_HEADER_BYTES + BODY_HEADER_BYTES + k.len() + v.len()) as u64)
            .sum()
    }

    fn compact_threshold_bytes(&self) -> u64 {
        self.config
            .compact_min_bytes
            .max(self.config.compact_ratio.saturating_mul(self.live_bytes()))
    }

    /// Rewrites the file with only the live records (tmp + fdatasync + rename + dir fsync).
    pub fn compact(&mut self) -> Result<(), KvError> {
        let tmp = self.path.with_extension("kv.tmp");
        let mut image = Vec::with_capacity(self.live_bytes() as usize);
        for (key, value) in &self.entries {
            encode_record(&mut image, KIND_PUT, key, value);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_error("open", &tmp))?;
        file.write_all(&image).map_err(io_error("write", &tmp))?;
        file.sync_data().map_err(io_error("fdatasync", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_error("rename", &tmp))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("fsync", &self.dir))?;
        self.file = file;
        self.file_bytes = image.len() as u64;
        self.stats.compactions += 1;
        Ok(())
    }
}

/// Encodes a Raft hard state as a key-value log value: `term: u64 LE | has_vote: u8 |
/// vote: u64 LE`.
pub fn encode_hard_state(hs: &oxbow_core::raft::HardState) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[0..8].copy_from_slice(&hs.term.to_le_bytes());
    if let Some(vote) = hs.vote {
        out[8] = 1;
        out[9..17].copy_from_slice(&vote.to_le_bytes());
    }
    out
}

/// Decodes [`encode_hard_state`]'s output; `None` if it is not one.
pub fn decode_hard_state(bytes: &[u8]) -> Option<oxbow_core::raft::HardState> {
    if bytes.len() != 17 || bytes[8] > 1 {
        return None;
    }
    let term = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
    let vote = (bytes[8] == 1).then(|| u64::from_le_bytes(bytes[9..17].try_into().unwrap_or_default()));
    Some(oxbow_core::raft::HardState { term, vote })
}
