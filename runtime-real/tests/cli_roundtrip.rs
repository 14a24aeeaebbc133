//! The `oxbow` command line against a running node: create a topic, produce lines,
//! consume them, describe and reconfigure the topic — the real binary, as a person
//! would type it — and clear errors for mistakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::start;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn oxbow(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that exits early (a usage error) may not read its input.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn create_produce_consume_describe_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        kafka_addr: Some("127.0.0.1:0".to_string()),
        admin_addr: Some("127.0.0.1:0".to_string()),
        rpc_addr: Some("127.0.0.1:0".to_string()),
        ..Overrides::default()
    };
    let node = start(NodeConfig::load(None, overrides).unwrap()).unwrap();
    let brokers = format!("--brokers={}", node.kafka_addr());
    let b = brokers.as_str();

    let created = oxbow(
        &[
            "topic",
            "create",
            "lines",
            "-p",
            "2",
            "-c",
            "retention.ms=3600000",
            b,
        ],
        "",
    );
    assert!(created.status.success(), "{created:?}");
    let produced = oxbow(&["produce", "lines", "--key", "k", b], "alpha\nbeta\ngamma\n");
    assert!(text(&produced).contains("produced 3 records"), "{produced:?}");
    let consumed = oxbow(&["consume", "lines", "--from-beginning", "--num", "3", b], "");
    assert_eq!(text(&consumed), "alpha\nbeta\ngamma\n", "{consumed:?}");

    let described = oxbow(&["topic", "describe", "lines", b], "");
    let out = text(&described);
    assert!(out.contains("topic lines: 2 partitions"), "{out}");
    assert!(out.contains("retention.ms=3600000\t(topic)"), "{out}");
    let altered = oxbow(&["topic", "alter-config", "lines", "retention.ms=60000", b], "");
    assert!(altered.status.success(), "{altered:?}");
    assert!(text(&oxbow(&["topic", "describe", "lines", b], "")).contains("retention.ms=60000"));
    assert!(text(&oxbow(&["topic", "list", b], "")).contains("lines\t2 partitions"));
    assert!(
        text(&oxbow(&["cluster", "info", b], "")).contains("topic lines: 2 partitions, 0 without a leader")
    );

    // Mistakes get a clear message and a failing exit code.
    let again = oxbow(&["topic", "create", "lines", b], "");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{again:?}"
    );
    let bad_acks = oxbow(&["produce", "lines", "--acks", "2", b], "x\n");
    assert!(
        String::from_utf8_lossy(&bad_acks.stderr).contains("--acks 2"),
        "{bad_acks:?}"
    );
    let nowhere = oxbow(&["topic", "list", "--brokers=127.0.0.1:1"], "");
    assert!(!nowhere.status.success());
    assert!(
        String::from_utf8_lossy(&nowhere.stderr).contains("cannot talk to 127.0.0.1:1"),
        "{nowhere:?}"
    );

    let deleted = oxbow(&["topic", "delete", "lines", b], "");
    assert!(deleted.status.success(), "{deleted:?}");
    node.stop().unwrap();
}

/// The command line against a running multi-broker cluster, whose Kafka addresses are in
/// `OXBOW_TEST_CLUSTER` (`HOST:PORT,...`, e.g. three `oxbow start --seeds …` nodes).
/// Every command is sent to ONE broker, which leads only some partitions: the client
/// must route produce, consume, describe (ListOffsets) and group commands itself.
/// Run: `OXBOW_TEST_CLUSTER=127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094 cargo test -p
/// oxbow-runtime-real --test cli_roundtrip -- --ignored`.
#[test]
#[ignore = "needs a running cluster in OXBOW_TEST_CLUSTER"]
fn commands_route_to_leaders_and_coordinators_in_a_cluster() {
    let Ok(cluster) = std::env::var("OXBOW_TEST_CLUSTER") else {
        panic!("set OXBOW_TEST_CLUSTER to the cluster's Kafka addresses");
    };
    let broker_count = cluster.split(',').count();
    // Only the first address: the client must find the others from Metadata.
    let first = cluster.split(',').next().unwrap_or_default().to_string();
    let brokers = format!("--brokers={first}");
    let b = brokers.as_str();
    let topic = format!("spread-{}", std::process::id());
    let replicas = broker_count.min(3).to_string();

    let created = oxbow(&["topic", "create", &topic, "-p", "6", "-r", &replicas, b], "");
    assert!(created.status.success(), "{created:?}");
    let info = text(&oxbow(&["cluster", "info", b], ""));
    assert_eq!(info.matches("\nbroker ").count(), broker_count, "{info}");
    assert_eq!(info.matches("(controller)").count(), 1, "{info}");
    assert!(info.contains(&format!("topic {topic}: 6 partitions")), "{info}");

    let lines: String = (0..60).map(|i| format!("line-{i}\n")).collect();
    let produced = oxbow(&["produce", &topic, b], &lines);
    assert!(text(&produced).contains("produced 60 records"), "{produced:?}");
    let consumed = oxbow(&["consume", &topic, "--from-beginning", "--num", "60", b], "");
    let consumed_text = text(&consumed);
    let mut got: Vec<&str> = consumed_text.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..60).map(|i| format!("line-{i}")).collect();
    want.sort_unstable();
    assert_eq!(got, want, "{consumed:?}");

    let described = oxbow(&["topic", "describe", &topic, b], "");
    assert!(described.status.success(), "{described:?}");
    let rows: Vec<String> = text(&described)
        .lines()
        .skip(2)
        .take(6)
        .map(str::to_string)
        .collect();
    let ends: i64 = rows
        .iter()
        .map(|r| r.split('\t').nth(4).and_then(|e| e.parse::<i64>().ok()).unwrap())
        .sum();
    assert!(ends >= 60, "{rows:?}");

    let group = format!("g-{topic}");
    let reset = oxbow(
        &[
            "group",
            "reset-offsets",
            &group,
            "--topic",
            &topic,
            "--to-latest",
            b,
        ],
        "",
    );
    assert!(reset.status.success(), "{reset:?}");
    let described = text(&oxbow(&["group", "describe", &group, b], ""));
    assert!(described.contains(&format!("group {group}")), "{described}");
    assert!(text(&oxbow(&["group", "list", b], "")).contains(&group));
    assert!(oxbow(&["topic", "delete", &topic, b], "").status.success());
}
