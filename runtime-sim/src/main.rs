//! `oxbow-sim`: run, sweep and replay seeds of the deterministic simulator.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use oxbow_runtime_sim::run::{check_determinism, run_seed};
use oxbow_runtime_sim::scenario::Scenario;
use oxbow_runtime_sim::sweep::{replay_command, sweep, NamedScenario};
use std::path::{Path, PathBuf};
use std::time::Instant as WallInstant;

#[derive(Parser, Debug)]
#[command(
    name = "oxbow-sim",
    about = "Oxbow's deterministic simulator: one seed, one replayable run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one seed; on failure print the broken invariant and the replay command.
    Run {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Scenario file (default: every fault, swarm-chosen).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Print the whole event trace.
        #[arg(long)]
        trace: bool,
        /// Run the seed a second time and compare trace hashes.
        #[arg(long)]
        check_determinism: bool,
    },
    /// Run many seeds in parallel.
    Sweep {
        /// Seeds as A..B (B excluded).
        #[arg(long)]
        seeds: String,
        /// Threads (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Scenario file; repeat for several (default: the built-in swarm scenario).
        #[arg(long)]
        scenario: Vec<PathBuf>,
        /// Run every scenarios/*.toml (from this directory).
        #[arg(long, value_name = "DIR")]
        all_scenarios: Option<PathBuf>,
        /// Also re-run each of the first N seeds to check determinism.
        #[arg(long, default_value_t = 0)]
        check_determinism: u64,
    },
    /// Measure speed: a 3-node steady-state cluster on one thread, one long run, and a
    /// sweep of many swarm seeds; prints a markdown report.
    Bench {
        /// Seeds in the sweep part.
        #[arg(long, default_value_t = 10_000)]
        sweep_seeds: u64,
        /// Threads for the sweep part (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Simulated seconds of the long run.
        #[arg(long, default_value_t = 600)]
        long_secs: u64,
    },
    /// Print the full, human-readable trace of one seed.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Scenario file.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
}

fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| anyhow!("--seeds {text:?}: expected A..B, e.g. 0..1000"))?;
    let a: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("--seeds {text:?}: bad start {a:?}"))?;
    let b: u64 = b
        .trim()
        .parse()
        .with_context(|| format!("--seeds {text:?}: bad end {b:?}"))?;
    if b <= a {
        bail!("--seeds {text:?}: empty range (end must be greater than start)");
    }
    Ok(a..b)
}

fn load(path: Option<&Path>) -> Result<NamedScenario> {
    match path {
        None => Ok(NamedScenario {
            scenario: Scenario::default(),
            path: None,
        }),
        Some(p) => Ok(NamedScenario {
            scenario: Scenario::load(p)?,
            path: Some(p.display().to_string()),
        }),
    }
}

fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--all-scenarios {}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("--all-scenarios {}: no *.toml files", dir.display());
    }
    Ok(files)
}

/// The steady-state scenario of the benchmark: a healthy 3-node cluster (as
/// `scenarios/steady-state.toml`), built in so the benchmark does not depend on the
/// working directory.
fn steady_state(safety_secs: u64) -> Scenario {
    let mut s = Scenario {
        name: "steady-state".into(),
        swarm: false,
        safety_secs,
        liveness_secs: 10,
        ..Scenario::default()
    };
    s.network.loss_prob = 0.0;
    s.network.dup_prob = 0.0;
    s.network.reorder_prob = 0.0;
    s.faults = Default::default();
    s
}

