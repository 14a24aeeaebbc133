//! The archiver against an in-test object store: ordering of durability, the upload lag,
//! failed uploads and their orphans, leadership changes, retention, spillover's memory
//! bound, and a property test with random store faults.

use super::*;
use crate::log::batch::BatchHeader;
use crate::log::builder::{build_batch, BatchOptions, NewRecord};
use crate::tier::manifest::Location;
use proptest::prelude::*;

fn path() -> PartitionPath {
    PartitionPath {
        topic: "events".into(),
        partition: 0,
        revision: 1,
    }
}

fn config() -> TierConfig {
    TierConfig {
        upload_lag: Duration::from_millis(500),
        local_target_bytes: Some(0),
        local_target_ms: None,
        retention_bytes: None,
        retention_ms: None,
        spill_threshold_entries: 8,
        archive_entries: 4,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        housekeeping_interval: Duration::from_millis(1_000),
        max_pending_deletes: 64,
        max_deletes_in_flight: 4,
        store_request_lifetime: Duration::ZERO,
    }
}

/// One batch of `count` records at `base` in `term`: its header and bytes.
fn batch(base: i64, count: usize, term: i64) -> (BatchHeader, Bytes) {
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord::value(vec![b'x'; 20], base + i as i64))
        .collect();
    let bytes = build_batch(
        &records,
        BatchOptions {
            base_offset: base,
            leader_epoch: term as i32,
            ..BatchOptions::default()
        },
    );
    (BatchHeader::parse(&bytes).unwrap(), bytes)
}

/// A local log: segments of `per_segment` one-record batches.
#[derive(Default)]
struct LocalLog {
    segments: Vec<(LocalSegmentView, BytesMut)>,
    start_offset: i64,
}

use bytes::BytesMut;

impl LocalLog {
    fn append(&mut self, term: i64, per_segment: usize, closed_after: bool) {
        let next = self.segments.last().map_or(0, |(s, _)| s.next_offset);
        let roll = self
            .segments
            .last()
            .is_none_or(|(s, _)| s.closed || s.id.term != term);
        if roll {
            if let Some((last, _)) = self.segments.last_mut() {
                last.closed = true;
            }
            let id = SegmentId {
                base_offset: next,
                term,
            };
            self.segments.push((
                LocalSegmentView {
                    id,
                    size_bytes: 0,
                    next_offset: next,
                    max_timestamp_ms: -1,
                    closed: false,
                    index: SparseIndex::new(next),
                },
                BytesMut::new(),
            ));
        }
        let (view, data) = self.segments.last_mut().unwrap();
        for _ in 0..per_segment {
            let (header, bytes) = batch(view.next_offset, 1, term);
            view.max_timestamp_ms = view.max_timestamp_ms.max(header.max_timestamp_ms);
            view.index
                .on_append(&header, view.size_bytes, view.max_timestamp_ms, 100);
            view.size_bytes += bytes.len() as u64;
            view.next_offset = header.next_offset();
            data.extend_from_slice(&bytes);
        }
        view.closed = closed_after;
    }

    fn view(&self) -> LocalLogView {
        LocalLogView {
            start_offset: self.start_offset,
            segments: self.segments.iter().map(|(s, _)| s.clone()).collect(),
            now_wall_ms: 0,
        }
    }

    fn bytes(&self, id: SegmentId, position: u64, len: u64) -> Option<Bytes> {
        let (_, data) = self.segments.iter().find(|(s, _)| s.id == id)?;
        Some(Bytes::copy_from_slice(
            data.get(position as usize..(position + len) as usize)?,
        ))
    }

    fn delete_below(&mut self, offset: i64) {
        self.segments.retain(|(s, _)| s.id.base_offset >= offset);
        self.start_offset = offset;
    }
}

/// A store that executes effects at once; `fault` may fail an operation (a timeout is
/// applied or not by the second flag).
#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Bytes>,
}

