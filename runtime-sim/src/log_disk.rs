//! The simulated disk backend of core's storage log: executes [`LogEffect`]s of one
//! partition directory on a node's [`SimDisk`], and feeds [`LogRecovery`] from what the
//! disk holds after a restart.
//!
//! It keeps the contract written in `oxbow_core::log::io`:
//!
//! * effects run in emission order and complete in that order (the disk serves one
//!   operation at a time);
//! * a `Sync` makes durable what was written *before it was issued*, at the moment its
//!   completion is delivered ([`LogIo::sync`] carries the ticket the simulator redeems
//!   then) — a crash before that loses the data;
//! * every sync and every failure is reported; writes report `Written`;
//! * a checkpoint is replaced atomically and durably when its completion is delivered
//!   (write temp, fsync, rename): a crash leaves the old or the new one, never a torn one;
//! * a state file (producer state) is replaced atomically and durably when issued; it is
//!   advisory, so it has no completion and a failure only leaves the old one;
//! * a `ResetLog` (a follower installing a snapshot) replaces the checkpoint with its
//!   marker durably, then deletes the old segments last first, all when issued, and
//!   completes as the sync it names;
//! * after a failure of generation `g`, the rest of `g`'s queued effects are dropped
//!   (a real backend would fail them too; the log ignores `g` anyway);
//! * a `Write` that does not start at the segment's end is a **contract violation** by
//!   the log, reported as an error that fails the run, not as a disk error.

use crate::disk::{FsError, SimDisk, SyncTicket};
use crate::rng::SimRng;
use bytes::Bytes;
use oxbow_core::log::io::{CHECKPOINT_FILE_NAME, INDEX_SUFFIX, STATE_FILE_NAMES};
use oxbow_core::log::Log;
use oxbow_core::log::{
    DirEntry, DiskError, LogCompletion, LogConfig, LogEffect, LogRecovery, RecoveryError, RecoveryInput,
    RecoveryReport, RecoveryStep, SegmentId,
};
use oxbow_core::time::Instant;
use std::time::Duration;

/// The log broke its side of the disk contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log/disk contract violated in {dir}: {detail}")]
pub struct ContractViolation {
    /// Partition directory.
    pub dir: String,
    /// What happened.
    pub detail: String,
}

/// A completion to deliver to the log after `delay`.
#[derive(Debug, Clone)]
pub struct LogIo {
    /// When, from the effect's issue.
    pub delay: Duration,
    /// Redeem with [`SimDisk::finish_sync`] just before delivering `completion`.
    pub sync: Option<SyncTicket>,
    /// Replace this file atomically and durably just before delivering `completion`
    /// (a checkpoint: write temp, fsync, rename — a crash leaves the old or the new).
    pub replace: Option<(String, Bytes)>,
    /// What to tell the log.
    pub completion: LogCompletion,
}

/// One partition directory's backend state.
#[derive(Debug, Clone)]
pub struct LogDisk {
    dir: String,
    failed_generation: Option<u64>,
}

fn disk_error(e: FsError) -> DiskError {
    match e {
        FsError::NoSpace => DiskError::NoSpace,
        other => DiskError::Io(other.to_string()),
    }
}

