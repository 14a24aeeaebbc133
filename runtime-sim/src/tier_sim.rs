//! Tiered storage in the simulator: core's [`Archiver`] and [`RemoteReader`] driven
//! against the faulty [`SimObjectStore`], over one partition whose log is core's `Log`
//! on an in-memory disk, written by a simulated producer.
//!
//! This is a tiering-focused driver, not the Raft cluster: the partition's leader is
//! modelled by the archiver's incarnation and term. A "crash" drops the archiver with
//! everything in flight (between a segment upload and its manifest upload, often) and,
//! after a pause, a new leader of a higher term starts from the manifest in the store,
//! over the same log (the committed prefix every replica shares). Produce never waits
//! for the store.
//!
//! Faults: store latency, errors, timeouts (applied or not), uploads that stop half way,
//! archiver crashes / leader changes, and (`lose_manifest`) an operator losing the
//! manifest once while the leader is down, restoring it a while later. Checkers:
//!
//! * `tier-manifest-names-missing-object` — after every store operation, every object
//!   the store's manifest names (archives and their segments included) exists whole;
//! * `tier-acked-record-unreadable` — every acknowledged batch stays readable, locally
//!   or remotely through the durable manifest (range check every tick, byte-level reads
//!   of samples every tick and of everything at the end, and again after a simulated
//!   topic recovery from the bucket alone); a consumer also reads old batches through
//!   the faulty store (ranged gets, retries), as a broker's Fetch below the local start
//!   would, from the leader's manifest;
//! * `tier-liveness` — once faults stop, everything produced is uploaded and durable;
//! * `tier-orphans-collected` — and, by the end, every object the manifest does not
//!   name (dead uploads, failed deletions) has been garbage-collected;
//! * `tier-lost-manifest-object-deleted` — while the manifest is lost (absent, or only
//!   an older version than the lost one is in the store), no archiver deletes an object
//!   the lost manifest named. The read checks above pause meanwhile: the fault itself
//!   makes old records unreadable until the manifest is back.
//!
//! Planted bugs (for the checkers' own tests): `bug_manifest_before_segment` (the store
//! side acknowledges a segment put before it is done, so the manifest can go up first),
//! `bug_delete_local_early` (local retention trusts the in-memory manifest instead of
//! the durable one), `bug_store_ignores_deletes` (garbage is never really deleted),
//! `bug_ignore_late_landings` (the archiver is told no put lands late) and
//! `bug_ignore_lineage_marker` (core's archiver takes a lost manifest for a fresh prefix).

use crate::checker::Violation;
use crate::cluster::RunResult;
use crate::coverage::Coverage;
use crate::engine::EventQueue;
use crate::objstore::{Deferred, ObjError, ObjOutcome, ObjStoreConfig, SimObjectStore};
use crate::rng::{RngExt, Seeds, SimRng};
use crate::scenario::Scenario;
use crate::trace::Trace;
use crate::trace_event;
use bytes::Bytes;
use oxbow_core::log::batch::BatchHeader;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::read::{find_offset_for_timestamp, trim_fetched};
use oxbow_core::log::{Log, LogConfig};
use oxbow_core::tier::manifest::ArchivedManifest;
use oxbow_core::tier::read::ReadCacheConfig;
use oxbow_core::tier::recovery::recover_partition;
use oxbow_core::tier::retention::local_start_after_retention;
use oxbow_core::tier::{
    Archiver, LocalLogView, ObjectBody, PartitionManifest, PartitionPath, ReadStep, RemoteReader,
    StoreCompletion, StoreError, StoreReply, TierConfig, TierEffect,
};
use oxbow_core::time::Instant;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Wall-clock origin of simulated record timestamps (ms since the epoch).
const WALL_EPOCH_MS: i64 = 1_790_000_000_000;
/// Event queue bound.
const MAX_EVENTS: usize = 100_000;
/// Acknowledged batches read back byte by byte at each check.
const SAMPLE_READS: usize = 6;

/// `[tier]` in a scenario file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierSimConfig {
    /// Run the tiering simulation instead of the Raft cluster.
    pub enabled: bool,
    /// Time between two produced batches.
    pub produce_interval_ms: u64,
    /// Records per batch.
    pub records_per_batch: u32,
    /// Local segment roll size.
    pub segment_bytes: u64,
    /// Upload lag of the active segment.
    pub upload_lag_ms: u64,
    /// `retention.local.target.bytes`.
    pub local_target_bytes: u64,
    /// `retention.bytes` (total; 0 = unlimited; under swarm, on for half the seeds).
    pub retention_bytes: u64,
    /// Manifest entries before spillover.
    pub spill_threshold_entries: usize,
    /// Entries per archived manifest.
    pub archive_entries: usize,
    /// Retention and orphan-GC period.
    pub housekeeping_ms: u64,
    /// Checker (and local retention) period.
    pub check_interval_ms: u64,
    /// Mean time between archiver crashes (leader changes); 0 = never.
    pub crash_interval_ms: u64,
    /// Time without a leader after a crash.
    pub restart_ms: u64,
    /// The object store and its faults (upper bounds under swarm).
    pub object_store: ObjStoreConfig,
    /// Planted bug: a segment put is acknowledged before the store has it.
    pub bug_manifest_before_segment: bool,
    /// Planted bug: local retention uses the not-yet-durable manifest.
    pub bug_delete_local_early: bool,
    /// Planted bug: the store answers deletes without deleting.
    pub bug_store_ignores_deletes: bool,
    /// Planted bug: the archiver is told requests never land late
    /// (`store_request_lifetime = 0`) while they do.
    pub bug_ignore_late_landings: bool,
    /// Operator fault: once, at a crash after the lineage marker is up, the manifest is
    /// deleted; it is put back `restore_manifest_ms` later unless the lineage went on
    /// meanwhile. Under swarm, on for half the seeds when set.
    pub lose_manifest: bool,
    /// Time from losing the manifest to restoring it.
    pub restore_manifest_ms: u64,
    /// Planted bug: the archiver takes a lost manifest for a fresh prefix
    /// (core's `TierBugs::ignore_lineage_marker`).
    pub bug_ignore_lineage_marker: bool,
    /// The first crash comes before the first leader's first manifest put is likely
    /// to be durable (uniform within its `store_request_lifetime` wait plus 0.5 s), so
    /// the next leader finds a dead first upload and no manifest. Under swarm, on for a
    /// quarter of the seeds whatever the file says.
    pub early_first_crash: bool,
}