impl Store {
    fn execute(
        &mut self,
        local: &LocalLog,
        effect: &TierEffect,
        fault: Option<(StoreError, bool)>,
    ) -> StoreCompletion {
        let op = effect.op();
        let apply = fault
            .as_ref()
            .is_none_or(|(e, applied)| *e == StoreError::Timeout && *applied);
        let result = match effect {
            TierEffect::Put { key, body, .. } => {
                let bytes = match body {
                    ObjectBody::Bytes(b) => Some(b.clone()),
                    ObjectBody::LocalSegment {
                        segment,
                        position_bytes,
                        len_bytes,
                    } => local.bytes(*segment, *position_bytes, *len_bytes),
                };
                match bytes {
                    None => Err(StoreError::LocalReadFailed),
                    Some(bytes) => {
                        if apply {
                            self.objects.insert(key.clone(), bytes);
                        }
                        Ok(StoreReply::Put)
                    }
                }
            }
            TierEffect::Get { key, .. } => self
                .objects
                .get(key)
                .cloned()
                .map(StoreReply::Got)
                .ok_or(StoreError::NotFound),
            TierEffect::Delete { key, .. } => {
                if apply {
                    self.objects.remove(key);
                }
                Ok(StoreReply::Deleted)
            }
            TierEffect::List { prefix, .. } => Ok(StoreReply::Listed(
                self.objects
                    .keys()
                    .filter(|k| k.starts_with(prefix.as_str()))
                    .cloned()
                    .collect(),
            )),
        };
        let result = match fault {
            Some((error, _)) => Err(error),
            None => result,
        };
        StoreCompletion { op, result }
    }

    /// Every object the store's manifest (and its archives) names exists.
    fn check_manifest_names_only_existing_objects(&self) -> Result<(), String> {
        let p = path();
        let Some(bytes) = self.objects.get(&p.manifest_key()) else {
            return Ok(());
        };
        let m = PartitionManifest::decode(&p, bytes).map_err(|e| e.to_string())?;
        let mut segments = m.segments.clone();
        for a in &m.archives {
            let key = p.archive_key(a);
            let bytes = self.objects.get(&key).ok_or(format!("missing archive {key}"))?;
            segments.extend(
                ArchivedManifest::decode(&p, bytes)
                    .map_err(|e| e.to_string())?
                    .segments,
            );
        }
        for s in &segments {
            for key in [p.segment_key(s), p.index_key(s)] {
                if !self.objects.contains_key(&key) {
                    return Err(format!("manifest v{} names missing {key}", m.version));
                }
            }
        }
        Ok(())
    }
}

/// Runs effects until none is left, all succeeding.
fn settle(a: &mut Archiver, store: &mut Store, local: &LocalLog, now: Instant) {
    while let Some(effect) = a.poll_effect() {
        let completion = store.execute(local, &effect, None);
        a.handle_completion(now, completion);
    }
}

fn active(a: &mut Archiver, store: &mut Store, local: &LocalLog, now: Instant) {
    settle(a, store, local, now);
    assert_eq!(a.state(), &ArchiverState::Active);
}

#[test]
fn segment_objects_then_manifest_then_local_deletion() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let now = Instant::from_millis(1);
    let mut a = Archiver::new(config(), path(), 1, 7, now).unwrap();
    active(&mut a, &mut store, &local, now);
    local.append(1, 5, true);
    local.append(1, 5, false);
    a.on_local_log(now, local.view());
    // The closed segment goes at once: data and index, nothing else.
    let puts: Vec<TierEffect> = std::iter::from_fn(|| a.poll_effect()).collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(puts
        .iter()
        .all(|e| matches!(e, TierEffect::Put { key, .. } if key.starts_with("events/0_1/0-1-1.0."))));
    // Data done, index not yet: no manifest.
    let c = store.execute(&local, &puts[0], None);
    a.handle_completion(now, c);
    assert_eq!(a.poll_effect(), None);
    let c = store.execute(&local, &puts[1], None);
    a.handle_completion(now, c);
    let manifest_put = a.poll_effect().unwrap();
    assert!(matches!(&manifest_put, TierEffect::Put { key, .. } if key == "events/0_1/manifest"));
    assert_eq!(a.uploaded_offset(), Some(5));
    assert_eq!(
        a.removable_offset(),
        None,
        "not durable before the manifest put completes"
    );
    let backlog = a.backlog();
    assert_eq!(
        (backlog.not_uploaded_offsets, backlog.not_durable_offsets),
        (5, 10)
    );
    assert!(backlog.not_uploaded_bytes > 0);
    assert_eq!(a.local_retention(&local.view()), None);
    let c = store.execute(&local, &manifest_put, None);
    a.handle_completion(now, c);
    // The first durable manifest is relied on only once the lineage marker is durable.
    assert_eq!(a.removable_offset(), None);
    let marker_put = a.poll_effect().unwrap();
    assert!(matches!(&marker_put, TierEffect::Put { key, .. } if key == "events/0_1/lineage"));
    let c = store.execute(&local, &marker_put, None);
    a.handle_completion(now, c);
    assert_eq!(a.removable_offset(), Some(5));
    assert_eq!(a.local_retention(&local.view()), Some(5));
    store.check_manifest_names_only_existing_objects().unwrap();
    // The active segment waits for the lag.
    settle(&mut a, &mut store, &local, now);
    assert_eq!(a.uploaded_offset(), Some(5));
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_millis(500)));
    let later = now + Duration::from_millis(500);
    a.handle_timeout(later);
    settle(&mut a, &mut store, &local, later);
    assert_eq!(a.uploaded_offset(), Some(10));
    assert_eq!(a.removable_offset(), Some(10));
    // More data in the active segment: a second object continues at offset 10.
    local.append(1, 3, true);
    a.on_local_log(later, local.view());
    settle(&mut a, &mut store, &local, later);
    let m = a.manifest().clone();
    assert_eq!(
        m.segments
            .iter()
            .map(|s| (s.base_offset, s.last_offset))
            .collect::<Vec<_>>(),
        vec![(0, 4), (5, 9), (10, 12)]
    );
    assert!(m.segments[2].object_position_bytes > 0 && m.segments[2].local_segment.base_offset == 5);
    assert_eq!(a.metrics().uploads_completed, 3);
}

