//! Idempotent producers (librdkafka with `enable.idempotence=true`) against a real
//! Oxbow node, through a loopback proxy the test controls: connections cut mid-stream
//! make the client retry batches the broker may already have written, and a node
//! restart makes it retry against producer state recovered from its snapshot and the
//! log. Every message must be present exactly once, in the order produced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{start, NodeHandle};
use oxbow_tests::proxy::KafkaProxy;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Delivery reports: offsets of acknowledged values, and failures.
#[derive(Default)]
struct Deliveries {
    acked: Mutex<Vec<(i64, String)>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.acked.lock().unwrap().push((m.offset(), value));
            }
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

fn idempotent_producer(brokers: &str) -> BaseProducer<Deliveries> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        .set("batch.num.messages", "200")
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "200")
        .set("retry.backoff.ms", "20")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create_with_context(Deliveries::default())
        .unwrap()
}

fn create_topic(brokers: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    let results = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

/// Every (offset, value) of partition 0 up to its high watermark.
fn read_all(brokers: &str, topic: &str) -> Vec<(i64, String)> {
    let consumer = || -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "oxbow-idempotence-tests")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap()
    };
    let (_, high) = oxbow_tests::cluster_client::watermarks(brokers, topic, 0);
    let consumer = consumer();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                out.push((m.offset(), value));
            }
            // Errors about the (unused) consumer group are not about the data.
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
        let position = consumer.position().unwrap();
        let at = position.find_partition(topic, 0).map(|e| e.offset());
        if matches!(at, Some(Offset::Offset(o)) if o >= high) {
            break;
        }
    }
    out
}

/// Produces `count` values `m-<i>` while `disturb` runs now and then from another
/// thread; returns the producer after a flush.
fn produce_while(
    brokers: &str,
    topic: &str,
    count: usize,
    disturb: impl Fn(usize) + Send + 'static,
) -> BaseProducer<Deliveries> {
    let producer = idempotent_producer(brokers);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_disturber = stop.clone();
    let disturber = std::thread::spawn(move || {
        let mut round = 0;
        loop {
            std::thread::sleep(Duration::from_millis(120));
            // Checked after the sleep: no disturbance once every message is delivered.
            if stop_disturber.load(Ordering::Relaxed) {
                break;
            }
            disturb(round);
            round += 1;
        }
        round
    });
    for i in 0..count {
        let value = format!("m-{i}");
        loop {
            match producer.send(BaseRecord::<(), _>::to(topic).payload(&value)) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        if i % 20 == 0 {
            producer.poll(Duration::ZERO);
            // Spread the stream over a few seconds so the cuts land in the middle of it.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let rounds = disturber.join().unwrap();
    eprintln!("{rounds} disturbances while producing {count} messages");
    producer
}

/// Every value produced is read back once, in order; the delivery reports agree with
/// the log.
fn check_exactly_once_in_order(producer: &BaseProducer<Deliveries>, read: &[(i64, String)], count: usize) {
    let failed = producer.context().failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let values: Vec<&str> = read.iter().map(|(_, v)| v.as_str()).collect();
    let expected: Vec<String> = (0..count).map(|i| format!("m-{i}")).collect();
    if values != expected {
        let mut seen = std::collections::BTreeMap::new();
        for v in &values {
            *seen.entry(*v).or_insert(0) += 1;
        }
        let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
        let missing = expected.iter().filter(|v| !seen.contains_key(v.as_str())).count();
        panic!(
            "read {} values for {count} produced: {missing} missing, duplicated e.g. {duplicated:?}",
            values.len()
        );
    }
    let mut acked = producer.context().acked.lock().unwrap().clone();
    acked.sort();
    let read_back: Vec<(i64, String)> = read.to_vec();
    assert_eq!(acked, read_back, "each acknowledged offset holds its value");
}

#[test]
fn an_idempotent_producer_whose_connections_are_cut_writes_each_message_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let direct = node.kafka_addr().to_string();
    create_topic(&direct, "cut");
    let proxy = Arc::new(KafkaProxy::start(node.kafka_addr()).unwrap());
    let count = 30_000;
    let cutter = proxy.clone();
    let producer = produce_while(&proxy.addr().to_string(), "cut", count, move |_| {
        cutter.cut();
    });
    assert!(proxy.accepted() > 3, "the client reconnected after cuts");
    let read = read_all(&direct, "cut");
    check_exactly_once_in_order(&producer, &read, count);
    drop(producer);
    node.stop().unwrap();
}

#[test]
fn an_idempotent_producer_retrying_across_a_broker_restart_writes_each_message_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let direct = node.kafka_addr().to_string();
    create_topic(&direct, "restart");
    let proxy = Arc::new(KafkaProxy::start(node.kafka_addr()).unwrap());
    let node = Arc::new(Mutex::new(Some(node)));
    let count = 20_000;
    let (restarter, restart_proxy, data_dir) = (node.clone(), proxy.clone(), dir.path().to_path_buf());
    let producer = produce_while(&proxy.addr().to_string(), "restart", count, move |round| {
        // Cut connections every round; restart the node twice.
        restart_proxy.cut();
        if round == 3 || round == 9 {
            let mut slot = restarter.lock().unwrap();
            if let Some(old) = slot.take() {
                old.stop().unwrap();
            }
            let fresh = start_node(&data_dir);
            restart_proxy.retarget(fresh.kafka_addr());
            *slot = Some(fresh);
        }
    });
    let node = node.lock().unwrap().take().unwrap();
    let read = read_all(&node.kafka_addr().to_string(), "restart");
    check_exactly_once_in_order(&producer, &read, count);
    drop(producer);
    node.stop().unwrap();
}
