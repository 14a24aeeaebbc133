//! The partition manifest and archived manifests: what a partition holds in the object
//! store, their object keys, and their versioned, checksummed byte format.
//!
//! * [`PartitionManifest`] — the one mutable object per partition (`<prefix>/manifest`):
//!   the remote start offset, references to archived manifests ([`ArchiveRef`]), and the
//!   *recent* uploaded segments ([`SegmentMeta`]). Only this is kept in memory.
//! * [`ArchivedManifest`] — an immutable object holding older [`SegmentMeta`]s that
//!   spilled over from the partition manifest; loaded only when a historical read or
//!   retention needs it.
//! * [`LineageMarker`] — a small object (`<prefix>/lineage`) saying "a partition
//!   manifest has been durable under this prefix": written once the first manifest put
//!   completed (and by any leader that loads a manifest while it is missing), never
//!   deleted by the archiver. A missing manifest next to a marker is a *lost* manifest,
//!   not a fresh prefix, and the orphan GC must not run (see [`crate::tier::archiver`]).
//!
//! Every uploaded object's key carries its first offset, its term and a [`Revision`]
//! (the uploader's term and a sequence number), so a re-upload never overwrites an
//! object a manifest may name.
//!
//! Byte format (big-endian): magic `OXTM`, format version u16, kind u8 (1 = partition
//! manifest, 2 = archived manifest, 3 = lineage marker), body, CRC32C of everything before.
//! Version 2 adds the partition manifest's [`RecoveryPoint`] after its segments; version 1
//! (without it) is still read. Decoding checks
//! the checksum, the ranges' order and contiguity, and returns a [`ManifestError`] on
//! anything else — a corrupted manifest is an error value, never a panic.

use crate::log::io::SegmentId;
use std::fmt;

const MAGIC: &[u8; 4] = b"OXTM";
const FORMAT_VERSION: u16 = 2;
/// The oldest format version still read.
const MIN_FORMAT_VERSION: u16 = 1;
const KIND_PARTITION: u8 = 1;
const KIND_ARCHIVE: u8 = 2;
const KIND_LINEAGE: u8 = 3;
/// Longest topic name a manifest accepts (Kafka's own limit).
const MAX_TOPIC_BYTES: usize = 249;
/// Most entries one encoded manifest may hold (a sanity bound for decoding).
pub const MAX_ENCODED_ENTRIES: usize = 1 << 20;

/// Names one upload attempt: the term of the leader that uploaded and its sequence
/// number within that term. Unique per partition, so keys never collide.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub struct Revision {
    /// Term of the uploading leader.
    pub uploader_term: i64,
    /// Sequence number within that leadership.
    pub seq: u64,
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.uploader_term, self.seq)
    }
}

/// Which partition: topic, partition index and the topic's revision (its creation
/// number, so a re-created topic never mixes with the old one's objects).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub struct PartitionPath {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Topic revision.
    pub revision: i64,
}

impl PartitionPath {
    /// Key prefix of every object of this partition: `<topic>/<partition>_<revision>/`.
    pub fn prefix(&self) -> String {
        format!("{}/{}_{}/", self.topic, self.partition, self.revision)
    }

    /// Key of the partition manifest.
    pub fn manifest_key(&self) -> String {
        format!("{}manifest", self.prefix())
    }

    /// Key of the lineage marker ([`LineageMarker`]).
    pub fn lineage_key(&self) -> String {
        format!("{}lineage", self.prefix())
    }

    /// Key prefix of the archived manifests.
    pub fn archive_prefix(&self) -> String {
        format!("{}archive/", self.prefix())
    }

    /// Key of the archived manifest `archive`.
    pub fn archive_key(&self, archive: &ArchiveRef) -> String {
        format!(
            "{}{}-{}-{}.manifest",
            self.archive_prefix(),
            archive.base_offset,
            archive.last_offset,
            archive.revision
        )
    }

    /// Key of a segment's data object.
    pub fn segment_key(&self, segment: &SegmentMeta) -> String {
        format!("{}{}.log", self.prefix(), segment.object_stem())
    }

    /// Key of a segment's index object (core's log index format, [`crate::log::index`]).
    pub fn index_key(&self, segment: &SegmentMeta) -> String {
        format!("{}{}.index", self.prefix(), segment.object_stem())
    }

