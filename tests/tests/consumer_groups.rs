//! Consumer groups with a real client (librdkafka through the `rdkafka` crate) against
//! a real Oxbow node, with both protocols: the classic one (JoinGroup/SyncGroup, the
//! client's assignor) and KIP-848 (`group.protocol=consumer`, the broker assigns).
//!
//! Three members share an 8-partition topic, each partition owned by one member at a
//! time; a member that leaves, and one killed with SIGKILL (its session times out), has
//! its partitions moved; committed offsets are honoured by the next consumer of the
//! group, also after a broker restart; static members rejoin without a rebalance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{start, NodeHandle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientContext;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 8;

fn start_node(data_dir: &Path) -> NodeHandle {
    let overrides = Overrides {
        data_dir: Some(data_dir.to_path_buf()),
        kafka_addr: Some("127.0.0.1:0".to_string()),
        admin_addr: Some("127.0.0.1:0".to_string()),
        rpc_addr: Some("127.0.0.1:0".to_string()),
        ..Overrides::default()
    };
    let mut config = NodeConfig::load(None, overrides).unwrap();
    // Quick groups for tests: a short wait for joiners, short sessions allowed.
    config.group.initial_rebalance_delay_ms = 300;
    config.group.min_session_timeout_ms = 1000;
    config.group.consumer_session_timeout_ms = 6000;
    config.group.consumer_heartbeat_interval_ms = 500;
    config.group.offsets_partitions = 4;
    start(config).unwrap()
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

fn produce(brokers: &str, topic: &str, count: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in 0..count {
        let key = format!("k{i}");
        let value = format!("v{i}");
        let record = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .partition((i % PARTITIONS as usize) as i32);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Counts the rebalances a member goes through.
#[derive(Default)]
struct Rebalances(AtomicUsize);

impl ClientContext for Rebalances {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if std::env::var_os("OXBOW_TEST_RDKAFKA_DEBUG").is_some() {
            eprintln!("rdkafka {level:?} {fac}: {log_message}");
        }
    }
}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Member = BaseConsumer<Rebalances>;

fn member(brokers: &str, group: &str, protocol: &str, instance: Option<&str>) -> Member {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    if protocol == "classic" {
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "300");
    }
    if let Some(instance) = instance {
        config.set("group.instance.id", instance);
    }
    if let Ok(debug) = std::env::var("OXBOW_TEST_RDKAFKA_DEBUG") {
        config
            .set("debug", debug)
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config.create_with_context(Rebalances::default()).unwrap()
}

fn assignment(consumer: &Member) -> BTreeSet<i32> {
    consumer
        .assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Polls every member until `done` holds for their assignments (checking, at every
/// step, that no partition is assigned to two members); returns records read.
fn poll_until(
    members: &[&Member],
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&[BTreeSet<i32>]) -> bool,
) -> Vec<(i32, i64)> {
    let deadline = Instant::now() + timeout;
    let mut read = Vec::new();
    loop {
        for m in members {
            while let Some(message) = m.poll(Duration::from_millis(20)) {
                let message = message.unwrap();
                read.push((message.partition(), message.offset()));
            }
        }
        let assignments: Vec<BTreeSet<i32>> = members.iter().map(|m| assignment(m)).collect();
        let mut seen = BTreeSet::new();
        for a in &assignments {
            for p in a {
                assert!(
                    seen.insert(*p),
                    "partition {p} owned by two members: {assignments:?}"
                );
            }
        }
        if done(&assignments) {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {assignments:?}"
        );
    }
}

fn covers_all(assignments: &[BTreeSet<i32>]) -> bool {
    let all: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
    all.len() == PARTITIONS as usize && assignments.iter().all(|a| !a.is_empty())
}

fn committed(consumer: &Member, topic: &str) -> BTreeMap<i32, i64> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Three members share the topic, one leaves, one is killed, offsets carry over.
fn share_move_and_resume(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    let topic = format!("orders-{protocol}");
    let group = format!("billing-{protocol}");
    create_topic(&brokers, &topic, PARTITIONS);
    produce(&brokers, &topic, 800);

    let a = member(&brokers, &group, protocol, None);
    let b = member(&brokers, &group, protocol, None);
    let c = member(&brokers, &group, protocol, None);
    for m in [&a, &b, &c] {
        m.subscribe(&[&topic]).unwrap();
    }
    let mut read = poll_until(
        &[&a, &b, &c],
        "three members sharing 8 partitions",
        Duration::from_secs(60),
        covers_all,
    );
    // Read everything, then commit what each member read.
    let deadline = Instant::now() + Duration::from_secs(60);
    while read.iter().map(|(p, o)| (*p, *o)).collect::<BTreeSet<_>>().len() < 800 {
        read.extend(poll_until(
            &[&a, &b, &c],
            "reads",
            Duration::from_secs(60),
            |_| true,
        ));
        assert!(Instant::now() < deadline, "read {} of 800", read.len());
    }
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &read {
        let n = next.entry(*p).or_default();
        *n = (*n).max(o + 1);
    }
    // Each member commits the partitions it holds. Under the consumer protocol a
    // partition can be in flight between two members (revoked from one, not yet
    // assigned to the other) at the moment of a commit; it is committed by whoever
    // holds it once it lands.
    let mut uncommitted: BTreeSet<i32> = next.keys().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !uncommitted.is_empty() {
        for m in [&a, &b, &c] {
            let mine: Vec<i32> = assignment(m).intersection(&uncommitted).copied().collect();
            if mine.is_empty() {
                continue;
            }
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in &mine {
                tpl.add_partition_offset(&topic, *p, rdkafka::Offset::Offset(next[p]))
                    .unwrap();
            }
            m.commit(&tpl, CommitMode::Sync).unwrap();
            for p in &mine {
                uncommitted.remove(p);
            }
        }
        if !uncommitted.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{uncommitted:?} never held by a member"
            );
            poll_until(&[&a, &b, &c], "members polling", Duration::from_secs(5), |_| true);
        }
    }
    let offsets = committed(&a, &topic);
    assert_eq!(offsets, next, "every commit is read back");

    // A member leaves: the other two take its partitions.
    drop(c);
    poll_until(
        &[&a, &b],
        "two members after a leave",
        Duration::from_secs(60),
        covers_all,
    );

    // A member in another process joins, then is killed: its session times out and
    // its partitions come back.
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow-group-member"))
        .args([brokers.as_str(), topic.as_str(), group.as_str(), protocol])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Its assignment lines arrive on a thread, so that this one keeps polling the
    // in-process members: they must run their revocation callbacks (in `poll`) before
    // the coordinator hands their partitions to the newcomer.
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let child_assigned: BTreeSet<i32> = loop {
        poll_until(&[&a, &b], "members polling", Duration::from_secs(5), |_| true);
        if let Ok(line) = lines_rx.try_recv() {
            let partitions = line.strip_prefix("assigned ").unwrap_or_else(|| panic!("{line}"));
            let partitions: BTreeSet<i32> = partitions
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().unwrap())
                .collect();
            if !partitions.is_empty() {
                break partitions;
            }
        }
        assert!(Instant::now() < deadline, "the third member never got partitions");
    };
    // What the newcomer holds, the others released first.
    let held: BTreeSet<i32> = assignment(&a).union(&assignment(&b)).copied().collect();
    assert!(
        held.is_disjoint(&child_assigned),
        "{held:?} and {child_assigned:?} overlap"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    poll_until(
        &[&a, &b],
        "partitions back after a member died",
        Duration::from_secs(60),
        covers_all,
    );
    drop(a);
    drop(b);

    // A new consumer of the group, after a broker restart, starts at the commits.
    node.stop().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    produce(&brokers, &topic, 80);
    let d = member(&brokers, &group, protocol, None);
    d.subscribe(&[&topic]).unwrap();
    let mut fresh = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fresh.len() < 80 {
        fresh.extend(poll_until(
            &[&d],
            "reads after restart",
            Duration::from_secs(60),
            |_| true,
        ));
        assert!(
            Instant::now() < deadline,
            "read {} of 80 after restart",
            fresh.len()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    fresh.extend(poll_until(&[&d], "no more reads", Duration::from_secs(5), |_| {
        true
    }));
    assert_eq!(fresh.len(), 80, "only the 80 new records are read: {fresh:?}");
    assert!(fresh.iter().all(|(p, o)| *o >= offsets[p]), "{fresh:?}");
    drop(d);
    node.stop().unwrap();
}

#[test]
fn classic_group_shares_moves_and_resumes() {
    share_move_and_resume("classic");
}

#[test]
fn consumer_protocol_group_shares_moves_and_resumes() {
    share_move_and_resume("consumer");
}

#[test]
fn static_members_rejoin_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    let topic = "static-topic";
    create_topic(&brokers, topic, PARTITIONS);
    let a = member(&brokers, "static-group", "classic", Some("instance-a"));
    let b = member(&brokers, "static-group", "classic", Some("instance-b"));
    a.subscribe(&[topic]).unwrap();
    b.subscribe(&[topic]).unwrap();
    poll_until(
        &[&a, &b],
        "two static members",
        Duration::from_secs(60),
        covers_all,
    );
    let before_a = assignment(&a);
    let rebalances = a.context().0.load(Ordering::SeqCst);
    // b restarts: a static member does not leave the group when it closes.
    drop(b);
    let b = member(&brokers, "static-group", "classic", Some("instance-b"));
    b.subscribe(&[topic]).unwrap();
    poll_until(
        &[&a, &b],
        "the static member back",
        Duration::from_secs(30),
        covers_all,
    );
    assert_eq!(assignment(&a), before_a, "a kept its partitions");
    // Keep polling a while: a rebalance, if one were coming, would show now.
    poll_until(&[&a, &b], "a quiet group", Duration::from_secs(3), |_| {
        false_after(Duration::from_secs(2))
    });
    assert_eq!(
        a.context().0.load(Ordering::SeqCst),
        rebalances,
        "no rebalance happened"
    );
    drop(a);
    drop(b);
    node.stop().unwrap();
}

/// A condition that becomes true once `after` has passed since its first check.
fn false_after(after: Duration) -> bool {
    thread_local! {
        static START: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    START.with(|start| {
        let first = start.get().unwrap_or_else(Instant::now);
        start.set(Some(first));
        first.elapsed() >= after
    })
}

/// Runs an `oxbow group …` command line (parsed as the binary parses it) and returns
/// what it printed, or its error.
fn oxbow_group(args: &[&str]) -> Result<String, String> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: oxbow_runtime_real::cli::GroupCommand,
    }
    let cli = Cli::try_parse_from(std::iter::once("group").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    oxbow_runtime_real::cli::group(cli.command, &mut out).map_err(|e| e.to_string())?;
    Ok(String::from_utf8(out).unwrap())
}

/// The row of `table` whose first two columns are `topic` and `partition`.
fn row<'a>(table: &'a str, topic: &str, partition: i32) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.len() > 2 && cols[0] == topic && cols[1] == partition.to_string())
        .unwrap_or_else(|| panic!("no row {topic} {partition} in:\n{table}"))
}

