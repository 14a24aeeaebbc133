//! Produce throughput of librdkafka against a running node, three ways in one run:
//! plain `acks=all`, idempotent, and transactional (commits of `--txn-records` records).
//! A command, not a test:
//!
//! ```sh
//! cargo run --release --bin oxbow -- start --data-dir /tmp/oxbow-bench &
//! cargo run --release -p oxbow-tests --example txn_bench -- --brokers 127.0.0.1:9092
//! ```
//!
//! Results: `bench-reports/2026-12-02-idempotence-and-transactions.md`.
//!
//! Options: `--seconds N` per mode, `--message-bytes N`, `--txn-records N`,
//! `--partitions N`, `--rounds N` (the three modes interleaved N times; medians
//! reported), `--csv FILE` (one row per mode and round), `--producers N` (N producers
//! per mode at once, each on its own thread; throughput summed), `--set key=value`
//! (an extra librdkafka setting for every producer, repeatable), `--settle-s N` (pause
//! after each mode's topic is deleted, default 5), `--node-pid PID` (the
//! node's process, on this machine: its CPU per record is printed beside the client's,
//! which shows whether a mode is bound by the client or by the broker — on a 2-core
//! machine they share the CPU). Prints one line per round and
//! a summary line `summary: plain_msgs_s=… idempotent_ratio=… transactional_ratio=…`
//! (median ratios against plain in the same round).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

struct Options {
    brokers: String,
    seconds: u64,
    message_bytes: usize,
    txn_records: usize,
    partitions: i32,
    /// Rounds of the three modes, interleaved (medians reported).
    rounds: usize,
    /// Where to write one CSV row per mode and round.
    csv: Option<String>,
    /// Producers per mode, each on its own thread and connection (transactional
    /// ones each with their own `transactional.id`).
    producers: usize,
    /// Extra librdkafka settings for every producer (`--set key=value`, repeatable).
    extra: Vec<(String, String)>,
    /// The node's process id: its CPU per record is reported beside the client's.
    node_pid: Option<u32>,
    /// Pause after each mode's topic is deleted, before the next mode starts.
    settle_s: u64,
}

