//! The durable storage of the controller's Raft group 0 (core's
//! [`ControllerReplica`](oxbow_core::controller::ControllerReplica)) in
//! `<data-dir>/oxbow/controller/0_0/`: the snapshot file, the log after it, the hard
//! state with the commit hint, and snapshots being received from a leader.
//!
//! [`ControllerStore`] owns that directory. It executes the replica's storage effects
//! with synchronous std file I/O (controller traffic is tiny; it runs on shard 0's
//! thread) and returns the completion to hand back, so a write is always durable
//! before it is acknowledged (DESIGN.md §2). Messages ([`RaftEffect::Send`]) are not
//! its business: [`ControllerStore::execute`] hands them back as [`Executed::Send`]
//! for the caller to route.
//!
//! # Files
//!
//! * `snapshot` — the controller's snapshot file ([`SnapshotFile`] bytes), replaced
//!   atomically: `snapshot.tmp` is written, `fdatasync`ed and renamed over it, then the
//!   directory is fsynced.
//! * `log` — the entries after the snapshot, append-only: records
//!   `crc32c: u32 LE | body_len: u32 LE | body`, the checksum covering `body_len` and
//!   the body, the body one Kafka record batch per Raft entry
//!   (`partition::control::entry_to_batch`, base offset = entry index, partition
//!   leader epoch = term), read back with `batch_to_entry`. An append is one write and
//!   one `fdatasync`; a truncation is `ftruncate` + `fdatasync`; a compaction rewrites
//!   the suffix to `log.tmp` and renames it over `log`.
//! * `state` — term, vote and the commit hint in one record of the same framing
//!   (body: `version: u8 = 1 | term: u64 LE | has_vote: u8 | vote: u64 LE |
//!   has_commit_hint: u8 | commit_hint: u64 LE`), replaced atomically through
//!   `state.tmp`.
//! * `snapshot.incoming.<term>-<index>` — a snapshot being received from the leader,
//!   chunk by chunk (each chunk `fdatasync`ed); installing it renames it over
//!   `snapshot`. At most one exists: Raft receives one snapshot at a time, so a new
//!   receipt removes an abandoned one.
//!
//! # Recovery ([`ControllerStore::open`])
//!
//! Leftover temporary files (`*.tmp`, `snapshot.incoming.*`) are removed: Raft starts
//! a receipt again from byte 0 after a restart. In the log, a record that fails its
//! checksum or runs past the end of the file is a torn tail, cut off, *if no valid
//! record follows it*; a damaged record followed by valid ones is damage to synced data
//! and is refused ([`ControllerStoreError::Corrupt`], naming the file and byte) — as is
//! a record with a good checksum that is not an entry, or entries out of order. The
//! refusal is conservative: one append writes several records with one `write`, and if
//! a crash persisted its later pages but not an earlier one, that unacknowledged write
//! is reported as damage rather than guessed at.
//!
//! Entries the snapshot covers (base offset `<=` its last index) are dropped. If the
//! log holds the snapshot's last offset with a *different* term, the node crashed
//! while installing a leader's snapshot that replaced a conflicting log
//! (`discard_log`) — after the rename of the snapshot, before the log was emptied —
//! and the whole log is dropped, as the install would have done.
//!
//! # Failures
//!
//! A write that fails (I/O error or a request that breaks the storage contract) cannot
//! be acknowledged, and the next acknowledgement would cover it (write ids are
//! cumulative), so the store stops: every later write is refused with
//! [`ControllerStoreError::Failed`]. The caller should stop the controller; a restart
//! recovers from what is on disk. Exceptions: a failed [`ControllerEffect::WriteSnapshot`]
//! answers [`ControllerInput::SnapshotFailed`] and keeps the old file; a failed commit
//! hint or compaction before its rename leaves the old file and the store running.
//!
//! # Limits
//!
//! [`ControllerStoreLimits`] bounds the snapshot file and each entry. The log after
//! the snapshot is kept in memory (for `ReadEntries`); the replica's snapshot policy
//! keeps it short (at most `max_age` of commands after the last snapshot).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use oxbow_core::controller::{
    ControllerConfig, ControllerEffect, ControllerInput, ControllerSetup, SnapshotFile,
};
use oxbow_core::log::batch::{set_base_offset, set_leader_epoch, validate_batch, BATCH_HEADER_BYTES};
use oxbow_core::partition::control::{batch_to_entry, entry_to_batch};
use oxbow_core::raft::{
    Effect as RaftEffect, Entry, EntryKind, HardState, Index, Input as RaftInput, LogId, Membership, Message,
    NodeId, ReadError, RecoveredState, SnapshotMeta,
};

/// Name of the snapshot file.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Name of the log file.
pub const LOG_FILE: &str = "log";
/// Name of the hard-state file.
pub const STATE_FILE: &str = "state";
/// Prefix of a snapshot being received (`snapshot.incoming.<term>-<index>`).
pub const INCOMING_PREFIX: &str = "snapshot.incoming.";
const TMP_SUFFIX: &str = ".tmp";

