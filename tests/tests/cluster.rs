//! A replicated cluster of real broker processes on loopback, driven by librdkafka:
//! acks=all writes survive a leader killed with SIGKILL and a broker paused with
//! SIGSTOP; a five-broker cluster keeps serving without two brokers and refuses
//! writes, losing nothing, without three.

use oxbow_tests::cluster::TestCluster;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PROGRAM: &str = env!("CARGO_BIN_EXE_oxbow-test-node");

#[derive(Default)]
struct Deliveries {
    /// (partition, offset, value) of every acknowledged message.
    acked: Mutex<Vec<(i32, i64, String)>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.acked
                    .lock()
                    .unwrap()
                    .push((m.partition(), m.offset(), value));
            }
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

fn producer(brokers: &str, message_timeout_ms: u32) -> BaseProducer<Deliveries> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", message_timeout_ms.to_string())
        .set("socket.timeout.ms", "3000")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create_with_context(Deliveries::default())
        .unwrap()
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// Creates a topic, retrying while the cluster is still forming (no controller yet,
/// brokers not all registered). A fresh admin client per attempt: one that started
/// before the controller was known waits for its next metadata refresh.
fn create_topic(brokers: &str, name: &str, partitions: i32, replicas: i32) {
    create_new_topic(
        brokers,
        &NewTopic::new(name, partitions, TopicReplication::Fixed(replicas)),
    );
}

/// [`create_topic`] with the topic's configs.
fn create_new_topic(brokers: &str, topic: &NewTopic<'_>) {
    let name = topic.name;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let admin = admin(brokers);
        let result = futures_executor::block_on(admin.create_topics([topic], &options));
        match result.as_ref().map(|r| r.first().cloned()) {
            Ok(Some(Ok(_))) => return,
            other if Instant::now() < deadline => {
                eprintln!("create {name}: {other:?}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            other => panic!("create {name}: {other:?}"),
        }
    }
}

/// Waits until every broker is registered (all listed in Metadata).
fn wait_for_brokers(brokers: &str, count: usize) {
    wait_until("every broker registered", Duration::from_secs(60), || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok_and(|m| m.brokers().len() == count)
    });
}

/// Sends `count` messages tagged `tag` and serves delivery reports meanwhile.
fn send(producer: &BaseProducer<Deliveries>, topic: &str, tag: &str, from: usize, count: usize) {
    for i in from..from + count {
        let value = format!("{tag}-{i}");
        let key = format!("k{}", i % 17);
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
}

/// The leader of `topic`/`partition` as the cluster reports it.
fn leader_of(brokers: &str, topic: &str, partition: i32) -> Option<i32> {
    partition_state(brokers, topic, partition)
        .map(|(leader, ..)| leader)
        .filter(|leader| *leader >= 0)
}

/// (leader, replicas, in-sync replicas) of a partition as the cluster reports it.
fn partition_state(brokers: &str, topic: &str, partition: i32) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    let p = t.partitions().iter().find(|p| p.id() == partition)?;
    Some((p.leader(), p.replicas().to_vec(), p.isr().to_vec()))
}

/// Reads every partition from the beginning to its high watermark: partition →
/// [(offset, value)].
fn read_all(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<(i64, String)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "oxbow-cluster-tests")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok(marks) => break marks,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("watermarks {topic}/{p}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => panic!("watermarks {topic}/{p}: {e}"),
            }
        };
        if high > low {
            remaining.insert(p, high);
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !remaining.is_empty() && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let m = match message {
                Ok(m) => m,
                // A killed broker still in the metadata: the partitions' leaders serve.
                Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
                )) => continue,
                Err(e) => panic!("consume {topic}: {e}"),
            };
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.entry(m.partition()).or_default().push((m.offset(), value));
        }
        let position = consumer.position().unwrap();
        remaining.retain(|p, high| {
            let at = position.find_partition(topic, *p).map(|e| e.offset());
            !matches!(at, Some(Offset::Offset(o)) if o >= *high)
        });
    }
    assert!(
        remaining.is_empty(),
        "partitions not read to their end: {remaining:?}"
    );
    out
}