#[test]
fn failed_uploads_get_new_keys_and_their_orphans_are_deleted() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let now = Instant::from_millis(1);
    let mut a = Archiver::new(config(), path(), 2, 7, now).unwrap();
    active(&mut a, &mut store, &local, now);
    local.append(2, 4, true);
    a.on_local_log(now, local.view());
    let data = a.poll_effect().unwrap();
    let index = a.poll_effect().unwrap();
    // The data put times out but happened; the index put fails.
    let c = store.execute(&local, &data, Some((StoreError::Timeout, true)));
    a.handle_completion(now, c);
    let c = store.execute(&local, &index, Some((StoreError::Unavailable, false)));
    a.handle_completion(now, c);
    assert_eq!(a.metrics().upload_failures, 1);
    assert!(store.objects.contains_key("events/0_1/0-2-2.0.log"));
    assert_eq!(a.poll_effect(), None, "backing off");
    let later = a.poll_timeout().unwrap();
    assert!(later > now);
    a.handle_timeout(later);
    settle(&mut a, &mut store, &local, later);
    assert!(
        !store.objects.contains_key("events/0_1/0-2-2.0.log"),
        "orphan deleted"
    );
    assert!(
        store.objects.contains_key("events/0_1/0-2-2.1.log"),
        "retried under a new revision"
    );
    assert_eq!(a.removable_offset(), Some(4));
    store.check_manifest_names_only_existing_objects().unwrap();
}

#[test]
fn a_new_leader_continues_from_the_manifest_and_fences_the_old_one() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let now = Instant::from_millis(1);
    let mut old = Archiver::new(config(), path(), 1, 7, now).unwrap();
    active(&mut old, &mut store, &local, now);
    local.append(1, 4, true);
    local.append(1, 4, true);
    old.on_local_log(now, local.view());
    settle(&mut old, &mut store, &local, now);
    assert_eq!(old.removable_offset(), Some(8));
    // An upload of the old leader dies half way (only its data object landed).
    local.append(1, 4, true);
    old.on_local_log(now, local.view());
    let data = old.poll_effect().unwrap();
    let c = store.execute(&local, &data, None);
    drop(c);
    drop(old);
    // The new leader (term 3) has the same log plus its own term.
    local.append(3, 2, false);
    let mut new = Archiver::new(config(), path(), 3, 8, now).unwrap();
    active(&mut new, &mut store, &local, now);
    assert_eq!(new.removable_offset(), Some(8));
    new.on_local_log(now, local.view());
    settle(&mut new, &mut store, &local, now);
    let later = now + Duration::from_secs(2);
    new.handle_timeout(later);
    settle(&mut new, &mut store, &local, later);
    let ranges: Vec<(i64, i64, i64)> = new
        .manifest()
        .segments
        .iter()
        .map(|s| (s.base_offset, s.last_offset, s.term))
        .collect();
    assert_eq!(ranges, vec![(0, 3, 1), (4, 7, 1), (8, 11, 1), (12, 13, 3)]);
    assert_eq!(new.manifest().uploader_term, 3);
    assert!(
        !store.objects.contains_key("events/0_1/8-1-1.2.log"),
        "the dead upload's object is an orphan, collected by listing"
    );
    assert!(new.metrics().orphans_found >= 1);
    store.check_manifest_names_only_existing_objects().unwrap();
    // A leader of an older term reading this manifest stops.
    let mut stale = Archiver::new(config(), path(), 2, 9, now).unwrap();
    settle(&mut stale, &mut store, &local, now);
    assert_eq!(stale.state(), &ArchiverState::Fenced { by_term: 3 });
    stale.on_local_log(now, local.view());
    assert_eq!(stale.poll_effect(), None);
}

