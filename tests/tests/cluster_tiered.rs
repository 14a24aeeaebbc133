//! Tiered storage in a cluster of real broker processes: a tiered topic's leader is
//! killed and the new leader continues from the manifest, then the topic is recovered
//! into a new, empty cluster from the store. (Its own test binary, so it does not run
//! beside the other cluster tests on a 2-core machine.)

use oxbow_tests::cluster::TestCluster;
use oxbow_tests::cluster_client::{
    check_read_back, create_new_topic, leader_of, metric_sum, metrics_page, producer, read_all,
    wait_for_brokers, wait_until, Deliveries,
};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::path::Path;
use std::time::{Duration, Instant};

const PROGRAM: &str = env!("CARGO_BIN_EXE_oxbow-test-node");

/// A value of about 500 bytes tagged `tag-i`.
fn padded(tag: &str, i: usize) -> String {
    let head = format!("{tag}-{i}-");
    format!("{head}{}", "x".repeat(500 - head.len()))
}

/// Sends `padded("t", i)` for `i` in `from..from + count` to `tiered`/0.
fn send_padded(writer: &BaseProducer<Deliveries>, from: usize, count: usize) {
    for i in from..from + count {
        let value = padded("t", i);
        while writer
            .send(BaseRecord::<(), str>::to("tiered").payload(&value).partition(0))
            .is_err()
        {
            writer.poll(Duration::from_millis(10));
        }
        writer.poll(Duration::ZERO);
    }
}

/// The partition manifest of `topic`/0 in a filesystem store at `store`: every segment
/// entry, checked to be in offset order with neither overlaps nor gaps.
fn check_manifest(store: &Path, topic: &str) -> oxbow_core::tier::PartitionManifest {
    let dir = std::fs::read_dir(store.join(topic))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("0_"))
        .expect("partition 0's prefix in the store");
    let name = dir.file_name().to_string_lossy().into_owned();
    let path = oxbow_core::tier::PartitionPath {
        topic: topic.to_string(),
        partition: 0,
        revision: name["0_".len()..].parse().unwrap(),
    };
    let bytes = std::fs::read(dir.path().join("manifest")).unwrap();
    let manifest = oxbow_core::tier::PartitionManifest::decode(&path, &bytes).unwrap();
    assert_eq!(manifest.start_offset, 0, "the manifest starts at offset 0");
    let mut next = 0;
    for segment in &manifest.segments {
        assert_eq!(
            segment.base_offset, next,
            "segments in order, no overlap, no gap: {:?}",
            manifest.segments
        );
        next = segment.last_offset + 1;
    }
    manifest
}

/// The sum of metric `name` over the running brokers.
fn cluster_metric(cluster: &TestCluster, name: &str) -> f64 {
    cluster
        .brokers
        .iter()
        .filter(|b| b.process.is_some())
        .map(|b| metric_sum(&metrics_page(&b.admin_addr), name))
        .sum()
}

