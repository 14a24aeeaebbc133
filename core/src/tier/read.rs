//! [`RemoteReader`]: planning reads of offsets below the local start from the object
//! store — offset → (archived manifest →) segment → its index → a byte range — through
//! bounded caches of archived manifests, decoded indexes and downloaded chunks.
//!
//! The reader never does I/O: [`RemoteReader::plan`] answers with the next
//! [`ReadStep`]: either something to download first (an archived manifest, an index,
//! chunks by ranged gets), or the bytes, ready for [`crate::log::read::trim_fetched`].
//! The caller downloads, hands the bytes in ([`RemoteReader::on_archive`],
//! [`RemoteReader::on_index`], [`RemoteReader::on_chunk`]) and plans again. Downloads
//! are chunk-aligned (`chunk_size_bytes`), so a small read fetches a chunk or two, not a
//! whole segment, and neighbouring reads hit the cache.

use super::archiver::InvalidTierConfig;
use super::manifest::{
    ArchiveRef, ArchivedManifest, Location, ManifestError, PartitionManifest, PartitionPath, SegmentMeta,
};
use crate::log::index::{IndexError, IndexFile, SparseIndex};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;

/// Cache bounds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadCacheConfig {
    /// Archived manifests kept.
    pub max_archives: usize,
    /// Segment indexes kept.
    pub max_indexes: usize,
    /// Download granularity.
    pub chunk_size_bytes: u64,
    /// Bytes of chunks kept. A read returns at most this much from the index entry
    /// before its offset, so it must be at least the index interval plus the largest
    /// batch plus two chunks.
    pub max_chunk_bytes: u64,
}

impl Default for ReadCacheConfig {
    fn default() -> Self {
        ReadCacheConfig {
            max_archives: 16,
            max_indexes: 256,
            chunk_size_bytes: 1 << 20,
            max_chunk_bytes: 256 << 20,
        }
    }
}

/// What to do next for a read.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ReadStep {
    /// The offset is not in the object store.
    OutOfRange {
        /// Remote start offset.
        start_offset: i64,
        /// Offset after the last uploaded.
        next_offset: Option<i64>,
    },
    /// Download this archived manifest (whole), hand it to [`RemoteReader::on_archive`].
    FetchArchive {
        /// Its key.
        key: String,
        /// Its reference.
        archive: ArchiveRef,
    },
    /// Download this index object (whole), hand it to [`RemoteReader::on_index`].
    FetchIndex {
        /// Its key.
        key: String,
        /// The segment it indexes.
        segment: SegmentMeta,
    },
    /// Download these chunks with ranged gets, hand each to [`RemoteReader::on_chunk`].
    FetchChunks {
        /// The data object's key.
        key: String,
        /// The segment the chunks belong to (for [`RemoteReader::on_chunk`]).
        segment: SegmentMeta,
        /// `(position_bytes, len_bytes)` of each missing chunk.
        ranges: Vec<(u64, u64)>,
    },
    /// The bytes: whole batches from the one holding the offset (maybe a partial batch at
    /// the end), for [`crate::log::read::trim_fetched`].
    Ready {
        /// The segment read.
        segment: SegmentMeta,
        /// The bytes.
        data: Bytes,
    },
}

/// Why downloaded bytes were rejected.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A corrupted archived manifest.
    #[error("archived manifest: {0}")]
    Archive(#[from] ManifestError),
    /// A corrupted index object.
    #[error("segment index: {0}")]
    Index(#[from] IndexError),
    /// A chunk of the wrong size or place.
    #[error("chunk at {position_bytes} of {key} has {len_bytes} bytes, expected {expected_bytes}")]
    BadChunk {
        /// Object key.
        key: String,
        /// Where.
        position_bytes: u64,
        /// Bytes received.
        len_bytes: u64,
        /// Bytes expected.
        expected_bytes: u64,
    },
    /// The archive does not cover an offset its reference says it does.
    #[error("archived manifest does not hold offset {0}")]
    ArchiveMissesOffset(i64),
}

/// Counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ReadMetrics {
    /// Archived manifests loaded.
    pub archives_loaded: u64,
    /// Indexes loaded.
    pub indexes_loaded: u64,
    /// Chunks served from the cache.
    pub chunk_hits: u64,
    /// Chunks that had to be downloaded.
    pub chunk_misses: u64,
    /// Cache entries evicted.
    pub evictions: u64,
}

