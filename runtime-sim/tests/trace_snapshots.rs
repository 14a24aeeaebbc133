//! Snapshots of short traces for fixed seeds: any change in behaviour — of core's Raft or
//! log, or of the simulator — shows up in review as a diff of these files. Update with
//! `INSTA_UPDATE=always cargo test -p oxbow-runtime-sim --test trace_snapshots` (or
//! `cargo insta review`) after checking the diff is intended.

use oxbow_runtime_sim::run::run_seed;
use oxbow_runtime_sim::scenario::{FaultConfig, ReplicaKind, Scenario};

fn short(faults: FaultConfig) -> Scenario {
    Scenario {
        name: "snapshot".into(),
        swarm: false,
        safety_secs: 2,
        liveness_secs: 8,
        clients: 1,
        client_interval_ms: 300,
        read_interval_ms: 1_000,
        faults,
        ..Scenario::default()
    }
}

fn trace(seed: u64, scenario: &Scenario) -> String {
    let result = run_seed(seed, scenario, true);
    assert!(result.violation.is_none(), "{:?}", result.violation);
    // The first lines tell the story (election, first writes, faults); the hash pins the rest.
    let mut out: Vec<String> = result.trace.iter().take(150).cloned().collect();
    out.push(format!(
        "... {} lines, trace hash {:016x}",
        result.trace.len(),
        result.trace_hash
    ));
    out.join("\n")
}

#[test]
fn quiet_cluster_elects_and_commits() {
    insta::assert_snapshot!("quiet_seed_1", trace(1, &short(FaultConfig::default())));
}

#[test]
fn crash_and_partition() {
    let faults = FaultConfig {
        interval_min_ms: 300,
        interval_max_ms: 600,
        crash: 1.0,
        partition: 1.0,
        ..FaultConfig::default()
    };
    insta::assert_snapshot!("faults_seed_7", trace(7, &short(faults)));
}

#[test]
fn reference_raft_with_crashes() {
    // The simulator's own reference Raft: this one changes only when the simulator or
    // core's log does, not when core's Raft does.
    let faults = FaultConfig {
        interval_min_ms: 300,
        interval_max_ms: 600,
        crash: 1.0,
        ..FaultConfig::default()
    };
    let scenario = Scenario {
        replica: ReplicaKind::Model,
        ..short(faults)
    };
    insta::assert_snapshot!("model_raft_seed_3", trace(3, &scenario));
}

#[test]
fn tiered_storage_under_store_faults() {
    // Tiering (core's tier::Archiver and RemoteReader) against the faulty object store:
    // changes when core's tiering, core's log or the simulator's store do.
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/tiered-storage.toml");
    let mut s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    s.swarm = false;
    s.safety_secs = 3;
    s.liveness_secs = 3;
    insta::assert_snapshot!("tiered_seed_4", trace(4, &s));
}