/// Every acknowledged message is read back at its offset, once; offsets only grow.
fn check_read_back(acked: &[(i32, i64, String)], read: &BTreeMap<i32, Vec<(i64, String)>>) {
    let mut by_offset: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    let mut seen_values: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
    for (partition, records) in read {
        let mut last = -1;
        for (offset, value) in records {
            assert!(*offset > last, "offsets grow in partition {partition}");
            last = *offset;
            by_offset.insert((*partition, *offset), value);
            if let Some(before) = seen_values.insert(value, (*partition, *offset)) {
                panic!("{value} stored twice: at {before:?} and {partition}/{offset}");
            }
        }
    }
    for (partition, offset, value) in acked {
        assert_eq!(
            by_offset.get(&(*partition, *offset)).copied(),
            Some(value.as_str()),
            "acknowledged {value} at {partition}/{offset}"
        );
    }
}

/// The admin listener's `/metrics` page.
fn metrics_page(admin_addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(admin_addr) else {
        return String::new();
    };
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {admin_addr}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let mut page = String::new();
    let _ = stream.read_to_string(&mut page);
    page
}

/// The sum of a metric's samples on a page.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn acked_count(producer: &BaseProducer<Deliveries>) -> usize {
    producer.context().acked.lock().unwrap().len()
}

#[test]
fn three_brokers_keep_every_acknowledged_write_through_a_leader_kill_and_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(Path::new(PROGRAM), dir.path(), 3);
    let brokers = cluster.bootstrap();
    wait_for_brokers(&brokers, 3);
    create_topic(&brokers, "ha", 3, 3);
    wait_until("a leader of ha/0", Duration::from_secs(30), || {
        leader_of(&brokers, "ha", 0).is_some()
    });

    let producer = producer(&brokers, 120_000);
    let mut sent = 0;
    send(&producer, "ha", "m", sent, 2_000);
    sent += 2_000;
    wait_until("the first acknowledgements", Duration::from_secs(60), || {
        producer.poll(Duration::from_millis(50));
        acked_count(&producer) >= 1_000
    });

    // Kill the leader of partition 0 mid-stream.
    let leader = leader_of(&brokers, "ha", 0).expect("a leader") as u32;
    cluster.kill(leader);
    send(&producer, "ha", "m", sent, 2_000);
    sent += 2_000;
    let before = acked_count(&producer);
    wait_until(
        "acknowledgements without the old leader",
        Duration::from_secs(60),
        || {
            producer.poll(Duration::from_millis(50));
            acked_count(&producer) >= before + 1_000
        },
    );
    cluster.restart(leader);

    // Pause another broker for a while, then let it go on.
    let paused = if leader == 1 { 2 } else { 1 };
    cluster.pause(paused);
    send(&producer, "ha", "m", sent, 2_000);
    sent += 2_000;
    std::thread::sleep(Duration::from_secs(3));
    cluster.resume(paused);
    send(&producer, "ha", "m", sent, 1_000);
    sent += 1_000;
    producer.flush(Duration::from_secs(120)).unwrap();

    let acked = producer.context().acked.lock().unwrap().clone();
    let failed = producer.context().failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} not delivered, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(acked.len(), sent, "every message acknowledged");
    let read = read_all(&brokers, "ha", 3);
    check_read_back(&acked, &read);
    let read_count: usize = read.values().map(Vec::len).sum();
    assert_eq!(read_count, sent, "nothing but what was acknowledged, once");

    // /metrics: exactly one controller leader, frames flowing on every broker.
    wait_until(
        "one controller leader in /metrics",
        Duration::from_secs(30),
        || {
            let pages: Vec<String> = cluster
                .brokers
                .iter()
                .map(|b| metrics_page(&b.admin_addr))
                .collect();
            let leaders: f64 = pages
                .iter()
                .map(|p| metric_sum(p, "oxbow_cluster_controller_leader"))
                .sum();
            leaders == 1.0
                && pages
                    .iter()
                    .all(|p| metric_sum(p, "oxbow_cluster_frames_sent_total") > 0.0)
        },
    );

    // Every broker is back: each partition is led by its preferred replica again and
    // every replica is in sync.
    wait_until("preferred leaders and full ISRs", Duration::from_secs(60), || {
        (0..3).all(|p| {
            partition_state(&brokers, "ha", p).is_some_and(|(leader, replicas, isr)| {
                replicas.first() == Some(&leader) && isr.len() == replicas.len()
            })
        })
    });
}