#[derive(Clone, Debug)]
struct Cached<T> {
    value: T,
    used: u64,
}

/// A least-recently-used map bounded by an entry count or a byte weight.
#[derive(Clone, Debug)]
struct Lru<K: Ord + Clone, V> {
    items: BTreeMap<K, Cached<V>>,
    weight: u64,
    max_weight: u64,
}

impl<K: Ord + Clone, V> Lru<K, V> {
    fn new(max_weight: u64) -> Self {
        Lru {
            items: BTreeMap::new(),
            weight: 0,
            max_weight,
        }
    }

    fn get(&mut self, key: &K, tick: u64) -> Option<&V> {
        let item = self.items.get_mut(key)?;
        item.used = tick;
        Some(&item.value)
    }

    /// Inserts, evicting least-recently-used entries (never the new one) until the weight
    /// fits; returns how many were evicted.
    fn insert(&mut self, key: K, value: V, weight: impl Fn(&V) -> u64, tick: u64) -> u64 {
        if let Some(old) = self.items.remove(&key) {
            self.weight -= weight(&old.value);
        }
        self.weight += weight(&value);
        self.items.insert(key.clone(), Cached { value, used: tick });
        let mut evicted = 0;
        while self.weight > self.max_weight && self.items.len() > 1 {
            let Some(victim) = self
                .items
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = self.items.remove(&victim) {
                self.weight -= weight(&old.value);
                evicted += 1;
            }
        }
        evicted
    }
}

/// Plans remote reads of one partition.
#[derive(Debug)]
pub struct RemoteReader {
    path: PartitionPath,
    config: ReadCacheConfig,
    archives: Lru<String, ArchivedManifest>,
    indexes: Lru<String, IndexFile>,
    chunks: Lru<(String, u64), Bytes>,
    tick: u64,
    metrics: ReadMetrics,
}

impl RemoteReader {
    /// A reader with empty caches; the config must hold at least two chunks and one
    /// archive and index.
    pub fn new(path: PartitionPath, config: ReadCacheConfig) -> Result<Self, InvalidTierConfig> {
        if config.chunk_size_bytes == 0 || config.max_chunk_bytes < 2 * config.chunk_size_bytes {
            return Err(InvalidTierConfig(
                "chunk_size_bytes must be positive and max_chunk_bytes at least two chunks".into(),
            ));
        }
        if config.max_archives == 0 || config.max_indexes == 0 {
            return Err(InvalidTierConfig(
                "max_archives and max_indexes must be positive".into(),
            ));
        }
        Ok(RemoteReader {
            path,
            archives: Lru::new(config.max_archives as u64),
            indexes: Lru::new(config.max_indexes as u64),
            chunks: Lru::new(config.max_chunk_bytes),
            config,
            tick: 0,
            metrics: ReadMetrics::default(),
        })
    }

    /// Counters.
    pub fn metrics(&self) -> ReadMetrics {
        self.metrics
    }

    /// Bytes of chunks cached (never above `max_chunk_bytes` plus one chunk).
    pub fn cached_chunk_bytes(&self) -> u64 {
        self.chunks.weight
    }

    /// Archived manifests cached.
    pub fn cached_archives(&self) -> usize {
        self.archives.items.len()
    }