fn bench(sweep_seeds: u64, jobs: usize, long_secs: u64) {
    println!("| measurement | runs | simulated s | wall s | x real time | events/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let row = |name: &str, runs: u64, sim: f64, wall: f64, events: u64| {
        println!(
            "| {name} | {runs} | {sim:.0} | {wall:.2} | {:.0} | {:.0} |",
            sim / wall.max(1e-9),
            events as f64 / wall.max(1e-9)
        );
    };
    let steady = NamedScenario {
        scenario: steady_state(20),
        path: None,
    };
    let r = sweep(std::slice::from_ref(&steady), 0..200, 1, |_, _, _| {});
    row(
        "3-node steady state, 200 seeds x ~21 s, 1 thread",
        r.runs,
        r.sim_time.as_secs_f64(),
        r.wall_time.as_secs_f64(),
        r.events,
    );
    let started = WallInstant::now();
    let long = run_seed(1, &steady_state(long_secs), false);
    row(
        &format!("3-node steady state, one {long_secs} s run, 1 thread"),
        1,
        long.sim_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        long.events,
    );
    let swarm = NamedScenario {
        scenario: Scenario::default(),
        path: None,
    };
    let r = sweep(std::slice::from_ref(&swarm), 0..sweep_seeds, jobs, |_, _, _| {});
    row(
        &format!("swarm sweep (every fault), {sweep_seeds} seeds, {jobs} threads"),
        r.runs,
        r.sim_time.as_secs_f64(),
        r.wall_time.as_secs_f64(),
        r.events,
    );
    println!();
    println!(
        "{sweep_seeds}-seed sweep: {:.1} s wall ({} failed)",
        r.wall_time.as_secs_f64(),
        r.failures.len()
    );
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            seed,
            scenario,
            trace,
            check_determinism: det,
        } => {
            let named = load(scenario.as_deref())?;
            let started = WallInstant::now();
            let result = run_seed(seed, &named.scenario, trace);
            let wall = started.elapsed();
            if trace {
                for line in &result.trace {
                    println!("{line}");
                }
            }
            println!("{}", result.scenario_summary);
            println!(
                "seed {seed}: {} events, {:.1} simulated s in {:.3} wall s ({:.0}x real time), {} writes acked, trace hash {:016x}",
                result.events,
                result.sim_time.as_secs_f64(),
                wall.as_secs_f64(),
                result.sim_time.as_secs_f64() / wall.as_secs_f64().max(1e-9),
                result.acked_writes,
                result.trace_hash
            );
            if det {
                let again = run_seed(seed, &named.scenario, false);
                if again.trace_hash != result.trace_hash {
                    println!(
                        "FAILED: not deterministic: trace hashes {:016x} and {:016x}",
                        result.trace_hash, again.trace_hash
                    );
                    return Ok(std::process::ExitCode::FAILURE);
                }
                println!("determinism: a second run gave the same trace hash");
            }
            match result.violation {
                None => {
                    println!("ok");
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Some(v) => {
                    if !trace {
                        println!("last events:");
                        for line in &result.trace {
                            println!("  {line}");
                        }
                    }
                    println!("FAILED: invariant {} broken: {}", v.invariant, v.detail);
                    println!("seed: {seed}");
                    println!("replay: {}", replay_command(seed, named.path.as_deref()));
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
        }
        Command::Bench {
            sweep_seeds,
            jobs,
            long_secs,
        } => {
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if jobs == 0 || jobs > 256 {
                bail!("--jobs {jobs}: must be 1..=256");
            }
            bench(sweep_seeds, jobs, long_secs);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Replay { seed, scenario } => {
            let named = load(scenario.as_deref())?;
            let result = run_seed(seed, &named.scenario, true);
            for line in &result.trace {
                println!("{line}");
            }
            match result.violation {
                None => println!("seed {seed}: ok, trace hash {:016x}", result.trace_hash),
                Some(v) => println!("seed {seed}: FAILED: {v}"),
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Sweep {
            seeds,
            jobs,
            scenario,
            all_scenarios,
            check_determinism: det,
        } => {
            let range = parse_seeds(&seeds)?;
            let mut scenarios = Vec::new();
            if let Some(dir) = all_scenarios {
                for f in scenario_files(&dir)? {
                    scenarios.push(load(Some(&f))?);
                }
            }
            for f in &scenario {
                scenarios.push(load(Some(f))?);
            }
            if scenarios.is_empty() {
                scenarios.push(load(None)?);
            }
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if jobs == 0 || jobs > 256 {
                bail!("--jobs {jobs}: must be 1..=256");
            }
            let total = (range.end - range.start) * scenarios.len() as u64;
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {msg} ({eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let mut failed = 0u64;
            let report = sweep(&scenarios, range.clone(), jobs, |done, _, failure| {
                bar.set_position(done);
                if let Some(f) = failure {
                    failed += 1;
                    bar.println(format!("FAILED {} seed {}: {}", f.scenario, f.seed, f.violation));
                }
                bar.set_message(format!("{failed} failed"));
            });
            bar.finish_and_clear();
            print!("{}", report.coverage);
            println!(
                "{} runs over {} scenario(s) with {jobs} threads in {:.1}s wall: {:.0} simulated s, {:.0}x real time, {} events, {} writes acked",
                report.runs,
                scenarios.len(),
                report.wall_time.as_secs_f64(),
                report.sim_time.as_secs_f64(),
                report.speedup(),
                report.events,
                report.acked_writes
            );
            let mut nondeterministic = 0;
            for named in &scenarios {
                for seed in range.clone().take(usize::try_from(det).unwrap_or(usize::MAX)) {
                    if let Err(e) = check_determinism(seed, &named.scenario) {
                        nondeterministic += 1;
                        println!("NONDETERMINISTIC {}: {e}", named.scenario.name);
                    }
                }
            }
            if det > 0 && nondeterministic == 0 {
                println!(
                    "determinism: first {det} seeds of each scenario re-run with identical trace hashes"
                );
            }
            if report.failures.is_empty() && nondeterministic == 0 {
                println!("{} passed, 0 failed", report.runs);
                Ok(std::process::ExitCode::SUCCESS)
            } else {
                println!("failures:");
                for f in &report.failures {
                    println!("  {} seed {}: {}", f.scenario, f.seed, f.violation);
                    println!("    replay: {}", f.replay_command());
                }
                println!(
                    "{} passed, {} failed",
                    report.runs - report.failures.len() as u64,
                    report.failures.len()
                );
                Ok(std::process::ExitCode::FAILURE)
            }
        }
    }
}
