//! Consumer-group benchmark with librdkafka against a running broker, and the same load
//! against a peer broker in the same run (`--compare ADDR`). A command, not a test:
//!
//! ```sh
//! cargo run --release --bin oxbow -- start --data-dir /tmp/oxbow-bench &
//! scripts/bench-peer start 29092        # optional: Tansu, the peer
//! cargo run --release -p oxbow-tests --example group_bench -- \
//!     --brokers 127.0.0.1:9092 --compare 127.0.0.1:29092 --report-dir bench-reports
//! ```
//!
//! Two measurements per broker and protocol (`classic`, and `consumer` = KIP-848 where
//! the broker serves it):
//! * rebalance time 10 → 11 members: ten members share a 32-partition topic and are
//!   stable; an eleventh joins; the time until every partition is owned again, the
//!   newcomer owns some and no partition is owned twice (members polled throughout);
//! * commit throughput: one member commits synchronously (OffsetCommit, acks after the
//!   commit is durable) as fast as it can for `--seconds`.
//!
//! Prints a table and `summary: rebalance_ms=… commits_per_s=…` (Oxbow, classic), and
//! writes `<date>-groups.md` into `--report-dir` when given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PARTITIONS: i32 = 32;
const MEMBERS: usize = 10;

struct Options {
    brokers: String,
    compare: Option<String>,
    seconds: u64,
    report_dir: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        brokers: "127.0.0.1:9092".to_string(),
        compare: None,
        seconds: 5,
        report_dir: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--brokers" => o.brokers = value,
            "--compare" => o.compare = Some(value),
            "--seconds" => o.seconds = value.parse().expect("--seconds N"),
            "--report-dir" => o.report_dir = Some(value),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn unique(prefix: &str) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{prefix}-{ms}")
}

fn create_topic(brokers: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1));
    let results = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    std::thread::sleep(Duration::from_millis(500));
}

fn member(brokers: &str, group: &str, protocol: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if protocol == "classic" {
        config
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "500");
    }
    config.create().unwrap()
}

fn assignment(m: &BaseConsumer) -> BTreeSet<i32> {
    m.assignment().map_or_else(
        |_| BTreeSet::new(),
        |a| a.elements().iter().map(|e| e.partition()).collect(),
    )
}

/// Every partition owned exactly once, by members that all own some.
fn balanced(members: &[BaseConsumer]) -> bool {
    let mut seen = BTreeSet::new();
    for m in members {
        let a = assignment(m);
        if a.is_empty() || a.iter().any(|p| !seen.insert(*p)) {
            return false;
        }
    }
    seen.len() == PARTITIONS as usize
}

/// Polls every member until they are balanced; `None` after `timeout`.
fn poll_until_balanced(members: &[BaseConsumer], timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        for m in members {
            while m.poll(Duration::ZERO).is_some() {}
        }
        if balanced(members) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Milliseconds from the eleventh member's subscribe until the group is balanced again.
fn rebalance_ms(brokers: &str, protocol: &str) -> Result<f64, String> {
    let topic = unique("group-bench");
    create_topic(brokers, &topic);
    let group = unique(&format!("group-bench-{protocol}"));
    let mut members: Vec<BaseConsumer> = (0..MEMBERS).map(|_| member(brokers, &group, protocol)).collect();
    for m in &members {
        m.subscribe(&[&topic]).map_err(|e| e.to_string())?;
    }
    poll_until_balanced(&members, Duration::from_secs(90)).ok_or("ten members never balanced")?;
    // Settled: keep polling a little so no rebalance is still in flight.
    poll_until_balanced(&members, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(200));
    let newcomer = member(brokers, &group, protocol);
    newcomer.subscribe(&[&topic]).map_err(|e| e.to_string())?;
    members.push(newcomer);
    let took =
        poll_until_balanced(&members, Duration::from_secs(90)).ok_or("eleven members never balanced")?;
    Ok(took.as_secs_f64() * 1000.0)
}

/// Synchronous commits per second by one member.
fn commits_per_s(brokers: &str, seconds: u64) -> Result<f64, String> {
    let topic = unique("group-bench-commits");
    create_topic(brokers, &topic);
    let group = unique("group-bench-commits");
    let m = member(brokers, &group, "classic");
    let mut committed = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(
            &topic,
            (committed % PARTITIONS as u64) as i32,
            rdkafka::Offset::Offset(committed as i64),
        )
        .map_err(|e| e.to_string())?;
        m.commit(&tpl, CommitMode::Sync).map_err(|e| e.to_string())?;
        committed += 1;
    }
    Ok(committed as f64 / start.elapsed().as_secs_f64())
}

fn main() {
    let o = options();
    let mut brokers = vec![("oxbow", o.brokers.clone())];
    if let Some(peer) = &o.compare {
        brokers.push(("peer", peer.clone()));
    }
    let mut rows = Vec::new();
    for (name, addr) in &brokers {
        for protocol in ["classic", "consumer"] {
            let rebalance = rebalance_ms(addr, protocol);
            rows.push((name.to_string(), protocol, rebalance));
        }
    }
    let commits: Vec<(String, Result<f64, String>)> = brokers
        .iter()
        .map(|(name, addr)| (name.to_string(), commits_per_s(addr, o.seconds)))
        .collect();

    let fmt = |r: &Result<f64, String>| match r {
        Ok(v) => format!("{v:.0}"),
        Err(e) => format!("failed: {e}"),
    };
    let mut report = String::new();
    let _ = writeln!(
        report,
        "| broker | protocol | rebalance 10 → 11 members, ms |\n|---|---|---:|"
    );
    for (name, protocol, r) in &rows {
        let _ = writeln!(
            report,
            "| {name} ({}) | {protocol} | {} |",
            addr_of(&brokers, name),
            fmt(r)
        );
    }
    let _ = writeln!(
        report,
        "\n| broker | synchronous commits/s (one member, {} s) |\n|---|---:|",
        o.seconds
    );
    for (name, r) in &commits {
        let _ = writeln!(report, "| {name} | {} |", fmt(r));
    }
    print!("{report}");
    let oxbow_rebalance = rows
        .iter()
        .find(|(n, p, _)| n == "oxbow" && *p == "classic")
        .and_then(|(_, _, r)| r.as_ref().ok().copied())
        .unwrap_or(f64::NAN);
    let oxbow_commits = commits
        .first()
        .and_then(|(_, r)| r.as_ref().ok().copied())
        .unwrap_or(f64::NAN);
    println!("summary: rebalance_ms={oxbow_rebalance:.0} commits_per_s={oxbow_commits:.0}");
    if let Some(dir) = &o.report_dir {
        let days = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        let path = format!("{dir}/{}-groups.md", civil_date(days as i64));
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let text = format!(
            "# Consumer groups: rebalance time and commit throughput\n\n- Reproduce: `cargo run --release -p oxbow-tests --example group_bench -- {}`\n- Topic of {PARTITIONS} partitions; librdkafka members polled from one thread.\n\n{report}",
            command.split_once(' ').map_or("", |(_, args)| args)
        );
        std::fs::write(&path, text).unwrap();
        println!("report: {path}");
    }
}

fn addr_of<'a>(brokers: &'a [(&str, String)], name: &str) -> &'a str {
    brokers
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, a)| a.as_str())
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
