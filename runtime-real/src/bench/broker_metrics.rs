//! The broker's own view of a load: its `/metrics` page (Prometheus text) scraped at
//! the start and end of the measured window, and the latency of the `fdatasync`s it
//! ran in between ([`FdatasyncWindow`]), so a load's p99 can be set against the fsync
//! p99 *at that load* rather than on an idle disk.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The histogram the node exposes for segment `fdatasync`s.
pub const FDATASYNC_HISTOGRAM: &str = "oxbow_disk_fdatasync_seconds";

/// Longest a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `fdatasync`s a broker ran during a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FdatasyncWindow {
    /// How many completed.
    pub count: u64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// Median, ms (interpolated within its bucket).
    pub p50_ms: f64,
    /// 99th percentile, ms (interpolated within its bucket).
    pub p99_ms: f64,
}

/// Fetches `http://{addr}/metrics`.
pub async fn scrape(addr: &str) -> io::Result<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, io::Error>(response)
    };
    let response = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("scraping {addr}/metrics")))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_ok = head
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
    if !status_ok {
        let status = head.lines().next().unwrap_or("no response");
        return Err(io::Error::other(format!("{addr}/metrics answered: {status}")));
    }
    Ok(body.to_string())
}

/// A histogram summed over its series (shards): `(upper bound in seconds, cumulative
/// count)` by bound, `+Inf` last, plus the sum of the observations in seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Cumulative counts by upper bound, ascending.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of the observations, seconds.
    pub sum_s: f64,
}

impl Histogram {
    /// Reads histogram `name` from a Prometheus text page, summing its series.
    pub fn parse(page: &str, name: &str) -> Histogram {
        let bucket_prefix = format!("{name}_bucket{{");
        let sum_prefix = format!("{name}_sum");
        let mut histogram = Histogram::default();
        for line in page.lines() {
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            if line.starts_with(&bucket_prefix) {
                let Some(le) = label(line, "le") else {
                    continue;
                };
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    match le.parse::<f64>() {
                        Ok(bound) => bound,
                        Err(_) => continue,
                    }
                };
                match histogram.buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some((_, count)) => *count += value,
                    None => histogram.buckets.push((bound, value)),
                }
            } else if line.starts_with(&sum_prefix) && line[sum_prefix.len()..].starts_with(['{', ' ']) {
                histogram.sum_s += value;
            }
        }
        histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        histogram
    }

    /// What was observed between `earlier` and this one.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(bound, count)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(b, _)| b == bound)
                    .map_or(0.0, |(_, c)| *c);
                (*bound, (count - before).max(0.0))
            })
            .collect();
        Histogram {
            buckets,
            sum_s: (self.sum_s - earlier.sum_s).max(0.0),
        }
    }

    /// Observations counted.
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, count)| *count)
    }

    /// The `q` quantile in seconds, interpolated linearly within its bucket (an
    /// observation beyond the last finite bound reads as that bound). `None` when
    /// nothing was observed.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let (mut lower_bound, mut lower_count) = (0.0, 0.0);
        for (bound, count) in &self.buckets {
            if *count >= rank && *count > lower_count {
                if bound.is_infinite() {
                    return Some(lower_bound);
                }
                let share = (rank - lower_count) / (count - lower_count);
                return Some(lower_bound + share * (bound - lower_bound));
            }
            if bound.is_finite() {
                lower_bound = *bound;
            }
            lower_count = *count;
        }
        Some(lower_bound)
    }
}

/// The value of label `name` in a sample line.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The broker's `fdatasync`s between two scrapes of its `/metrics`.
pub fn fdatasync_window(before: &str, after: &str) -> Option<FdatasyncWindow> {
    let window =
        Histogram::parse(after, FDATASYNC_HISTOGRAM).since(&Histogram::parse(before, FDATASYNC_HISTOGRAM));
    let count = window.count();
    Some(FdatasyncWindow {
        count: count as u64,
        mean_ms: window.sum_s / count * 1000.0,
        p50_ms: window.quantile(0.5)? * 1000.0,
        p99_ms: window.quantile(0.99)? * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(shard0: [u64; 4], shard1: [u64; 4], sums: [f64; 2]) -> String {
        let mut out = String::from("# TYPE oxbow_disk_fdatasync_seconds histogram\n");
        for (shard, counts) in [(0, shard0), (1, shard1)] {
            for (le, count) in ["0.0001", "0.0002", "0.001", "+Inf"].iter().zip(counts) {
                out.push_str(&format!(
                    "oxbow_disk_fdatasync_seconds_bucket{{shard=\"{shard}\",le=\"{le}\"}} {count}\n"
                ));
            }
            out.push_str(&format!(
                "oxbow_disk_fdatasync_seconds_sum{{shard=\"{shard}\"}} {}\n",
                sums[shard]
            ));
            out.push_str(&format!(
                "oxbow_disk_fdatasync_seconds_count{{shard=\"{shard}\"}} {}\n",
                counts[3]
            ));
        }
        out.push_str("oxbow_disk_fdatasyncs_total{shard=\"0\"} 12345\n");
        out
    }

    #[test]
    fn the_window_is_the_difference_of_two_scrapes_summed_over_shards() {
        let before = page([10, 10, 10, 10], [0, 0, 0, 0], [0.001, 0.0]);
        // In the window: shard 0 ran 50 fdatasyncs ≤ 100 µs, shard 1 ran 49 in
        // (100 µs, 200 µs] and one in (200 µs, 1 ms].
        let after = page([60, 60, 60, 60], [0, 49, 50, 50], [0.006, 0.008]);
        let window = fdatasync_window(&before, &after).unwrap();
        assert_eq!(window.count, 100);
        assert!((window.mean_ms - 0.13).abs() < 1e-9, "{window:?}");
        // The 50th of 100 is the last in the first bucket; the 99th is in the second.
        assert!((window.p50_ms - 0.1).abs() < 1e-9, "{window:?}");
        assert!(
            (window.p99_ms - (0.1 + 0.1 * 49.0 / 49.0)).abs() < 1e-9,
            "{window:?}"
        );
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket_and_stop_at_the_last_finite_bound() {
        let h = Histogram {
            buckets: vec![(0.001, 0.0), (0.002, 100.0), (f64::INFINITY, 200.0)],
            sum_s: 1.0,
        };
        assert!((h.quantile(0.25).unwrap() - 0.0015).abs() < 1e-12);
        assert_eq!(h.quantile(0.99), Some(0.002));
        assert_eq!(Histogram::default().quantile(0.5), None);
        assert_eq!(fdatasync_window("", ""), None);
    }
}