    /// Parses a key under this partition's prefix.
    pub fn parse_key(&self, key: &str) -> Option<ObjectName> {
        let rest = key.strip_prefix(&self.prefix())?;
        if rest == "manifest" {
            return Some(ObjectName::Manifest);
        }
        if rest == "lineage" {
            return Some(ObjectName::Lineage);
        }
        if let Some(archive) = rest.strip_prefix("archive/") {
            let stem = archive.strip_suffix(".manifest")?;
            let (base, rest) = stem.split_once('-')?;
            let (last, revision) = rest.split_once('-')?;
            return Some(ObjectName::Archive {
                base_offset: base.parse().ok()?,
                last_offset: last.parse().ok()?,
                revision: parse_revision(revision)?,
            });
        }
        let (stem, is_index) = match rest.strip_suffix(".log") {
            Some(stem) => (stem, false),
            None => (rest.strip_suffix(".index")?, true),
        };
        let mut parts = stem.splitn(3, '-');
        let base_offset = parts.next()?.parse().ok()?;
        let term = parts.next()?.parse().ok()?;
        let revision = parse_revision(parts.next()?)?;
        Some(ObjectName::Segment {
            base_offset,
            term,
            revision,
            is_index,
        })
    }
}

fn parse_revision(text: &str) -> Option<Revision> {
    let (term, seq) = text.split_once('.')?;
    Some(Revision {
        uploader_term: term.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// What an object key under a partition's prefix names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ObjectName {
    /// The partition manifest.
    Manifest,
    /// The lineage marker.
    Lineage,
    /// An archived manifest.
    Archive {
        /// First offset it covers.
        base_offset: i64,
        /// Last offset it covers.
        last_offset: i64,
        /// Upload attempt.
        revision: Revision,
    },
    /// A segment's data or index object.
    Segment {
        /// First offset the object serves.
        base_offset: i64,
        /// Term of its batches.
        term: i64,
        /// Upload attempt.
        revision: Revision,
        /// The index object (else the data).
        is_index: bool,
    },
}

/// One uploaded segment object: a run of whole batches of one term.
///
/// The object holds the bytes `[object_position_bytes, object_position_bytes +
/// size_bytes)` of the local segment `local_segment` (so the uploaded index — the local
/// segment's index, cut at the object's end — applies to it after subtracting
/// `object_position_bytes`). It serves offsets `base_offset..=last_offset`; it may start
/// with a few batches below `base_offset` (from the index entry before it), which a
/// reader skips, so manifest ranges never overlap even when objects' bytes do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SegmentMeta {
    /// First offset this object serves.
    pub base_offset: i64,
    /// Last offset it holds.
    pub last_offset: i64,
    /// Term (Kafka leader epoch) of its batches.
    pub term: i64,
    /// Object size.
    pub size_bytes: u64,
    /// Largest record timestamp in it, -1 if unknown.
    pub max_timestamp_ms: i64,
    /// The local segment the bytes came from (names the index object's segment).
    pub local_segment: SegmentId,
    /// Where in the local segment the object's bytes start.
    pub object_position_bytes: u64,
    /// Upload attempt (part of the key).
    pub revision: Revision,
}

impl SegmentMeta {
    /// `<base>-<term>-<uploader term>.<seq>`: the key stem of the data and index objects.
    pub fn object_stem(&self) -> String {
        format!("{}-{}-{}", self.base_offset, self.term, self.revision)
    }
}

/// A reference from the partition manifest to an archived manifest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ArchiveRef {
    /// First offset of its first segment.
    pub base_offset: i64,
    /// Last offset of its last segment.
    pub last_offset: i64,
    /// Sum of its segments' sizes.
    pub size_bytes: u64,
    /// Largest timestamp of its segments.
    pub max_timestamp_ms: i64,
    /// Number of segments it lists.
    pub segment_count: u32,
    /// Upload attempt (part of the key).
    pub revision: Revision,
}

/// Why manifest bytes were rejected.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Too short, wrong magic, or unknown format version.
    #[error("not an Oxbow manifest of a known version")]
    BadFormat,
    /// The checksum does not match.
    #[error("manifest checksum mismatch")]
    BadChecksum,
    /// A partition manifest where an archive was expected, or the reverse.
    #[error("wrong manifest kind {0}")]
    WrongKind(u8),
    /// Length fields that do not add up.
    #[error("truncated or oversized manifest")]
    Truncated,
    /// Ranges out of order, overlapping, or not contiguous.
    #[error("inconsistent manifest: {0}")]
    Inconsistent(&'static str),
    /// The manifest belongs to another partition.
    #[error("manifest of another partition")]
    WrongPartition,
}

