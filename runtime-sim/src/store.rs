//! A node's durable storage for its replica: the log lives in **core's `Log`** on the
//! node's simulated disk (through [`LogDisk`]), and the hard state (term, vote) in a small
//! checksummed file beside it.
//!
//! Storage operations arrive with sequence numbers and are reported durable strictly in
//! order: an operation counts as done once it *and every earlier one* is durable. Entries
//! are stored as Kafka record batches — a data entry is a one-record batch whose value is
//! the client's payload, a no-op is a control batch — with the Raft term as the
//! partition leader epoch, so what recovery reads back after a crash is what core's log
//! recovery kept, torn tails cut.

use crate::disk::SimDisk;
use crate::log_disk::{ContractViolation, LogDisk, LogIo};
use crate::replica::{EntryKind, HardState, SimEntry, StorageOp};
use crate::rng::{fnv1a64, SimRng};
use bytes::Bytes;
use oxbow_core::log::batch::{iter_batches, BatchHeader, BATCH_HEADER_BYTES};
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::read::trim_fetched;
use oxbow_core::log::records::parse_uncompressed_records;
use oxbow_core::log::{Log, LogConfig, LogEvent, RecoveryReport};
use oxbow_core::time::Instant;
use std::collections::VecDeque;

/// The partition directory of group `group`'s replica: `kafka/sim/<group>_0`.
pub fn partition_dir(group: u32) -> String {
    oxbow_core::log::io::partition_dir("sim", i32::try_from(group).unwrap_or(i32::MAX), 0)
}

/// The hard-state file of group `group`'s replica.
pub fn hard_state_path(group: u32) -> String {
    format!("raft/{group}/hard_state")
}

/// Storage failed in a way the node cannot continue from (it stops, like a broker whose
/// disk failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk refused a write (ENOSPC, I/O error).
    #[error("disk error: {0}")]
    Disk(String),
    /// Synced data is damaged (recovery or the log found corruption).
    #[error("corruption: {0}")]
    Corrupt(String),
    /// The log or the replica broke a contract: a bug, fails the run.
    #[error("contract: {0}")]
    Contract(String),
}

impl From<ContractViolation> for StoreError {
    fn from(v: ContractViolation) -> Self {
        StoreError::Contract(v.to_string())
    }
}

/// The log configuration the simulator runs with: small segments, so rolls, indexes and
/// multi-segment recovery happen within a short run.
pub fn sim_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        segment_ms: None,
        index_interval_bytes: 1024,
        retention_bytes: None,
        retention_ms: None,
        preallocate_bytes: 0,
        checkpoint_interval_ms: 500,
        recovery_read_bytes: 8 * 1024,
        ..LogConfig::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    HardState {
        done: bool,
    },
    /// `None`: every entry it wrote was truncated away since; nothing to wait for.
    Append {
        last_index: Option<u64>,
    },
    /// Completes as soon as everything before it has.
    Barrier,
    Truncate {
        done: bool,
    },
}

/// One node's storage.
#[derive(Debug)]
pub struct NodeStore {
    dir: String,
    hard_state_path: String,
    backend: LogDisk,
    log: Log,
    queue: VecDeque<(u64, Pending)>,
    done_seq: u64,
    /// The newest hard-state write that reached the disk: an older one completing
    /// after it (sampled latencies can reorder them) is superseded and not written, as
    /// a runtime that writes its hard state in order would have it.
    hard_state_written_seq: u64,
}

/// Work for the driver after a storage call: completions to schedule.
#[derive(Debug, Default)]
pub struct StoreWork {
    /// Log completions to deliver after their delays.
    pub log_io: Vec<LogIo>,
    /// Hard-state writes to complete after the given delay: (seq, state, delay).
    pub hard_state: Vec<(u64, HardState, std::time::Duration)>,
}

fn encode_hard_state(hs: HardState) -> Bytes {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&hs.term.to_be_bytes());
    b.extend_from_slice(&hs.vote.map_or(u64::MAX, u64::from).to_be_bytes());
    let sum = fnv1a64(&b);
    b.extend_from_slice(&sum.to_be_bytes());
    Bytes::from(b)
}

