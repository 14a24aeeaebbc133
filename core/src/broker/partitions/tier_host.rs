//! Hosting tiered storage on the partitions of tiered topics (`oxbow.remote.write`):
//! the leader of such a partition runs an [`Archiver`] for its term (dropped when
//! leadership goes), fed the committed local log, its object-store operations leaving
//! as [`BrokerEffect::Store`] and answered by [`BrokerInput::Store`]; local retention
//! (`retention.local.target.*`) deletes through the log only what the durable manifest
//! covers. Fetch and ListOffsets below the local start (`oxbow.remote.read`) are served
//! through a per-partition [`RemoteReader`]: the request parks while its ranged gets
//! run, the way long polls park. New partitions of `oxbow.remote.recovery` topics start
//! from the store's manifest ([`recovery`]).

mod recovery;

use super::{OpRef, OpResult, Partitions, TopicPartition};
use crate::broker::io::{BrokerEffect, PartitionKey, StoreOwner};
use crate::broker::metadata::TopicTier;
use crate::kafka::ErrorCode;
use crate::log::read::{find_offset_for_timestamp, trim_fetched};
use crate::tier::read::{ReadCacheConfig, ReadMetrics};
use crate::tier::{
    Archiver, LocalLogView, OpId, PartitionPath, ReadStep, RecoveryPoint, RemoteReader, StoreCompletion,
    StoreReply, TierConfig, TierEffect, TierMetrics, UploadBacklog,
};
use crate::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a leader's archiver is shown the local log when nothing else wakes it.
const VIEW_INTERVAL: Duration = Duration::from_millis(100);
/// Most remote reads in flight per shard; more are refused with a retriable error.
const MAX_REMOTE_READS: usize = 256;
/// Most plan steps one remote read takes (archive, index, chunks, data — and a retry of
/// each after an eviction race) before it gives up.
const MAX_READ_STEPS: u32 = 16;

/// Node-wide tiered-storage settings (the runtime's `[tiered_storage]` section).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TierSettings {
    /// Whether an object store is configured; without one tiered topics stay local.
    pub enabled: bool,
    /// Archiver settings; each topic's retention and local targets replace its own.
    pub base: TierConfig,
    /// The remote-read cache of each partition.
    pub read_cache: ReadCacheConfig,
}

/// Tiered-storage counters of one shard, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Archivers running (tiered partitions led here).
    pub archivers: u64,
    /// Archiver counters, summed (including archivers since dropped).
    pub archiver: TierMetrics,
    /// Upload backlog of the running archivers, summed.
    pub backlog: UploadBacklog,
    /// Remote-read cache counters, summed (current readers).
    pub read: ReadMetrics,
    /// Fetches and ListOffsets answered from the object store.
    pub remote_reads: u64,
    /// Remote reads that failed (store error, corrupted object).
    pub remote_read_errors: u64,
    /// Remote reads refused because too many were in flight.
    pub remote_reads_refused: u64,
    /// Gets issued for remote reads.
    pub remote_read_gets: u64,
    /// Bytes downloaded for remote reads.
    pub remote_read_bytes: u64,
    /// Partitions hosted from a manifest found in the store (topic recovery).
    pub partitions_recovered: u64,
    /// Store errors and unreadable manifests met by topic recovery (retried).
    pub recovery_errors: u64,
}

#[derive(Debug)]
struct TierHost {
    topic: TopicTier,
    /// The partition's prefix in the store.
    path: PartitionPath,
    archiver: Option<Archiver>,
    /// Which archiver this is (see [`StoreOwner::Archiver`]); 0 while none.
    archiver_generation: u64,
    reader: RemoteReader,
    /// (high watermark, local start, segments) last shown to the archiver.
    viewed: (i64, i64, usize),
    next_view_at: Instant,
}

#[derive(Clone, Copy, Debug)]
enum RemotePurpose {
    Fetch {
        offset: i64,
        max_bytes: u64,
        read_committed: bool,
    },
    Timestamp {
        timestamp: i64,
    },
}

