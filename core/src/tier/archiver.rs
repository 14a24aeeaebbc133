//! [`Archiver`]: the partition leader's tiering state machine — it loads the partition
//! manifest, uploads committed log data in offset order, keeps the manifest in the store
//! up to date, spills old manifest entries into archived manifests, applies total
//! retention, and garbage-collects objects nothing names (orphans of uploads that died
//! half way, objects dropped by retention).
//!
//! # Order of durability
//!
//! 1. A segment's data and index objects are put under a fresh [`Revision`]; the entry
//!    joins the in-memory manifest only once *both* puts completed.
//! 2. The manifest is put; only when that put completes is its content durable:
//!    [`Archiver::removable_offset`] moves, and objects that version no longer names
//!    may be deleted.
//! 3. A failed or timed-out put is never retried under the same key: the next attempt
//!    gets a new revision, and the failed attempt's keys are deleted once both of its
//!    puts have answered (or found later by the orphan GC's listing).
//!
//! Store errors make the archiver back off (exponential, with seeded jitter); nothing
//! here ever blocks the local log. A new leader (a new `Archiver` with a higher term)
//! continues from the manifest in the store; a manifest written by a higher term fences
//! a stale one. Every queue is bounded by [`TierConfig`].
//!
//! # What the orphan GC may delete: the lineage marker
//!
//! The listing GC deletes objects under the prefix that the in-memory manifest does not
//! name. That is sound only if the manifest we hold is the lineage's: an object no
//! manifest that is (or may still land) in the store names, and that nothing was ever
//! made to rely on, is an orphan. A *missing* manifest is ambiguous — a fresh prefix
//! whose first uploads died before any manifest (their objects are orphans), or a lost
//! manifest (deleted, or a bucket / prefix configured wrongly) whose objects may be the
//! only copy of old data. The [`LineageMarker`] (`<prefix>lineage`) tells them apart:
//!
//! * The marker is put once this archiver holds a durable manifest — after its own first
//!   manifest put completed, or after it loaded one (which also marks prefixes written
//!   before markers existed). Until the marker is durable nothing relies on the manifest:
//!   [`Archiver::removable_offset`] stays `None` (no local deletion) and the listing GC
//!   does not run. So *a manifest anything relied on ⇒ the marker is durable*.
//! * Load finds a manifest: continue from it (and mark it, if unmarked).
//! * No manifest and no marker: no manifest was ever relied on here; every object under
//!   the prefix comes from uploads no relied-on manifest named (a dead first upload, or a
//!   first manifest whose leader died before marking it — its data is still whole in
//!   the local log). They are collected as orphans, once this archiver's own first
//!   manifest and the marker are durable and no older put can still land.
//! * No manifest but a marker: the manifest was lost. Nothing is uploaded, deleted or
//!   reported removable ([`ArchiverState::ManifestLost`], counted in
//!   [`TierMetrics::manifest_lost`]); the load is retried every `backoff_max`, so a
//!   restored manifest resumes archiving. (A concurrent stale leader's first manifest
//!   landing between our two gets looks the same for one round, and heals on the retry.)
//!
//! Not covered: objects under a prefix with neither manifest nor marker that some writer
//! *without* markers relied on (an older version whose manifest was then lost) are taken
//! for a dead first upload's.

use super::manifest::{
    ArchiveRef, ArchivedManifest, LineageMarker, Location, ManifestError, ObjectName, PartitionManifest,
    PartitionPath, RecoveryPoint, Revision, SegmentMeta,
};
use super::retention;
use super::{ObjectBody, OpId, StoreCompletion, StoreError, StoreReply, TierConfig, TierEffect};
use crate::log::index::SparseIndex;
use crate::log::io::SegmentId;
use crate::log::Log;
use crate::time::Instant;
use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Most effects waiting to be polled (each started operation queues one).
const MAX_QUEUED_EFFECTS: usize = 1_024;

/// Tier settings that cannot work (the message names the setting).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("invalid tiered-storage config: {0}")]
pub struct InvalidTierConfig(pub String);

/// What the archiver may upload of one local segment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LocalSegmentView {
    /// The local segment.
    pub id: SegmentId,
    /// Bytes of the committed prefix (whole batches) the archiver may upload.
    pub size_bytes: u64,
    /// Offset after the committed prefix's last batch.
    pub next_offset: i64,
    /// Largest timestamp in the committed prefix, -1 if none.
    pub max_timestamp_ms: i64,
    /// The segment will not grow (rolled): it is uploaded at once, not after the lag.
    pub closed: bool,
    /// The segment's sparse index (entries past `size_bytes` are ignored).
    pub index: SparseIndex,
}

/// The local log as the archiver needs it: committed data only, oldest segment first.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct LocalLogView {
    /// Local log start offset.
    pub start_offset: i64,
    /// Segments, oldest first; their committed prefixes.
    pub segments: Vec<LocalSegmentView>,
    /// Wall-clock time (ms since the epoch) for time-based retention.
    pub now_wall_ms: i64,
}

impl LocalLogView {
    /// The view of `log` whose committed data ends before `committed_next_offset` (the
    /// high watermark): every non-empty segment wholly below it, the last one included
    /// only once it is wholly committed too (a byte position inside a segment is known
    /// only at batch boundaries the log does not expose, so a partly committed active
    /// segment waits — under steady load that means until it rolls). A segment is
    /// closed when a later one exists.
    pub fn of_log(log: &Log, committed_next_offset: i64, now_wall_ms: i64) -> LocalLogView {
        let segments = log.segments();
        let count = segments.len();
        LocalLogView {
            start_offset: log.start_offset(),
            segments: segments
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty() && s.next_offset <= committed_next_offset)
                .map(|(i, s)| LocalSegmentView {
                    id: s.id,
                    size_bytes: s.size_bytes,
                    next_offset: s.next_offset,
                    max_timestamp_ms: s.max_timestamp_ms,
                    closed: i + 1 < count,
                    index: s.index.clone(),
                })
                .collect(),
            now_wall_ms,
        }
    }
}

