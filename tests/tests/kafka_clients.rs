//! A real Kafka client (librdkafka, through the `rdkafka` crate) against a real Oxbow
//! node: every compression codec with keyed ordering, a broker killed with SIGKILL in
//! the middle of an acks=all stream, DeleteRecords, retention, timestamp lookups, reads
//! that start mid-batch, and garbage on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{start, NodeHandle};
use oxbow_tests::cluster_client::watermarks;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An in-process node on ports the kernel picks (port 0): never a port another test
/// could also bind (the listeners use SO_REUSEPORT, so two nodes on one port would
/// silently share its connections).
fn start_node(data_dir: &Path) -> NodeHandle {
    let overrides = Overrides {
        data_dir: Some(data_dir.to_path_buf()),
        kafka_addr: Some("127.0.0.1:0".to_string()),
        admin_addr: Some("127.0.0.1:0".to_string()),
        rpc_addr: Some("127.0.0.1:0".to_string()),
        ..Overrides::default()
    };
    start(NodeConfig::load(None, overrides).unwrap()).unwrap()
}

/// What the producer's delivery reports said.
#[derive(Default)]
struct Deliveries {
    acked: Mutex<Vec<(i32, i64, String, String)>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.acked
                    .lock()
                    .unwrap()
                    .push((m.partition(), m.offset(), key, value));
            }
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

fn producer(brokers: &str, compression: &str) -> BaseProducer<Deliveries> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Deliveries::default())
        .unwrap()
}

fn consumer(brokers: &str) -> BaseConsumer {
    // librdkafka's assign() needs a group id even though these consumers never join a
    // group (Oxbow does not serve consumer groups yet; FindCoordinator is not
    // advertised, so the client does not ask for a coordinator).
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "oxbow-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap()
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

fn create_topic(brokers: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results =
        futures_executor::block_on(admin(brokers).create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

/// Reads every message of `partitions` from the beginning up to each partition's high
/// watermark (as it is when called), or until a minute passed: (partition, offset, key,
/// value).
fn read_all(brokers: &str, topic: &str, partitions: i32) -> Vec<(i32, i64, String, String)> {
    let consumer = consumer(brokers);
    let mut assignment = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        let (low, high) = watermarks(brokers, topic, p);
        if high > low {
            remaining.insert(p, high);
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let m = message.unwrap();
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.push((m.partition(), m.offset(), key, value));
        }
        // The consumer's position moves past control batches too, so a partition is
        // done when its position reaches the high watermark.
        let position = consumer.position().unwrap();
        remaining.retain(|p, high| {
            let at = position.find_partition(topic, *p).map(|e| e.offset());
            !matches!(at, Some(Offset::Offset(o)) if o >= *high)
        });
    }
    out
}

fn produce_keyed(producer: &BaseProducer<Deliveries>, topic: &str, count: usize, tag: &str) {
    for i in 0..count {
        let key = format!("key-{}", i % 997);
        let value = format!("{tag}-{i}");
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

#[test]
fn keyed_messages_in_every_codec_come_back_in_partition_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    let per_codec: usize = std::env::var("OXBOW_TEST_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&brokers, &topic, 8, &[]);
        let producer = producer(&brokers, codec);
        produce_keyed(&producer, &topic, per_codec, codec);
        let failed = producer.context().failed.lock().unwrap().clone();
        assert!(
            failed.is_empty(),
            "{codec}: {} failed, e.g. {:?}",
            failed.len(),
            failed.first()
        );
        assert_eq!(producer.context().acked.lock().unwrap().len(), per_codec);

        let read = read_all(&brokers, &topic, 8);
        assert_eq!(read.len(), per_codec, "{codec}: every message read back");
        let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
        let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
        let mut last_index_of_key: BTreeMap<String, usize> = BTreeMap::new();
        for (partition, offset, key, value) in &read {
            assert_eq!(
                *partition_of_key.entry(key.clone()).or_insert(*partition),
                *partition,
                "{key} in one partition"
            );
            let previous = last_offset.insert(*partition, *offset);
            assert!(
                previous.is_none_or(|p| p < *offset),
                "{codec}: offsets increase in partition {partition}"
            );
            let index: usize = value.rsplit('-').next().unwrap().parse().unwrap();
            let before = last_index_of_key.insert(key.clone(), index);
            assert!(
                before.is_none_or(|b| b < index),
                "{codec}: {key} read in the order produced"
            );
        }
        assert_eq!(
            partition_of_key.values().collect::<BTreeSet<_>>().len(),
            8,
            "keys spread over all partitions"
        );
    }
    node.stop().unwrap();
}

/// Starts `oxbow-test-node` as a process on a port the kernel picks and waits until it
/// serves; returns the process and its Kafka address.
fn spawn_node(data_dir: &Path) -> (Child, String) {
    // Right after a SIGKILL the kernel may still be tearing the old process's io_uring
    // down, holding its data-directory lock for a moment: try again briefly.
    for _ in 0..50 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow-test-node"))
            .arg(data_dir)
            .arg("127.0.0.1:0")
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if let Some(addr) = line.strip_prefix("ready ") {
            return (child, addr.trim().to_string());
        }
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the node did not start");
}

#[test]
fn every_acknowledged_message_survives_sigkill_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, brokers) = spawn_node(dir.path());
    create_topic(&brokers, "crash", 4, &[]);
    let producer = producer(&brokers, "none");
    let mut sent = 0usize;
    let started = Instant::now();
    // Keep the stream going; kill the broker once thousands are acknowledged.
    while producer.context().acked.lock().unwrap().len() < 5_000
        && started.elapsed() < Duration::from_secs(60)
    {
        for _ in 0..200 {
            let value = format!("m-{sent}");
            let key = format!("k{}", sent % 31);
            if producer
                .send(BaseRecord::to("crash").key(&key).payload(&value))
                .is_ok()
            {
                sent += 1;
            }
        }
        producer.poll(Duration::from_millis(1));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc_kill(node.id()) };
    node.wait().unwrap();
    producer.poll(Duration::from_millis(100));
    let acked = producer.context().acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 5_000,
        "the stream ran: {} acknowledged",
        acked.len()
    );
    drop(producer);

    // The restarted node gets a new port: clients find it as they would after a move.
    let (mut node, brokers) = spawn_node(dir.path());
    let read = read_all(&brokers, "crash", 4);
    let stored: BTreeSet<(i32, i64, String)> = read.iter().map(|(p, o, _, v)| (*p, *o, v.clone())).collect();
    for (partition, offset, _, value) in &acked {
        assert!(
            stored.contains(&(*partition, *offset, value.clone())),
            "acknowledged {value} at {partition}/{offset} lost"
        );
    }
    // Offsets: the only gaps are the one-offset control batches a new leader writes.
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _, _) in &read {
        by_partition.entry(*p).or_default().push(*o);
    }
    for (partition, offsets) in by_partition {
        for pair in offsets.windows(2) {
            assert!(
                pair[1] - pair[0] <= 2,
                "partition {partition}: gap {pair:?} is more than a control batch"
            );
        }
    }
    unsafe { libc_kill(node.id()) };
    node.wait().unwrap();
}

