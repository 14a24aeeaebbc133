//! Transactions with librdkafka against a real Oxbow node: a transactional producer
//! commits and aborts; `read_committed` consumers never see aborted records nor records
//! of a transaction still open (past the last stable offset), while `read_uncommitted`
//! consumers see everything; a new producer with the same `transactional.id` fences the
//! old one and aborts its open transaction; consume-transform-produce with
//! `send_offsets_to_transaction` is exactly-once across a broker restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

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

fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

fn transactional_producer(brokers: &str, transactional_id: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "20")
        .create()
        .unwrap();
    producer.init_transactions(TIMEOUT).unwrap();
    producer
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, value: &str) {
    let record = BaseRecord::<(), str>::to(topic)
        .partition(partition)
        .payload(value);
    producer.send(record).map_err(|(e, _)| e).unwrap();
    producer.poll(Duration::ZERO);
}

/// Every value of `topic`'s partitions `0..partitions` a consumer at `isolation` reads
/// from the beginning, once nothing new has arrived for `quiet`.
fn read_values(brokers: &str, topic: &str, partitions: i32, isolation: &str, quiet: Duration) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "oxbow-txn-readers")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let mut last_new = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_new.elapsed() < quiet && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
                last_new = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

fn values(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn committed_transactions_are_read_and_aborted_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "txn", 2);
    let producer = transactional_producer(&brokers, "txn-commit-abort");
    for (prefix, commit) in [("first", true), ("aborted", false), ("second", true)] {
        producer.begin_transaction().unwrap();
        for (i, value) in values(prefix, 20).iter().enumerate() {
            send(&producer, "txn", (i % 2) as i32, value);
        }
        producer.flush(TIMEOUT).unwrap();
        if commit {
            producer.commit_transaction(TIMEOUT).unwrap();
        } else {
            producer.abort_transaction(TIMEOUT).unwrap();
        }
    }
    let quiet = Duration::from_secs(2);
    let committed = read_values(&brokers, "txn", 2, "read_committed", quiet);
    let mut expected = values("first", 20);
    expected.extend(values("second", 20));
    assert_eq!(sorted(committed), sorted(expected.clone()));
    let everything = read_values(&brokers, "txn", 2, "read_uncommitted", quiet);
    expected.extend(values("aborted", 20));
    assert_eq!(sorted(everything), sorted(expected));
    drop(producer);
    node.stop().unwrap();
}

#[test]
fn read_committed_stops_at_an_open_transaction_until_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "lso", 1);
    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let txn = transactional_producer(&brokers, "txn-lso");
    txn.begin_transaction().unwrap();
    for value in values("open", 5) {
        send(&txn, "lso", 0, &value);
    }
    txn.flush(TIMEOUT).unwrap();
    // Written after the open transaction started: behind the last stable offset too.
    for value in values("plain", 5) {
        let record = BaseRecord::<(), str>::to("lso").partition(0).payload(&value);
        plain.send(record).map_err(|(e, _)| e).unwrap();
    }
    plain.flush(TIMEOUT).unwrap();
    let quiet = Duration::from_secs(2);
    let while_open = read_values(&brokers, "lso", 1, "read_committed", quiet);
    assert_eq!(
        while_open,
        Vec::<String>::new(),
        "nothing past the open transaction's first offset"
    );
    let uncommitted = read_values(&brokers, "lso", 1, "read_uncommitted", quiet);
    assert_eq!(uncommitted.len(), 10);
    txn.commit_transaction(TIMEOUT).unwrap();
    let after = read_values(&brokers, "lso", 1, "read_committed", quiet);
    let mut expected = values("open", 5);
    expected.extend(values("plain", 5));
    assert_eq!(after, expected, "in log order once committed");
    drop(txn);
    node.stop().unwrap();
}