/// A lost manifest (deleted, or the bucket / prefix is not the one it was written to):
/// the lineage marker says one was durable, so the archiver refuses to upload or
/// collect anything — every object stays — and resumes once the manifest is back.
#[test]
fn objects_without_a_manifest_are_never_collected() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let now = Instant::from_millis(1);
    let mut old = Archiver::new(config(), path(), 1, 7, now).unwrap();
    active(&mut old, &mut store, &local, now);
    local.append(1, 4, true);
    old.on_local_log(now, local.view());
    settle(&mut old, &mut store, &local, now);
    assert!(store.objects.contains_key(&path().lineage_key()));
    drop(old);
    // The manifest is lost (or the store is not the one the objects were written to).
    let manifest = store.objects.remove(&path().manifest_key()).unwrap();
    let named: Vec<String> = store.objects.keys().cloned().collect();
    assert!(!named.is_empty());
    local.append(3, 2, true);
    let mut new = Archiver::new(config(), path(), 3, 8, now).unwrap();
    settle(&mut new, &mut store, &local, now);
    assert_eq!(new.state(), &ArchiverState::ManifestLost { marked_by_term: 1 });
    assert_eq!(new.metrics().manifest_lost, 1);
    new.on_local_log(now, local.view());
    let mut at = now;
    for _ in 0..20 {
        at += Duration::from_millis(500);
        new.handle_timeout(at);
        new.on_local_log(at, local.view());
        while let Some(effect) = new.poll_effect() {
            assert!(
                matches!(&effect, TierEffect::Get { .. }),
                "only the load is retried: {effect:?}"
            );
            let completion = store.execute(&local, &effect, None);
            new.handle_completion(at, completion);
        }
        assert_eq!(new.removable_offset(), None);
        assert_eq!(new.local_retention(&local.view()), None);
    }
    assert!(new.metrics().manifest_lost > 1, "the load is retried");
    for key in &named {
        assert!(store.objects.contains_key(key), "{key} was deleted");
    }
    assert_eq!(new.metrics().orphans_found, 0);
    // The operator restores the manifest: the archiver continues from it.
    store.objects.insert(path().manifest_key(), manifest);
    at += Duration::from_millis(500);
    new.handle_timeout(at);
    settle(&mut new, &mut store, &local, at);
    assert_eq!(new.state(), &ArchiverState::Active);
    at += Duration::from_secs(2);
    new.handle_timeout(at);
    settle(&mut new, &mut store, &local, at);
    assert_eq!(new.removable_offset(), Some(6));
    for key in &named {
        assert!(store.objects.contains_key(key), "{key} was deleted");
    }
    store.check_manifest_names_only_existing_objects().unwrap();
}

/// What the naive protection leaked: a first upload that died before any manifest.
/// No manifest and no lineage marker — nothing was ever relied on — so the next
/// leader collects the dead upload's objects once its own manifest and marker are
/// durable.
#[test]
fn a_dead_first_upload_leaves_orphans_that_the_next_leader_collects() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let now = Instant::from_millis(1);
    let mut old = Archiver::new(config(), path(), 1, 7, now).unwrap();
    active(&mut old, &mut store, &local, now);
    local.append(1, 4, true);
    old.on_local_log(now, local.view());
    // Both objects land; the leader dies before its manifest put runs.
    for _ in 0..2 {
        let effect = old.poll_effect().unwrap();
        let completion = store.execute(&local, &effect, None);
        old.handle_completion(now, completion);
    }
    let manifest_put = old.poll_effect().unwrap();
    assert!(matches!(&manifest_put, TierEffect::Put { key, .. } if key.ends_with("/manifest")));
    drop(old);
    let dead: Vec<String> = store.objects.keys().cloned().collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    local.append(2, 2, true);
    let mut new = Archiver::new(config(), path(), 2, 8, now).unwrap();
    active(&mut new, &mut store, &local, now);
    new.on_local_log(now, local.view());
    settle(&mut new, &mut store, &local, now);
    let later = now + Duration::from_secs(2);
    new.handle_timeout(later);
    settle(&mut new, &mut store, &local, later);
    for key in &dead {
        assert!(!store.objects.contains_key(key), "{key} leaked");
    }
    assert_eq!(new.metrics().orphans_found, 2);
    assert!(store.objects.contains_key(&path().lineage_key()));
    assert_eq!(new.removable_offset(), Some(6));
    store.check_manifest_names_only_existing_objects().unwrap();
}