impl Default for TierSimConfig {
    fn default() -> Self {
        TierSimConfig {
            enabled: false,
            produce_interval_ms: 20,
            records_per_batch: 4,
            segment_bytes: 4_096,
            upload_lag_ms: 300,
            local_target_bytes: 8_192,
            retention_bytes: 0,
            spill_threshold_entries: 16,
            archive_entries: 8,
            housekeeping_ms: 1_000,
            check_interval_ms: 250,
            crash_interval_ms: 3_000,
            restart_ms: 400,
            object_store: ObjStoreConfig::default(),
            bug_manifest_before_segment: false,
            bug_delete_local_early: false,
            bug_store_ignores_deletes: false,
            bug_ignore_late_landings: false,
            lose_manifest: false,
            restore_manifest_ms: 2_000,
            bug_ignore_lineage_marker: false,
            early_first_crash: false,
        }
    }
}

impl TierSimConfig {
    /// Checks the values; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.produce_interval_ms == 0 || self.check_interval_ms == 0 || self.housekeeping_ms == 0 {
            return Err(
                "tier: produce_interval_ms, check_interval_ms and housekeeping_ms must be positive".into(),
            );
        }
        if !(1..=1_000).contains(&self.records_per_batch) || self.segment_bytes < 512 {
            return Err("tier: records_per_batch must be 1..=1000 and segment_bytes at least 512".into());
        }
        self.object_store.validate()?;
        self.tier_config().validate().map_err(|e| format!("tier: {e}"))
    }

    fn tier_config(&self) -> TierConfig {
        TierConfig {
            upload_lag: Duration::from_millis(self.upload_lag_ms),
            local_target_bytes: Some(self.local_target_bytes),
            local_target_ms: None,
            retention_bytes: (self.retention_bytes > 0).then_some(self.retention_bytes),
            retention_ms: None,
            spill_threshold_entries: self.spill_threshold_entries,
            archive_entries: self.archive_entries,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(1_000),
            housekeeping_interval: Duration::from_millis(self.housekeeping_ms),
            max_pending_deletes: 4 * self.archive_entries + 256,
            max_deletes_in_flight: 8,
            // Late landings of timed-out requests are bounded by twice the timeout.
            store_request_lifetime: if self.bug_ignore_late_landings {
                Duration::ZERO
            } else {
                Duration::from_micros(2 * self.object_store.timeout_us) + Duration::from_millis(100)
            },
        }
    }

    /// Under swarm: each store fault kept with probability 1/2, at a rate below its bound.
    fn swarm(&self, rng: &mut SimRng) -> TierSimConfig {
        let mut c = self.clone();
        let mut draw = |bound: f64| {
            if bound <= 0.0 || rng.chance(0.5) {
                0.0
            } else {
                bound * (rng.between(1, 1_000) as f64) / 1_000.0
            }
        };
        c.object_store.error_prob = draw(self.object_store.error_prob);
        c.object_store.timeout_prob = draw(self.object_store.timeout_prob);
        c.object_store.partial_upload_prob = draw(self.object_store.partial_upload_prob);
        c.object_store.throttle_prob = draw(self.object_store.throttle_prob);
        if rng.chance(0.5) {
            c.retention_bytes = 0;
        }
        // Drawn only when set, so scenarios without it keep their seeds' draws.
        if self.lose_manifest {
            c.lose_manifest = rng.chance(0.5);
        }
        // The last draw, so the ones above stay what they were before it existed.
        c.early_first_crash = self.early_first_crash || rng.chance(0.25);
        c
    }
}

#[derive(Debug)]
enum Ev {
    Produce,
    StoreDone {
        incarnation: u64,
        completion: StoreCompletion,
    },
    Timer {
        incarnation: u64,
    },
    Crash,
    Restart,
    Check,
    LateLanding(Deferred),
    /// The operator puts the lost manifest back.
    RestoreManifest,
    /// The consumer starts reading an old batch.
    ConsumerStart,
    /// A get of the consumer's read answered.
    ConsumerGot {
        read: u64,
        fetch: ConsumerFetch,
        result: Result<Bytes, ObjError>,
    },
    /// The consumer plans its read again (after a store error).
    ConsumerRetry {
        read: u64,
    },
}

/// What a consumer's get was for.
#[derive(Debug, Clone)]
enum ConsumerFetch {
    Archive(oxbow_core::tier::ArchiveRef),
    Index(oxbow_core::tier::SegmentMeta),
    Chunk(oxbow_core::tier::SegmentMeta, u64),
}

/// A consumer's read of an old batch through the (faulty) store: a fetch below the
/// local start, as a broker would serve it from the leader's manifest.
#[derive(Debug)]
struct ConsumerRead {
    id: u64,
    base: i64,
    steps: u32,
}

/// A manifest the simulated operator lost (`lose_manifest`), and what it named.
#[derive(Debug)]
struct LostManifest {
    bytes: Bytes,
    version: u64,
    /// Every object it named: archives, and the data and index objects of their
    /// segments and of its recent ones.
    named: BTreeSet<String>,
    /// Put back (or the lineage went on without it): the loss is over.
    over: bool,
}

/// Time between two consumer reads.
const CONSUMER_INTERVAL_MS: u64 = 400;
/// Most store round trips one consumer read may take before it is a liveness failure.
const CONSUMER_MAX_STEPS: u32 = 200;

/// One tiering run.
struct TierRun {
    config: TierSimConfig,
    path: PartitionPath,
    queue: EventQueue<Ev>,
    trace: Trace,
    coverage: Coverage,
    store: SimObjectStore,
    store_rng: SimRng,
    work_rng: SimRng,
    log: Log,
    disk: MemDisk,
    archiver: Option<Archiver>,
    incarnation: u64,
    term: i64,
    timer_at: Option<Instant>,
    reader: RemoteReader,
    consumer_reader: RemoteReader,
    consumer: Option<ConsumerRead>,
    next_read_id: u64,
    /// Acknowledged batches: base offset → (last offset, CRC of the records, timestamp).
    acked: BTreeMap<i64, (i64, u32, i64)>,
    archives_seen: BTreeMap<String, ArchivedManifest>,
    lost: Option<LostManifest>,
    produced: u64,
    safety_end: Instant,
    end: Instant,
    violation: Option<Violation>,
}

/// Runs `seed` of a scenario with `[tier] enabled = true`.
pub fn run_tier_seed(seed: u64, scenario: &Scenario, keep_trace: bool) -> RunResult {
    let seeds = Seeds::new(seed);
    let config = if scenario.swarm {
        scenario.tier.swarm(&mut seeds.stream("tier-swarm"))
    } else {
        scenario.tier.clone()
    };
    let summary = format!(
        "scenario {} tier: store err={:.3} timeout={:.3} throttle={:.3} partial={:.3} late={} retention_bytes={} crash_every={}ms early_first_crash={} lose_manifest={} bugs(manifest_before_segment={}, delete_local_early={})",
        scenario.name,
        config.object_store.error_prob,
        config.object_store.timeout_prob,
        config.object_store.throttle_prob,
        config.object_store.partial_upload_prob,
        config.object_store.late_timeouts,
        config.retention_bytes,
        config.crash_interval_ms,
        config.early_first_crash,
        config.lose_manifest,
        config.bug_manifest_before_segment,
        config.bug_delete_local_early,
    );
    let mut run = TierRun::new(&seeds, config, scenario, keep_trace);
    trace_event!(run.trace, Instant::ZERO, None, "start seed={seed} {summary}");
    run.run();
    let acked_writes = run.acked.len();
    RunResult {
        violation: run.violation,
        trace_hash: run.trace.hash(),
        trace: run.trace.lines(),
        events: run.queue.popped(),
        sim_time: run.queue.now().saturating_duration_since(Instant::ZERO),
        coverage: run.coverage,
        scenario_summary: summary,
        acked_writes,
    }
}