#[derive(Debug)]
struct RemoteRead {
    op_ref: OpRef,
    tp: TopicPartition,
    purpose: RemotePurpose,
    /// Gets in flight: op → what the bytes are for.
    gets: BTreeMap<u64, ReadStep>,
    steps: u32,
    failed: bool,
}

/// The tiered partitions of one shard and their remote reads.
#[derive(Debug, Default)]
pub struct TierHosts {
    settings: TierSettings,
    hosts: BTreeMap<TopicPartition, TierHost>,
    reads: BTreeMap<u64, RemoteRead>,
    /// Get op → its read.
    gets: BTreeMap<u64, u64>,
    /// New partitions of recovery topics waiting for their manifest.
    recovering: BTreeMap<TopicPartition, recovery::PendingRecovery>,
    /// Partitions that continue in another revision's prefix (recovered ones).
    remote_revisions: BTreeMap<TopicPartition, i64>,
    /// The term of the last archiver started for each hosted partition (a config
    /// change restarts the archiver within a term).
    archiver_terms: BTreeMap<TopicPartition, i32>,
    /// Where recovered partitions started (recorded in the manifests they put).
    recovery_points: BTreeMap<TopicPartition, RecoveryPoint>,
    next_op: u64,
    retired: TierMetrics,
    stats: TierStats,
}

fn add_metrics(total: &mut TierMetrics, m: &TierMetrics) {
    total.uploads_started += m.uploads_started;
    total.uploads_completed += m.uploads_completed;
    total.uploaded_bytes += m.uploaded_bytes;
    total.upload_failures += m.upload_failures;
    total.manifest_puts += m.manifest_puts;
    total.manifest_put_failures += m.manifest_put_failures;
    total.spills += m.spills;
    total.store_errors += m.store_errors;
    total.timeouts += m.timeouts;
    total.throttled += m.throttled;
    total.segments_expired += m.segments_expired;
    total.archives_expired += m.archives_expired;
    total.objects_deleted += m.objects_deleted;
    total.orphans_found += m.orphans_found;
    total.deletes_dropped += m.deletes_dropped;
    total.blocked_by_gap += m.blocked_by_gap;
    total.spilled_before_gc += m.spilled_before_gc;
    total.manifest_lost += m.manifest_lost;
    total.lineage_marks += m.lineage_marks;
}

fn path_of(key: &PartitionKey) -> PartitionPath {
    PartitionPath {
        topic: key.topic.clone(),
        partition: key.partition,
        revision: key.revision,
    }
}

impl TierHosts {
    /// The node's settings.
    pub fn set_settings(&mut self, settings: TierSettings) {
        self.settings = settings;
    }

    /// The node's settings.
    pub fn settings(&self) -> &TierSettings {
        &self.settings
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> TierStats {
        let mut stats = self.stats;
        stats.archiver = self.retired;
        for host in self.hosts.values() {
            if let Some(archiver) = &host.archiver {
                stats.archivers += 1;
                add_metrics(&mut stats.archiver, &archiver.metrics());
                let backlog = archiver.backlog();
                stats.backlog.not_uploaded_offsets += backlog.not_uploaded_offsets;
                stats.backlog.not_uploaded_bytes += backlog.not_uploaded_bytes;
                stats.backlog.not_durable_offsets += backlog.not_durable_offsets;
            }
            let read = host.reader.metrics();
            stats.read.archives_loaded += read.archives_loaded;
            stats.read.indexes_loaded += read.indexes_loaded;
            stats.read.chunk_hits += read.chunk_hits;
            stats.read.chunk_misses += read.chunk_misses;
            stats.read.evictions += read.evictions;
        }
        stats
    }

    /// Whether the archiver of `tp` owns its retention (local and total).
    pub fn manages_retention(&self, tp: &TopicPartition) -> bool {
        self.settings.enabled && self.hosts.get(tp).is_some_and(|h| h.topic.remote_write)
    }

    fn retire(&mut self, archiver: Option<Archiver>) {
        if let Some(archiver) = archiver {
            add_metrics(&mut self.retired, &archiver.metrics());
        }
    }

    fn op(&mut self) -> u64 {
        self.next_op += 1;
        self.next_op
    }
}

impl Partitions {
    fn tier_config(&self, tp: &TopicPartition, topic: &TopicTier) -> TierConfig {
        let mut config = self.tier.settings.base.clone();
        config.local_target_bytes = topic.local_target_bytes;
        config.local_target_ms = topic.local_target_ms;
        if let Some(hosted) = self.hosted.get(tp) {
            let log = hosted.replica.log().config();
            config.retention_bytes = log.retention_bytes;
            config.retention_ms = log.retention_ms;
        }
        config
    }

