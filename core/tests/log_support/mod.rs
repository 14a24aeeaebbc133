//! Test support for the log: a [`Log`] over a [`MemDisk`], with helpers to append,
//! fetch, crash and recover, and to check a log against a full scan of its files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use oxbow_core::log::batch::iter_batches;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::read::trim_fetched;
use oxbow_core::log::records::parse_uncompressed_records;
use oxbow_core::log::{
    AppendInfo, Log, LogConfig, LogEffect, LogEvent, LogRecovery, RecoveryError, RecoveryReport, RecoveryStep,
};
use oxbow_core::time::Instant;
use std::collections::VecDeque;

/// A small config: 1 MiB segments (the minimum), 256-byte index interval.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024 * 1024,
        index_interval_bytes: 256,
        max_batch_bytes: 64 * 1024,
        recovery_read_bytes: 64 * 1024,
        preallocate_bytes: 0,
        ..LogConfig::default()
    }
}

pub struct Harness {
    pub log: Log,
    pub disk: MemDisk,
    pub config: LogConfig,
    pub now: Instant,
    pub events: Vec<LogEvent>,
    /// When set, effects wait here until `release` runs them.
    pub hold: bool,
    pub held: VecDeque<LogEffect>,
}

/// A batch of `count` records whose values are `"<tag>-<i>"`, at `timestamp_ms`.
pub fn batch(tag: &str, count: usize, timestamp_ms: i64) -> Bytes {
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord::value(format!("{tag}-{i}"), timestamp_ms + i as i64))
        .collect();
    build_batch(&records, BatchOptions::default())
}

impl Harness {
    pub fn new(config: LogConfig) -> Self {
        Harness {
            log: Log::new(config.clone(), 0),
            disk: MemDisk::new(),
            config,
            now: Instant::from_millis(1),
            events: Vec::new(),
            hold: false,
            held: VecDeque::new(),
        }
    }

    pub fn pump(&mut self) {
        while let Some(effect) = self.log.poll_effect() {
            if self.hold {
                self.held.push_back(effect);
                continue;
            }
            for completion in self.disk.execute(effect) {
                self.log.handle_completion(self.now, completion);
            }
        }
        while let Some(event) = self.log.poll_event() {
            self.events.push(event);
        }
    }

    /// Runs the held effects in order.
    pub fn release(&mut self) {
        self.hold = false;
        while let Some(effect) = self.held.pop_front() {
            for completion in self.disk.execute(effect) {
                self.log.handle_completion(self.now, completion);
            }
            self.pump();
        }
        self.pump();
    }

    pub fn append(&mut self, term: i64, tag: &str, count: usize) -> AppendInfo {
        let ts = self.now.as_millis() as i64;
        let info = self.log.append(self.now, term, batch(tag, count, ts)).unwrap();
        self.pump();
        info
    }

    pub fn append_synced(&mut self, term: i64, tag: &str, count: usize) -> AppendInfo {
        let info = self.append(term, tag, count);
        self.log.sync();
        self.pump();
        info
    }

    /// Every (offset, value) a reader gets from `from` up to what is written.
    pub fn fetch_all(&self, from: i64) -> Vec<(i64, String)> {
        let plan = self.log.read_plan(from, u64::MAX / 4, i64::MAX).unwrap();
        let chunks: Vec<Bytes> = plan
            .ranges
            .iter()
            .map(|r| self.disk.read(r.segment, r.position, r.len_bytes))
            .collect();
        let bytes = trim_fetched(&chunks, from, i64::MAX, u64::MAX).unwrap();
        decode_values(&bytes)
            .into_iter()
            .filter(|(offset, _)| *offset >= from)
            .collect()
    }

    pub fn crash(&mut self, torn_keep_bytes: usize) {
        self.held.clear();
        self.disk.crash(torn_keep_bytes);
    }

    pub fn recover(&mut self) -> Result<RecoveryReport, RecoveryError> {
        let (log, report) = recover(&self.disk, self.config.clone())?;
        self.log = log;
        self.hold = false;
        self.events.clear();
        self.pump();
        Ok(report)
    }

    /// Checks the log's view against a full scan of its files: contiguous offsets,
    /// segment sizes, and every index entry pointing at the batch it names.
    pub fn check_against_scan(&self) {
        let mut expected_next: Option<i64> = None;
        for segment in self.log.segments() {
            let bytes = self.disk.read(segment.id, 0, u64::MAX / 4);
            assert_eq!(
                bytes.len() as u64,
                segment.size_bytes,
                "segment {} size",
                segment.id
            );
            let batches: Vec<_> = iter_batches(&bytes).collect();
            if let Some(next) = expected_next {
                if segment.id.base_offset > self.log.start_offset() {
                    assert_eq!(
                        segment.id.base_offset, next,
                        "segments contiguous above the start offset"
                    );
                }
            }
            let mut next = segment.id.base_offset;
            for (_, header) in &batches {
                assert_eq!(header.base_offset, next, "offsets contiguous in {}", segment.id);
                assert_eq!(i64::from(header.leader_epoch), segment.id.term);
                next = header.next_offset();
            }
            assert_eq!(next, segment.next_offset);
            for entry in segment.index.entries() {
                let (_, header) = batches
                    .iter()
                    .find(|(pos, _)| *pos as u32 == entry.position)
                    .expect("index entry points at a batch start");
                assert_eq!(
                    header.base_offset - segment.id.base_offset,
                    i64::from(entry.relative_offset)
                );
            }
            expected_next = Some(next);
        }
    }
}

pub fn recover(disk: &MemDisk, config: LogConfig) -> Result<(Log, RecoveryReport), RecoveryError> {
    let mut recovery = LogRecovery::new(config, disk.recovery_input());
    while let RecoveryStep::Read(range) = recovery.poll() {
        let data = disk.read(range.segment, range.position, range.len_bytes);
        recovery.feed(range, data);
    }
    recovery.finish()
}

/// (offset, value) of every record in uncompressed data batches.
pub fn decode_values(bytes: &Bytes) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for (at, header) in iter_batches(bytes) {
        if header.is_control() {
            continue;
        }
        let records = bytes.slice(at + 61..at + header.size_bytes());
        for record in parse_uncompressed_records(&records, header.record_count).unwrap() {
            let value = String::from_utf8(record.value.unwrap_or_default().to_vec()).unwrap();
            out.push((header.base_offset + record.offset_delta, value));
        }
    }
    out
}
