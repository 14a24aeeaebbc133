//! The `oxbow` command line against a real three-broker cluster (separate processes on
//! loopback): topic, produce, consume, describe and group commands route each request
//! to its partition's leader or its group's coordinator, and keep working after the
//! leader of the partition they write is killed with SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_runtime_real::cli::{self, ConsumeArgs, GroupCommand, ProduceArgs, TopicCommand, TopicSpec};
use oxbow_runtime_real::client::{ClusterClient, TopicPartition};
use oxbow_tests::cluster::TestCluster;
use std::path::Path;
use std::time::{Duration, Instant};

const PROGRAM: &str = env!("CARGO_BIN_EXE_oxbow-test-node");
const TOPIC: &str = "routed";

fn produce(brokers: &str, lines: std::ops::Range<u32>) -> String {
    let input: String = lines.map(|i| format!("line-{i}\n")).collect();
    let args = ProduceArgs {
        topic: TOPIC.to_string(),
        key: None,
        acks: "all".to_string(),
        brokers: brokers.to_string(),
    };
    let mut out = Vec::new();
    cli::produce(args, input.as_bytes(), &mut out).expect("produce");
    String::from_utf8(out).unwrap()
}

/// Every value of the topic from the beginning, sorted (`num` of them).
fn consume_all(brokers: &str, num: u64) -> Vec<String> {
    let args = ConsumeArgs {
        topic: TOPIC.to_string(),
        from_beginning: true,
        offset: None,
        num: Some(num),
        verbose: false,
        brokers: brokers.to_string(),
    };
    let mut out = Vec::new();
    cli::consume(args, &mut out).expect("consume");
    let mut values: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    values.sort_unstable();
    values
}

fn expected(count: u32) -> Vec<String> {
    let mut values: Vec<String> = (0..count).map(|i| format!("line-{i}")).collect();
    values.sort_unstable();
    values
}

fn topic_cli(command: TopicCommand) -> String {
    let mut out = Vec::new();
    cli::topic(command, &mut out).expect("topic command");
    String::from_utf8(out).unwrap()
}

fn group_cli(command: GroupCommand) -> String {
    let mut out = Vec::new();
    cli::group(command, &mut out).expect("group command");
    String::from_utf8(out).unwrap()
}

/// Waits until Metadata lists `count` brokers (every one registered).
fn wait_for_brokers(brokers: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = ClusterClient::connect(brokers).map(|c| c.brokers().len());
        if listed.as_ref().is_ok_and(|n| *n == count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "brokers never all registered: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `topic create` (6 partitions, 3 replicas), asked again while the new cluster cannot
/// place three replicas yet.
fn create_topic(brokers: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut out = Vec::new();
        let command = TopicCommand::Create(TopicSpec {
            name: TOPIC.to_string(),
            partitions: 6,
            replicas: 3,
            configs: vec![],
            brokers: brokers.to_string(),
        });
        match cli::topic(command, &mut out) {
            Ok(()) => return String::from_utf8(out).unwrap(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("create {TOPIC}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("create {TOPIC}: {e}"),
        }
    }
}

/// The broker that leads `partition` of the topic now.
fn leader(brokers: &str, partition: i32) -> i32 {
    let mut client = ClusterClient::connect(brokers).expect("connect");
    client.metadata(Some(&[TOPIC])).expect("metadata");
    client
        .snapshot()
        .leader_of(&TopicPartition::new(TOPIC, partition))
        .expect("a leader")
}

#[test]
fn commands_route_to_leaders_and_survive_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(Path::new(PROGRAM), dir.path(), 3);
    let brokers = cluster.bootstrap();

    wait_for_brokers(&brokers, 3);
    let created = create_topic(&brokers);
    assert!(
        created.contains("created topic routed with 6 partitions"),
        "{created}"
    );
    assert!(!created.contains("note:"), "{created}");

    // Leaders are spread over the brokers, so every command below needs routing.
    assert!(produce(&brokers, 0..60).contains("produced 60 records"));
    assert_eq!(consume_all(&brokers, 60), expected(60));
    let described = topic_cli(TopicCommand::Describe {
        name: TOPIC.to_string(),
        brokers: brokers.clone(),
    });
    let ends: i64 = described
        .lines()
        .skip(2)
        .take(6)
        .map(|row| row.split('\t').nth(4).unwrap().parse::<i64>().unwrap())
        .sum();
    assert!(ends >= 60, "{described}");

    // The group's coordinator comes to be while all three brokers are up: like Kafka,
    // `__consumer_offsets` is only created with as many live brokers as its replication
    // factor (3), never silently under-replicated.
    let mut out = Vec::new();
    let before = cli::group(
        GroupCommand::Describe {
            group: "routed-group".to_string(),
            brokers: brokers.clone(),
        },
        &mut out,
    );
    // The coordinator answers: the group does not exist yet.
    let answered = match &before {
        Ok(()) => true,
        Err(e) => e.to_string().contains("no such group"),
    };
    assert!(answered, "{before:?}");

    // `produce` without a key sends its one batch to partition 1: kill that leader.
    let victim = leader(&brokers, 1);
    cluster.kill(u32::try_from(victim).unwrap());
    // Failover takes ~3 s (it took over 10 s, the CLI's retry budget, while replicas
    // of a partition seeded their election timers alike); on a loaded machine it may
    // still be slow, so wait for the new leader before producing.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut client = ClusterClient::connect(&brokers).expect("connect");
        let moved = client.metadata(Some(&[TOPIC])).is_ok()
            && client
                .snapshot()
                .leader_of(&TopicPartition::new(TOPIC, 1))
                .is_some_and(|l| l != victim);
        if moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader of {TOPIC}/1 within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(produce(&brokers, 60..90).contains("produced 30 records"));
    assert_eq!(consume_all(&brokers, 90), expected(90));
    assert_ne!(leader(&brokers, 1), victim);

    let reset = group_cli(GroupCommand::ResetOffsets(cli::ResetArgs {
        group: "routed-group".to_string(),
        topic: TOPIC.to_string(),
        target: cli::ResetTarget {
            to_earliest: false,
            to_latest: true,
            to_offset: None,
        },
        partition: None,
        dry_run: false,
        brokers: brokers.clone(),
    }));
    assert!(reset.contains("reset 6 partitions of routed"), "{reset}");
    let described = group_cli(GroupCommand::Describe {
        group: "routed-group".to_string(),
        brokers: brokers.clone(),
    });
    for line in described.lines().filter(|l| l.starts_with("routed ")) {
        let lag = line.split_whitespace().nth(4).unwrap();
        assert_eq!(lag, "0", "{described}");
    }
    let listed = group_cli(GroupCommand::List { brokers });
    assert!(listed.contains("routed-group"), "{listed}");
}
