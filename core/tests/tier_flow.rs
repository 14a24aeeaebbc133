//! The tiering flow a runtime wires up, end to end inside core: core's `Log` on a
//! `MemDisk`, its committed segments handed to the `Archiver`, the archiver's effects
//! executed against an in-memory bucket, local retention deleting what the durable
//! manifest covers, and a consumer reading from offset 0 — below the local start through
//! the `RemoteReader`, above it from the local log — getting every record back in order.
//! Then the same after a leader change, and from a partition recovered out of the bucket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use oxbow_core::log::batch::{BatchHeader, BATCH_HEADER_BYTES};
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::read::trim_fetched;
use oxbow_core::log::records::parse_uncompressed_records;
use oxbow_core::log::{Log, LogConfig};
use oxbow_core::tier::read::ReadCacheConfig;
use oxbow_core::tier::recovery::{partitions_in_listing, recover_partition};
use oxbow_core::tier::{
    Archiver, LocalLogView, ObjectBody, PartitionManifest, PartitionPath, ReadStep, RemoteReader,
    StoreCompletion, StoreError, StoreReply, TierConfig, TierEffect,
};
use oxbow_core::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

struct Node {
    log: Log,
    disk: MemDisk,
    bucket: BTreeMap<String, Bytes>,
    archiver: Archiver,
    now: Instant,
}

fn path() -> PartitionPath {
    PartitionPath {
        topic: "orders".into(),
        partition: 0,
        revision: 1,
    }
}

fn tier_config() -> TierConfig {
    TierConfig {
        upload_lag: Duration::from_millis(100),
        local_target_bytes: Some(2_048),
        local_target_ms: None,
        retention_bytes: None,
        retention_ms: None,
        spill_threshold_entries: 6,
        archive_entries: 3,
        housekeeping_interval: Duration::from_millis(500),
        store_request_lifetime: Duration::from_millis(200),
        ..TierConfig::default()
    }
}

impl Node {
    fn new() -> Self {
        let config = LogConfig {
            segment_bytes: 1_024,
            index_interval_bytes: 128,
            preallocate_bytes: 0,
            ..LogConfig::default()
        };
        let now = Instant::from_millis(1);
        Node {
            log: Log::new(config, 0),
            disk: MemDisk::new(),
            bucket: BTreeMap::new(),
            archiver: Archiver::new(tier_config(), path(), 1, 42, now).unwrap(),
            now,
        }
    }

    fn pump_log(&mut self) {
        while let Some(effect) = self.log.poll_effect() {
            for completion in self.disk.execute(effect) {
                self.log.handle_completion(self.now, completion);
            }
        }
        while self.log.poll_event().is_some() {}
    }

    /// The committed log as the archiver sees it (everything is synced, so committed,
    /// here).
    fn view(&self) -> LocalLogView {
        LocalLogView::of_log(&self.log, self.log.durable_offset() + 1, 0)
    }

    fn produce(&mut self, term: i64, value: &str) {
        let batch = build_batch(&[NewRecord::value(value, 0)], BatchOptions::default());
        self.log.append(self.now, term, batch).unwrap();
        self.log.sync();
        self.pump_log();
    }

    /// Executes the archiver's effects against the bucket, like a runtime would.
    fn run_store(&mut self) {
        while let Some(effect) = self.archiver.poll_effect() {
            let op = effect.op();
            let result = match effect {
                TierEffect::Put { key, body, .. } => {
                    let bytes = match body {
                        ObjectBody::Bytes(b) => b,
                        ObjectBody::LocalSegment {
                            segment,
                            position_bytes,
                            len_bytes,
                        } => self.disk.read(segment, position_bytes, len_bytes),
                        other => panic!("unknown body {other:?}"),
                    };
                    self.bucket.insert(key, bytes);
                    Ok(StoreReply::Put)
                }
                TierEffect::Get { key, range, .. } => match self.bucket.get(&key) {
                    None => Err(StoreError::NotFound),
                    Some(b) => Ok(StoreReply::Got(match range {
                        Some((at, len)) => b.slice(at as usize..(at + len) as usize),
                        None => b.clone(),
                    })),
                },
                TierEffect::Delete { key, .. } => {
                    self.bucket.remove(&key);
                    Ok(StoreReply::Deleted)
                }
                TierEffect::List { prefix, .. } => Ok(StoreReply::Listed(
                    self.bucket
                        .keys()
                        .filter(|k| k.starts_with(&prefix))
                        .cloned()
                        .collect(),
                )),
                other => panic!("unknown effect {other:?}"),
            };
            self.archiver
                .handle_completion(self.now, StoreCompletion { op, result });
        }
    }

