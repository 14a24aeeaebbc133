//! The effect executor on the real disk: effect order, group commit, checkpoint and
//! index files, reads, and failures injected through the file layer (ENOSPC, EIO).

use bytes::Bytes;
use oxbow_core::log::io::{DiskError, FileRange, LogCompletion, LogEffect, SegmentId};
use oxbow_runtime_real::storage::fault::{FaultOp, Faults, FaultyVfs};
use oxbow_runtime_real::storage::vfs::{RealVfs, Vfs};
use oxbow_runtime_real::storage::{BufferPool, PartitionStorage, PoolConfig, StorageConfig};

const SEG: SegmentId = SegmentId {
    base_offset: 0,
    term: 1,
};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("storage-executor-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn storage<V: Vfs>(vfs: V, dir: &std::path::Path) -> PartitionStorage<V> {
    let pool = BufferPool::new(PoolConfig::default()).unwrap();
    PartitionStorage::open(vfs, dir, pool, StorageConfig::default()).unwrap()
}

fn faulty(dir: &std::path::Path) -> (PartitionStorage<FaultyVfs<RealVfs>>, Faults) {
    let (vfs, faults) = FaultyVfs::new(RealVfs::direct());
    (storage(vfs, dir), faults)
}

fn create(generation: u64) -> LogEffect {
    LogEffect::CreateSegment {
        generation,
        segment: SEG,
        preallocate_bytes: 1 << 20,
    }
}

fn write(generation: u64, position: u64, data: &[u8], last_offset: i64) -> LogEffect {
    LogEffect::Write {
        generation,
        segment: SEG,
        position,
        data: Bytes::copy_from_slice(data),
        last_offset,
    }
}

fn sync(generation: u64, sync_id: u64) -> LogEffect {
    LogEffect::Sync {
        generation,
        sync_id,
        segments: vec![SEG],
    }
}

fn run<V: Vfs>(storage: &mut PartitionStorage<V>, effects: Vec<LogEffect>) -> Vec<LogCompletion> {
    for effect in effects {
        storage.submit(effect).unwrap();
    }
    storage.run();
    std::iter::from_fn(|| storage.poll_completion()).collect()
}

fn whole(storage: &mut PartitionStorage<impl Vfs>) -> Bytes {
    storage
        .read(FileRange {
            segment: SEG,
            position: 0,
            len_bytes: u64::MAX / 2,
        })
        .unwrap()
}

#[test]
fn group_commit_serves_every_queued_sync_with_one_fdatasync() {
    let dir = tempdir();
    let mut storage = storage(RealVfs::direct(), dir.path());
    let completions = run(
        &mut storage,
        vec![
            create(0),
            write(0, 0, b"aaa", 0),
            sync(0, 1),
            write(0, 3, b"bbbb", 1),
            sync(0, 2),
            write(0, 7, b"c", 2),
            sync(0, 3),
        ],
    );
    assert_eq!(
        completions,
        vec![
            LogCompletion::Written {
                generation: 0,
                last_offset: 0
            },
            LogCompletion::Written {
                generation: 0,
                last_offset: 1
            },
            LogCompletion::Written {
                generation: 0,
                last_offset: 2
            },
            LogCompletion::Synced {
                generation: 0,
                sync_id: 1
            },
            LogCompletion::Synced {
                generation: 0,
                sync_id: 2
            },
            LogCompletion::Synced {
                generation: 0,
                sync_id: 3
            },
        ]
    );
    let stats = storage.stats();
    assert_eq!(stats.fdatasyncs, 1, "{stats:?}");
    assert_eq!(stats.syncs_completed, 3);
    assert_eq!(&whole(&mut storage)[..], b"aaabbbbc");
}

#[test]
fn queued_writes_are_coalesced_and_each_reported() {
    let dir = tempdir();
    let mut storage = storage(RealVfs::direct(), dir.path());
    let mut effects = vec![create(0)];
    let mut model = Vec::new();
    for i in 0..40u8 {
        let data = vec![i; 5_000 + usize::from(i)];
        effects.push(write(0, model.len() as u64, &data, i64::from(i)));
        model.extend_from_slice(&data);
    }
    effects.push(sync(0, 1));
    let completions = run(&mut storage, effects);
    assert_eq!(completions.len(), 41);
    assert_eq!(
        completions[39],
        LogCompletion::Written {
            generation: 0,
            last_offset: 39
        }
    );
    assert_eq!(
        completions[40],
        LogCompletion::Synced {
            generation: 0,
            sync_id: 1
        }
    );
    assert_eq!(storage.stats().writes, 40);
    assert_eq!(&whole(&mut storage)[..], &model[..]);
}

