//! [`LogRecovery`]: rebuilding a partition's [`Log`] from what its directory holds
//! after a clean stop or a crash, as a sans-IO state machine.
//!
//! The runtime lists the directory, hands over the index files and the checkpoint,
//! then reads whatever ranges recovery asks for. Recovery:
//!
//! * trusts a closed segment before the checkpoint's durable segment if its index is
//!   intact (its data was synced before the checkpoint was written);
//! * scans every other segment batch by batch (header, magic, CRC, contiguous
//!   offsets, the segment's term), rebuilding its index;
//! * where a scan stops early: past the checkpoint's durable point it is a torn tail —
//!   the rest of the segment and all later segments are cut; before it, synced data is
//!   damaged — recovery fails with [`RecoveryError::Corrupted`] and cuts nothing, so a
//!   replica can fetch the data again instead of serving or losing it;
//! * deletes empty segments and orphaned index files, rewrites missing or damaged
//!   indexes of closed segments, and syncs what the checkpoint did not cover before
//!   calling it durable.

use super::batch::BatchHeader;
use super::checkpoint::Checkpoint;
use super::config::LogConfig;
use super::index::SparseIndex;
use super::io::{FileRange, LogEffect, SegmentId, CHECKPOINT_FILE_NAME, STATE_FILE_NAMES};
use super::partition_log::{Log, RecoveredLog};
use super::segment::Segment;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;

/// One entry of the partition directory listing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirEntry {
    /// File name.
    pub name: String,
    /// File length in bytes.
    pub len_bytes: u64,
}

/// What the runtime found in the partition directory.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RecoveryInput {
    /// Every file in the directory.
    pub files: Vec<DirEntry>,
    /// The contents of every index file in `files`.
    pub index_files: Vec<(SegmentId, Bytes)>,
    /// The checkpoint file's contents, if it exists.
    pub checkpoint: Option<Bytes>,
    /// The contents of the state files ([`STATE_FILE_NAMES`]) that exist, handed to the
    /// recovered log for the partition's state machines ([`Log::take_state_file`]).
    pub state_files: BTreeMap<String, Bytes>,
}

/// Stored data that was synced is damaged; nothing was cut.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// Damage inside data the checkpoint records as durable, or a gap between segments.
    #[error("segment {segment}: synced data is corrupt at byte {position}: {reason}")]
    Corrupted {
        /// Damaged segment.
        segment: SegmentId,
        /// Position of the damage.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The runtime handed back bytes for a range recovery did not ask for.
    #[error("recovery was fed a range it did not ask for: {0:?}")]
    UnexpectedRead(FileRange),
}

/// What recovery did, for logs and metrics.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RecoveryReport {
    /// Segments kept.
    pub segments: usize,
    /// Segments scanned batch by batch.
    pub scanned_segments: usize,
    /// Indexes rebuilt because they were missing or damaged.
    pub rebuilt_indexes: Vec<SegmentId>,
    /// Torn tails cut: segment, position cut at, bytes removed, why the scan stopped.
    pub torn_tails: Vec<(SegmentId, u64, u64, String)>,
    /// Segments deleted (empty, after a torn tail, or below the start offset).
    pub deleted_segments: Vec<SegmentId>,
    /// Files in the directory that are not Oxbow's.
    pub ignored_files: Vec<String>,
    /// Observations that need no action but deserve a log line.
    pub warnings: Vec<String>,
}

/// What recovery needs next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RecoveryStep {
    /// Read this range and [`LogRecovery::feed`] the bytes.
    Read(FileRange),
    /// Call [`LogRecovery::finish`].
    Done,
}

#[derive(Debug)]
struct Scan {
    segment: Segment,
    file_len_bytes: u64,
    next_read_at: u64,
    pending: BytesMut,
    stop: Option<(u64, String)>,
    /// The scan stopped at zero bytes: preallocation or block padding past the end.
    zero_padding: bool,
}

/// Rebuilds a [`Log`] from a partition directory.
#[derive(Debug)]
pub struct LogRecovery {
    config: LogConfig,
    checkpoint: Option<Checkpoint>,
    found: Vec<(SegmentId, u64)>,
    indexes: BTreeMap<SegmentId, Bytes>,
    cursor: usize,
    scan: Option<Scan>,
    kept: Vec<Segment>,
    cleanup: Vec<LogEffect>,
    report: RecoveryReport,
    failed: Option<RecoveryError>,
    finished: bool,
    scanned: Vec<SegmentId>,
    state_files: BTreeMap<String, Bytes>,
    /// The term a reset marker checkpoint recorded (see [`drop_unfinished_reset`]).
    reset_term: Option<i64>,
}

