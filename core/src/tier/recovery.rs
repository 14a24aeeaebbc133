//! Topic recovery planning: from what the object store holds, which partitions a topic
//! had and what each recovered partition contains — its remote start offset, its next
//! offset (where the recovered, empty local log starts), its last term — checked for
//! gaps before anything is created.

use super::manifest::{ManifestError, ObjectName, PartitionManifest, PartitionPath};

/// Why a partition cannot be recovered.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The manifest is unreadable.
    #[error("partition manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// The manifest names no data.
    #[error("the manifest names no data")]
    Empty,
}

/// What a partition recovered from the object store contains.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecoveredPartition {
    /// The partition.
    pub path: PartitionPath,
    /// First readable offset (remote).
    pub start_offset: i64,
    /// Offset after the last uploaded one: the recovered local log starts here, empty,
    /// and the high watermark is here.
    pub next_offset: i64,
    /// Term of the last uploaded data; the recovered partition's first term must be
    /// above it.
    pub last_term: i64,
    /// Bytes of remote data.
    pub size_bytes: u64,
    /// The manifest to continue from.
    pub manifest: PartitionManifest,
}

/// The partitions of `topic` whose manifests appear in a listing of the bucket, sorted.
/// Several revisions of one partition (a topic deleted and re-created) all appear; the
/// caller picks one (normally the highest).
pub fn partitions_in_listing(topic: &str, keys: &[String]) -> Vec<PartitionPath> {
    let mut found: Vec<PartitionPath> = keys
        .iter()
        .filter_map(|key| {
            let rest = key.strip_prefix(topic)?.strip_prefix('/')?;
            let (dir, name) = rest.split_once('/')?;
            let (partition, revision) = dir.split_once('_')?;
            let path = PartitionPath {
                topic: topic.to_string(),
                partition: partition.parse().ok()?,
                revision: revision.parse().ok()?,
            };
            (path.parse_key(key) == Some(ObjectName::Manifest) && name == "manifest").then_some(path)
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// What the partition whose manifest is `manifest_bytes` contains.
pub fn recover_partition(
    path: &PartitionPath,
    manifest_bytes: &[u8],
) -> Result<RecoveredPartition, RecoveryError> {
    let manifest = PartitionManifest::decode(path, manifest_bytes)?;
    let next_offset = manifest.next_offset().ok_or(RecoveryError::Empty)?;
    let last_term = manifest
        .segments
        .last()
        .map_or(manifest.uploader_term, |s| s.term);
    Ok(RecoveredPartition {
        path: path.clone(),
        start_offset: manifest.start_offset,
        next_offset,
        last_term,
        size_bytes: manifest.total_size_bytes(),
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::io::SegmentId;
    use crate::tier::manifest::{Revision, SegmentMeta};

    #[test]
    fn listing_finds_partitions_and_manifests_recover() {
        let p0 = PartitionPath {
            topic: "t".into(),
            partition: 0,
            revision: 4,
        };
        let p1 = PartitionPath {
            topic: "t".into(),
            partition: 1,
            revision: 4,
        };
        let keys = vec![
            p0.manifest_key(),
            format!("{}archive/0-9-1.0.manifest", p0.prefix()),
            p1.manifest_key(),
            "t2/0_4/manifest".to_string(),
            "t/0_4/10-1-1.1.log".to_string(),
        ];
        assert_eq!(partitions_in_listing("t", &keys), vec![p0.clone(), p1]);
        let mut m = PartitionManifest::new(p0.clone(), 3);
        assert_eq!(recover_partition(&p0, &m.encode()), Err(RecoveryError::Empty));
        m.start_offset = 5;
        m.segments.push(SegmentMeta {
            base_offset: 5,
            last_offset: 9,
            term: 2,
            size_bytes: 10,
            max_timestamp_ms: 1,
            local_segment: SegmentId {
                base_offset: 0,
                term: 2,
            },
            object_position_bytes: 3,
            revision: Revision {
                uploader_term: 3,
                seq: 0,
            },
        });
        let r = recover_partition(&p0, &m.encode()).unwrap();
        assert_eq!(
            (r.start_offset, r.next_offset, r.last_term, r.size_bytes),
            (5, 10, 2, 10)
        );
        assert!(matches!(
            recover_partition(&p0, b"junk"),
            Err(RecoveryError::Manifest(_))
        ));
    }
}