/// `crc32c: u32 | body_len: u32`.
const RECORD_HEADER_BYTES: usize = 8;
const STATE_VERSION: u8 = 1;
/// `version | term | has_vote | vote | has_hint | hint`.
const STATE_BODY_BYTES: usize = 1 + 8 + 1 + 8 + 1 + 8;

/// The controller's directory under a node's data directory (DESIGN.md §5).
pub fn controller_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("oxbow").join("controller").join("0_0")
}

/// Why the controller store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerStoreError {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file holds damaged or impossible content (never silently dropped).
    #[error("{path}: byte {position_bytes}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts (0 for whole-file damage).
        position_bytes: u64,
        /// What is wrong.
        reason: String,
    },
    /// An effect asked for something the storage contract does not allow (a bug in
    /// the caller or in Raft); nothing was written.
    #[error("{op}: {reason}")]
    Contract {
        /// The effect.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Something is larger than the limits allow.
    #[error("{what} of {size_bytes} bytes is above the {max_bytes}-byte limit")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        size_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// An earlier write failed, so no write is acknowledged any more.
    #[error("controller store stopped after an earlier failure: {0}")]
    Failed(String),
    /// Not an effect the runtime carries out for the replica (core consumes it).
    #[error("{0} is not a storage effect of the controller")]
    NotStorage(&'static str),
}

type Result<T, E = ControllerStoreError> = std::result::Result<T, E>;

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ControllerStoreError + 'a {
    move |source| ControllerStoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Bounds on what the store reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerStoreLimits {
    /// Largest snapshot file written, received or read.
    pub max_snapshot_bytes: usize,
    /// Largest stored entry (one Kafka batch); a longer record is taken for damage.
    pub max_entry_bytes: usize,
}

impl Default for ControllerStoreLimits {
    fn default() -> Self {
        ControllerStoreLimits::from_config(&ControllerConfig::default())
    }
}

impl ControllerStoreLimits {
    /// The limits matching the replica's settings: its snapshot bound, and entries up
    /// to 16 MiB (commands are bounded far below that).
    pub fn from_config(config: &ControllerConfig) -> Self {
        ControllerStoreLimits {
            max_snapshot_bytes: config.max_snapshot_bytes,
            max_entry_bytes: 16 << 20,
        }
    }
}

/// What start-up found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Entries of the log after the snapshot.
    pub entries: usize,
    /// Bytes of a torn tail cut off the log (0 if it ended cleanly).
    pub torn_bytes: u64,
    /// Entries dropped because the snapshot covers them (the log was rewritten).
    pub covered_entries_dropped: usize,
    /// A leader's snapshot install that discards the log was interrupted; the log was
    /// dropped to finish it.
    pub interrupted_install: bool,
    /// Temporary files removed.
    pub removed_files: Vec<PathBuf>,
}

/// What [`ControllerStore::open`] recovered: what [`ControllerSetup`] needs.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// The snapshot file's bytes, if there is one.
    pub snapshot_file: Option<Bytes>,
    /// The position the snapshot file covers.
    pub snapshot_last: Option<LogId>,
    /// Hard state, term boundaries, last offset, configuration entries after the
    /// snapshot and commit hint (its `snapshot` field is left `None`: the replica reads
    /// it from the file).
    pub raft: RecoveredState,
    /// What was found and repaired.
    pub report: RecoveryReport,
}

impl Recovered {
    /// The replica's setup from what was recovered.
    pub fn into_setup(
        self,
        node_id: NodeId,
        config: ControllerConfig,
        bootstrap: Membership,
        seed: u64,
    ) -> ControllerSetup {
        ControllerSetup {
            node_id,
            config,
            bootstrap,
            recovered: self.raft,
            snapshot_file: self.snapshot_file,
            seed,
        }
    }
}

/// What executing an effect produced.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Executed {
    /// Done: hand this to the replica (`ControllerReplica::handle`).
    Input(ControllerInput),
    /// Done, nothing to answer (`CompactLog`).
    Nothing,
    /// A message for a peer: the caller sends it (group 0).
    Send(Message),
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControllerStoreStats {
    /// `fdatasync`/`fsync` calls made.
    pub syncs: u64,
    /// Entries appended.
    pub appended_entries: u64,
    /// Log compactions (rewrites).
    pub compactions: u64,
    /// Snapshot files written by this node.
    pub snapshots_written: u64,
    /// Snapshots from a leader installed.
    pub snapshots_installed: u64,
}

/// One entry of the log, as stored.
#[derive(Clone)]
struct Stored {
    /// The entry as read back from its batch.
    entry: Entry,
    /// The stored Kafka batch.
    batch: Bytes,
    /// Where its record starts in the log file.
    position_bytes: u64,
}

