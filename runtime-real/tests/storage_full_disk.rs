//! A node on a small, real file system (a size-limited tmpfs, mounted as root) that
//! fills up: creating many partitions with the default 32 MiB preallocation on a 24 MiB
//! file system works (an idle partition reserves nothing), a produce that finds the
//! disk full fails with KAFKA_STORAGE_ERROR while the shards keep running, no
//! acknowledged record is lost (of the other partitions nor of the one that hit the
//! full disk, live and after a restart), and once space returns the partition takes
//! writes again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use oxbow_runtime_real::node::NodeHandle;
use rskafka::client::error::Error as ClientError;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::client::Client;
use rskafka::record::Record;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A tmpfs of `size` at `dir/mnt`, or `None` (with the reason printed) where this
/// process may not mount one.
fn small_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let mount_point = dir.join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mount_point)
        .output();
    match mounted {
        Ok(out) if out.status.success() => Some(Mount(mount_point)),
        Ok(out) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(error) => {
            eprintln!("SKIPPED: no `mount` command ({error})");
            None
        }
    }
}

/// Writes 1 MiB chunks to `path` until the file system refuses one.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..1024 {
        if file.write_all(&chunk).and_then(|()| file.sync_all()).is_err() {
            return;
        }
    }
    panic!("the file system never filled up");
}

fn record(i: usize) -> Record {
    Record {
        key: None,
        value: Some(format!("{i:08}").into_bytes().repeat(2048)), // 16 KiB
        headers: Default::default(),
        // Now, not a fixed date: a date older than the default 7-day `retention.ms`
        // lets retention delete each segment as soon as it closes.
        timestamp: rskafka::chrono::Utc::now(),
    }
}

/// `call`, or a panic naming `what` after 60 s: no step of this test may hang it.
async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer within 60 s"),
    }
}

async fn partition(client: &Client, topic: &str, p: i32) -> PartitionClient {
    support::partition_client(client, topic, p).await
}

/// One produce, bounded in time (the client retries some errors on its own).
async fn produce_once(client: &PartitionClient, i: usize) -> Result<i64, String> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        client.produce(vec![record(i)], Compression::NoCompression),
    )
    .await
    {
        Ok(Ok(offsets)) => Ok(offsets[0]),
        Ok(Err(ClientError::ServerError { protocol_error, .. })) => Err(format!("{protocol_error:?}")),
        Ok(Err(other)) => Err(other.to_string()),
        Err(_) => Err("timeout".to_string()),
    }
}

/// Reads every acknowledged record back at its offset. One batch per fetch (records
/// are 16 KiB, the fetch asks for at most 20 KB): the Raft no-op control batches a
/// new term starts with are never in a response (rskafka cannot parse them).
async fn assert_acknowledged_present(client: &PartitionClient, acked: &[(i64, usize)]) {
    for (offset, i) in acked {
        let deadline = Instant::now() + Duration::from_secs(30);
        let records = loop {
            // At most one batch (16,456 bytes): the next one may be the Raft no-op of a
            // new term, a control batch rskafka cannot decode.
            let fetch = client.fetch_records(*offset, 1..16_500, 100);
            match bounded(&format!("fetch at {offset}"), fetch).await {
                Ok((records, _)) => break records,
                Err(error) => {
                    assert!(Instant::now() < deadline, "fetch at {offset}: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let found: Vec<_> = records.iter().filter(|r| r.offset == *offset).collect();
        assert_eq!(
            found.len(),
            1,
            "acknowledged offset {offset} read {} times",
            found.len()
        );
        assert_eq!(
            found[0].record.value,
            record(*i).value,
            "offset {offset} holds other bytes"
        );
    }
}

/// A node on `data_dir` with the default settings: the default preallocation (32 MiB
/// per segment) is larger than the file system.
fn node_on(data_dir: &Path) -> NodeHandle {
    support::start_node(data_dir)
}

#[test]
fn a_full_disk_fails_produces_not_shards_and_the_partition_recovers() {
    full_disk_scenario(false);
}

#[test]
fn every_acknowledged_record_of_the_partition_that_hit_the_full_disk_reads_back() {
    full_disk_scenario(true);
}

/// The scenario of the module doc; `read_back_failed` also reads back every
/// acknowledged record of the partition whose append hit the full disk (live and after
/// a restart).
fn full_disk_scenario(read_back_failed: bool) {
    if std::env::var_os("RUST_LOG").is_some() {
        // RUST_LOG=rskafka=debug,oxbow=info shows the client's retries and the node.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = small_tmpfs(dir.path(), "24m") else {
        return;
    };
    let node = node_on(&mount.0.join("data"));
    let brokers = node.kafka_addr().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let acked = runtime.block_on(async {
        let client = support::client(brokers).await;
        let controller = client.controller_client().unwrap();
        bounded("create kept", controller.create_topic("kept", 2, 1, 10_000))
            .await
            .unwrap();
        // Far more partitions than 32 MiB reservations fit: none is reserved up front.
        bounded("create many", controller.create_topic("many", 200, 1, 30_000))
            .await
            .unwrap();
        let kept = [
            partition(&client, "kept", 0).await,
            partition(&client, "kept", 1).await,
        ];
        let mut acked: [Vec<(i64, usize)>; 2] = [Vec::new(), Vec::new()];
        for i in 0..40 {
            let offset = produce_once(&kept[i % 2], i).await.expect("room for these");
            acked[i % 2].push((offset, i));
        }
        let idle = partition(&client, "many", 199).await;
        produce_once(&idle, 1000)
            .await
            .expect("an idle partition takes a write");

        fill(&mount.0.join("filler"));
        let mut errors = Vec::new();
        for i in 100..200 {
            match produce_once(&kept[0], i).await {
                Ok(offset) => acked[0].push((offset, i)),
                Err(error) => {
                    errors.push(error);
                    break;
                }
            }
        }
        assert_eq!(
            errors.first().map(String::as_str),
            Some("KafkaStorageError"),
            "a produce on a full disk fails with KAFKA_STORAGE_ERROR"
        );
        assert!(!node.shard_failed(), "a full disk stopped a shard");
        // The other partition still serves what it holds.
        assert_acknowledged_present(&kept[1], &acked[1]).await;

        // Space returns: the partition takes writes again (after it re-elected itself).
        std::fs::remove_file(mount.0.join("filler")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 300;
        let offset = loop {
            match produce_once(&kept[0], i).await {
                Ok(offset) => break offset,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "no write after space returned: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            i += 1;
        };
        acked[0].push((offset, i));
        assert_acknowledged_present(&kept[1], &acked[1]).await;
        if read_back_failed {
            assert_acknowledged_present(&kept[0], &acked[0]).await;
        }
        assert!(!node.shard_failed());
        acked
    });
    node.stop().unwrap();
    if !read_back_failed {
        return;
    }
    // Every acknowledged record is on disk: a restarted node serves them all.
    let node = node_on(&mount.0.join("data"));
    let brokers = node.kafka_addr().to_string();
    runtime.block_on(async {
        let client = support::client(brokers).await;
        for (p, acked) in (0..).zip(&acked) {
            assert_acknowledged_present(&partition(&client, "kept", p).await, acked).await;
        }
    });
    node.stop().unwrap();
}