#[test]
fn other_effects_close_the_window_in_order() {
    let dir = tempdir();
    let mut storage = storage(RealVfs::direct(), dir.path());
    let completions = run(
        &mut storage,
        vec![
            create(0),
            write(0, 0, b"0123456789", 0),
            sync(0, 1),
            LogEffect::TruncateSegment {
                generation: 0,
                segment: SEG,
                len_bytes: 4,
            },
            write(0, 4, b"xy", 1),
            LogEffect::Read {
                generation: 0,
                read_id: 9,
                range: FileRange {
                    segment: SEG,
                    position: 2,
                    len_bytes: 100,
                },
            },
            LogEffect::WriteCheckpoint {
                generation: 0,
                checkpoint_id: 5,
                data: Bytes::from_static(b"ckpt"),
            },
            LogEffect::WriteIndex {
                generation: 0,
                segment: SEG,
                data: Bytes::from_static(b"idx"),
            },
        ],
    );
    assert_eq!(
        completions,
        vec![
            LogCompletion::Written {
                generation: 0,
                last_offset: 0
            },
            LogCompletion::Synced {
                generation: 0,
                sync_id: 1
            },
            LogCompletion::Written {
                generation: 0,
                last_offset: 1
            },
            LogCompletion::Read {
                generation: 0,
                read_id: 9,
                data: Bytes::from_static(b"23xy")
            },
            LogCompletion::CheckpointWritten {
                generation: 0,
                checkpoint_id: 5
            },
        ]
    );
    assert_eq!(std::fs::read(dir.path().join("checkpoint")).unwrap(), b"ckpt");
    assert!(!dir.path().join("checkpoint.tmp").exists());
    assert_eq!(std::fs::read(dir.path().join("0-1-v1.index")).unwrap(), b"idx");
    // Delete removes both files.
    let completions = run(
        &mut storage,
        vec![LogEffect::DeleteSegment {
            generation: 0,
            segment: SEG,
        }],
    );
    assert!(completions.is_empty());
    assert!(!dir.path().join("0-1-v1.log").exists());
    assert!(!dir.path().join("0-1-v1.index").exists());
}

