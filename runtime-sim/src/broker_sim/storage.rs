//! One simulated broker's durable storage, owned by the simulator and surviving the
//! broker's crashes:
//!
//! * **partition logs** — one [`SimDisk`] per broker holding every partition directory,
//!   written through [`LogDisk`] (core's `LogEffect`s: unsynced writes dropped and the
//!   last one torn at a crash), recovered with core's `LogRecovery` at restart;
//! * **hard states** — the per-shard key-value log of partition Raft hard states
//!   ([`HardStates`]): a write is durable once a sync covering it completes; a crash
//!   keeps the durable ones plus a prefix of the rest;
//! * **the controller's storage** — [`crate::controller_store::Disk`], as in
//!   [`crate::controller_sim`].

use std::collections::{BTreeMap, VecDeque};

use oxbow_core::broker::{PartitionKey, RecoveredPartition};
use oxbow_core::log::{Log, LogEvent};
use oxbow_core::raft::HardState;
use oxbow_core::time::Instant;

use crate::controller_store;
use crate::disk::{DiskConfig, SimDisk};
use crate::log_disk::LogDisk;
use crate::rng::SimRng;

/// The per-broker log of partition hard states.
#[derive(Debug, Default)]
pub struct HardStates {
    durable: BTreeMap<PartitionKey, HardState>,
    pending: VecDeque<(u64, PartitionKey, HardState)>,
    next_seq: u64,
}

impl HardStates {
    /// Queues a write; returns its sequence number.
    pub fn write(&mut self, key: PartitionKey, hard_state: HardState) -> u64 {
        self.next_seq += 1;
        self.pending.push_back((self.next_seq, key, hard_state));
        self.next_seq
    }

    /// Makes writes through `seq` durable; returns them in order.
    pub fn sync(&mut self, seq: u64) -> Vec<(PartitionKey, HardState)> {
        let mut done = Vec::new();
        while self.pending.front().is_some_and(|(s, _, _)| *s <= seq) {
            if let Some((_, key, hs)) = self.pending.pop_front() {
                self.durable.insert(key.clone(), hs);
                done.push((key, hs));
            }
        }
        done
    }

    /// Unsynced writes.
    pub fn unsynced(&self) -> usize {
        self.pending.len()
    }

    /// A crash: the durable states plus the first `keep` unsynced writes survive.
    pub fn crash(&mut self, keep: usize) {
        for (_, key, hs) in self.pending.drain(..).take(keep) {
            self.durable.insert(key, hs);
        }
        self.pending.clear();
    }

    /// The durable hard state of a partition.
    pub fn get(&self, key: &PartitionKey) -> HardState {
        self.durable.get(key).copied().unwrap_or_default()
    }

    /// Forgets a removed partition.
    pub fn remove(&mut self, key: &PartitionKey) {
        self.durable.remove(key);
        self.pending.retain(|(_, k, _)| k != key);
    }
}

/// Everything durable of one broker.
#[derive(Debug)]
pub struct NodeStorage {
    /// Partition files.
    pub disk: SimDisk,
    /// Partition directories (created durably by `OpenPartition`).
    pub dirs: BTreeMap<PartitionKey, LogDisk>,
    /// Partition hard states.
    pub hard: HardStates,
    /// The controller replica's storage.
    pub controller: controller_store::Disk,
}

impl NodeStorage {
    /// Empty storage on a disk of `config`.
    pub fn new(config: DiskConfig) -> NodeStorage {
        NodeStorage {
            disk: SimDisk::new(config),
            dirs: BTreeMap::new(),
            hard: HardStates::default(),
            controller: controller_store::Disk::default(),
        }
    }

    /// A partition's directory is created (idempotent).
    pub fn open(&mut self, key: PartitionKey) {
        let dir = key.dir();
        self.dirs.entry(key).or_insert_with(|| LogDisk::new(dir));
    }

    /// A partition's directory and hard state are deleted.
    pub fn remove(&mut self, key: &PartitionKey) {
        if let Some(backend) = self.dirs.remove(key) {
            for (name, _) in self.disk.list(backend.dir()) {
                self.disk.delete(&format!("{}/{name}", backend.dir()));
            }
        }
        self.hard.remove(key);
    }

    /// Every partition found at a restart: core's recovery over its directory, the
    /// repairs it asks for applied at once, with its durable hard state.
    pub fn recover(&mut self, rng: &mut SimRng, now: Instant) -> Result<Vec<RecoveredPartition>, String> {
        let keys: Vec<PartitionKey> = self.dirs.keys().cloned().collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let log = self.recover_one(rng, now, &key)?;
            out.push(RecoveredPartition {
                hard_state: self.hard.get(&key),
                key,
                log,
            });
        }
        Ok(out)
    }

    fn recover_one(&mut self, rng: &mut SimRng, now: Instant, key: &PartitionKey) -> Result<Log, String> {
        let Some(backend) = self.dirs.get_mut(key) else {
            return Err(format!("{key:?}: no directory"));
        };
        backend.reset();
        let (mut log, _) = backend
            .recover(&self.disk, super::broker_log_config())
            .map_err(|e| format!("{}: recovery failed: {e}", backend.dir()))?;
        loop {
            let mut progressed = false;
            while let Some(effect) = log.poll_effect() {
                progressed = true;
                let ios = backend
                    .execute(&mut self.disk, rng, now, effect)
                    .map_err(|e| e.to_string())?;
                for io in ios {
                    if let Some(ticket) = &io.sync {
                        self.disk.finish_sync(ticket);
                    }
                    if let Some((path, data)) = io.replace.clone() {
                        self.disk
                            .replace(rng, &path, data, true)
                            .map_err(|e| format!("{path}: {e}"))?;
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
                    return Err(format!("{}: {segment} at {position}: {reason}", backend.dir()));
                }
            }
            if !progressed {
                return Ok(log);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        PartitionKey {
            topic: "t".into(),
            partition: p,
            revision: 1,
        }
    }

    #[test]
    fn hard_states_survive_once_synced_and_a_crash_keeps_a_prefix() {
        let mut h = HardStates::default();
        let hs = |term| HardState { term, vote: None };
        let s1 = h.write(key(0), hs(1));
        h.write(key(0), hs(2));
        h.write(key(1), hs(3));
        assert_eq!(h.sync(s1).len(), 1);
        h.crash(1);
        assert_eq!(h.get(&key(0)).term, 2);
        assert_eq!(h.get(&key(1)).term, 0);
        assert_eq!(h.unsynced(), 0);
    }
}
