//! `Log::reset_to` on the real disk: the `ResetLog` effect replaces the partition's
//! log by an empty one at the snapshot point (marker checkpoint, old segments deleted,
//! directory synced), the new log grows from there and survives a reopen, and a reset
//! cut short after its checkpoint (a failed unlink, then a crash) recovers to the empty
//! log, never to a mix of old and new.

use bytes::Bytes;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::{LogConfig, LogEvent};
use oxbow_core::time::Instant;
use oxbow_runtime_real::storage::fault::{FaultOp, FaultyVfs};
use oxbow_runtime_real::storage::vfs::{RealVfs, Vfs};
use oxbow_runtime_real::storage::{BufferPool, DiskLog, PoolConfig, StorageConfig};
use std::path::Path;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("storage-reset-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        preallocate_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

fn batch(i: usize) -> Bytes {
    build_batch(
        &[NewRecord::value(
            format!("value-{i}"),
            1_700_000_000_000 + i as i64,
        )],
        BatchOptions::default(),
    )
}

fn events<V: Vfs>(log: &mut DiskLog<V>) -> Vec<LogEvent> {
    std::iter::from_fn(|| log.log_mut().poll_event()).collect()
}

/// Appends one synced batch per term in `terms`, `per_term` each.
fn append_terms<V: Vfs>(log: &mut DiskLog<V>, terms: std::ops::RangeInclusive<i64>, per_term: usize) {
    for term in terms {
        for i in 0..per_term {
            log.log_mut().append(Instant::ZERO, term, batch(i)).unwrap();
            log.log_mut().sync();
            log.pump(Instant::ZERO);
        }
    }
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log") || n.ends_with(".index"))
        .collect();
    names.sort();
    names
}

fn open_real(dir: &Path) -> DiskLog {
    DiskLog::open_in_dir(
        RealVfs::direct(),
        dir,
        config(),
        BufferPool::new(PoolConfig::default()).unwrap(),
        StorageConfig::default(),
        Instant::ZERO,
    )
    .unwrap()
    .0
}

#[test]
fn a_reset_replaces_the_log_on_disk_and_the_new_log_survives_a_reopen() {
    let dir = tempdir();
    let mut log = open_real(dir.path());
    append_terms(&mut log, 1..=3, 3);
    assert_eq!(
        segment_files(dir.path())
            .iter()
            .filter(|n| n.ends_with(".log"))
            .count(),
        3
    );
    events(&mut log);

    let ticket = log.log_mut().reset_to(100, 4);
    log.pump(Instant::ZERO);
    assert!(events(&mut log).contains(&LogEvent::SyncDone { ticket }));
    assert!(
        segment_files(dir.path()).is_empty(),
        "{:?}",
        segment_files(dir.path())
    );
    drop(log);

    // Reopened empty: the start and the term before it come back from the marker.
    let mut log = open_real(dir.path());
    assert_eq!(log.log().start_offset(), 100);
    assert_eq!(log.log().next_offset(), 100);
    assert_eq!(log.log().reset_term(), Some(4));

    append_terms(&mut log, 5..=5, 4);
    let written = log.read(100, u64::MAX / 4, i64::MAX).unwrap();
    log.close(Instant::ZERO).unwrap();
    let mut log = open_real(dir.path());
    assert_eq!(log.log().start_offset(), 100);
    assert_eq!(log.log().next_offset(), 104);
    assert_eq!(log.read(100, u64::MAX / 4, i64::MAX).unwrap(), written);
    assert_eq!(segment_files(dir.path()), ["100-5-v1.index", "100-5-v1.log"]);
}

#[test]
fn a_reset_cut_short_after_its_checkpoint_recovers_to_the_empty_log() {
    let dir = tempdir();
    let (vfs, faults) = FaultyVfs::new(RealVfs::direct());
    let (mut log, _) = DiskLog::open_in_dir(
        vfs,
        dir.path(),
        config(),
        BufferPool::new(PoolConfig::default()).unwrap(),
        StorageConfig::default(),
        Instant::ZERO,
    )
    .unwrap();
    append_terms(&mut log, 1..=3, 3);
    events(&mut log);
    // The checkpoint lands, every unlink fails: old segments stay on disk, and after
    // a few attempts the log stops taking appends.
    faults.fail_always(FaultOp::Remove, libc::EIO);
    log.log_mut().reset_to(5, 2);
    log.pump(Instant::ZERO);
    // Each attempt fails to unlink the index (logged) and then the segment.
    assert_eq!(faults.injected(), 6, "issued three times");
    assert!(
        events(&mut log)
            .iter()
            .any(|e| matches!(e, LogEvent::Corrupted { .. })),
        "the log gives up"
    );
    assert!(log.log_mut().append(Instant::ZERO, 3, batch(0)).is_err());
    assert_eq!(
        segment_files(dir.path())
            .iter()
            .filter(|n| n.ends_with(".log"))
            .count(),
        3
    );
    // Crash: the process is gone before the reset is retried.
    drop(log);

    let mut log = open_real(dir.path());
    assert_eq!(log.log().start_offset(), 5);
    assert_eq!(log.log().next_offset(), 5);
    assert!(log.log().segments().is_empty());
    assert_eq!(log.log().reset_term(), Some(2));
    log.pump(Instant::ZERO);
    assert!(
        segment_files(dir.path()).is_empty(),
        "{:?}",
        segment_files(dir.path())
    );
}
