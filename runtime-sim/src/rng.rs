//! Seeded randomness for one run: a root seed and one named ChaCha stream per subsystem.
//!
//! Every subsystem (network, disk, clock, workload, faults, …) draws from its own stream,
//! derived from the run's seed and the subsystem's *name*, never from a shared generator.
//! Adding a new fault kind therefore adds a new stream and leaves every existing stream —
//! and so every existing decision — exactly as it was.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// 64-bit FNV-1a of `bytes`: a stable, dependency-free hash used for stream names and
/// trace hashes (its value never depends on the platform or the Rust version).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(FNV_OFFSET_BASIS, bytes)
}

/// FNV-1a offset basis, the hash of nothing.
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues an FNV-1a hash `state` over `bytes`.
pub fn fnv1a64_extend(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

/// The random generator of one subsystem. A ChaCha8 stream: fast, and identical on every
/// platform.
pub type SimRng = ChaCha8Rng;

/// The root of a run's randomness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeds {
    seed: u64,
}

impl Seeds {
    /// The seeds of run `seed`.
    pub fn new(seed: u64) -> Self {
        Seeds { seed }
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The stream of the subsystem `name` (e.g. `"network"`, `"disk/2"`). Same seed and
    /// name ⇒ same stream; different names ⇒ independent streams.
    pub fn stream(&self, name: &str) -> SimRng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(fnv1a64(name.as_bytes()));
        rng
    }
}

/// Small helpers over a [`SimRng`] that keep call sites short and platform-independent
/// (only `u64` ranges, never `usize`).
pub trait RngExt {
    /// `true` with probability `p` (clamped to `[0, 1]`; `p <= 0` never draws).
    fn chance(&mut self, p: f64) -> bool;
    /// Uniform in `[lo, hi]` (inclusive); `lo` when `hi <= lo`.
    fn between(&mut self, lo: u64, hi: u64) -> u64;
    /// Uniform index below `len` (`len` must be positive).
    fn index(&mut self, len: usize) -> usize;
}

impl RngExt for SimRng {
    fn chance(&mut self, p: f64) -> bool {
        // Draw nothing for a disabled fault, so turning a fault on or off in a scenario
        // does not shift the rest of its own stream more than necessary.
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.random_bool(p)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        self.random_range(lo..=hi)
    }

    fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "index of an empty range");
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        // Bounded by `len`, which came from a usize.
        usize::try_from(self.random_range(0..len)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn streams_are_stable_and_independent() {
        let seeds = Seeds::new(42);
        let a1: Vec<u64> = (0..4).map(|_| seeds.stream("network").next_u64()).collect();
        let mut n = seeds.stream("network");
        let a2: Vec<u64> = (0..4).map(|_| n.next_u64()).collect();
        assert_eq!(a1[0], a2[0], "same name, same first draw");
        let mut d = seeds.stream("disk");
        assert_ne!(d.next_u64(), a2[0], "different names, different streams");
        let mut other = Seeds::new(43).stream("network");
        assert_ne!(other.next_u64(), a2[0], "different seeds, different streams");
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn helpers_respect_bounds() {
        let mut rng = Seeds::new(1).stream("t");
        for _ in 0..1000 {
            let v = rng.between(5, 9);
            assert!((5..=9).contains(&v));
            assert!(rng.index(3) < 3);
        }
        assert_eq!(rng.between(7, 7), 7);
        assert!(!rng.chance(0.0));
        assert!(rng.chance(1.0));
    }
}