/// Until the lineage marker is durable nothing relies on the manifest: no local
/// deletion and no orphan GC (a manifest lost before its marker leaves all its data in
/// the local log).
#[test]
fn nothing_is_removable_or_collected_before_the_lineage_marker_is_durable() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let now = Instant::from_millis(1);
    let mut a = Archiver::new(config(), path(), 1, 7, now).unwrap();
    active(&mut a, &mut store, &local, now);
    // An object of a dead upload (an orphan once the marker is durable).
    store
        .objects
        .insert("events/0_1/0-1-1.99.log".into(), Bytes::from_static(b"x"));
    local.append(1, 4, true);
    a.on_local_log(now, local.view());
    let mut at = now;
    for _ in 0..10 {
        at += Duration::from_millis(700);
        a.handle_timeout(at);
        while let Some(effect) = a.poll_effect() {
            let marker = matches!(&effect, TierEffect::Put { key, .. } if key.ends_with("/lineage"));
            let fault = marker.then_some((StoreError::Unavailable, false));
            assert!(
                !matches!(effect, TierEffect::List { .. }),
                "listed before the marker"
            );
            let completion = store.execute(&local, &effect, fault);
            a.handle_completion(at, completion);
        }
        assert!(store.objects.contains_key(&path().manifest_key()));
        assert_eq!(a.removable_offset(), None);
        assert_eq!(a.local_retention(&local.view()), None);
    }
    assert!(store.objects.contains_key("events/0_1/0-1-1.99.log"));
    at += Duration::from_secs(2);
    a.handle_timeout(at);
    settle(&mut a, &mut store, &local, at);
    assert_eq!(a.removable_offset(), Some(4));
    assert_eq!(a.metrics().lineage_marks, 1);
    at += Duration::from_secs(2);
    a.handle_timeout(at);
    settle(&mut a, &mut store, &local, at);
    assert!(!store.objects.contains_key("events/0_1/0-1-1.99.log"));
}

/// A prefix written before lineage markers existed: the first leader that loads its
/// manifest marks it before relying on it.
#[test]
fn a_loaded_manifest_without_a_marker_is_marked_before_it_is_relied_on() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let now = Instant::from_millis(1);
    let mut old = Archiver::new(config(), path(), 1, 7, now).unwrap();
    active(&mut old, &mut store, &local, now);
    local.append(1, 4, true);
    old.on_local_log(now, local.view());
    settle(&mut old, &mut store, &local, now);
    drop(old);
    store.objects.remove(&path().lineage_key());
    let mut new = Archiver::new(config(), path(), 2, 8, now).unwrap();
    let load = new.poll_effect().unwrap();
    let c = store.execute(&local, &load, None);
    new.handle_completion(now, c);
    assert_eq!(new.state(), &ArchiverState::Active);
    assert_eq!(new.removable_offset(), None, "not before the marker");
    let mark = new.poll_effect().unwrap();
    assert!(matches!(&mark, TierEffect::Put { key, .. } if key.ends_with("/lineage")));
    let c = store.execute(&local, &mark, None);
    new.handle_completion(now, c);
    assert_eq!(new.removable_offset(), Some(4));
    let marker = LineageMarker::decode(&path(), &store.objects[&path().lineage_key()]).unwrap();
    assert_eq!(marker.writer_term, 2);
}

/// A marker that is not this partition's (or not a marker) stops the archiver, as an
/// unreadable manifest does.
#[test]
fn a_foreign_or_corrupted_marker_without_a_manifest_stops_the_archiver() {
    let (mut store, local) = (Store::default(), LocalLog::default());
    let mut other = path();
    other.partition = 1;
    let foreign = LineageMarker {
        path: other,
        writer_term: 4,
    };
    for bytes in [Bytes::from(foreign.encode()), Bytes::from_static(b"junk")] {
        store.objects.insert(path().lineage_key(), bytes);
        let now = Instant::from_millis(1);
        let mut a = Archiver::new(config(), path(), 5, 7, now).unwrap();
        settle(&mut a, &mut store, &local, now);
        assert!(matches!(a.state(), ArchiverState::Failed(_)), "{:?}", a.state());
    }
}

