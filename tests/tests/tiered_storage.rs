//! Tiered storage end to end against a real node and a real Kafka client (librdkafka):
//! a topic with `oxbow.remote.write/read` and a small `retention.local.target.bytes`
//! gets more than that produced; its closed segments are uploaded, the local ones go
//! once the manifest covering them is durable, and a consumer from offset 0 gets every
//! record back in order — below the local start from the object store — also after a
//! broker restart. Once against the default local-filesystem store, once against a real
//! S3-compatible server on loopback (`moto_server`, from `moto[server]` on PyPI, which
//! `scripts/install-test-deps` installs; the test fails with a clear message without it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_runtime_real::cli::{TopicCommand, TopicSpec};
use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{start, NodeHandle};
use oxbow_tests::cluster_client::metric_sum;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOPIC: &str = "tiered";
const RECORDS: usize = 5_000;
const VALUE_BYTES: usize = 1_000;

fn start_node(data_dir: &Path, tiered_storage: &str) -> NodeHandle {
    let file = data_dir.with_extension("toml");
    std::fs::write(
        &file,
        format!(
            "[node]\nshards = 1\nmemory_bytes = 268435456\n\n[tiered_storage]\nupload_lag_ms = 200\nrequest_timeout_ms = 1000\n{tiered_storage}"
        ),
    )
    .unwrap();
    let overrides = Overrides {
        data_dir: Some(data_dir.to_path_buf()),
        kafka_addr: Some("127.0.0.1:0".to_string()),
        admin_addr: Some("127.0.0.1:0".to_string()),
        rpc_addr: Some("127.0.0.1:0".to_string()),
        ..Overrides::default()
    };
    start(NodeConfig::load(Some(&file), overrides).unwrap()).unwrap()
}

fn create_topic(brokers: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))
        .set("segment.bytes", "1048576")
        .set("oxbow.remote.write", "true")
        .set("oxbow.remote.read", "true")
        .set("retention.local.target.bytes", "1048576");
    let results = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

fn value(i: usize) -> String {
    let head = format!("m-{i:06}-");
    format!("{head}{}", "x".repeat(VALUE_BYTES - head.len()))
}

fn produce(brokers: &str) {
    produce_range(brokers, 0..RECORDS);
}

/// Produces `value(i)` for each `i` of `range` to partition 0, `acks=all`.
fn produce_range(brokers: &str, range: std::ops::Range<usize>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        .create()
        .unwrap();
    for i in range {
        let v = value(i);
        loop {
            match producer.send(BaseRecord::<(), str>::to(TOPIC).payload(&v).partition(0)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(format!("{e}").contains("Queue full"), "produce: {e}");
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(producer.in_flight_count(), 0);
}

/// Every value of partition 0 from offset 0 up to `count` records.
fn consume_from_zero(brokers: &str, count: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "oxbow-tiered-tests")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Offset(0))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()),
            Some(Err(e)) => panic!("consumer: {e}"),
            None => {}
        }
    }
    out
}

/// Base offsets of the partition's local segment files.
fn local_segments(data_dir: &Path) -> Vec<i64> {
    let topic_dir = data_dir.join("kafka").join(TOPIC);
    let mut bases = Vec::new();
    for partition in std::fs::read_dir(&topic_dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(partition.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = file.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix("-v1.log") {
                if let Some(base) = stem.split('-').next().and_then(|b| b.parse().ok()) {
                    bases.push(base);
                }
            }
        }
    }
    bases.sort_unstable();
    bases
}

fn metric(admin: SocketAddr, name: &str) -> f64 {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    metric_sum(&response, name)
}

