//! [`MemDisk`]: an in-memory disk backend for one partition directory, for core's own
//! tests of the log. It keeps synced and unsynced bytes apart so a test can crash it,
//! tear the last unsynced write, flip bits, or run out of space. The simulator has its
//! own, richer disk (latencies, seeded faults); this one is small and synchronous.

use super::io::{DiskError, LogCompletion, LogEffect, SegmentId, CHECKPOINT_FILE_NAME};
use super::recovery::{DirEntry, RecoveryInput};
use bytes::Bytes;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MemFile {
    /// What a reader sees now.
    current: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
}

/// An in-memory partition directory.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    files: BTreeMap<String, MemFile>,
    /// Total bytes of `current` contents beyond which writes fail with ENOSPC.
    pub space_limit_bytes: Option<u64>,
}

impl MemDisk {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }

    /// Executes one effect, returning its completions. `Written` is reported for each
    /// data write so `written_offset` advances at once.
    pub fn execute(&mut self, effect: LogEffect) -> Vec<LogCompletion> {
        let generation = effect.generation();
        let failed = |error| vec![LogCompletion::Failed { generation, error }];
        match effect {
            LogEffect::CreateSegment { segment, .. } => {
                self.files.entry(segment.file_name()).or_default();
                vec![]
            }
            LogEffect::Write {
                segment,
                position,
                data,
                last_offset,
                ..
            } => {
                if self
                    .space_limit_bytes
                    .is_some_and(|limit| self.used_bytes() + data.len() as u64 > limit)
                {
                    return failed(DiskError::NoSpace);
                }
                let Some(file) = self.files.get_mut(&segment.file_name()) else {
                    return failed(DiskError::Io(format!("{segment}: no such file")));
                };
                if file.current.len() as u64 != position {
                    return failed(DiskError::Io(format!(
                        "{segment}: write at {position}, file is {} bytes",
                        file.current.len()
                    )));
                }
                file.current.extend_from_slice(&data.header);
                file.current.extend_from_slice(&data.records);
                vec![LogCompletion::Written {
                    generation,
                    last_offset,
                }]
            }
            LogEffect::Sync {
                sync_id, segments, ..
            } => {
                for segment in segments {
                    if let Some(file) = self.files.get_mut(&segment.file_name()) {
                        file.durable = file.current.clone();
                    }
                }
                vec![LogCompletion::Synced { generation, sync_id }]
            }
            LogEffect::TruncateSegment {
                segment, len_bytes, ..
            } => {
                let Some(file) = self.files.get_mut(&segment.file_name()) else {
                    return failed(DiskError::Io(format!("{segment}: no such file")));
                };
                let len = usize::try_from(len_bytes).unwrap_or(usize::MAX);
                file.current.truncate(len);
                file.durable.truncate(len);
                vec![]
            }
            LogEffect::DeleteSegment { segment, .. } => {
                self.files.remove(&segment.file_name());
                self.files.remove(&segment.index_file_name());
                vec![]
            }
            LogEffect::WriteIndex { segment, data, .. } => {
                self.put_durable(&segment.index_file_name(), &data);
                vec![]
            }
            LogEffect::WriteCheckpoint {
                checkpoint_id, data, ..
            } => {
                self.put_durable(CHECKPOINT_FILE_NAME, &data);
                vec![LogCompletion::CheckpointWritten {
                    generation,
                    checkpoint_id,
                }]
            }
            LogEffect::WriteStateFile { name, data, .. } => {
                self.put_durable(name, &data);
                vec![]
            }
            LogEffect::ResetLog { sync_id, .. } => {
                let steps = Self::reset_step_count(&effect);
                self.execute_reset_prefix(&effect, steps);
                vec![LogCompletion::Synced { generation, sync_id }]
            }
            LogEffect::Read { read_id, range, .. } => {
                let data = self.read(range.segment, range.position, range.len_bytes);
                vec![LogCompletion::Read {
                    generation,
                    read_id,
                    data,
                }]
            }
        }
    }

    /// How many steps a [`LogEffect::ResetLog`] takes here: the checkpoint, then one
    /// deletion per old segment (0 for any other effect).
    pub fn reset_step_count(effect: &LogEffect) -> usize {
        match effect {
            LogEffect::ResetLog { segments, .. } => 1 + segments.len(),
            _ => 0,
        }
    }

    /// Carries out the first `steps` steps of a [`LogEffect::ResetLog`] in the order
    /// the contract prescribes (checkpoint first, then the segments from the last),
    /// each durable at once, and stops — what a crash in the middle leaves.
    pub fn execute_reset_prefix(&mut self, effect: &LogEffect, steps: usize) {
        let LogEffect::ResetLog {
            segments, checkpoint, ..
        } = effect
        else {
            return;
        };
        if steps == 0 {
            return;
        }
        self.put_durable(CHECKPOINT_FILE_NAME, checkpoint);
        for segment in segments.iter().rev().take(steps - 1) {
            self.files.remove(&segment.file_name());
            self.files.remove(&segment.index_file_name());
        }
    }

    fn put_durable(&mut self, name: &str, data: &[u8]) {
        let file = self.files.entry(name.to_string()).or_default();
        file.current = data.to_vec();
        file.durable = data.to_vec();
    }

    /// Reads up to `len_bytes` at `position` of a segment (fewer at end of file).
    pub fn read(&self, segment: SegmentId, position: u64, len_bytes: u64) -> Bytes {
        self.read_file(&segment.file_name(), position, len_bytes)
    }

    /// Reads up to `len_bytes` at `position` of any file.
    pub fn read_file(&self, name: &str, position: u64, len_bytes: u64) -> Bytes {
        let Some(file) = self.files.get(name) else {
            return Bytes::new();
        };
        let start = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(file.current.len());
        let end = start
            .saturating_add(usize::try_from(len_bytes).unwrap_or(usize::MAX))
            .min(file.current.len());
        Bytes::copy_from_slice(&file.current[start..end])
    }

    /// Simulates a power loss: every file falls back to its synced content, except
    /// that `torn_keep_bytes` bytes of each file's unsynced appended tail survive
    /// (a torn write).
    pub fn crash(&mut self, torn_keep_bytes: usize) {
        for file in self.files.values_mut() {
            let appended_since_sync = file.current.starts_with(&file.durable);
            let mut survivor = file.durable.clone();
            if appended_since_sync {
                let tail = &file.current[file.durable.len()..];
                survivor.extend_from_slice(&tail[..torn_keep_bytes.min(tail.len())]);
            }
            file.current = survivor.clone();
            file.durable = survivor;
        }
    }

    /// Flips one bit of a file, in what is read now and what survives a crash.
    pub fn flip_bit(&mut self, name: &str, byte: usize, bit: u8) -> bool {
        let Some(file) = self.files.get_mut(name) else {
            return false;
        };
        let mut flipped = false;
        for bytes in [&mut file.current, &mut file.durable] {
            if let Some(b) = bytes.get_mut(byte) {
                *b ^= 1 << (bit % 8);
                flipped = true;
            }
        }
        flipped
    }

    /// Appends raw bytes to a file (zero padding, garbage), durably.
    pub fn append_raw(&mut self, name: &str, data: &[u8]) {
        let file = self.files.entry(name.to_string()).or_default();
        file.current.extend_from_slice(data);
        file.durable = file.current.clone();
    }

    /// Deletes a file.
    pub fn remove_file(&mut self, name: &str) -> bool {
        self.files.remove(name).is_some()
    }

    /// Names of the files, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// The current bytes of a file.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|f| f.current.as_slice())
    }

    /// What [`super::LogRecovery`] needs: the listing, index files and checkpoint.
    pub fn recovery_input(&self) -> RecoveryInput {
        let files = self
            .files
            .iter()
            .map(|(name, f)| DirEntry {
                name: name.clone(),
                len_bytes: f.current.len() as u64,
            })
            .collect();
        let index_files = self
            .files
            .iter()
            .filter_map(|(name, f)| {
                SegmentId::parse_index_file_name(name).map(|id| (id, Bytes::copy_from_slice(&f.current)))
            })
            .collect();
        let checkpoint = self
            .files
            .get(CHECKPOINT_FILE_NAME)
            .map(|f| Bytes::copy_from_slice(&f.current));
        let state_files = super::io::STATE_FILE_NAMES
            .iter()
            .filter_map(|name| {
                self.files
                    .get(*name)
                    .map(|f| (name.to_string(), Bytes::copy_from_slice(&f.current)))
            })
            .collect();
        RecoveryInput {
            files,
            index_files,
            checkpoint,
            state_files,
        }
    }
}
