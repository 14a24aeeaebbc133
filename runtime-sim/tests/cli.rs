//! The `oxbow-sim` command line: a passing run, a failing run that prints the broken
//! invariant, the seed and the exact replay command, replay, and clear errors for bad
//! input.

use std::process::Command;

fn sim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oxbow-sim"))
        .args(args)
        .output()
        .expect("oxbow-sim runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn scenario_file(name: &str, body: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("oxbow-sim-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, body).expect("temp file");
    path
}

#[test]
fn run_passes_and_reports_speed_and_hash() {
    let (code, out) = sim(&["run", "--seed", "1", "--check-determinism"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("trace hash") && out.contains("x real time") && out.ends_with("ok\n"),
        "{out}"
    );
    assert!(
        out.contains("determinism: a second run gave the same trace hash"),
        "{out}"
    );
}

#[test]
fn a_failing_run_names_the_invariant_and_the_replay_command() {
    let path = scenario_file(
        "bug",
        "name = \"bug\"\nswarm = false\nsafety_secs = 5\nread_interval_ms = 200\n[bugs]\nread_uncommitted = true\n",
    );
    let p = path.display().to_string();
    let (code, out) = sim(&["run", "--seed", "0", "--scenario", &p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED: invariant read-uncommitted broken"), "{out}");
    assert!(out.contains("seed: 0"), "{out}");
    assert!(
        out.contains(&format!("replay: cargo run --release -p oxbow-runtime-sim --bin oxbow-sim -- replay --seed 0 --scenario {p}")),
        "{out}"
    );
    let (code, trace) = sim(&["replay", "--seed", "0", "--scenario", &p]);
    assert_eq!(code, 0);
    assert!(
        trace.lines().count() > 100 && trace.contains("VIOLATION read-uncommitted"),
        "{trace}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn sweep_lists_failures_with_replay_commands() {
    let path = scenario_file(
        "sweep",
        "name = \"sweepbug\"\nswarm = false\nsafety_secs = 5\nread_interval_ms = 200\n[bugs]\nread_uncommitted = true\n",
    );
    let p = path.display().to_string();
    let (code, out) = sim(&["sweep", "--seeds", "0..3", "--jobs", "2", "--scenario", &p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("coverage over 3 runs"), "{out}");
    assert!(out.contains("sweepbug seed 0: read-uncommitted"), "{out}");
    assert!(
        out.contains("replay: cargo run --release -p oxbow-runtime-sim --bin oxbow-sim -- replay --seed 0"),
        "{out}"
    );
    assert!(out.contains("0 passed, 3 failed"), "{out}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn bad_input_is_a_clear_error() {
    let (code, out) = sim(&["sweep", "--seeds", "9..3"]);
    assert_eq!(code, 2);
    assert!(out.contains("--seeds \"9..3\": empty range"), "{out}");
    let (code, out) = sim(&["sweep", "--seeds", "abc"]);
    assert_eq!(code, 2);
    assert!(out.contains("expected A..B"), "{out}");
    let path = scenario_file("typo", "[faults]\ncrashh = 1.0\n");
    let (code, out) = sim(&["run", "--seed", "1", "--scenario", &path.display().to_string()]);
    assert_eq!(code, 2);
    assert!(out.contains("unknown field `crashh`"), "{out}");
    let _ = std::fs::remove_file(path);
    let (code, out) = sim(&["run", "--seed", "1", "--scenario", "/nonexistent/x.toml"]);
    assert_eq!(code, 2);
    assert!(out.contains("cannot read scenario /nonexistent/x.toml"), "{out}");
}
