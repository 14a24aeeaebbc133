//! Every checker earns its place: plant a bug (a sim-only flag that makes the code do the
//! wrong thing) and show that some seed fails with the invariant that checker guards.
//! Each test prints the failing seed, so it can be replayed with
//! `oxbow-sim replay --seed N --scenario <the scenario below>`.

use oxbow_runtime_sim::model_raft::PlantedBugs;
use oxbow_runtime_sim::run::run_seed;
use oxbow_runtime_sim::scenario::{FaultConfig, ReplicaKind, Scenario};

/// A short, fault-heavy scenario.
fn base(replica: ReplicaKind) -> Scenario {
    Scenario {
        name: "planted".into(),
        swarm: false,
        safety_secs: 12,
        liveness_secs: 15,
        replica,
        faults: FaultConfig {
            interval_min_ms: 100,
            interval_max_ms: 800,
            crash: 1.0,
            partition: 1.0,
            pause: 0.5,
            restart_min_ms: 50,
            restart_max_ms: 1_000,
            ..FaultConfig::default()
        },
        ..Scenario::default()
    }
}

/// The first seed below `limit` that fails, with its invariant.
fn first_failure(scenario: &Scenario, limit: u64) -> Option<(u64, &'static str, String)> {
    (0..limit).find_map(|seed| {
        run_seed(seed, scenario, false)
            .violation
            .map(|v| (seed, v.invariant, v.detail))
    })
}

fn assert_caught(scenario: &Scenario, limit: u64, expected: &[&str]) {
    let (seed, invariant, detail) = first_failure(scenario, limit)
        .unwrap_or_else(|| panic!("no seed below {limit} caught {:?}", scenario.bugs));
    println!("caught by seed {seed}: {invariant}: {detail}");
    assert!(
        expected.contains(&invariant),
        "seed {seed} failed with {invariant} ({detail}), expected one of {expected:?}"
    );
}

#[test]
fn the_same_scenarios_pass_without_bugs() {
    for replica in [ReplicaKind::Core, ReplicaKind::Model] {
        let s = base(replica);
        assert_eq!(first_failure(&s, 10), None, "{replica:?}");
    }
}

#[test]
fn election_safety_catches_double_votes() {
    let mut s = base(ReplicaKind::Model);
    s.bugs = PlantedBugs {
        vote_twice: true,
        ..PlantedBugs::default()
    };
    assert_caught(&s, 50, &["election-safety"]);
}

#[test]
fn durability_checks_catch_acks_before_fsync() {
    let mut s = base(ReplicaKind::Model);
    s.disk.crash_keep_unsynced_prob = 0.0;
    s.faults.partition = 0.0;
    s.faults.crash = 3.0;
    s.bugs = PlantedBugs {
        ack_before_fsync: true,
        ..PlantedBugs::default()
    };
    assert_caught(
        &s,
        50,
        &[
            "committed-entry-changed",
            "committed-entry-lost",
            "queue-lost-ack",
            "queue-ack-offset",
            "log-matching",
        ],
    );
}

#[test]
fn durability_checks_catch_a_disk_that_lies_about_fsync_under_core_raft() {
    let mut s = base(ReplicaKind::Core);
    s.disk.lie_about_fsync = true;
    s.disk.crash_keep_unsynced_prob = 0.0;
    s.faults.partition = 0.0;
    s.faults.crash = 3.0;
    assert_caught(
        &s,
        50,
        &[
            "committed-entry-changed",
            "committed-entry-lost",
            "queue-lost-ack",
            "queue-ack-offset",
            "log-matching",
        ],
    );
}

#[test]
fn log_matching_catches_skipped_consistency_checks() {
    let mut s = base(ReplicaKind::Model);
    s.network.loss_prob = 0.2;
    s.network.reorder_prob = 0.2;
    s.bugs = PlantedBugs {
        skip_prev_check: true,
        ..PlantedBugs::default()
    };
    // The online commit check usually notices first; switch it off to show that the
    // log-matching check catches the divergence by itself.
    s.disabled_checks = vec!["committed-entry-changed".into(), "commit-beyond-log".into()];
    assert_caught(&s, 50, &["log-matching"]);
}

#[test]
fn commit_index_monotonicity_catches_regressions() {
    let mut s = base(ReplicaKind::Model);
    s.network.reorder_prob = 0.3;
    s.network.dup_prob = 0.1;
    s.bugs = PlantedBugs {
        commit_regress: true,
        ..PlantedBugs::default()
    };
    assert_caught(&s, 50, &["commit-index-monotonic"]);
}

#[test]
fn read_checks_catch_reads_of_uncommitted_entries() {
    let mut s = base(ReplicaKind::Core);
    s.read_interval_ms = 200;
    s.bugs = PlantedBugs {
        read_uncommitted: true,
        ..PlantedBugs::default()
    };
    assert_caught(&s, 50, &["read-uncommitted"]);
}

#[test]
fn queue_checks_catch_acks_before_commit() {
    let mut s = base(ReplicaKind::Core);
    s.bugs = PlantedBugs {
        ack_uncommitted: true,
        ..PlantedBugs::default()
    };
    assert_caught(
        &s,
        50,
        &["queue-lost-ack", "queue-ack-offset", "queue-ack-unique"],
    );
}

