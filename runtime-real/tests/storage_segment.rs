//! Direct-I/O segment files on the real disk: unaligned appends and reads round trip,
//! truncation, close/reopen, zeros written ahead of the data and exact lengths on disk
//! once sealed.

use oxbow_runtime_real::storage::aligned::{align_up, BufferPool, PoolConfig, BLOCK_BYTES};
use oxbow_runtime_real::storage::segment::SegmentFile;
use oxbow_runtime_real::storage::vfs::{RealFile, RealVfs};
use proptest::prelude::*;
use std::path::Path;

fn tempdir() -> tempfile::TempDir {
    // Under the target dir: the real disk (O_DIRECT), not a tmpfs /tmp.
    tempfile::Builder::new()
        .prefix("storage-segment-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// A small pool (8 KiB buffers) so that large appends and reads are split in chunks.
fn small_pool() -> BufferPool {
    BufferPool::new(PoolConfig {
        buffer_count: 4,
        buffer_bytes: 2 * BLOCK_BYTES,
    })
    .unwrap()
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed * 7) % 251) as u8 + 1).collect()
}

fn create(path: &Path) -> SegmentFile<RealFile> {
    SegmentFile::create(&RealVfs::direct(), path, 1 << 20).unwrap()
}

fn disk_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The file holds `model`, then only zeros: the block padding and the zeros written
/// ahead, never more than one transfer buffer (`buffer_bytes`) past the block holding
/// the end, and exactly what the segment says it left on disk.
fn check_disk_content(path: &Path, segment: &SegmentFile<RealFile>, model: &[u8], buffer_bytes: u64) {
    let on_disk = std::fs::read(path).unwrap();
    assert_eq!(on_disk.len() as u64, segment.disk_len_bytes());
    assert_eq!(&on_disk[..model.len()], model);
    assert!(
        on_disk[model.len()..].iter().all(|b| *b == 0),
        "only zeros after the data"
    );
    let end = model.len() as u64;
    assert!(
        on_disk.len() as u64 >= align_up(end) && on_disk.len() as u64 <= align_up(end) + buffer_bytes,
        "{} bytes on disk for {end} of data",
        on_disk.len()
    );
}

#[test]
fn odd_sized_appends_round_trip_across_block_boundaries() {
    let dir = tempdir();
    let path = dir.path().join("0-1-v1.log");
    let pool = small_pool();
    let mut segment = create(&path);
    let mut model = Vec::new();
    for (i, len) in [1, 4095, 1, 4096, 4097, 20_000, 3, 8192, 12_289, 7]
        .into_iter()
        .enumerate()
    {
        let data = pattern(i, len);
        segment.append(&pool, model.len() as u64, &data).unwrap();
        model.extend_from_slice(&data);
        assert_eq!(segment.end_bytes(), model.len() as u64);
        check_disk_content(&path, &segment, &model, 2 * BLOCK_BYTES as u64);
    }
    // Every range, aligned or not, comes back exactly.
    for (position, len) in [
        (0, 1),
        (0, model.len()),
        (4095, 2),
        (4096, 4096),
        (5000, 30_000),
        (model.len() - 1, 1),
        (12_345, 99),
    ] {
        let got = segment.read(&pool, position as u64, len as u64).unwrap();
        assert_eq!(
            &got[..],
            &model[position..position + len],
            "range {position}+{len}"
        );
    }
    // Past the end: clipped, then empty.
    let got = segment.read(&pool, model.len() as u64 - 3, 100).unwrap();
    assert_eq!(&got[..], &model[model.len() - 3..]);
    assert!(segment
        .read(&pool, model.len() as u64 + 10, 100)
        .unwrap()
        .is_empty());
    assert_eq!(pool.available(), 4, "every buffer returned");
}