#[test]
fn a_new_producer_with_the_same_id_fences_the_old_one_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "fence", 1);
    let old = transactional_producer(&brokers, "txn-fence");
    old.begin_transaction().unwrap();
    for value in values("zombie", 5) {
        send(&old, "fence", 0, &value);
    }
    old.flush(TIMEOUT).unwrap();
    // The new instance's InitProducerId aborts the zombie's transaction and bumps the
    // epoch.
    let new = transactional_producer(&brokers, "txn-fence");
    new.begin_transaction().unwrap();
    for value in values("fresh", 5) {
        send(&new, "fence", 0, &value);
    }
    new.commit_transaction(TIMEOUT).unwrap();
    let error = old.commit_transaction(TIMEOUT).unwrap_err();
    let fenced = format!("{error:?}");
    assert!(
        fenced.contains("Fenced") || fenced.contains("fenced") || fenced.contains("Epoch"),
        "the old producer is fenced: {fenced}"
    );
    let committed = read_values(&brokers, "fence", 1, "read_committed", Duration::from_secs(2));
    assert_eq!(committed, values("fresh", 5));
    drop((old, new));
    node.stop().unwrap();
}

#[test]
fn read_committed_list_offsets_answers_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "ends", 1);
    let txn = transactional_producer(&brokers, "txn-ends");
    txn.begin_transaction().unwrap();
    for value in values("open", 3) {
        send(&txn, "ends", 0, &value);
    }
    txn.flush(TIMEOUT).unwrap();
    let watermarks = |isolation: &str| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("isolation.level", isolation)
            .create()
            .unwrap();
        consumer.fetch_watermarks("ends", 0, TIMEOUT).unwrap().1
    };
    let committed_end = watermarks("read_committed");
    let uncommitted_end = watermarks("read_uncommitted");
    assert!(
        committed_end < uncommitted_end,
        "read_committed end {committed_end} is below read_uncommitted end {uncommitted_end}"
    );
    txn.commit_transaction(TIMEOUT).unwrap();
    assert_eq!(watermarks("read_committed"), watermarks("read_uncommitted"));
    drop(txn);
    node.stop().unwrap();
}

/// One consume-transform-produce step: reads up to `batch` records of `input` from the
/// group's committed offset and writes `out-<value>` for each to `output` in one
/// transaction together with the consumed offsets. With `commit` false the transaction
/// is left open (the caller then restarts the broker under it). Returns how many
/// records it processed.
fn transform_step(brokers: &str, producer: &BaseProducer, group: &str, batch: usize, commit: bool) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("input", 0);
    let committed = consumer.committed_offsets(wanted, TIMEOUT).unwrap();
    let start = match committed.elements()[0].offset() {
        Offset::Offset(o) => Offset::Offset(o),
        _ => Offset::Beginning,
    };
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("input", 0, start).unwrap();
    consumer.assign(&assignment).unwrap();
    producer.begin_transaction().unwrap();
    let mut next_offset = None;
    let mut processed = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while processed < batch && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                send(producer, "output", 0, &format!("out-{value}"));
                next_offset = Some(m.offset() + 1);
                processed += 1;
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    if let Some(next) = next_offset {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("input", 0, Offset::Offset(next))
            .unwrap();
        let metadata = consumer.group_metadata().unwrap();
        producer
            .send_offsets_to_transaction(&offsets, &metadata, TIMEOUT)
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    if commit {
        producer.commit_transaction(TIMEOUT).unwrap();
    }
    processed
}

