//! `oxbow bench log`: the disk's raw `O_DIRECT` write+`fdatasync` bandwidth against the
//! log's own append bandwidth, with the same batch size and sync policy, in one run.
//!
//! Four phases, each `duration_s` long (or until `max_phase_bytes`), each in a fresh
//! directory under `data_dir`. The raw and the log phase of one sync policy run in
//! alternating one-second slices, so both see the same disk (a shared virtual disk's
//! flush latency drifts a lot within a minute):
//!
//! 1. `raw-sync-each` — `pwrite` one batch-sized aligned buffer with `O_DIRECT`, then
//!    `fdatasync`; repeat. Files are laid out like the log's segments: a new file every
//!    `segment.bytes`, reserved with `fallocate(FALLOC_FL_KEEP_SIZE)` of
//!    `preallocate_bytes`, exactly as the log does. This is the machine's figure.
//! 2. `log-sync-each` — `Log::append` one valid Kafka batch of the same size, then
//!    `Log::sync`, then pump the effects through [`crate::storage::PartitionStorage`]
//!    until the batch is durable; repeat. Everything the log really does is included:
//!    CRC validation, offset assignment, index upkeep, segment rolls with their index
//!    writes, directory fsyncs, and the periodic checkpoint (temp file + fdatasync +
//!    rename + directory fsync).
//! 3. `raw-group-N` / 4. `log-group-N` — the same with N batches written before each
//!    `fdatasync` (for the log: N appends, one `sync()`), which is what group commit
//!    gives when appends arrive faster than syncs complete. The executor here is
//!    synchronous, so concurrency is emulated by queueing N appends before pumping; the
//!    figure shows what one flush amortised over N batches is worth on this disk.

use super::raw_disk::{self, pool_for, RawLayout, RawWriter, Tally};
use super::report::{machine_description, today_utc};
use crate::storage::aligned::{BufferPool, PoolConfigError};
use crate::storage::vfs::RealVfs;
use crate::storage::{DiskLog, OpenLogError, StorageConfig, StorageError, StorageStats};
use bytes::Bytes;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::io::partition_dir;
use oxbow_core::log::{AppendError, LogConfig, LogEvent};
use oxbow_core::time::Instant;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct LogBenchOptions {
    /// Directory on the disk to measure; the benchmark works in fresh sub-directories
    /// (`bench-raw`, `bench-log`) and removes them afterwards.
    pub data_dir: PathBuf,
    /// Size of each record batch (and of each raw write), in bytes.
    pub batch_bytes: usize,
    /// Length of each phase, in seconds.
    pub duration_s: f64,
    /// Most bytes written per phase (bounds the disk space a fast disk would use).
    pub max_phase_bytes: u64,
    /// Batches per sync in the group-commit phases (0 or 1 skips them).
    pub group_depth: usize,
    /// Where to write `<date>-log-append.md` and `.csv`; `None` writes nothing.
    pub report_dir: Option<PathBuf>,
    /// The command line to print as "how to reproduce"; `None` prints the `oxbow` one.
    pub command: Option<String>,
}