fn decode_hard_state(b: &[u8]) -> Option<HardState> {
    if b.len() != 24 || fnv1a64(&b[..16]).to_be_bytes() != b[16..24] {
        return None;
    }
    let term = u64::from_be_bytes(b[0..8].try_into().ok()?);
    let vote = u64::from_be_bytes(b[8..16].try_into().ok()?);
    Some(HardState {
        term,
        vote: (vote != u64::MAX).then(|| u32::try_from(vote).ok()).flatten(),
    })
}

fn encode_entry(e: &SimEntry, now: Instant) -> Bytes {
    let ts = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
    match e.kind {
        EntryKind::Data => build_batch(
            &[NewRecord::value(e.payload.to_vec(), ts)],
            BatchOptions::default(),
        ),
        EntryKind::Noop | EntryKind::Config => build_batch(
            &[NewRecord {
                timestamp_ms: ts,
                value: (e.kind == EntryKind::Config).then(|| e.payload.to_vec()),
                ..NewRecord::default()
            }],
            BatchOptions {
                control: true,
                ..BatchOptions::default()
            },
        ),
    }
}

impl NodeStore {
    /// Empty storage of group `group` on a new node.
    pub fn new(group: u32) -> Self {
        let dir = partition_dir(group);
        NodeStore {
            backend: LogDisk::new(dir.clone()),
            dir,
            hard_state_path: hard_state_path(group),
            log: Log::new(sim_log_config(), 0),
            queue: VecDeque::new(),
            done_seq: 0,
            hard_state_written_seq: 0,
        }
    }

    /// The log (for timers and observation).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Sequence number of the last operation known durable (with all before it).
    pub fn done_seq(&self) -> u64 {
        self.done_seq
    }

    /// Starts operation `seq`.
    pub fn submit(
        &mut self,
        disk: &mut SimDisk,
        rng: &mut SimRng,
        now: Instant,
        seq: u64,
        op: StorageOp,
    ) -> Result<StoreWork, StoreError> {
        let mut work = StoreWork::default();
        match op {
            StorageOp::HardState(hs) => {
                let service = disk.sync_time(rng);
                let delay = disk.service_delay(now, service);
                work.hard_state.push((seq, hs, delay));
                self.queue.push_back((seq, Pending::HardState { done: false }));
            }
            StorageOp::Append(entries) => {
                let Some(last) = entries.last() else {
                    return Err(StoreError::Contract("empty append".into()));
                };
                let last_index = last.index;
                for e in &entries {
                    let term = i64::try_from(e.term).unwrap_or(i64::MAX);
                    let info = self
                        .log
                        .append(now, term, encode_entry(e, now))
                        .map_err(|err| StoreError::Disk(format!("append refused: {err}")))?;
                    if u64::try_from(info.base_offset).ok() != Some(e.index) {
                        return Err(StoreError::Contract(format!(
                            "entry {} got offset {} from the log",
                            e.index, info.base_offset
                        )));
                    }
                }
                self.log.sync();
                self.queue.push_back((
                    seq,
                    Pending::Append {
                        last_index: Some(last_index),
                    },
                ));
            }
            StorageOp::Barrier => self.queue.push_back((seq, Pending::Barrier)),
            StorageOp::Truncate { from_index } => {
                let offset = i64::try_from(from_index).unwrap_or(i64::MAX);
                let had_more = offset < self.log.next_offset();
                // Earlier appends of the cut range are superseded: only what they wrote
                // below the cut must become durable.
                for (_, p) in self.queue.iter_mut() {
                    if let Pending::Append { last_index: Some(l) } = p {
                        if *l >= from_index {
                            *p = Pending::Append {
                                last_index: from_index.checked_sub(1),
                            };
                        }
                    }
                }
                self.log
                    .truncate(now, offset)
                    .map_err(|e| StoreError::Contract(format!("truncate to {from_index}: {e}")))?;
                self.queue.push_back((seq, Pending::Truncate { done: !had_more }));
            }
        }
        self.pump(disk, rng, now, &mut work)?;
        Ok(work)
    }

