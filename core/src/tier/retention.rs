//! Two-tier retention decisions, as pure functions over what is known:
//!
//! * **local** (`retention.local.target.bytes/ms`): which local segments may be deleted
//!   — only closed ones wholly covered by a manifest that is durable in the store;
//! * **total** (`retention.bytes/ms`): which remote entries (whole archived manifests
//!   first, then recent segments) drop out of the manifest. The last recent segment is
//!   always kept, so the manifest still says where uploading continues.

use super::archiver::LocalSegmentView;
use super::manifest::PartitionManifest;
use super::TierConfig;

/// The new local start offset after local retention, if segments may go.
///
/// `durable_next_offset` is the offset after the last one named by the durable
/// manifest; a segment is deletable only if every offset in it is below it. The last
/// local segment is always kept.
pub fn local_start_after_retention(
    segments: &[LocalSegmentView],
    config: &TierConfig,
    now_wall_ms: i64,
    durable_next_offset: Option<i64>,
) -> Option<i64> {
    let durable_next = durable_next_offset?;
    let mut total_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut keep_from = 0;
    for segment in segments.iter().take(segments.len().saturating_sub(1)) {
        if !segment.closed || segment.next_offset > durable_next {
            break;
        }
        let over_size = config
            .local_target_bytes
            .is_some_and(|target| total_bytes - segment.size_bytes >= target);
        let too_old = is_older(segment.max_timestamp_ms, config.local_target_ms, now_wall_ms);
        if !(over_size || too_old) {
            break;
        }
        total_bytes -= segment.size_bytes;
        keep_from += 1;
    }
    (keep_from > 0)
        .then(|| segments.get(keep_from).map(|s| s.id.base_offset))
        .flatten()
}

/// What total retention removes from a manifest.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RemoteCut {
    /// Archived manifests dropped from the front.
    pub archives: usize,
    /// Recent segments dropped from the front (after all archives went).
    pub segments: usize,
    /// The new remote start offset.
    pub start_offset: i64,
}

/// What `retention.bytes/ms` removes from `manifest`, at most `max_segments` recent
/// segments and `max_archives` archives per call (deletions are queued, and the queue is
/// bounded). `None` when nothing is due.
pub fn remote_cut(
    manifest: &PartitionManifest,
    config: &TierConfig,
    now_wall_ms: i64,
    max_archives: usize,
    max_segments: usize,
) -> Option<RemoteCut> {
    let mut total_bytes = manifest.total_size_bytes();
    let due = |size: u64, max_ts: i64, total: u64| {
        config.retention_bytes.is_some_and(|limit| total - size >= limit)
            || is_older(max_ts, config.retention_ms, now_wall_ms)
    };
    let mut cut = RemoteCut {
        start_offset: manifest.start_offset,
        ..RemoteCut::default()
    };
    for archive in manifest.archives.iter().take(max_archives) {
        if !due(archive.size_bytes, archive.max_timestamp_ms, total_bytes) {
            return finish(cut);
        }
        total_bytes -= archive.size_bytes;
        cut.archives += 1;
        cut.start_offset = archive.last_offset + 1;
    }
    if cut.archives < manifest.archives.len() {
        return finish(cut);
    }
    let removable = manifest.segments.len().saturating_sub(1).min(max_segments);
    for segment in manifest.segments.iter().take(removable) {
        if !due(segment.size_bytes, segment.max_timestamp_ms, total_bytes) {
            break;
        }
        total_bytes -= segment.size_bytes;
        cut.segments += 1;
        cut.start_offset = segment.last_offset + 1;
    }
    finish(cut)
}

fn finish(cut: RemoteCut) -> Option<RemoteCut> {
    (cut.archives + cut.segments > 0).then_some(cut)
}

