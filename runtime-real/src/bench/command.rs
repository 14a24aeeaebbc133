//! The `oxbow bench …` subcommands: their flags and how each runs and prints. Every
//! command prints its report, the files it wrote, and last a `summary:` line.

use super::client_bench::{run_client_bench, ClientBenchOptions};
use super::limits::{run_limits, LimitsOptions};
use super::load::{Acks, Codec, LoadOptions, Workload};
use super::log_append::{run_log_bench, LogBenchOptions};
use super::report::reproducing_command;
use super::scale::{run_scale, ScaleOptions};
use super::tier_bench::{run_tier_bench, TierBenchOptions};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `oxbow bench …`.
#[derive(Subcommand, Debug)]
#[non_exhaustive]
pub enum BenchCommand {
    /// The storage log's append bandwidth against raw O_DIRECT write+fdatasync.
    Log(LogBenchArgs),
    /// The machine's ceilings: O_DIRECT write+fdatasync, direct reads, loopback TCP.
    Limits(LimitsArgs),
    /// Producers against a broker (acks=all), against the disk's write+fsync limit.
    Produce(LoadArgs),
    /// Catch-up consumers reading history, against the direct-read and loopback limits.
    Consume(LoadArgs),
    /// Producers and tailing consumers: end-to-end latency.
    E2e(LoadArgs),
    /// Many partitions on one node: memory per partition and idle CPU.
    Scale(ScaleArgs),
    /// Tiered storage: upload lag and remote-read throughput against the object
    /// store's raw rates (starts its own node per store).
    Tier(TierArgs),
}

/// Flags of `oxbow bench tier`.
#[derive(Args, Debug)]
pub struct TierArgs {
    /// Scratch directory (node data, the filesystem store); removed afterwards.
    #[arg(long, default_value = "oxbow-data")]
    data_dir: PathBuf,
    /// A configuration file whose `[tiered_storage]` names a store (repeat for several;
    /// `default` = the filesystem store). Default: the filesystem store only.
    #[arg(long = "store-config")]
    stores: Vec<String>,
    /// MiB produced per store.
    #[arg(long, default_value_t = 64)]
    total_mb: u64,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Records per produce request.
    #[arg(long, default_value_t = 64)]
    batch_messages: usize,
    /// Produce rate, MiB/s.
    #[arg(long, default_value_t = 8.0)]
    rate_mb_s: f64,
    /// `segment.bytes` of the bench topic, MiB (at least 1).
    #[arg(long, default_value_t = 4)]
    segment_mb: u64,
    /// The node's `upload_lag_ms`.
    #[arg(long, default_value_t = 1000)]
    upload_lag_ms: u64,
    /// Where to write the report.
    #[arg(long, default_value = "bench-reports")]
    report_dir: PathBuf,
    /// Report name after the date.
    #[arg(long, default_value = "tiered-storage")]
    name: String,
}

/// Flags of `oxbow bench log`.
#[derive(Args, Debug)]
pub struct LogBenchArgs {
    /// Directory on the disk to measure (a scratch sub-directory is used and removed).
    #[arg(long, default_value = "oxbow-data")]
    data_dir: PathBuf,
    /// Batch (and raw write) size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Batches per sync in the group-commit phases (0 skips them).
    #[arg(long, default_value_t = 16)]
    group_depth: usize,
    /// Where to write the markdown and CSV report.
    #[arg(long, default_value = "bench-reports")]
    report_dir: PathBuf,
}

/// Flags of `oxbow bench limits`.
#[derive(Args, Debug)]
pub struct LimitsArgs {
    /// Directory on the disk to measure (scratch sub-directories are removed after).
    #[arg(long, default_value = "oxbow-data")]
    data_dir: PathBuf,
    /// Write sizes to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16_384usize, 65_536, 1_048_576])]
    batch_bytes: Vec<usize>,
    /// Writes per fdatasync of the second measurement of each size (0 or 1 skips it).
    #[arg(long, default_value_t = 16)]
    group_depth: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Where to write the markdown and CSV report.
    #[arg(long, default_value = "bench-reports")]
    report_dir: PathBuf,
}

/// Flags of `oxbow bench produce|consume|e2e`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Bootstrap address of the broker under test.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Acks: all (-1), 1 or 0 (the rskafka client sends all only).
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// Value bytes per message.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Messages per produce request.
    #[arg(long, default_value_t = 16)]
    batch_messages: usize,
    /// Partitions of the bench topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Produce requests each producer keeps in flight.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Consumers (consume, e2e).
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Fetches each consumer keeps in flight, each for another of its partitions
    /// (never two for one partition).
    #[arg(long, default_value_t = 1)]
    fetches_in_flight: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 30.0)]
    duration_s: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 3.0)]
    warmup_s: f64,
    /// Messages per second in total (default: unthrottled).
    #[arg(long)]
    rate: Option<f64>,
    /// Batch compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: Codec,
    /// consume: MB of history written before the catch-up readers start.
    #[arg(long, default_value_t = 1024)]
    history_mb: u64,
    /// Most bytes per partition a fetch asks for.
    #[arg(long, default_value_t = 1 << 20)]
    fetch_max_bytes: i32,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Topic to use (default: a fresh one per run, deleted at the end).
    #[arg(long)]
    topic: Option<String>,
    /// Keep the run's fresh topic instead of deleting it at the end.
    #[arg(long)]
    keep_topic: bool,
    /// The broker's data directory: the disk limit is measured there in the same run.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds per limit measurement.
    #[arg(long, default_value_t = 5.0)]
    limit_duration_s: f64,
    /// The broker's process id (default: found from the port if local).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// The broker's admin HTTP address (`--admin-addr` of `oxbow start`): its
    /// `/metrics` gives its own fdatasync latency over the window, the fsync p99 at
    /// this load that the p99 goal is set against.
    #[arg(long)]
    broker_metrics: Option<String>,
    /// A peer broker to run the identical load against, side by side.
    #[arg(long)]
    compare: Option<String>,
    /// The peer's process id (default: found from the port if local).
    #[arg(long)]
    compare_pid: Option<u32>,
    /// Where to write the report.
    #[arg(long, default_value = "bench-reports")]
    report_dir: PathBuf,
    /// Report name after the date (default: from the load's settings).
    #[arg(long)]
    name: Option<String>,
}

