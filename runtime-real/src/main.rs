//! `oxbow`: the command line of an Oxbow node (see DESIGN.md §5).

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use oxbow_runtime_real::bench::command::BenchCommand;
use oxbow_runtime_real::cli;
use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{self, block_shutdown_signals};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "oxbow", version, about = "Oxbow: a Kafka-compatible streaming log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a node (no flags: one embedded node with its data in ./oxbow-data).
    Start(StartArgs),
    /// Measure Oxbow against this machine's own limits.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Create, list, describe, delete and configure topics.
    #[command(subcommand)]
    Topic(cli::TopicCommand),
    /// Produce the lines of stdin as records.
    Produce(cli::ProduceArgs),
    /// Print a topic's records.
    Consume(cli::ConsumeArgs),
    /// Brokers, controller and partition leaders.
    #[command(subcommand)]
    Cluster(cli::ClusterCommand),
    /// List, describe (members, offsets, lag), delete consumer groups and reset their
    /// offsets.
    #[command(subcommand)]
    Group(cli::GroupCommand),
    /// List and describe transactions, show a partition's producers, abort a hanging
    /// transaction.
    #[command(subcommand)]
    Txn(cli::TxnCommand),
    /// Inspect and tune this machine for Oxbow (IRQs, CPU power saving, disk
    /// scheduler, THP, aio limits, a cgroup); journaled, `--revert` restores.
    Tune(oxbow_runtime_real::tune::command::TuneArgs),
}

#[derive(Args, Debug)]
struct StartArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// This broker's id.
    #[arg(long)]
    node_id: Option<i32>,
    /// Kafka listener address.
    #[arg(long)]
    kafka_addr: Option<String>,
    /// Broker-to-broker RPC listener address.
    #[arg(long)]
    rpc_addr: Option<String>,
    /// Admin HTTP listener address.
    #[arg(long)]
    admin_addr: Option<String>,
    /// The cluster's seed brokers as ID@HOST:PORT (broker id and RPC address), comma
    /// separated, this broker included to form a new cluster (left out to join one).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// Cores to pin shards to, as a CPU list (`2-7`, `0,2,4`).
    #[arg(long)]
    cores: Option<String>,
    /// Number of shards (default: one per core of --cores, or per available core).
    #[arg(long)]
    smp: Option<u32>,
    /// The node's memory budget, split over its shards (`4GiB`, `512MiB`, bytes).
    #[arg(long, value_parser = oxbow_runtime_real::config::parse_size_bytes)]
    memory: Option<u64>,
}

/// Prints a start-up or shutdown line on stdout; a closed stdout (the operator's
/// terminal went away) must not stop the node or its clean shutdown.
macro_rules! status {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn start(args: StartArgs) -> anyhow::Result<()> {
    oxbow_runtime_real::shard::budget::release_large_buffers_to_the_os();
    let overrides = Overrides {
        data_dir: args.data_dir,
        node_id: args.node_id,
        kafka_addr: args.kafka_addr,
        rpc_addr: args.rpc_addr,
        admin_addr: args.admin_addr,
        seeds: args.seeds,
        cores: args.cores,
        shards: args.smp,
        memory_bytes: args.memory,
    };
    let config = NodeConfig::load(args.config.as_deref(), overrides)?;
    let data_dir = config.node.data_dir.clone();
    let node = node::start(config).with_context(|| format!("starting a node in {}", data_dir.display()))?;
    status!(
        "oxbow: serving Kafka on {} ({} shards, {} partitions, data in {}); admin on http://{}",
        node.kafka_addr(),
        node.shard_count(),
        node.partitions_found(),
        data_dir.display(),
        node.admin_addr()
    );
    for shard in node.shard_info() {
        status!(
            "oxbow: shard {} on core {}: {} MiB budget, {} MiB pre-allocated ({}), {} MiB request window, {} KiB send window, {} KiB Raft cache per partition, up to {} connections",
            shard.shard,
            shard.core.map_or_else(|| "any (not pinned)".to_string(), |c| c.to_string()),
            shard.budget.total_bytes >> 20,
            shard.preallocated_bytes >> 20,
            match &shard.locked {
                Ok(()) => "locked".to_string(),
                Err(reason) => format!("NOT locked: {reason}"),
            },
            shard.budget.request_window_bytes >> 20,
            shard.budget.send_window_bytes >> 10,
            shard.budget.raft_entry_cache_bytes() >> 10,
            shard.budget.max_connections,
        );
    }
    if let Some(resident_bytes) = oxbow_runtime_real::shard::budget::resident_bytes() {
        status!(
            "oxbow: {} MiB resident at start-up (fixed: code, thread stacks, rings, pre-allocated pools); memory that grows with load stays within the shards' budgets",
            resident_bytes >> 20
        );
    }
    status!("oxbow: running; stop with Ctrl-C or SIGTERM");
    let reason = loop {
        if let Some(signal) = node::wait_for_shutdown_signal_timeout(Duration::from_millis(500)) {
            break signal;
        }
        if node.shard_failed() {
            break "a shard stopped";
        }
    };
    status!("oxbow: {reason}: shutting down");
    node.stop().context("shutting down")?;
    status!("oxbow: stopped cleanly");
    Ok(())
}

fn main() -> ExitCode {
    block_shutdown_signals();
    // Logs go to stderr; RUST_LOG overrides the default level (info; the bench client's
    // per-connection chatter at warn).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rskafka=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Start(args) => start(args),
        Command::Bench(command) => oxbow_runtime_real::bench::command::run(command),
        Command::Topic(command) => cli::topic(command, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Produce(args) => cli::produce(args, std::io::stdin().lock(), &mut std::io::stdout().lock())
            .map(|_| ())
            .map_err(Into::into),
        Command::Consume(args) => cli::consume(args, &mut std::io::stdout().lock())
            .map(|_| ())
            .map_err(Into::into),
        Command::Cluster(command) => cli::cluster(command, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Group(command) => cli::group(command, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Txn(command) => cli::txn(command, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Tune(args) => oxbow_runtime_real::tune::command::run(&args, &mut std::io::stdout().lock()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("oxbow: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
