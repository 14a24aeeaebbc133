//! Latency of a client load in HDR histograms: one over the whole measured window
//! (p50, p99, p99.9, max) and one per second of it (latency over time), with the
//! messages and bytes completed in each second.
//!
//! Each load task owns a [`LatencyRecorder`]; they are merged when the run ends, so
//! recording never takes a lock.

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Largest latency a histogram holds, µs (one hour); longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Most per-second slots (a day): a longer run keeps only its overall histogram.
const MAX_SECONDS: usize = 86_400;

fn histogram(significant_digits: u8) -> Histogram<u64> {
    // Bounds and precision are constants inside hdrhistogram's accepted range.
    match Histogram::new_with_bounds(1, MAX_LATENCY_US, significant_digits) {
        Ok(h) => h,
        Err(_) => unreachable!("constant histogram bounds are valid"),
    }
}

/// One second of a run.
#[derive(Debug, Clone)]
struct Second {
    latency_us: Histogram<u64>,
    messages: u64,
    bytes: u64,
}

/// Latencies and completions of a load, per second and overall.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    origin: Instant,
    total_us: Histogram<u64>,
    seconds: Vec<Second>,
    messages: u64,
    bytes: u64,
}

impl LatencyRecorder {
    /// An empty recorder whose second 0 starts at `origin` (the measured window's start).
    pub fn new(origin: Instant) -> LatencyRecorder {
        LatencyRecorder {
            origin,
            total_us: histogram(3),
            seconds: Vec::new(),
            messages: 0,
            bytes: 0,
        }
    }

    /// Records `messages` messages of `bytes` bytes in total, completed at `at` with
    /// latency `latency` each. Completions before the origin are ignored (warm-up).
    pub fn record(&mut self, at: Instant, latency: Duration, messages: u64, bytes: u64) {
        let Some(since) = at.checked_duration_since(self.origin) else {
            return;
        };
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        self.total_us.saturating_record_n(us, messages);
        self.messages += messages;
        self.bytes += bytes;
        let index = since.as_secs() as usize;
        if index >= MAX_SECONDS {
            return;
        }
        while self.seconds.len() <= index {
            self.seconds.push(Second {
                latency_us: histogram(2),
                messages: 0,
                bytes: 0,
            });
        }
        let second = &mut self.seconds[index];
        second.latency_us.saturating_record_n(us, messages);
        second.messages += messages;
        second.bytes += bytes;
    }

    /// Adds another recorder's samples (same origin expected).
    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.total_us.add(&other.total_us);
        self.messages += other.messages;
        self.bytes += other.bytes;
        for (i, second) in other.seconds.iter().enumerate() {
            if i < self.seconds.len() {
                let mine = &mut self.seconds[i];
                let _ = mine.latency_us.add(&second.latency_us);
                mine.messages += second.messages;
                mine.bytes += second.bytes;
            } else {
                self.seconds.push(second.clone());
            }
        }
    }

    /// Messages recorded.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Bytes recorded.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The overall latency at percentile `p` (0..=100), ms; 0 without samples.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.total_us.is_empty() {
            return 0.0;
        }
        self.total_us.value_at_percentile(p) as f64 / 1000.0
    }

    /// The overall summary.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            p50_ms: self.percentile_ms(50.0),
            p99_ms: self.percentile_ms(99.0),
            p999_ms: self.percentile_ms(99.9),
            max_ms: if self.total_us.is_empty() {
                0.0
            } else {
                self.total_us.max() as f64 / 1000.0
            },
            samples: self.total_us.len(),
        }
    }

    /// One row per second of the window: `(second, messages, bytes, p50 ms, p99 ms,
    /// max ms)`, a second with nothing completed reading zeros.
    pub fn per_second(&self) -> Vec<SecondRow> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let empty = s.latency_us.is_empty();
                let at = |p: f64| {
                    if empty {
                        0.0
                    } else {
                        s.latency_us.value_at_percentile(p) as f64 / 1000.0
                    }
                };
                SecondRow {
                    second: i as u64,
                    messages: s.messages,
                    bytes: s.bytes,
                    p50_ms: at(50.0),
                    p99_ms: at(99.0),
                    max_ms: if empty {
                        0.0
                    } else {
                        s.latency_us.max() as f64 / 1000.0
                    },
                }
            })
            .collect()
    }

    /// The latency distribution as `(percentile, ms)` points spaced evenly in "nines"
    /// (50, 68, 80, 90, 93.7, 96, 99, …, up to 99.999): what the distribution plot draws.
    pub fn distribution(&self) -> Vec<(f64, f64)> {
        if self.total_us.is_empty() {
            return Vec::new();
        }
        (3..=50)
            .map(|k| {
                let p = 100.0 * (1.0 - 10f64.powf(-f64::from(k) / 10.0));
                (p, self.total_us.value_at_percentile(p) as f64 / 1000.0)
            })
            .collect()
    }
}

/// The overall latency figures of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Samples (messages) behind the figures.
    pub samples: u64,
}

/// One second of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SecondRow {
    /// Seconds since the measured window started.
    pub second: u64,
    /// Messages completed in that second.
    pub messages: u64,
    /// Bytes completed.
    pub bytes: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merges_and_summarises() {
        let origin = Instant::now() + Duration::from_secs(1);
        let mut a = LatencyRecorder::new(origin);
        let mut b = LatencyRecorder::new(origin);
        // Before the origin: warm-up, ignored.
        a.record(
            origin - Duration::from_millis(1),
            Duration::from_millis(500),
            10,
            10,
        );
        for i in 0..100u64 {
            a.record(
                origin + Duration::from_millis(i),
                Duration::from_millis(1),
                1,
                1024,
            );
        }
        b.record(
            origin + Duration::from_millis(2500),
            Duration::from_millis(100),
            1,
            1024,
        );
        a.merge(&b);
        assert_eq!(a.messages(), 101);
        assert_eq!(a.bytes(), 101 * 1024);
        let s = a.summary();
        assert!((s.p50_ms - 1.0).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        let rows = a.per_second();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].messages, rows[1].messages, rows[2].messages),
            (100, 0, 1)
        );
        assert_eq!(rows[1].p99_ms, 0.0);
        let dist = a.distribution();
        assert!(dist.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!(dist.last().unwrap().0 > 99.99);
    }

    #[test]
    fn empty_recorder_reads_zero() {
        let r = LatencyRecorder::new(Instant::now());
        assert_eq!(r.summary(), LatencySummary::default());
        assert!(r.distribution().is_empty());
        assert!(r.per_second().is_empty());
    }
}
