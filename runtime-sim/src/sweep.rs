//! Sweeps: many seeds over one or more scenarios, in parallel across threads (threads only
//! across seeds — each run is single-threaded and deterministic), with failures listed
//! with the command that replays them, coverage totals, and speed.

use crate::coverage::SweepCoverage;
use crate::run::run_seed;
use crate::scenario::Scenario;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant as WallInstant};

/// One failing run.
#[derive(Debug, Clone)]
pub struct SweepFailure {
    /// Seed.
    pub seed: u64,
    /// Scenario name.
    pub scenario: String,
    /// Scenario file, if it came from one.
    pub scenario_path: Option<String>,
    /// The broken invariant.
    pub violation: String,
}

impl SweepFailure {
    /// The exact command that replays this failure.
    pub fn replay_command(&self) -> String {
        replay_command(self.seed, self.scenario_path.as_deref())
    }
}

/// The command that replays `seed` (of the scenario file, if any).
pub fn replay_command(seed: u64, scenario_path: Option<&str>) -> String {
    let mut cmd = format!("cargo run --release -p oxbow-runtime-sim --bin oxbow-sim -- replay --seed {seed}");
    if let Some(p) = scenario_path {
        cmd.push_str(&format!(" --scenario {p}"));
    }
    cmd
}

/// What a sweep found.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Runs done.
    pub runs: u64,
    /// Failures, sorted by scenario then seed.
    pub failures: Vec<SweepFailure>,
    /// Coverage over all runs.
    pub coverage: SweepCoverage,
    /// Simulated time of all runs.
    pub sim_time: Duration,
    /// Wall time of the sweep.
    pub wall_time: Duration,
    /// Events processed.
    pub events: u64,
    /// Writes acknowledged over all runs.
    pub acked_writes: u64,
}

impl SweepReport {
    /// Simulated seconds per wall-clock second, over all threads.
    pub fn speedup(&self) -> f64 {
        self.sim_time.as_secs_f64() / self.wall_time.as_secs_f64().max(1e-9)
    }
}

/// A scenario with where it came from.
#[derive(Debug, Clone)]
pub struct NamedScenario {
    /// The scenario.
    pub scenario: Scenario,
    /// Its file.
    pub path: Option<String>,
}

/// Runs every seed in `seeds` on every scenario with `jobs` threads; `progress` is
/// called (from the calling thread) after each run with (done, total).
pub fn sweep(
    scenarios: &[NamedScenario],
    seeds: std::ops::Range<u64>,
    jobs: usize,
    mut progress: impl FnMut(u64, u64, Option<&SweepFailure>),
) -> SweepReport {
    let per = seeds.end.saturating_sub(seeds.start);
    let total = per * scenarios.len() as u64;
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = WallInstant::now();
    let (tx, rx) = mpsc::sync_channel(1024);
    let mut report = SweepReport::default();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let tx = tx.clone();
            let next = &next;
            let stop = &stop;
            scope.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total || stop.load(Ordering::Relaxed) {
                    return;
                }
                let which = &scenarios[usize::try_from(k / per.max(1)).unwrap_or(0)];
                let seed = seeds.start + k % per.max(1);
                let result = run_seed(seed, &which.scenario, false);
                if tx.send((seed, which, result)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for (seed, which, result) in rx {
            report.runs += 1;
            report.sim_time += result.sim_time;
            report.events += result.events;
            report.acked_writes += result.acked_writes as u64;
            report.coverage.add_run(&result.coverage);
            let failure = result.violation.map(|v| SweepFailure {
                seed,
                scenario: which.scenario.name.clone(),
                scenario_path: which.path.clone(),
                violation: v.to_string(),
            });
            progress(report.runs, total, failure.as_ref());
            if let Some(f) = failure {
                report.failures.push(f);
            }
        }
        let _ = &stop;
    });
    report.wall_time = started.elapsed();
    report
        .failures
        .sort_by(|a, b| (a.scenario.as_str(), a.seed).cmp(&(b.scenario.as_str(), b.seed)));
    report
}