impl TierRun {
    fn new(seeds: &Seeds, config: TierSimConfig, scenario: &Scenario, keep_trace: bool) -> Self {
        let log_config = LogConfig {
            segment_bytes: config.segment_bytes,
            index_interval_bytes: 256,
            max_batch_bytes: 64 * 1024,
            recovery_read_bytes: 64 * 1024,
            preallocate_bytes: 0,
            retention_bytes: None,
            retention_ms: None,
            ..LogConfig::default()
        };
        let path = PartitionPath {
            topic: "tiered".into(),
            partition: 0,
            revision: 1,
        };
        let safety_end = Instant::ZERO + Duration::from_secs(scenario.safety_secs);
        TierRun {
            store: SimObjectStore::new(config.object_store),
            reader: RemoteReader::new(
                path.clone(),
                ReadCacheConfig {
                    max_archives: 2,
                    max_indexes: 8,
                    chunk_size_bytes: 1_024,
                    max_chunk_bytes: 16 * 1_024,
                },
            )
            .expect("a valid constant reader config"),
            consumer_reader: RemoteReader::new(
                path.clone(),
                ReadCacheConfig {
                    max_archives: 1,
                    max_indexes: 2,
                    chunk_size_bytes: 512,
                    max_chunk_bytes: 4 * 1_024,
                },
            )
            .expect("a valid constant reader config"),
            consumer: None,
            next_read_id: 0,
            path,
            queue: EventQueue::new(MAX_EVENTS),
            trace: Trace::new(keep_trace),
            coverage: Coverage::default(),
            store_rng: seeds.stream("objstore"),
            work_rng: seeds.stream("tier-work"),
            log: Log::new(log_config, 0),
            disk: MemDisk::new(),
            archiver: None,
            incarnation: 0,
            term: 0,
            timer_at: None,
            acked: BTreeMap::new(),
            archives_seen: BTreeMap::new(),
            lost: None,
            produced: 0,
            safety_end,
            end: safety_end + Duration::from_secs(scenario.liveness_secs),
            violation: None,
            config,
        }
    }

    fn at(&mut self, at: Instant, ev: Ev) {
        if self.queue.schedule_at(at, ev).is_err() && self.violation.is_none() {
            self.violation = Some(Violation {
                invariant: "simulator-bound",
                detail: format!("event queue full ({MAX_EVENTS})"),
            });
        }
    }

    fn after(&mut self, delay: Duration, ev: Ev) {
        let at = self.queue.now() + delay;
        self.at(at, ev);
    }

    fn fail(&mut self, invariant: &'static str, detail: String) {
        if self.violation.is_none() {
            let now = self.queue.now();
            trace_event!(self.trace, now, None, "VIOLATION {invariant}: {detail}");
            self.violation = Some(Violation { invariant, detail });
        }
    }

    fn run(&mut self) {
        self.start_archiver(Instant::ZERO);
        self.after(Duration::ZERO, Ev::Produce);
        self.after(Duration::from_millis(self.config.check_interval_ms), Ev::Check);
        self.after(Duration::from_millis(CONSUMER_INTERVAL_MS), Ev::ConsumerStart);
        if self.config.early_first_crash && self.config.crash_interval_ms > 0 {
            let wait = self.config.tier_config().store_request_lifetime.as_millis() as u64;
            let delay = self.work_rng.between(0, wait + 500);
            self.after(Duration::from_millis(delay), Ev::Crash);
        } else {
            self.schedule_crash();
        }
        while self.violation.is_none() {
            let Some((now, ev)) = self.queue.pop() else {
                break;
            };
            if now > self.end {
                break;
            }
            if now >= self.safety_end && self.store_faults_on() {
                self.heal(now);
            }
            self.step(now, ev);
        }
        if self.violation.is_none() {
            self.finish();
        }
    }

    fn store_faults_on(&self) -> bool {
        let c = &self.config.object_store;
        c.error_prob > 0.0 || c.timeout_prob > 0.0 || c.partial_upload_prob > 0.0 || c.throttle_prob > 0.0
    }

    fn heal(&mut self, now: Instant) {
        let mut healed = self.config.object_store;
        healed.error_prob = 0.0;
        healed.timeout_prob = 0.0;
        healed.partial_upload_prob = 0.0;
        healed.throttle_prob = 0.0;
        self.config.object_store = healed;
        self.store.set_config(healed);
        trace_event!(self.trace, now, None, "liveness phase: store faults off");
    }

    fn step(&mut self, now: Instant, ev: Ev) {
        match ev {
            Ev::Produce => self.produce(now),
            Ev::StoreDone {
                incarnation,
                completion,
            } => {
                if incarnation == self.incarnation {
                    if let Some(a) = self.archiver.as_mut() {
                        a.handle_completion(now, completion);
                    }
                    self.pump_archiver(now);
                }
            }
            Ev::Timer { incarnation } => {
                if incarnation == self.incarnation && self.timer_at.is_some_and(|t| t <= now) {
                    self.timer_at = None;
                    if let Some(a) = self.archiver.as_mut() {
                        a.handle_timeout(now);
                    }
                    self.pump_archiver(now);
                }
            }
            Ev::Crash => self.crash(now),
            Ev::Restart => self.start_archiver(now),
            Ev::RestoreManifest => self.restore_manifest(now),
            Ev::Check => self.check(now),
            Ev::ConsumerStart => self.consumer_start(now),
            Ev::ConsumerGot { read, fetch, result } => self.consumer_got(now, read, fetch, result),
            Ev::ConsumerRetry { read } => {
                if self.consumer.as_ref().is_some_and(|c| c.id == read) {
                    self.consumer_step(now);
                }
            }
            Ev::LateLanding(late) => {
                self.coverage.hit("tier.late_landing");
                trace_event!(
                    self.trace,
                    now,
                    None,
                    "late landing of {} on {}",
                    if late.data.is_some() { "put" } else { "delete" },
                    late.key
                );
                self.store.apply_deferred(late);
                self.check_manifest(now);
            }
        }
    }

    // ---- the producer and the local log ----