    /// A hard-state write of `seq` completes: it is written durably now.
    pub fn complete_hard_state(
        &mut self,
        disk: &mut SimDisk,
        rng: &mut SimRng,
        seq: u64,
        hs: HardState,
    ) -> Result<(), StoreError> {
        if seq > self.hard_state_written_seq {
            disk.replace(rng, &self.hard_state_path, encode_hard_state(hs), true)
                .map_err(|e| StoreError::Disk(e.to_string()))?;
            self.hard_state_written_seq = seq;
        }
        for (s, p) in self.queue.iter_mut() {
            if *s == seq {
                *p = Pending::HardState { done: true };
            }
        }
        self.advance();
        Ok(())
    }

    /// A log completion is due.
    pub fn complete_log_io(
        &mut self,
        disk: &mut SimDisk,
        rng: &mut SimRng,
        now: Instant,
        io: LogIo,
    ) -> Result<StoreWork, StoreError> {
        if let Some(ticket) = &io.sync {
            disk.finish_sync(ticket);
        }
        if let Some((path, data)) = io.replace {
            if let Err(e) = disk.replace(rng, &path, data, true) {
                // The rename never happened: the old checkpoint stays, the log hears of
                // the failure.
                let generation = match &io.completion {
                    oxbow_core::log::LogCompletion::CheckpointWritten { generation, .. } => *generation,
                    _ => 0,
                };
                self.log.handle_completion(
                    now,
                    oxbow_core::log::LogCompletion::Failed {
                        generation,
                        error: match e {
                            crate::disk::FsError::NoSpace => oxbow_core::log::DiskError::NoSpace,
                            other => oxbow_core::log::DiskError::Io(other.to_string()),
                        },
                    },
                );
                let mut work = StoreWork::default();
                self.pump(disk, rng, now, &mut work)?;
                return Ok(work);
            }
        }
        self.log.handle_completion(now, io.completion);
        let mut work = StoreWork::default();
        self.pump(disk, rng, now, &mut work)?;
        Ok(work)
    }

    /// The log's own timer (checkpoints).
    pub fn handle_timeout(
        &mut self,
        disk: &mut SimDisk,
        rng: &mut SimRng,
        now: Instant,
    ) -> Result<StoreWork, StoreError> {
        self.log.handle_timeout(now);
        let mut work = StoreWork::default();
        self.pump(disk, rng, now, &mut work)?;
        Ok(work)
    }

    fn pump(
        &mut self,
        disk: &mut SimDisk,
        rng: &mut SimRng,
        now: Instant,
        work: &mut StoreWork,
    ) -> Result<(), StoreError> {
        while let Some(effect) = self.log.poll_effect() {
            work.log_io.extend(self.backend.execute(disk, rng, now, effect)?);
        }
        while let Some(event) = self.log.poll_event() {
            match event {
                LogEvent::Truncated { .. } => {
                    if let Some((_, p)) = self
                        .queue
                        .iter_mut()
                        .find(|(_, p)| matches!(p, Pending::Truncate { done: false }))
                    {
                        *p = Pending::Truncate { done: true };
                    }
                }
                LogEvent::AppendsFailed { error, .. } => return Err(StoreError::Disk(error.to_string())),
                LogEvent::Corrupted {
                    segment,
                    position,
                    reason,
                } => return Err(StoreError::Corrupt(format!("{segment} at {position}: {reason}"))),
                _ => {}
            }
        }
        self.advance();
        Ok(())
    }

    fn advance(&mut self) {
        let durable = self.log.durable_offset();
        while let Some(&(seq, p)) = self.queue.front() {
            let done = match p {
                Pending::HardState { done } | Pending::Truncate { done } => done,
                Pending::Append { last_index: None } | Pending::Barrier => true,
                Pending::Append {
                    last_index: Some(last_index),
                } => i64::try_from(last_index).is_ok_and(|l| durable >= l),
            };
            if !done {
                break;
            }
            self.queue.pop_front();
            self.done_seq = seq;
        }
    }