/// Produces past the local target, waits for local segments to go, consumes from 0;
/// restarts the node and consumes from 0 again.
fn produce_offload_consume(tiered_storage: &str, check_store: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    let node = start_node(&data_dir, tiered_storage);
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers);
    produce(&brokers);
    let expected: Vec<String> = (0..RECORDS).map(value).collect();

    // The closed segments are uploaded, then deleted locally down to the target.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let segments = local_segments(&data_dir);
        if segments.first().is_some_and(|&base| base > 0) && segments.len() <= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "local segments did not go: {segments:?} (uploads {}, store errors {})",
            metric(node.admin_addr(), "oxbow_tier_uploads_total"),
            metric(node.admin_addr(), "oxbow_store_errors_total"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(node.admin_addr(), "oxbow_tier_uploads_total") >= 3.0);
    assert_eq!(metric(node.admin_addr(), "oxbow_tier_archivers"), 1.0);
    check_store(&data_dir);

    let got = consume_from_zero(&brokers, RECORDS);
    assert_eq!(got.len(), RECORDS, "records read back from offset 0");
    assert!(got == expected, "records out of order or changed");
    assert!(metric(node.admin_addr(), "oxbow_tier_remote_reads_total") > 0.0);
    node.stop().unwrap();

    // After a restart: the new leader continues from the manifest; reads from 0 again.
    let node = start_node(&data_dir, tiered_storage);
    let brokers = node.kafka_addr().to_string();
    let got = consume_from_zero(&brokers, RECORDS);
    assert_eq!(got.len(), RECORDS, "records read back after a restart");
    assert!(got == expected, "records out of order or changed after a restart");
    node.stop().unwrap();
}

#[test]
fn filesystem_store_offloads_and_serves_from_offset_zero() {
    produce_offload_consume("", |data_dir| {
        let manifests: Vec<PathBuf> = std::fs::read_dir(data_dir.join("tiered").join(TOPIC))
            .unwrap()
            .flatten()
            .map(|p| p.path().join("manifest"))
            .filter(|p| p.exists())
            .collect();
        assert_eq!(manifests.len(), 1, "one partition manifest in the store");
    });
}