/// The partition manifest: the mutable head of a partition's remote data.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartitionManifest {
    /// Which partition.
    pub path: PartitionPath,
    /// Incremented on every change; the store's copy is the latest durable version.
    pub version: u64,
    /// Term of the leader that wrote this version (a leader of a lower term that reads a
    /// manifest of a higher one stops: it has been replaced).
    pub uploader_term: i64,
    /// Remote start offset: nothing below is readable (total retention moved it).
    pub start_offset: i64,
    /// Archived manifests, oldest first.
    pub archives: Vec<ArchiveRef>,
    /// Recent segments, oldest first, after the archives.
    pub segments: Vec<SegmentMeta>,
    /// Where the latest incarnation recovered from this prefix started, once its
    /// leader recorded it.
    pub recovery: Option<RecoveryPoint>,
}

/// Where a partition recovered from the store (topic recovery) starts: every replica of
/// that incarnation must start at the same point, so the first one to lead records it
/// in the manifest, and a replica that reads the manifest later — after that leader
/// uploaded more and rewrote it — starts from the record, not from the manifest's end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecoveryPoint {
    /// The recovered partition's own revision (its topic incarnation).
    pub incarnation: i64,
    /// Its log starts here, empty (the recovered manifest's next offset).
    pub next_offset: i64,
    /// Its Raft state starts in this term, after a snapshot point of it just below.
    pub term: i64,
}

impl PartitionManifest {
    /// An empty manifest.
    pub fn new(path: PartitionPath, uploader_term: i64) -> Self {
        PartitionManifest {
            path,
            version: 0,
            uploader_term,
            start_offset: 0,
            archives: Vec::new(),
            segments: Vec::new(),
            recovery: None,
        }
    }

    /// Offset after the last uploaded one, `None` when nothing is uploaded.
    pub fn next_offset(&self) -> Option<i64> {
        self.segments
            .last()
            .map(|s| s.last_offset + 1)
            .or_else(|| self.archives.last().map(|a| a.last_offset + 1))
    }

    /// First offset the manifest names (archives included), `None` when empty.
    pub fn first_offset(&self) -> Option<i64> {
        self.archives
            .first()
            .map(|a| a.base_offset)
            .or_else(|| self.segments.first().map(|s| s.base_offset))
    }

    /// Bytes of every segment named, archived ones included.
    pub fn total_size_bytes(&self) -> u64 {
        let archived: u64 = self.archives.iter().map(|a| a.size_bytes).sum();
        archived + self.segments.iter().map(|s| s.size_bytes).sum::<u64>()
    }

    /// Entries held in memory: recent segments plus archive references.
    pub fn in_memory_entries(&self) -> usize {
        self.segments.len() + self.archives.len()
    }

