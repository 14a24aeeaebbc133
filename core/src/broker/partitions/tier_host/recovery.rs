//! Topic recovery on the hosting side (`oxbow.remote.recovery=true`): a partition of
//! such a topic that has no local data is not hosted at once. Its replica first lists
//! the partition's prefixes in the object store, takes the highest revision that holds
//! a manifest, reads that manifest and plans the partition with
//! [`crate::tier::recovery`]; then it hosts the partition over an empty log starting at
//! the manifest's next offset (Raft starts after a snapshot point just below it, in a
//! term no older than the manifest's), records the prefix in the partition's tier state
//! file, and tiers it there, so the archiver and remote reads continue from that
//! manifest. Without a manifest the partition starts empty at offset 0. Store errors
//! are retried after [`RETRY_DELAY`].
//!
//! Every replica of a recovered partition reads the manifest itself. They all start at
//! the same point: the first leader of the new incarnation records where it started
//! (a [`RecoveryPoint`]: this incarnation's revision, next offset, term) in every
//! manifest it puts, and a replica that reads a manifest recording a point of its own
//! incarnation starts there — not at the end of data that leader uploaded since. Each
//! replica keeps its point in the tier state file, so every later leader records the
//! same one.

use super::{path_of, TopicPartition};
use crate::broker::io::{BrokerEffect, PartitionKey, StoreOwner};
use crate::broker::metadata::TopicTier;
use crate::broker::partitions::Partitions;
use crate::log::io::TIER_STATE_FILE_NAME;
use crate::log::{Log, LogConfig};
use crate::raft::{HardState, Priority};
use crate::tier::recovery::{partitions_in_listing, recover_partition, RecoveryError};
use crate::tier::{OpId, PartitionPath, RecoveryPoint, StoreCompletion, StoreReply, TierEffect};
use crate::time::Instant;
use bytes::Bytes;
use std::time::Duration;

/// Delay before a recovery that met a store error starts over.
pub(super) const RETRY_DELAY: Duration = Duration::from_secs(1);

/// A partition of a recovery topic waiting for its manifest before it is hosted.
#[derive(Debug)]
pub(super) struct PendingRecovery {
    key: PartitionKey,
    log_config: LogConfig,
    voters: Vec<(u64, Priority)>,
    topic: TopicTier,
    /// The store operation in flight.
    op: Option<u64>,
    /// The prefix whose manifest is being read (after the listing).
    reading: Option<PartitionPath>,
    /// When to start over after an error.
    retry_at: Option<Instant>,
}

/// The content of the tier state file: the revision of the prefix the partition
/// continues in, and where this incarnation started.
fn encode_state(revision: i64, point: &RecoveryPoint) -> Bytes {
    Bytes::from(format!(
        "remote_revision {revision}\nrecovery_point {} {} {}\n",
        point.incarnation, point.next_offset, point.term
    ))
}

/// The revision a tier state file names and its recovery point (absent in files
/// written before points were kept), if it is well formed.
pub(super) fn decode_state(bytes: &[u8]) -> Option<(i64, Option<RecoveryPoint>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    let revision = lines
        .next()?
        .trim()
        .strip_prefix("remote_revision ")?
        .parse()
        .ok()?;
    let point = match lines.next().map(str::trim).filter(|l| !l.is_empty()) {
        None => None,
        Some(line) => {
            let fields: Vec<i64> = line
                .strip_prefix("recovery_point ")?
                .split(' ')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            match fields[..] {
                [incarnation, next_offset, term] => Some(RecoveryPoint {
                    incarnation,
                    next_offset,
                    term,
                }),
                _ => return None,
            }
        }
    };
    Some((revision, point))
}

impl Partitions {
    /// Whether a new partition `key` of `topic` waits for (or starts) recovery from the
    /// object store instead of being hosted empty now. `false`: host it as usual.
    pub fn tier_recover(
        &mut self,
        now: Instant,
        key: PartitionKey,
        log_config: LogConfig,
        voters: &[(u64, Priority)],
        topic: TopicTier,
    ) -> bool {
        if !(self.tier.settings.enabled && topic.recovery) {
            return false;
        }
        let tp = (key.topic.clone(), key.partition);
        if self.tier.recovering.get(&tp).is_some_and(|p| p.key == key) {
            return true;
        }
        self.tier.recovering.insert(
            tp.clone(),
            PendingRecovery {
                key,
                log_config,
                voters: voters.to_vec(),
                topic,
                op: None,
                reading: None,
                retry_at: None,
            },
        );
        self.tier_recovery_list(now, &tp);
        true
    }