/// A `moto_server` on a free loopback port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, request: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn start_moto(bucket: &str) -> Moto {
    let port = oxbow_tests::ports::free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start `moto_server` ({e}): install it with `pip install 'moto[server]'` (scripts/install-test-deps does)")
        });
    let mut moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = moto.child.try_wait() {
            panic!("moto_server exited at start ({status}): is `moto[server]` installed?");
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let response = http(
        port,
        &format!("PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "create bucket: {response}"
    );
    moto.port = port;
    moto
}

/// The `[tiered_storage]` lines of an S3 store on moto's `port`, bucket `oxbow-test`.
fn s3_config(port: u16) -> String {
    format!(
        "store = \"s3\"\ns3_endpoint = \"http://127.0.0.1:{port}\"\ns3_region = \"us-east-1\"\ns3_bucket = \"oxbow-test\"\ns3_access_key_id = \"test\"\ns3_secret_access_key = \"test\"\ns3_allow_http = true\n"
    )
}

#[test]
fn s3_store_on_moto_offloads_and_serves_from_offset_zero() {
    let moto = start_moto("oxbow-test");
    let port = moto.port;
    let config = s3_config(port);
    produce_offload_consume(&config, |_| {
        let listing = http(
            port,
            &format!("GET /oxbow-test?list-type=2&prefix={TOPIC}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert!(
            listing.contains("/manifest</Key>"),
            "manifest in the bucket: {listing}"
        );
        assert!(listing.contains(".log</Key>"), "segments in the bucket");
    });
}

/// `(low, high)` watermarks of partition 0.
fn watermarks(brokers: &str) -> Option<(i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    consumer.fetch_watermarks(TOPIC, 0, Duration::from_secs(5)).ok()
}

/// Waits until everything produced is named in a durable manifest.
fn wait_uploaded(node: &NodeHandle) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let admin = node.admin_addr();
        let backlog =
            metric(admin, "oxbow_tier_backlog_offsets") + metric(admin, "oxbow_tier_not_durable_offsets");
        if backlog == 0.0 && metric(admin, "oxbow_tier_manifest_puts_total") > 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "not uploaded: backlog {backlog}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Disaster recovery: a tiered topic on a node with an S3 store; the node goes; a fresh
/// node (empty data directory) on the same bucket recovers the topic with `oxbow topic
/// recover`, serves every record from offset 0 in order, and takes more after them.
#[test]
fn topic_recovered_from_moto_into_an_empty_node() {
    let moto = start_moto("oxbow-test");
    let config = s3_config(moto.port);
    let dir = tempfile::tempdir().unwrap();
    let first = start_node(&dir.path().join("first"), &config);
    create_topic(&first.kafka_addr().to_string());
    produce(&first.kafka_addr().to_string());
    wait_uploaded(&first);
    let (_, end) = watermarks(&first.kafka_addr().to_string()).unwrap();
    first.stop().unwrap();

    let node = start_node(&dir.path().join("second"), &config);
    let brokers = node.kafka_addr().to_string();
    // Another topic first: the recovered one gets another revision than in the bucket.
    let mut out = Vec::new();
    let create = |name: &str| {
        TopicCommand::Create(TopicSpec {
            name: name.to_string(),
            partitions: 1,
            replicas: 1,
            configs: Vec::new(),
            brokers: brokers.clone(),
        })
    };
    oxbow_runtime_real::cli::topic(create("other"), &mut out).unwrap();
    let recover = TopicCommand::Recover(TopicSpec {
        name: TOPIC.to_string(),
        partitions: 1,
        replicas: 1,
        configs: vec![
            "segment.bytes=1048576".into(),
            "retention.local.target.bytes=1048576".into(),
        ],
        brokers: brokers.clone(),
    });
    oxbow_runtime_real::cli::topic(recover, &mut out).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // (The new leader's first entry follows the recovered ones.)
    while !watermarks(&brokers).is_some_and(|(low, high)| low == 0 && high > end) {
        assert!(
            Instant::now() < deadline,
            "recovered watermarks: {:?}",
            watermarks(&brokers)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(node.admin_addr(), "oxbow_tier_partitions_recovered_total"),
        1.0
    );
    let expected: Vec<String> = (0..RECORDS).map(value).collect();
    let got = consume_from_zero(&brokers, RECORDS);
    assert_eq!(got.len(), RECORDS, "recovered records read back from offset 0");
    assert!(got == expected, "recovered records out of order or changed");

    // Producers continue after the recovered data.
    produce_range(&brokers, RECORDS..RECORDS + 500);
    let expected: Vec<String> = (0..RECORDS + 500).map(value).collect();
    let got = consume_from_zero(&brokers, RECORDS + 500);
    assert_eq!(got.len(), RECORDS + 500, "records after the recovery read back");
    assert!(
        got == expected,
        "records after the recovery out of order or changed"
    );
    node.stop().unwrap();
}

/// `oxbow bench tier` reads back from offset 0 even when the run outlasts the
/// archivers' housekeeping (total retention). Its records once carried a fixed
/// CreateTime from 2023, past the 7-day `retention.ms`: the first housekeeping round
/// expired every remote segment but the last, and the read from offset 0 failed with
/// `OFFSET_OUT_OF_RANGE` (seen against moto, whose slower run passed the 30 s round;
/// the filesystem run ended before it). Here the round comes every 200 ms.
#[test]
fn tier_bench_reads_from_offset_zero_past_housekeeping() {
    use oxbow_runtime_real::bench::tier_bench::{run_tier_bench, TierBenchOptions};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("store.toml");
    std::fs::write(
        &config,
        "[node]\nshards = 1\nmemory_bytes = 268435456\n\n[tiered_storage]\nrequest_timeout_ms = 500\nhousekeeping_interval_ms = 200\n",
    )
    .unwrap();
    let options = TierBenchOptions {
        data_dir: dir.path().join("data"),
        stores: vec![Some(config)],
        total_mb: 6,
        message_bytes: 1024,
        batch_messages: 64,
        rate_mb_s: 4.0,
        segment_mb: 1,
        upload_lag_ms: 200,
        report_dir: None,
        name: "test".to_string(),
        command: "test".to_string(),
    };
    let report = run_tier_bench(&options).expect("bench tier");
    let row = &report.rows[0];
    assert!(row.lag_samples > 0, "upload lags measured: {row:?}");
    assert!(
        row.remote_bytes >= 2 << 20,
        "read from the store from offset 0: {row:?}"
    );
}