fn options() -> Options {
    let mut o = Options {
        brokers: "127.0.0.1:9092".to_string(),
        seconds: 10,
        message_bytes: 1024,
        txn_records: 100,
        partitions: 4,
        rounds: 1,
        csv: None,
        producers: 1,
        extra: Vec::new(),
        node_pid: None,
        settle_s: 5,
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
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            "--csv" => o.csv = Some(value),
            "--producers" => o.producers = value.parse().expect("--producers N"),
            "--node-pid" => o.node_pid = Some(value.parse().expect("--node-pid PID")),
            "--settle-s" => o.settle_s = value.parse().expect("--settle-s N"),
            "--set" => {
                let (k, v) = value.split_once('=').expect("--set key=value");
                o.extra.push((k.to_string(), v.to_string()));
            }
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// Runs `load` on a fresh topic `name`, deleted afterwards: a run's modes write
/// gigabytes, and a data directory that keeps them slows later runs (and can fill the
/// disk).
fn on_fresh_topic<T>(o: &Options, name: &str, load: impl FnOnce() -> T) -> T {
    let admin = admin(&o.brokers);
    let topic = NewTopic::new(name, o.partitions, TopicReplication::Fixed(1));
    let _ = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    let result = load();
    let deleted = futures_executor::block_on(admin.delete_topics(&[name], &AdminOptions::new()));
    match deleted {
        Ok(results) => {
            for (topic, code) in results.into_iter().filter_map(Result::err) {
                eprintln!("could not delete topic {topic}: {code}");
            }
        }
        Err(e) => eprintln!("could not delete topic {name}: {e}"),
    }
    // Deleting gigabytes makes the file system free (and, mounted with `discard`,
    // discard) them, which slows the disk's syncs for seconds: the next mode waits.
    std::thread::sleep(Duration::from_secs(o.settle_s));
    result
}

fn producer(o: &Options, extra: &[(&str, &str)]) -> Client {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &o.brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "100000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    for (k, v) in &o.extra {
        config.set(k, v);
    }
    config.create_with_context(Deliveries::default()).unwrap()
}

/// Runs `load` on `o.producers` threads at once (producer index as argument) and
/// returns the sum of their records per second.
fn on_threads(o: &Options, load: impl Fn(usize) -> f64 + Sync) -> f64 {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..o.producers)
            .map(|i| {
                let load = &load;
                scope.spawn(move || load(i))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

/// A producer whose delivery reports a background thread polls.
///
/// rust-rdkafka's `flush()` (which `commit_transaction` calls first) asks librdkafka
/// for a non-blocking flush and otherwise polls for 100 ms at a time, and its poll
/// returns only at its deadline, never on an event: measured on 2026-12-01, every
/// `flush()` with a message in flight took ~100 ms however fast the broker answered,
/// which capped transactions at ~8 per second. So the load waits for its deliveries
/// itself ([`wait_delivered`]) before it flushes or commits, and the client's flush
/// then finds nothing in flight.
type Client = ThreadedProducer<Deliveries>;

/// Counts a producer's delivery reports (successes and failures alike: a failure
/// makes the transaction's commit fail) and wakes whoever waits for them. Waiting on
/// it costs no CPU; polling `in_flight_count` every 100 µs, as this load did until
/// 2026-12-03, woke each of 8 producer threads 10,000 times a second, CPU the node
/// shares on a 2-core machine.
#[derive(Default)]
struct Deliveries {
    reported: Mutex<u64>,
    changed: Condvar,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, _result: &DeliveryResult<'_>, _opaque: ()) {
        *self.reported.lock().unwrap() += 1;
        self.changed.notify_all();
    }
}

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

/// Waits until the producer reported the delivery of all `sent` records it was
/// given (at most 60 s).
fn wait_delivered(producer: &Client, sent: u64) {
    let deliveries = producer.context();
    let reported = deliveries.reported.lock().unwrap();
    let _reported = deliveries
        .changed
        .wait_timeout_while(reported, Duration::from_secs(60), |reported| *reported < sent)
        .unwrap();
}

/// Records per second acknowledged, streaming for the run's duration, summed over
/// the producers.
fn streaming(o: &Options, topic: &str, idempotent: bool) -> f64 {
    on_fresh_topic(o, topic, || {
        on_threads(o, |_| streaming_one(o, topic, idempotent))
    })
}

fn streaming_one(o: &Options, topic: &str, idempotent: bool) -> f64 {
    let p = producer(
        o,
        &[("enable.idempotence", if idempotent { "true" } else { "false" })],
    );
    let payload = vec![b'x'; o.message_bytes];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(o.seconds) {
        send(&p, topic, (sent % o.partitions as u64) as i32, &payload);
        sent += 1;
    }
    wait_delivered(&p, sent);
    p.flush(Duration::from_secs(60)).unwrap();
    sent as f64 / start.elapsed().as_secs_f64()
}

/// Records per second committed, in transactions of `txn_records`, summed over the
/// producers; each prints the mean time per transaction spent until every record was
/// acknowledged and in the commit.
fn transactional(o: &Options, topic: &str, round: usize) -> f64 {
    let run = std::process::id();
    on_fresh_topic(o, topic, || {
        on_threads(o, |i| {
            transactional_one(o, topic, &format!("txn-bench-{run}-{round}-{i}"))
        })
    })
}

fn transactional_one(o: &Options, topic: &str, id: &str) -> f64 {
    let p = producer(o, &[("transactional.id", id)]);
    p.init_transactions(Duration::from_secs(30)).unwrap();
    let payload = vec![b'x'; o.message_bytes];
    let start = Instant::now();
    let mut committed = 0u64;
    let (mut delivering, mut committing, mut transactions) = (Duration::ZERO, Duration::ZERO, 0u32);
    while start.elapsed() < Duration::from_secs(o.seconds) {
        let began = Instant::now();
        p.begin_transaction().unwrap();
        for i in 0..o.txn_records {
            send(&p, topic, (i % o.partitions as usize) as i32, &payload);
        }
        wait_delivered(&p, committed + o.txn_records as u64);
        let delivered = Instant::now();
        p.commit_transaction(Duration::from_secs(60)).unwrap();
        delivering += delivered - began;
        committing += delivered.elapsed();
        transactions += 1;
        committed += o.txn_records as u64;
    }
    let per_txn_ms = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(transactions.max(1));
    println!(
        "  {id}: transactions: {transactions}, per transaction: {:.1} ms until acknowledged (AddPartitionsToTxn, produce), {:.1} ms commit (EndTxn)",
        per_txn_ms(delivering),
        per_txn_ms(committing)
    );
    committed as f64 / start.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU seconds (user + system) used so far by process `pid` (`self` for this one),
/// from `/proc/<pid>/stat`; `None` if it cannot be read.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// Runs `phase` (records per second over `seconds`) and returns its rate with the CPU
/// microseconds per record the client and (with `--node-pid`) the node spent on it.
fn measured(o: &Options, phase: impl FnOnce() -> f64) -> (f64, f64, Option<f64>) {
    let node = o.node_pid.map(|pid| pid.to_string());
    let before = (cpu_seconds("self"), node.as_deref().and_then(cpu_seconds));
    let started = Instant::now();
    let rate = phase();
    let records = (rate * started.elapsed().as_secs_f64()).max(1.0);
    let after = (cpu_seconds("self"), node.as_deref().and_then(cpu_seconds));
    let per_record = |b: Option<f64>, a: Option<f64>| Some((a? - b?) * 1e6 / records);
    (
        rate,
        per_record(before.0, after.0).unwrap_or(f64::NAN),
        per_record(before.1, after.1),
    )
}

fn main() {
    let o = options();
    assert!(o.rounds >= 1, "--rounds at least 1");
    let run = format!("{}", std::process::id());
    let (mut plain, mut idempotent, mut txn) = (Vec::new(), Vec::new(), Vec::new());
    let mut csv = String::from(
        "round,mode,msgs_per_s,message_bytes,partitions,txn_records,producers,client_cpu_us_per_msg,node_cpu_us_per_msg\n",
    );
    for round in 0..o.rounds {
        let plain_run = measured(&o, || streaming(&o, &format!("bench-plain-{run}-{round}"), false));
        let idempotent_run = measured(&o, || {
            streaming(&o, &format!("bench-idempotent-{run}-{round}"), true)
        });
        let txn_run = measured(&o, || {
            transactional(&o, &format!("bench-txn-{run}-{round}"), round)
        });
        let (p, i, t) = (plain_run.0, idempotent_run.0, txn_run.0);
        println!(
            "round {round}: plain acks=all {p:>8.0}  idempotent {i:>8.0} ({:.3}x)  transactional ({}) {t:>8.0} ({:.3}x) msgs/s",
            i / p,
            o.txn_records,
            t / p
        );
        let node = |cpu: Option<f64>| cpu.map_or("-".to_string(), |us| format!("{us:.2}"));
        println!(
            "  CPU µs per record, client / node: plain {:.2} / {}, idempotent {:.2} / {}, transactional {:.2} / {}",
            plain_run.1,
            node(plain_run.2),
            idempotent_run.1,
            node(idempotent_run.2),
            txn_run.1,
            node(txn_run.2)
        );
        for (mode, (value, client_cpu, node_cpu)) in [
            ("plain", plain_run),
            ("idempotent", idempotent_run),
            ("transactional", txn_run),
        ] {
            csv.push_str(&format!(
                "{round},{mode},{value:.0},{},{},{},{},{client_cpu:.3},{}\n",
                o.message_bytes,
                o.partitions,
                o.txn_records,
                o.producers,
                node_cpu.map_or(String::new(), |c| format!("{c:.3}"))
            ));
        }
        plain.push(p);
        idempotent.push(i);
        txn.push(t);
    }
    if let Some(path) = &o.csv {
        std::fs::write(path, csv).expect("write --csv");
    }
    let ratio = |mode: &[f64]| median(mode.iter().zip(&plain).map(|(m, p)| m / p).collect());
    println!(
        "summary: plain_msgs_s={:.0} idempotent_ratio={:.3} transactional_ratio={:.3} message_bytes={} partitions={} txn_records={} rounds={} producers={}",
        median(plain.clone()),
        ratio(&idempotent),
        ratio(&txn),
        o.message_bytes,
        o.partitions,
        o.txn_records,
        o.rounds,
        o.producers
    );
}
