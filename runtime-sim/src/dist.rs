//! Latency distributions shared by the simulated network, disk and object store.
//!
//! A [`Latency`] is a uniform body `[min_us, max_us]` plus an optional tail: with
//! probability `tail_prob` the sample is instead uniform in `[max_us, tail_max_us]`. That
//! is enough to express a steady link, a jittery one (reordering), and a gray failure
//! (rare multi-second stalls) without a floating-point distribution whose samples could
//! differ across platforms.

use crate::rng::{RngExt, SimRng};
use serde::Deserialize;
use std::time::Duration;

/// A latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    /// Smallest body sample.
    pub min_us: u64,
    /// Largest body sample.
    pub max_us: u64,
    /// Probability of a tail sample instead.
    pub tail_prob: f64,
    /// Largest tail sample.
    pub tail_max_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::fixed_us(0)
    }
}

impl Latency {
    /// Always `us` microseconds.
    pub const fn fixed_us(us: u64) -> Self {
        Latency {
            min_us: us,
            max_us: us,
            tail_prob: 0.0,
            tail_max_us: us,
        }
    }

    /// Uniform in `[min_us, max_us]`.
    pub const fn uniform_us(min_us: u64, max_us: u64) -> Self {
        Latency {
            min_us,
            max_us,
            tail_prob: 0.0,
            tail_max_us: max_us,
        }
    }

    /// The same body with a tail.
    pub const fn with_tail(mut self, tail_prob: f64, tail_max_us: u64) -> Self {
        self.tail_prob = tail_prob;
        self.tail_max_us = tail_max_us;
        self
    }

    /// Checks the parameters; the message names the bad field.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if self.max_us < self.min_us {
            return Err(format!(
                "{what}: max_us ({}) < min_us ({})",
                self.max_us, self.min_us
            ));
        }
        if !(0.0..=1.0).contains(&self.tail_prob) {
            return Err(format!("{what}: tail_prob {} not in [0, 1]", self.tail_prob));
        }
        if self.tail_prob > 0.0 && self.tail_max_us < self.max_us {
            return Err(format!(
                "{what}: tail_max_us ({}) < max_us ({})",
                self.tail_max_us, self.max_us
            ));
        }
        Ok(())
    }

    /// One sample.
    pub fn sample(&self, rng: &mut SimRng) -> Duration {
        let us = if rng.chance(self.tail_prob) {
            rng.between(self.max_us, self.tail_max_us)
        } else {
            rng.between(self.min_us, self.max_us)
        };
        Duration::from_micros(us)
    }

    /// Every sample multiplied by `factor` (a slow link or a slow disk).
    pub fn scaled(&self, factor: u64) -> Self {
        Latency {
            min_us: self.min_us.saturating_mul(factor),
            max_us: self.max_us.saturating_mul(factor),
            tail_prob: self.tail_prob,
            tail_max_us: self.tail_max_us.saturating_mul(factor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Seeds;

    #[test]
    fn samples_stay_in_range() {
        let mut rng = Seeds::new(3).stream("dist");
        let l = Latency::uniform_us(100, 200).with_tail(0.1, 5_000);
        let mut tails = 0;
        for _ in 0..10_000 {
            let d = l.sample(&mut rng);
            assert!(d >= Duration::from_micros(100) && d <= Duration::from_micros(5_000));
            if d > Duration::from_micros(200) {
                tails += 1;
            }
        }
        assert!((500..1500).contains(&tails), "tails {tails}");
        assert!(Latency::uniform_us(5, 1).validate("x").is_err());
        assert_eq!(l.scaled(10).max_us, 2_000);
    }
}