#[test]
fn a_corrupted_manifest_stops_uploads_without_overwriting_it() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    store
        .objects
        .insert(path().manifest_key(), Bytes::from_static(b"OXTM not really"));
    let now = Instant::from_millis(1);
    let mut a = Archiver::new(config(), path(), 1, 7, now).unwrap();
    settle(&mut a, &mut store, &local, now);
    assert!(matches!(a.state(), ArchiverState::Failed(_)));
    local.append(1, 3, true);
    a.on_local_log(now, local.view());
    assert_eq!(a.poll_effect(), None);
    assert_eq!(a.removable_offset(), None);
}

#[test]
fn total_retention_removes_from_the_manifest_first_then_the_objects() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let c = TierConfig {
        retention_bytes: Some(1),
        ..config()
    };
    let mut now = Instant::from_millis(1);
    let mut a = Archiver::new(c, path(), 1, 7, now).unwrap();
    active(&mut a, &mut store, &local, now);
    for _ in 0..20 {
        local.append(1, 2, true);
    }
    a.on_local_log(now, local.view());
    settle(&mut a, &mut store, &local, now);
    assert!(a.metrics().spills > 0);
    for _ in 0..10 {
        now += Duration::from_secs(1);
        a.handle_timeout(now);
        // Deletions happen only after the manifest that dropped them is durable: at every
        // step the store's manifest names only existing objects.
        while let Some(effect) = a.poll_effect() {
            let completion = store.execute(&local, &effect, None);
            a.handle_completion(now, completion);
            store.check_manifest_names_only_existing_objects().unwrap();
        }
    }
    let m = a.manifest();
    assert_eq!(m.segments.len(), 1, "only the last segment stays");
    assert!(m.archives.is_empty());
    assert_eq!(m.start_offset, 38);
    let left: Vec<&String> = store.objects.keys().collect();
    assert_eq!(
        left.len(),
        4,
        "manifest, lineage marker, one segment's data and index: {left:?}"
    );
}

/// A million segments: the in-memory manifest holds at most the spill threshold of
/// recent entries plus one reference per archive, never the million.
#[test]
fn a_million_segments_keep_memory_bounded_by_the_recent_manifest() {
    const SEGMENTS: i64 = 1_000_000;
    let c = TierConfig {
        spill_threshold_entries: 2_000,
        archive_entries: 1_000,
        max_pending_deletes: 4_096,
        upload_lag: Duration::ZERO,
        housekeeping_interval: Duration::from_secs(3_600),
        ..config()
    };
    let now = Instant::from_millis(1);
    let mut a = Archiver::new(c.clone(), path(), 1, 7, now).unwrap();
    let mut store = Store::default();
    let local = LocalLog::default();
    settle(&mut a, &mut store, &local, now);
    let (header, _) = batch(0, 1, 1);
    let mut held_manifest: Option<TierEffect> = None;
    let mut peak_entries = 0;
    let mut peak_recent = 0;
    for base in 0..SEGMENTS {
        let mut h = header;
        h.base_offset = base;
        let mut index = SparseIndex::new(base);
        index.on_append(&h, 0, 0, 100);
        let segment = LocalSegmentView {
            id: SegmentId {
                base_offset: base,
                term: 1,
            },
            size_bytes: h.size_bytes() as u64,
            next_offset: base + 1,
            max_timestamp_ms: 0,
            closed: true,
            index,
        };
        a.on_local_log(
            now,
            LocalLogView {
                start_offset: base,
                segments: vec![segment],
                now_wall_ms: 0,
            },
        );
        // Segment objects are not stored (a million of them would be the test's memory,
        // not the archiver's); manifests are, and manifest puts answer in batches.
        while let Some(effect) = a.poll_effect() {
            match &effect {
                TierEffect::Put { key, .. } if key.ends_with("/manifest") => held_manifest = Some(effect),
                TierEffect::Put {
                    op,
                    key,
                    body: ObjectBody::Bytes(b),
                } if key.contains("archive/") => {
                    store.objects.insert(key.clone(), b.clone());
                    a.handle_completion(
                        now,
                        StoreCompletion {
                            op: *op,
                            result: Ok(StoreReply::Put),
                        },
                    );
                }
                _ => a.handle_completion(
                    now,
                    StoreCompletion {
                        op: effect.op(),
                        result: Ok(StoreReply::Put),
                    },
                ),
            }
        }
        if base % 5_000 == 4_999 {
            if let Some(effect) = held_manifest.take() {
                let c = store.execute(&local, &effect, None);
                a.handle_completion(now, c);
            }
        }
        peak_entries = peak_entries.max(a.manifest().in_memory_entries());
        peak_recent = peak_recent.max(a.manifest().segments.len());
    }
    let m = a.manifest();
    assert_eq!(m.next_offset(), Some(SEGMENTS));
    assert!(
        peak_recent <= 2 * c.spill_threshold_entries + 1,
        "recent entries {peak_recent}"
    );
    let bound = 2 * c.spill_threshold_entries + 1 + (SEGMENTS as usize) / c.archive_entries;
    assert!(
        peak_entries <= bound,
        "{peak_entries} entries in memory, bound {bound}"
    );
    assert!(
        peak_entries < 6_000,
        "{peak_entries} entries in memory for a million segments"
    );
    // Every offset is still located: recent ones directly, old ones through an archive.
    assert!(matches!(m.locate(0), Some(Location::Archive(_))));
    assert!(matches!(m.locate(SEGMENTS - 1), Some(Location::Segment(_))));
}