fn is_older(max_timestamp_ms: i64, limit_ms: Option<u64>, now_wall_ms: i64) -> bool {
    limit_ms.is_some_and(|limit| {
        max_timestamp_ms >= 0
            && now_wall_ms.saturating_sub(max_timestamp_ms) > i64::try_from(limit).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::index::SparseIndex;
    use crate::log::io::SegmentId;
    use crate::tier::manifest::{ArchiveRef, PartitionPath, Revision, SegmentMeta};

    fn local(base: i64, next: i64, size: u64, ts: i64, closed: bool) -> LocalSegmentView {
        LocalSegmentView {
            id: SegmentId {
                base_offset: base,
                term: 1,
            },
            size_bytes: size,
            next_offset: next,
            max_timestamp_ms: ts,
            closed,
            index: SparseIndex::new(base),
        }
    }

    fn config() -> TierConfig {
        TierConfig {
            local_target_bytes: Some(250),
            local_target_ms: None,
            retention_bytes: Some(250),
            retention_ms: None,
            ..TierConfig::default()
        }
    }

    #[test]
    fn local_retention_never_passes_the_durable_manifest() {
        let segs = vec![
            local(0, 10, 100, 1, true),
            local(10, 20, 100, 2, true),
            local(20, 30, 100, 3, true),
            local(30, 35, 100, 4, false),
        ];
        let c = config();
        assert_eq!(
            local_start_after_retention(&segs, &c, 0, None),
            None,
            "nothing durable"
        );
        assert_eq!(
            local_start_after_retention(&segs, &c, 0, Some(5)),
            None,
            "first segment only half covered"
        );
        assert_eq!(
            local_start_after_retention(&segs, &c, 0, Some(15)),
            Some(10),
            "second segment half covered"
        );
        assert_eq!(local_start_after_retention(&segs, &c, 0, Some(20)), Some(10));
        assert_eq!(
            local_start_after_retention(&segs, &c, 0, Some(35)),
            Some(10),
            "keeps 300 bytes: 200 would be under the target"
        );
        let by_age = TierConfig {
            local_target_bytes: None,
            local_target_ms: Some(10),
            ..c
        };
        assert_eq!(
            local_start_after_retention(&segs, &by_age, 13, Some(35)),
            Some(20)
        );
        assert_eq!(
            local_start_after_retention(&segs, &by_age, 1_000, Some(35)),
            Some(30),
            "the active segment stays"
        );
    }

    fn meta(base: i64, last: i64, size: u64, ts: i64) -> SegmentMeta {
        SegmentMeta {
            base_offset: base,
            last_offset: last,
            term: 1,
            size_bytes: size,
            max_timestamp_ms: ts,
            local_segment: SegmentId {
                base_offset: base,
                term: 1,
            },
            object_position_bytes: 0,
            revision: Revision {
                uploader_term: 1,
                seq: base as u64,
            },
        }
    }

    #[test]
    fn total_retention_drops_whole_archives_then_segments_and_keeps_the_last() {
        let path = PartitionPath {
            topic: "t".into(),
            partition: 0,
            revision: 0,
        };
        let mut m = PartitionManifest::new(path, 1);
        m.archives.push(ArchiveRef {
            base_offset: 0,
            last_offset: 9,
            size_bytes: 200,
            max_timestamp_ms: 5,
            segment_count: 2,
            revision: Revision {
                uploader_term: 1,
                seq: 99,
            },
        });
        m.segments = vec![
            meta(10, 19, 100, 10),
            meta(20, 29, 100, 20),
            meta(30, 39, 100, 30),
        ];
        let c = config();
        let cut = remote_cut(&m, &c, 0, 10, 10).unwrap();
        assert_eq!(
            (cut.archives, cut.segments, cut.start_offset),
            (1, 0, 10),
            "300 bytes left, above 250"
        );
        let tighter = TierConfig {
            retention_bytes: Some(200),
            ..c.clone()
        };
        let cut = remote_cut(&m, &tighter, 0, 10, 10).unwrap();
        assert_eq!((cut.archives, cut.segments, cut.start_offset), (1, 1, 20));
        let cut = remote_cut(&m, &c, 0, 0, 10);
        assert_eq!(cut, None, "an archive in the way stops the cut");
        let by_age = TierConfig {
            retention_bytes: None,
            retention_ms: Some(1),
            ..c
        };
        let cut = remote_cut(&m, &by_age, 1_000, 10, 10).unwrap();
        assert_eq!(
            (cut.archives, cut.segments, cut.start_offset),
            (1, 2, 30),
            "the last segment stays"
        );
        let cut = remote_cut(&m, &by_age, 1_000, 10, 1).unwrap();
        assert_eq!(cut.segments, 1, "bounded per round");
    }
}