/// Group 0's durable storage. See the module docs.
pub struct ControllerStore {
    dir: PathBuf,
    limits: ControllerStoreLimits,
    log_path: PathBuf,
    log_file: File,
    /// Length of the log file (all valid records).
    log_bytes: u64,
    /// The log after the snapshot (until compacted), in order.
    entries: VecDeque<Stored>,
    hard_state: HardState,
    commit_hint: Option<Index>,
    snapshot_last: Option<LogId>,
    failed: Option<String>,
    stats: ControllerStoreStats,
}

impl std::fmt::Debug for ControllerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerStore")
            .field("dir", &self.dir)
            .field("log_bytes", &self.log_bytes)
            .field("entries", &self.entries.len())
            .field("hard_state", &self.hard_state)
            .field("commit_hint", &self.commit_hint)
            .field("snapshot_last", &self.snapshot_last)
            .field("failed", &self.failed)
            .finish()
    }
}

// ----- record framing -------------------------------------------------------------------

fn encode_record(out: &mut Vec<u8>, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Bodies are bounded by the limits (far below 4 GiB) before they get here.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The record at the start of `bytes`: its body and encoded length, or `None` if it is
/// torn or damaged.
fn decode_record(bytes: &[u8], max_body_bytes: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let body_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if body_len == 0 || body_len > max_body_bytes {
        return None;
    }
    let total = RECORD_HEADER_BYTES + body_len;
    let record = bytes.get(..total)?;
    (crc32c::crc32c(&record[4..]) == crc).then(|| (&record[RECORD_HEADER_BYTES..], total))
}

/// Whether a valid record starts anywhere at or after `from`.
fn valid_record_after(bytes: &[u8], from: usize, max_body_bytes: usize) -> bool {
    (from..bytes.len()).any(|at| decode_record(&bytes[at..], max_body_bytes).is_some())
}

/// The batch stored for `entry` (base offset = index, leader epoch = term) and the
/// entry as it reads back from it.
fn stored_batch(entry: &Entry) -> Result<(Bytes, Entry), String> {
    if entry.last_index < entry.index {
        return Err(format!("entry at {} ends before it starts", entry.index));
    }
    let mut batch = BytesMut::from(&entry_to_batch(entry)[..]);
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(format!("entry at {} is not a Kafka batch", entry.index));
    }
    let base_offset = i64::try_from(entry.index).map_err(|_| format!("offset {} too large", entry.index))?;
    let leader_epoch = i32::try_from(entry.term).map_err(|_| format!("term {} too large", entry.term))?;
    set_base_offset(&mut batch, base_offset);
    set_leader_epoch(&mut batch, leader_epoch);
    let batch = batch.freeze();
    let decoded = decode_entry(&batch)?;
    if (decoded.term, decoded.index, decoded.last_index, decoded.kind)
        != (entry.term, entry.index, entry.last_index, entry.kind)
    {
        return Err(format!(
            "entry at {}..={} (term {}) does not read back as itself from its batch ({}..={}, term {})",
            entry.index, entry.last_index, entry.term, decoded.index, decoded.last_index, decoded.term
        ));
    }
    Ok((batch, decoded))
}

fn decode_entry(batch: &Bytes) -> Result<Entry, String> {
    let header = validate_batch(batch).map_err(|e| format!("not a valid Kafka batch: {e}"))?;
    batch_to_entry(&header, batch.clone()).map_err(|e| e.to_string())
}

// ----- file helpers ---------------------------------------------------------------------

fn sync_dir(dir: &Path, stats: &mut ControllerStoreStats) -> Result<()> {
    let handle = File::open(dir).map_err(io_error("open directory", dir))?;
    handle.sync_all().map_err(io_error("fsync directory", dir))?;
    stats.syncs += 1;
    Ok(())
}

/// Where a failed atomic replacement stopped.
enum ReplaceError {
    /// Before the rename: the old file is intact.
    Before(ControllerStoreError),
    /// The new file is in place but the directory sync failed.
    After(ControllerStoreError),
}

impl ReplaceError {
    fn into_inner(self) -> ControllerStoreError {
        match self {
            ReplaceError::Before(e) | ReplaceError::After(e) => e,
        }
    }
}

/// Replaces `dir/name` with `bytes` atomically: `name.tmp`, `fdatasync`, rename,
/// directory fsync. Returns the open new file.
fn replace_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    stats: &mut ControllerStoreStats,
) -> std::result::Result<File, ReplaceError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let file = match write_and_rename(&tmp, &path, bytes, stats) {
        Ok(file) => file,
        Err(e) => {
            // Best effort: the leftover is removed at the next start anyway.
            let _ = fs::remove_file(&tmp);
            return Err(ReplaceError::Before(e));
        }
    };
    sync_dir(dir, stats).map_err(ReplaceError::After)?;
    Ok(file)
}

