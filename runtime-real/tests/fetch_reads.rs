//! Fetch reads on the shard's io_uring: exactly the asked range back without a copy,
//! a file that ends early (a short read), a read that fails (an error, not a panic),
//! the bound on read bytes on the ring; and through a whole node, a segment damaged
//! or cut behind the broker's back answered as Kafka errors while the shard keeps
//! serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use oxbow_runtime_real::shard::disk_ring::{DiskRing, Finished, ReadTag};
use oxbow_runtime_real::shard::net::{bind_reuseport, NetConfig, Reactor};
use oxbow_runtime_real::shard::smp::EventFd;
use oxbow_runtime_real::storage::read_op::{ReadOp, ReadWindow};
use oxbow_runtime_real::storage::vfs::{RealFile, RealVfs, Vfs};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn reactor() -> Reactor {
    let (mut listeners, _) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
    let doorbell = Arc::new(EventFd::new().unwrap());
    Reactor::new(listeners.pop().unwrap(), doorbell, NetConfig::default()).unwrap()
}

/// Runs the ring until `count` reads finished; their outcomes by request number.
fn drain_reads(
    reactor: &mut Reactor,
    ring: &mut DiskRing,
    count: usize,
) -> BTreeMap<u64, std::io::Result<bytes::Bytes>> {
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < count {
        assert!(Instant::now() < deadline, "reads did not finish");
        reactor.wait(Some(Duration::from_millis(100))).unwrap();
        while let Some((id, result)) = reactor.poll_external() {
            match ring.complete(reactor, id, result) {
                Some(Finished::Read(tag, result)) => {
                    out.insert(tag.request, result);
                }
                Some(Finished::Data(..)) => panic!("no data ops were submitted"),
                None => {}
            }
        }
    }
    out
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn ring_reads_return_exact_ranges_short_reads_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0-1-v1.log");
    let data = pattern(3 << 20);
    std::fs::write(&path, &data).unwrap();
    let file = Rc::new(RealVfs::direct().open_data(&path, false).unwrap());
    let mut reactor = reactor();
    // A read bound of 1 MiB: the 3 MiB of reads below go on the ring in turns.
    let mut ring = DiskRing::new(64, 1 << 20);
    let cases: Vec<(u64, u64, u64)> = vec![
        // position, length, the end the broker believes the segment has
        (5000, 100, data.len() as u64),
        (4096, 1 << 20, data.len() as u64),
        (123_457, (1 << 20) + 3, data.len() as u64),
        // The file ends before the segment's believed end: a short read.
        ((3 << 20) - 10_000, 50_000, (3 << 20) + 40_000),
    ];
    for (request, (position, len, end)) in cases.iter().enumerate() {
        let window = ReadWindow::new(*position, *len, *end).unwrap();
        let op = ReadOp::new(Rc::clone(&file), window).unwrap();
        let tag = ReadTag {
            request: request as u64,
            index: 0,
        };
        ring.submit_read(&mut reactor, tag, op).unwrap();
    }
    // A file opened write-only: its read fails with EBADF.
    let write_only: RealFile = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .into();
    let window = ReadWindow::new(0, 4096, data.len() as u64).unwrap();
    let failing = ReadOp::new(Rc::new(write_only), window).unwrap();
    ring.submit_read(
        &mut reactor,
        ReadTag {
            request: 99,
            index: 0,
        },
        failing,
    )
    .unwrap();

    let outcomes = drain_reads(&mut reactor, &mut ring, cases.len() + 1);
    for (request, (position, len, _)) in cases.iter().enumerate() {
        let got = outcomes[&(request as u64)].as_ref().unwrap();
        let from = *position as usize;
        let to = (from + *len as usize).min(data.len());
        assert_eq!(got.len(), to - from, "read {request}");
        assert!(got[..] == data[from..to], "read {request} returned other bytes");
    }
    let error = outcomes[&99].as_ref().unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EBADF));
    let stats = ring.stats();
    assert_eq!(stats.reads, 5);
    assert_eq!(stats.failures, 1);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn blocking_execution_reads_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0-1-v1.log");
    let data = pattern(100_000);
    std::fs::write(&path, &data).unwrap();
    let file = Rc::new(RealVfs::direct().open_data(&path, false).unwrap());
    let window = ReadWindow::new(777, 90_000, data.len() as u64).unwrap();
    let got = ReadOp::new(Rc::clone(&file), window).unwrap().execute().unwrap();
    assert!(got[..] == data[777..90_777]);
    // Past the file's end: what there is.
    let window = ReadWindow::new(99_000, 10_000, 200_000).unwrap();
    let got = ReadOp::new(file, window).unwrap().execute().unwrap();
    assert!(got[..] == data[99_000..]);
}

