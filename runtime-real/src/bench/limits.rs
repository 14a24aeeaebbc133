//! `oxbow bench limits`: the machine's own ceilings, against which every other
//! benchmark is a ratio — `O_DIRECT` write+`fdatasync` bandwidth and `fdatasync` latency
//! at the batch sizes a load uses, sequential `O_DIRECT` read bandwidth, and one loopback
//! TCP stream's bandwidth.
//!
//! The client benchmarks call [`measure_write`], [`measure_direct_read`] and
//! [`measure_loopback`] themselves, in the same run as their load, so a ratio never
//! mixes figures taken at different times on this shared machine.

use super::log_append::BenchError;
use super::raw_disk::{self, pool_for, RawLayout, RawWriter, Transfer};
use super::report::{machine_description, today_utc, write_files};
use oxbow_core::log::LogConfig;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the disk gives writes of one size with one `fdatasync` per `depth` writes.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteLimit {
    /// Bytes per write.
    pub batch_bytes: usize,
    /// Writes per `fdatasync`.
    pub depth: usize,
    /// Bandwidth, MB/s (2^20 bytes).
    pub mb_s: f64,
    /// `fdatasync` latency, median, ms.
    pub fsync_p50_ms: f64,
    /// 99th percentile, ms.
    pub fsync_p99_ms: f64,
    /// Round (depth writes + sync) latency, 99th percentile, ms.
    pub round_p99_ms: f64,
}

/// Measures [`WriteLimit`] in a scratch directory under `data_dir` (removed after),
/// laid out like the log's segments with its default settings.
pub fn measure_write(
    data_dir: &Path,
    batch_bytes: usize,
    depth: usize,
    duration: Duration,
) -> Result<WriteLimit, BenchError> {
    let config = LogConfig::default();
    let layout = RawLayout {
        segment_bytes: config.segment_bytes.max(batch_bytes as u64 * 4),
        preallocate_bytes: config.preallocate_bytes,
    };
    let pool = pool_for(batch_bytes, 1)?;
    let mut writer = RawWriter::new(
        &data_dir.join("bench-limits-write"),
        layout,
        &pool,
        batch_bytes,
        depth,
    )?;
    writer.run_for(duration, u64::MAX)?;
    let mut tally = writer.finish()?;
    let bytes = tally.batches * batch_bytes as u64;
    let transfer = Transfer {
        bytes,
        elapsed_s: tally.elapsed.as_secs_f64(),
    };
    Ok(WriteLimit {
        batch_bytes,
        depth: depth.max(1),
        mb_s: transfer.mb_s(),
        fsync_p50_ms: f64::from(tally.fsyncs.percentile_us(50.0)) / 1000.0,
        fsync_p99_ms: f64::from(tally.fsyncs.percentile_us(99.0)) / 1000.0,
        round_p99_ms: f64::from(tally.rounds.percentile_us(99.0)) / 1000.0,
    })
}

/// Sequential `O_DIRECT` read bandwidth (MB/s) of a `file_bytes` file under `data_dir`,
/// read in `chunk_bytes` requests.
pub fn measure_direct_read(
    data_dir: &Path,
    file_bytes: u64,
    chunk_bytes: usize,
    duration: Duration,
) -> Result<f64, BenchError> {
    let transfer = raw_disk::direct_read(
        &data_dir.join("bench-limits-read"),
        file_bytes,
        chunk_bytes,
        duration,
    )?;
    Ok(transfer.mb_s())
}

/// One loopback TCP stream's bandwidth, MB/s.
pub fn measure_loopback(chunk_bytes: usize, duration: Duration) -> Result<f64, BenchError> {
    raw_disk::loopback_tcp(chunk_bytes, duration)
        .map(|t| t.mb_s())
        .map_err(|source| BenchError::Io {
            what: "loopback TCP stream".to_string(),
            source,
        })
}

