//! The real runtime's clocks, converted into what core takes as input: a monotonic
//! [`Instant`] (nanoseconds since the process started) and wall-clock milliseconds
//! since the Unix epoch (for retention by record timestamps).

use oxbow_core::time::Instant;

/// A monotonic clock whose origin is its creation.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

impl MonotonicClock {
    /// A clock starting now.
    pub fn start() -> Self {
        MonotonicClock {
            origin: std::time::Instant::now(),
        }
    }

    /// Now, as core's instant.
    pub fn now(&self) -> Instant {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Instant::from_nanos(nanos)
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