#[test]
fn consume_transform_produce_is_exactly_once_through_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path());
    let mut brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "input", 1);
    create_topic(&brokers, "output", 1);
    let inputs = values("in", 200);
    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for value in &inputs {
        let record = BaseRecord::<(), str>::to("input").partition(0).payload(value);
        plain.send(record).map_err(|(e, _)| e).unwrap();
    }
    plain.flush(TIMEOUT).unwrap();
    drop(plain);

    let mut producer = transactional_producer(&brokers, "ctp");
    let mut done = 0;
    let mut restarted = false;
    while done < inputs.len() {
        if !restarted && done >= inputs.len() / 2 {
            // Leave a transaction open with output and offsets in it, then restart the
            // broker under it: the open transaction must never become visible, and its
            // offsets must never be applied to the group.
            let processed = transform_step(&brokers, &producer, "ctp-group", 15, false);
            assert!(processed > 0);
            drop(producer);
            node.stop().unwrap();
            node = start_node(dir.path());
            brokers = node.kafka_addr().to_string();
            // The new instance fences the old epoch and aborts its open transaction.
            producer = transactional_producer(&brokers, "ctp");
            restarted = true;
            continue;
        }
        done += transform_step(&brokers, &producer, "ctp-group", 20, true);
    }
    let output = read_values(&brokers, "output", 1, "read_committed", Duration::from_secs(2));
    let expected: Vec<String> = inputs.iter().map(|v| format!("out-{v}")).collect();
    assert_eq!(output, expected, "every input transformed exactly once, in order");
    let everything = read_values(&brokers, "output", 1, "read_uncommitted", Duration::from_secs(2));
    assert!(
        everything.len() > expected.len(),
        "the aborted transaction's output is in the log"
    );
    drop(producer);
    node.stop().unwrap();
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_by_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "slow", 1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", "txn-slow")
        .set("transaction.timeout.ms", "1500")
        .set("message.timeout.ms", "1500")
        .set("linger.ms", "1")
        .create()
        .unwrap();
    producer.init_transactions(TIMEOUT).unwrap();
    producer.begin_transaction().unwrap();
    for value in values("late", 5) {
        send(&producer, "slow", 0, &value);
    }
    producer.flush(TIMEOUT).unwrap();
    // The coordinator aborts it (its check runs every second) and fences the epoch.
    std::thread::sleep(Duration::from_millis(3_500));
    assert!(
        producer.commit_transaction(TIMEOUT).is_err(),
        "a timed-out transaction cannot commit"
    );
    let end_at = |isolation: &str| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("isolation.level", isolation)
            .create()
            .unwrap();
        consumer.fetch_watermarks("slow", 0, TIMEOUT).unwrap().1
    };
    let (committed_end, end) = (end_at("read_committed"), end_at("read_uncommitted"));
    assert_eq!(
        committed_end, end,
        "the abort marker released the last stable offset"
    );
    let read = read_values(&brokers, "slow", 1, "read_committed", Duration::from_secs(2));
    assert_eq!(read, Vec::<String>::new());
    drop(producer);
    node.stop().unwrap();
}