    /// Whether partition `key` is waiting for its recovery.
    pub fn tier_recovering(&self, key: &PartitionKey) -> bool {
        self.tier
            .recovering
            .get(&(key.topic.clone(), key.partition))
            .is_some_and(|p| &p.key == key)
    }

    /// The partitions waiting for their recovery.
    pub fn tier_recovering_keys(&self) -> Vec<PartitionKey> {
        self.tier.recovering.values().map(|p| p.key.clone()).collect()
    }

    /// Stops a recovery (the topic went, or the replica moved away).
    pub fn tier_cancel_recovery(&mut self, key: &PartitionKey) {
        let tp = (key.topic.clone(), key.partition);
        if self.tier.recovering.get(&tp).is_some_and(|p| &p.key == key) {
            self.tier.recovering.remove(&tp);
        }
    }

    fn tier_recovery_op(&mut self, tp: &TopicPartition, effect: impl FnOnce(OpId) -> TierEffect) {
        let op = self.tier.op();
        let Some(pending) = self.tier.recovering.get_mut(tp) else {
            return;
        };
        pending.op = Some(op);
        pending.retry_at = None;
        self.effects.push_back(BrokerEffect::Store {
            key: pending.key.clone(),
            owner: StoreOwner::Recovery,
            effect: effect(OpId(op)),
        });
    }

    /// Lists the partition's prefixes (`<topic>/<partition>_`).
    fn tier_recovery_list(&mut self, _now: Instant, tp: &TopicPartition) {
        let prefix = format!("{}/{}_", tp.0, tp.1);
        if let Some(pending) = self.tier.recovering.get_mut(tp) {
            pending.reading = None;
        }
        self.tier_recovery_op(tp, |op| TierEffect::List { op, prefix });
    }

    /// Earliest retry of a recovery.
    pub(super) fn tier_recovery_timeout(&self) -> Option<Instant> {
        self.tier.recovering.values().filter_map(|p| p.retry_at).min()
    }