    /// Sets a hosted partition's tiered-storage settings (on hosting and on every
    /// config change); starts or stops its archiver to match.
    pub fn set_tier(&mut self, now: Instant, tp: &TopicPartition, topic: TopicTier) {
        let Some(hosted) = self.hosted.get(tp) else {
            return;
        };
        let tiered = self.tier.settings.enabled && (topic.remote_write || topic.remote_read);
        if !tiered {
            if let Some(host) = self.tier.hosts.remove(tp) {
                self.tier.retire(host.archiver);
            }
            return;
        }
        let leader = hosted.replica.is_leader().then(|| hosted.replica.leader_epoch());
        let Some(path) = self.tier_path(tp) else {
            return;
        };
        let reader = match self.tier.hosts.remove(tp) {
            Some(mut host) => {
                let config = self.tier_config(tp, &topic);
                let same =
                    host.topic == topic && host.archiver.as_ref().is_some_and(|a| a.config() == &config);
                if same {
                    self.tier.hosts.insert(tp.clone(), host);
                    return;
                }
                self.tier.retire(host.archiver.take());
                host.reader
            }
            None => match RemoteReader::new(path.clone(), self.tier.settings.read_cache) {
                Ok(reader) => reader,
                Err(_) => return,
            },
        };
        self.tier.hosts.insert(
            tp.clone(),
            TierHost {
                topic,
                path,
                archiver: None,
                archiver_generation: 0,
                reader,
                viewed: (-1, -1, 0),
                next_view_at: now,
            },
        );
        if let Some(epoch) = leader {
            self.tier_on_role(now, tp, true, epoch);
        }
    }

