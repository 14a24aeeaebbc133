//! `oxbow bench scale`: many partitions on one node — the broker's resident memory per
//! partition and its CPU use while idle, before and after the partitions exist.
//!
//! The run measures the broker's idle CPU for `idle_s`, creates `partitions` partitions
//! spread over `topics` topics (through the rskafka admin client), waits `settle_s`,
//! measures resident memory and idle CPU again, and deletes the topics unless asked to
//! keep them. The broker must be a local process (its pid given or found from its port).

use super::log_append::BenchError;
use super::proc_stats::{self, ProcSample};
use super::raw_disk::MB;
use super::report::{machine_description, today_utc, write_files};
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::ClientBuilder;
use rskafka::BackoffConfig;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Settings of a scale run.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    /// Bootstrap address of the broker.
    pub brokers: String,
    /// Its process id (found from the port when `None`).
    pub broker_pid: Option<u32>,
    /// Partitions to create in total.
    pub partitions: i32,
    /// Topics to spread them over.
    pub topics: i32,
    /// Seconds of each idle CPU measurement.
    pub idle_s: f64,
    /// Seconds to wait after creating before measuring.
    pub settle_s: f64,
    /// Leave the topics in place afterwards.
    pub keep: bool,
    /// Where to file the report; `None` files nothing.
    pub report_dir: Option<PathBuf>,
    /// The reproducing command line.
    pub command: String,
}

/// Why a scale run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// Settings that cannot work.
    #[error("invalid scale options: {0}")]
    Options(String),
    /// The broker process could not be found or read.
    #[error("cannot read the broker process: {0}")]
    Process(String),
    /// The client failed.
    #[error("{what}: {source}")]
    Client {
        /// What was being done.
        what: String,
        /// The client's error.
        source: Box<ClientError>,
    },
    /// The client runtime could not start.
    #[error("cannot start the client runtime: {0}")]
    Runtime(std::io::Error),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] BenchError),
}

/// The outcome of a scale run.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    /// Partitions created.
    pub partitions: i32,
    /// Broker RSS before, bytes.
    pub rss_before_bytes: u64,
    /// Broker RSS after creating and settling, bytes.
    pub rss_after_bytes: u64,
    /// Idle CPU before, cores.
    pub idle_cpu_before_cores: f64,
    /// Idle CPU with the partitions, cores.
    pub idle_cpu_after_cores: f64,
    /// Wall time of the creation requests, seconds.
    pub create_s: f64,
    /// The final `summary:` line.
    pub summary: String,
    /// The report as markdown.
    pub markdown: String,
    /// The figures as CSV.
    pub csv: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl ScaleReport {
    /// Extra resident memory per partition, KiB.
    pub fn rss_per_partition_kib(&self) -> f64 {
        (self.rss_after_bytes as f64 - self.rss_before_bytes as f64)
            / 1024.0
            / f64::from(self.partitions.max(1))
    }
}

fn idle_cpu(pid: u32, seconds: f64) -> Result<(f64, ProcSample), ScaleError> {
    let gone = || ScaleError::Process(format!("process {pid} is gone"));
    let before = proc_stats::sample(pid).ok_or_else(gone)?;
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let after = proc_stats::sample(pid).ok_or_else(gone)?;
    Ok((proc_stats::cores_used(&before, &after), after))
}