/// Flags of `oxbow bench scale`.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Bootstrap address of the broker.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Partitions to create.
    #[arg(long, default_value_t = 10_000)]
    partitions: i32,
    /// Topics to spread them over.
    #[arg(long, default_value_t = 10)]
    topics: i32,
    /// Seconds of each idle CPU measurement.
    #[arg(long, default_value_t = 20.0)]
    idle_s: f64,
    /// Seconds to wait after creation before measuring.
    #[arg(long, default_value_t = 10.0)]
    settle_s: f64,
    /// The broker's process id (default: found from the port).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Keep the topics afterwards.
    #[arg(long)]
    keep: bool,
    /// Where to write the report.
    #[arg(long, default_value = "bench-reports")]
    report_dir: PathBuf,
}

/// Runs one `oxbow bench` subcommand, printing to stdout.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Log(args) => log(args),
        BenchCommand::Limits(args) => limits(args),
        BenchCommand::Produce(args) => load(Workload::Produce, args),
        BenchCommand::Consume(args) => load(Workload::Consume, args),
        BenchCommand::E2e(args) => load(Workload::E2e, args),
        BenchCommand::Scale(args) => scale(args),
        BenchCommand::Tier(args) => tier(args),
    }
}

fn print_files(files: &[PathBuf]) {
    for file in files {
        println!("wrote {}", file.display());
    }
}

fn log(args: LogBenchArgs) -> anyhow::Result<()> {
    let mut options = LogBenchOptions::new(&args.data_dir);
    options.batch_bytes = args.batch_bytes;
    options.duration_s = args.duration_s;
    options.group_depth = args.group_depth;
    options.report_dir = Some(args.report_dir);
    let report = run_log_bench(&options)?;
    println!("{}", report.markdown);
    print_files(&report.files);
    Ok(())
}

fn limits(args: LimitsArgs) -> anyhow::Result<()> {
    let mut options = LimitsOptions::new(&args.data_dir);
    options.batch_bytes = args.batch_bytes;
    options.group_depth = args.group_depth;
    options.duration_s = args.duration_s;
    options.report_dir = Some(args.report_dir);
    options.command = reproducing_command();
    let report = run_limits(&options)?;
    println!("{}", report.markdown);
    print_files(&report.files);
    println!("{}", report.summary);
    Ok(())
}

fn load(workload: Workload, args: LoadArgs) -> anyhow::Result<()> {
    let mut load = LoadOptions::new(workload);
    load.topic = args.topic;
    load.keep_topic = args.keep_topic;
    load.acks = args.acks;
    load.message_bytes = args.message_bytes;
    load.batch_messages = args.batch_messages;
    load.partitions = args.partitions;
    load.producers = args.producers;
    load.in_flight = args.in_flight;
    load.consumers = args.consumers;
    load.fetches_in_flight = args.fetches_in_flight;
    load.duration_s = args.duration_s;
    load.warmup_s = args.warmup_s;
    load.rate_msgs_s = args.rate;
    load.compression = args.compression;
    load.history_mb = args.history_mb;
    load.fetch_max_bytes = args.fetch_max_bytes;
    load.client_threads = args.client_threads;
    let options = ClientBenchOptions {
        load,
        brokers: args.brokers,
        broker_pid: args.broker_pid,
        broker_metrics: args.broker_metrics,
        compare: args.compare,
        compare_pid: args.compare_pid,
        data_dir: args.data_dir,
        limit_duration_s: args.limit_duration_s,
        report_dir: Some(args.report_dir),
        name: args.name,
        command: reproducing_command(),
    };
    let report = run_client_bench(&options)?;
    println!("{}", report.markdown);
    print_files(&report.files);
    println!("{}", report.summary);
    Ok(())
}

fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let options = ScaleOptions {
        brokers: args.brokers,
        broker_pid: args.broker_pid,
        partitions: args.partitions,
        topics: args.topics,
        idle_s: args.idle_s,
        settle_s: args.settle_s,
        keep: args.keep,
        report_dir: Some(args.report_dir),
        command: reproducing_command(),
    };
    let report = run_scale(&options)?;
    println!("{}", report.markdown);
    print_files(&report.files);
    println!("{}", report.summary);
    Ok(())
}

fn tier(args: TierArgs) -> anyhow::Result<()> {
    let stores = if args.stores.is_empty() {
        vec![None]
    } else {
        args.stores
            .iter()
            .map(|s| (s != "default").then(|| PathBuf::from(s)))
            .collect()
    };
    let options = TierBenchOptions {
        data_dir: args.data_dir,
        stores,
        total_mb: args.total_mb,
        message_bytes: args.message_bytes,
        batch_messages: args.batch_messages,
        rate_mb_s: args.rate_mb_s,
        segment_mb: args.segment_mb,
        upload_lag_ms: args.upload_lag_ms,
        report_dir: Some(args.report_dir),
        name: args.name,
        command: reproducing_command(),
    };
    let report = run_tier_bench(&options)?;
    println!("{}", report.markdown);
    print_files(&report.files);
    println!("{}", report.summary);
    Ok(())
}