impl LogBenchOptions {
    /// Defaults for `data_dir`: 64 KiB batches, 10 s phases, group depth 16, no files.
    pub fn new(data_dir: impl Into<PathBuf>) -> LogBenchOptions {
        LogBenchOptions {
            data_dir: data_dir.into(),
            batch_bytes: 64 * 1024,
            duration_s: 10.0,
            max_phase_bytes: 4 << 30,
            group_depth: 16,
            report_dir: None,
            command: None,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Settings that cannot work.
    #[error("invalid benchmark options: {0}")]
    Options(String),
    /// The buffer pool could not be created.
    #[error(transparent)]
    Pool(#[from] PoolConfigError),
    /// A raw file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The log could not be opened.
    #[error(transparent)]
    Open(#[from] OpenLogError),
    /// The log refused a batch.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The log reported a failure or did not make a batch durable.
    #[error("log failed during the benchmark: {0}")]
    Log(String),
    /// A socket or file operation outside the storage engine failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The report could not be written.
    #[error("cannot write the report {}: {source}", path.display())]
    Report {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One phase's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// Phase name (`raw-sync-each`, `log-sync-each`, `raw-group-16`, …).
    pub phase: String,
    /// Batches written.
    pub batches: u64,
    /// Bytes of batches written.
    pub bytes: u64,
    /// Wall time of the phase, in seconds.
    pub elapsed_s: f64,
    /// Bandwidth, MiB/s.
    pub mib_per_s: f64,
    /// `fdatasync`/`fsync` calls made (segment syncs, directory syncs, checkpoints).
    pub flushes: u64,
    /// Latency of one round (N writes + sync, until durable): median, µs.
    pub round_p50_us: u32,
    /// 99th percentile, µs.
    pub round_p99_us: u32,
    /// Maximum, µs.
    pub round_max_us: u32,
    /// Latency of the `fdatasync` alone (raw phases only): median, µs.
    pub fdatasync_p50_us: u32,
    /// 99th percentile, µs.
    pub fdatasync_p99_us: u32,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Every phase, in the order run.
    pub rows: Vec<BenchRow>,
    /// Log bandwidth / raw bandwidth with a sync after each batch.
    pub ratio_sync_each: f64,
    /// Log / raw with `group_depth` batches per sync (`None` if skipped).
    pub ratio_group: Option<f64>,
    /// The report as markdown.
    pub markdown: String,
    /// The figures as CSV.
    pub csv: String,
    /// Files written (markdown, CSV).
    pub files: Vec<PathBuf>,
}

/// Runs the benchmark (see the module doc) and, with `report_dir`, files the report.
pub fn run_log_bench(options: &LogBenchOptions) -> Result<BenchReport, BenchError> {
    validate(options)?;
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|e| StorageError::io("mkdir", &options.data_dir, e))?;
    let config = log_config(options.batch_bytes);
    let pool = pool_for(options.batch_bytes, 16)?;
    let batch = make_batch(options.batch_bytes)?;
    let mut rows = Vec::new();
    let (raw, log) = run_pair(options, &config, &pool, &batch, 1)?;
    rows.extend([raw, log]);
    let group = options.group_depth > 1;
    if group {
        let (raw, log) = run_pair(options, &config, &pool, &batch, options.group_depth)?;
        rows.extend([raw, log]);
    }
    let ratio = |log: &BenchRow, raw: &BenchRow| {
        if raw.mib_per_s > 0.0 {
            log.mib_per_s / raw.mib_per_s
        } else {
            0.0
        }
    };
    let ratio_sync_each = ratio(&rows[1], &rows[0]);
    let ratio_group = group.then(|| ratio(&rows[3], &rows[2]));
    let mut report = BenchReport {
        markdown: String::new(),
        csv: csv(&rows, options.batch_bytes),
        rows,
        ratio_sync_each,
        ratio_group,
        files: Vec::new(),
    };
    report.markdown = markdown(options, &report);
    if let Some(dir) = &options.report_dir {
        report.files = write_report(dir, &report)?;
    }
    Ok(report)
}

fn validate(options: &LogBenchOptions) -> Result<(), BenchError> {
    if options.batch_bytes < 128 || options.batch_bytes > 64 << 20 {
        return Err(BenchError::Options(format!(
            "batch size {} bytes: must be between 128 bytes and 64 MiB",
            options.batch_bytes
        )));
    }
    if !(options.duration_s > 0.0 && options.duration_s <= 3600.0) {
        return Err(BenchError::Options(format!(
            "duration {} s: must be in (0, 3600]",
            options.duration_s
        )));
    }
    Ok(())
}

/// The default log settings, with room for the batch size asked for.
fn log_config(batch_bytes: usize) -> LogConfig {
    let mut config = LogConfig::default();
    let batch = batch_bytes as u64;
    config.max_batch_bytes = config.max_batch_bytes.max(batch);
    config.recovery_read_bytes = config.recovery_read_bytes.max(batch);
    config.segment_bytes = config.segment_bytes.max(batch * 4);
    config
}

/// One valid uncompressed v2 batch of one record, exactly `batch_bytes` long.
fn make_batch(batch_bytes: usize) -> Result<Bytes, BenchError> {
    let build = |value_bytes: usize| {
        let value: Vec<u8> = (0..value_bytes).map(|i| (i % 251) as u8).collect();
        build_batch(
            &[NewRecord::value(value, 1_700_000_000_000)],
            BatchOptions::default(),
        )
    };
    let mut value_bytes = batch_bytes.saturating_sub(build(0).len());
    for _ in 0..4 {
        let batch = build(value_bytes);
        if batch.len() == batch_bytes {
            return Ok(batch);
        }
        value_bytes = (value_bytes + batch_bytes).saturating_sub(batch.len());
    }
    Err(BenchError::Options(format!(
        "cannot build a batch of exactly {batch_bytes} bytes"
    )))
}

fn fresh_dir(options: &LogBenchOptions, name: &str) -> Result<PathBuf, BenchError> {
    let dir = options.data_dir.join(name);
    raw_disk::fresh_dir(&dir)?;
    Ok(dir)
}

fn phase_name(kind: &str, depth: usize) -> String {
    if depth == 1 {
        format!("{kind}-sync-each")
    } else {
        format!("{kind}-group-{depth}")
    }
}

/// Runs the raw and the log variant of one sync policy in alternating slices of at
/// most a second, so that both see the same disk: a shared virtual disk's flush latency
/// can change tenfold within a minute, which would skew phases run one after another.
fn run_pair(
    options: &LogBenchOptions,
    config: &LogConfig,
    pool: &BufferPool,
    batch: &Bytes,
    depth: usize,
) -> Result<(BenchRow, BenchRow), BenchError> {
    let slice = Duration::from_secs_f64(options.duration_s.min(1.0));
    let slices = (options.duration_s / slice.as_secs_f64()).ceil() as u32;
    let max_slice_bytes = options.max_phase_bytes / u64::from(slices.max(1));
    let layout = RawLayout {
        segment_bytes: config.segment_bytes,
        preallocate_bytes: config.preallocate_bytes,
    };
    let mut raw = RawWriter::new(
        &options.data_dir.join("bench-raw"),
        layout,
        pool,
        options.batch_bytes,
        depth,
    )?;
    let mut log = LogRunner::new(options, config, pool, batch, depth)?;
    for i in 0..slices {
        if i % 2 == 0 {
            raw.run_for(slice, max_slice_bytes)?;
            log.run_for(slice, max_slice_bytes)?;
        } else {
            log.run_for(slice, max_slice_bytes)?;
            raw.run_for(slice, max_slice_bytes)?;
        }
    }
    let mut raw_tally = raw.finish()?;
    let raw_row = row(
        phase_name("raw", depth),
        options.batch_bytes,
        &mut raw_tally,
        true,
    );
    let log_row = log.finish()?;
    Ok((raw_row, log_row))
}

/// The log's figure: appends through core's `Log` and the storage executor.
struct LogRunner {
    root: PathBuf,
    log: DiskLog,
    batch: Bytes,
    batch_bytes: usize,
    depth: usize,
    origin: WallInstant,
    before: StorageStats,
    tally: Tally,
}

impl LogRunner {
    fn new(
        options: &LogBenchOptions,
        config: &LogConfig,
        pool: &BufferPool,
        batch: &Bytes,
        depth: usize,
    ) -> Result<LogRunner, BenchError> {
        let root = fresh_dir(options, "bench-log")?;
        let dir = root.join(partition_dir("bench", 0, 0));
        let origin = WallInstant::now();
        let (log, _) = DiskLog::open_in_dir(
            RealVfs::direct(),
            &dir,
            config.clone(),
            pool.clone(),
            StorageConfig::default(),
            Instant::ZERO,
        )?;
        let before = log.storage().stats();
        Ok(LogRunner {
            root,
            log,
            batch: batch.clone(),
            batch_bytes: options.batch_bytes,
            depth,
            origin,
            before,
            tally: Tally::default(),
        })
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn run_for(&mut self, duration: Duration, max_bytes: u64) -> Result<(), BenchError> {
        let start = WallInstant::now();
        let mut bytes = 0u64;
        while start.elapsed() < duration && bytes < max_bytes {
            // The network layer hands the log a buffer it owns; making that buffer is
            // the network's cost, not the log's, so it happens before the clock starts.
            let batches: Vec<Bytes> = (0..self.depth)
                .map(|_| Bytes::from(self.batch.to_vec()))
                .collect();
            let round_start = WallInstant::now();
            let now = self.now();
            for batch in batches {
                self.log.log_mut().append(now, 1, batch)?;
                self.tally.batches += 1;
                bytes += self.batch_bytes as u64;
            }
            self.log.log_mut().sync();
            self.log.pump(now);
            while let Some(event) = self.log.log_mut().poll_event() {
                if let Some(failure) = event_failure(&event) {
                    return Err(BenchError::Log(failure));
                }
            }
            let expected = self.log.log().next_offset() - 1;
            if self.log.log().durable_offset() != expected {
                return Err(BenchError::Log(format!(
                    "offset {expected} not durable after its sync (durable: {})",
                    self.log.log().durable_offset()
                )));
            }
            let round = round_start.elapsed();
            self.tally.rounds.record(round);
            self.tally.elapsed += round;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<BenchRow, BenchError> {
        let after = self.log.storage().stats();
        let now = self.now();
        self.log.close(now)?;
        raw_disk::remove_dir(&self.root)?;
        self.tally.flushes = (after.fdatasyncs - self.before.fdatasyncs)
            + (after.dir_syncs - self.before.dir_syncs)
            + (after.checkpoints - self.before.checkpoints);
        Ok(row(
            phase_name("log", self.depth),
            self.batch_bytes,
            &mut self.tally,
            false,
        ))
    }
}

/// The failure an event reports, if it reports one.
fn event_failure(event: &LogEvent) -> Option<String> {
    match event {
        LogEvent::AppendsFailed { error, .. } => Some(format!("appends failed: {error}")),
        LogEvent::Corrupted { reason, .. } => Some(format!("corruption: {reason}")),
        _ => None,
    }
}

fn row(phase: String, batch_bytes: usize, tally: &mut Tally, with_fsyncs: bool) -> BenchRow {
    let bytes = tally.batches * batch_bytes as u64;
    let elapsed_s = tally.elapsed.as_secs_f64();
    let (fdatasync_p50_us, fdatasync_p99_us) = if with_fsyncs {
        (tally.fsyncs.percentile_us(50.0), tally.fsyncs.percentile_us(99.0))
    } else {
        (0, 0)
    };
    BenchRow {
        phase,
        batches: tally.batches,
        bytes,
        elapsed_s,
        mib_per_s: if elapsed_s > 0.0 {
            bytes as f64 / (1024.0 * 1024.0) / elapsed_s
        } else {
            0.0
        },
        flushes: tally.flushes,
        round_p50_us: tally.rounds.percentile_us(50.0),
        round_p99_us: tally.rounds.percentile_us(99.0),
        round_max_us: tally.rounds.percentile_us(100.0),
        fdatasync_p50_us,
        fdatasync_p99_us,
    }
}

fn csv(rows: &[BenchRow], batch_bytes: usize) -> String {
    let mut out = String::from(
        "phase,batch_bytes,batches,bytes,elapsed_s,mib_per_s,flushes,round_p50_us,round_p99_us,round_max_us,fdatasync_p50_us,fdatasync_p99_us\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.3},{:.2},{},{},{},{},{},{}",
            r.phase,
            batch_bytes,
            r.batches,
            r.bytes,
            r.elapsed_s,
            r.mib_per_s,
            r.flushes,
            r.round_p50_us,
            r.round_p99_us,
            r.round_max_us,
            r.fdatasync_p50_us,
            r.fdatasync_p99_us
        );
    }
    out
}

fn command(options: &LogBenchOptions) -> String {
    options.command.clone().unwrap_or_else(|| {
        format!(
            "cargo run --release --bin oxbow -- bench log --data-dir {} --batch-bytes {} --duration-s {}",
            options.data_dir.display(),
            options.batch_bytes,
            options.duration_s
        )
    })
}

fn markdown(options: &LogBenchOptions, report: &BenchReport) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Log append vs raw O_DIRECT write+fdatasync — {}\n",
        today_utc()
    );
    let _ = writeln!(md, "- Reproduce: `{}`", command(options));
    let _ = writeln!(md, "- Machine: {}", machine_description(&options.data_dir));
    let _ = writeln!(
        md,
        "- Batch: {} bytes (one valid Kafka v2 batch of one record for the log; the same size of aligned bytes for raw), {} s per phase; raw and log phases of one sync policy alternate in one-second slices so both see the same disk.\n",
        options.batch_bytes, options.duration_s
    );
    let _ = writeln!(
        md,
        "| phase | batches | MiB | s | MiB/s | flushes | round p50 µs | round p99 µs | round max µs | fdatasync p50 µs | fdatasync p99 µs |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &report.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
            r.phase,
            r.batches,
            r.bytes as f64 / (1024.0 * 1024.0),
            r.elapsed_s,
            r.mib_per_s,
            r.flushes,
            r.round_p50_us,
            r.round_p99_us,
            r.round_max_us,
            r.fdatasync_p50_us,
            r.fdatasync_p99_us
        );
    }
    let _ = writeln!(
        md,
        "\n**Log / raw, sync after each batch: {:.1}%** (goal ≥ 80%).",
        report.ratio_sync_each * 100.0
    );
    if let Some(ratio) = report.ratio_group {
        let _ = writeln!(
            md,
            "\nLog / raw, {} batches per sync (group commit): {:.1}%.",
            options.group_depth,
            ratio * 100.0
        );
    }
    md.push_str(PHASES_EXPLAINED);
    md
}

const PHASES_EXPLAINED: &str = "
## What the phases do

- `raw-sync-each`: `pwrite` of one aligned batch-sized buffer to a file opened with
  `O_DIRECT`, then `fdatasync`, repeated. Files are laid out like the log's segments
  (a new file every `segment.bytes`, reserved with `fallocate(FALLOC_FL_KEEP_SIZE)` of
  `preallocate_bytes`). This is the machine's figure.
- `log-sync-each`: `Log::append` of one Kafka batch of the same size, `Log::sync`, and the
  effects pumped through the storage executor until the batch is durable, repeated.
  Includes everything the log does: CRC validation, offset assignment, index upkeep,
  segment rolls (index write, directory fsync) and the periodic checkpoint (temp file +
  fdatasync + rename + directory fsync, once a second).
- `raw-group-N` / `log-group-N`: N batches written per `fdatasync` (for the log: N appends,
  then one `sync()`). That is what group commit achieves when appends arrive faster than
  syncs complete; the executor is synchronous today, so the arrival of N appends during
  one flush is emulated by queueing them before pumping.
- `flushes`: `fdatasync`/`fsync` calls, counting the log's directory syncs and checkpoints.
- `round`: one iteration (N writes + sync) until durable. Bandwidth is bytes over the
  sum of rounds. The log is handed each batch as a buffer it owns, as the network layer
  would; copying the batch into that buffer is the network's cost and is not timed.
";

fn write_report(dir: &Path, report: &BenchReport) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Report {
        path: dir.to_path_buf(),
        source,
    })?;
    let stem = format!("{}-log-append", today_utc());
    let mut files = Vec::new();
    for (extension, content) in [("md", &report.markdown), ("csv", &report.csv)] {
        let path = dir.join(format!("{stem}.{extension}"));
        std::fs::write(&path, content).map_err(|source| BenchError::Report {
            path: path.clone(),
            source,
        })?;
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_have_the_exact_size() {
        for size in [128, 1000, 4096, 65_536, 65_537, 1 << 20] {
            let batch = make_batch(size).unwrap_or_else(|e| panic!("{size}: {e}"));
            assert_eq!(batch.len(), size);
            assert!(oxbow_core::log::batch::validate_batch(&batch).is_ok());
        }
    }
}
