//! [`LatencyHistogram`]: durations counted in fixed buckets, the shape a Prometheus
//! histogram exposes (`_bucket{le=…}`, `_sum`, `_count`), small and `Copy` so shard
//! counters can carry it. The executor records each segment `fdatasync` in one (from
//! submission to completion, queueing on the ring included: what the log waits for).

use std::time::Duration;

/// Upper bounds of the finite buckets, microseconds; one more bucket counts the rest.
pub const BUCKET_BOUNDS_US: [u64; 27] = [
    50, 100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 7_500, 10_000, 15_000,
    20_000, 30_000, 50_000, 75_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
];

/// Durations by bucket (not cumulative), with their count and sum.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LatencyHistogram {
    /// Counts per bucket: `counts[i]` holds durations ≤ `BUCKET_BOUNDS_US[i]` and above
    /// the bound before; the last holds those above every bound.
    pub counts: [u64; BUCKET_BOUNDS_US.len() + 1],
    /// Sum of the durations, nanoseconds.
    pub sum_ns: u64,
}

impl LatencyHistogram {
    /// Counts one duration.
    pub fn record(&mut self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_US.partition_point(|bound| *bound < micros);
        self.counts[bucket] += 1;
        self.sum_ns = self
            .sum_ns
            .saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (count, more) in self.counts.iter_mut().zip(other.counts) {
            *count += more;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_bucket_whose_bound_is_the_first_at_or_above_them() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(51));
        h.record(Duration::from_micros(1_000));
        h.record(Duration::from_secs(60));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[8], 1);
        assert_eq!(h.counts[BUCKET_BOUNDS_US.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_ns, 60_001_101_000);
        let mut total = LatencyHistogram::default();
        total.merge(&h);
        total.merge(&h);
        assert_eq!(total.count(), 8);
        assert_eq!(total.counts[8], 2);
        assert_eq!(total.sum_ns, 2 * h.sum_ns);
    }
}