    /// Reads entries from `from_index` on, about `max_bytes`, through core's read path
    /// (`Log::read_plan`, the disk, `trim_fetched`). Returns what the log has written so
    /// far (possibly nothing); corruption is an error.
    pub fn read_entries(
        &self,
        disk: &SimDisk,
        from_index: u64,
        max_bytes: usize,
    ) -> Result<Vec<SimEntry>, StoreError> {
        let from = i64::try_from(from_index).map_err(|_| StoreError::Contract("offset overflow".into()))?;
        let max_bytes = u64::try_from(max_bytes).unwrap_or(u64::MAX);
        let plan = self
            .log
            .read_plan(from, max_bytes, i64::MAX)
            .map_err(|e| StoreError::Contract(format!("read from {from_index}: {e}")))?;
        let mut chunks = Vec::with_capacity(plan.ranges.len());
        for range in &plan.ranges {
            let path = format!("{}/{}", self.dir, range.segment.file_name());
            chunks.push(
                disk.read(&path, range.position, range.len_bytes)
                    .map_err(|e| StoreError::Corrupt(format!("read {path}: {e}")))?,
            );
        }
        // The plan's byte ranges may run past what is readable (e.g. over batches a
        // pending truncation is about to cut): trim at the written offset.
        let readable = self.log.written_offset();
        let bytes = trim_fetched(&chunks, from, readable, max_bytes)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut out = Vec::new();
        for (at, header) in iter_batches(&bytes) {
            out.push(decode_entry(&bytes, at, &header)?);
        }
        Ok(out)
    }

    /// Rebuilds storage from what `disk` holds: core's log recovery, its repairs applied,
    /// then the entries read back. Returns the store, hard state, entries and recovery
    /// report.
    pub fn recover(
        disk: &mut SimDisk,
        rng: &mut SimRng,
        now: Instant,
        group: u32,
    ) -> Result<(NodeStore, HardState, Vec<SimEntry>, RecoveryReport), StoreError> {
        let dir = partition_dir(group);
        let hs = match disk.read_all(&hard_state_path(group)) {
            Ok(bytes) => decode_hard_state(&bytes)
                .ok_or_else(|| StoreError::Corrupt("hard state checksum mismatch".into()))?,
            Err(_) => HardState::default(),
        };
        let mut backend = LogDisk::new(dir.clone());
        let (mut log, report) = backend
            .recover(disk, sim_log_config())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Apply the repairs recovery asked for, completing at once.
        loop {
            let mut progressed = false;
            while let Some(effect) = log.poll_effect() {
                progressed = true;
                for io in backend.execute(disk, rng, now, effect)? {
                    if let Some(t) = &io.sync {
                        disk.finish_sync(t);
                    }
                    if let Some((path, data)) = io.replace.clone() {
                        disk.replace(rng, &path, data, true)
                            .map_err(|e| StoreError::Disk(e.to_string()))?;
                    }
                    log.handle_completion(now, io.completion);
                }
            }
            while let Some(event) = log.poll_event() {
                if let LogEvent::Corrupted {
                    segment,
                    position,
                    reason,
                } = event
                {
                    return Err(StoreError::Corrupt(format!("{segment} at {position}: {reason}")));
                }
            }
            if !progressed {
                break;
            }
        }
        let entries = read_entries(disk, &dir, &log)?;
        let store = NodeStore {
            hard_state_path: hard_state_path(group),
            dir,
            backend,
            log,
            queue: VecDeque::new(),
            done_seq: 0,
            hard_state_written_seq: 0,
        };
        Ok((store, hs, entries, report))
    }
}