/// Writes `bytes` to `tmp`, `fdatasync`s it and renames it to `path`.
fn write_and_rename(tmp: &Path, path: &Path, bytes: &[u8], stats: &mut ControllerStoreStats) -> Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_error("create", tmp))?;
    file.write_all(bytes).map_err(io_error("write", tmp))?;
    file.sync_data().map_err(io_error("fdatasync", tmp))?;
    stats.syncs += 1;
    fs::rename(tmp, path).map_err(io_error("rename", tmp))?;
    Ok(file)
}

fn incoming_name(last: LogId) -> String {
    format!("{INCOMING_PREFIX}{}-{}", last.term, last.index)
}

/// Removes temporary files and received snapshots left by an earlier run.
fn remove_leftovers(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let listing = fs::read_dir(dir).map_err(io_error("list", dir))?;
    for item in listing {
        let item = item.map_err(io_error("list", dir))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(TMP_SUFFIX) || name.starts_with(INCOMING_PREFIX) {
            let path = item.path();
            fs::remove_file(&path).map_err(io_error("unlink", &path))?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

fn encode_state(hard_state: HardState, commit_hint: Option<Index>) -> Vec<u8> {
    let mut body = Vec::with_capacity(STATE_BODY_BYTES);
    body.push(STATE_VERSION);
    body.extend_from_slice(&hard_state.term.to_le_bytes());
    body.push(u8::from(hard_state.vote.is_some()));
    body.extend_from_slice(&hard_state.vote.unwrap_or(0).to_le_bytes());
    body.push(u8::from(commit_hint.is_some()));
    body.extend_from_slice(&commit_hint.unwrap_or(0).to_le_bytes());
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + STATE_BODY_BYTES);
    encode_record(&mut out, &body);
    out
}

fn decode_state(bytes: &[u8]) -> Result<(HardState, Option<Index>), String> {
    let Some((body, len)) = decode_record(bytes, STATE_BODY_BYTES) else {
        return Err("damaged record (checksum or length)".to_string());
    };
    if len != bytes.len() || body.len() != STATE_BODY_BYTES {
        return Err(format!(
            "{} bytes, expected {}",
            bytes.len(),
            RECORD_HEADER_BYTES + STATE_BODY_BYTES
        ));
    }
    if body[0] != STATE_VERSION {
        return Err(format!("unknown version {}", body[0]));
    }
    let u64_at = |at: usize| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(raw)
    };
    let optional = |flag: u8, value: u64| match flag {
        0 => Ok(None),
        1 => Ok(Some(value)),
        other => Err(format!("bad presence flag {other}")),
    };
    let hard_state = HardState {
        term: u64_at(1),
        vote: optional(body[9], u64_at(10))?,
    };
    let commit_hint = optional(body[18], u64_at(19))?;
    Ok((hard_state, commit_hint))
}

fn read_state(dir: &Path) -> Result<(HardState, Option<Index>)> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((HardState::default(), None)),
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    // Replaced atomically, never torn: any damage is damage.
    decode_state(&bytes).map_err(|reason| ControllerStoreError::Corrupt {
        path,
        position_bytes: 0,
        reason,
    })
}

fn read_snapshot(dir: &Path, limits: ControllerStoreLimits) -> Result<Option<(Bytes, LogId)>> {
    let path = dir.join(SNAPSHOT_FILE);
    let size_bytes = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("stat", &path)(e)),
    };
    if size_bytes > limits.max_snapshot_bytes as u64 {
        return Err(ControllerStoreError::TooLarge {
            what: "snapshot file",
            size_bytes,
            max_bytes: limits.max_snapshot_bytes as u64,
        });
    }
    let bytes = Bytes::from(fs::read(&path).map_err(io_error("read", &path))?);
    let file = SnapshotFile::decode(&bytes, limits.max_snapshot_bytes).map_err(|e| {
        ControllerStoreError::Corrupt {
            path: path.clone(),
            position_bytes: 0,
            reason: format!("not a controller snapshot: {e}"),
        }
    })?;
    Ok(Some((bytes, file.meta.last)))
}

/// Parses the log file: its entries and the length of its valid records. A torn tail
/// ends the parse; damage before valid records is an error.
fn parse_log(path: &Path, bytes: &[u8], limits: ControllerStoreLimits) -> Result<(Vec<Stored>, usize)> {
    let corrupt = |at: usize, reason: String| ControllerStoreError::Corrupt {
        path: path.to_path_buf(),
        position_bytes: at as u64,
        reason,
    };
    let mut entries: Vec<Stored> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some((body, len)) = decode_record(&bytes[at..], limits.max_entry_bytes) else {
            if valid_record_after(bytes, at + 1, limits.max_entry_bytes) {
                return Err(corrupt(
                    at,
                    "damaged record with valid records after it".to_string(),
                ));
            }
            break;
        };
        let batch = Bytes::copy_from_slice(body);
        let entry = decode_entry(&batch).map_err(|reason| corrupt(at, reason))?;
        if let Some(prev) = entries.last() {
            let follows = prev.entry.last_index.checked_add(1) == Some(entry.index);
            if !follows || entry.term < prev.entry.term {
                return Err(corrupt(
                    at,
                    format!(
                        "entry at offset {} (term {}) does not follow offset {} (term {})",
                        entry.index, entry.term, prev.entry.last_index, prev.entry.term
                    ),
                ));
            }
        }
        entries.push(Stored {
            entry,
            batch,
            position_bytes: at as u64,
        });
        at += len;
    }
    Ok((entries, at))
}

