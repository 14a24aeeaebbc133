//! Property tests: random faults over many seeds (swarm testing: each seed picks which
//! faults are on), checking election safety, log matching, leader completeness,
//! state-machine safety and commit monotonicity (the checkers in `harness` panic on a
//! violation), then healing everything and checking the group makes progress again.

use std::time::Duration;

use proptest::prelude::*;
use rand_core::RngCore;

use crate::harness::{Cluster, DiskConfig, NetConfig, Options};
use oxbow_core::raft::{ConfigChange, Role};

#[derive(Clone, Debug)]
pub struct Faults {
    pub loss_per_mille: u32,
    pub dup_per_mille: u32,
    pub latency_max_ms: u64,
    pub partitions: bool,
    pub crashes: bool,
    pub snapshots: bool,
    pub small_cache: bool,
}

impl Faults {
    fn pick(seed: u64) -> Faults {
        let b = |k: u32| (seed >> k) & 1 == 1;
        Faults {
            loss_per_mille: if b(0) { ((seed >> 8) % 100) as u32 } else { 0 },
            dup_per_mille: if b(1) { ((seed >> 16) % 50) as u32 } else { 0 },
            latency_max_ms: 2 + (seed >> 24) % 40,
            partitions: b(2),
            crashes: b(3),
            snapshots: b(4),
            small_cache: b(5),
        }
    }
}

/// Runs one seeded chaos run of `n` nodes for `secs` simulated seconds of faults.
pub fn chaos(seed: u64, n: u64, secs: u64) -> Cluster {
    let f = Faults::pick(seed);
    let mut o = Options::new(n, seed);
    o.net = NetConfig {
        latency_min: Duration::from_micros(200),
        latency_max: Duration::from_millis(f.latency_max_ms),
        loss_per_mille: f.loss_per_mille,
        dup_per_mille: f.dup_per_mille,
    };
    o.disk = DiskConfig {
        fsync_min: Duration::from_micros(100),
        fsync_max: Duration::from_millis(3),
        read: Duration::from_micros(300),
    };
    if f.small_cache {
        o.raft.entry_cache_bytes = 1024;
        o.raft.max_append_bytes = 512;
        o.raft.snapshot_chunk_bytes = 256;
        o.raft.max_inflight_appends = 4;
    }
    let mut c = Cluster::new(o);
    c.trace_messages = seed == DEBUG_SEED;
    let ids = c.ids();
    let mut seq = 0u64;
    let end = c.now + Duration::from_secs(secs);
    while c.now < end {
        c.run_for(Duration::from_millis(10));
        let r = c.rng.next_u64();
        if r % 3 != 0 {
            if let Some(l) = c.leader() {
                seq += 1;
                let _ = c.propose(l, &format!("s{seed}-{seq}"), 1 + (r >> 8) % 3);
            }
        }
        if (r >> 16) % 60 != 0 {
            continue;
        }
        let victim = ids[((r >> 24) % ids.len() as u64) as usize];
        match (r >> 32) % 5 {
            0 if f.partitions => {
                let cut = 1 + ((r >> 40) as usize % (ids.len() - 1));
                let (a, b) = ids.split_at(cut);
                c.partition(&[a.to_vec(), b.to_vec()]);
            }
            1 => c.heal(),
            2 if f.crashes && c.is_up(victim) => {
                let down = ids.iter().filter(|&&i| !c.is_up(i)).count();
                if down < ids.len() / 2 {
                    c.crash(victim);
                }
            }
            3 => {
                for &i in &ids {
                    if !c.is_up(i) {
                        c.restart(i);
                    }
                }
            }
            4 if f.snapshots && c.is_up(victim) => {
                c.take_snapshot(victim);
            }
            _ => {}
        }
    }
    // Liveness phase: heal everything, bring everyone back, a write must commit everywhere.
    c.heal();
    c.net.loss_per_mille = 0;
    c.net.dup_per_mille = 0;
    for &i in &ids {
        if !c.is_up(i) {
            c.restart(i);
        }
    }
    let mut committed = None;
    let deadline = c.now + Duration::from_secs(30);
    while committed.is_none() && c.now < deadline {
        c.run_for(Duration::from_millis(100));
        if let Some(l) = c.leader() {
            if let Ok(id) = c.propose(l, "final", 1) {
                if c.run_until(Duration::from_secs(3), |c| {
                    c.raft(l).commit_index() >= Some(id.index)
                }) {
                    committed = Some(id);
                }
            }
        }
    }
    if committed.is_none() {
        dump(&c);
    }
    let id = committed.unwrap_or_else(|| panic!("seed {seed}: no progress after healing ({f:?})"));
    let ok = c.run_until(Duration::from_secs(20), |c| c.all_applied(id.index));
    if !ok {
        dump(&c);
    }
    assert!(ok, "seed {seed}: not every node applied {id:?} ({f:?})");
    c.check_log_matching();
    let first = &c.nodes[&ids[0]].sm;
    for i in &ids {
        let sm = &c.nodes[i].sm;
        // Same applied data up to the common prefix (state machines may have snapshots).
        let common: Vec<_> = first.entries.iter().filter(|e| sm.entries.contains(e)).collect();
        assert!(common.len() + 64 >= first.entries.len().min(sm.entries.len()) || first.entries.is_empty());
    }
    c
}

proptest! {
    // A fixed RNG seed: CI runs the same seeds every time (no flaky runs); the
    // ignored sweeps below explore further.
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0a5b_0c0d),
        ..ProptestConfig::default()
    })]

    #[test]
    fn chaos_three_nodes(seed in any::<u64>()) {
        chaos(seed, 3, 15);
    }

    #[test]
    fn chaos_five_nodes(seed in any::<u64>()) {
        chaos(seed, 5, 15);
    }
}