/// Decodes the batch at `at` of `bytes` into an entry.
fn decode_entry(bytes: &[u8], at: usize, header: &BatchHeader) -> Result<SimEntry, StoreError> {
    let index =
        u64::try_from(header.base_offset).map_err(|_| StoreError::Corrupt("negative offset".into()))?;
    let term = u64::try_from(header.leader_epoch).unwrap_or(0);
    let end = at + header.size_bytes();
    if end > bytes.len() || at + BATCH_HEADER_BYTES > end {
        return Err(StoreError::Corrupt(format!(
            "batch at offset {index} overruns the read"
        )));
    }
    let body = Bytes::copy_from_slice(&bytes[at + BATCH_HEADER_BYTES..end]);
    let records = parse_uncompressed_records(&body, header.record_count)
        .map_err(|e| StoreError::Corrupt(format!("records at offset {index}: {e}")))?;
    let value = records.into_iter().next().and_then(|r| r.value);
    let (kind, payload) = match (header.is_control(), value) {
        (true, None) => (EntryKind::Noop, Bytes::new()),
        (true, Some(v)) => (EntryKind::Config, v),
        (false, v) => (EntryKind::Data, v.unwrap_or_default()),
    };
    Ok(SimEntry {
        term,
        index,
        kind,
        payload,
    })
}