/// Settings of `oxbow bench limits`.
#[derive(Clone, Debug)]
pub struct LimitsOptions {
    /// Directory on the disk to measure (scratch sub-directories are removed after).
    pub data_dir: PathBuf,
    /// Write sizes to measure.
    pub batch_bytes: Vec<usize>,
    /// Writes per `fdatasync` for a second measurement of each size (≤ 1 skips it).
    pub group_depth: usize,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// Size of the file the direct reads scan.
    pub read_file_bytes: u64,
    /// Bytes per direct read.
    pub read_chunk_bytes: usize,
    /// Bytes per loopback `write`.
    pub tcp_chunk_bytes: usize,
    /// Where to write `<date>-limits.md` and `.csv`; `None` writes nothing.
    pub report_dir: Option<PathBuf>,
    /// The command line to print as "how to reproduce".
    pub command: String,
}

impl LimitsOptions {
    /// Defaults: writes of 16 KiB, 64 KiB and 1 MiB, alone and 16 per sync; 5 s each;
    /// 1 MiB direct reads over 512 MiB; 256 KiB loopback writes.
    pub fn new(data_dir: impl Into<PathBuf>) -> LimitsOptions {
        LimitsOptions {
            data_dir: data_dir.into(),
            batch_bytes: vec![16 * 1024, 64 * 1024, 1 << 20],
            group_depth: 16,
            duration_s: 5.0,
            read_file_bytes: 512 << 20,
            read_chunk_bytes: 1 << 20,
            tcp_chunk_bytes: 256 * 1024,
            report_dir: None,
            command: String::new(),
        }
    }
}