    fn produce(&mut self, now: Instant) {
        if now >= self.safety_end {
            return; // the liveness phase lets the uploads catch up
        }
        let wall_ms = WALL_EPOCH_MS + now.as_millis() as i64;
        let records: Vec<NewRecord> = (0..self.config.records_per_batch)
            .map(|i| NewRecord::value(format!("p{}-{i}", self.produced), wall_ms))
            .collect();
        self.produced += 1;
        let batch = build_batch(&records, BatchOptions::default());
        let crc = BatchHeader::parse(&batch).map(|h| h.crc).unwrap_or(0);
        match self.log.append(now, self.term.max(1), batch) {
            Ok(info) => {
                self.log.sync();
                self.pump_log(now);
                if self.log.durable_offset() >= info.last_offset {
                    self.acked
                        .insert(info.base_offset, (info.last_offset, crc, wall_ms));
                    trace_event!(
                        self.trace,
                        now,
                        None,
                        "acked {}..={}",
                        info.base_offset,
                        info.last_offset
                    );
                }
            }
            Err(e) => trace_event!(self.trace, now, None, "append refused: {e}"),
        }
        self.feed_archiver(now);
        self.after(
            Duration::from_millis(self.config.produce_interval_ms),
            Ev::Produce,
        );
    }

    fn pump_log(&mut self, now: Instant) {
        while let Some(effect) = self.log.poll_effect() {
            for completion in self.disk.execute(effect) {
                self.log.handle_completion(now, completion);
            }
        }
        while self.log.poll_event().is_some() {}
    }

    /// Everything synced is committed here (one replica).
    fn view(&self, now: Instant) -> LocalLogView {
        let now_wall_ms = WALL_EPOCH_MS + now.as_millis() as i64;
        LocalLogView::of_log(&self.log, self.log.durable_offset() + 1, now_wall_ms)
    }

    fn local_retention(&mut self, now: Instant) {
        let Some(a) = self.archiver.as_ref() else {
            return;
        };
        let view = self.view(now);
        let start = if self.config.bug_delete_local_early {
            local_start_after_retention(
                &view.segments,
                &self.config.tier_config(),
                view.now_wall_ms,
                a.uploaded_offset(),
            )
            .filter(|s| *s > view.start_offset)
        } else {
            a.local_retention(&view)
        };
        let Some(start) = start else {
            return;
        };
        if self.log.delete_records(now, start).is_ok() {
            self.pump_log(now);
            self.coverage.hit("tier.local_deleted");
            trace_event!(self.trace, now, None, "local start -> {start}");
        }
    }

    // ---- the archiver and the store ----

    fn start_archiver(&mut self, now: Instant) {
        self.term += 1;
        self.incarnation += 1;
        self.timer_at = None;
        let prefix = self.path.prefix();
        if !self.store.contains(&self.path.manifest_key())
            && self.store.keys().any(|k| k.starts_with(&prefix))
        {
            // What a naive "protect everything without a manifest" leaks: a dead first
            // upload's objects (or, with `lose_manifest`, a lost manifest's).
            self.coverage.hit("tier.start_without_manifest_with_objects");
        }
        let seed = self.work_rng.between(0, u64::MAX - 1);
        match Archiver::new(self.config.tier_config(), self.path.clone(), self.term, seed, now) {
            Ok(mut archiver) => {
                archiver.plant(oxbow_core::tier::TierBugs {
                    ignore_lineage_marker: self.config.bug_ignore_lineage_marker,
                });
                self.archiver = Some(archiver);
            }
            Err(e) => {
                self.fail("simulator-bound", e.to_string());
                return;
            }
        }
        trace_event!(
            self.trace,
            now,
            None,
            "leader term {} starts archiving",
            self.term
        );
        self.feed_archiver(now);
    }

    fn schedule_crash(&mut self) {
        let mean = self.config.crash_interval_ms;
        if mean == 0 {
            return;
        }
        let delay = self.work_rng.between(mean / 2, mean + mean / 2);
        self.after(Duration::from_millis(delay), Ev::Crash);
    }

    fn crash(&mut self, now: Instant) {
        if now >= self.safety_end {
            return;
        }
        if let Some(a) = self.archiver.take() {
            self.account(&a);
            self.coverage.hit("tier.archiver_crash");
            if a.uploaded_offset() > a.removable_offset() || a.ops_in_flight() > 0 {
                self.coverage.hit("tier.crash_between_upload_and_manifest");
            }
            trace_event!(
                self.trace,
                now,
                None,
                "archiver term {} crashes: uploaded {:?} durable {:?} ops {}",
                a.term(),
                a.uploaded_offset(),
                a.removable_offset(),
                a.ops_in_flight()
            );
            self.incarnation += 1;
            self.after(Duration::from_millis(self.config.restart_ms), Ev::Restart);
            self.maybe_lose_manifest(now);
        }
        self.schedule_crash();
    }

    /// The operator fault: with the leader down and the lineage marked, the manifest
    /// goes (once per run, early enough to be restored before the liveness phase).
    fn maybe_lose_manifest(&mut self, now: Instant) {
        let restore = Duration::from_millis(self.config.restore_manifest_ms);
        if !self.config.lose_manifest
            || self.lost.is_some()
            || now + restore + Duration::from_millis(1_500) > self.safety_end
            || !self.store.contains(&self.path.lineage_key())
        {
            return;
        }
        let Ok(Some(manifest)) = self.durable_manifest() else {
            return;
        };
        let mut named = BTreeSet::new();
        let mut segments = manifest.segments.clone();
        for a in &manifest.archives {
            let key = self.path.archive_key(a);
            if let Ok(archive) = self.archive(&key) {
                segments.extend(archive.segments.iter().copied());
            }
            named.insert(key);
        }
        for s in &segments {
            named.insert(self.path.segment_key(s));
            named.insert(self.path.index_key(s));
        }
        let Some(bytes) = self.store.remove_outside(&self.path.manifest_key()) else {
            return;
        };
        self.coverage.hit("tier.manifest_lost");
        trace_event!(
            self.trace,
            now,
            None,
            "operator loses manifest v{} ({} objects named)",
            manifest.version,
            named.len()
        );
        self.lost = Some(LostManifest {
            bytes,
            version: manifest.version,
            named,
            over: false,
        });
        self.after(restore, Ev::RestoreManifest);
    }

    /// The operator puts the lost manifest back, unless the lineage went on.
    fn restore_manifest(&mut self, now: Instant) {
        if self.lineage_interrupted() {
            if let Some(lost) = &self.lost {
                let bytes = lost.bytes.clone();
                self.store.restore_outside(&self.path.manifest_key(), bytes);
                self.coverage.hit("tier.manifest_restored");
                trace_event!(self.trace, now, None, "operator restores the manifest");
            }
        }
        if let Some(lost) = self.lost.as_mut() {
            lost.over = true;
        }
    }

    /// The manifest is lost and the lineage has not gone on: the store holds no
    /// manifest, or only one older than the lost one.
    fn lineage_interrupted(&mut self) -> bool {
        let Some(lost_version) = self.lost.as_ref().filter(|l| !l.over).map(|l| l.version) else {
            return false;
        };
        match self.durable_manifest() {
            Ok(Some(m)) => m.version < lost_version,
            Ok(None) | Err(_) => true,
        }
    }