    /// Starts over the recoveries whose retry is due.
    pub(super) fn tier_recovery_handle_timeout(&mut self, now: Instant) {
        let due: Vec<TopicPartition> = self
            .tier
            .recovering
            .iter()
            .filter(|(_, p)| p.retry_at.is_some_and(|at| at <= now))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.tier_recovery_list(now, &tp);
        }
    }

    /// A listing or manifest read of a recovery answered.
    pub(super) fn tier_on_recovery_store(
        &mut self,
        now: Instant,
        key: &PartitionKey,
        completion: StoreCompletion,
    ) {
        let tp = (key.topic.clone(), key.partition);
        let Some(pending) = self.tier.recovering.get_mut(&tp) else {
            return;
        };
        if &pending.key != key || pending.op != Some(completion.op.0) {
            return; // a cancelled recovery's, or an earlier attempt's
        }
        pending.op = None;
        let reading = pending.reading.clone();
        match (reading, completion.result) {
            (None, Ok(StoreReply::Listed(keys))) => {
                let newest = partitions_in_listing(&tp.0, &keys)
                    .into_iter()
                    .filter(|path| path.partition == tp.1)
                    .max_by_key(|path| path.revision);
                match newest {
                    Some(path) => {
                        let manifest = path.manifest_key();
                        pending.reading = Some(path);
                        self.tier_recovery_op(&tp, |op| TierEffect::Get {
                            op,
                            key: manifest,
                            range: None,
                        });
                    }
                    None => self.tier_host_recovered(now, &tp, None),
                }
            }
            (Some(path), Ok(StoreReply::Got(bytes))) => match recover_partition(&path, &bytes) {
                Ok(recovered) => {
                    // A replica of this incarnation led first and recorded its start:
                    // start there too. Otherwise start after the manifest's data.
                    let incarnation = key.revision;
                    let point = recovered
                        .manifest
                        .recovery
                        .filter(|p| p.incarnation == incarnation)
                        .unwrap_or(RecoveryPoint {
                            incarnation,
                            next_offset: recovered.next_offset,
                            term: recovered.last_term.max(recovered.manifest.uploader_term),
                        });
                    self.tier_host_recovered(now, &tp, Some((path, point)));
                }
                Err(RecoveryError::Empty) => self.tier_host_recovered(now, &tp, None),
                Err(_) => self.tier_recovery_failed(now, &tp),
            },
            // A store error, or the manifest went between the listing and the read:
            // start over.
            _ => self.tier_recovery_failed(now, &tp),
        }
    }

    fn tier_recovery_failed(&mut self, now: Instant, tp: &TopicPartition) {
        self.tier.stats.recovery_errors += 1;
        if let Some(pending) = self.tier.recovering.get_mut(tp) {
            pending.reading = None;
            pending.retry_at = Some(now + RETRY_DELAY);
        }
    }

    /// Hosts a recovered partition: over an empty log from the recovery point's next
    /// offset (`found`: the prefix, the point), or from offset 0 when the store holds
    /// nothing for it.
    fn tier_host_recovered(
        &mut self,
        now: Instant,
        tp: &TopicPartition,
        found: Option<(PartitionPath, RecoveryPoint)>,
    ) {
        let Some(pending) = self.tier.recovering.remove(tp) else {
            return;
        };
        let (log, hard_state) = match &found {
            Some((_, point)) => (
                Log::new(pending.log_config, point.next_offset),
                HardState {
                    term: u64::try_from(point.term).unwrap_or(0),
                    vote: None,
                },
            ),
            None => (Log::new(pending.log_config, 0), HardState::default()),
        };
        self.effects.push_back(BrokerEffect::OpenPartition {
            key: pending.key.clone(),
        });
        if self
            .host(now, pending.key.clone(), log, hard_state, &pending.voters)
            .is_err()
        {
            self.tier.stats.recovery_errors += 1;
            return;
        }
        if let Some((path, point)) = found {
            if let Some(hosted) = self.hosted.get_mut(tp) {
                hosted
                    .replica
                    .log_mut()
                    .write_state_file(TIER_STATE_FILE_NAME, encode_state(path.revision, &point));
            }
            self.tier.remote_revisions.insert(tp.clone(), path.revision);
            self.tier.recovery_points.insert(tp.clone(), point);
            self.tier.stats.partitions_recovered += 1;
            self.drain(now, tp);
        }
        self.set_tier(now, tp, pending.topic);
    }

    /// The object-store prefix of hosted partition `tp`: its own, or the one it was
    /// recovered from (remembered in its tier state file across restarts).
    pub(super) fn tier_path(&mut self, tp: &TopicPartition) -> Option<PartitionPath> {
        let hosted = self.hosted.get_mut(tp)?;
        let mut path = path_of(&hosted.key);
        if let Some(state) = hosted.replica.log_mut().take_state_file(TIER_STATE_FILE_NAME) {
            match decode_state(&state) {
                Some((revision, point)) => {
                    self.tier.remote_revisions.insert(tp.clone(), revision);
                    if let Some(point) = point {
                        self.tier.recovery_points.insert(tp.clone(), point);
                    }
                }
                None => self.tier.stats.recovery_errors += 1,
            }
        }
        if let Some(&revision) = self.tier.remote_revisions.get(tp) {
            path.revision = revision;
        }
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_and_rejects_junk() {
        let point = RecoveryPoint {
            incarnation: 9,
            next_offset: 1_000,
            term: 3,
        };
        assert_eq!(decode_state(&encode_state(7, &point)), Some((7, Some(point))));
        assert_eq!(decode_state(b"remote_revision 7\n"), Some((7, None)));
        assert_eq!(decode_state(b"remote_revision x"), None);
        assert_eq!(decode_state(b"remote_revision 7\nrecovery_point 1 2\n"), None);
        assert_eq!(decode_state(b"\xff"), None);
    }
}