#[derive(Clone, Debug)]
enum Step {
    Append {
        term_bump: bool,
        batches: usize,
        close: bool,
    },
    Advance {
        ms: u64,
    },
    Crash,
    LocalRetention,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<bool>(), 1usize..4, any::<bool>()).prop_map(|(t, b, c)| Step::Append { term_bump: t && b == 1, batches: b, close: c }),
        4 => (1u64..2_000).prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::Crash),
        2 => Just(Step::LocalRetention),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random appends, leader changes (crashes), local retention and store faults:
    /// the store's manifest always names existing objects, manifest ranges never
    /// overlap or leave gaps, and every offset ever appended stays readable locally or
    /// remotely.
    #[test]
    fn under_store_faults_nothing_is_lost_and_nothing_missing_is_named(
        steps in prop::collection::vec(step(), 1..60),
        faults in prop::collection::vec(0u8..10, 400),
    ) {
        let (mut store, mut local) = (Store::default(), LocalLog::default());
        let mut now = Instant::from_millis(1);
        let mut term = 1;
        let mut a = Archiver::new(config(), path(), term, 1, now).unwrap();
        let mut fault_at = 0;
        let mut next_fault = |effect: &TierEffect| {
            fault_at += 1;
            let f = faults[fault_at % faults.len()];
            match f {
                0 => Some((StoreError::Timeout, true)),
                1 => Some((StoreError::Timeout, false)),
                2 => Some((StoreError::Throttled, false)),
                3 if matches!(effect, TierEffect::Put { .. }) => Some((StoreError::Interrupted, false)),
                _ => None,
            }
        };
        for step in steps {
            match step {
                Step::Append { term_bump, batches, close } => {
                    if term_bump {
                        term += 1;
                    }
                    local.append(term, batches, close);
                }
                Step::Advance { ms } => now += Duration::from_millis(ms),
                Step::Crash => {
                    term += 1;
                    a = Archiver::new(config(), path(), term, term as u64, now).unwrap();
                }
                Step::LocalRetention => {
                    if let Some(start) = a.local_retention(&local.view()) {
                        local.delete_below(start);
                    }
                }
            }
            a.on_local_log(now, local.view());
            a.handle_timeout(now);
            while let Some(effect) = a.poll_effect() {
                let fault = next_fault(&effect);
                let completion = store.execute(&local, &effect, fault);
                a.handle_completion(now, completion);
                prop_assert_eq!(store.check_manifest_names_only_existing_objects(), Ok(()));
            }
            // Everything appended is local or in the durable manifest (gap-free).
            let durable = store
                .objects
                .get(&path().manifest_key())
                .map(|b| PartitionManifest::decode(&path(), b).unwrap());
            let remote_end = durable.as_ref().and_then(|m| m.next_offset()).unwrap_or(0);
            let remote_start = durable.as_ref().and_then(|m| m.first_offset()).unwrap_or(0);
            prop_assert!(remote_start == 0, "remote data starts at {}", remote_start);
            prop_assert!(local.start_offset <= remote_end, "local start {} above remote end {}", local.start_offset, remote_end);
        }
    }
}