    /// Where offset `offset` lives, if the manifest covers it.
    pub fn locate(&self, offset: i64) -> Option<Location<'_>> {
        if offset < self.start_offset {
            return None;
        }
        if let Some(i) = find_covering(&self.segments, offset, |s| (s.base_offset, s.last_offset)) {
            return self.segments.get(i).map(Location::Segment);
        }
        let i = find_covering(&self.archives, offset, |a| (a.base_offset, a.last_offset))?;
        self.archives.get(i).map(Location::Archive)
    }

    /// Encodes the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(KIND_PARTITION);
        w.path(&self.path);
        w.u64(self.version);
        w.i64(self.uploader_term);
        w.i64(self.start_offset);
        w.u32(self.archives.len() as u32);
        for a in &self.archives {
            w.archive_ref(a);
        }
        w.u32(self.segments.len() as u32);
        for s in &self.segments {
            w.segment(s);
        }
        match self.recovery {
            None => w.out.push(0),
            Some(point) => {
                w.out.push(1);
                w.i64(point.incarnation);
                w.i64(point.next_offset);
                w.i64(point.term);
            }
        }
        w.finish()
    }

    /// Decodes and checks a manifest, which must belong to `path`.
    pub fn decode(path: &PartitionPath, bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut r = Reader::open(bytes, KIND_PARTITION)?;
        let decoded_path = r.path()?;
        if &decoded_path != path {
            return Err(ManifestError::WrongPartition);
        }
        let version = r.u64()?;
        let uploader_term = r.i64()?;
        let start_offset = r.i64()?;
        let archive_count = r.count()?;
        let mut archives = Vec::with_capacity(archive_count.min(1024));
        for _ in 0..archive_count {
            archives.push(r.archive_ref()?);
        }
        let segment_count = r.count()?;
        let mut segments = Vec::with_capacity(segment_count.min(1024));
        for _ in 0..segment_count {
            segments.push(r.segment()?);
        }
        let recovery = if r.version >= 2 {
            match r.take::<1>()?[0] {
                0 => None,
                1 => Some(RecoveryPoint {
                    incarnation: r.i64()?,
                    next_offset: r.i64()?,
                    term: r.i64()?,
                }),
                _ => return Err(ManifestError::Inconsistent("recovery point flag")),
            }
        } else {
            None
        };
        r.end()?;
        let manifest = PartitionManifest {
            path: decoded_path,
            version,
            uploader_term,
            start_offset,
            archives,
            segments,
            recovery,
        };
        manifest.check()?;
        Ok(manifest)
    }

    /// Checks order and contiguity of every range.
    pub fn check(&self) -> Result<(), ManifestError> {
        let ranges = self
            .archives
            .iter()
            .map(|a| (a.base_offset, a.last_offset))
            .chain(self.segments.iter().map(|s| (s.base_offset, s.last_offset)));
        check_contiguous(ranges)?;
        if self.archives.iter().any(|a| a.segment_count == 0) {
            return Err(ManifestError::Inconsistent("empty archive"));
        }
        if self.next_offset().is_some_and(|next| self.start_offset > next) {
            return Err(ManifestError::Inconsistent("start offset beyond the data"));
        }
        Ok(())
    }
}

/// Where an offset lives in a manifest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Location<'a> {
    /// A recent segment.
    Segment(&'a SegmentMeta),
    /// A segment listed by this archived manifest.
    Archive(&'a ArchiveRef),
}

/// An immutable archived manifest: segments that spilled over from the partition
/// manifest.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ArchivedManifest {
    /// Which partition.
    pub path: PartitionPath,
    /// The segments, oldest first, contiguous.
    pub segments: Vec<SegmentMeta>,
}

impl ArchivedManifest {
    /// The reference the partition manifest keeps for this archive.
    pub fn reference(&self, revision: Revision) -> Option<ArchiveRef> {
        let first = self.segments.first()?;
        let last = self.segments.last()?;
        Some(ArchiveRef {
            base_offset: first.base_offset,
            last_offset: last.last_offset,
            size_bytes: self.segments.iter().map(|s| s.size_bytes).sum(),
            max_timestamp_ms: self
                .segments
                .iter()
                .map(|s| s.max_timestamp_ms)
                .max()
                .unwrap_or(-1),
            segment_count: u32::try_from(self.segments.len()).unwrap_or(u32::MAX),
            revision,
        })
    }

    /// The segment holding `offset`.
    pub fn find(&self, offset: i64) -> Option<&SegmentMeta> {
        let i = find_covering(&self.segments, offset, |s| (s.base_offset, s.last_offset))?;
        self.segments.get(i)
    }

    /// Encodes the archive.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(KIND_ARCHIVE);
        w.path(&self.path);
        w.u32(self.segments.len() as u32);
        for s in &self.segments {
            w.segment(s);
        }
        w.finish()
    }

    /// Decodes and checks an archive of `path`.
    pub fn decode(path: &PartitionPath, bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut r = Reader::open(bytes, KIND_ARCHIVE)?;
        let decoded_path = r.path()?;
        if &decoded_path != path {
            return Err(ManifestError::WrongPartition);
        }
        let count = r.count()?;
        let mut segments = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            segments.push(r.segment()?);
        }
        r.end()?;
        if segments.is_empty() {
            return Err(ManifestError::Inconsistent("empty archive"));
        }
        check_contiguous(segments.iter().map(|s| (s.base_offset, s.last_offset)))?;
        Ok(ArchivedManifest {
            path: decoded_path,
            segments,
        })
    }
}

