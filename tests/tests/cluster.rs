//! A replicated cluster of real broker processes on loopback, driven by librdkafka:
//! acks=all writes survive a leader killed with SIGKILL and a broker paused with
//! SIGSTOP; a five-broker cluster keeps serving without two brokers and refuses
//! writes, losing nothing, without three.

use oxbow_tests::cluster::TestCluster;
use oxbow_tests::cluster_client::{
    acked_count, check_read_back, create_topic, leader_of, metric_sum, metrics_page, partition_state,
    partitions_with_leader, producer, read_all, send, wait_for_brokers, wait_until,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::path::Path;
use std::time::{Duration, Instant};

const PROGRAM: &str = env!("CARGO_BIN_EXE_oxbow-test-node");

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

    // /metrics counts each led partition once, on the shard that leads it: summed
    // over every shard of every broker, the leaders the metadata reports.
    wait_until(
        "oxbow_cluster_partitions_led summing to the led partitions",
        Duration::from_secs(30),
        || {
            let led: f64 = cluster
                .brokers
                .iter()
                .map(|b| metric_sum(&metrics_page(&b.admin_addr), "oxbow_cluster_partitions_led"))
                .sum();
            partitions_with_leader(&brokers).is_some_and(|n| n >= 3 && led == n as f64)
        },
    );
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
