//! Produce throughput of librdkafka against a running node, three ways in one run:
//! plain `acks=all`, idempotent, and transactional (commits of `--txn-records` records).
//! A command, not a test:
//!
//! ```sh
//! cargo run --release --bin oxbow -- start --data-dir /tmp/oxbow-bench &
//! cargo run --release -p oxbow-tests --example txn_bench -- --brokers 127.0.0.1:9092
//! ```
//!
//! Results so far (2 shared cores, 1 KiB records, 4 partitions): idempotent 0.41-0.96x
//! plain (noisy: other builds shared the cores); transactions of 100 records ~800
//! records/s (0.01x), of 1000 records ~8,000 records/s (0.07-0.12x), bounded by the
//! client's flush (see [`Client`]).
//!
//! Prints one line per mode and a summary line `summary: plain_msgs_s=… idempotent_ratio=…
//! transactional_ratio=…` (ratios against plain).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::{Duration, Instant};

struct Options {
    brokers: String,
    seconds: u64,
    message_bytes: usize,
    txn_records: usize,
    partitions: i32,
}

fn options() -> Options {
    let mut o = Options {
        brokers: "127.0.0.1:9092".to_string(),
        seconds: 10,
        message_bytes: 1024,
        txn_records: 100,
        partitions: 4,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--brokers" => o.brokers = value,
            "--seconds" => o.seconds = value.parse().expect("--seconds N"),
            "--message-bytes" => o.message_bytes = value.parse().expect("--message-bytes N"),
            "--txn-records" => o.txn_records = value.parse().expect("--txn-records N"),
            "--partitions" => o.partitions = value.parse().expect("--partitions N"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let _ = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
}

fn producer(brokers: &str, extra: &[(&str, &str)]) -> Client {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "100000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().unwrap()
}

/// A producer whose delivery reports a background thread polls. Measured on
/// 2026-12-01: a lone message's `flush()` returns after ~100 ms with either rust-rdkafka
/// producer (Base or Threaded; Oxbow's own client sees the acks=all answer within
/// ~10 ms), and `commit_transaction` flushes first, so small transactions are bounded
/// by the client at ~8 per second; the commit itself (EndTxn: Prepare, markers,
/// Complete) took 4-11 ms.
type Client = ThreadedProducer<DefaultProducerContext>;

/// Sends one record, waiting while the local queue is full.
fn send(producer: &Client, topic: &str, partition: i32, payload: &[u8]) {
    loop {
        let record = BaseRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(payload);
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
}

/// Records per second acknowledged, streaming for the run's duration.
fn streaming(o: &Options, topic: &str, idempotent: bool) -> f64 {
    create_topic(&o.brokers, topic, o.partitions);
    let p = producer(
        &o.brokers,
        &[("enable.idempotence", if idempotent { "true" } else { "false" })],
    );
    let payload = vec![b'x'; o.message_bytes];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(o.seconds) {
        send(&p, topic, (sent % o.partitions as u64) as i32, &payload);
        sent += 1;
    }
    p.flush(Duration::from_secs(60)).unwrap();
    sent as f64 / start.elapsed().as_secs_f64()
}

/// Records per second committed, in transactions of `txn_records`.
fn transactional(o: &Options, topic: &str) -> f64 {
    create_topic(&o.brokers, topic, o.partitions);
    let p = producer(&o.brokers, &[("transactional.id", "txn-bench")]);
    p.init_transactions(Duration::from_secs(30)).unwrap();
    let payload = vec![b'x'; o.message_bytes];
    let start = Instant::now();
    let mut committed = 0u64;
    while start.elapsed() < Duration::from_secs(o.seconds) {
        p.begin_transaction().unwrap();
        for i in 0..o.txn_records {
            send(&p, topic, (i % o.partitions as usize) as i32, &payload);
        }
        p.commit_transaction(Duration::from_secs(60)).unwrap();
        committed += o.txn_records as u64;
    }
    committed as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let o = options();
    let run = format!("{}", std::process::id());
    let plain = streaming(&o, &format!("bench-plain-{run}"), false);
    println!("plain acks=all       {plain:>10.0} msgs/s");
    let idempotent = streaming(&o, &format!("bench-idempotent-{run}"), true);
    println!(
        "idempotent           {idempotent:>10.0} msgs/s  ({:.2}x plain)",
        idempotent / plain
    );
    let txn = transactional(&o, &format!("bench-txn-{run}"));
    println!(
        "transactional ({:>4}) {txn:>10.0} msgs/s  ({:.2}x plain)",
        o.txn_records,
        txn / plain
    );
    println!(
        "summary: plain_msgs_s={plain:.0} idempotent_ratio={:.3} transactional_ratio={:.3} message_bytes={} partitions={} txn_records={}",
        idempotent / plain,
        txn / plain,
        o.message_bytes,
        o.partitions,
        o.txn_records
    );
}