/// Encodes `batches` as log records; returns the bytes and each record's position.
fn encode_log<'a>(batches: impl Iterator<Item = &'a Bytes>) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    let mut positions = Vec::new();
    for batch in batches {
        positions.push(out.len() as u64);
        encode_record(&mut out, batch);
    }
    (out, positions)
}

/// The Raft view of the log after the snapshot (as runtime-sim's `recovered()`).
fn recovered_state(
    entries: &VecDeque<Stored>,
    hard_state: HardState,
    commit_hint: Option<Index>,
) -> RecoveredState {
    let mut recovered = RecoveredState {
        hard_state,
        commit_hint,
        ..RecoveredState::default()
    };
    for stored in entries {
        let entry = &stored.entry;
        if recovered
            .term_boundaries
            .last()
            .is_none_or(|(t, _)| *t != entry.term)
        {
            recovered.term_boundaries.push((entry.term, entry.index));
        }
        recovered.last_index = Some(entry.last_index);
        if entry.kind == EntryKind::Config {
            recovered.config_entries.push(entry.clone());
        }
    }
    if let Some(last_term) = recovered.term_boundaries.last().map(|(t, _)| *t) {
        if last_term > recovered.hard_state.term {
            // An append of a new term survived while its hard state did not: safe to
            // raise with no vote (nothing of that term was acknowledged before it).
            recovered.hard_state = HardState {
                term: last_term,
                vote: None,
            };
        }
    }
    recovered
}

impl ControllerStore {
    /// Opens (creating if needed) the controller directory under `data_dir`, recovers
    /// it (see the module docs) and returns what the replica starts from.
    pub fn open(data_dir: &Path, limits: ControllerStoreLimits) -> Result<(ControllerStore, Recovered)> {
        let dir = controller_dir(data_dir);
        let mut stats = ControllerStoreStats::default();
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        // The directory entries themselves must be durable.
        for d in dir.ancestors().take(3) {
            sync_dir(d, &mut stats)?;
        }
        let mut report = RecoveryReport {
            removed_files: remove_leftovers(&dir)?,
            ..RecoveryReport::default()
        };
        if !report.removed_files.is_empty() {
            tracing::info!(dir = %dir.display(), removed = ?report.removed_files, "controller store: removed leftover temporary files");
        }
        let snapshot = read_snapshot(&dir, limits)?;
        let (hard_state, commit_hint) = read_state(&dir)?;

        let log_path = dir.join(LOG_FILE);
        let mut log_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(io_error("open", &log_path))?;
        // The log file's name must be durable before anything appended to it is.
        sync_dir(&dir, &mut stats)?;
        let bytes = fs::read(&log_path).map_err(io_error("read", &log_path))?;
        let (parsed, valid_bytes) = parse_log(&log_path, &bytes, limits)?;
        report.torn_bytes = (bytes.len() - valid_bytes) as u64;
        if report.torn_bytes > 0 {
            tracing::warn!(path = %log_path.display(), torn_bytes = report.torn_bytes, "controller log: cutting a torn tail");
            log_file
                .set_len(valid_bytes as u64)
                .map_err(io_error("ftruncate", &log_path))?;
            log_file.sync_data().map_err(io_error("fdatasync", &log_path))?;
            stats.syncs += 1;
        }
        let mut entries: VecDeque<Stored> = parsed.into();
        let mut log_bytes = valid_bytes as u64;

        let snapshot_last = snapshot.as_ref().map(|(_, last)| *last);
        if let Some(last) = snapshot_last {
            let before = entries.len();
            let conflicting = entries
                .iter()
                .find(|s| s.entry.index <= last.index && last.index <= s.entry.last_index)
                .is_some_and(|s| s.entry.term != last.term);
            if conflicting {
                tracing::warn!(path = %log_path.display(), snapshot = ?last, "controller log conflicts with the installed snapshot: finishing the interrupted install");
                report.interrupted_install = true;
                entries.clear();
            } else {
                while entries.front().is_some_and(|s| s.entry.index <= last.index) {
                    entries.pop_front();
                }
            }
            report.covered_entries_dropped = before - entries.len();
            if report.covered_entries_dropped > 0 {
                let (encoded, positions) = encode_log(entries.iter().map(|s| &s.batch));
                log_file =
                    replace_file(&dir, LOG_FILE, &encoded, &mut stats).map_err(ReplaceError::into_inner)?;
                for (stored, position) in entries.iter_mut().zip(positions) {
                    stored.position_bytes = position;
                }
                log_bytes = encoded.len() as u64;
            }
        }
        report.entries = entries.len();

        let recovered = Recovered {
            snapshot_file: snapshot.map(|(bytes, _)| bytes),
            snapshot_last,
            raft: recovered_state(&entries, hard_state, commit_hint),
            report,
        };
        let store = ControllerStore {
            dir,
            limits,
            log_path,
            log_file,
            log_bytes,
            entries,
            hard_state,
            commit_hint,
            snapshot_last,
            failed: None,
            stats,
        };
        Ok((store, recovered))
    }