impl LogRecovery {
    /// Starts recovery from a directory listing.
    pub fn new(config: LogConfig, input: RecoveryInput) -> LogRecovery {
        let mut report = RecoveryReport::default();
        let mut cleanup = Vec::new();
        let mut found = Vec::new();
        let mut indexes: BTreeMap<SegmentId, Bytes> = input.index_files.into_iter().collect();
        for file in &input.files {
            if let Some(id) = SegmentId::parse_file_name(&file.name) {
                if file.len_bytes == 0 {
                    cleanup.push(LogEffect::DeleteSegment {
                        generation: 0,
                        segment: id,
                    });
                    report.deleted_segments.push(id);
                } else {
                    found.push((id, file.len_bytes));
                }
            } else if SegmentId::parse_index_file_name(&file.name).is_none()
                && file.name != CHECKPOINT_FILE_NAME
                && !STATE_FILE_NAMES.contains(&file.name.as_str())
            {
                report.ignored_files.push(file.name.clone());
            }
        }
        found.sort();
        let orphans: Vec<SegmentId> = indexes
            .keys()
            .filter(|id| !found.iter().any(|(f, _)| f == *id))
            .copied()
            .collect();
        for id in orphans {
            indexes.remove(&id);
            if !report.deleted_segments.contains(&id) {
                cleanup.push(LogEffect::DeleteSegment {
                    generation: 0,
                    segment: id,
                });
                report
                    .warnings
                    .push(format!("index {id} had no segment; deleted"));
            }
        }
        let checkpoint = input.checkpoint.as_deref().and_then(|bytes| {
            let decoded = Checkpoint::decode(bytes);
            if decoded.is_none() {
                report.warnings.push("checkpoint damaged; ignored".to_string());
            }
            decoded
        });
        let reset = checkpoint.and_then(|c| c.reset_term().map(|term| (c.start_offset, term)));
        if let Some((start_offset, _)) = reset {
            drop_unfinished_reset(start_offset, &mut found, &mut indexes, &mut cleanup, &mut report);
        }
        LogRecovery {
            state_files: input.state_files,
            config,
            checkpoint,
            found,
            indexes,
            cursor: 0,
            scan: None,
            kept: Vec::new(),
            cleanup,
            report,
            failed: None,
            finished: false,
            scanned: Vec::new(),
            reset_term: reset.map(|(_, term)| term),
        }
    }

    fn durable_segment(&self) -> Option<SegmentId> {
        self.checkpoint
            .filter(|c| c.durable_offset >= 0 && c.reset_term().is_none())
            .map(|c| c.durable_segment)
    }

    /// The next thing recovery needs.
    pub fn poll(&mut self) -> RecoveryStep {
        loop {
            if self.failed.is_some() || self.finished {
                return RecoveryStep::Done;
            }
            if let Some(scan) = &self.scan {
                if scan.stop.is_none() && scan.next_read_at < scan.file_len_bytes {
                    let len = self
                        .config
                        .recovery_read_bytes
                        .min(scan.file_len_bytes - scan.next_read_at);
                    return RecoveryStep::Read(FileRange {
                        segment: scan.segment.id,
                        position: scan.next_read_at,
                        len_bytes: len,
                    });
                }
                self.finish_scan();
                continue;
            }
            if self.cursor >= self.found.len() {
                self.finished = true;
                return RecoveryStep::Done;
            }
            self.start_segment();
        }
    }

    fn start_segment(&mut self) {
        let (id, file_len_bytes) = self.found[self.cursor];
        let is_last = self.cursor + 1 == self.found.len();
        let before_durable = self
            .durable_segment()
            .is_some_and(|d| id.base_offset < d.base_offset);
        let index = self
            .indexes
            .get(&id)
            .map(|bytes| SparseIndex::decode(id, bytes, file_len_bytes));
        match index {
            Some(Ok(file)) if before_durable && !is_last => {
                let mut segment = Segment::new(id);
                segment.size_bytes = file.segment_size_bytes;
                segment.next_offset = file.next_offset;
                segment.max_timestamp_ms = file.max_timestamp_ms;
                segment.index = file.index;
                self.cursor += 1;
                self.keep(segment);
            }
            other => {
                if let Some(Err(error)) = &other {
                    self.report
                        .warnings
                        .push(format!("index {id}: {error}; rebuilding"));
                }
                if !is_last {
                    self.report.rebuilt_indexes.push(id);
                }
                self.report.scanned_segments += 1;
                self.scan = Some(Scan {
                    segment: Segment::new(id),
                    file_len_bytes,
                    next_read_at: 0,
                    pending: BytesMut::new(),
                    stop: None,
                    zero_padding: false,
                });
            }
        }
    }