#[test]
fn group_commands_list_describe_reset_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let brokers = node.kafka_addr().to_string();
    let b = format!("--brokers={brokers}");
    let topic = "cli-topic";
    create_topic(&brokers, topic, PARTITIONS);
    produce(&brokers, topic, 80); // 10 records per partition (after the leader's control batch)

    // A member reads everything and commits 4 of each partition's 10.
    let a = member(&brokers, "cli-group", "classic", None);
    a.subscribe(&[topic]).unwrap();
    poll_until(
        &[&a],
        "the member owns every partition",
        Duration::from_secs(60),
        covers_all,
    );
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(4))
            .unwrap();
    }
    a.commit(&tpl, CommitMode::Sync).unwrap();

    let listed = oxbow_group(&["list", &b]).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("cli-group") && l.contains("Stable") && l.contains("consumer")),
        "{listed}"
    );
    let described = oxbow_group(&["describe", "cli-group", &b]).unwrap();
    assert!(
        described.starts_with("group cli-group: Stable, classic protocol"),
        "{described}"
    );
    assert!(described.contains("1 members"), "{described}");
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        // committed, log end, lag, and an owner.
        let cols = row(&described, topic, p);
        let end: i64 = cols[3].parse().unwrap();
        assert!(end >= 10, "{described}");
        assert_eq!(cols[2], "4", "{described}");
        assert_eq!(cols[4], (end - 4).to_string(), "{described}");
        assert_ne!(cols[5], "-", "{described}");
        ends.insert(p, end);
    }
    // Offsets of a group with members stay put; so does the group.
    let refused = oxbow_group(&[
        "reset-offsets",
        "cli-group",
        "--topic",
        topic,
        "--to-earliest",
        &b,
    ])
    .unwrap_err();
    assert!(refused.contains("active members"), "{refused}");
    let refused = oxbow_group(&["delete", "cli-group", &b]).unwrap_err();
    assert!(refused.contains("active members"), "{refused}");

    // Once the member is gone: a dry run changes nothing, then the reset moves them.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !oxbow_group(&["describe", "cli-group", &b])
        .unwrap()
        .contains("0 members")
    {
        assert!(Instant::now() < deadline, "the member never left");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dry = oxbow_group(&[
        "reset-offsets",
        "cli-group",
        "--topic",
        topic,
        "--to-offset",
        "7",
        "--dry-run",
        &b,
    ])
    .unwrap();
    assert!(dry.contains("dry run: nothing committed"), "{dry}");
    assert_eq!(
        row(&oxbow_group(&["describe", "cli-group", &b]).unwrap(), topic, 0)[2],
        "4"
    );
    let reset = oxbow_group(&[
        "reset-offsets",
        "cli-group",
        "--topic",
        topic,
        "--to-offset",
        "7",
        &b,
    ])
    .unwrap();
    assert!(
        reset.contains(&format!("reset {PARTITIONS} partitions of {topic}")),
        "{reset}"
    );
    let described = oxbow_group(&["describe", "cli-group", &b]).unwrap();
    for p in 0..PARTITIONS {
        let lag = (ends[&p] - 7).to_string();
        assert_eq!(
            row(&described, topic, p)[2..5],
            ["7", &ends[&p].to_string(), &lag],
            "{described}"
        );
    }
    let reset = oxbow_group(&[
        "reset-offsets",
        "cli-group",
        "--topic",
        topic,
        "--to-latest",
        "--partition",
        "3",
        &b,
    ])
    .unwrap();
    assert_eq!(
        row(&reset, topic, 3)[2..4],
        ["7", &ends[&3].to_string()],
        "{reset}"
    );
    // A consumer of the group starts where the reset put it.
    let c = member(&brokers, "cli-group", "classic", None);
    c.subscribe(&[topic]).unwrap();
    // Records sit at offsets 1..end (the leader's control batch at 0).
    let expected: i64 = ends
        .iter()
        .filter(|(p, _)| **p != 3)
        .map(|(_, end)| end - 7)
        .sum();
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (read.len() as i64) < expected {
        read.extend(poll_until(
            &[&c],
            "reads after the reset",
            Duration::from_secs(60),
            |_| true,
        ));
        assert!(Instant::now() < deadline, "read {read:?}");
    }
    assert_eq!(read.len() as i64, expected, "{read:?}");
    assert!(read.iter().all(|(p, o)| *p != 3 && *o >= 7), "{read:?}");
    drop(c);

    // Mistakes get clear errors.
    let unknown = oxbow_group(&["describe", "no-such-group", &b]).unwrap_err();
    assert!(unknown.contains("no such group"), "{unknown}");
    let bad = oxbow_group(&[
        "reset-offsets",
        "cli-group",
        "--topic",
        topic,
        "--to-earliest",
        "--partition",
        "99",
        &b,
    ])
    .unwrap_err();
    assert!(bad.contains("partitions 0 to 7"), "{bad}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let deleted = loop {
        match oxbow_group(&["delete", "cli-group", &b]) {
            Ok(out) => break out,
            Err(e) if e.contains("active members") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(deleted, "deleted group cli-group\n");
    let gone = oxbow_group(&["describe", "cli-group", &b]).unwrap_err();
    assert!(gone.contains("no such group"), "{gone}");
    node.stop().unwrap();
}