fn read_entries(disk: &SimDisk, dir: &str, log: &Log) -> Result<Vec<SimEntry>, StoreError> {
    let end = log.next_offset();
    let mut entries = Vec::new();
    for segment in log.segments() {
        let path = format!("{dir}/{}", segment.id.file_name());
        let bytes = disk
            .read_all(&path)
            .map_err(|e| StoreError::Corrupt(format!("segment vanished after recovery: {e}")))?;
        for (at, header) in iter_batches(&bytes) {
            if header.base_offset >= end {
                break;
            }
            let entry = decode_entry(&bytes, at, &header)?;
            if entry.index != entries.len() as u64 {
                return Err(StoreError::Corrupt(format!(
                    "entry at offset {} where {} was expected",
                    entry.index,
                    entries.len()
                )));
            }
            entries.push(entry);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskConfig;
    use crate::rng::Seeds;

    /// Completes every pending log I/O of `store`, and whatever those completions start,
    /// until none is left (test support shared by this file's test modules).
    pub(super) fn settle(
        store: &mut NodeStore,
        disk: &mut SimDisk,
        rng: &mut SimRng,
        mut pending: Vec<LogIo>,
    ) {
        let now = Instant::from_millis(5);
        while let Some(io) = (!pending.is_empty()).then(|| pending.remove(0)) {
            pending.extend(store.complete_log_io(disk, rng, now, io).unwrap().log_io);
        }
    }

    #[test]
    fn hard_state_round_trips_and_detects_damage() {
        let hs = HardState {
            term: 7,
            vote: Some(2),
        };
        let mut b = encode_hard_state(hs).to_vec();
        assert_eq!(decode_hard_state(&b), Some(hs));
        assert_eq!(
            decode_hard_state(&encode_hard_state(HardState::default())),
            Some(HardState::default())
        );
        b[3] ^= 1;
        assert_eq!(decode_hard_state(&b), None);
    }

    #[test]
    fn entries_survive_crash_and_recovery_in_order() {
        let mut disk = SimDisk::new(DiskConfig::default());
        let mut rng = Seeds::new(1).stream("disk");
        let now = Instant::from_millis(5);
        let mut store = NodeStore::new(0);
        let entries: Vec<SimEntry> = (0..300u64)
            .map(|i| SimEntry {
                term: 1 + i / 100,
                index: i,
                kind: if i % 100 == 0 {
                    EntryKind::Noop
                } else {
                    EntryKind::Data
                },
                payload: if i % 100 == 0 {
                    Bytes::new()
                } else {
                    Bytes::from(i.to_be_bytes().to_vec())
                },
            })
            .collect();
        let mut pending: Vec<LogIo> = Vec::new();
        for (seq, chunk) in entries.chunks(50).enumerate() {
            let w = store
                .submit(
                    &mut disk,
                    &mut rng,
                    now,
                    seq as u64 + 1,
                    StorageOp::Append(chunk.to_vec()),
                )
                .unwrap();
            pending.extend(w.log_io);
            settle(&mut store, &mut disk, &mut rng, std::mem::take(&mut pending));
        }
        assert_eq!(store.done_seq(), 6);
        let w = store
            .submit(
                &mut disk,
                &mut rng,
                now,
                7,
                StorageOp::Truncate { from_index: 250 },
            )
            .unwrap();
        pending.extend(w.log_io);
        settle(&mut store, &mut disk, &mut rng, std::mem::take(&mut pending));
        assert_eq!(store.done_seq(), 7);
        disk.crash(&mut rng);
        let (_, hs, back, _) = NodeStore::recover(&mut disk, &mut rng, now, 0).unwrap();
        assert_eq!(hs, HardState::default());
        assert_eq!(back, entries[..250].to_vec());
    }
}

#[cfg(test)]
mod truncate_tests {
    use super::tests::settle;
    use super::*;
    use crate::disk::DiskConfig;
    use crate::rng::Seeds;

    fn data(term: u64, index: u64) -> SimEntry {
        SimEntry {
            term,
            index,
            kind: EntryKind::Data,
            payload: Bytes::from(index.to_be_bytes().to_vec()),
        }
    }

    #[test]
    fn truncate_of_unsynced_tail_then_append_becomes_durable() {
        let mut disk = SimDisk::new(DiskConfig::default());
        let mut rng = Seeds::new(1).stream("disk");
        let now = Instant::from_millis(5);
        let mut store = NodeStore::new(0);
        let mut pending: Vec<LogIo> = Vec::new();
        let mut seq = 0;
        for i in 0..162 {
            seq += 1;
            pending.extend(
                store
                    .submit(
                        &mut disk,
                        &mut rng,
                        now,
                        seq,
                        StorageOp::Append(vec![data(10, i)]),
                    )
                    .unwrap()
                    .log_io,
            );
        }
        settle(&mut store, &mut disk, &mut rng, std::mem::take(&mut pending));
        assert_eq!(store.done_seq(), seq);
        for i in 162..165 {
            seq += 1;
            pending.extend(
                store
                    .submit(
                        &mut disk,
                        &mut rng,
                        now,
                        seq,
                        StorageOp::Append(vec![data(10, i)]),
                    )
                    .unwrap()
                    .log_io,
            );
        }
        // Deliver only the first completion (a write), leave the rest in flight.
        let first = pending.remove(0);
        pending.extend(
            store
                .complete_log_io(&mut disk, &mut rng, now, first)
                .unwrap()
                .log_io,
        );
        seq += 1;
        pending.extend(
            store
                .submit(
                    &mut disk,
                    &mut rng,
                    now,
                    seq,
                    StorageOp::Truncate { from_index: 162 },
                )
                .unwrap()
                .log_io,
        );
        seq += 1;
        pending.extend(
            store
                .submit(
                    &mut disk,
                    &mut rng,
                    now,
                    seq,
                    StorageOp::Append(vec![data(11, 162)]),
                )
                .unwrap()
                .log_io,
        );
        let mut rounds = 0;
        while let Some(io) = (!pending.is_empty()).then(|| pending.remove(0)) {
            rounds += 1;
            assert!(rounds < 1000);
            pending.extend(
                store
                    .complete_log_io(&mut disk, &mut rng, now, io)
                    .unwrap()
                    .log_io,
            );
        }
        assert_eq!(
            store.done_seq(),
            seq,
            "queue {:?} durable {} next {}",
            store.queue,
            store.log.durable_offset(),
            store.log.next_offset()
        );
    }
}

#[cfg(test)]
mod config_entry_tests {
    use super::tests::settle;
    use super::*;
    use crate::disk::DiskConfig;
    use crate::rng::Seeds;

    #[test]
    fn config_and_noop_entries_round_trip() {
        let mut disk = SimDisk::new(DiskConfig::default());
        let mut rng = Seeds::new(1).stream("disk");
        let now = Instant::from_millis(5);
        let mut store = NodeStore::new(0);
        let entries = vec![
            SimEntry {
                term: 1,
                index: 0,
                kind: EntryKind::Noop,
                payload: Bytes::new(),
            },
            SimEntry {
                term: 1,
                index: 1,
                kind: EntryKind::Config,
                payload: Bytes::from_static(b"\\x01\\x02cfg"),
            },
            SimEntry {
                term: 1,
                index: 2,
                kind: EntryKind::Data,
                payload: Bytes::from_static(b"12345678"),
            },
        ];
        let mut pending = store
            .submit(&mut disk, &mut rng, now, 1, StorageOp::Append(entries.clone()))
            .unwrap()
            .log_io;
        settle(&mut store, &mut disk, &mut rng, std::mem::take(&mut pending));
        let (_, _, back, _) = NodeStore::recover(&mut disk, &mut rng, now, 0).unwrap();
        assert_eq!(back, entries);
    }
}

#[cfg(test)]
mod read_tests {
    use super::tests::settle;
    use super::*;
    use crate::disk::DiskConfig;
    use crate::rng::Seeds;

    fn data(term: u64, index: u64) -> SimEntry {
        SimEntry {
            term,
            index,
            kind: EntryKind::Data,
            payload: Bytes::from(index.to_be_bytes().to_vec()),
        }
    }

    #[test]
    fn reads_go_through_the_log_and_return_what_was_written() {
        let mut disk = SimDisk::new(DiskConfig::default());
        let mut rng = Seeds::new(1).stream("disk");
        let now = Instant::from_millis(5);
        let mut store = NodeStore::new(0);
        let entries: Vec<SimEntry> = (0..200).map(|i| data(1, i)).collect();
        let w = store
            .submit(&mut disk, &mut rng, now, 1, StorageOp::Append(entries.clone()))
            .unwrap();
        settle(&mut store, &mut disk, &mut rng, w.log_io);
        let got = store.read_entries(&disk, 150, 1_000).unwrap();
        assert!(!got.is_empty());
        assert_eq!(got[..], entries[150..150 + got.len()]);
    }

    /// While a truncation is pending, `read_plan`'s byte ranges still cover the batches
    /// about to be cut; the read must trim at the written offset.
    #[test]
    fn a_read_after_truncate_and_reappend_never_returns_the_truncated_entry() {
        let mut disk = SimDisk::new(DiskConfig::default());
        let mut rng = Seeds::new(1).stream("disk");
        let now = Instant::from_millis(5);
        let mut store = NodeStore::new(0);
        let entries: Vec<SimEntry> = (0..39).map(|i| data(1 + i / 15, i)).collect();
        for (k, e) in entries.iter().enumerate() {
            let w = store
                .submit(
                    &mut disk,
                    &mut rng,
                    now,
                    k as u64 + 1,
                    StorageOp::Append(vec![e.clone()]),
                )
                .unwrap();
            settle(&mut store, &mut disk, &mut rng, w.log_io);
        }
        // A restart: the recovered log knows batch boundaries only from its sparse index,
        // so the truncation below must read to find one, and stays pending meanwhile.
        let (mut store, _, _, _) = NodeStore::recover(&mut disk, &mut rng, now, 0).unwrap();
        let mut pending = store
            .submit(
                &mut disk,
                &mut rng,
                now,
                1,
                StorageOp::Truncate { from_index: 37 },
            )
            .unwrap()
            .log_io;
        let noop = SimEntry {
            term: 4,
            index: 37,
            kind: EntryKind::Noop,
            payload: Bytes::new(),
        };
        pending.extend(
            store
                .submit(&mut disk, &mut rng, now, 2, StorageOp::Append(vec![noop.clone()]))
                .unwrap()
                .log_io,
        );
        // Completions still in flight: the truncation is pending.
        let got = store.read_entries(&disk, 30, 100_000).unwrap();
        assert!(!got.is_empty());
        for e in &got {
            assert!(e.index < 37 || *e == noop, "read returned the truncated {e:?}");
        }
        settle(&mut store, &mut disk, &mut rng, pending);
    }
}