    /// Hands over the bytes of the range [`RecoveryStep::Read`] asked for (fewer bytes
    /// mean the file ended).
    pub fn feed(&mut self, range: FileRange, data: Bytes) {
        let interval = self.config.index_interval_bytes;
        let Some(scan) = &mut self.scan else {
            self.failed.get_or_insert(RecoveryError::UnexpectedRead(range));
            return;
        };
        if range.segment != scan.segment.id || range.position != scan.next_read_at {
            self.failed.get_or_insert(RecoveryError::UnexpectedRead(range));
            return;
        }
        if (data.len() as u64) < range.len_bytes {
            scan.file_len_bytes = range.position + data.len() as u64;
        }
        scan.next_read_at += data.len() as u64;
        scan.pending.extend_from_slice(&data);
        let at_eof = scan.next_read_at >= scan.file_len_bytes;
        loop {
            let position = scan.segment.size_bytes;
            let header = match BatchHeader::parse(&scan.pending) {
                Ok(header) => header,
                Err(_) if !at_eof && scan.pending.len() < super::batch::BATCH_HEADER_BYTES => break,
                Err(error) => {
                    if !scan.pending.is_empty() {
                        scan.zero_padding = scan.pending.iter().all(|b| *b == 0);
                        scan.stop = Some((position, error.to_string()));
                    }
                    break;
                }
            };
            if header.size_bytes() > scan.pending.len() {
                if at_eof {
                    scan.stop = Some((
                        position,
                        format!(
                            "batch of {} bytes cut short by the end of the file",
                            header.size_bytes()
                        ),
                    ));
                }
                break;
            }
            let batch = scan.pending.split_to(header.size_bytes()).freeze();
            let defect = match super::batch::check_stored_batch(&batch) {
                Err(error) => Some(error.to_string()),
                Ok(_) if header.base_offset != scan.segment.next_offset => Some(format!(
                    "batch offset {} where {} was expected",
                    header.base_offset, scan.segment.next_offset
                )),
                Ok(_) if i64::from(header.leader_epoch) != scan.segment.id.term => Some(format!(
                    "batch epoch {} in a segment of term {}",
                    header.leader_epoch, scan.segment.id.term
                )),
                Ok(_) => None,
            };
            if let Some(reason) = defect {
                scan.stop = Some((position, reason));
                break;
            }
            scan.segment.on_append(&header, interval);
        }
    }

    fn finish_scan(&mut self) {
        let Some(scan) = self.scan.take() else {
            return;
        };
        self.cursor += 1;
        let id = scan.segment.id;
        let stop = scan.stop.clone().or_else(|| {
            (!scan.pending.is_empty()).then(|| {
                (
                    scan.segment.size_bytes,
                    "trailing bytes after the last batch".to_string(),
                )
            })
        });
        if let Some((position, reason)) = stop {
            let durable_here = self.durable_segment() == Some(id);
            let synced_limit = if durable_here {
                self.checkpoint.map_or(0, |c| c.durable_position)
            } else if self
                .durable_segment()
                .is_some_and(|d| id.base_offset < d.base_offset)
            {
                u64::MAX
            } else {
                0
            };
            let trailing_zeros = scan.zero_padding;
            if position < synced_limit {
                self.failed = Some(RecoveryError::Corrupted {
                    segment: id,
                    position,
                    reason,
                });
                return;
            }
            if !trailing_zeros {
                self.report
                    .torn_tails
                    .push((id, position, scan.file_len_bytes - position, reason.clone()));
            }
            self.cleanup.push(LogEffect::TruncateSegment {
                generation: 0,
                segment: id,
                len_bytes: position,
            });
            // Nothing after a torn tail can be valid: later segments go too.
            let later: Vec<SegmentId> = self.found.drain(self.cursor..).map(|(s, _)| s).collect();
            for later_id in later {
                if self.durable_segment() == Some(later_id) {
                    self.failed = Some(RecoveryError::Corrupted {
                        segment: id,
                        position,
                        reason: format!("{reason}; later segment {later_id} held synced data"),
                    });
                    return;
                }
                self.cleanup.push(LogEffect::DeleteSegment {
                    generation: 0,
                    segment: later_id,
                });
                self.report.deleted_segments.push(later_id);
            }
        }
        let mut segment = scan.segment;
        if segment.is_empty() {
            self.cleanup.push(LogEffect::DeleteSegment {
                generation: 0,
                segment: id,
            });
            self.report.deleted_segments.push(id);
            return;
        }
        if self.cursor < self.found.len() || self.report.rebuilt_indexes.contains(&id) {
            // A closed segment: its rebuilt index goes to disk.
            let data = segment.index.encode(
                id,
                segment.size_bytes,
                segment.next_offset,
                segment.max_timestamp_ms,
            );
            if self.cursor < self.found.len() {
                self.cleanup.push(LogEffect::WriteIndex {
                    generation: 0,
                    segment: id,
                    data,
                });
            }
        }
        segment.first_append_at = None;
        self.scanned.push(id);
        self.keep(segment);
    }