/// The outcome of `oxbow bench limits`.
#[derive(Clone, Debug)]
pub struct LimitsReport {
    /// Every write measurement.
    pub writes: Vec<WriteLimit>,
    /// Sequential direct-read bandwidth, MB/s.
    pub direct_read_mb_s: f64,
    /// Loopback TCP bandwidth, MB/s.
    pub loopback_mb_s: f64,
    /// The report as markdown.
    pub markdown: String,
    /// The figures as CSV.
    pub csv: String,
    /// The final `summary:` line.
    pub summary: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// Runs every measurement and, with a report directory, files the report.
pub fn run_limits(options: &LimitsOptions) -> Result<LimitsReport, BenchError> {
    if !(options.duration_s > 0.0 && options.duration_s <= 3600.0) {
        return Err(BenchError::Options(format!(
            "duration {} s: must be in (0, 3600]",
            options.duration_s
        )));
    }
    if let Some(bad) = options.batch_bytes.iter().find(|b| **b < 512 || **b > 64 << 20) {
        return Err(BenchError::Options(format!(
            "write size {bad} bytes: must be between 512 bytes and 64 MiB"
        )));
    }
    std::fs::create_dir_all(&options.data_dir).map_err(|source| BenchError::Io {
        what: format!("mkdir {}", options.data_dir.display()),
        source,
    })?;
    let duration = Duration::from_secs_f64(options.duration_s);
    let mut writes = Vec::new();
    for &batch_bytes in &options.batch_bytes {
        writes.push(measure_write(&options.data_dir, batch_bytes, 1, duration)?);
        if options.group_depth > 1 {
            writes.push(measure_write(
                &options.data_dir,
                batch_bytes,
                options.group_depth,
                duration,
            )?);
        }
    }
    let direct_read_mb_s = measure_direct_read(
        &options.data_dir,
        options.read_file_bytes,
        options.read_chunk_bytes,
        duration,
    )?;
    let loopback_mb_s = measure_loopback(options.tcp_chunk_bytes, duration)?;
    let mut report = LimitsReport {
        csv: csv(&writes, direct_read_mb_s, loopback_mb_s),
        summary: summary(&writes, direct_read_mb_s, loopback_mb_s),
        writes,
        direct_read_mb_s,
        loopback_mb_s,
        markdown: String::new(),
        files: Vec::new(),
    };
    report.markdown = markdown(options, &report);
    if let Some(dir) = &options.report_dir {
        let stem = format!("{}-limits", today_utc());
        report.files = write_files(dir, &stem, &[("md", &report.markdown), ("csv", &report.csv)])?;
    }
    Ok(report)
}

fn summary(writes: &[WriteLimit], direct_read_mb_s: f64, loopback_mb_s: f64) -> String {
    let best = writes
        .iter()
        .filter(|w| w.depth == 1)
        .max_by(|a, b| a.mb_s.total_cmp(&b.mb_s));
    let (write_mb_s, fsync_p99_ms) = best.map_or((0.0, 0.0), |w| (w.mb_s, w.fsync_p99_ms));
    format!(
        "summary: write_fsync_mb_s={write_mb_s:.1} fsync_p99_ms={fsync_p99_ms:.3} direct_read_mb_s={direct_read_mb_s:.1} loopback_mb_s={loopback_mb_s:.1}"
    )
}

fn csv(writes: &[WriteLimit], direct_read_mb_s: f64, loopback_mb_s: f64) -> String {
    let mut out = String::from("measure,batch_bytes,depth,mb_s,fsync_p50_ms,fsync_p99_ms,round_p99_ms\n");
    for w in writes {
        let _ = writeln!(
            out,
            "write_fdatasync,{},{},{:.2},{:.3},{:.3},{:.3}",
            w.batch_bytes, w.depth, w.mb_s, w.fsync_p50_ms, w.fsync_p99_ms, w.round_p99_ms
        );
    }
    let _ = writeln!(out, "direct_read,,,{direct_read_mb_s:.2},,,");
    let _ = writeln!(out, "loopback_tcp,,,{loopback_mb_s:.2},,,");
    out
}

fn markdown(options: &LimitsOptions, report: &LimitsReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Machine limits — {}\n", today_utc());
    let _ = writeln!(md, "- Reproduce: `{}`", options.command);
    let _ = writeln!(md, "- Machine: {}", machine_description(&options.data_dir));
    let _ = writeln!(
        md,
        "- {} s per measurement; MB = 2^20 bytes.\n",
        options.duration_s
    );
    let _ = writeln!(md, "| O_DIRECT write+fdatasync | writes per sync | MB/s | fdatasync p50 ms | fdatasync p99 ms | round p99 ms |");
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for w in &report.writes {
        let _ = writeln!(
            md,
            "| {} B | {} | {:.1} | {:.3} | {:.3} | {:.3} |",
            w.batch_bytes, w.depth, w.mb_s, w.fsync_p50_ms, w.fsync_p99_ms, w.round_p99_ms
        );
    }
    let _ = writeln!(
        md,
        "\n- Sequential O_DIRECT read, {} KiB requests over a {} MiB file: **{:.1} MB/s**",
        options.read_chunk_bytes / 1024,
        options.read_file_bytes >> 20,
        report.direct_read_mb_s
    );
    let _ = writeln!(
        md,
        "- One loopback TCP stream, {} KiB writes: **{:.1} MB/s**\n",
        options.tcp_chunk_bytes / 1024,
        report.loopback_mb_s
    );
    let _ = writeln!(md, "`{}`", report.summary);
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_writes_its_report() {
        let data = tempfile::tempdir().unwrap();
        let reports = tempfile::tempdir().unwrap();
        let mut options = LimitsOptions::new(data.path());
        options.batch_bytes = vec![4096];
        options.group_depth = 2;
        options.duration_s = 0.05;
        options.read_file_bytes = 1 << 20;
        options.report_dir = Some(reports.path().to_path_buf());
        options.command = "oxbow bench limits".to_string();
        let report = run_limits(&options).unwrap();
        assert_eq!(report.writes.len(), 2);
        assert!(report.summary.starts_with("summary: write_fsync_mb_s="));
        assert_eq!(report.files.len(), 2);
        assert!(report.csv.lines().count() == 5, "{}", report.csv);
        assert!(report.markdown.contains("`oxbow bench limits`"));
        // Scratch directories are gone.
        assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_options_are_refused() {
        let mut options = LimitsOptions::new("/nonexistent");
        options.batch_bytes = vec![10];
        assert!(matches!(run_limits(&options), Err(BenchError::Options(_))));
    }
}