    /// Time passes: uploads, manifest puts, local retention.
    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        let view = self.view();
        self.archiver.on_local_log(self.now, view);
        self.archiver.handle_timeout(self.now);
        self.run_store();
        if let Some(start) = self.archiver.local_retention(&self.view()) {
            self.log.delete_records(self.now, start).unwrap();
            self.pump_log();
        }
    }

    /// Every record value from `offset` on, local or remote, in order.
    fn consume(&self, manifest: &PartitionManifest, from: i64) -> Vec<String> {
        let mut reader = RemoteReader::new(path(), ReadCacheConfig::default()).unwrap();
        let mut values = Vec::new();
        let mut offset = from;
        while offset < self.log.next_offset() {
            let batches = if offset >= self.log.start_offset() {
                let plan = self.log.read_plan(offset, 1, self.log.next_offset()).unwrap();
                let chunks: Vec<Bytes> = plan
                    .ranges
                    .iter()
                    .map(|r| self.disk.read(r.segment, r.position, r.len_bytes))
                    .collect();
                trim_fetched(&chunks, offset, i64::MAX, 1).unwrap()
            } else {
                self.read_remote(&mut reader, manifest, offset)
            };
            let header = BatchHeader::parse(&batches).unwrap();
            let records = batches.slice(BATCH_HEADER_BYTES..header.size_bytes());
            for record in parse_uncompressed_records(&records, header.record_count).unwrap() {
                values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            }
            offset = header.next_offset();
        }
        values
    }

    fn read_remote(&self, reader: &mut RemoteReader, manifest: &PartitionManifest, offset: i64) -> Bytes {
        loop {
            match reader.plan(manifest, offset, 1).unwrap() {
                ReadStep::Ready { segment, data } => {
                    return trim_fetched(&[data], offset, segment.last_offset, 1).unwrap();
                }
                ReadStep::FetchArchive { key, archive } => {
                    reader.on_archive(&archive, &self.bucket[&key]).unwrap()
                }
                ReadStep::FetchIndex { key, segment } => {
                    reader.on_index(&segment, &self.bucket[&key]).unwrap()
                }
                ReadStep::FetchChunks { key, ranges, .. } => {
                    let segment = find_segment(manifest, &self.bucket, offset);
                    for (at, len) in ranges {
                        let chunk = self.bucket[&key].slice(at as usize..(at + len) as usize);
                        reader.on_chunk(&segment, at, chunk).unwrap();
                    }
                }
                other => panic!("offset {offset}: {other:?}"),
            }
        }
    }

    fn durable_manifest(&self) -> PartitionManifest {
        PartitionManifest::decode(&path(), &self.bucket[&path().manifest_key()]).unwrap()
    }
}

fn find_segment(
    manifest: &PartitionManifest,
    bucket: &BTreeMap<String, Bytes>,
    offset: i64,
) -> oxbow_core::tier::SegmentMeta {
    use oxbow_core::tier::manifest::Location;
    match manifest.locate(offset).unwrap() {
        Location::Segment(s) => *s,
        Location::Archive(a) => {
            let bytes = &bucket[&path().archive_key(a)];
            *oxbow_core::tier::ArchivedManifest::decode(&path(), bytes)
                .unwrap()
                .find(offset)
                .unwrap()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn produce_past_local_retention_then_consume_everything_from_zero() {
    let mut node = Node::new();
    let mut expected = Vec::new();
    for i in 0..300 {
        let value = format!("record-{i}");
        node.produce(1, &value);
        expected.push(value);
        if i % 10 == 0 {
            node.tick(50);
        }
    }
    for _ in 0..10 {
        node.tick(100);
    }
    assert!(
        node.log.start_offset() > 100,
        "local segments went: start {}",
        node.log.start_offset()
    );
    let manifest = node.durable_manifest();
    assert!(!manifest.archives.is_empty(), "spillover happened");
    assert_eq!(manifest.next_offset(), Some(node.log.next_offset()));
    assert_eq!(node.consume(&manifest, 0), expected);

    // A leader change: the new leader continues from the manifest.
    node.archiver = Archiver::new(tier_config(), path(), 2, 43, node.now).unwrap();
    for i in 300..400 {
        let value = format!("record-{i}");
        node.produce(2, &value);
        expected.push(value);
        if i % 10 == 0 {
            node.tick(50);
        }
    }
    for _ in 0..10 {
        node.tick(100);
    }
    let manifest = node.durable_manifest();
    assert_eq!(manifest.uploader_term, 2);
    assert_eq!(manifest.next_offset(), Some(node.log.next_offset()));
    assert_eq!(node.consume(&manifest, 0), expected);

    // Disaster recovery: only the bucket is left.
    let keys: Vec<String> = node.bucket.keys().cloned().collect();
    assert_eq!(partitions_in_listing("orders", &keys), vec![path()]);
    let recovered = recover_partition(&path(), &node.bucket[&path().manifest_key()]).unwrap();
    assert_eq!((recovered.start_offset, recovered.next_offset), (0, 400));
    assert_eq!(recovered.last_term, 2);
    let mut reader = RemoteReader::new(path(), ReadCacheConfig::default()).unwrap();
    let mut offset = 0;
    let mut values = Vec::new();
    while offset < recovered.next_offset {
        let batch = node.read_remote(&mut reader, &recovered.manifest, offset);
        let header = BatchHeader::parse(&batch).unwrap();
        let records = batch.slice(BATCH_HEADER_BYTES..header.size_bytes());
        for record in parse_uncompressed_records(&records, header.record_count).unwrap() {
            values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
        offset = header.next_offset();
    }
    assert_eq!(values, expected);
}

#[test]
fn the_view_holds_only_wholly_committed_segments() {
    let mut node = Node::new();
    for i in 0..40 {
        node.produce(1, &format!("record-{i}"));
    }
    let segments = node.log.segments().len();
    assert!(segments > 2, "the log rolled: {segments} segments");
    let next = node.log.next_offset();
    let all = LocalLogView::of_log(&node.log, next, 0);
    assert_eq!(
        all.segments.last().map(|s| (s.next_offset, s.closed)),
        Some((next, false))
    );
    // The high watermark one batch short of the end: the active segment waits.
    let short = LocalLogView::of_log(&node.log, next - 1, 0);
    assert_eq!(short.segments.len(), all.segments.len() - 1);
    assert!(short.segments.iter().all(|s| s.closed && s.next_offset < next));
}