/// The lineage marker of a partition's prefix: a manifest of this partition has been
/// durable here (so a prefix without a manifest but with a marker lost its manifest).
/// Its content only identifies the partition and, for an operator, the term of the
/// leader that (last) wrote it; puts of it are idempotent in meaning, so a late-landing
/// one never rolls anything back.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LineageMarker {
    /// Which partition.
    pub path: PartitionPath,
    /// Term of the leader that wrote it.
    pub writer_term: i64,
}

impl LineageMarker {
    /// Encodes the marker.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(KIND_LINEAGE);
        w.path(&self.path);
        w.i64(self.writer_term);
        w.finish()
    }

    /// Decodes a marker, which must belong to `path` (a marker of another partition
    /// under this prefix is [`ManifestError::WrongPartition`]).
    pub fn decode(path: &PartitionPath, bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut r = Reader::open(bytes, KIND_LINEAGE)?;
        let decoded_path = r.path()?;
        if &decoded_path != path {
            return Err(ManifestError::WrongPartition);
        }
        let writer_term = r.i64()?;
        r.end()?;
        Ok(LineageMarker {
            path: decoded_path,
            writer_term,
        })
    }
}

fn find_covering<T>(items: &[T], offset: i64, range: impl Fn(&T) -> (i64, i64)) -> Option<usize> {
    let after = items.partition_point(|item| range(item).0 <= offset);
    let i = after.checked_sub(1)?;
    (offset <= range(items.get(i)?).1).then_some(i)
}

fn check_contiguous(ranges: impl Iterator<Item = (i64, i64)>) -> Result<(), ManifestError> {
    let mut next: Option<i64> = None;
    for (base, last) in ranges {
        if base < 0 || last < base {
            return Err(ManifestError::Inconsistent("empty or negative range"));
        }
        if next.is_some_and(|n| n != base) {
            return Err(ManifestError::Inconsistent("ranges not contiguous"));
        }
        next = Some(last + 1);
    }
    Ok(())
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn new(kind: u8) -> Self {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.push(kind);
        Writer { out }
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn path(&mut self, path: &PartitionPath) {
        let topic = path.topic.as_bytes();
        assert!(
            topic.len() <= MAX_TOPIC_BYTES,
            "topic name too long for a manifest"
        );
        self.out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        self.out.extend_from_slice(topic);
        self.out.extend_from_slice(&path.partition.to_be_bytes());
        self.i64(path.revision);
    }
    fn revision(&mut self, r: Revision) {
        self.i64(r.uploader_term);
        self.u64(r.seq);
    }
    fn segment(&mut self, s: &SegmentMeta) {
        self.i64(s.base_offset);
        self.i64(s.last_offset);
        self.i64(s.term);
        self.u64(s.size_bytes);
        self.i64(s.max_timestamp_ms);
        self.i64(s.local_segment.base_offset);
        self.i64(s.local_segment.term);
        self.u64(s.object_position_bytes);
        self.revision(s.revision);
    }
    fn archive_ref(&mut self, a: &ArchiveRef) {
        self.i64(a.base_offset);
        self.i64(a.last_offset);
        self.u64(a.size_bytes);
        self.i64(a.max_timestamp_ms);
        self.u32(a.segment_count);
        self.revision(a.revision);
    }
    fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.out);
        self.out.extend_from_slice(&crc.to_be_bytes());
        self.out
    }
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
    /// The format version of the bytes.
    version: u16,
}