    /// The next step of reading up to `max_bytes` from `offset`.
    pub fn plan(
        &mut self,
        manifest: &PartitionManifest,
        offset: i64,
        max_bytes: u64,
    ) -> Result<ReadStep, ReadError> {
        self.tick += 1;
        let segment = match manifest.locate(offset) {
            None => {
                return Ok(ReadStep::OutOfRange {
                    start_offset: manifest.start_offset,
                    next_offset: manifest.next_offset(),
                })
            }
            Some(Location::Segment(segment)) => *segment,
            Some(Location::Archive(archive)) => {
                let key = self.path.archive_key(archive);
                let Some(loaded) = self.archives.get(&key, self.tick) else {
                    return Ok(ReadStep::FetchArchive {
                        key,
                        archive: *archive,
                    });
                };
                *loaded
                    .find(offset)
                    .ok_or(ReadError::ArchiveMissesOffset(offset))?
            }
        };
        let index_key = self.path.index_key(&segment);
        let Some(index) = self.indexes.get(&index_key, self.tick) else {
            return Ok(ReadStep::FetchIndex {
                key: index_key,
                segment,
            });
        };
        let (start, end) = object_range(&index.index, &segment, offset, max_bytes);
        self.chunks_or_data(segment, start, end)
    }

    /// The next step of finding the first offset whose timestamp is at or after
    /// `timestamp_ms` in the remote data (ListOffsets below the local start). Resolve
    /// [`ReadStep::Ready`] with [`crate::log::read::find_offset_for_timestamp`]`(&data,
    /// timestamp_ms, segment.base_offset.max(manifest.start_offset))`; `OutOfRange` when
    /// no remote record is that recent.
    pub fn plan_timestamp(
        &mut self,
        manifest: &PartitionManifest,
        timestamp_ms: i64,
    ) -> Result<ReadStep, ReadError> {
        self.tick += 1;
        let reaches = |max_ts: i64, last: i64| max_ts >= timestamp_ms && last >= manifest.start_offset;
        let archive = manifest
            .archives
            .iter()
            .find(|a| reaches(a.max_timestamp_ms, a.last_offset));
        let segment = match archive {
            Some(archive) => {
                let key = self.path.archive_key(archive);
                let Some(loaded) = self.archives.get(&key, self.tick) else {
                    return Ok(ReadStep::FetchArchive {
                        key,
                        archive: *archive,
                    });
                };
                loaded
                    .segments
                    .iter()
                    .find(|s| reaches(s.max_timestamp_ms, s.last_offset))
                    .copied()
                    .ok_or(ReadError::ArchiveMissesOffset(archive.last_offset))?
            }
            None => match manifest
                .segments
                .iter()
                .find(|s| reaches(s.max_timestamp_ms, s.last_offset))
            {
                Some(segment) => *segment,
                None => {
                    return Ok(ReadStep::OutOfRange {
                        start_offset: manifest.start_offset,
                        next_offset: manifest.next_offset(),
                    })
                }
            },
        };
        let index_key = self.path.index_key(&segment);
        let Some(index) = self.indexes.get(&index_key, self.tick) else {
            return Ok(ReadStep::FetchIndex {
                key: index_key,
                segment,
            });
        };
        let object_start = segment.object_position_bytes;
        let local_end = object_start + segment.size_bytes;
        let (start, end) = index.index.lookup_timestamp(timestamp_ms);
        let start = u64::from(start).clamp(object_start, local_end);
        let end = end
            .map_or(local_end, u64::from)
            .max(start + self.config.chunk_size_bytes)
            .min(local_end);
        self.chunks_or_data(segment, start - object_start, end - object_start)
    }