/// The tiered-storage scenario made harsher and deterministic (no swarm): frequent
/// leader crashes, store errors on every third operation, total retention, local
/// retention checked every 50 ms with a zero local target.
fn tier_base() -> Scenario {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/tiered-storage.toml");
    let mut s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    s.swarm = false;
    s.tier.check_interval_ms = 50;
    s.tier.local_target_bytes = 0;
    s.tier.crash_interval_ms = 1_500;
    s.tier.object_store.error_prob = 0.3;
    // Late landings within 0.6 s: a new leader's first manifest put waits 0.7 s.
    s.tier.object_store.timeout_us = 300_000;
    s
}

#[test]
fn the_tier_scenario_passes_without_bugs() {
    assert_eq!(first_failure(&tier_base(), 20), None);
}

#[test]
fn manifest_checker_catches_a_manifest_uploaded_before_its_segment() {
    let mut s = tier_base();
    s.tier.bug_manifest_before_segment = true;
    assert_caught(&s, 20, &["tier-manifest-names-missing-object"]);
}

#[test]
fn unreadable_checker_catches_local_deletion_before_the_manifest_is_durable() {
    let mut s = tier_base();
    s.tier.bug_delete_local_early = true;
    assert_caught(&s, 20, &["tier-acked-record-unreadable"]);
}

#[test]
fn orphan_checker_catches_a_store_that_keeps_deleted_objects() {
    let mut s = tier_base();
    s.tier.bug_store_ignores_deletes = true;
    assert_caught(&s, 20, &["tier-orphans-collected"]);
}

#[test]
fn tier_checkers_catch_a_manifest_rolled_back_by_a_late_put() {
    let mut s = tier_base();
    s.tier.object_store.timeout_prob = 0.25;
    s.tier.bug_ignore_late_landings = true;
    assert_caught(
        &s,
        60,
        &[
            "tier-manifest-names-missing-object",
            "tier-acked-record-unreadable",
        ],
    );
}

/// The tier scenario with the operator fault: the manifest is lost once, after the
/// lineage marker is up, and restored 2 s later. The archiver refuses to collect
/// anything meanwhile and resumes after the restore (no checker fails, and the loss and
/// the refusal are reached).
#[test]
fn the_tier_scenario_with_a_lost_manifest_passes_and_refuses_to_collect() {
    let mut s = tier_base();
    s.tier.lose_manifest = true;
    let mut lost = 0;
    let mut refused = 0;
    for seed in 0..20 {
        let run = run_seed(seed, &s, false);
        assert_eq!(run.violation, None, "seed {seed}");
        lost += run.coverage.get("tier.manifest_lost");
        refused += run.coverage.get("tier.manifest_lost_refused");
    }
    assert!(lost > 0 && refused > 0, "lost {lost}, refused {refused}");
}

#[test]
fn lost_manifest_checker_catches_gc_that_ignores_the_lineage_marker() {
    let mut s = tier_base();
    s.tier.lose_manifest = true;
    // Long enough for the buggy leader's first listing GC.
    s.tier.restore_manifest_ms = 5_000;
    s.tier.bug_ignore_lineage_marker = true;
    assert_caught(&s, 20, &["tier-lost-manifest-object-deleted"]);
}

/// The consumer-groups scenario made deterministic (no swarm: every fault kind of the
/// file on in every seed).
fn groups_base() -> Scenario {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/consumer-groups.toml");
    let mut s = Scenario::load(&path).expect("the consumer-groups scenario loads");
    s.swarm = false;
    s
}

#[test]
fn the_groups_scenario_passes_without_bugs() {
    assert_eq!(first_failure(&groups_base(), 6), None);
}

#[test]
fn lost_commit_checker_catches_commits_acknowledged_before_they_are_durable() {
    let mut s = groups_base();
    s.consumer_groups.bug_ack_commit_before_durable = true;
    assert_caught(&s, 6, &["groups-acked-commit-lost"]);
}

#[test]
fn fencing_checker_catches_commits_from_fenced_generations() {
    let mut s = groups_base();
    s.consumer_groups.bug_skip_generation_check = true;
    assert_caught(&s, 6, &["groups-fenced-commit-acked"]);
}

#[test]
fn ownership_checker_catches_partitions_handed_out_before_release() {
    let mut s = groups_base();
    s.consumer_groups.bug_hand_out_unreleased_partitions = true;
    assert_caught(&s, 6, &["groups-partition-two-owners"]);
}

#[test]
fn client_side_ownership_checker_catches_partitions_handed_out_before_release() {
    let mut s = groups_base();
    s.consumer_groups.bug_hand_out_unreleased_partitions = true;
    s.disabled_checks = vec!["groups-partition-two-owners".into()];
    assert_caught(&s, 6, &["groups-clients-share-partition"]);
}

#[test]
fn rebuild_checker_catches_a_checkpoint_that_drops_a_key() {
    let mut s = groups_base();
    s.consumer_groups.bug_drop_checkpoint_key = true;
    assert_caught(&s, 6, &["groups-rebuild-differs"]);
}