/// Tiered storage in a cluster on one shared filesystem store: the leader of an RF 3
/// tiered topic uploads and drops local segments past a small target; it is killed
/// with SIGKILL; the new leader continues from the manifest (no overlapping or lost
/// segments across the terms); everything reads back from offset 0, in order, once.
/// Then every broker goes and a new, empty cluster on the same store recovers the
/// topic (`oxbow topic recover`): the same records from offset 0, and more after them.
#[test]
fn tiered_topic_survives_a_leader_kill_and_recovers_into_a_new_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = dir.path().join("oxbow.toml");
    std::fs::write(
        &config,
        format!(
            "[tiered_storage]\nfilesystem_dir = \"{}\"\nupload_lag_ms = 200\nrequest_timeout_ms = 1000\n",
            store.display()
        ),
    )
    .unwrap();
    let mut cluster =
        TestCluster::start_with_config(Path::new(PROGRAM), &dir.path().join("a"), 3, Some(&config));
    let brokers = cluster.bootstrap();
    wait_for_brokers(&brokers, 3);
    let topic = NewTopic::new("tiered", 1, TopicReplication::Fixed(3))
        .set("segment.bytes", "1048576")
        .set("oxbow.remote.write", "true")
        .set("oxbow.remote.read", "true")
        .set("retention.local.target.bytes", "1048576");
    create_new_topic(&brokers, &topic);
    wait_until("a leader of tiered/0", Duration::from_secs(30), || {
        leader_of(&brokers, "tiered", 0).is_some()
    });

    let writer = producer(&brokers, 120_000);
    send_padded(&writer, 0, 4_000);
    writer.flush(Duration::from_secs(60)).unwrap();
    wait_until("uploads by the first leader", Duration::from_secs(60), || {
        cluster_metric(&cluster, "oxbow_tier_uploads_total") >= 2.0
    });

    let leader = leader_of(&brokers, "tiered", 0).expect("a leader") as u32;
    cluster.kill(leader);
    send_padded(&writer, 4_000, 4_000);
    writer.flush(Duration::from_secs(120)).unwrap();
    let new_leader = loop {
        match leader_of(&brokers, "tiered", 0) {
            Some(l) if l as u32 != leader => break l as u32,
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    wait_until(
        "the new leader's uploads reach the end",
        Duration::from_secs(60),
        || {
            let page = metrics_page(&cluster.brokers[new_leader as usize - 1].admin_addr);
            metric_sum(&page, "oxbow_tier_uploads_total") > 0.0
                && metric_sum(&page, "oxbow_tier_backlog_offsets") == 0.0
                && metric_sum(&page, "oxbow_tier_not_durable_offsets") == 0.0
        },
    );
    let acked = writer.context().acked.lock().unwrap().clone();
    let failed = writer.context().failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "not delivered: {failed:?}");
    assert_eq!(acked.len(), 8_000, "every message acknowledged");
    let live: Vec<String> = cluster
        .brokers
        .iter()
        .filter(|b| b.process.is_some())
        .map(|b| b.kafka_addr.clone())
        .collect();
    let read = read_all(&live.join(","), "tiered", 1);
    assert_eq!(
        read[&0].first().map(|r| r.1.clone()),
        Some(padded("t", 0)),
        "read from the first record"
    );
    check_read_back(&acked, &read);
    assert_eq!(read[&0].len(), 8_000, "nothing but what was acknowledged, once");
    assert!(
        cluster_metric(&cluster, "oxbow_tier_remote_reads_total") > 0.0,
        "offsets below the local start were read from the store"
    );
    let manifest = check_manifest(&store, "tiered");
    let terms: std::collections::BTreeSet<i64> = manifest.segments.iter().map(|s| s.term).collect();
    assert!(terms.len() >= 2, "segments of both leaders' terms: {terms:?}");
    drop(writer);
    drop(cluster);

    // A new cluster with empty data directories on the same store.
    let cluster = TestCluster::start_with_config(Path::new(PROGRAM), &dir.path().join("b"), 3, Some(&config));
    let brokers = cluster.bootstrap();
    wait_for_brokers(&brokers, 3);
    let end = manifest.segments.last().map_or(0, |s| s.last_offset + 1);
    let recover = || {
        oxbow_runtime_real::cli::TopicCommand::Recover(oxbow_runtime_real::cli::TopicSpec {
            name: "tiered".to_string(),
            partitions: 1,
            replicas: 3,
            configs: vec!["segment.bytes=1048576".into()],
            brokers: brokers.clone(),
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = oxbow_runtime_real::cli::topic(recover(), &mut Vec::new()) {
        assert!(Instant::now() < deadline, "recover: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_until("the recovered watermarks", Duration::from_secs(60), || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        consumer
            .fetch_watermarks("tiered", 0, Duration::from_secs(5))
            .is_ok_and(|(low, high)| low == 0 && high > end)
    });
    let read = read_all(&brokers, "tiered", 1);
    check_read_back(&acked, &read);
    assert_eq!(
        read[&0].len(),
        8_000,
        "the recovered topic holds every record, once"
    );
    let writer = producer(&brokers, 120_000);
    send_padded(&writer, 8_000, 500);
    writer.flush(Duration::from_secs(60)).unwrap();
    let after = writer.context().acked.lock().unwrap().clone();
    assert_eq!(after.len(), 500, "produce after the recovery");
    assert!(after.iter().all(|(_, offset, _)| *offset >= end));
    let read = read_all(&brokers, "tiered", 1);
    let mut all = acked;
    all.extend(after);
    check_read_back(&all, &read);
    assert_eq!(read[&0].len(), 8_500);
}
