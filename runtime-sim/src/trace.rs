//! The event trace of one run and its running hash.
//!
//! Every decision the simulator makes that can change what happens next is recorded as
//! one line (`time node what`). The hash of all lines is the run's fingerprint: the same
//! seed on the same code must give the same hash, byte for byte, and
//! [`crate::run::check_determinism`] re-runs a seed to prove it. Lines are kept in full
//! only when asked (`--trace`, `replay`); otherwise only a bounded tail is kept, for the
//! failure report.

use crate::rng::{fnv1a64_extend, FNV_OFFSET_BASIS};
use oxbow_core::time::Instant;
use std::collections::VecDeque;
use std::fmt::{self, Write as _};

/// How many trailing lines a trace keeps when not keeping everything.
pub const TAIL_LINES: usize = 64;
/// Upper bound on lines kept in full mode; past it the trace keeps hashing but stops
/// storing (and says so), so a runaway run cannot exhaust memory.
pub const MAX_FULL_LINES: usize = 2_000_000;

/// A run's trace: a running hash plus the lines asked for.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    line_count: u64,
    keep_all: bool,
    lines: Vec<String>,
    truncated: bool,
    tail: VecDeque<String>,
    scratch: String,
}

impl Trace {
    /// A trace that keeps every line when `keep_all`, otherwise only the last
    /// [`TAIL_LINES`].
    pub fn new(keep_all: bool) -> Self {
        Trace {
            hash: FNV_OFFSET_BASIS,
            line_count: 0,
            keep_all,
            lines: Vec::new(),
            truncated: false,
            tail: VecDeque::with_capacity(TAIL_LINES),
            scratch: String::with_capacity(128),
        }
    }

    /// Records one event at simulated time `now`, attributed to `node` (`None` for the
    /// simulator itself).
    pub fn record(&mut self, now: Instant, node: Option<u32>, what: fmt::Arguments<'_>) {
        self.scratch.clear();
        let _ = write!(self.scratch, "{now} ");
        match node {
            Some(n) => {
                let _ = write!(self.scratch, "n{n} ");
            }
            None => self.scratch.push_str("sim "),
        }
        let _ = self.scratch.write_fmt(what);
        self.hash = fnv1a64_extend(self.hash, self.scratch.as_bytes());
        self.hash = fnv1a64_extend(self.hash, b"\n");
        self.line_count += 1;
        if self.keep_all {
            if self.lines.len() < MAX_FULL_LINES {
                self.lines.push(self.scratch.clone());
            } else {
                self.truncated = true;
            }
        } else {
            // Reuse the oldest line's buffer: no allocation per event once warm.
            let mut line = if self.tail.len() == TAIL_LINES {
                self.tail.pop_front().unwrap_or_default()
            } else {
                String::with_capacity(128)
            };
            line.clear();
            line.push_str(&self.scratch);
            self.tail.push_back(line);
        }
    }

    /// The running hash of every line so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Number of lines recorded.
    pub fn line_count(&self) -> u64 {
        self.line_count
    }

    /// Every line (full mode), or the tail.
    pub fn lines(&self) -> Vec<String> {
        if self.keep_all {
            self.lines.clone()
        } else {
            self.tail.iter().cloned().collect()
        }
    }

    /// Whether full mode hit [`MAX_FULL_LINES`] and stopped storing.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

/// Records a trace line: `trace!(trace, now, Some(node), "fmt", args..)`.
#[macro_export]
macro_rules! trace_event {
    ($trace:expr, $now:expr, $node:expr, $($arg:tt)*) => {
        $trace.record($now, $node, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_line_and_order() {
        let mut a = Trace::new(false);
        let mut b = Trace::new(true);
        trace_event!(a, Instant::from_millis(1), Some(0), "x {}", 1);
        trace_event!(b, Instant::from_millis(1), Some(0), "x {}", 1);
        assert_eq!(a.hash(), b.hash());
        trace_event!(a, Instant::from_millis(2), None, "y");
        trace_event!(b, Instant::from_millis(2), None, "z");
        assert_ne!(a.hash(), b.hash());
        assert_eq!(b.lines(), vec!["0.001000000s n0 x 1", "0.002000000s sim z"]);
    }

    #[test]
    fn tail_is_bounded() {
        let mut t = Trace::new(false);
        for i in 0..(TAIL_LINES as u64 + 10) {
            trace_event!(t, Instant::from_nanos(i), None, "{i}");
        }
        assert_eq!(t.lines().len(), TAIL_LINES);
        assert_eq!(t.line_count(), TAIL_LINES as u64 + 10);
    }
}