    // ----- queries --------------------------------------------------------------------

    /// The controller directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Length of the log file.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// `(first offset, last offset)` of the stored log, if it holds entries.
    pub fn log_range(&self) -> Option<(Index, Index)> {
        Some((
            self.entries.front()?.entry.index,
            self.entries.back()?.entry.last_index,
        ))
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The durable commit hint.
    pub fn commit_hint(&self) -> Option<Index> {
        self.commit_hint
    }

    /// The position the durable snapshot file covers.
    pub fn snapshot_last(&self) -> Option<LogId> {
        self.snapshot_last
    }

    /// Why the store stopped, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> ControllerStoreStats {
        self.stats
    }

    // ----- the door -------------------------------------------------------------------

    /// Carries out one effect of the replica. Writes are durable when this returns;
    /// the completion (if any) is in [`Executed::Input`]. An error from a write stops
    /// the store (see the module docs).
    pub fn execute(&mut self, effect: ControllerEffect) -> Result<Executed> {
        match effect {
            ControllerEffect::WriteSnapshot { last, data } => {
                Ok(Executed::Input(self.write_snapshot(last, &data)))
            }
            ControllerEffect::Raft(effect) => self.execute_raft(effect),
            _ => Err(ControllerStoreError::NotStorage("an unknown controller effect")),
        }
    }

    /// Carries out one Raft effect of group 0 (see [`ControllerStore::execute`]).
    pub fn execute_raft(&mut self, effect: RaftEffect) -> Result<Executed> {
        let durable = |write_id| Executed::Input(ControllerInput::Raft(RaftInput::WriteDurable { write_id }));
        match effect {
            RaftEffect::Send(message) => Ok(Executed::Send(message)),
            RaftEffect::ReadEntries {
                read_id,
                from_index,
                max_bytes,
                ..
            } => Ok(Executed::Input(ControllerInput::Raft(RaftInput::EntriesRead {
                read_id,
                result: self.read_entries(from_index, max_bytes),
            }))),
            RaftEffect::PersistHardState(hard_state) => {
                self.guarded(|s| s.persist_hard_state(hard_state))?;
                Ok(Executed::Input(ControllerInput::Raft(
                    RaftInput::HardStateDurable(hard_state),
                )))
            }
            RaftEffect::Append { write_id, entries } => {
                self.guarded(|s| s.append(&entries))?;
                Ok(durable(write_id))
            }
            RaftEffect::Truncate { write_id, from_index } => {
                self.guarded(|s| s.truncate(from_index))?;
                Ok(durable(write_id))
            }
            RaftEffect::WriteSnapshotChunk {
                write_id,
                meta,
                offset,
                data,
                ..
            } => {
                self.guarded(|s| s.write_chunk(&meta, offset, &data))?;
                Ok(durable(write_id))
            }
            RaftEffect::InstallSnapshot {
                write_id,
                meta,
                discard_log,
            } => {
                self.guarded(|s| s.install_snapshot(&meta, discard_log))?;
                Ok(durable(write_id))
            }
            RaftEffect::CompactLog { through_index } => {
                self.check_running()?;
                self.compact(through_index)?;
                Ok(Executed::Nothing)
            }
            RaftEffect::Apply { .. } => Err(ControllerStoreError::NotStorage("Apply")),
            RaftEffect::ReadSnapshotChunk { .. } => {
                Err(ControllerStoreError::NotStorage("ReadSnapshotChunk"))
            }
            RaftEffect::RestoreSnapshot { .. } => Err(ControllerStoreError::NotStorage("RestoreSnapshot")),
            RaftEffect::CommitAdvanced { .. } => Err(ControllerStoreError::NotStorage("CommitAdvanced")),
            RaftEffect::RoleChanged { .. } => Err(ControllerStoreError::NotStorage("RoleChanged")),
            _ => Err(ControllerStoreError::NotStorage("an unknown raft effect")),
        }
    }