    fn chunks_or_data(&mut self, segment: SegmentMeta, start: u64, end: u64) -> Result<ReadStep, ReadError> {
        let key = self.path.segment_key(&segment);
        let size = self.config.chunk_size_bytes;
        // Never more chunks than the cache holds at once, or filling it would evict
        // the first ones before the last arrive.
        let max_chunks = (self.config.max_chunk_bytes / size).max(1);
        let first_chunk = start / size;
        let end = end.min((first_chunk + max_chunks) * size);
        let chunk_range = first_chunk..end.div_ceil(size);
        let mut missing = Vec::new();
        for no in chunk_range.clone() {
            // Touch the cached ones so the missing ones evict others first.
            if self.chunks.get(&(key.clone(), no), self.tick).is_none() {
                missing.push((no * size, size.min(segment.size_bytes - no * size)));
            }
        }
        if !missing.is_empty() {
            self.metrics.chunk_misses += missing.len() as u64;
            return Ok(ReadStep::FetchChunks {
                key,
                segment,
                ranges: missing,
            });
        }
        let mut data = BytesMut::with_capacity((end - start) as usize);
        for no in chunk_range {
            self.metrics.chunk_hits += 1;
            let Some(chunk) = self.chunks.get(&(key.clone(), no), self.tick) else {
                continue; // unreachable: checked above
            };
            let chunk_start = no * size;
            let from = start.max(chunk_start) - chunk_start;
            let to = end.min(chunk_start + chunk.len() as u64) - chunk_start;
            data.extend_from_slice(&chunk[from as usize..to as usize]);
        }
        Ok(ReadStep::Ready {
            segment,
            data: data.freeze(),
        })
    }

    /// An archived manifest downloaded for [`ReadStep::FetchArchive`].
    pub fn on_archive(&mut self, archive: &ArchiveRef, bytes: &[u8]) -> Result<(), ReadError> {
        let decoded = ArchivedManifest::decode(&self.path, bytes)?;
        if decoded.reference(archive.revision).as_ref() != Some(archive) {
            return Err(ReadError::Archive(ManifestError::Inconsistent(
                "archive differs from its reference",
            )));
        }
        let key = self.path.archive_key(archive);
        self.metrics.archives_loaded += 1;
        self.metrics.evictions += self.archives.insert(key, decoded, |_| 1, self.tick);
        Ok(())
    }

    /// An index object downloaded for [`ReadStep::FetchIndex`].
    pub fn on_index(&mut self, segment: &SegmentMeta, bytes: &[u8]) -> Result<(), ReadError> {
        let local_len = segment.object_position_bytes + segment.size_bytes;
        let index = SparseIndex::decode(segment.local_segment, bytes, local_len)?;
        if index.segment_size_bytes != local_len || index.next_offset != segment.last_offset + 1 {
            return Err(ReadError::Index(IndexError::Inconsistent(
                "index does not match its object",
            )));
        }
        let key = self.path.index_key(segment);
        self.metrics.indexes_loaded += 1;
        self.metrics.evictions += self.indexes.insert(key, index, |_| 1, self.tick);
        Ok(())
    }

    /// A chunk downloaded for [`ReadStep::FetchChunks`].
    pub fn on_chunk(
        &mut self,
        segment: &SegmentMeta,
        position_bytes: u64,
        bytes: Bytes,
    ) -> Result<(), ReadError> {
        let key = self.path.segment_key(segment);
        let size = self.config.chunk_size_bytes;
        let expected = size.min(segment.size_bytes.saturating_sub(position_bytes));
        if position_bytes % size != 0 || bytes.len() as u64 != expected || expected == 0 {
            return Err(ReadError::BadChunk {
                key,
                position_bytes,
                len_bytes: bytes.len() as u64,
                expected_bytes: expected,
            });
        }
        let weight = |b: &Bytes| b.len() as u64;
        self.metrics.evictions += self
            .chunks
            .insert((key, position_bytes / size), bytes, weight, self.tick);
        Ok(())
    }
}

