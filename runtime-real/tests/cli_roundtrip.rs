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