/// A longer sweep: `cargo test -p oxbow-core --test raft_engine -- --ignored sweep`.
#[test]
#[ignore]
fn chaos_sweep() {
    for seed in 0..400u64 {
        println!("sweep seed {seed}");
        chaos(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 3 + 2 * (seed % 2), 30);
    }
}

/// Replays one seed (edit it here, and `DEBUG_SEED` for a message trace in `dump`).
#[test]
#[ignore]
fn replay_one() {
    let seed: u64 = 274u64.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let r = std::panic::catch_unwind(|| chaos(seed, 3, 30));
    assert!(r.is_ok());
}

const DEBUG_SEED: u64 = 14032924188499096118;

pub fn dump(c: &Cluster) {
    for t in c
        .trace
        .iter()
        .rev()
        .take(if c.trace_messages { 400000 } else { 40 })
        .collect::<Vec<_>>()
        .iter()
        .rev()
    {
        println!("{t}");
    }
    for (i, n) in &c.nodes {
        let Some(r) = n.raft.as_ref() else { continue };
        println!(
            "n{i} {:?} t{} leader {:?} commit {:?} applied {:?} sm {:?} last {:?} durable {:?} snap {:?} hs {:?}\n   {:?}",
            r.role(), r.term(), r.leader(), r.commit_index(), r.applied_index(), n.sm.last, r.last_log_id(),
            r.durable_index(), r.snapshot().map(|s| s.last), r.hard_state(), r.stats()
        );
    }
}

/// Membership churn under faults: learners added and promoted, voters (leaders
/// included) removed, with loss, partitions and crashes; the checkers run throughout.
pub fn churn(seed: u64) {
    let mut o = Options::new(3, seed);
    o.extra_nodes = vec![4, 5, 6];
    o.net = NetConfig {
        latency_min: Duration::from_micros(200),
        latency_max: Duration::from_millis(10),
        loss_per_mille: (seed % 30) as u32,
        dup_per_mille: 5,
    };
    let mut c = Cluster::new(o);
    let ids = c.ids();
    let mut seq = 0;
    let end = c.now + Duration::from_secs(20);
    while c.now < end {
        c.run_for(Duration::from_millis(10));
        let r = c.rng.next_u64();
        let Some(l) = c.leader() else { continue };
        seq += 1;
        let _ = c.propose(l, &format!("c{seq}"), 1);
        if r % 40 != 0 {
            continue;
        }
        let m = c.raft(l).membership().clone();
        let target = ids[((r >> 8) % ids.len() as u64) as usize];
        let change = if m.learners().contains(&target) {
            ConfigChange::PromoteLearner(target, 1)
        } else if m.is_voter(target) {
            if m.voters().len() <= 3 {
                continue;
            } else {
                ConfigChange::RemoveNode(target)
            }
        } else {
            ConfigChange::AddLearner(target)
        };
        let _ = c.with(l, |r, now| r.propose_config_change(now, change));
        match (r >> 16) % 6 {
            0 => c.isolate(target),
            1 => c.heal(),
            2 if c.is_up(target) && target != l => c.crash(target),
            3 => {
                for &i in &ids {
                    if !c.is_up(i) {
                        c.restart(i);
                    }
                }
            }
            _ => {}
        }
    }
    c.heal();
    c.net.loss_per_mille = 0;
    for &i in &ids {
        if !c.is_up(i) {
            c.restart(i);
        }
    }
    assert!(
        c.run_until(Duration::from_secs(20), |c| c.leader().is_some()),
        "seed {seed}: no leader"
    );
    let mut l = c.leader().unwrap();
    let mut ok = false;
    for _ in 0..20 {
        if let Ok(id) = c.propose(l, "final", 1) {
            // A node removed by a configuration entry it has not seen committed may lead
            // just to commit that entry, then hands over and hears no more of the group:
            // then try again on the next leader.
            let left = |c: &Cluster| c.raft(l).role() != Role::Leader && !c.raft(l).membership().is_voter(l);
            ok = c.run_until(Duration::from_secs(3), |c| {
                c.raft(l).commit_index() >= Some(id.index) || left(c)
            }) && c.raft(l).commit_index() >= Some(id.index);
            if ok || !left(&c) {
                break;
            }
            let _ = c.run_until(Duration::from_secs(5), |c| c.leader().is_some());
            l = c.leader().unwrap_or(l);
            continue;
        }
        c.run_for(Duration::from_millis(200));
    }
    if !ok {
        dump(&c);
    }
    assert!(ok, "seed {seed}: no commit after healing");
    c.check_log_matching();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0a5b_0c0e),
        ..ProptestConfig::default()
    })]

    #[test]
    fn membership_churn(seed in any::<u64>()) {
        churn(seed);
    }
}

/// A longer membership-churn sweep (ignored by default).
#[test]
#[ignore]
fn churn_sweep() {
    for seed in 0..200u64 {
        println!("churn seed {seed}");
        churn(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    }
}

/// A membership-churn seed CI found without a leader after healing. Node 5 was added as
/// a learner and crashed at once, then promoted while down (an empty learner counts as
/// caught up on a short log); it restarted knowing only the bootstrap voters {1, 2, 3}.
/// The others held voters {1, 3, 5, 6}: 1 had the longest log but had appended its own
/// removal (so could not campaign and refused both candidates), 3 lacked 6's last entry
/// (so 6 refused it), and 6 needed 5's vote, which 5 dropped as from an unknown sender.
/// Vote requests are now answered whatever the sender (see `raft::node::on_message`).
#[test]
fn churn_regression_no_leader_after_heal() {
    churn(1453102663213500266);
}