    /// Replaces the snapshot file with `data` (temporary, `fdatasync`, rename,
    /// directory fsync). [`ControllerInput::SnapshotDurable`] once durable;
    /// [`ControllerInput::SnapshotFailed`] on any error (logged), the old file intact.
    pub fn write_snapshot(&mut self, last: LogId, data: &[u8]) -> ControllerInput {
        let refused = if let Some(reason) = &self.failed {
            Some(ControllerStoreError::Failed(reason.clone()))
        } else if data.len() > self.limits.max_snapshot_bytes {
            Some(ControllerStoreError::TooLarge {
                what: "snapshot file",
                size_bytes: data.len() as u64,
                max_bytes: self.limits.max_snapshot_bytes as u64,
            })
        } else {
            None
        };
        if let Some(e) = refused {
            tracing::warn!(error = %e, snapshot = ?last, "controller snapshot not written");
            return ControllerInput::SnapshotFailed { last };
        }
        match replace_file(&self.dir, SNAPSHOT_FILE, data, &mut self.stats) {
            Ok(_) => {
                self.snapshot_last = Some(last);
                self.stats.snapshots_written += 1;
                ControllerInput::SnapshotDurable { last }
            }
            Err(e) => {
                // After a failed directory sync the new file may or may not survive a
                // crash; either is consistent with the log, which is not compacted
                // until the replica hears of a durable snapshot.
                let e = e.into_inner();
                tracing::warn!(error = %e, snapshot = ?last, "controller snapshot write failed");
                ControllerInput::SnapshotFailed { last }
            }
        }
    }