/// SIGKILL without a libc dependency in this test crate's dev-dependencies.
unsafe fn libc_kill(pid: u32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) on a pid we spawned; 9 is SIGKILL.
    unsafe { kill(pid as i32, 9) };
}

#[test]
fn delete_records_retention_timestamps_and_mid_batch_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "offsets", 1, &[]);
    // One batch of ten messages with known timestamps.
    let batcher: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("linger.ms", "200")
        .create_with_context(Deliveries::default())
        .unwrap();
    for i in 0..10i64 {
        let value = format!("t{i}");
        let record = BaseRecord::to("offsets")
            .key("k")
            .payload(&value)
            .timestamp(1_700_000_000_000 + i * 1000);
        batcher.send(record).map_err(|(e, _)| e).unwrap();
    }
    batcher.flush(Duration::from_secs(30)).unwrap();
    let acked = batcher.context().acked.lock().unwrap().clone();
    let base = acked.iter().map(|a| a.1).min().unwrap();
    assert_eq!(acked.iter().map(|a| a.1).max().unwrap(), base + 9);

    // Timestamp → offset.
    let consumer = consumer(&brokers);
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset("offsets", 0, Offset::Offset(1_700_000_000_000 + 4500))
        .unwrap();
    let found = consumer
        .offsets_for_times(query, Duration::from_secs(10))
        .unwrap();
    assert_eq!(found.elements()[0].offset(), Offset::Offset(base + 5));

    // A consumer starting in the middle of the batch gets exactly from there.
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("offsets", 0, Offset::Offset(base + 3))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let first = loop {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            break m.unwrap().offset();
        }
    };
    assert_eq!(first, base + 3);

    // DeleteRecords moves the start offset.
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset("offsets", 0, Offset::Offset(base + 7))
        .unwrap();
    let admin = admin(&brokers);
    futures_executor::block_on(admin.delete_records(&cut, &AdminOptions::new())).unwrap();
    let (low, high) = watermarks(&brokers, "offsets", 0);
    assert_eq!((low, high), (base + 7, base + 10));

    // Retention: small segments and retention.bytes, set live, delete old segments.
    create_topic(&brokers, "retained", 1, &[("segment.bytes", "1048576")]);
    let filler = producer(&brokers, "none");
    let big = "x".repeat(10_000);
    for _ in 0..400 {
        while filler
            .send(BaseRecord::<(), _>::to("retained").payload(&big))
            .is_err()
        {
            filler.poll(Duration::from_millis(10));
        }
    }
    filler.flush(Duration::from_secs(60)).unwrap();
    let mut change = AlterConfig::new(ResourceSpecifier::Topic("retained"));
    change = change.set("retention.bytes", "1048576");
    let results = futures_executor::block_on(admin.alter_configs([&change], &AdminOptions::new())).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (low, _) = watermarks(&brokers, "retained", 0);
        if low > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention never moved the start offset"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    node.stop().unwrap();
}

#[test]
fn garbage_and_bad_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    let frames: Vec<Vec<u8>> = vec![
        b"\x00\x00\x00\x10garbage garbage!".to_vec(),   // a frame of noise
        vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3],          // oversized size prefix
        vec![0xff, 0xff, 0xff, 0xf0],                   // negative size
        vec![0, 0, 0, 8, 0x7f, 0x00, 0, 0, 0, 0, 0, 1], // unknown API key 32512
        vec![0, 0, 0, 20, 0, 3, 0, 99, 0, 0, 0, 1, 0, 0], // Metadata v99, truncated body
    ];
    for frame in frames {
        let mut stream = TcpStream::connect(node.kafka_addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(&frame).unwrap();
        let mut buf = [0u8; 64];
        // The broker answers with an error or closes; it never hangs or dies.
        let _ = stream.read(&mut buf);
    }
    // Everyone else is served as before.
    create_topic(&brokers, "still-alive", 1, &[]);
    let metadata = consumer(&brokers)
        .fetch_metadata(Some("still-alive"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 1);
    node.stop().unwrap();
}