#[test]
fn coalesced_appends_equal_one_by_one_appends() {
    let dir = tempdir();
    let pool = small_pool();
    let parts: Vec<Vec<u8>> = [3, 4093, 1, 9000, 0, 16_384, 77]
        .iter()
        .enumerate()
        .map(|(i, len)| pattern(i, *len))
        .collect();
    let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
    let mut segment = create(&dir.path().join("0-1-v1.log"));
    segment.append(&pool, 0, b"head").unwrap();
    segment.append_all(&pool, 4, &slices).unwrap();
    let mut model = b"head".to_vec();
    for part in &parts {
        model.extend_from_slice(part);
    }
    assert_eq!(segment.end_bytes(), model.len() as u64);
    assert_eq!(&segment.read(&pool, 0, u64::MAX).unwrap()[..], &model[..]);
    segment.append(&pool, model.len() as u64, b"tail").unwrap();
    model.extend_from_slice(b"tail");
    assert_eq!(&segment.read(&pool, 0, u64::MAX).unwrap()[..], &model[..]);
}

#[test]
fn appends_must_be_sequential() {
    let dir = tempdir();
    let pool = small_pool();
    let mut segment = create(&dir.path().join("0-1-v1.log"));
    segment.append(&pool, 0, b"hello").unwrap();
    let error = segment.append(&pool, 3, b"x").unwrap_err();
    assert!(error.to_string().contains("ends at byte 5"), "{error}");
    assert_eq!(segment.end_bytes(), 5);
}

#[test]
fn truncate_then_append() {
    let dir = tempdir();
    let path = dir.path().join("0-1-v1.log");
    let pool = small_pool();
    let mut segment = create(&path);
    let first = pattern(1, 10_000);
    segment.append(&pool, 0, &first).unwrap();
    segment.truncate(&pool, 5_001).unwrap();
    assert_eq!(disk_len(&path), 5_001, "the cut is exact on disk");
    let second = pattern(2, 6_000);
    segment.append(&pool, 5_001, &second).unwrap();
    let mut model = first[..5_001].to_vec();
    model.extend_from_slice(&second);
    let got = segment.read(&pool, 0, 1 << 20).unwrap();
    assert_eq!(&got[..], &model[..]);
    // Truncation to a block boundary, and to zero.
    segment.truncate(&pool, 8192).unwrap();
    segment.append(&pool, 8192, b"abc").unwrap();
    assert_eq!(
        &segment.read(&pool, 8190, 10).unwrap()[..],
        &[model[8190], model[8191], b'a', b'b', b'c']
    );
    segment.truncate(&pool, 0).unwrap();
    assert_eq!(segment.end_bytes(), 0);
    segment.append(&pool, 0, b"again").unwrap();
    assert_eq!(&segment.read(&pool, 0, 100).unwrap()[..], b"again");
    // Truncating beyond the end is refused.
    assert!(segment.truncate(&pool, 100).is_err());
}

#[test]
fn data_survives_close_and_reopen_with_exact_length() {
    let dir = tempdir();
    let path = dir.path().join("0-1-v1.log");
    let pool = small_pool();
    let mut segment = create(&path);
    let data = pattern(3, 9_999);
    segment.append(&pool, 0, &data).unwrap();
    segment.sync().unwrap();
    segment.close().unwrap();
    assert_eq!(disk_len(&path), 9_999, "no padding after close");

    let mut reopened = SegmentFile::open(&RealVfs::direct(), &path, &pool).unwrap();
    assert_eq!(reopened.end_bytes(), 9_999);
    assert_eq!(&reopened.read(&pool, 0, 20_000).unwrap()[..], &data[..]);
    // The tail block was reloaded: appending keeps the old bytes of that block.
    reopened.append(&pool, 9_999, b"more").unwrap();
    let got = reopened.read(&pool, 8_000, 10_000).unwrap();
    assert_eq!(&got[..1_999], &data[8_000..]);
    assert_eq!(&got[1_999..], b"more");
}

#[test]
fn seal_cuts_padding_and_buffered_mode_behaves_the_same() {
    let dir = tempdir();
    let pool = small_pool();
    for vfs in [RealVfs::direct(), RealVfs::buffered()] {
        let path = dir
            .path()
            .join(format!("{:?}.log", vfs).replace(['{', '}', ' ', ':'], ""));
        let mut segment = SegmentFile::create(&vfs, &path, 64 * 1024).unwrap();
        segment.append(&pool, 0, &pattern(4, 100)).unwrap();
        // The block, then zeros ahead to the end of the 8 KiB transfer buffer.
        assert_eq!(disk_len(&path), 8192);
        segment.seal().unwrap();
        assert_eq!(disk_len(&path), 100);
        assert_eq!(&segment.read(&pool, 0, 100).unwrap()[..], &pattern(4, 100)[..]);
    }
}