/// Runs the scale measurement (see the module doc).
pub fn run_scale(options: &ScaleOptions) -> Result<ScaleReport, ScaleError> {
    if options.partitions < 1 || options.topics < 1 || options.topics > options.partitions {
        return Err(ScaleError::Options("need 1 ≤ topics ≤ partitions".to_string()));
    }
    let idle_ok = options.idle_s > 0.0 && options.idle_s <= 3600.0;
    if !(idle_ok && (0.0..=3600.0).contains(&options.settle_s)) {
        return Err(ScaleError::Options(
            "idle in (0, 3600] s, settle in [0, 3600] s".to_string(),
        ));
    }
    let port = options
        .brokers
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let pid = options
        .broker_pid
        .or_else(|| port.and_then(proc_stats::pid_listening_on))
        .ok_or_else(|| {
            ScaleError::Process(format!(
                "no local process listens on {}; pass --broker-pid",
                options.brokers
            ))
        })?;
    let (idle_cpu_before_cores, before) = idle_cpu(pid, options.idle_s)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ScaleError::Runtime)?;
    let names: Vec<String> = (0..options.topics)
        .map(|t| format!("oxbow-bench-scale-{}-{t}", std::process::id()))
        .collect();
    let per_topic = options.partitions / options.topics;
    let extra = options.partitions % options.topics;
    let started = Instant::now();
    runtime.block_on(async {
        let client = ClientBuilder::new(vec![options.brokers.clone()])
            .client_id("oxbow-bench")
            .backoff_config(BackoffConfig {
                deadline: Some(Duration::from_secs(120)),
                ..BackoffConfig::default()
            })
            .build()
            .await
            .map_err(|source| ScaleError::Client {
                what: format!("connecting to {}", options.brokers),
                source: Box::new(source),
            })?;
        let controller = client.controller_client().map_err(|source| ScaleError::Client {
            what: "admin client".to_string(),
            source: Box::new(source),
        })?;
        for (i, name) in names.iter().enumerate() {
            let count = per_topic + i32::from((i as i32) < extra);
            match controller.create_topic(name.clone(), count, 1, 120_000).await {
                Ok(())
                | Err(ClientError::ServerError {
                    protocol_error: ProtocolError::TopicAlreadyExists,
                    ..
                }) => {}
                Err(source) => {
                    return Err(ScaleError::Client {
                        what: format!("creating {name} with {count} partitions"),
                        source: Box::new(source),
                    })
                }
            }
        }
        Ok::<(), ScaleError>(())
    })?;
    let create_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(options.settle_s));
    let (idle_cpu_after_cores, after) = idle_cpu(pid, options.idle_s)?;
    if !options.keep {
        runtime.block_on(async {
            if let Ok(client) = ClientBuilder::new(vec![options.brokers.clone()]).build().await {
                if let Ok(controller) = client.controller_client() {
                    for name in &names {
                        let _ = controller.delete_topic(name.clone(), 120_000).await;
                    }
                }
            }
        });
    }
    let mut report = ScaleReport {
        partitions: options.partitions,
        rss_before_bytes: before.rss_bytes,
        rss_after_bytes: after.rss_bytes,
        idle_cpu_before_cores,
        idle_cpu_after_cores,
        create_s,
        summary: String::new(),
        markdown: String::new(),
        csv: String::new(),
        files: Vec::new(),
    };
    report.summary = format!(
        "summary: partitions={} rss_before_mb={:.1} rss_after_mb={:.1} rss_per_partition_kib={:.1} idle_cpu_before_cores={:.3} idle_cpu_after_cores={:.3} create_s={:.2}",
        report.partitions,
        report.rss_before_bytes as f64 / MB,
        report.rss_after_bytes as f64 / MB,
        report.rss_per_partition_kib(),
        report.idle_cpu_before_cores,
        report.idle_cpu_after_cores,
        report.create_s
    );
    report.csv = format!(
        "partitions,topics,rss_before_bytes,rss_after_bytes,rss_per_partition_kib,idle_cpu_before_cores,idle_cpu_after_cores,create_s\n{},{},{},{},{:.2},{:.4},{:.4},{:.3}\n",
        report.partitions,
        options.topics,
        report.rss_before_bytes,
        report.rss_after_bytes,
        report.rss_per_partition_kib(),
        report.idle_cpu_before_cores,
        report.idle_cpu_after_cores,
        report.create_s
    );
    report.markdown = markdown(options, &report);
    if let Some(dir) = &options.report_dir {
        let stem = format!("{}-scale-{}-partitions", today_utc(), options.partitions);
        report.files = write_files(dir, &stem, &[("md", &report.markdown), ("csv", &report.csv)])?;
    }
    Ok(report)
}

fn markdown(options: &ScaleOptions, report: &ScaleReport) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# {} partitions on one node — {}\n",
        report.partitions,
        today_utc()
    );
    let _ = writeln!(md, "- Reproduce: `{}`", options.command);
    let _ = writeln!(md, "- Machine: {}", machine_description(Path::new(".")));
    let _ = writeln!(
        md,
        "- {} partitions over {} topics (replication 1), created through the Kafka API; idle CPU over {} s before and after, {} s after creation. MB = 2^20 bytes.\n",
        report.partitions, options.topics, options.idle_s, options.settle_s
    );
    let _ = writeln!(md, "| | before | with the partitions |");
    let _ = writeln!(md, "|---|---:|---:|");
    let _ = writeln!(
        md,
        "| broker RSS | {:.1} MB | {:.1} MB |",
        report.rss_before_bytes as f64 / MB,
        report.rss_after_bytes as f64 / MB
    );
    let _ = writeln!(
        md,
        "| idle CPU | {:.3} cores | {:.3} cores |",
        report.idle_cpu_before_cores, report.idle_cpu_after_cores
    );
    let _ = writeln!(
        md,
        "\n**Memory per partition: {:.1} KiB** (RSS growth / partitions). Creating them took {:.2} s.\n",
        report.rss_per_partition_kib(),
        report.create_s
    );
    let _ = writeln!(md, "`{}`", report.summary);
    md
}
