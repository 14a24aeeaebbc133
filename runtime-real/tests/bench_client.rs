//! `oxbow bench produce|consume|e2e|limits` end to end against an in-process node, with
//! tiny durations: each run prints its `summary:` line last and files its markdown, CSV
//! and SVG. Figures are never asserted — benchmarks are not timed tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{start, NodeHandle};
use std::path::Path;
use std::process::{Command, Output};

fn node(dir: &Path) -> NodeHandle {
    let overrides = Overrides {
        data_dir: Some(dir.to_path_buf()),
        kafka_addr: Some("127.0.0.1:0".to_string()),
        admin_addr: Some("127.0.0.1:0".to_string()),
        rpc_addr: Some("127.0.0.1:0".to_string()),
        ..Overrides::default()
    };
    start(NodeConfig::load(None, overrides).unwrap()).unwrap()
}

fn oxbow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(args)
        .output()
        .unwrap()
}

fn last_line(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().last().unwrap_or_default().to_string()
}

fn files_with(dir: &Path, extension: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(extension))
        .count()
}

#[test]
fn produce_consume_and_e2e_print_a_summary_and_file_reports() {
    let data = tempfile::tempdir().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let node = node(data.path());
    let brokers = node.kafka_addr().to_string();
    let data_dir = data.path().to_str().unwrap();
    let report_dir = reports.path().to_str().unwrap();
    let common = [
        "--brokers",
        brokers.as_str(),
        "--duration-s",
        "0.5",
        "--warmup-s",
        "0",
        "--partitions",
        "2",
        "--producers",
        "1",
        "--in-flight",
        "2",
        "--consumers",
        "1",
        "--message-bytes",
        "100",
        "--history-mb",
        "1",
        "--data-dir",
        data_dir,
        "--limit-duration-s",
        "0.05",
        "--report-dir",
        report_dir,
    ];
    let metrics = node.admin_addr().to_string();
    for workload in ["produce", "consume", "e2e"] {
        let mut args = vec!["bench", workload];
        args.extend(common);
        if workload == "produce" {
            args.extend(["--broker-metrics", metrics.as_str()]);
        }
        let out = oxbow(&args);
        assert!(out.status.success(), "{workload}: {out:?}");
        let summary = last_line(&out);
        assert!(
            summary.starts_with("summary: throughput_mb_s="),
            "{workload}: {summary}"
        );
        for key in [" p99_ms=", " limit_mb_s=", " ratio=", " broker_cpu_cores="] {
            assert!(summary.contains(key), "{workload}: {summary}");
        }
        // The broker is this test process, found from its port.
        assert!(!summary.contains("broker_cpu_cores=na"), "{workload}: {summary}");
        // With its admin address, the broker's own fdatasyncs over the window (acks=all
        // syncs every produce) are set against the load's p99.
        let against_fsync = [" broker_fsync_p99_ms=", " p99_vs_broker_fsync_p99="];
        for key in against_fsync {
            assert_eq!(
                summary.contains(key),
                workload == "produce",
                "{workload}: {summary}"
            );
        }
    }
    assert_eq!(files_with(reports.path(), ".md"), 3);
    assert_eq!(files_with(reports.path(), ".svg"), 3);
    assert_eq!(files_with(reports.path(), ".percentiles.csv"), 3);
    let md = std::fs::read_dir(reports.path())
        .unwrap()
        .flatten()
        .find(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.contains("-e2e-") && name.ends_with(".md")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    assert!(
        md.contains("Reproduce: `cargo run --release --bin oxbow -- bench e2e --brokers"),
        "{md}"
    );
    // The limit's scratch directories are gone from the broker's data directory.
    assert!(!data.path().join("bench-limits-write").exists());
    node.stop().unwrap();
}

#[test]
fn compare_runs_the_same_load_against_a_second_broker() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reports = tempfile::tempdir().unwrap();
    let (a, b) = (node(a_dir.path()), node(b_dir.path()));
    let (a_addr, b_addr) = (a.kafka_addr().to_string(), b.kafka_addr().to_string());
    let out = oxbow(&[
        "bench",
        "produce",
        "--brokers",
        &a_addr,
        "--compare",
        &b_addr,
        "--duration-s",
        "0.3",
        "--warmup-s",
        "0",
        "--partitions",
        "1",
        "--producers",
        "1",
        "--in-flight",
        "1",
        "--report-dir",
        reports.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let summary = last_line(&out);
    assert!(summary.contains("limit_mb_s=na ratio=na"), "{summary}");
    assert!(summary.contains(" peer_throughput_mb_s="), "{summary}");
    assert!(summary.contains(" speedup="), "{summary}");
    let csv = std::fs::read_dir(reports.path())
        .unwrap()
        .flatten()
        .find(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".csv") && !name.ends_with(".percentiles.csv")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    assert!(csv.starts_with("broker,second,messages,mb_s,p50_ms,p99_ms,max_ms\n"));
    assert!(csv.contains(&a_addr) && csv.contains(&b_addr), "{csv}");
    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn limits_and_clear_errors() {
    let data = tempfile::tempdir().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let out = oxbow(&[
        "bench",
        "limits",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--batch-bytes",
        "4096",
        "--duration-s",
        "0.05",
        "--report-dir",
        reports.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        last_line(&out).starts_with("summary: write_fsync_mb_s="),
        "{out:?}"
    );
    assert_eq!(files_with(reports.path(), ".md"), 1);

    // acks=1 cannot be sent by the bench's client: said plainly, not run with acks=all.
    let out = oxbow(&["bench", "produce", "--acks", "1", "--brokers", "127.0.0.1:1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rskafka, always sends acks=all"), "{stderr}");
    // No broker there: a clear error, not a hang.
    let out = oxbow(&[
        "bench",
        "produce",
        "--brokers",
        "127.0.0.1:1",
        "--duration-s",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach 127.0.0.1:1"),
        "{out:?}"
    );
}