/// The one segment file of `topic`/0 under `data_dir`.
fn segment_file(data_dir: &std::path::Path, topic: &str) -> std::path::PathBuf {
    let topic_dir = data_dir.join("kafka").join(topic);
    let partition_dir = std::fs::read_dir(&topic_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("0_"))
        .unwrap();
    let mut logs: Vec<_> = std::fs::read_dir(&partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-v1.log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn damaged_and_cut_segments_are_kafka_errors_and_the_shard_keeps_serving() {
    use rskafka::client::partition::Compression;
    use rskafka::record::Record;
    use std::os::unix::fs::FileExt;

    let dir = tempfile::tempdir().unwrap();
    let node = support::start_node(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, partition) = support::topic_client(&node, "damaged").await;
        let record = Record {
            key: None,
            value: Some(vec![b'v'; 1024]),
            headers: BTreeMap::new(),
            timestamp: rskafka::chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        };
        // 20 batches of 1 KiB: the first one lies blocks before the segment's tail
        // block (which the broker rewrites from memory on each append).
        let mut first = None;
        for _ in 0..20 {
            let offsets = partition
                .produce(vec![record.clone()], Compression::NoCompression)
                .await
                .unwrap();
            first.get_or_insert(offsets[0]);
        }
        let first = first.unwrap();
        let fetch = |offset: i64| {
            let partition = &partition;
            async move {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    partition.fetch_records(offset, 1..1 << 20, 0),
                )
                .await
                .expect("a fetch is answered")
            }
        };
        let (records, _) = fetch(first).await.unwrap();
        assert!(!records.is_empty());

        // Rot in the first data batch's records: the CRC check fails.
        let segment = segment_file(dir.path(), "damaged");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment)
            .unwrap();
        let length = file.metadata().unwrap().len();
        let mut whole = vec![0u8; length as usize];
        file.read_exact_at(&mut whole, 0).unwrap();
        let at = whole
            .windows(64)
            .position(|w| w.iter().all(|&b| b == b'v'))
            .unwrap();
        file.write_all_at(b"X", at as u64).unwrap();
        file.sync_all().unwrap();
        let error = fetch(first).await.unwrap_err();
        assert!(format!("{error:?}").contains("CorruptMessage"), "{error:?}");

        // The shard still serves: a new batch is written and read back.
        let offsets = partition
            .produce(vec![record.clone()], Compression::NoCompression)
            .await
            .unwrap();
        let (records, _) = fetch(offsets[0]).await.unwrap();
        assert_eq!(records.last().unwrap().offset, offsets[0]);

        // The file cut behind the broker's back: its reads come back short. The
        // answer is empty or an error, never a hang or a dead shard.
        file.set_len(at as u64 + 1).unwrap();
        file.sync_all().unwrap();
        match fetch(offsets[0]).await {
            Ok((records, _)) => assert!(records.is_empty(), "nothing past the cut is returned"),
            Err(error) => assert!(
                format!("{error:?}").contains("Corrupt") || format!("{error:?}").contains("Storage"),
                "{error:?}"
            ),
        }
        let more = partition
            .produce(vec![record.clone()], Compression::NoCompression)
            .await;
        let _ = more; // the append itself may succeed or fail on the cut file
        let metadata = tokio::time::timeout(Duration::from_secs(10), client.list_topics())
            .await
            .expect("the shard answers metadata")
            .unwrap();
        assert!(metadata.iter().any(|t| t.name == "damaged"));
    });
    node.stop().unwrap();
}