    fn feed_archiver(&mut self, now: Instant) {
        let view = self.view(now);
        if let Some(a) = self.archiver.as_mut() {
            a.on_local_log(now, view);
        }
        self.pump_archiver(now);
    }

    fn pump_archiver(&mut self, now: Instant) {
        while let Some(effect) = self.archiver.as_mut().and_then(|a| a.poll_effect()) {
            self.execute(now, effect);
            if self.violation.is_some() {
                return;
            }
        }
        let Some(next) = self.archiver.as_ref().and_then(|a| a.poll_timeout()) else {
            return;
        };
        if self.timer_at.is_none_or(|t| next < t || t < now) {
            self.timer_at = Some(next);
            let incarnation = self.incarnation;
            self.at(next.max(now), Ev::Timer { incarnation });
        }
    }

    fn execute(&mut self, now: Instant, effect: TierEffect) {
        let op = effect.op();
        let (delay, result) = match effect {
            TierEffect::Put { key, body, .. } => self.put(now, &key, body),
            TierEffect::Get { key, range, .. } => {
                let out = self.store.get(&mut self.store_rng, &key);
                let result = out.result.map(|bytes| match range {
                    Some((at, len)) => {
                        let from = (at as usize).min(bytes.len());
                        let to = (at.saturating_add(len) as usize).min(bytes.len());
                        StoreReply::Got(bytes.slice(from..to))
                    }
                    None => StoreReply::Got(bytes),
                });
                (out.delay, result.map_err(store_error))
            }
            TierEffect::Delete { key, .. } if self.config.bug_store_ignores_deletes => {
                trace_event!(self.trace, now, None, "planted bug: delete of {key} ignored");
                (Duration::from_millis(1), Ok(StoreReply::Deleted))
            }
            TierEffect::Delete { key, .. } => {
                if self.store.contains(&key)
                    && self.lost.as_ref().is_some_and(|l| l.named.contains(&key))
                    && self.lineage_interrupted()
                {
                    self.fail(
                        "tier-lost-manifest-object-deleted",
                        format!("at {now}: {key}, named by the lost manifest, deleted while it is lost"),
                    );
                }
                let out = self.store.delete(&mut self.store_rng, &key);
                if out.result.is_ok() {
                    trace_event!(self.trace, now, None, "deleted {key}");
                }
                (
                    out.delay,
                    out.result.map(|()| StoreReply::Deleted).map_err(store_error),
                )
            }
            TierEffect::List { prefix, .. } => {
                let out = self.store.list(&mut self.store_rng, &prefix);
                (out.delay, out.result.map(StoreReply::Listed).map_err(store_error))
            }
            other => (Duration::ZERO, Err(unknown_effect(&other))),
        };
        if let Err(e) = &result {
            self.coverage.hit("tier.store_error");
            if *e == StoreError::Throttled {
                self.coverage.hit("tier.throttled");
            }
            trace_event!(self.trace, now, None, "store op {} failed: {e}", op.0);
        }
        self.check_manifest(now);
        for late in self.store.take_deferred() {
            let delay_us = self.work_rng.between(0, 2 * self.config.object_store.timeout_us);
            self.after(Duration::from_micros(delay_us), Ev::LateLanding(late));
        }
        let incarnation = self.incarnation;
        self.after(
            delay,
            Ev::StoreDone {
                incarnation,
                completion: StoreCompletion { op, result },
            },
        );
    }

    fn put(
        &mut self,
        now: Instant,
        key: &str,
        body: ObjectBody,
    ) -> (Duration, Result<StoreReply, StoreError>) {
        let data = match body {
            ObjectBody::Bytes(bytes) => bytes,
            ObjectBody::LocalSegment {
                segment,
                position_bytes,
                len_bytes,
            } => {
                let bytes = self.disk.read(segment, position_bytes, len_bytes);
                if bytes.len() as u64 != len_bytes {
                    return (Duration::from_millis(1), Err(StoreError::LocalReadFailed));
                }
                bytes
            }
            other => return (Duration::ZERO, Err(unknown_body(&other))),
        };
        let out: ObjOutcome<()> = self.store.put(&mut self.store_rng, key, data);
        if matches!(out.result, Err(ObjError::Interrupted { .. })) {
            self.coverage.hit("tier.partial_upload");
        }
        if out.result.is_ok() {
            trace_event!(self.trace, now, None, "put {key}");
            if key.ends_with("/manifest") {
                self.coverage.hit("tier.manifest_put");
            } else if key.contains("/archive/") {
                self.coverage.hit("tier.spill");
            } else if key.ends_with(".log") {
                self.coverage.hit("tier.upload");
            }
        }
        if self.config.bug_manifest_before_segment && key.ends_with(".log") {
            // Planted bug: "done" before the store has the object.
            return (Duration::ZERO, Ok(StoreReply::Put));
        }
        (
            out.delay,
            out.result.map(|()| StoreReply::Put).map_err(store_error),
        )
    }

    // ---- checkers ----

    /// The store's manifest, decoded (a checker's view).
    fn durable_manifest(&mut self) -> Result<Option<PartitionManifest>, String> {
        let Some(bytes) = self.store.peek(&self.path.manifest_key()) else {
            return Ok(None);
        };
        PartitionManifest::decode(&self.path, bytes)
            .map(Some)
            .map_err(|e| format!("the store's manifest is unreadable: {e}"))
    }

    fn archive(&mut self, key: &str) -> Result<&ArchivedManifest, String> {
        if !self.archives_seen.contains_key(key) {
            let bytes = self
                .store
                .peek(key)
                .ok_or(format!("archived manifest {key} is missing"))?;
            let archive =
                ArchivedManifest::decode(&self.path, bytes).map_err(|e| format!("archive {key}: {e}"))?;
            self.archives_seen.insert(key.to_string(), archive);
        }
        self.archives_seen
            .get(key)
            .ok_or_else(|| format!("archive {key}"))
    }

    fn check_manifest(&mut self, now: Instant) {
        if let Err(detail) = self.manifest_names_only_existing_objects() {
            self.fail(
                "tier-manifest-names-missing-object",
                format!("at {now}: {detail}"),
            );
        }
    }

    fn manifest_names_only_existing_objects(&mut self) -> Result<(), String> {
        let Some(m) = self.durable_manifest()? else {
            return Ok(());
        };
        let mut segments = m.segments.clone();
        for a in &m.archives {
            let key = self.path.archive_key(a);
            segments.extend(self.archive(&key)?.segments.iter().copied());
        }
        for s in &segments {
            for key in [self.path.segment_key(s), self.path.index_key(s)] {
                if !self.store.contains(&key) {
                    return Err(format!("manifest v{} names missing {key}", m.version));
                }
            }
        }
        Ok(())
    }