fn txn_cli(command: oxbow_runtime_real::cli::TxnCommand) -> String {
    let mut out = Vec::new();
    oxbow_runtime_real::cli::txn(command, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn operators_list_describe_and_abort_a_transaction_from_the_command_line() {
    use oxbow_runtime_real::cli::TxnCommand;
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "ops", 1);
    let producer = transactional_producer(&brokers, "txn-ops");
    producer.begin_transaction().unwrap();
    for value in values("stuck", 3) {
        send(&producer, "ops", 0, &value);
    }
    producer.flush(TIMEOUT).unwrap();

    let listed = txn_cli(TxnCommand::List {
        states: vec![],
        brokers: brokers.clone(),
    });
    assert!(
        listed.contains("txn-ops") && listed.contains("Ongoing"),
        "{listed}"
    );
    let described = txn_cli(TxnCommand::Describe {
        id: "txn-ops".to_string(),
        brokers: brokers.clone(),
    });
    assert!(described.contains("state             Ongoing"), "{described}");
    assert!(described.contains("partitions        ops [0]"), "{described}");
    let producers = txn_cli(TxnCommand::Producers {
        topic: "ops".to_string(),
        partition: 0,
        brokers: brokers.clone(),
    });
    // One producer, whose open transaction starts at the partition's first record
    // (offset 1: the leader's Raft no-op is at 0).
    let row = producers.lines().nth(1).expect("a producer row").to_string();
    let producer_id: i64 = row.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(row.split_whitespace().last(), Some("1"), "{producers}");
    // The operator ends it on the partition: the last stable offset moves on.
    let aborted = txn_cli(TxnCommand::Abort {
        topic: "ops".to_string(),
        partition: 0,
        producer_id,
        producer_epoch: None,
        brokers: brokers.clone(),
    });
    assert!(aborted.contains("aborted producer"), "{aborted}");
    let producers = txn_cli(TxnCommand::Producers {
        topic: "ops".to_string(),
        partition: 0,
        brokers: brokers.clone(),
    });
    assert_eq!(
        producers.lines().nth(1).unwrap().split_whitespace().last(),
        Some("-")
    );
    let read = read_values(&brokers, "ops", 1, "read_committed", Duration::from_secs(2));
    assert_eq!(read, Vec::<String>::new(), "the aborted records stay hidden");
    drop(producer);
    node.stop().unwrap();
}

/// The admin listener's `/metrics` page.
fn metrics_page(admin: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `[txn]` reaches the coordinators (a timeout above `max_timeout_ms` is refused), and
/// after commits, an abort, a fenced producer and a timed-out transaction the
/// transaction metrics on `/metrics` count each of them.
#[test]
fn txn_settings_apply_and_metrics_count_commits_aborts_timeouts_and_fencing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::load(
        None,
        Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            kafka_addr: Some("127.0.0.1:0".to_string()),
            admin_addr: Some("127.0.0.1:0".to_string()),
            rpc_addr: Some("127.0.0.1:0".to_string()),
            ..Overrides::default()
        },
    )
    .unwrap();
    config.txn.max_timeout_ms = 30_000;
    config.txn.producer_id_expiration_ms = 3_600_000;
    let node = start(config).unwrap();
    let brokers = node.kafka_addr().to_string();
    create_topic(&brokers, "metered", 2);

    // transaction.timeout.ms 60000 > txn.max_timeout_ms: InitProducerId is refused.
    let too_long: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", "txn-too-long")
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    let refused = too_long.init_transactions(TIMEOUT).unwrap_err();
    assert!(
        format!("{refused}").contains("Transaction timeout is larger than the maximum"),
        "{refused:?}"
    );

    let metered = || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("transactional.id", "txn-metered")
            .set("transaction.timeout.ms", "20000")
            .set("linger.ms", "1")
            .create()
            .unwrap();
        producer.init_transactions(TIMEOUT).unwrap();
        producer
    };
    let producer = metered();
    for (prefix, commit) in [("one", true), ("two", true), ("three", false)] {
        producer.begin_transaction().unwrap();
        for (i, value) in values(prefix, 4).iter().enumerate() {
            send(&producer, "metered", (i % 2) as i32, value);
        }
        producer.flush(TIMEOUT).unwrap();
        if commit {
            producer.commit_transaction(TIMEOUT).unwrap();
        } else {
            producer.abort_transaction(TIMEOUT).unwrap();
        }
    }
    // An open transaction shows as ongoing.
    producer.begin_transaction().unwrap();
    send(&producer, "metered", 0, "open");
    producer.flush(TIMEOUT).unwrap();
    let page = metrics_page(node.admin_addr());
    assert_eq!(metric_sum(&page, "oxbow_txn_ongoing"), 1.0, "{page}");
    assert!(metric_sum(&page, "oxbow_producers_tracked") >= 1.0, "{page}");
    // A second instance fences the first (aborting its open transaction); the first's
    // commit is refused as fenced.
    let successor = metered();
    assert!(producer.commit_transaction(TIMEOUT).is_err(), "fenced");

    // A transaction that outlives its timeout is aborted by the coordinator.
    let slow: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", "txn-metered-slow")
        .set("transaction.timeout.ms", "1500")
        .set("message.timeout.ms", "1500")
        .set("linger.ms", "1")
        .create()
        .unwrap();
    slow.init_transactions(TIMEOUT).unwrap();
    slow.begin_transaction().unwrap();
    send(&slow, "metered", 1, "late");
    slow.flush(TIMEOUT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = metrics_page(node.admin_addr());
        if metric_sum(&page, "oxbow_txn_timeouts_aborted_total") >= 1.0 || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric_sum(&page, "oxbow_txn_timeouts_aborted_total"),
        1.0,
        "{page}"
    );
    assert_eq!(metric_sum(&page, "oxbow_txn_commits_total"), 2.0, "{page}");
    // The explicit abort, the fenced producer's open transaction, the timed-out one.
    assert_eq!(metric_sum(&page, "oxbow_txn_aborts_total"), 3.0, "{page}");
    assert!(metric_sum(&page, "oxbow_txn_fenced_total") >= 1.0, "{page}");
    assert_eq!(metric_sum(&page, "oxbow_txn_ongoing"), 0.0, "{page}");
    assert!(metric_sum(&page, "oxbow_txn_markers_total") >= 6.0, "{page}");
    assert!(metric_sum(&page, "oxbow_producers_tracked") >= 2.0, "{page}");
    drop((producer, successor, slow, too_long));
    node.stop().unwrap();
}