impl<'a> Reader<'a> {
    fn open(bytes: &'a [u8], kind: u8) -> Result<Self, ManifestError> {
        if bytes.len() < 4 + 2 + 1 + 4 || &bytes[..4] != MAGIC {
            return Err(ManifestError::BadFormat);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(ManifestError::BadChecksum);
        }
        let mut r = Reader {
            body,
            at: 4,
            version: 0,
        };
        r.version = u16::from_be_bytes(r.take::<2>()?);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&r.version) {
            return Err(ManifestError::BadFormat);
        }
        let found = r.take::<1>()?[0];
        if found != kind {
            return Err(ManifestError::WrongKind(found));
        }
        Ok(r)
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let slice = self
            .body
            .get(self.at..self.at + N)
            .ok_or(ManifestError::Truncated)?;
        let mut raw = [0u8; N];
        raw.copy_from_slice(slice);
        self.at += N;
        Ok(raw)
    }
    fn u32(&mut self) -> Result<u32, ManifestError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, ManifestError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, ManifestError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    fn count(&mut self) -> Result<usize, ManifestError> {
        let n = self.u32()? as usize;
        if n > MAX_ENCODED_ENTRIES || n > self.body.len().saturating_sub(self.at) {
            return Err(ManifestError::Truncated);
        }
        Ok(n)
    }
    fn path(&mut self) -> Result<PartitionPath, ManifestError> {
        let len = u16::from_be_bytes(self.take()?) as usize;
        if len > MAX_TOPIC_BYTES {
            return Err(ManifestError::Truncated);
        }
        let raw = self
            .body
            .get(self.at..self.at + len)
            .ok_or(ManifestError::Truncated)?;
        let topic = std::str::from_utf8(raw)
            .map_err(|_| ManifestError::Inconsistent("topic name is not UTF-8"))?
            .to_string();
        self.at += len;
        let partition = i32::from_be_bytes(self.take()?);
        let revision = self.i64()?;
        Ok(PartitionPath {
            topic,
            partition,
            revision,
        })
    }
    fn revision(&mut self) -> Result<Revision, ManifestError> {
        Ok(Revision {
            uploader_term: self.i64()?,
            seq: self.u64()?,
        })
    }
    fn segment(&mut self) -> Result<SegmentMeta, ManifestError> {
        let meta = SegmentMeta {
            base_offset: self.i64()?,
            last_offset: self.i64()?,
            term: self.i64()?,
            size_bytes: self.u64()?,
            max_timestamp_ms: self.i64()?,
            local_segment: SegmentId {
                base_offset: self.i64()?,
                term: self.i64()?,
            },
            object_position_bytes: self.u64()?,
            revision: self.revision()?,
        };
        if meta.local_segment.base_offset > meta.base_offset || meta.size_bytes == 0 {
            return Err(ManifestError::Inconsistent("segment entry"));
        }
        Ok(meta)
    }
    fn archive_ref(&mut self) -> Result<ArchiveRef, ManifestError> {
        Ok(ArchiveRef {
            base_offset: self.i64()?,
            last_offset: self.i64()?,
            size_bytes: self.u64()?,
            max_timestamp_ms: self.i64()?,
            segment_count: self.u32()?,
            revision: self.revision()?,
        })
    }
    fn end(&self) -> Result<(), ManifestError> {
        if self.at == self.body.len() {
            Ok(())
        } else {
            Err(ManifestError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn path() -> PartitionPath {
        PartitionPath {
            topic: "orders".into(),
            partition: 3,
            revision: 7,
        }
    }

    fn meta(base: i64, last: i64, seq: u64) -> SegmentMeta {
        SegmentMeta {
            base_offset: base,
            last_offset: last,
            term: 2,
            size_bytes: 100 + (last - base) as u64,
            max_timestamp_ms: 1_000 + last,
            local_segment: SegmentId {
                base_offset: base,
                term: 2,
            },
            object_position_bytes: 0,
            revision: Revision {
                uploader_term: 2,
                seq,
            },
        }
    }

    fn manifest(lengths: &[i64]) -> PartitionManifest {
        let mut m = PartitionManifest::new(path(), 2);
        let mut base = 10;
        for (i, len) in lengths.iter().enumerate() {
            m.segments.push(meta(base, base + len - 1, i as u64));
            base += len;
        }
        m.start_offset = 10;
        m.version = 4;
        m
    }

    #[test]
    fn keys_carry_offset_term_and_revision_and_parse_back() {
        let p = path();
        let s = meta(100, 199, 9);
        assert_eq!(p.segment_key(&s), "orders/3_7/100-2-2.9.log");
        assert_eq!(
            p.parse_key(&p.index_key(&s)),
            Some(ObjectName::Segment {
                base_offset: 100,
                term: 2,
                revision: s.revision,
                is_index: true
            })
        );
        assert_eq!(p.parse_key(&p.manifest_key()), Some(ObjectName::Manifest));
        let a = ArchivedManifest {
            path: p.clone(),
            segments: vec![s],
        }
        .reference(Revision {
            uploader_term: 3,
            seq: 1,
        })
        .unwrap();
        assert_eq!(
            p.parse_key(&p.archive_key(&a)),
            Some(ObjectName::Archive {
                base_offset: 100,
                last_offset: 199,
                revision: a.revision
            })
        );
        assert_eq!(p.parse_key(&p.lineage_key()), Some(ObjectName::Lineage));
        assert_eq!(p.lineage_key(), "orders/3_7/lineage");
        assert_eq!(p.parse_key("other/3_7/manifest"), None);
        assert_eq!(p.parse_key("orders/3_7/junk"), None);
    }

    #[test]
    fn the_recovery_point_round_trips_and_version_1_still_decodes() {
        let mut m = manifest(&[5, 5]);
        m.recovery = Some(RecoveryPoint {
            incarnation: 9,
            next_offset: 20,
            term: 4,
        });
        assert_eq!(PartitionManifest::decode(&path(), &m.encode()), Ok(m.clone()));
        // A version 1 manifest: the same bytes without the recovery section.
        m.recovery = None;
        let mut v1 = m.encode();
        v1.truncate(v1.len() - 4 - 1);
        v1[4..6].copy_from_slice(&1u16.to_be_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(PartitionManifest::decode(&path(), &v1), Ok(m));
    }

    #[test]
    fn locate_finds_recent_and_archived_offsets() {
        let mut m = manifest(&[5, 5]);
        m.archives.push(ArchiveRef {
            base_offset: 0,
            last_offset: 9,
            size_bytes: 1,
            max_timestamp_ms: 1,
            segment_count: 2,
            revision: Revision {
                uploader_term: 1,
                seq: 0,
            },
        });
        m.start_offset = 3;
        m.check().unwrap();
        assert_eq!(m.locate(2), None, "below the start offset");
        assert!(matches!(m.locate(3), Some(Location::Archive(_))));
        assert!(matches!(m.locate(14), Some(Location::Segment(s)) if s.base_offset == 10));
        assert!(matches!(m.locate(15), Some(Location::Segment(s)) if s.base_offset == 15));
        assert_eq!(m.locate(20), None);
        assert_eq!(m.next_offset(), Some(20));
        assert_eq!(m.first_offset(), Some(0));
    }

    #[test]
    fn gaps_and_wrong_partitions_are_rejected() {
        let mut m = manifest(&[5, 5]);
        m.segments[1].base_offset += 1;
        let bytes = m.encode();
        assert_eq!(
            PartitionManifest::decode(&path(), &bytes),
            Err(ManifestError::Inconsistent("ranges not contiguous"))
        );
        let good = manifest(&[5]).encode();
        let mut other = path();
        other.partition = 4;
        assert_eq!(
            PartitionManifest::decode(&other, &good),
            Err(ManifestError::WrongPartition)
        );
        assert!(matches!(
            ArchivedManifest::decode(&path(), &good),
            Err(ManifestError::WrongKind(1))
        ));
    }

    #[test]
    fn lineage_markers_round_trip_and_belong_to_one_partition() {
        let marker = LineageMarker {
            path: path(),
            writer_term: 5,
        };
        let bytes = marker.encode();
        assert_eq!(LineageMarker::decode(&path(), &bytes), Ok(marker));
        let mut other = path();
        other.revision = 8;
        assert_eq!(
            LineageMarker::decode(&other, &bytes),
            Err(ManifestError::WrongPartition)
        );
        assert!(matches!(
            PartitionManifest::decode(&path(), &bytes),
            Err(ManifestError::WrongKind(3))
        ));
        let mut flipped = bytes.clone();
        flipped[9] ^= 1;
        assert!(LineageMarker::decode(&path(), &flipped).is_err());
        assert!(LineageMarker::decode(&path(), &bytes[..bytes.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn manifests_round_trip(lengths in prop::collection::vec(1i64..1_000, 0..50)) {
            let m = manifest(&lengths);
            let bytes = m.encode();
            prop_assert_eq!(PartitionManifest::decode(&path(), &bytes), Ok(m.clone()));
            if !m.segments.is_empty() {
                let a = ArchivedManifest { path: path(), segments: m.segments.clone() };
                prop_assert_eq!(ArchivedManifest::decode(&path(), &a.encode()), Ok(a));
            }
        }

        #[test]
        fn any_corruption_is_an_error_never_a_panic(
            lengths in prop::collection::vec(1i64..1_000, 1..20),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = manifest(&lengths).encode();
            let mut flipped = bytes.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= 1 << bit;
            prop_assert!(PartitionManifest::decode(&path(), &flipped).is_err());
            let truncated = &bytes[..cut.index(bytes.len())];
            prop_assert!(PartitionManifest::decode(&path(), truncated).is_err());
        }
    }
}