    // ---- a consumer reading old data through the faulty store ----

    fn consumer_start(&mut self, now: Instant) {
        self.after(Duration::from_millis(CONSUMER_INTERVAL_MS), Ev::ConsumerStart);
        if self.consumer.is_some() {
            return;
        }
        let remote: Vec<i64> = self
            .acked
            .range(..self.log.start_offset())
            .map(|(b, _)| *b)
            .collect();
        if remote.is_empty() {
            return;
        }
        let base = remote[self.work_rng.index(remote.len())];
        self.next_read_id += 1;
        self.consumer = Some(ConsumerRead {
            id: self.next_read_id,
            base,
            steps: 0,
        });
        self.consumer_step(now);
    }

    /// Plans the consumer's read against the leader's manifest and issues the next get.
    fn consumer_step(&mut self, now: Instant) {
        let Some(read) = self.consumer.as_mut() else {
            return;
        };
        read.steps += 1;
        let (id, base, steps) = (read.id, read.base, read.steps);
        if steps > CONSUMER_MAX_STEPS && now < self.safety_end {
            self.consumer = None; // gave up under faults; a later read tries again
            return;
        }
        if steps > CONSUMER_MAX_STEPS {
            self.fail(
                "tier-liveness",
                format!("a consumer read of batch {base} makes no progress"),
            );
            return;
        }
        let active = self
            .archiver
            .as_ref()
            .filter(|a| matches!(a.state(), oxbow_core::tier::ArchiverState::Active));
        let Some(manifest) = active.map(|a| a.manifest().clone()) else {
            self.after(Duration::from_millis(100), Ev::ConsumerRetry { read: id });
            return;
        };
        let step = match self.consumer_reader.plan(&manifest, base, 1) {
            Ok(step) => step,
            Err(e) => {
                self.fail(
                    "tier-acked-record-unreadable",
                    format!("consumer read of {base}: {e}"),
                );
                return;
            }
        };
        let (key, range, fetch) = match step {
            ReadStep::Ready { segment, data } => {
                self.consumer_done(now, base, &segment, data);
                return;
            }
            ReadStep::OutOfRange { start_offset, .. } => {
                let expired = self.lineage_interrupted()
                    || self.config.retention_bytes > 0
                        && self
                            .acked
                            .get(&base)
                            .is_some_and(|(last, _, _)| *last < start_offset);
                if !expired && base < self.log.start_offset() {
                    self.fail(
                        "tier-acked-record-unreadable",
                        format!("consumer: batch {base} is neither local nor in the leader's manifest"),
                    );
                }
                self.consumer = None;
                return;
            }
            ReadStep::FetchArchive { key, archive } => (key, None, ConsumerFetch::Archive(archive)),
            ReadStep::FetchIndex { key, segment } => (key, None, ConsumerFetch::Index(segment)),
            ReadStep::FetchChunks { key, ranges, .. } => {
                let Some(&(at, len)) = ranges.first() else {
                    return;
                };
                let Some(segment) = self.segment_of_key(&manifest, &key).ok() else {
                    self.consumer = None;
                    return;
                };
                (key, Some((at, len)), ConsumerFetch::Chunk(segment, at))
            }
            other => {
                self.fail("simulator-bound", format!("unexpected read step {other:?}"));
                return;
            }
        };
        let out = self.store.get(&mut self.store_rng, &key);
        let result = out.result.map(|bytes| match range {
            Some((at, len)) => {
                let from = (at as usize).min(bytes.len());
                bytes.slice(from..((at + len) as usize).min(bytes.len()))
            }
            None => bytes,
        });
        self.after(
            out.delay,
            Ev::ConsumerGot {
                read: id,
                fetch,
                result,
            },
        );
    }

