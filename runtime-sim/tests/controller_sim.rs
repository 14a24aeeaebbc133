//! The controller group under the simulator's faults (`scenarios/controller.toml`):
//! clean seeds pass, a run replays to the same trace, and the checker "metadata never
//! diverges between brokers once the controller commits" catches a planted runtime bug
//! (a restarted broker told to treat its whole durable log as committed).

use oxbow_runtime_sim::run::{check_determinism, run_seed};
use oxbow_runtime_sim::scenario::Scenario;
use std::path::PathBuf;

fn controller_scenario() -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/controller.toml");
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn clean_seeds_pass_and_reach_snapshots_restores_and_liveness() {
    let scenario = controller_scenario();
    let mut restored = 0;
    let mut hydrated = 0;
    for seed in 0..20 {
        let result = run_seed(seed, &scenario, false);
        assert!(result.violation.is_none(), "seed {seed}: {:?}", result.violation);
        assert_eq!(result.coverage.get("liveness.reached"), 1, "seed {seed}");
        assert!(result.coverage.get("controller.metadata.compared") > 0);
        restored += result.coverage.get("controller.snapshot.restored");
        hydrated += result.coverage.get("controller.snapshot.hydrated");
    }
    assert!(restored > 0, "some broker caught up through InstallSnapshot");
    assert!(hydrated > 0, "some broker restarted from its snapshot file");
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    let scenario = controller_scenario();
    for seed in [3, 17] {
        check_determinism(seed, &scenario).unwrap();
    }
}

#[test]
fn metadata_divergence_is_caught_when_a_restart_applies_uncommitted_entries() {
    let mut scenario = controller_scenario();
    scenario.controller_bugs.commit_hint_from_log_end = true;
    let caught = (0..60).find_map(|seed| run_seed(seed, &scenario, false).violation.map(|v| (seed, v)));
    let (seed, violation) = caught.expect("no seed below 60 caught the planted bug");
    println!("caught by seed {seed}: {violation}");
    assert_eq!(violation.invariant, "metadata-diverged", "{violation}");
}
