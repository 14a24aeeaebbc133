//! Seeds that once failed a scenario in `scenarios/`, run on every CI pass (the
//! regular sweep covers only the first few seeds of each file). Each names what it
//! found; the core-level regression test of the same mechanism is named beside it.

use oxbow_runtime_sim::run::run_seed;
use oxbow_runtime_sim::scenario::Scenario;
use std::path::PathBuf;

fn scenario(file: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(file);
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_passes(file: &str, seed: u64) {
    let result = run_seed(seed, &scenario(file), false);
    assert!(
        result.violation.is_none(),
        "seed {seed} of {file}: {:?} after {} events",
        result.violation,
        result.events
    );
}

/// A follower that installed a snapshot and applied a moved log start before its
/// first sync wrote a reset marker at the moved start; after a crash, recovery dropped
/// its acknowledged entries and the leader probed it forever (20M-event bound).
/// Core test: `core/tests/log_reset.rs`
/// `a_start_moved_before_the_first_sync_after_a_reset_keeps_the_synced_log`.
#[test]
fn transactions_seed_4703_a_reset_marker_past_the_durable_end() {
    assert_passes("transactions.toml", 4703);
}