    /// A partition stops being hosted: its archiver goes, its remote reads fail.
    pub(super) fn tier_on_remove(&mut self, tp: &TopicPartition) {
        self.tier.remote_revisions.remove(tp);
        self.tier.archiver_terms.remove(tp);
        self.tier.recovery_points.remove(tp);
        if let Some(host) = self.tier.hosts.remove(tp) {
            self.tier.retire(host.archiver);
        }
        let gone: Vec<u64> = self
            .tier
            .reads
            .iter()
            .filter(|(_, r)| &r.tp == tp)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(read) = self.tier.reads.remove(&id) {
                self.tier.gets.retain(|_, r| *r != id);
                self.results.push_back((
                    read.op_ref,
                    OpResult::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0),
                ));
            }
        }
    }

    /// Leadership changed: a leader of a tiered topic starts an archiver for its term;
    /// a replica that is no longer leader drops it.
    pub(super) fn tier_on_role(&mut self, now: Instant, tp: &TopicPartition, leader: bool, epoch: i32) {
        let Some(hosted) = self.hosted.get(tp) else {
            return;
        };
        let Some((topic, path)) = self.tier.hosts.get(tp).map(|h| (h.topic, h.path.clone())) else {
            return;
        };
        let seed = u64::from(crc32c::crc32c(hosted.key.dir().as_bytes())) ^ (epoch as u64).rotate_left(32);
        let config = self.tier_config(tp, &topic);
        let first_writer = self.tier_first_writer(tp, epoch);
        let archiver = if leader && topic.remote_write {
            let mut archiver = Archiver::new(config, path, i64::from(epoch), seed, now).ok();
            if let Some(archiver) = archiver.as_mut() {
                if first_writer {
                    archiver.assume_first_writer();
                }
                if let Some(point) = self.tier.recovery_points.get(tp) {
                    archiver.set_recovery_point(*point);
                }
                self.tier.archiver_terms.insert(tp.clone(), epoch);
            }
            archiver
        } else {
            None
        };
        let generation = if archiver.is_some() { self.tier.op() } else { 0 };
        if let Some(host) = self.tier.hosts.get_mut(tp) {
            let old = std::mem::replace(&mut host.archiver, archiver);
            host.archiver_generation = generation;
            host.viewed = (-1, -1, 0);
            host.next_view_at = now;
            self.tier.retire(old);
        }
        self.tier_pump(now, tp);
    }

    /// Whether a leader of `epoch` is the first writer of `tp`'s own prefix (see
    /// [`Archiver::assume_first_writer`]): its log holds nothing committed before its
    /// term — the entry at offset 0 is of this term, so every earlier leader committed
    /// nothing and its archiver never had data to upload — and no archiver of this term
    /// ran here before (only this node leads in this term; a restart leads in a new
    /// one). A recovered partition continues another incarnation's prefix: never.
    fn tier_first_writer(&self, tp: &TopicPartition, epoch: i32) -> bool {
        let Some(hosted) = self.hosted.get(tp) else {
            return false;
        };
        let log = hosted.replica.log();
        log.start_offset() == 0
            && log.term_at(0) == Some(i64::from(epoch))
            && !self.tier.remote_revisions.contains_key(tp)
            && self.tier.archiver_terms.get(tp).is_none_or(|term| *term < epoch)
    }

    /// `[start, next)` of the readable remote copy (`oxbow.remote.read` on this leader).
    fn tier_remote_range(&self, tp: &TopicPartition) -> Option<(i64, i64)> {
        let host = self.tier.hosts.get(tp).filter(|h| h.topic.remote_read)?;
        let manifest = host.archiver.as_ref()?.manifest();
        Some((manifest.start_offset, manifest.next_offset()?))
    }

    /// The log start clients see: the object store's start when the remote copy
    /// reaches the local start and is readable.
    pub(super) fn tier_log_start(&self, tp: &TopicPartition, local_start: i64) -> i64 {
        match self.tier_remote_range(tp) {
            Some((start, next)) if next >= local_start => start.min(local_start),
            _ => local_start,
        }
    }

    /// Shows the archiver the local log (if it changed or the interval passed), runs
    /// its timers, applies local retention, and moves its effects out.
    fn tier_pump(&mut self, now: Instant, tp: &TopicPartition) {
        let wall_ms = self.wall_ms(now);
        let Some(hosted) = self.hosted.get_mut(tp) else {
            return;
        };
        let Some(host) = self.tier.hosts.get_mut(tp) else {
            return;
        };
        let Some(archiver) = host.archiver.as_mut() else {
            return;
        };
        let log = hosted.replica.log();
        let seen = (
            hosted.replica.high_watermark(),
            log.start_offset(),
            log.segments().len(),
        );
        // One view per turn: retention depends only on the durable manifest, which
        // neither showing the view nor a timer changes.
        let view = LocalLogView::of_log(log, seen.0, wall_ms);
        let retain = archiver.local_retention(&view);
        if seen != host.viewed || host.next_view_at <= now {
            host.viewed = seen;
            host.next_view_at = now + VIEW_INTERVAL;
            archiver.on_local_log(now, view);
        }
        if archiver.poll_timeout().is_some_and(|at| at <= now) {
            archiver.handle_timeout(now);
        }
        if let Some(start) = retain {
            // Local data goes only once the durable manifest covers it; a refusal (a
            // start past the high watermark) only keeps the data longer.
            if hosted.replica.log_mut().delete_records(now, start).is_ok() {
                while let Some(effect) = hosted.replica.poll_effect() {
                    self.effects.push_back(BrokerEffect::Partition {
                        key: hosted.key.clone(),
                        effect,
                    });
                }
            }
        }
        let term = archiver.term();
        let generation = host.archiver_generation;
        while let Some(effect) = archiver.poll_effect() {
            self.effects.push_back(BrokerEffect::Store {
                key: hosted.key.clone(),
                owner: StoreOwner::Archiver { term, generation },
                effect,
            });
        }
    }

    /// Earliest tier deadline.
    pub(super) fn tier_poll_timeout(&self) -> Option<Instant> {
        let hosts = self
            .tier
            .hosts
            .values()
            .filter_map(|h| {
                let archiver = h.archiver.as_ref()?;
                Some(
                    archiver
                        .poll_timeout()
                        .map_or(h.next_view_at, |at| at.min(h.next_view_at)),
                )
            })
            .min();
        hosts.into_iter().chain(self.tier_recovery_timeout()).min()
    }

    /// Runs due archivers.
    pub(super) fn tier_handle_timeout(&mut self, now: Instant) {
        self.tier_recovery_handle_timeout(now);
        let due: Vec<TopicPartition> = self
            .tier
            .hosts
            .iter()
            .filter(|(_, h)| {
                h.archiver
                    .as_ref()
                    .is_some_and(|a| h.next_view_at <= now || a.poll_timeout().is_some_and(|at| at <= now))
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.tier_pump(now, &tp);
        }
    }

    /// An object-store operation answered.
    pub(super) fn tier_on_store(
        &mut self,
        now: Instant,
        key: &PartitionKey,
        owner: StoreOwner,
        completion: StoreCompletion,
    ) {
        let tp = (key.topic.clone(), key.partition);
        match owner {
            StoreOwner::Archiver { term, generation } => {
                let Some(archiver) = self
                    .tier
                    .hosts
                    .get_mut(&tp)
                    .filter(|h| h.archiver_generation == generation)
                    .and_then(|h| h.archiver.as_mut())
                    .filter(|a| a.term() == term)
                else {
                    return; // a previous leader's or a replaced archiver's operation
                };
                archiver.handle_completion(now, completion);
                self.tier_pump(now, &tp);
            }
            StoreOwner::Read => self.tier_on_read_get(now, completion),
            StoreOwner::Recovery => self.tier_on_recovery_store(now, key, completion),
        }
    }

    /// Whether a fetch at `offset` must be served from the object store.
    pub(super) fn tier_serves(&self, tp: &TopicPartition, offset: i64) -> bool {
        let Some(hosted) = self.hosted.get(tp) else {
            return false;
        };
        offset < hosted.replica.log().start_offset()
            && self
                .tier_remote_range(tp)
                .is_some_and(|(start, next)| start <= offset && offset < next)
    }

    /// Whether the object store may hold data below the local start (ListOffsets by
    /// timestamp asks it first).
    pub(super) fn tier_has_remote(&self, tp: &TopicPartition) -> bool {
        let Some(hosted) = self.hosted.get(tp) else {
            return false;
        };
        let local_start = hosted.replica.log().start_offset();
        self.tier_log_start(tp, local_start) < local_start
    }

    /// Starts a fetch from the object store.
    pub(super) fn tier_fetch(
        &mut self,
        now: Instant,
        op_ref: OpRef,
        tp: TopicPartition,
        offset: i64,
        (max_bytes, read_committed): (u64, bool),
    ) {
        let purpose = RemotePurpose::Fetch {
            offset,
            max_bytes,
            read_committed,
        };
        self.tier_start_read(now, op_ref, tp, purpose);
    }

    /// Starts a ListOffsets by timestamp in the object store.
    pub(super) fn tier_find_timestamp(
        &mut self,
        now: Instant,
        op_ref: OpRef,
        tp: TopicPartition,
        timestamp: i64,
    ) {
        self.tier_start_read(now, op_ref, tp, RemotePurpose::Timestamp { timestamp });
    }

    fn tier_start_read(&mut self, now: Instant, op_ref: OpRef, tp: TopicPartition, purpose: RemotePurpose) {
        if self.tier.reads.len() >= MAX_REMOTE_READS {
            self.tier.stats.remote_reads_refused += 1;
            self.results
                .push_back((op_ref, OpResult::Error(ErrorCode::REQUEST_TIMED_OUT.0)));
            return;
        }
        let id = self.tier.op();
        self.tier.reads.insert(
            id,
            RemoteRead {
                op_ref,
                tp,
                purpose,
                gets: BTreeMap::new(),
                steps: 0,
                failed: false,
            },
        );
        self.tier_advance_read(now, id);
    }

    fn tier_fail_read(&mut self, id: u64, code: i16) {
        if let Some(read) = self.tier.reads.remove(&id) {
            self.tier.gets.retain(|_, r| *r != id);
            self.tier.stats.remote_read_errors += 1;
            self.results.push_back((read.op_ref, OpResult::Error(code)));
        }
    }

    /// Plans the next step of a remote read: issues its gets, or answers it.
    fn tier_advance_read(&mut self, _now: Instant, id: u64) {
        let Some(read) = self.tier.reads.get_mut(&id) else {
            return;
        };
        read.steps += 1;
        let tp = read.tp.clone();
        let purpose = read.purpose;
        if read.steps > MAX_READ_STEPS {
            return self.tier_fail_read(id, ErrorCode::KAFKA_STORAGE_ERROR.0);
        }
        let Some(hosted) = self.hosted.get(&tp) else {
            return self.tier_fail_read(id, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0);
        };
        let key = hosted.key.clone();
        let Some(host) = self.tier.hosts.get_mut(&tp) else {
            return self.tier_fail_read(id, ErrorCode::NOT_LEADER_OR_FOLLOWER.0);
        };
        let Some(archiver) = host.archiver.as_ref() else {
            return self.tier_fail_read(id, ErrorCode::NOT_LEADER_OR_FOLLOWER.0);
        };
        let manifest = archiver.manifest();
        let planned = match purpose {
            RemotePurpose::Fetch {
                offset, max_bytes, ..
            } => host.reader.plan(manifest, offset, max_bytes),
            RemotePurpose::Timestamp { timestamp } => host.reader.plan_timestamp(manifest, timestamp),
        };
        let manifest_start = manifest.start_offset;
        let step = match planned {
            Ok(step) => step,
            Err(_) => return self.tier_fail_read(id, ErrorCode::KAFKA_STORAGE_ERROR.0),
        };
        // (object key, byte range, what the bytes are for)
        type Get = (String, Option<(u64, u64)>, ReadStep);
        let gets: Vec<Get> = match &step {
            ReadStep::FetchArchive { key, .. } | ReadStep::FetchIndex { key, .. } => {
                vec![(key.clone(), None, step.clone())]
            }
            ReadStep::FetchChunks { key, segment, ranges } => ranges
                .iter()
                .map(|&range| {
                    let step = ReadStep::FetchChunks {
                        key: key.clone(),
                        segment: *segment,
                        ranges: vec![range],
                    };
                    (key.clone(), Some(range), step)
                })
                .collect(),
            ReadStep::Ready { segment, data } => {
                let result = self.tier_answer(&tp, purpose, segment, data, manifest_start);
                if let Some(read) = self.tier.reads.remove(&id) {
                    self.tier.stats.remote_reads += 1;
                    self.results.push_back((read.op_ref, result));
                }
                return;
            }
            ReadStep::OutOfRange { .. } => {
                let result = match purpose {
                    RemotePurpose::Fetch { .. } => OpResult::Error(ErrorCode::OFFSET_OUT_OF_RANGE.0),
                    // No remote record that recent: the local log answers.
                    RemotePurpose::Timestamp { timestamp } => {
                        if let Some(read) = self.tier.reads.remove(&id) {
                            self.local_timestamp(read.op_ref, tp, key, timestamp);
                        }
                        return;
                    }
                };
                if let Some(read) = self.tier.reads.remove(&id) {
                    self.results.push_back((read.op_ref, result));
                }
                return;
            }
        };
        for (object, range, step) in gets {
            let op = self.tier.op();
            self.tier.gets.insert(op, id);
            if let Some(read) = self.tier.reads.get_mut(&id) {
                read.gets.insert(op, step);
            }
            self.tier.stats.remote_read_gets += 1;
            self.effects.push_back(BrokerEffect::Store {
                key: key.clone(),
                owner: StoreOwner::Read,
                effect: TierEffect::Get {
                    op: OpId(op),
                    key: object,
                    range,
                },
            });
        }
    }

    /// The answer of a remote read from the bytes the reader assembled.
    fn tier_answer(
        &self,
        tp: &TopicPartition,
        purpose: RemotePurpose,
        segment: &crate::tier::SegmentMeta,
        data: &bytes::Bytes,
        manifest_start: i64,
    ) -> OpResult {
        let Some(hosted) = self.hosted.get(tp) else {
            return OpResult::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0);
        };
        let replica = &hosted.replica;
        let local_start = replica.log().start_offset();
        match purpose {
            RemotePurpose::Fetch {
                offset,
                max_bytes,
                read_committed,
            } => {
                let end = segment.last_offset.min(replica.high_watermark() - 1);
                match trim_fetched(std::slice::from_ref(data), offset, end, max_bytes) {
                    Ok(records) => OpResult::Fetched {
                        high_watermark: replica.high_watermark(),
                        log_start_offset: self.tier_log_start(tp, local_start),
                        last_stable_offset: replica.last_stable_offset(),
                        aborted: if read_committed {
                            replica
                                .aborted_transactions(offset, end + 1)
                                .into_iter()
                                .map(|a| (a.producer_id, a.first_offset))
                                .collect()
                        } else {
                            Vec::new()
                        },
                        records,
                    },
                    Err(_) => OpResult::Error(ErrorCode::CORRUPT_MESSAGE.0),
                }
            }
            RemotePurpose::Timestamp { timestamp } => {
                let base = segment.base_offset.max(manifest_start);
                match find_offset_for_timestamp(data, timestamp, base) {
                    Ok(Some(offset)) => OpResult::Offset {
                        offset,
                        timestamp,
                        leader_epoch: replica.leader_epoch(),
                    },
                    Ok(None) => OpResult::Offset {
                        offset: -1,
                        timestamp: -1,
                        leader_epoch: replica.leader_epoch(),
                    },
                    Err(_) => OpResult::Error(ErrorCode::CORRUPT_MESSAGE.0),
                }
            }
        }
    }

    /// A get of a remote read answered: hand the bytes to the reader; once the step's
    /// gets are all in, plan the next step.
    fn tier_on_read_get(&mut self, now: Instant, completion: StoreCompletion) {
        let op = completion.op.0;
        let Some(id) = self.tier.gets.remove(&op) else {
            return;
        };
        let Some(read) = self.tier.reads.get_mut(&id) else {
            return;
        };
        let Some(step) = read.gets.remove(&op) else {
            return;
        };
        let tp = read.tp.clone();
        let bytes = match completion.result {
            Ok(StoreReply::Got(bytes)) => bytes,
            _ => {
                read.failed = true;
                if read.gets.is_empty() {
                    self.tier_fail_read(id, ErrorCode::KAFKA_STORAGE_ERROR.0);
                }
                return;
            }
        };
        self.tier.stats.remote_read_bytes += bytes.len() as u64;
        let Some(host) = self.tier.hosts.get_mut(&tp) else {
            return self.tier_fail_read(id, ErrorCode::NOT_LEADER_OR_FOLLOWER.0);
        };
        let accepted = match step {
            ReadStep::FetchArchive { archive, .. } => host.reader.on_archive(&archive, &bytes),
            ReadStep::FetchIndex { segment, .. } => host.reader.on_index(&segment, &bytes),
            ReadStep::FetchChunks { segment, ranges, .. } => match ranges.first() {
                Some(&(position, _)) => host.reader.on_chunk(&segment, position, bytes),
                None => Ok(()),
            },
            _ => Ok(()),
        };
        let Some(read) = self.tier.reads.get_mut(&id) else {
            return;
        };
        if accepted.is_err() {
            read.failed = true;
        }
        if read.gets.is_empty() {
            if read.failed {
                self.tier_fail_read(id, ErrorCode::KAFKA_STORAGE_ERROR.0);
            } else {
                self.tier_advance_read(now, id);
            }
        }
    }
}