    fn keep(&mut self, segment: Segment) {
        let start_offset = self.checkpoint.map_or(0, |c| c.start_offset);
        if let Some(previous) = self.kept.last() {
            // A gap wholly below the start offset is a deletion not yet carried out.
            let gap_below_start = segment.id.base_offset <= start_offset;
            if previous.next_offset != segment.id.base_offset && !gap_below_start {
                let previous_id = previous.id;
                let synced = self
                    .durable_segment()
                    .is_some_and(|d| segment.id.base_offset <= d.base_offset);
                if synced {
                    self.failed = Some(RecoveryError::Corrupted {
                        segment: previous_id,
                        position: previous.size_bytes,
                        reason: format!(
                            "segment ends at offset {} but the next one starts at {}",
                            previous.next_offset, segment.id.base_offset
                        ),
                    });
                    return;
                }
                // An unsynced roll: the later segments cannot be part of the log.
                let later: Vec<SegmentId> = std::iter::once(segment.id)
                    .chain(self.found.drain(self.cursor..).map(|(s, _)| s))
                    .collect();
                for id in later {
                    self.cleanup.push(LogEffect::DeleteSegment {
                        generation: 0,
                        segment: id,
                    });
                    self.report.deleted_segments.push(id);
                }
                return;
            }
        }
        self.kept.push(segment);
    }

    /// Ends recovery: the rebuilt log (its first effects repair the directory and sync
    /// what the checkpoint did not cover), or the corruption that stopped it.
    pub fn finish(mut self) -> Result<(Log, RecoveryReport), RecoveryError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let mut start_offset = self.checkpoint.map_or(0, |c| c.start_offset);
        if let Some(first) = self.kept.first() {
            start_offset = start_offset.max(first.id.base_offset);
        }
        // Segments wholly below the start offset (retention cut before a crash). The
        // last one stays when it ends right at the start (it says where the log ends
        // and which term it ended in); one that ends before it is no part of the log
        // (a start checkpointed past the locally durable end, then a crash tore the
        // offsets between): the log comes back empty at its start, and Raft continues
        // from a snapshot point there, not from entries the log no longer holds.
        while self.kept.first().is_some_and(|s| {
            s.next_offset < start_offset || (self.kept.len() > 1 && s.next_offset <= start_offset)
        }) {
            let id = self.kept.remove(0).id;
            self.cleanup.push(LogEffect::DeleteSegment {
                generation: 0,
                segment: id,
            });
            self.report.deleted_segments.push(id);
        }
        if let Some(c) = self.checkpoint {
            let end = self.kept.last().map_or(start_offset - 1, |s| s.last_offset());
            if c.durable_offset > end {
                self.report.warnings.push(format!(
                    "log ends at offset {end}, before the checkpointed durable offset {}: a truncation after the checkpoint",
                    c.durable_offset
                ));
            }
        }
        self.report.segments = self.kept.len();
        let start_term = self
            .checkpoint
            .filter(|c| c.start_offset == start_offset)
            .and_then(|c| c.known_start_term());
        let mut log = Log::from_recovered(
            self.config,
            RecoveredLog {
                reset_term: self.reset_term.filter(|_| self.kept.is_empty()),
                segments: self.kept,
                start_offset,
                state_files: self.state_files,
                start_term,
            },
        );
        log.push_recovery_cleanup(self.cleanup, &self.scanned);
        Ok((log, self.report))
    }
}

/// A reset marker checkpoint ([`Checkpoint::reset_marker`]) says the log was replaced
/// by an empty one starting at `start_offset`. The backend deletes the old segments
/// only after the marker is durable, from the last to the first, and the new log's
/// segments are created only after every deletion is durable. So a segment below
/// `start_offset` means the reset did not finish: every segment found is the old
/// log's and goes (the old log's newest ones, which could lie at or past
/// `start_offset`, were deleted first). With none below, the segments found are the
/// new log's and are recovered as usual.
fn drop_unfinished_reset(
    start_offset: i64,
    found: &mut Vec<(SegmentId, u64)>,
    indexes: &mut BTreeMap<SegmentId, Bytes>,
    cleanup: &mut Vec<LogEffect>,
    report: &mut RecoveryReport,
) {
    if !found.iter().any(|(id, _)| id.base_offset < start_offset) {
        return;
    }
    report.warnings.push(format!(
        "a reset to offset {start_offset} had not finished; the old log's {} segments are dropped",
        found.len()
    ));
    for (id, _) in found.drain(..).rev() {
        indexes.remove(&id);
        cleanup.push(LogEffect::DeleteSegment {
            generation: 0,
            segment: id,
        });
        report.deleted_segments.push(id);
    }
}
