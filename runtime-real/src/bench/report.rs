//! Small helpers of the benchmark reports: latency samples and percentiles, the date,
//! and a description of the machine and file system.

use super::log_append::BenchError;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most latency samples kept per phase (bounded memory whatever the duration).
const MAX_SAMPLES: usize = 4_000_000;

/// Latency samples in microseconds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Latencies {
    samples_us: Vec<u32>,
    sorted: bool,
}

impl Latencies {
    pub(crate) fn record(&mut self, elapsed: Duration) {
        if self.samples_us.len() < MAX_SAMPLES {
            let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
            self.samples_us.push(us);
            self.sorted = false;
        }
    }

    /// The `p`-th percentile (0..=100) in microseconds; 0 without samples.
    pub(crate) fn percentile_us(&mut self, p: f64) -> u32 {
        if self.samples_us.is_empty() {
            return 0;
        }
        if !self.sorted {
            self.samples_us.sort_unstable();
            self.sorted = true;
        }
        let last = self.samples_us.len() - 1;
        let rank = ((p / 100.0) * last as f64).round() as usize;
        self.samples_us[rank.min(last)]
    }
}

/// Writes `<dir>/<stem>.<extension>` for each `(extension, content)`, creating `dir`.
pub(crate) fn write_files(
    dir: &Path,
    stem: &str,
    files: &[(&str, &str)],
) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Report {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (extension, content) in files {
        let path = dir.join(format!("{stem}.{extension}"));
        std::fs::write(&path, content).map_err(|source| BenchError::Report {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// The command line of this process as the README would write it: the `oxbow`
/// arguments after `cargo run --release --bin oxbow --`.
pub(crate) fn reproducing_command() -> String {
    let args: Vec<String> = std::env::args().skip(1).map(|a| shell_quote(&a)).collect();
    format!("cargo run --release --bin oxbow -- {}", args.join(" "))
}

/// `arg` quoted for a POSIX shell when it needs it.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub(crate) fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Kernel, CPU, core count and the file system of `dir`, for the report.
pub(crate) fn machine_description(dir: &Path) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Load average when the report is written: the machine is shared, and a busy one
    // explains a noisy figure.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string());
    format!(
        "Linux {kernel}, {cores} × {cpu}, file system {} ({}); load average {load} (1/5/15 min) at the end of the run",
        file_system_of(dir),
        dir.display()
    )
}

/// The file system type of the mount holding `dir`, from /proc/self/mounts (longest
/// matching mount point).
fn file_system_of(dir: &Path) -> String {
    let Ok(dir) = dir.canonicalize() else {
        return "unknown".to_string();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "unknown".to_string();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let mount_point = fields.next()?;
            let fs_type = fields.next()?;
            let options = fields.next().unwrap_or("");
            dir.starts_with(mount_point)
                .then(|| (mount_point.len(), format!("{fs_type} on {device}, {options}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_string(), |(_, description)| description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(
            shell_quote("--brokers=127.0.0.1:9092"),
            "--brokers=127.0.0.1:9092"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn percentiles() {
        let mut l = Latencies::default();
        assert_eq!(l.percentile_us(50.0), 0);
        for us in (1..=100).rev() {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.percentile_us(0.0), 1);
        assert_eq!(l.percentile_us(50.0), 51);
        assert_eq!(l.percentile_us(100.0), 100);
    }
}