#[test]
fn a_restart_within_the_same_term_never_reuses_a_named_revision() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let now = Instant::from_millis(1);
    let mut first = Archiver::new(config(), path(), 4, 7, now).unwrap();
    active(&mut first, &mut store, &local, now);
    local.append(4, 3, true);
    first.on_local_log(now, local.view());
    settle(&mut first, &mut store, &local, now);
    let named = first.manifest().segments[0].revision;
    drop(first);
    let mut again = Archiver::new(config(), path(), 4, 8, now).unwrap();
    active(&mut again, &mut store, &local, now);
    local.append(4, 3, true);
    again.on_local_log(now, local.view());
    settle(&mut again, &mut store, &local, now);
    let revisions: Vec<Revision> = again.manifest().segments.iter().map(|s| s.revision).collect();
    assert_eq!(revisions.len(), 2);
    assert_eq!(revisions[0], named);
    assert!(revisions[1].seq > named.seq, "{revisions:?}");
}

#[test]
fn invalid_configs_are_errors() {
    let bad = TierConfig {
        archive_entries: 0,
        ..config()
    };
    assert!(Archiver::new(bad, path(), 1, 1, Instant::ZERO).is_err());
}

#[test]
fn manifest_puts_wait_out_puts_that_may_still_land() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let lifetime = Duration::from_secs(3);
    let c = TierConfig {
        store_request_lifetime: lifetime,
        ..config()
    };
    let start = Instant::from_millis(1);
    let mut a = Archiver::new(c, path(), 1, 7, start).unwrap();
    active(&mut a, &mut store, &local, start);
    local.append(1, 3, true);
    a.on_local_log(start, local.view());
    settle(&mut a, &mut store, &local, start);
    // A previous leader's put may still land: the new leader's first manifest waits.
    assert_eq!(a.uploaded_offset(), Some(3));
    assert_eq!(a.removable_offset(), None);
    assert!(!store.objects.contains_key(&path().manifest_key()));
    assert_eq!(
        a.poll_timeout(),
        Some(start + Duration::from_secs(1)),
        "housekeeping first"
    );
    let t1 = start + lifetime;
    a.handle_timeout(t1);
    let put = a.poll_effect().unwrap();
    assert!(matches!(&put, TierEffect::Put { key, .. } if key.ends_with("/manifest")));
    // It times out (and may land later): the next manifest put waits again.
    let c = store.execute(&local, &put, Some((StoreError::Timeout, false)));
    a.handle_completion(t1, c);
    local.append(1, 3, true);
    let t2 = t1 + Duration::from_secs(1);
    a.handle_timeout(t2);
    a.on_local_log(t2, local.view());
    while let Some(effect) = a.poll_effect() {
        assert!(
            !matches!(&effect, TierEffect::Put { key, .. } if key.ends_with("/manifest")),
            "too early"
        );
        let completion = store.execute(&local, &effect, None);
        a.handle_completion(t2, completion);
    }
    assert_eq!(a.removable_offset(), None);
    let t3 = t1 + lifetime;
    a.handle_timeout(t3);
    settle(&mut a, &mut store, &local, t3);
    assert_eq!(a.removable_offset(), Some(6));
}

#[test]
fn the_vouched_first_writer_of_a_fresh_prefix_puts_its_manifest_at_once() {
    let (mut store, mut local) = (Store::default(), LocalLog::default());
    let c = TierConfig {
        store_request_lifetime: Duration::from_secs(3),
        ..config()
    };
    let start = Instant::from_millis(1);
    let mut a = Archiver::new(c.clone(), path(), 1, 7, start).unwrap();
    a.assume_first_writer();
    active(&mut a, &mut store, &local, start);
    local.append(1, 3, true);
    a.on_local_log(start, local.view());
    settle(&mut a, &mut store, &local, start);
    assert!(store.objects.contains_key(&path().manifest_key()));
    assert_eq!(a.removable_offset(), Some(3), "durable and marked at once");

    // The prefix holds a manifest: someone else wrote here, and a put of theirs may
    // still land — the wait stays, vouched or not.
    let mut b = Archiver::new(c, path(), 2, 7, start).unwrap();
    b.assume_first_writer();
    active(&mut b, &mut store, &local, start);
    local.append(2, 3, true);
    b.on_local_log(start, local.view());
    settle(&mut b, &mut store, &local, start);
    assert_eq!(b.uploaded_offset(), Some(6));
    assert_eq!(b.removable_offset(), Some(3), "the new manifest waits");
    let stored = PartitionManifest::decode(&path(), &store.objects[&path().manifest_key()]).unwrap();
    assert_eq!(stored.next_offset(), Some(3));
}