    /// Persists the replica's commit hint (`ControllerReplica::commit_hint`) with the
    /// hard state, if it changed. A failure leaves the old hint (a hint may be stale)
    /// and the store running.
    pub fn persist_commit_hint(&mut self, commit_hint: Option<Index>) -> Result<()> {
        self.check_running()?;
        if commit_hint == self.commit_hint {
            return Ok(());
        }
        match replace_file(
            &self.dir,
            STATE_FILE,
            &encode_state(self.hard_state, commit_hint),
            &mut self.stats,
        ) {
            Ok(_) => {
                self.commit_hint = commit_hint;
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }

    // ----- internals ------------------------------------------------------------------

    fn check_running(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(ControllerStoreError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Runs a write; a failure stops the store.
    fn guarded(&mut self, write: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        self.check_running()?;
        let result = write(self);
        if let Err(e) = &result {
            tracing::error!(error = %e, dir = %self.dir.display(), "controller store: write failed, stopping");
            self.failed = Some(e.to_string());
        }
        result
    }

    fn read_entries(
        &self,
        from_index: Index,
        max_bytes: usize,
    ) -> std::result::Result<Vec<Entry>, ReadError> {
        let start = self.entries.partition_point(|s| s.entry.last_index < from_index);
        if self.entries.get(start).is_none_or(|s| s.entry.index > from_index) {
            return Err(ReadError::Compacted);
        }
        let mut out = Vec::new();
        let mut size_bytes = 0;
        for stored in self.entries.range(start..) {
            size_bytes += stored.entry.size_bytes();
            out.push(stored.entry.clone());
            if size_bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn persist_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        replace_file(
            &self.dir,
            STATE_FILE,
            &encode_state(hard_state, self.commit_hint),
            &mut self.stats,
        )
        .map_err(ReplaceError::into_inner)?;
        self.hard_state = hard_state;
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let contract = |reason: String| ControllerStoreError::Contract { op: "Append", reason };
        let mut expected = self.entries.back().map(|s| s.entry.last_index.saturating_add(1));
        let mut encoded = Vec::new();
        let mut new = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(expected) = expected.filter(|x| *x != entry.index) {
                return Err(contract(format!(
                    "entry at offset {} does not follow the log's end (next offset {expected})",
                    entry.index
                )));
            }
            let (batch, decoded) = stored_batch(entry).map_err(contract)?;
            if batch.len() > self.limits.max_entry_bytes {
                return Err(ControllerStoreError::TooLarge {
                    what: "entry",
                    size_bytes: batch.len() as u64,
                    max_bytes: self.limits.max_entry_bytes as u64,
                });
            }
            let position_bytes = self.log_bytes + encoded.len() as u64;
            encode_record(&mut encoded, &batch);
            new.push(Stored {
                entry: decoded,
                batch,
                position_bytes,
            });
            expected = Some(entry.last_index.saturating_add(1));
        }
        if encoded.is_empty() {
            return Ok(());
        }
        let path = &self.log_path;
        self.log_file
            .write_all_at(&encoded, self.log_bytes)
            .map_err(io_error("write", path))?;
        self.log_file.sync_data().map_err(io_error("fdatasync", path))?;
        self.stats.syncs += 1;
        self.stats.appended_entries += new.len() as u64;
        self.log_bytes += encoded.len() as u64;
        self.entries.extend(new);
        Ok(())
    }

    fn truncate(&mut self, from_index: Index) -> Result<()> {
        let cut = self.entries.partition_point(|s| s.entry.index < from_index);
        if let Some(prev) = cut.checked_sub(1).and_then(|i| self.entries.get(i)) {
            if prev.entry.last_index >= from_index {
                return Err(ControllerStoreError::Contract {
                    op: "Truncate",
                    reason: format!(
                        "offset {from_index} is inside the entry {}..={}",
                        prev.entry.index, prev.entry.last_index
                    ),
                });
            }
        }
        let Some(new_len) = self.entries.get(cut).map(|s| s.position_bytes) else {
            return Ok(()); // nothing at or after `from_index`
        };
        let path = &self.log_path;
        self.log_file
            .set_len(new_len)
            .map_err(io_error("ftruncate", path))?;
        self.log_file.sync_data().map_err(io_error("fdatasync", path))?;
        self.stats.syncs += 1;
        self.entries.truncate(cut);
        self.log_bytes = new_len;
        Ok(())
    }

    /// Drops the entries through `through_index` by rewriting the rest. A failure
    /// before the rename leaves the old file and the store running.
    fn compact(&mut self, through_index: Index) -> Result<()> {
        let keep_from = self
            .entries
            .partition_point(|s| s.entry.last_index <= through_index);
        if keep_from == 0 {
            return Ok(());
        }
        self.rewrite_log(keep_from)
    }

    /// Rewrites the log file with the entries from position `keep_from` on.
    fn rewrite_log(&mut self, keep_from: usize) -> Result<()> {
        let (encoded, positions) = encode_log(self.entries.range(keep_from..).map(|s| &s.batch));
        match replace_file(&self.dir, LOG_FILE, &encoded, &mut self.stats) {
            Ok(file) => {
                self.switch_log(file, keep_from, &encoded, positions);
                Ok(())
            }
            Err(ReplaceError::Before(e)) => Err(e),
            Err(ReplaceError::After(e)) => {
                // The new file is in place but maybe not durable: keep writing to it
                // (the old one is unlinked), and stop.
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&self.log_path)
                    .map_err(io_error("open", &self.log_path));
                if let Ok(file) = file {
                    self.switch_log(file, keep_from, &encoded, positions);
                }
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn switch_log(&mut self, file: File, keep_from: usize, encoded: &[u8], positions: Vec<u64>) {
        self.log_file = file;
        self.log_bytes = encoded.len() as u64;
        self.entries.drain(..keep_from);
        for (stored, position) in self.entries.iter_mut().zip(positions) {
            stored.position_bytes = position;
        }
        self.stats.compactions += 1;
    }

    fn write_chunk(&mut self, meta: &SnapshotMeta, offset: u64, data: &[u8]) -> Result<()> {
        let name = incoming_name(meta.last);
        let path = self.dir.join(&name);
        let end_bytes = offset.saturating_add(data.len() as u64);
        if end_bytes > self.limits.max_snapshot_bytes as u64 {
            return Err(ControllerStoreError::TooLarge {
                what: "received snapshot",
                size_bytes: end_bytes,
                max_bytes: self.limits.max_snapshot_bytes as u64,
            });
        }
        if offset == 0 {
            // Raft receives one snapshot at a time: any other one was abandoned.
            self.remove_incoming(|other| other != name)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let len = file.metadata().map_err(io_error("stat", &path))?.len();
        if offset > len {
            return Err(ControllerStoreError::Contract {
                op: "WriteSnapshotChunk",
                reason: format!("chunk at byte {offset} of {name}, which holds {len} bytes"),
            });
        }
        if offset < len {
            // A chunk written again (a receipt restarted): rewrite from there.
            file.set_len(offset).map_err(io_error("ftruncate", &path))?;
        }
        file.write_all_at(data, offset)
            .map_err(io_error("write", &path))?;
        file.sync_data().map_err(io_error("fdatasync", &path))?;
        self.stats.syncs += 1;
        if offset == 0 {
            sync_dir(&self.dir, &mut self.stats)?;
        }
        Ok(())
    }

    /// Removes the received snapshot files whose names `remove` selects.
    fn remove_incoming(&mut self, remove: impl Fn(&str) -> bool) -> Result<()> {
        let listing = fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))?;
        for item in listing {
            let item = item.map_err(io_error("list", &self.dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(INCOMING_PREFIX) && remove(&name) {
                let path = item.path();
                fs::remove_file(&path).map_err(io_error("unlink", &path))?;
            }
        }
        Ok(())
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta, discard_log: bool) -> Result<()> {
        let last = meta.last;
        let incoming = self.dir.join(incoming_name(last));
        let snapshot = self.dir.join(SNAPSHOT_FILE);
        // Its chunks were synced as they came; the rename makes it the snapshot. The
        // log is cut only after that is durable (a crash in between is finished at the
        // next start: see the module docs).
        fs::rename(&incoming, &snapshot).map_err(io_error("rename", &incoming))?;
        sync_dir(&self.dir, &mut self.stats)?;
        self.snapshot_last = Some(last);
        self.stats.snapshots_installed += 1;
        let keep_from = if discard_log {
            self.entries.len()
        } else {
            self.entries.partition_point(|s| s.entry.index <= last.index)
        };
        if keep_from > 0 {
            self.rewrite_log(keep_from)?;
        }
        Ok(())
    }
}