    fn consumer_got(
        &mut self,
        now: Instant,
        read: u64,
        fetch: ConsumerFetch,
        result: Result<Bytes, ObjError>,
    ) {
        if self.consumer.as_ref().is_none_or(|c| c.id != read) {
            return;
        }
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(ObjError::NotFound(key)) => {
                // Only garbage is ever deleted: the manifest read may have been stale
                // (retention moved it); plan again from the current one.
                trace_event!(self.trace, now, None, "consumer: {key} gone, replanning");
                self.after(Duration::from_millis(10), Ev::ConsumerRetry { read });
                return;
            }
            Err(_) => {
                self.coverage.hit("tier.consumer_retry");
                self.after(Duration::from_millis(50), Ev::ConsumerRetry { read });
                return;
            }
        };
        let handed = match &fetch {
            ConsumerFetch::Archive(archive) => self.consumer_reader.on_archive(archive, &bytes),
            ConsumerFetch::Index(segment) => self.consumer_reader.on_index(segment, &bytes),
            ConsumerFetch::Chunk(segment, at) => self.consumer_reader.on_chunk(segment, *at, bytes),
        };
        if let Err(e) = handed {
            self.fail("tier-acked-record-unreadable", format!("consumer download: {e}"));
            return;
        }
        self.consumer_step(now);
    }

    fn consumer_done(
        &mut self,
        now: Instant,
        base: i64,
        segment: &oxbow_core::tier::SegmentMeta,
        data: Bytes,
    ) {
        self.consumer = None;
        let Some(&(last, crc, _)) = self.acked.get(&base) else {
            return;
        };
        let got = trim_fetched(&[data], base, segment.last_offset, 1)
            .map_err(|e| e.to_string())
            .and_then(|b| BatchHeader::parse(&b).map_err(|e| e.to_string()));
        match got {
            Ok(h) if h.base_offset == base && h.last_offset() == last && h.crc == crc => {
                self.coverage.hit("tier.consumer_remote_read");
                trace_event!(self.trace, now, None, "consumer read batch {base} from the store");
            }
            Ok(h) => self.fail(
                "tier-acked-record-unreadable",
                format!(
                    "consumer read batch {base} as {}..={}",
                    h.base_offset,
                    h.last_offset()
                ),
            ),
            Err(e) => self.fail(
                "tier-acked-record-unreadable",
                format!("consumer read of {base}: {e}"),
            ),
        }
    }

    fn check(&mut self, now: Instant) {
        self.local_retention(now);
        self.feed_archiver(now);
        if self.lineage_interrupted() {
            // Old records are unreadable by the fault itself until the manifest is back.
            self.after(Duration::from_millis(self.config.check_interval_ms), Ev::Check);
            return;
        }
        let sample: Vec<i64> = if self.acked.is_empty() {
            Vec::new()
        } else {
            let offsets: Vec<i64> = self.acked.keys().copied().collect();
            (0..SAMPLE_READS)
                .map(|_| offsets[self.work_rng.index(offsets.len())])
                .chain(offsets.first().copied())
                .collect()
        };
        if let Err(detail) = self.acked_ranges_covered() {
            self.fail("tier-acked-record-unreadable", format!("at {now}: {detail}"));
            return;
        }
        for offset in sample {
            if let Err(detail) = self.read_back(offset, None) {
                self.fail("tier-acked-record-unreadable", format!("at {now}: {detail}"));
                return;
            }
        }
        self.after(Duration::from_millis(self.config.check_interval_ms), Ev::Check);
    }

    /// Every acknowledged batch below the local start is named by the durable manifest
    /// (or lies below its start offset, expired by total retention).
    fn acked_ranges_covered(&mut self) -> Result<(), String> {
        let local_start = self.log.start_offset();
        let manifest = self.durable_manifest()?;
        let Some(m) = manifest.as_ref() else {
            return match self.acked.range(..local_start).next() {
                Some((base, (last, _, _))) => Err(format!(
                    "acked batch {base}..={last} is below the local start {local_start} and there is no durable manifest"
                )),
                None => Ok(()),
            };
        };
        let (remote_start, remote_next) = (m.start_offset, m.next_offset().unwrap_or(m.start_offset));
        let retention = self.config.retention_bytes > 0;
        for (&base, &(last, _, _)) in self.acked.range(..local_start) {
            let expired = retention && last < remote_start;
            let remote = base >= remote_start && last < remote_next;
            if !(expired || remote) {
                return Err(format!(
                    "acked batch {base}..={last} is below the local start {local_start} and outside the durable manifest [{remote_start}, {remote_next})"
                ));
            }
        }
        Ok(())
    }

    /// Reads acknowledged batch `base` back byte by byte: locally if the local log has
    /// it, otherwise through `manifest` (default: the store's) with the remote reader.
    fn read_back(&mut self, base: i64, manifest: Option<&PartitionManifest>) -> Result<(), String> {
        let Some(&(last, crc, timestamp_ms)) = self.acked.get(&base) else {
            return Ok(());
        };
        let got = if manifest.is_none() && base >= self.log.start_offset() {
            self.read_local(base)?
        } else {
            let owned;
            let manifest = match manifest {
                Some(m) => m,
                None => {
                    owned = self
                        .durable_manifest()?
                        .ok_or(format!("batch {base} not local and no manifest"))?;
                    &owned
                }
            };
            if self.config.retention_bytes > 0 && last < manifest.start_offset {
                return Ok(()); // expired by total retention
            }
            self.coverage.hit("tier.remote_read");
            // ListOffsets by this batch's timestamp finds the batch (timestamps grow
            // with offsets here, one batch per millisecond at most).
            let found = self.remote_timestamp(manifest, timestamp_ms)?;
            if found != Some(base) {
                return Err(format!(
                    "remote timestamp lookup of {timestamp_ms} (batch {base}) found {found:?}"
                ));
            }
            self.read_remote(manifest, base)?
        };
        let header = BatchHeader::parse(&got).map_err(|e| format!("batch {base}: {e}"))?;
        if header.base_offset != base || header.last_offset() != last || header.crc != crc {
            return Err(format!(
                "batch {base}..={last} read back as {}..={} crc {:08x} (want {crc:08x})",
                header.base_offset,
                header.last_offset(),
                header.crc
            ));
        }
        Ok(())
    }

    fn read_local(&mut self, base: i64) -> Result<Bytes, String> {
        let plan = self
            .log
            .read_plan(base, 1, self.log.next_offset())
            .map_err(|e| format!("local read of {base}: {e}"))?;
        let chunks: Vec<Bytes> = plan
            .ranges
            .iter()
            .map(|r| self.disk.read(r.segment, r.position, r.len_bytes))
            .collect();
        trim_fetched(&chunks, base, i64::MAX, 1).map_err(|e| format!("local read of {base}: {e}"))
    }

    fn read_remote(&mut self, manifest: &PartitionManifest, base: i64) -> Result<Bytes, String> {
        for _ in 0..16 {
            let step = self
                .reader
                .plan(manifest, base, 1)
                .map_err(|e| format!("remote read of {base}: {e}"))?;
            match step {
                ReadStep::Ready { segment, data } => {
                    return trim_fetched(&[data], base, segment.last_offset, 1)
                        .map_err(|e| format!("remote read of {base}: {e}"));
                }
                ReadStep::FetchArchive { key, archive } => {
                    self.coverage.hit("tier.archive_loaded");
                    let bytes = self.store.peek(&key).ok_or(format!("archive {key} missing"))?.clone();
                    self.reader.on_archive(&archive, &bytes).map_err(|e| e.to_string())?;
                }
                ReadStep::FetchIndex { key, segment } => {
                    let bytes = self.store.peek(&key).ok_or(format!("index {key} missing"))?.clone();
                    self.reader.on_index(&segment, &bytes).map_err(|e| e.to_string())?;
                }
                ReadStep::FetchChunks { key, ranges, .. } => {
                    let object = self.store.peek(&key).ok_or(format!("segment {key} missing"))?.clone();
                    let segment = match manifest.locate(base) {
                        Some(oxbow_core::tier::manifest::Location::Segment(s)) => *s,
                        _ => self.archived_segment(manifest, base)?,
                    };
                    for (at, len) in ranges {
                        let chunk = object.slice(at as usize..((at + len) as usize).min(object.len()));
                        self.reader.on_chunk(&segment, at, chunk).map_err(|e| e.to_string())?;
                    }
                }
                ReadStep::OutOfRange {
                    start_offset,
                    next_offset,
                } => {
                    return Err(format!(
                        "batch {base} is not local (start {}) and not in the manifest [{start_offset}, {next_offset:?})",
                        self.log.start_offset()
                    ))
                }
                other => return Err(format!("unexpected read step {other:?}")),
            }
        }
        Err(format!("remote read of {base} did not finish"))
    }

    fn remote_timestamp(
        &mut self,
        manifest: &PartitionManifest,
        timestamp_ms: i64,
    ) -> Result<Option<i64>, String> {
        for _ in 0..16 {
            let step = self
                .reader
                .plan_timestamp(manifest, timestamp_ms)
                .map_err(|e| format!("timestamp lookup {timestamp_ms}: {e}"))?;
            match step {
                ReadStep::Ready { segment, data } => {
                    let min_offset = segment.base_offset.max(manifest.start_offset);
                    return find_offset_for_timestamp(&data, timestamp_ms, min_offset)
                        .map_err(|e| format!("timestamp lookup {timestamp_ms}: {e}"));
                }
                ReadStep::OutOfRange { .. } => return Ok(None),
                ReadStep::FetchArchive { key, archive } => {
                    self.coverage.hit("tier.archive_loaded");
                    let bytes = self
                        .store
                        .peek(&key)
                        .ok_or(format!("archive {key} missing"))?
                        .clone();
                    self.reader
                        .on_archive(&archive, &bytes)
                        .map_err(|e| e.to_string())?;
                }
                ReadStep::FetchIndex { key, segment } => {
                    let bytes = self
                        .store
                        .peek(&key)
                        .ok_or(format!("index {key} missing"))?
                        .clone();
                    self.reader
                        .on_index(&segment, &bytes)
                        .map_err(|e| e.to_string())?;
                }
                ReadStep::FetchChunks { key, ranges, .. } => {
                    let object = self
                        .store
                        .peek(&key)
                        .ok_or(format!("segment {key} missing"))?
                        .clone();
                    let segment = self.segment_of_key(manifest, &key)?;
                    for (at, len) in ranges {
                        let chunk = object.slice(at as usize..((at + len) as usize).min(object.len()));
                        self.reader
                            .on_chunk(&segment, at, chunk)
                            .map_err(|e| e.to_string())?;
                    }
                }
                other => return Err(format!("unexpected read step {other:?}")),
            }
        }
        Err(format!("timestamp lookup {timestamp_ms} did not finish"))
    }

    /// The manifest entry (recent or archived) whose data object is `key`.
    fn segment_of_key(
        &mut self,
        manifest: &PartitionManifest,
        key: &str,
    ) -> Result<oxbow_core::tier::SegmentMeta, String> {
        let Some(oxbow_core::tier::ObjectName::Segment { base_offset, .. }) = self.path.parse_key(key) else {
            return Err(format!("{key} is not a segment object"));
        };
        match manifest.locate(base_offset) {
            Some(oxbow_core::tier::manifest::Location::Segment(s)) => Ok(*s),
            _ => self.archived_segment(manifest, base_offset),
        }
    }

    fn archived_segment(
        &mut self,
        manifest: &PartitionManifest,
        base: i64,
    ) -> Result<oxbow_core::tier::SegmentMeta, String> {
        let Some(oxbow_core::tier::manifest::Location::Archive(a)) = manifest.locate(base) else {
            return Err(format!("offset {base} not in the manifest"));
        };
        let key = self.path.archive_key(a);
        self.archive(&key)?
            .find(base)
            .copied()
            .ok_or(format!("archive {key} misses {base}"))
    }

    /// End of the run: everything uploaded and durable, every acknowledged batch read
    /// back, and a topic recovered from the bucket alone serves them too.
    fn finish(&mut self) {
        let now = self.queue.now();
        let next = self.log.next_offset();
        let durable = self.archiver.as_ref().and_then(|a| a.removable_offset());
        if self.acked.is_empty() {
            return;
        }
        if durable != Some(next) {
            self.fail(
                "tier-liveness",
                format!("at the end the durable manifest covers up to {durable:?}, the log up to {next}"),
            );
            return;
        }
        self.coverage.hit("liveness.reached");
        let offsets: Vec<i64> = self.acked.keys().copied().collect();
        for &base in &offsets {
            if let Err(detail) = self.read_back(base, None) {
                self.fail("tier-acked-record-unreadable", format!("final read: {detail}"));
                return;
            }
        }
        // Disaster recovery: only the bucket is left.
        let Some(bytes) = self.store.peek(&self.path.manifest_key()).cloned() else {
            self.fail("tier-acked-record-unreadable", "no manifest in the bucket".into());
            return;
        };
        match recover_partition(&self.path, &bytes) {
            Ok(recovered) => {
                if recovered.next_offset != next {
                    self.fail(
                        "tier-acked-record-unreadable",
                        format!(
                            "recovered partition ends at {}, the log at {next}",
                            recovered.next_offset
                        ),
                    );
                    return;
                }
                self.coverage.hit("tier.recovered");
                for &base in &offsets {
                    if let Err(detail) = self.read_back(base, Some(&recovered.manifest)) {
                        self.fail(
                            "tier-acked-record-unreadable",
                            format!("after recovery: {detail}"),
                        );
                        return;
                    }
                }
            }
            Err(e) => self.fail("tier-acked-record-unreadable", format!("recovery: {e}")),
        }
        // Once the store is healthy, the GC's listing finds every orphan (objects of
        // uploads that died half way, of deletions that failed): none may be left.
        match self.unnamed_objects() {
            Ok(left) if left.is_empty() => {}
            Ok(left) => {
                self.coverage.add("tier.orphans_left", left.len() as u64);
                let shown: Vec<&String> = left.iter().take(5).collect();
                let detail = format!("{} objects nothing names are left, e.g. {shown:?}", left.len());
                self.fail("tier-orphans-collected", detail);
                return;
            }
            Err(detail) => {
                self.fail("tier-manifest-names-missing-object", detail);
                return;
            }
        }
        if let Some(a) = self.archiver.take() {
            self.account(&a);
            trace_event!(self.trace, now, None, "end: {:?}", a.metrics());
        }
    }
}