/// Where the archiver is.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ArchiverState {
    /// Fetching the manifest from the store.
    Loading,
    /// Uploading.
    Active,
    /// The store's manifest was written by a higher term: this leader is stale.
    Fenced {
        /// The term found.
        by_term: i64,
    },
    /// The store's manifest (or lineage marker) is unreadable; nothing is uploaded (an
    /// operator must look).
    Failed(ManifestError),
    /// There is no manifest but the lineage marker says one was durable: the manifest
    /// was lost (deleted, or the bucket / prefix is not the one it was written to).
    /// Nothing is uploaded, deleted or reported removable — the objects under the prefix
    /// may be the only copy of old data; the load is retried every `backoff_max`, so
    /// restoring the manifest resumes archiving.
    ManifestLost {
        /// Term of the leader that wrote the marker.
        marked_by_term: i64,
    },
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TierMetrics {
    /// Segment uploads started.
    pub uploads_started: u64,
    /// Segment uploads whose data and index both completed.
    pub uploads_completed: u64,
    /// Data bytes uploaded by completed uploads.
    pub uploaded_bytes: u64,
    /// Segment uploads that failed (either object).
    pub upload_failures: u64,
    /// Manifest puts that completed.
    pub manifest_puts: u64,
    /// Manifest puts that failed.
    pub manifest_put_failures: u64,
    /// Archived manifests written.
    pub spills: u64,
    /// Store errors of any kind.
    pub store_errors: u64,
    /// Of which timeouts.
    pub timeouts: u64,
    /// Of which throttling.
    pub throttled: u64,
    /// Remote segments dropped by total retention.
    pub segments_expired: u64,
    /// Archived manifests dropped by total retention.
    pub archives_expired: u64,
    /// Objects deleted.
    pub objects_deleted: u64,
    /// Orphans found by listing.
    pub orphans_found: u64,
    /// Deletions dropped because the queue was full (the listing GC finds them later).
    pub deletes_dropped: u64,
    /// Times uploading could not continue: the local log starts above the manifest's end.
    pub blocked_by_gap: u64,
    /// Spills forced by the memory bound before an orphan-GC listing covered their range
    /// (orphans in that range, if any, are left behind).
    pub spilled_before_gc: u64,
    /// Loads that found the lineage marker but no manifest (a lost manifest: archiving
    /// and garbage collection stop until it is back).
    pub manifest_lost: u64,
    /// Lineage-marker puts that completed.
    pub lineage_marks: u64,
}

/// Bugs the simulator plants to prove its checkers (feature `sim-bugs`, off by default;
/// set with [`Archiver::plant`]).
#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierBugs {
    /// A missing manifest is taken for a fresh prefix even next to a lineage marker: the
    /// orphan GC then deletes the lost manifest's objects.
    pub ignore_lineage_marker: bool,
}

/// The upload lag of a partition.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct UploadBacklog {
    /// Committed offsets not yet uploaded.
    pub not_uploaded_offsets: i64,
    /// Their bytes (from the index entry before the first, so a slight overestimate).
    pub not_uploaded_bytes: u64,
    /// Committed offsets not yet named by the durable manifest (not yet removable).
    pub not_durable_offsets: i64,
}

#[derive(Clone, Debug)]
enum Purpose {
    Load,
    LoadLineage,
    MarkLineage,
    UploadData,
    UploadIndex,
    Manifest {
        version: u64,
        next_offset: Option<i64>,
    },
    Spill {
        reference: ArchiveRef,
    },
    List {
        next_offset: Option<i64>,
    },
    ExpandArchive {
        key: String,
    },
    CheckArchive {
        reference: ArchiveRef,
        keys: Vec<String>,
    },
    Delete {
        key: String,
    },
}

#[derive(Clone, Debug)]
struct Upload {
    meta: SegmentMeta,
    data_done: Option<bool>,
    index_done: Option<bool>,
}

/// Something to delete once the manifest version that dropped it is durable.
#[derive(Clone, Debug)]
enum Garbage {
    Key(String),
    /// An archived manifest: its segments' objects go too.
    Archive(String),
}

/// The leader's tiering state machine for one partition.
#[derive(Debug)]
pub struct Archiver {
    config: TierConfig,
    path: PartitionPath,
    term: i64,
    state: ArchiverState,
    manifest: PartitionManifest,
    durable_version: Option<u64>,
    durable_next_offset: Option<i64>,
    view: LocalLogView,
    ops: BTreeMap<OpId, Purpose>,
    live_revisions: BTreeSet<Revision>,
    /// The lineage marker is durable (put by this archiver): only then is the manifest
    /// relied on — local deletion, orphan GC (see the module docs).
    lineage_marked: bool,
    lineage_put_in_flight: bool,
    upload: Option<Upload>,
    spill_in_flight: bool,
    manifest_in_flight: bool,
    list_in_flight: bool,
    expand_in_flight: bool,
    awaiting_durable: VecDeque<(u64, Garbage)>,
    deletes: VecDeque<Garbage>,
    deletes_in_flight: usize,
    gc_covered_offset: i64,
    /// Every archived range below this offset has been checked for orphans.
    archive_gc_through: i64,
    /// When this incarnation wrote each archive not yet checked (bounded by the archives
    /// written within one `store_request_lifetime` plus one GC round).
    archive_written_at: BTreeMap<Revision, Instant>,
    archive_check_in_flight: bool,
    started_at: Instant,
    /// No manifest put before this: an older put (ours that timed out, or a previous
    /// leader's) may still land until then, and ours must land after it.
    manifest_put_not_before: Instant,
    /// The host vouched that no other writer ever had anything to put under the
    /// prefix ([`Archiver::assume_first_writer`]).
    first_writer: bool,
    /// Where this incarnation of a recovered partition started, to record in the
    /// manifest ([`Archiver::set_recovery_point`]).
    recovery_point: Option<RecoveryPoint>,
    now_seen: Instant,
    pending_since: Option<Instant>,
    next_housekeeping: Instant,
    backoff_until: Option<Instant>,
    consecutive_failures: u32,
    next_op: u64,
    next_seq: u64,
    effects: VecDeque<TierEffect>,
    rng: ChaCha8Rng,
    metrics: TierMetrics,
    /// Planted bugs (simulator only).
    #[cfg(feature = "sim-bugs")]
    planted: TierBugs,
}