impl LogDisk {
    /// The backend of the partition in `dir` (e.g. `kafka/t/0_0`).
    pub fn new(dir: impl Into<String>) -> Self {
        LogDisk {
            dir: dir.into(),
            failed_generation: None,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    fn seg(&self, id: SegmentId) -> String {
        self.path(&id.file_name())
    }

    /// Forgets failure state (a restart).
    pub fn reset(&mut self) {
        self.failed_generation = None;
    }

    /// Executes one effect at `now`; returns the completions to deliver, in order.
    pub fn execute(
        &mut self,
        disk: &mut SimDisk,
        rng: &mut SimRng,
        now: Instant,
        effect: LogEffect,
    ) -> Result<Vec<LogIo>, ContractViolation> {
        let generation = effect.generation();
        if self.failed_generation == Some(generation) {
            return Ok(Vec::new());
        }
        let write_time = disk.write_time(rng);
        let mut out = Vec::new();
        let result: Result<Option<(Option<SyncTicket>, LogCompletion, Duration)>, FsError> = match effect {
            LogEffect::CreateSegment { segment, .. } => disk.create(&self.seg(segment)).map(|()| None),
            LogEffect::Write {
                segment,
                position,
                data,
                last_offset,
                ..
            } => {
                let path = self.seg(segment);
                let len = disk
                    .len_bytes(&path)
                    .map_err(|e| self.violation(format!("write to {segment}: {e}")))?;
                if len != position {
                    return Err(self.violation(format!(
                        "write to {segment} at {position}, but the file ends at {len}"
                    )));
                }
                disk.write(rng, &path, position, data.to_bytes()).map(|()| {
                    Some((
                        None,
                        LogCompletion::Written {
                            generation,
                            last_offset,
                        },
                        write_time,
                    ))
                })
            }
            LogEffect::Sync {
                sync_id, segments, ..
            } => {
                let paths: Vec<String> = segments
                    .iter()
                    .map(|s| self.seg(*s))
                    .filter(|p| disk.exists(p))
                    .collect();
                let sync_time = disk.sync_time(rng);
                disk.begin_sync(rng, &paths)
                    .map(|t| Some((Some(t), LogCompletion::Synced { generation, sync_id }, sync_time)))
            }
            LogEffect::TruncateSegment {
                segment, len_bytes, ..
            } => {
                let path = self.seg(segment);
                match disk.len_bytes(&path) {
                    Ok(len) if len < len_bytes => {
                        return Err(self.violation(format!(
                            "truncate {segment} to {len_bytes}, but the file is only {len} bytes"
                        )))
                    }
                    _ => disk.truncate(&path, len_bytes, true).map(|()| None),
                }
            }
            LogEffect::DeleteSegment { segment, .. } => {
                disk.delete(&self.seg(segment));
                disk.delete(&self.path(&segment.index_file_name()));
                Ok(None)
            }
            LogEffect::WriteIndex { segment, data, .. } => {
                // Advisory: a failure leaves a stale or missing index, which recovery
                // rebuilds; nothing to report.
                let _ = disk.replace(rng, &self.path(&segment.index_file_name()), data, false);
                Ok(None)
            }
            LogEffect::WriteCheckpoint {
                checkpoint_id, data, ..
            } => {
                // Atomic and durable at completion time; see `LogIo::replace`.
                let sync_time = disk.sync_time(rng);
                out.push(LogIo {
                    delay: disk.service_delay(now, write_time + sync_time),
                    sync: None,
                    replace: Some((self.path(CHECKPOINT_FILE_NAME), data)),
                    completion: LogCompletion::CheckpointWritten {
                        generation,
                        checkpoint_id,
                    },
                });
                return Ok(out);
            }
            LogEffect::WriteStateFile { name, data, .. } => {
                // Advisory, atomic and durable (write temp, fsync, rename), no completion:
                // a failure leaves the old file, and recovery reads more of the log.
                let _ = disk.replace(rng, &self.path(name), data, true);
                Ok(None)
            }
            LogEffect::ResetLog {
                sync_id,
                segments,
                checkpoint,
                ..
            } => {
                // The marker checkpoint durably first, then the deletions (durable when
                // issued), last segment first; all at issue time, so no crash falls in
                // between here (core's MemDisk tests cover crashes mid-reset).
                disk.replace(rng, &self.path(CHECKPOINT_FILE_NAME), checkpoint, true)
                    .map(|()| {
                        for segment in segments.iter().rev() {
                            disk.delete(&self.seg(*segment));
                            disk.delete(&self.path(&segment.index_file_name()));
                        }
                        Some((None, LogCompletion::Synced { generation, sync_id }, write_time))
                    })
            }
            LogEffect::Read { read_id, range, .. } => disk
                .read(&self.seg(range.segment), range.position, range.len_bytes)
                .map(|data| {
                    Some((
                        None,
                        LogCompletion::Read {
                            generation,
                            read_id,
                            data,
                        },
                        write_time,
                    ))
                }),
            other => {
                return Err(self.violation(format!("effect the simulated disk does not know: {other:?}")));
            }
        };
        match result {
            Ok(None) => {}
            Ok(Some((sync, completion, service))) => out.push(LogIo {
                delay: disk.service_delay(now, service),
                sync,
                replace: None,
                completion,
            }),
            Err(e) => {
                self.failed_generation = Some(generation);
                out.push(LogIo {
                    delay: disk.service_delay(now, write_time),
                    sync: None,
                    replace: None,
                    completion: LogCompletion::Failed {
                        generation,
                        error: disk_error(e),
                    },
                });
            }
        }
        Ok(out)
    }

    fn violation(&self, detail: String) -> ContractViolation {
        ContractViolation {
            dir: self.dir.clone(),
            detail,
        }
    }

    /// What [`LogRecovery`] needs from the directory as the disk holds it now.
    pub fn recovery_input(&self, disk: &SimDisk) -> RecoveryInput {
        let listing = disk.list(&self.dir);
        let mut input = RecoveryInput::default();
        for (name, len_bytes) in listing {
            if name.ends_with(INDEX_SUFFIX) {
                if let (Some(id), Ok(bytes)) = (
                    SegmentId::parse_index_file_name(&name),
                    disk.read_all(&self.path(&name)),
                ) {
                    input.index_files.push((id, bytes));
                }
            } else if name == CHECKPOINT_FILE_NAME {
                input.checkpoint = disk.read_all(&self.path(&name)).ok();
            } else if STATE_FILE_NAMES.contains(&name.as_str()) {
                if let Ok(bytes) = disk.read_all(&self.path(&name)) {
                    input.state_files.insert(name.clone(), bytes);
                }
            }
            input.files.push(DirEntry { name, len_bytes });
        }
        input
    }

    /// Runs core's recovery over the directory (reads are served at once: recovery
    /// time is not what the simulator studies).
    pub fn recover(&self, disk: &SimDisk, config: LogConfig) -> Result<(Log, RecoveryReport), RecoveryError> {
        let mut recovery = LogRecovery::new(config, self.recovery_input(disk));
        while let RecoveryStep::Read(range) = recovery.poll() {
            let data = disk
                .read(&self.seg(range.segment), range.position, range.len_bytes)
                .unwrap_or_else(|_| Bytes::new());
            recovery.feed(range, data);
        }
        recovery.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskConfig;
    use crate::rng::Seeds;
    use oxbow_core::log::builder;
    use oxbow_core::log::LogEvent;

    /// Drives a log against a simulated disk, delivering completions at once (in
    /// order), until it is idle. Returns the events seen.
    fn pump(
        log: &mut Log,
        backend: &mut LogDisk,
        disk: &mut SimDisk,
        rng: &mut SimRng,
        now: Instant,
    ) -> Vec<LogEvent> {
        let mut events = Vec::new();
        loop {
            let mut progressed = false;
            while let Some(effect) = log.poll_effect() {
                progressed = true;
                for io in backend.execute(disk, rng, now, effect).unwrap() {
                    if let Some(t) = &io.sync {
                        disk.finish_sync(t);
                    }
                    if let Some((path, data)) = io.replace.clone() {
                        disk.replace(rng, &path, data, true).unwrap();
                    }
                    log.handle_completion(now, io.completion);
                }
            }
            while let Some(e) = log.poll_event() {
                progressed = true;
                events.push(e);
            }
            if !progressed {
                return events;
            }
        }
    }

    fn batch(n: usize) -> Bytes {
        let records: Vec<builder::NewRecord> = (0..n)
            .map(|i| builder::NewRecord::value(vec![u8::try_from(i).unwrap(); 100], 1_000))
            .collect();
        builder::build_batch(&records, builder::BatchOptions::default())
    }

    #[test]
    fn synced_appends_survive_a_crash_and_recovery() {
        let mut disk = SimDisk::new(DiskConfig::default());
        let mut rng = Seeds::new(5).stream("disk");
        let mut backend = LogDisk::new("kafka/t/0_0");
        let mut log = Log::new(LogConfig::default(), 0);
        let now = Instant::from_millis(1);
        log.append(now, 1, batch(3)).unwrap();
        log.sync();
        let events = pump(&mut log, &mut backend, &mut disk, &mut rng, now);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, LogEvent::Durable { last_offset: 2 })),
            "{events:?}"
        );
        log.append(now, 1, batch(2)).unwrap(); // never synced
        pump(&mut log, &mut backend, &mut disk, &mut rng, now);
        disk.crash(&mut rng);
        let (recovered, report) = backend.recover(&disk, LogConfig::default()).unwrap();
        assert!(recovered.next_offset() >= 3, "{report:?}");
        assert!(recovered.next_offset() <= 5);
    }
}