#[test]
fn a_write_that_does_not_append_fails_with_a_clear_error() {
    let dir = tempdir();
    let mut storage = storage(RealVfs::direct(), dir.path());
    let completions = run(
        &mut storage,
        vec![create(0), write(0, 0, b"abc", 0), write(0, 10, b"d", 1)],
    );
    match &completions[1] {
        LogCompletion::Failed {
            generation: 0,
            error: DiskError::Io(message),
        } => assert!(
            message.contains("0-1-v1.log") && message.contains("ends at byte 3"),
            "{message}"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn enospc_fails_the_write_keeps_durable_data_and_recovers_when_space_returns() {
    let dir = tempdir();
    let (mut storage, faults) = faulty(dir.path());
    let completions = run(
        &mut storage,
        vec![create(0), write(0, 0, b"durable", 0), sync(0, 1)],
    );
    assert_eq!(completions.len(), 2);

    // The disk fills up: the write fails, and so does the sync that covers it (one
    // failure per generation).
    faults.fail_always(FaultOp::Write, libc::ENOSPC);
    let completions = run(&mut storage, vec![write(0, 7, b"lost", 1), sync(0, 2)]);
    assert_eq!(
        completions,
        vec![LogCompletion::Failed {
            generation: 0,
            error: DiskError::NoSpace
        }]
    );
    // The executor keeps serving: a sync of the older generation queued later still
    // runs and is reported (the log ignores it).
    faults.clear();
    let completions = run(&mut storage, vec![sync(0, 3)]);
    assert_eq!(
        completions,
        vec![LogCompletion::Synced {
            generation: 0,
            sync_id: 3
        }]
    );
    faults.fail_always(FaultOp::Write, libc::ENOSPC);
    // EDQUOT is a full disk too.
    faults.clear();
    faults.fail_times(FaultOp::Write, libc::EDQUOT, 1);
    let completions = run(&mut storage, vec![write(1, 7, b"quota", 1)]);
    assert_eq!(
        completions,
        vec![LogCompletion::Failed {
            generation: 1,
            error: DiskError::NoSpace
        }]
    );

    // Space is back: the next generation appends where the durable data ends.
    let completions = run(&mut storage, vec![write(2, 7, b"-more", 1), sync(2, 3)]);
    assert_eq!(
        completions,
        vec![
            LogCompletion::Written {
                generation: 2,
                last_offset: 1
            },
            LogCompletion::Synced {
                generation: 2,
                sync_id: 3
            },
        ]
    );
    assert_eq!(&whole(&mut storage)[..], b"durable-more");
    storage.close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("0-1-v1.log")).unwrap(),
        b"durable-more"
    );
}

#[test]
fn enospc_on_preallocation_fails_creation_and_leaves_no_file() {
    let dir = tempdir();
    let (mut storage, faults) = faulty(dir.path());
    faults.fail_times(FaultOp::Allocate, libc::ENOSPC, 1);
    let completions = run(&mut storage, vec![create(0), write(0, 0, b"x", 0)]);
    assert_eq!(
        completions[0],
        LogCompletion::Failed {
            generation: 0,
            error: DiskError::NoSpace
        }
    );
    assert!(!dir.path().join("0-1-v1.log").exists());
    // A file system that cannot preallocate at all is fine.
    faults.fail_times(FaultOp::Allocate, libc::EOPNOTSUPP, 1);
    let completions = run(&mut storage, vec![create(1), write(1, 0, b"x", 0), sync(1, 1)]);
    assert_eq!(completions.len(), 2, "{completions:?}");
    assert!(matches!(completions[1], LogCompletion::Synced { .. }));
}

#[test]
fn a_failed_sync_reports_io_with_path_and_os_error() {
    let dir = tempdir();
    let (mut storage, faults) = faulty(dir.path());
    faults.fail_times(FaultOp::Sync, libc::EIO, 1);
    let completions = run(
        &mut storage,
        vec![
            create(3),
            write(3, 0, b"a", 0),
            sync(3, 1),
            write(3, 1, b"b", 1),
            sync(3, 2),
        ],
    );
    assert_eq!(completions.len(), 3, "{completions:?}");
    match &completions[2] {
        LogCompletion::Failed {
            generation: 3,
            error: DiskError::Io(message),
        } => {
            assert!(message.contains("fdatasync"), "{message}");
            assert!(message.contains("0-1-v1.log"), "{message}");
            assert!(message.contains("Input/output error"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The next sync succeeds.
    let completions = run(&mut storage, vec![sync(4, 3)]);
    assert_eq!(
        completions,
        vec![LogCompletion::Synced {
            generation: 4,
            sync_id: 3
        }]
    );
}

#[test]
fn a_failed_index_write_is_not_reported_but_counted() {
    let dir = tempdir();
    let (mut storage, faults) = faulty(dir.path());
    faults.fail_times(FaultOp::SmallFileWrite, libc::ENOSPC, 1);
    let completions = run(
        &mut storage,
        vec![LogEffect::WriteIndex {
            generation: 0,
            segment: SEG,
            data: Bytes::from_static(b"idx"),
        }],
    );
    assert!(completions.is_empty());
    assert_eq!(storage.stats().index_write_failures, 1);
    // A failed checkpoint is reported (the log waits for its completion).
    faults.fail_times(FaultOp::SmallFileWrite, libc::ENOSPC, 1);
    let completions = run(
        &mut storage,
        vec![LogEffect::WriteCheckpoint {
            generation: 0,
            checkpoint_id: 1,
            data: Bytes::from_static(b"c"),
        }],
    );
    assert_eq!(
        completions,
        vec![LogCompletion::Failed {
            generation: 0,
            error: DiskError::NoSpace
        }]
    );
}

#[test]
fn the_queue_is_bounded() {
    let dir = tempdir();
    let pool = BufferPool::new(PoolConfig::default()).unwrap();
    let mut storage = PartitionStorage::open(
        RealVfs::direct(),
        dir.path(),
        pool,
        StorageConfig {
            max_queued_effects: 2,
        },
    )
    .unwrap();
    storage.submit(create(0)).unwrap();
    storage.submit(write(0, 0, b"a", 0)).unwrap();
    let refused = storage.submit(sync(0, 1)).unwrap_err();
    assert_eq!(refused.effect, sync(0, 1));
    assert_eq!(storage.run(), 2);
    storage.submit(refused.effect).unwrap();
    storage.run();
}

#[test]
fn an_exhausted_pool_leaves_effects_queued() {
    let dir = tempdir();
    let pool = BufferPool::new(PoolConfig {
        buffer_count: 1,
        buffer_bytes: 4096,
    })
    .unwrap();
    let mut storage = PartitionStorage::open(
        RealVfs::direct(),
        dir.path(),
        pool.clone(),
        StorageConfig::default(),
    )
    .unwrap();
    let held = pool.acquire().unwrap();
    storage.submit(create(0)).unwrap();
    storage.submit(write(0, 0, b"a", 0)).unwrap();
    assert_eq!(storage.run(), 1, "the create runs, the write waits for a buffer");
    assert_eq!(storage.queued(), 1);
    drop(held);
    assert_eq!(storage.run(), 1);
    assert_eq!(
        storage.poll_completion(),
        Some(LogCompletion::Written {
            generation: 0,
            last_offset: 0
        })
    );
}