/// The byte range `[start, end)` of the object to read for `offset`: from the index
/// entry at or before it, at least to the next entry, at least `max_bytes`.
fn object_range(index: &SparseIndex, segment: &SegmentMeta, offset: i64, max_bytes: u64) -> (u64, u64) {
    let object_start = segment.object_position_bytes;
    let local_end = object_start + segment.size_bytes;
    let (start, hint_end) = match index.lookup_offset(offset) {
        Some((entry, next)) => (
            u64::from(entry.position).max(object_start),
            next.map_or(local_end, u64::from),
        ),
        None => (object_start, local_end),
    };
    let end = hint_end.max(start + max_bytes).min(local_end);
    (start - object_start, end - object_start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::BatchHeader;
    use crate::log::builder::{build_batch, BatchOptions, NewRecord};
    use crate::log::io::SegmentId;
    use crate::log::read::{find_offset_for_timestamp, trim_fetched};
    use crate::tier::manifest::Revision;

    fn path() -> PartitionPath {
        PartitionPath {
            topic: "t".into(),
            partition: 0,
            revision: 1,
        }
    }

    /// A local segment of `batches` one-record batches from offset 0, its index every
    /// `interval` bytes, and its bytes.
    fn segment_bytes(batches: i64, interval: u64) -> (Bytes, SparseIndex, Vec<(i64, u64)>) {
        let mut data = BytesMut::new();
        let mut index = SparseIndex::new(0);
        let mut max_ts = -1;
        let mut positions = Vec::new();
        for offset in 0..batches {
            let batch = build_batch(
                &[NewRecord::value(format!("value-{offset}"), offset)],
                BatchOptions {
                    base_offset: offset,
                    leader_epoch: 1,
                    ..BatchOptions::default()
                },
            );
            let header = BatchHeader::parse(&batch).unwrap();
            max_ts = max_ts.max(header.max_timestamp_ms);
            positions.push((offset, data.len() as u64));
            index.on_append(&header, data.len() as u64, max_ts, interval);
            data.extend_from_slice(&batch);
        }
        (data.freeze(), index, positions)
    }

    /// Serves every step from `object` / `index_bytes`, counting downloads.
    fn read(
        reader: &mut RemoteReader,
        m: &PartitionManifest,
        object: &Bytes,
        index_bytes: &Bytes,
        offset: i64,
    ) -> (Bytes, usize) {
        read_max(reader, m, object, index_bytes, offset, 1)
    }

    fn read_max(
        reader: &mut RemoteReader,
        m: &PartitionManifest,
        object: &Bytes,
        index_bytes: &Bytes,
        offset: i64,
        max_bytes: u64,
    ) -> (Bytes, usize) {
        let mut downloads = 0;
        loop {
            assert!(downloads < 10_000, "the read makes no progress");
            match reader.plan(m, offset, max_bytes).unwrap() {
                ReadStep::Ready { data, .. } => return (data, downloads),
                ReadStep::FetchIndex { segment, .. } => {
                    downloads += 1;
                    reader.on_index(&segment, index_bytes).unwrap();
                }
                ReadStep::FetchChunks { ranges, .. } => {
                    for (at, len) in ranges {
                        downloads += 1;
                        let seg = m.segments[0];
                        reader
                            .on_chunk(&seg, at, object.slice(at as usize..(at + len) as usize))
                            .unwrap();
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn small_reads_fetch_chunks_not_the_segment_and_hit_the_cache() {
        let (local, index, positions) = segment_bytes(200, 256);
        let seg_id = SegmentId {
            base_offset: 0,
            term: 1,
        };
        // The object starts at the index entry at or before offset 50.
        let (entry, _) = index.lookup_offset(50).unwrap();
        let object_start = u64::from(entry.position);
        let object = local.slice(object_start as usize..);
        let meta = SegmentMeta {
            base_offset: 50,
            last_offset: 199,
            term: 1,
            size_bytes: object.len() as u64,
            max_timestamp_ms: 199,
            local_segment: seg_id,
            object_position_bytes: object_start,
            revision: Revision {
                uploader_term: 1,
                seq: 0,
            },
        };
        let index_bytes = index.encode(seg_id, local.len() as u64, 200, 199);
        let mut m = PartitionManifest::new(path(), 1);
        m.start_offset = 50;
        m.segments.push(meta);
        let config = ReadCacheConfig {
            chunk_size_bytes: 512,
            max_chunk_bytes: 2_048,
            ..ReadCacheConfig::default()
        };
        let mut reader = RemoteReader::new(path(), config).unwrap();
        assert!(matches!(
            reader.plan(&m, 49, 1).unwrap(),
            ReadStep::OutOfRange { .. }
        ));
        for offset in [50, 51, 120, 199, 60] {
            let (data, _) = read(&mut reader, &m, &object, &index_bytes, offset);
            let fetched = trim_fetched(&[data], offset, 199, 1).unwrap();
            let first = BatchHeader::parse(&fetched).unwrap();
            assert!(
                first.base_offset <= offset && offset <= first.last_offset(),
                "offset {offset}"
            );
            assert!(reader.cached_chunk_bytes() <= config.max_chunk_bytes + config.chunk_size_bytes);
        }
        let (_, downloads) = read(&mut reader, &m, &object, &index_bytes, 60);
        assert_eq!(downloads, 0, "a re-read is served from the cache");
        assert!(reader.metrics().chunk_misses < (object.len() as u64).div_ceil(512) * 2);
        assert!(reader.metrics().evictions > 0, "the cache stays bounded");
        assert!(positions.len() == 200);
    }

    /// Serves a timestamp lookup like `read` serves an offset.
    fn find_timestamp(
        reader: &mut RemoteReader,
        m: &PartitionManifest,
        object: &Bytes,
        index_bytes: &Bytes,
        ts: i64,
    ) -> Option<i64> {
        loop {
            match reader.plan_timestamp(m, ts).unwrap() {
                ReadStep::Ready { data, segment } => {
                    return find_offset_for_timestamp(&data, ts, segment.base_offset.max(m.start_offset))
                        .unwrap();
                }
                ReadStep::OutOfRange { .. } => return None,
                ReadStep::FetchIndex { segment, .. } => reader.on_index(&segment, index_bytes).unwrap(),
                ReadStep::FetchChunks { ranges, .. } => {
                    for (at, len) in ranges {
                        let chunk = object.slice(at as usize..(at + len) as usize);
                        reader.on_chunk(&m.segments[0], at, chunk).unwrap();
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn timestamp_lookups_find_the_first_offset_at_or_after() {
        let (local, index, _) = segment_bytes(200, 256);
        let seg_id = SegmentId {
            base_offset: 0,
            term: 1,
        };
        let (entry, _) = index.lookup_offset(50).unwrap();
        let object = local.slice(entry.position as usize..);
        let meta = SegmentMeta {
            base_offset: 50,
            last_offset: 199,
            term: 1,
            size_bytes: object.len() as u64,
            max_timestamp_ms: 199,
            local_segment: seg_id,
            object_position_bytes: u64::from(entry.position),
            revision: Revision {
                uploader_term: 1,
                seq: 0,
            },
        };
        let index_bytes = index.encode(seg_id, local.len() as u64, 200, 199);
        let mut m = PartitionManifest::new(path(), 1);
        m.start_offset = 50;
        m.segments.push(meta);
        let config = ReadCacheConfig {
            chunk_size_bytes: 512,
            max_chunk_bytes: 4_096,
            ..ReadCacheConfig::default()
        };
        let mut reader = RemoteReader::new(path(), config).unwrap();
        // Record timestamps equal their offsets here.
        for (ts, want) in [
            (120, Some(120)),
            (199, Some(199)),
            (10, Some(50)),
            (50, Some(50)),
            (200, None),
        ] {
            assert_eq!(
                find_timestamp(&mut reader, &m, &object, &index_bytes, ts),
                want,
                "timestamp {ts}"
            );
        }
    }

    #[test]
    fn unusable_cache_configs_are_errors() {
        for config in [
            ReadCacheConfig {
                chunk_size_bytes: 0,
                ..ReadCacheConfig::default()
            },
            ReadCacheConfig {
                chunk_size_bytes: 1_024,
                max_chunk_bytes: 1_500,
                ..ReadCacheConfig::default()
            },
            ReadCacheConfig {
                max_archives: 0,
                ..ReadCacheConfig::default()
            },
        ] {
            assert!(RemoteReader::new(path(), config).is_err(), "{config:?}");
        }
    }

    #[test]
    fn corrupted_downloads_are_errors() {
        let (local, index, _) = segment_bytes(10, 64);
        let seg_id = SegmentId {
            base_offset: 0,
            term: 1,
        };
        let meta = SegmentMeta {
            base_offset: 0,
            last_offset: 9,
            term: 1,
            size_bytes: local.len() as u64,
            max_timestamp_ms: 9,
            local_segment: seg_id,
            object_position_bytes: 0,
            revision: Revision {
                uploader_term: 1,
                seq: 0,
            },
        };
        let mut reader = RemoteReader::new(path(), ReadCacheConfig::default()).unwrap();
        let mut bytes = index.encode(seg_id, local.len() as u64, 10, 9).to_vec();
        bytes[20] ^= 1;
        assert!(matches!(reader.on_index(&meta, &bytes), Err(ReadError::Index(_))));
        assert!(matches!(
            reader.on_chunk(&meta, 3, local.clone()),
            Err(ReadError::BadChunk { .. })
        ));
        let archive = ArchiveRef {
            base_offset: 0,
            last_offset: 9,
            size_bytes: 1,
            max_timestamp_ms: 9,
            segment_count: 1,
            revision: meta.revision,
        };
        assert!(matches!(
            reader.on_archive(&archive, b"garbage"),
            Err(ReadError::Archive(_))
        ));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever the index interval, chunk size, cache size, object start and read
        /// size: every offset of the object reads back as the batch holding it, and the
        /// chunk cache stays within its bound.
        #[test]
        fn every_offset_reads_back_through_any_chunking(
            batches in 1i64..120,
            interval in 32u64..2_048,
            chunk in 64u64..2_048,
            cache_slack in 0u64..4_096,
            start_at in any::<prop::sample::Index>(),
            reads in prop::collection::vec((any::<prop::sample::Index>(), 1u64..4_000), 1..16),
        ) {
            let (local, index, _) = segment_bytes(batches, interval);
            let seg_id = SegmentId { base_offset: 0, term: 1 };
            let first = start_at.index(batches as usize) as i64;
            let (entry, _) = index.lookup_offset(first).unwrap();
            let object = local.slice(entry.position as usize..);
            let meta = SegmentMeta {
                base_offset: first,
                last_offset: batches - 1,
                term: 1,
                size_bytes: object.len() as u64,
                max_timestamp_ms: batches - 1,
                local_segment: seg_id,
                object_position_bytes: u64::from(entry.position),
                revision: Revision { uploader_term: 1, seq: 0 },
            };
            let index_bytes = index.encode(seg_id, local.len() as u64, batches, batches - 1);
            let mut m = PartitionManifest::new(path(), 1);
            m.start_offset = first;
            m.segments.push(meta);
            // The documented minimum: index interval + largest batch + two chunks.
            let max_chunk_bytes = interval + 256 + 2 * chunk + cache_slack;
            let config = ReadCacheConfig { chunk_size_bytes: chunk, max_chunk_bytes, ..ReadCacheConfig::default() };
            let mut reader = RemoteReader::new(path(), config).unwrap();
            for (pick, max_bytes) in reads {
                let offset = first + pick.index((batches - first) as usize) as i64;
                let (data, _) = read_max(&mut reader, &m, &object, &index_bytes, offset, max_bytes);
                let fetched = trim_fetched(&[data], offset, batches - 1, max_bytes).unwrap();
                let header = BatchHeader::parse(&fetched).unwrap();
                prop_assert!(header.base_offset <= offset && offset <= header.last_offset());
                prop_assert!(reader.cached_chunk_bytes() <= max_chunk_bytes);
            }
        }
    }
}