#[test]
fn five_brokers_serve_without_two_and_refuse_writes_without_three() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(Path::new(PROGRAM), dir.path(), 5);
    let brokers = cluster.bootstrap();
    wait_for_brokers(&brokers, 5);
    create_topic(&brokers, "quorum", 2, 5);
    wait_until("leaders of quorum", Duration::from_secs(30), || {
        (0..2).all(|p| leader_of(&brokers, "quorum", p).is_some())
    });
    let producer = producer(&brokers, 120_000);
    send(&producer, "quorum", "all", 0, 500);
    producer.flush(Duration::from_secs(60)).unwrap();

    // Any two gone (the leaders of partition 0 among them): writes go on.
    let leader = leader_of(&brokers, "quorum", 0).expect("a leader") as u32;
    let second = if leader == 5 { 4 } else { 5 };
    cluster.kill(leader);
    cluster.kill(second);
    send(&producer, "quorum", "two-down", 0, 500);
    producer.flush(Duration::from_secs(90)).unwrap();
    assert_eq!(
        acked_count(&producer),
        1_000,
        "writes acknowledged with two brokers gone"
    );
    wait_until("the dead brokers out of the ISR", Duration::from_secs(60), || {
        partition_state(&brokers, "quorum", 0).is_some_and(|(_, replicas, isr)| {
            let dead = [leader as i32, second as i32];
            replicas.len() == 5 && isr.len() == 3 && !isr.iter().any(|r| dead.contains(r))
        })
    });

    // A third gone: no majority, so nothing is acknowledged (and nothing lost).
    let third = (1..=5).find(|id| *id != leader && *id != second).unwrap();
    cluster.kill(third);
    let strict = self::producer(&brokers, 5_000);
    send(&strict, "quorum", "no-quorum", 0, 50);
    let _ = strict.flush(Duration::from_secs(30));
    assert_eq!(
        acked_count(&strict),
        0,
        "no write acknowledged without a majority"
    );
    assert_eq!(
        strict.context().failed.lock().unwrap().len(),
        50,
        "every write refused"
    );
    drop(strict);

    // They return: writes are served again, and everything acknowledged is there.
    for id in [leader, second, third] {
        cluster.restart(id);
    }
    send(&producer, "quorum", "back", 0, 500);
    producer.flush(Duration::from_secs(120)).unwrap();
    let acked = producer.context().acked.lock().unwrap().clone();
    let failed = producer.context().failed.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        1_500,
        "writes served again once a majority is back; {} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let read = read_all(&brokers, "quorum", 2);
    check_read_back(&acked, &read);
    let stored: usize = read.values().map(Vec::len).sum();
    let stored_without_quorum = read
        .values()
        .flatten()
        .filter(|(_, v)| v.starts_with("no-quorum"))
        .count();
    // A refused write may still have been appended by the leader and committed later
    // (the client timed out first): Kafka allows that; it must never be lost or doubled.
    assert_eq!(stored - stored_without_quorum, 1_500);
}

#[test]
fn a_new_broker_joins_a_running_cluster_and_takes_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(Path::new(PROGRAM), dir.path(), 3);
    let brokers = cluster.bootstrap();
    wait_for_brokers(&brokers, 3);
    create_topic(&brokers, "before", 2, 3);

    // Broker 4 is not among the seeds: it registers through them.
    let joined = cluster.add_broker(dir.path());
    let all = cluster.bootstrap();
    wait_for_brokers(&all, 4);
    // A topic on all four brokers can only be placed once it is registered and alive.
    create_topic(&all, "after", 2, 4);
    wait_until("leaders of after", Duration::from_secs(60), || {
        (0..2).all(|p| leader_of(&all, "after", p).is_some())
    });
    let producer = producer(&all, 60_000);
    send(&producer, "after", "joined", 0, 300);
    producer.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(acked_count(&producer), 300);
    wait_until("the new broker in sync", Duration::from_secs(60), || {
        (0..2).all(|p| {
            partition_state(&all, "after", p)
                .is_some_and(|(_, replicas, isr)| replicas.contains(&(joined as i32)) && isr.len() == 4)
        })
    });
    // Read back through the new broker alone: it knows every topic and leader.
    let only_new = cluster.brokers[joined as usize - 1].kafka_addr.clone();
    let acked = producer.context().acked.lock().unwrap().clone();
    check_read_back(&acked, &read_all(&only_new, "after", 2));
    assert!(
        partition_state(&only_new, "before", 0).is_some(),
        "older topics known to the new broker"
    );
}

/// A consumer of group `group` (classic or KIP-848 protocol) reading `topic`.
fn group_consumer(brokers: &str, group: &str, protocol: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("socket.timeout.ms", "3000");
    if protocol == "classic" {
        config.set("session.timeout.ms", "10000");
    }
    config.create().unwrap()
}