impl Archiver {
    /// A new leader of `term` for `path`; starts by fetching the manifest.
    pub fn new(
        config: TierConfig,
        path: PartitionPath,
        term: i64,
        seed: u64,
        now: Instant,
    ) -> Result<Self, InvalidTierConfig> {
        config.validate().map_err(InvalidTierConfig)?;
        let mut archiver = Archiver {
            manifest: PartitionManifest::new(path.clone(), term),
            next_housekeeping: now + config.housekeeping_interval,
            manifest_put_not_before: now + config.store_request_lifetime,
            first_writer: false,
            recovery_point: None,
            config,
            path,
            term,
            state: ArchiverState::Loading,
            durable_version: None,
            durable_next_offset: None,
            view: LocalLogView::default(),
            ops: BTreeMap::new(),
            live_revisions: BTreeSet::new(),
            lineage_marked: false,
            lineage_put_in_flight: false,
            upload: None,
            spill_in_flight: false,
            manifest_in_flight: false,
            list_in_flight: false,
            expand_in_flight: false,
            awaiting_durable: VecDeque::new(),
            deletes: VecDeque::new(),
            deletes_in_flight: 0,
            gc_covered_offset: i64::MIN,
            archive_gc_through: i64::MIN,
            archive_written_at: BTreeMap::new(),
            archive_check_in_flight: false,
            started_at: now,
            now_seen: now,
            pending_since: None,
            backoff_until: None,
            consecutive_failures: 0,
            next_op: 0,
            next_seq: 0,
            effects: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            metrics: TierMetrics::default(),
            #[cfg(feature = "sim-bugs")]
            planted: TierBugs::default(),
        };
        let key = archiver.path.manifest_key();
        archiver.start(Purpose::Load, |op| TierEffect::Get { op, key, range: None });
        Ok(archiver)
    }

    /// The host vouches that this archiver is the first writer of its prefix: the
    /// partition's log holds nothing committed before this leader's term (its first
    /// entry, at offset 0, is of this term — so no earlier leader's archiver ever saw
    /// data to upload, nor a manifest to rewrite) and no earlier archiver of this term
    /// ran. Then, once the load confirms a fresh prefix (no manifest, no lineage
    /// marker), no earlier manifest put can still land, and the first put need not
    /// wait out `store_request_lifetime`. Anything else found keeps the wait.
    pub fn assume_first_writer(&mut self) {
        self.first_writer = true;
    }

    /// This partition was recovered from the store at `point`: once loaded, the
    /// manifest records it (one manifest put), unless it already records a point of
    /// the same incarnation, which stays — the first recorded wins.
    pub fn set_recovery_point(&mut self, point: RecoveryPoint) {
        self.recovery_point = Some(point);
    }

    /// Plants bugs (the simulator's proof that its checkers catch them).
    #[cfg(feature = "sim-bugs")]
    pub fn plant(&mut self, bugs: TierBugs) {
        self.planted = bugs;
    }

    /// Where the archiver is.
    pub fn state(&self) -> &ArchiverState {
        &self.state
    }

    /// The in-memory manifest (ahead of the store's copy while a put is pending).
    pub fn manifest(&self) -> &PartitionManifest {
        &self.manifest
    }

    /// Counters.
    pub fn metrics(&self) -> TierMetrics {
        self.metrics
    }

    /// The settings it runs with.
    pub fn config(&self) -> &TierConfig {
        &self.config
    }

    /// The leader term this archiver uploads for.
    pub fn term(&self) -> i64 {
        self.term
    }

    /// Offset after the last one named by the durable manifest: local data below it is
    /// in the object store and may be deleted locally. `None` before the first manifest
    /// put or load, and until the lineage marker is durable.
    pub fn removable_offset(&self) -> Option<i64> {
        self.durable_next_offset.filter(|_| self.lineage_marked)
    }

    /// Offset after the last one uploaded (the in-memory manifest; *not* yet durable).
    pub fn uploaded_offset(&self) -> Option<i64> {
        self.manifest.next_offset()
    }

    /// Local retention (`retention.local.target.*`): the new local start offset, if
    /// segments covered by the durable manifest may go.
    pub fn local_retention(&self, view: &LocalLogView) -> Option<i64> {
        retention::local_start_after_retention(
            &view.segments,
            &self.config,
            view.now_wall_ms,
            self.removable_offset(),
        )
        .filter(|start| *start > view.start_offset)
    }

    /// What is committed locally but not yet in the store's durable manifest (gauges
    /// for `/metrics`: the upload lag).
    pub fn backlog(&self) -> UploadBacklog {
        let local_next = self
            .view
            .segments
            .last()
            .map_or(self.view.start_offset, |s| s.next_offset);
        let durable = self.removable_offset().unwrap_or(self.view.start_offset);
        let uploaded = self.manifest.next_offset().unwrap_or(self.view.start_offset);
        let not_uploaded_bytes = self
            .view
            .segments
            .iter()
            .filter(|s| s.next_offset > uploaded)
            .map(|s| {
                let from = s
                    .index
                    .lookup_offset(uploaded)
                    .map_or(0, |(e, _)| u64::from(e.position));
                s.size_bytes.saturating_sub(from)
            })
            .sum();
        UploadBacklog {
            not_uploaded_offsets: (local_next - uploaded).max(0),
            not_uploaded_bytes,
            not_durable_offsets: (local_next - durable).max(0),
        }
    }

