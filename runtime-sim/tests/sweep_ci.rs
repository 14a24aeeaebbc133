//! What CI runs: a sweep over every scenario in `scenarios/` (a few hundred runs in all)
//! and the determinism self-check. Any failure names the seed and the replay command.

use oxbow_runtime_sim::run::check_determinism;
use oxbow_runtime_sim::scenario::Scenario;
use oxbow_runtime_sim::sweep::{sweep, NamedScenario};
use std::path::PathBuf;

/// Seeds per scenario in CI (`OXBOW_SIM_CI_SEEDS` overrides).
const CI_SEEDS_PER_SCENARIO: u64 = 30;

fn scenarios() -> Vec<NamedScenario> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| NamedScenario {
            scenario: Scenario::load(&p).unwrap_or_else(|e| panic!("{e}")),
            path: Some(format!(
                "scenarios/{}",
                p.file_name().and_then(|n| n.to_str()).unwrap_or("?")
            )),
        })
        .collect()
}

#[test]
fn scenario_files_cover_the_required_kinds() {
    let names: Vec<String> = scenarios().into_iter().map(|s| s.scenario.name).collect();
    for required in [
        "steady-state",
        "leader-churn",
        "asymmetric-partition",
        "slow-follower",
        "crash-restart-torn-writes",
        "clock-drift",
        "flapping-network",
        "rolling-restarts",
        "tiered-storage",
        "consumer-groups",
        "transactions",
        "brokers",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing scenario {required}: {names:?}"
        );
    }
}

#[test]
fn sweep_every_scenario() {
    let per = std::env::var("OXBOW_SIM_CI_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_SEEDS_PER_SCENARIO);
    let all = scenarios();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let report = sweep(&all, 0..per, jobs, |_, _, _| {});
    print!("{}", report.coverage);
    println!(
        "{} runs in {:.1}s wall, {:.0}x real time",
        report.runs,
        report.wall_time.as_secs_f64(),
        report.speedup()
    );
    for f in &report.failures {
        println!(
            "FAILED {} seed {}: {}\n  replay: {}",
            f.scenario,
            f.seed,
            f.violation,
            f.replay_command()
        );
    }
    assert!(
        report.failures.is_empty(),
        "{} failing seeds (see above)",
        report.failures.len()
    );
    assert_eq!(report.runs, per * all.len() as u64);
    // "Sometimes" coverage: a sweep this size must reach these states.
    for must in [
        "raft.election.won",
        "raft.truncation",
        "client.write.acked",
        "disk.crash.torn_write",
        "recovery.torn_tail_cut",
        "fault.partition",
        "fault.crash",
        "liveness.reached",
        "raft.snapshot.taken",
        "raft.snapshot.installed",
        "log.read.from_disk",
        "tier.upload",
        "tier.manifest_put",
        "tier.spill",
        "tier.partial_upload",
        "tier.store_error",
        "tier.crash_between_upload_and_manifest",
        "tier.local_deleted",
        "tier.remote_read",
        "tier.consumer_remote_read",
        "tier.late_landing",
        "tier.recovered",
        "txn.commit.acked",
        "txn.abort.acked",
        "txn.producer.fenced",
        "txn.coordinator.loaded_after_trim",
    ] {
        assert!(
            report.coverage.totals().get(must) > 0,
            "sweep never reached {must}"
        );
    }
}

#[test]
fn runs_are_deterministic() {
    for named in scenarios() {
        for seed in 0..2 {
            if let Err(e) = check_determinism(seed, &named.scenario) {
                panic!("{}: {e}", named.scenario.name);
            }
        }
    }
    check_determinism(12345, &Scenario::default()).unwrap();
}