/// Polls until `count` messages arrived (or a minute passed); commits synchronously
/// after each; returns the values.
fn consume_and_commit(consumer: &BaseConsumer, count: usize) -> Vec<String> {
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while values.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            // Retried while the coordinator moves (NOT_COORDINATOR, timeouts).
            while consumer
                .commit_message(&m, rdkafka::consumer::CommitMode::Sync)
                .is_err()
            {
                assert!(Instant::now() < deadline, "commit never succeeded");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    values
}

#[test]
fn a_group_coordinator_fails_over_with_its_committed_offsets() {
    for protocol in ["classic", "consumer"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = TestCluster::start(Path::new(PROGRAM), dir.path(), 3);
        let brokers = cluster.bootstrap();
        wait_for_brokers(&brokers, 3);
        create_topic(&brokers, "work", 4, 3);
        let producer = producer(&brokers, 60_000);
        send(&producer, "work", "job", 0, 400);
        producer.flush(Duration::from_secs(60)).unwrap();
        assert_eq!(acked_count(&producer), 400);

        let group = format!("failover-{protocol}");
        let consumer = group_consumer(&brokers, &group, protocol);
        consumer.subscribe(&["work"]).unwrap();
        let first = consume_and_commit(&consumer, 200);
        assert_eq!(first.len(), 200, "{protocol}: first half consumed");
        drop(consumer);

        // Kill the broker leading the group's __consumer_offsets partition.
        let partitions = 16;
        let coordinator_partition = oxbow_core::group::partition_for_group(&group, partitions);
        let coordinator = leader_of(&brokers, "__consumer_offsets", coordinator_partition)
            .expect("the group's coordinator") as u32;
        cluster.kill(coordinator);

        // A new member of the group resumes from the committed offsets: the rest, and
        // nothing consumed before (every commit was acknowledged).
        let consumer = group_consumer(&brokers, &group, protocol);
        consumer.subscribe(&["work"]).unwrap();
        let second = consume_and_commit(&consumer, 200);
        assert_eq!(
            second.len(),
            200,
            "{protocol}: the rest consumed after the failover"
        );
        let mut all: Vec<&String> = first.iter().chain(&second).collect();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            400,
            "{protocol}: nothing consumed twice, nothing missed"
        );
        drop(consumer);
        cluster.restart(coordinator);
    }
}

#[test]
fn transactions_span_partitions_led_by_different_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(Path::new(PROGRAM), dir.path(), 3);
    let brokers = cluster.bootstrap();
    wait_for_brokers(&brokers, 3);
    create_topic(&brokers, "ledger", 6, 3);
    wait_until("leaders on every broker", Duration::from_secs(60), || {
        let leaders: std::collections::BTreeSet<i32> =
            (0..6).filter_map(|p| leader_of(&brokers, "ledger", p)).collect();
        leaders.len() == 3
    });
    let timeout = Duration::from_secs(30);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", "ledger-writer")
        .set("transaction.timeout.ms", "60000")
        .set("socket.timeout.ms", "5000")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = producer.init_transactions(timeout) {
        assert!(Instant::now() < deadline, "init_transactions: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every transaction writes to all six partitions (all three leaders): the markers
    // and the produce verifications cross brokers.
    for (round, commit) in [(0, true), (1, false), (2, true)] {
        producer.begin_transaction().unwrap();
        for i in 0..60 {
            let value = format!("round-{round}-{i}");
            let key = format!("k{i}");
            producer
                .send(
                    BaseRecord::to("ledger")
                        .partition(i % 6)
                        .key(&key)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        // Delivery reports are served by polling (BaseProducer): flush first.
        producer.flush(timeout).unwrap();
        if commit {
            producer.commit_transaction(timeout).unwrap();
        } else {
            producer.abort_transaction(timeout).unwrap();
        }
    }
    drop(producer);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "ledger-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&["ledger"]).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values.len() < 120 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // A little longer: nothing of the aborted round may show up.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(values.len(), 120, "both committed rounds, whole");
    assert!(
        values.iter().all(|v| !v.starts_with("round-1-")),
        "nothing of the aborted round"
    );
}

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
    let recover = || oxbow_runtime_real::cli::TopicCommand::Recover {
        name: "tiered".to_string(),
        partitions: 1,
        replicas: 3,
        configs: vec!["segment.bytes=1048576".into()],
        brokers: brokers.clone(),
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