    /// Operations started and not yet answered.
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Deletions waiting (queued or waiting for a durable manifest).
    pub fn pending_deletes(&self) -> usize {
        self.deletes.len() + self.awaiting_durable.len()
    }

    /// The local log changed (new committed data, a roll, local retention).
    pub fn on_local_log(&mut self, now: Instant, view: LocalLogView) {
        self.now_seen = self.now_seen.max(now);
        self.view = view;
        self.pump(now);
    }

    /// An object-store operation answered.
    pub fn handle_completion(&mut self, now: Instant, completion: StoreCompletion) {
        self.now_seen = self.now_seen.max(now);
        let Some(purpose) = self.ops.remove(&completion.op) else {
            return; // not ours (a previous incarnation's)
        };
        match &completion.result {
            Ok(_) | Err(StoreError::NotFound) => self.consecutive_failures = 0,
            Err(error) => self.on_store_error(now, error),
        }
        match purpose {
            Purpose::Load => self.on_loaded(completion.result),
            Purpose::LoadLineage => self.on_lineage_loaded(now, completion.result),
            Purpose::MarkLineage => self.on_lineage_marked(completion.result),
            Purpose::UploadData => self.on_upload_part(completion.result.is_ok(), true),
            Purpose::UploadIndex => self.on_upload_part(completion.result.is_ok(), false),
            Purpose::Manifest { version, next_offset } => {
                self.on_manifest_put(completion.result, version, next_offset)
            }
            Purpose::Spill { reference } => self.on_spilled(completion.result, reference),
            Purpose::List { next_offset } => self.on_listed(completion.result, next_offset),
            Purpose::ExpandArchive { key } => self.on_archive_expanded(completion.result, key),
            Purpose::CheckArchive { reference, keys } => {
                self.on_archive_checked(completion.result, reference, keys)
            }
            Purpose::Delete { key } => self.on_deleted(completion.result, key),
        }
        self.pump(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now_seen = self.now_seen.max(now);
        if self.backoff_until.is_some_and(|at| at <= now) {
            self.backoff_until = None;
        }
        self.pump(now);
    }

    /// The next effect to execute.
    pub fn poll_effect(&mut self) -> Option<TierEffect> {
        self.effects.pop_front()
    }

    /// When [`Archiver::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !matches!(self.state, ArchiverState::Active) {
            return self.backoff_until;
        }
        if let Some(at) = self.backoff_until {
            return Some(at);
        }
        let lag_due = self.pending_since.map(|since| since + self.config.upload_lag);
        let manifest_due = (self.manifest_dirty()
            && !self.manifest_in_flight
            && self.manifest_put_not_before > self.now_seen)
            .then_some(self.manifest_put_not_before);
        let due = [lag_due, manifest_due]
            .into_iter()
            .flatten()
            .fold(self.next_housekeeping, Instant::min);
        Some(due)
    }

    // ---- starting operations ----

    fn start(&mut self, purpose: Purpose, effect: impl FnOnce(OpId) -> TierEffect) -> OpId {
        assert!(self.effects.len() < MAX_QUEUED_EFFECTS, "effects not polled");
        let op = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(op, purpose);
        self.effects.push_back(effect(op));
        op
    }

    fn new_revision(&mut self) -> Revision {
        let revision = Revision {
            uploader_term: self.term,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        revision
    }

    fn on_store_error(&mut self, now: Instant, error: &StoreError) {
        self.metrics.store_errors += 1;
        match error {
            StoreError::Timeout => self.metrics.timeouts += 1,
            StoreError::Throttled => self.metrics.throttled += 1,
            _ => {}
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let exponent = self.consecutive_failures.saturating_sub(1).min(20);
        let delay = self
            .config
            .backoff_initial
            .saturating_mul(1u32 << exponent)
            .min(self.config.backoff_max);
        let jitter_ns = self.rng.next_u64() % (delay.as_nanos() as u64 / 2 + 1);
        let until = now + delay + Duration::from_nanos(jitter_ns);
        self.backoff_until = Some(self.backoff_until.map_or(until, |at| at.max(until)));
    }

    /// Starts whatever may start now.
    fn pump(&mut self, now: Instant) {
        if self.backoff_until.is_some_and(|at| at > now) {
            return;
        }
        self.backoff_until = None;
        match self.state {
            ArchiverState::ManifestLost { .. } if self.ops.is_empty() => {
                // The retry after `backoff_max`: maybe the manifest is back.
                self.state = ArchiverState::Loading;
                self.load();
                return;
            }
            ArchiverState::Loading => {
                if self.ops.is_empty() {
                    self.load();
                }
                return;
            }
            ArchiverState::Active => {}
            _ => return,
        }
        self.maybe_record_recovery();
        self.maybe_mark_lineage();
        self.maybe_spill();
        self.maybe_upload(now);
        self.maybe_put_manifest(now);
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + self.config.housekeeping_interval;
            self.apply_total_retention();
            self.maybe_list_orphans();
        }
        self.maybe_expand_archive();
        self.start_deletes();
    }

    // ---- loading ----

    fn load(&mut self) {
        let key = self.path.manifest_key();
        self.start(Purpose::Load, |op| TierEffect::Get { op, key, range: None });
    }

    fn on_loaded(&mut self, result: Result<StoreReply, StoreError>) {
        match result {
            Ok(StoreReply::Got(bytes)) => match PartitionManifest::decode(&self.path, &bytes) {
                Ok(manifest) if manifest.uploader_term > self.term => {
                    self.state = ArchiverState::Fenced {
                        by_term: manifest.uploader_term,
                    };
                }
                Ok(manifest) => {
                    // A restart within the same term must not reuse a revision the
                    // manifest names.
                    let named = manifest
                        .segments
                        .iter()
                        .map(|s| s.revision)
                        .chain(manifest.archives.iter().map(|a| a.revision));
                    if let Some(max_seq) = named
                        .filter(|r| r.uploader_term == self.term)
                        .map(|r| r.seq)
                        .max()
                    {
                        self.next_seq = self.next_seq.max(max_seq + 1);
                    }
                    self.durable_version = Some(manifest.version);
                    self.durable_next_offset = manifest.next_offset();
                    self.manifest = manifest;
                    self.state = ArchiverState::Active;
                }
                Err(error) => self.state = ArchiverState::Failed(error),
            },
            Err(StoreError::NotFound) => {
                // A fresh prefix, or a lost manifest: the marker tells.
                let key = self.path.lineage_key();
                self.start(Purpose::LoadLineage, |op| TierEffect::Get {
                    op,
                    key,
                    range: None,
                });
            }
            // Retried by `pump` after the backoff.
            Ok(_) | Err(_) => {}
        }
    }

    /// The lineage marker's get answered, after the manifest's found nothing.
    fn on_lineage_loaded(&mut self, now: Instant, result: Result<StoreReply, StoreError>) {
        // PLANTED BUG (sim-bugs): a lost manifest taken for a fresh prefix.
        #[cfg(feature = "sim-bugs")]
        if self.planted.ignore_lineage_marker && matches!(result, Ok(StoreReply::Got(_))) {
            self.state = ArchiverState::Active;
            return;
        }
        match result {
            // No manifest was ever relied on here: start a new lineage.
            Err(StoreError::NotFound) => {
                self.state = ArchiverState::Active;
                if self.first_writer {
                    // Nobody else ever had a manifest to put here.
                    self.manifest_put_not_before = self.manifest_put_not_before.min(now);
                }
            }
            Ok(StoreReply::Got(bytes)) => match LineageMarker::decode(&self.path, &bytes) {
                Ok(marker) => {
                    self.metrics.manifest_lost += 1;
                    self.state = ArchiverState::ManifestLost {
                        marked_by_term: marker.writer_term,
                    };
                    let retry = now + self.config.backoff_max;
                    self.backoff_until = Some(self.backoff_until.map_or(retry, |at| at.max(retry)));
                }
                Err(error) => self.state = ArchiverState::Failed(error),
            },
            // Retried by `pump` after the backoff, from the manifest's get.
            Ok(_) | Err(_) => {}
        }
    }

    // ---- the recovery point ----

    fn maybe_record_recovery(&mut self) {
        let Some(point) = self.recovery_point else {
            return;
        };
        if self.manifest.recovery.map(|p| p.incarnation) != Some(point.incarnation) {
            self.manifest.recovery = Some(point);
            self.changed();
        }
    }

    // ---- the lineage marker ----

    /// Puts the lineage marker once a manifest is durable (ours, or the one loaded).
    fn maybe_mark_lineage(&mut self) {
        if self.lineage_marked || self.lineage_put_in_flight || self.durable_version.is_none() {
            return;
        }
        let key = self.path.lineage_key();
        let marker = LineageMarker {
            path: self.path.clone(),
            writer_term: self.term,
        };
        let body = ObjectBody::Bytes(Bytes::from(marker.encode()));
        self.start(Purpose::MarkLineage, |op| TierEffect::Put { op, key, body });
        self.lineage_put_in_flight = true;
    }

    fn on_lineage_marked(&mut self, result: Result<StoreReply, StoreError>) {
        self.lineage_put_in_flight = false;
        if result.is_ok() {
            self.lineage_marked = true;
            self.metrics.lineage_marks += 1;
        }
        // Otherwise put again after the backoff (a timed-out put that lands late puts
        // the same meaning: nothing to wait out).
    }

    // ---- uploads ----

    fn maybe_upload(&mut self, now: Instant) {
        if self.upload.is_some() {
            return;
        }
        let next = self.manifest.next_offset().unwrap_or(self.view.start_offset);
        let Some(segment) = self
            .view
            .segments
            .iter()
            .find(|s| s.id.base_offset <= next && next < s.next_offset)
            .cloned()
        else {
            self.pending_since = None;
            if self
                .view
                .segments
                .iter()
                .any(|s| s.id.base_offset > next && s.size_bytes > 0)
            {
                self.metrics.blocked_by_gap += 1;
            }
            return;
        };
        if !segment.closed {
            let since = *self.pending_since.get_or_insert(now);
            if now < since + self.config.upload_lag {
                return;
            }
        }
        self.pending_since = None;
        self.start_upload(&segment, next);
    }

    fn start_upload(&mut self, segment: &LocalSegmentView, next: i64) {
        let Some((entry, _)) = segment.index.lookup_offset(next) else {
            return; // an index without its first batch: wait for a better view
        };
        let position = u64::from(entry.position);
        if position >= segment.size_bytes {
            return;
        }
        let mut index = segment.index.clone();
        index.truncate_at_position(segment.size_bytes);
        let index_bytes = index.encode(
            segment.id,
            segment.size_bytes,
            segment.next_offset,
            segment.max_timestamp_ms,
        );
        let meta = SegmentMeta {
            base_offset: next,
            last_offset: segment.next_offset - 1,
            term: segment.id.term,
            size_bytes: segment.size_bytes - position,
            max_timestamp_ms: segment.max_timestamp_ms,
            local_segment: segment.id,
            object_position_bytes: position,
            revision: self.new_revision(),
        };
        let (data_key, index_key) = (self.path.segment_key(&meta), self.path.index_key(&meta));
        self.live_revisions.insert(meta.revision);
        self.start(Purpose::UploadData, |op| TierEffect::Put {
            op,
            key: data_key,
            body: ObjectBody::LocalSegment {
                segment: segment.id,
                position_bytes: position,
                len_bytes: meta.size_bytes,
            },
        });
        self.start(Purpose::UploadIndex, |op| TierEffect::Put {
            op,
            key: index_key,
            body: ObjectBody::Bytes(index_bytes),
        });
        self.metrics.uploads_started += 1;
        self.upload = Some(Upload {
            meta,
            data_done: None,
            index_done: None,
        });
    }

    fn on_upload_part(&mut self, ok: bool, is_data: bool) {
        let Some(upload) = self.upload.as_mut() else {
            return;
        };
        if is_data {
            upload.data_done = Some(ok);
        } else {
            upload.index_done = Some(ok);
        }
        let (Some(data_ok), Some(index_ok)) = (upload.data_done, upload.index_done) else {
            return;
        };
        let meta = upload.meta;
        self.upload = None;
        self.live_revisions.remove(&meta.revision);
        if data_ok && index_ok && self.manifest.next_offset().unwrap_or(meta.base_offset) == meta.base_offset
        {
            if self.manifest.next_offset().is_none() {
                self.manifest.start_offset = meta.base_offset;
            }
            self.manifest.segments.push(meta);
            self.changed();
            self.metrics.uploads_completed += 1;
            self.metrics.uploaded_bytes += meta.size_bytes;
        } else {
            // Never named by a manifest: both keys are orphans, whatever the store did.
            self.metrics.upload_failures += 1;
            let keys = [self.path.segment_key(&meta), self.path.index_key(&meta)];
            for key in keys {
                self.queue_delete(key);
            }
        }
    }

    fn changed(&mut self) {
        self.manifest.version += 1;
        self.manifest.uploader_term = self.term;
    }

    // ---- the manifest ----

    fn manifest_dirty(&self) -> bool {
        self.durable_version != Some(self.manifest.version)
    }

    fn maybe_put_manifest(&mut self, now: Instant) {
        if self.manifest_in_flight || !self.manifest_dirty() || self.manifest.version == 0 {
            return;
        }
        if now < self.manifest_put_not_before {
            return;
        }
        let purpose = Purpose::Manifest {
            version: self.manifest.version,
            next_offset: self.manifest.next_offset(),
        };
        let key = self.path.manifest_key();
        let body = ObjectBody::Bytes(Bytes::from(self.manifest.encode()));
        self.start(purpose, |op| TierEffect::Put { op, key, body });
        self.manifest_in_flight = true;
    }

    fn on_manifest_put(
        &mut self,
        result: Result<StoreReply, StoreError>,
        version: u64,
        next_offset: Option<i64>,
    ) {
        self.manifest_in_flight = false;
        if result == Err(StoreError::Timeout) {
            // It may still land: the next put must land after it.
            self.manifest_put_not_before = self.now_seen + self.config.store_request_lifetime;
        }
        if result.is_err() {
            self.metrics.manifest_put_failures += 1;
            return; // put again (a newer version) after the backoff
        }
        self.metrics.manifest_puts += 1;
        assert!(
            self.durable_version.is_none_or(|v| v < version),
            "manifest versions only move forward"
        );
        self.durable_version = Some(version);
        self.durable_next_offset = next_offset;
        while self.awaiting_durable.front().is_some_and(|(v, _)| *v <= version) {
            let Some((_, garbage)) = self.awaiting_durable.pop_front() else {
                break;
            };
            self.queue_garbage(garbage);
        }
    }

    // ---- spillover ----

    /// Spills the oldest `archive_entries` recent segments once there are more than
    /// `spill_threshold_entries` — after an orphan-GC listing has covered them (an orphan
    /// inside an archived range can no longer be told from a named object without
    /// loading the archive), or regardless at twice the threshold (the memory bound).
    fn maybe_spill(&mut self) {
        let recent = self.manifest.segments.len();
        if self.spill_in_flight || recent <= self.config.spill_threshold_entries {
            return;
        }
        let Some(last) = self.manifest.segments.get(self.config.archive_entries - 1) else {
            return;
        };
        if last.last_offset >= self.gc_covered_offset {
            if recent <= 2 * self.config.spill_threshold_entries {
                return;
            }
            self.metrics.spilled_before_gc += 1;
        }
        let archive = ArchivedManifest {
            path: self.path.clone(),
            segments: self.manifest.segments[..self.config.archive_entries].to_vec(),
        };
        let revision = self.new_revision();
        let Some(reference) = archive.reference(revision) else {
            return;
        };
        let key = self.path.archive_key(&reference);
        let body = ObjectBody::Bytes(Bytes::from(archive.encode()));
        self.live_revisions.insert(revision);
        self.start(Purpose::Spill { reference }, |op| TierEffect::Put {
            op,
            key,
            body,
        });
        self.spill_in_flight = true;
    }

    fn on_spilled(&mut self, result: Result<StoreReply, StoreError>, reference: ArchiveRef) {
        self.spill_in_flight = false;
        self.live_revisions.remove(&reference.revision);
        let count = reference.segment_count as usize;
        let still_oldest = self.manifest.segments.first().map(|s| s.base_offset)
            == Some(reference.base_offset)
            && self.manifest.segments.get(count - 1).map(|s| s.last_offset) == Some(reference.last_offset);
        if result.is_ok() && still_oldest {
            self.manifest.segments.drain(..count);
            self.manifest.archives.push(reference);
            self.archive_written_at.insert(reference.revision, self.now_seen);
            self.changed();
            self.metrics.spills += 1;
        } else {
            let key = self.path.archive_key(&reference);
            self.queue_delete(key);
        }
    }

    // ---- total retention and garbage ----

    fn apply_total_retention(&mut self) {
        if self.spill_in_flight || !self.awaiting_durable.is_empty() {
            return;
        }
        let room = self.config.max_pending_deletes.saturating_sub(self.deletes.len());
        let per_archive = 2 * self.config.archive_entries + 1;
        let Some(cut) = retention::remote_cut(
            &self.manifest,
            &self.config,
            self.view.now_wall_ms,
            usize::from(room >= per_archive && !self.expand_in_flight),
            room / 2,
        ) else {
            return;
        };
        let archives: Vec<ArchiveRef> = self.manifest.archives.drain(..cut.archives).collect();
        for archive in &archives {
            self.archive_written_at.remove(&archive.revision);
        }
        let segments: Vec<SegmentMeta> = self.manifest.segments.drain(..cut.segments).collect();
        self.manifest.start_offset = cut.start_offset;
        self.changed();
        let version = self.manifest.version;
        for archive in &archives {
            let key = self.path.archive_key(archive);
            self.awaiting_durable.push_back((version, Garbage::Archive(key)));
        }
        for segment in &segments {
            for key in [self.path.segment_key(segment), self.path.index_key(segment)] {
                self.awaiting_durable.push_back((version, Garbage::Key(key)));
            }
        }
        self.metrics.archives_expired += archives.len() as u64;
        self.metrics.segments_expired += segments.len() as u64;
    }

    fn queue_delete(&mut self, key: String) {
        self.queue_garbage(Garbage::Key(key));
    }

    fn queue_garbage(&mut self, garbage: Garbage) {
        if self.deletes.len() < self.config.max_pending_deletes {
            self.deletes.push_back(garbage);
        } else {
            self.metrics.deletes_dropped += 1;
        }
    }

    /// Expands one expired archived manifest at a time (a get, then its segments' keys
    /// join the queue), when the queue has room for all of them.
    fn maybe_expand_archive(&mut self) {
        if self.expand_in_flight {
            return;
        }
        let Some(at) = self.deletes.iter().position(|g| matches!(g, Garbage::Archive(_))) else {
            return;
        };
        if self.config.max_pending_deletes - self.deletes.len() < 2 * self.config.archive_entries {
            return;
        }
        let Some(Garbage::Archive(key)) = self.deletes.remove(at) else {
            return;
        };
        let get_key = key.clone();
        self.start(Purpose::ExpandArchive { key }, |op| TierEffect::Get {
            op,
            key: get_key,
            range: None,
        });
        self.expand_in_flight = true;
    }

    fn on_archive_expanded(&mut self, result: Result<StoreReply, StoreError>, key: String) {
        self.expand_in_flight = false;
        match result {
            Ok(StoreReply::Got(bytes)) => {
                if let Ok(archive) = ArchivedManifest::decode(&self.path, &bytes) {
                    for segment in &archive.segments {
                        self.queue_delete(self.path.segment_key(segment));
                        self.queue_delete(self.path.index_key(segment));
                    }
                }
                // An unreadable archive's segments are left to the orphan GC (they lie
                // below the start offset, outside every archive).
                self.queue_delete(key);
            }
            Err(StoreError::NotFound) => {}
            _ => self.queue_garbage(Garbage::Archive(key)),
        }
    }

    fn start_deletes(&mut self) {
        while self.deletes_in_flight < self.config.max_deletes_in_flight {
            let Some(at) = self.deletes.iter().position(|g| matches!(g, Garbage::Key(_))) else {
                return;
            };
            let Some(Garbage::Key(key)) = self.deletes.remove(at) else {
                return;
            };
            let delete_key = key.clone();
            self.start(Purpose::Delete { key }, |op| TierEffect::Delete {
                op,
                key: delete_key,
            });
            self.deletes_in_flight += 1;
        }
    }

    fn on_deleted(&mut self, result: Result<StoreReply, StoreError>, key: String) {
        self.deletes_in_flight -= 1;
        match result {
            Ok(_) | Err(StoreError::NotFound) => self.metrics.objects_deleted += 1,
            Err(_) => self.queue_delete(key),
        }
    }

    // ---- orphan GC by listing ----

    /// Whether "not named by the in-memory manifest" implies "not named by the store's":
    /// the in-memory manifest differs from the durable one only by additions (uploads,
    /// spills) unless a retention cut is waiting to become durable.
    fn settled(&self) -> bool {
        self.awaiting_durable.is_empty()
    }

    fn maybe_list_orphans(&mut self) {
        if self.list_in_flight || !self.lineage_marked || !self.settled() || !self.no_manifest_put_may_land()
        {
            return;
        }
        let prefix = self.path.prefix();
        let next_offset = self.manifest.next_offset();
        self.start(Purpose::List { next_offset }, |op| TierEffect::List {
            op,
            prefix,
        });
        self.list_in_flight = true;
    }

    fn on_listed(&mut self, result: Result<StoreReply, StoreError>, next_at_issue: Option<i64>) {
        self.list_in_flight = false;
        let Ok(StoreReply::Listed(keys)) = result else {
            return;
        };
        if !self.settled() || !self.no_manifest_put_may_land() {
            return; // the manifest moved meanwhile; list again next round
        }
        let room = self.config.max_pending_deletes / 2;
        if keys.iter().filter(|k| self.is_orphan(k)).count() <= room.saturating_sub(self.deletes.len()) {
            // Every orphan below this offset is now queued: it may be archived.
            self.gc_covered_offset = self.gc_covered_offset.max(next_at_issue.unwrap_or(i64::MIN));
        }
        for key in &keys {
            if self.deletes.len() >= self.config.max_pending_deletes / 2 {
                break;
            }
            if self.is_orphan(key) {
                self.queue_orphan(key.clone());
            }
        }
        self.maybe_check_archive(keys);
    }

    fn queue_orphan(&mut self, key: String) {
        let queued = self
            .deletes
            .iter()
            .any(|g| matches!(g, Garbage::Key(k) if *k == key));
        let deleting = self
            .ops
            .values()
            .any(|p| matches!(p, Purpose::Delete { key: k } if *k == key));
        if !queued && !deleting {
            self.metrics.orphans_found += 1;
            self.queue_delete(key);
        }
    }

    /// Orphans inside archived ranges (an upload that died before its range spilled, or
    /// a timed-out put that landed late) cannot be told from named objects without the
    /// archive. Unchecked archives are checked in order, once no put sent before they
    /// were written can still land: by counting the listed objects in their range, and
    /// by downloading the first one whose range holds more objects than it names (one
    /// download per listing).
    fn maybe_check_archive(&mut self, keys: Vec<String>) {
        if self.archive_check_in_flight {
            return;
        }
        // Segment objects by first offset. An archive whose range holds exactly the
        // objects it names (two per segment, and a manifest never names a missing one)
        // hides no orphan: it is checked without a download.
        let mut listed: Vec<(i64, String)> = keys
            .into_iter()
            .filter_map(|k| match self.path.parse_key(&k) {
                Some(ObjectName::Segment {
                    base_offset,
                    revision,
                    ..
                }) if !self.is_live(revision) => Some((base_offset, k)),
                _ => None,
            })
            .collect();
        listed.sort();
        let mut through = self.archive_gc_through;
        let mut to_download = None;
        let start = self.archive_gc_through;
        for archive in self.manifest.archives.iter().filter(|a| a.last_offset >= start) {
            let written_at = self
                .archive_written_at
                .get(&archive.revision)
                .copied()
                .unwrap_or(self.started_at);
            if self.now_seen < written_at + self.config.store_request_lifetime {
                break; // a put sent before it was written may still land in its range
            }
            let from = listed.partition_point(|(base, _)| *base < archive.base_offset);
            let to = listed.partition_point(|(base, _)| *base <= archive.last_offset);
            if to - from <= 2 * archive.segment_count as usize {
                through = archive.last_offset + 1;
                continue;
            }
            let in_range: Vec<String> = listed[from..to]
                .iter()
                .map(|(_, k)| k.clone())
                .take(self.config.max_pending_deletes)
                .collect();
            to_download = Some((*archive, in_range));
            break;
        }
        self.archive_gc_through = through;
        let checked: Vec<Revision> = self
            .manifest
            .archives
            .iter()
            .filter(|a| a.last_offset < through)
            .map(|a| a.revision)
            .collect();
        for revision in checked {
            self.archive_written_at.remove(&revision);
        }
        let Some((archive, in_range)) = to_download else {
            return;
        };
        let key = self.path.archive_key(&archive);
        self.start(
            Purpose::CheckArchive {
                reference: archive,
                keys: in_range,
            },
            |op| TierEffect::Get { op, key, range: None },
        );
        self.archive_check_in_flight = true;
    }

    fn on_archive_checked(
        &mut self,
        result: Result<StoreReply, StoreError>,
        reference: ArchiveRef,
        keys: Vec<String>,
    ) {
        self.archive_check_in_flight = false;
        let Ok(StoreReply::Got(bytes)) = result else {
            return;
        };
        let Ok(archive) = ArchivedManifest::decode(&self.path, &bytes) else {
            return; // unreadable: never delete on its word
        };
        if !self.manifest.archives.contains(&reference) || !self.no_manifest_put_may_land() {
            return;
        }
        for key in keys {
            let Some(ObjectName::Segment {
                base_offset,
                revision,
                ..
            }) = self.path.parse_key(&key)
            else {
                continue;
            };
            let named = archive
                .find(base_offset)
                .is_some_and(|s| s.base_offset == base_offset && s.revision == revision);
            if !named && !self.is_live(revision) {
                self.queue_orphan(key);
            }
        }
        self.archive_gc_through = self.archive_gc_through.max(reference.last_offset + 1);
        // More archives may be waiting: list again at once rather than a round later.
        self.next_housekeeping = self.next_housekeeping.min(self.now_seen);
        self.archive_written_at.remove(&reference.revision);
    }

    fn is_orphan(&self, key: &str) -> bool {
        let Some(name) = self.path.parse_key(key) else {
            return false; // not ours to judge
        };
        match name {
            ObjectName::Manifest | ObjectName::Lineage => false,
            ObjectName::Archive {
                base_offset,
                last_offset,
                revision,
            } => {
                !self.is_live(revision)
                    && !self.manifest.archives.iter().any(|a| {
                        a.base_offset == base_offset && a.last_offset == last_offset && a.revision == revision
                    })
            }
            ObjectName::Segment {
                base_offset,
                revision,
                ..
            } => {
                if self.is_live(revision) {
                    return false;
                }
                match self.manifest.locate(base_offset) {
                    Some(Location::Segment(s)) => s.base_offset != base_offset || s.revision != revision,
                    // Inside an archived range: its archive may name it (not loaded here).
                    Some(Location::Archive(_)) => false,
                    // Below the start offset (expired) or beyond the end (a dead upload).
                    None => true,
                }
            }
        }
    }

    /// No manifest put other than ours in flight can still land in the store (a
    /// previous leader's, or ours that timed out), so the store's manifest names nothing
    /// the in-memory one does not (beyond pending retention, see `settled`).
    fn no_manifest_put_may_land(&self) -> bool {
        self.now_seen >= self.manifest_put_not_before
    }

    fn is_live(&self, revision: Revision) -> bool {
        revision.uploader_term > self.term || self.live_revisions.contains(&revision)
    }
}

#[cfg(test)]
mod tests;