#[test]
fn appends_that_grow_the_file_write_zeros_ahead_and_the_next_ones_land_inside() {
    let dir = tempdir();
    let path = dir.path().join("0-1-v1.log");
    let pool = BufferPool::new(PoolConfig::default()).unwrap();
    let buffer_bytes = pool.buffer_bytes() as u64;
    let mut segment = create(&path);
    let mut model = Vec::new();
    let mut grew = 0;
    for i in 0..200 {
        let data = pattern(i, 1000 + i * 37);
        let before = disk_len(&path);
        segment.append(&pool, model.len() as u64, &data).unwrap();
        model.extend_from_slice(&data);
        let after = disk_len(&path);
        if after != before {
            grew += 1;
            // A growing append writes zeros past its block: at most max(64 KiB,
            // data), and never past its transfer buffer (checked below).
            let ahead = after - align_up(model.len() as u64);
            assert!(
                ahead <= align_up((model.len() as u64).max(64 * 1024)),
                "{ahead} ahead of {}",
                model.len()
            );
        }
        check_disk_content(&path, &segment, &model, buffer_bytes);
    }
    // 200 appends of ~4.7 KB (~940 KB): the file grew in a handful of steps, not on
    // every append.
    assert!(grew <= 8, "the file grew on {grew} of 200 appends");
    assert_eq!(&segment.read(&pool, 0, u64::MAX).unwrap()[..], &model[..]);
    segment.seal().unwrap();
    assert_eq!(disk_len(&path), model.len() as u64);
    // A crash leaves the zeros ahead; the segment opens at the file's size (recovery
    // in core finds the last batch and cuts the rest).
    let mut grown = create(&dir.path().join("1-1-v1.log"));
    grown.append(&pool, 0, b"abc").unwrap();
    grown.sync().unwrap();
    let left = grown.disk_len_bytes();
    drop(grown);
    assert_eq!(disk_len(&dir.path().join("1-1-v1.log")), left);
    assert!(left >= 64 * 1024);
}

#[test]
fn creating_over_a_leftover_empties_it() {
    let dir = tempdir();
    let path = dir.path().join("0-1-v1.log");
    std::fs::write(&path, b"leftover").unwrap();
    let segment = create(&path);
    assert_eq!(segment.end_bytes(), 0);
    assert_eq!(disk_len(&path), 0);
}

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    Truncate(u16),
    Reopen,
    Read(u16, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1usize..20_000).prop_map(Op::Append),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Read(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random appends, truncations, reopens and reads agree with a byte-vector model.
    #[test]
    fn segment_matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempdir();
        let path = dir.path().join("0-1-v1.log");
        let pool = small_pool();
        let mut segment = Some(create(&path));
        let mut model: Vec<u8> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let file = segment.as_mut().unwrap();
            match op {
                Op::Append(len) => {
                    let data = pattern(i, len);
                    file.append(&pool, model.len() as u64, &data).unwrap();
                    model.extend_from_slice(&data);
                }
                Op::Truncate(at) => {
                    let at = usize::from(at).min(model.len());
                    file.truncate(&pool, at as u64).unwrap();
                    model.truncate(at);
                }
                Op::Reopen => {
                    segment.take().unwrap().close().unwrap();
                    prop_assert_eq!(disk_len(&path), model.len() as u64);
                    segment = Some(SegmentFile::open(&RealVfs::direct(), &path, &pool).unwrap());
                }
                Op::Read(position, len) => {
                    let position = usize::from(position).min(model.len());
                    let end = (position + usize::from(len)).min(model.len());
                    let got = file.read(&pool, position as u64, u64::from(len)).unwrap();
                    prop_assert_eq!(&got[..], &model[position..end]);
                }
            }
            prop_assert_eq!(segment.as_ref().unwrap().end_bytes(), model.len() as u64);
        }
        let file = segment.as_ref().unwrap();
        let all = file.read(&pool, 0, u64::MAX).unwrap();
        prop_assert_eq!(&all[..], &model[..]);
    }
}