impl TierRun {
    /// Adds an archiver's counters to the run's coverage.
    fn account(&mut self, a: &Archiver) {
        let m = a.metrics();
        self.coverage.add("tier.orphan_deleted", m.orphans_found);
        self.coverage
            .add("tier.remote_expired", m.segments_expired + m.archives_expired);
        self.coverage.add("tier.spilled_before_gc", m.spilled_before_gc);
        self.coverage.add("tier.lineage_marked", m.lineage_marks);
        self.coverage.add("tier.manifest_lost_refused", m.manifest_lost);
    }

    /// Complete objects under the partition's prefix that neither the manifest nor its
    /// archives name, the lineage marker aside (orphans the GC has not collected).
    fn unnamed_objects(&mut self) -> Result<Vec<String>, String> {
        let Some(m) = self.durable_manifest()? else {
            return Ok(Vec::new());
        };
        let mut named = std::collections::BTreeSet::new();
        named.insert(self.path.manifest_key());
        // The lineage marker lives as long as the partition (never garbage).
        named.insert(self.path.lineage_key());
        let mut segments = m.segments.clone();
        for a in &m.archives {
            let key = self.path.archive_key(a);
            segments.extend(self.archive(&key)?.segments.iter().copied());
            named.insert(key);
        }
        for s in &segments {
            named.insert(self.path.segment_key(s));
            named.insert(self.path.index_key(s));
        }
        let prefix = self.path.prefix();
        Ok(self
            .store
            .keys()
            .filter(|k| k.starts_with(&prefix) && !named.contains(*k))
            .cloned()
            .collect())
    }
}

fn store_error(e: ObjError) -> StoreError {
    match e {
        ObjError::Unavailable => StoreError::Unavailable,
        ObjError::Timeout => StoreError::Timeout,
        ObjError::Throttled => StoreError::Throttled,
        ObjError::Interrupted { .. } => StoreError::Interrupted,
        ObjError::NotFound(_) => StoreError::NotFound,
    }
}

fn unknown_effect(effect: &TierEffect) -> StoreError {
    let _ = effect;
    StoreError::Unavailable
}

fn unknown_body(body: &ObjectBody) -> StoreError {
    let _ = body;
    StoreError::LocalReadFailed
}
