//! Simulated processes: each node's own clock (drift and jumps), and its life cycle —
//! up, paused (a GC-like stop), or down (crashed, waiting to restart from its disk).
//!
//! # Clocks
//!
//! Core takes time as an input, and each node is handed *its own* clock:
//! `local = global × (1 + drift_ppm / 10⁶) + offset`. A jump changes `offset`. The clock
//! is monotonic per node, as the monotonic clock core is written against: a backward jump
//! freezes the node's clock until real time catches up, it never runs backwards.
//! [`NodeClock::to_global`] maps a node's deadline back to the global time at which it
//! falls due, so timers fire when the node's own clock says so.
//!
//! # Life cycle
//!
//! Every start of a node is a new *incarnation*. Events carry the incarnation they were
//! meant for; the simulator drops events of a dead incarnation (timers and completions of
//! a crashed process never fire), and defers events reaching a paused node until it
//! resumes, in their original order.

use oxbow_core::time::Instant;
use serde::Deserialize;

/// Parameters of node clocks.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// Largest drift, either way, in parts per million (each node draws its own).
    pub max_drift_ppm: u64,
    /// Largest initial offset of a node's clock.
    pub max_offset_ms: u64,
}

/// One node's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeClock {
    drift_ppm: i64,
    offset_ns: i64,
    last: Instant,
}

const PPM: i128 = 1_000_000;

impl NodeClock {
    /// A clock running `drift_ppm` fast (negative: slow), starting `offset_ns` ahead.
    pub fn new(drift_ppm: i64, offset_ns: i64) -> Self {
        assert!(drift_ppm.abs() < 500_000, "drift beyond ±50% is not a clock");
        NodeClock {
            drift_ppm,
            offset_ns,
            last: Instant::ZERO,
        }
    }

    /// A perfect clock.
    pub fn perfect() -> Self {
        NodeClock::new(0, 0)
    }

    /// The drift.
    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }

    fn raw(&self, global: Instant) -> i128 {
        let g = i128::from(global.as_nanos());
        g + g * i128::from(self.drift_ppm) / PPM + i128::from(self.offset_ns)
    }

    /// The node's time when the global time is `global`. Monotonic: never earlier than
    /// a value it returned before.
    pub fn local(&mut self, global: Instant) -> Instant {
        let raw = self.raw(global).clamp(0, i128::from(u64::MAX));
        let raw = Instant::from_nanos(u64::try_from(raw).unwrap_or(u64::MAX));
        self.last = self.last.max(raw);
        self.last
    }

    /// Jumps the clock by `delta_ns` (negative: back — which freezes it, see module doc).
    pub fn jump(&mut self, delta_ns: i64) {
        self.offset_ns = self.offset_ns.saturating_add(delta_ns);
    }

    /// The earliest global time, not before `now_global`, at which this clock reads at
    /// least `local_deadline`.
    pub fn to_global(&self, now_global: Instant, local_deadline: Instant) -> Instant {
        let target = i128::from(local_deadline.as_nanos()).max(i128::from(self.last.as_nanos()));
        if local_deadline <= self.last {
            return now_global;
        }
        // Invert raw(g) = g·(1+d) + o, rounding up, then fix the rounding of raw() itself.
        let scale = PPM + i128::from(self.drift_ppm);
        let num = (target - i128::from(self.offset_ns)) * PPM;
        let mut g = if num <= 0 { 0 } else { (num + scale - 1) / scale };
        g = g.max(i128::from(now_global.as_nanos()));
        let at = |g: i128| Instant::from_nanos(u64::try_from(g).unwrap_or(u64::MAX));
        while self.raw(at(g)) < target {
            g += 1;
        }
        let floor = i128::from(now_global.as_nanos());
        while g > floor && self.raw(at(g - 1)) >= target {
            g -= 1;
        }
        Instant::from_nanos(u64::try_from(g).unwrap_or(u64::MAX))
    }
}

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Running.
    Up,
    /// Stopped until the given global time; its events wait.
    Paused {
        /// When it resumes.
        until: Instant,
    },
    /// Crashed; its disk keeps what survived.
    Down,
}

/// A node's process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Current incarnation (0 for the first start).
    pub incarnation: u64,
    /// Up, paused or down.
    pub liveness: Liveness,
    /// The node's clock (survives restarts: it is the machine's).
    pub clock: NodeClock,
}

impl Process {
    /// A running process with `clock`.
    pub fn new(clock: NodeClock) -> Self {
        Process {
            incarnation: 0,
            liveness: Liveness::Up,
            clock,
        }
    }

    /// Whether an event for `incarnation` still concerns this process.
    pub fn is_current(&self, incarnation: u64) -> bool {
        self.incarnation == incarnation && self.liveness != Liveness::Down
    }

    /// Crashes it.
    pub fn crash(&mut self) {
        self.liveness = Liveness::Down;
    }

    /// Starts a new incarnation.
    pub fn restart(&mut self) {
        self.incarnation += 1;
        self.liveness = Liveness::Up;
    }

    /// Pauses it until `until` (extending a pause in progress).
    pub fn pause(&mut self, until: Instant) {
        self.liveness = match self.liveness {
            Liveness::Down => Liveness::Down,
            Liveness::Paused { until: u } => Liveness::Paused { until: u.max(until) },
            Liveness::Up => Liveness::Paused { until },
        };
    }

    /// If paused at global time `now`, the time it resumes; lifts a pause that is over.
    pub fn paused_until(&mut self, now: Instant) -> Option<Instant> {
        match self.liveness {
            Liveness::Paused { until } if until > now => Some(until),
            Liveness::Paused { .. } => {
                self.liveness = Liveness::Up;
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_and_offset() {
        let mut fast = NodeClock::new(1_000, 5_000);
        assert_eq!(
            fast.local(Instant::from_millis(1_000)).as_nanos(),
            1_001_000_000 + 5_000
        );
        let mut slow = NodeClock::new(-1_000, 0);
        assert_eq!(slow.local(Instant::from_millis(1_000)).as_nanos(), 999_000_000);
    }

    #[test]
    fn backward_jump_freezes_forward_jump_skips() {
        let mut c = NodeClock::perfect();
        assert_eq!(c.local(Instant::from_millis(100)), Instant::from_millis(100));
        c.jump(-50_000_000);
        assert_eq!(
            c.local(Instant::from_millis(120)),
            Instant::from_millis(100),
            "frozen"
        );
        assert_eq!(c.local(Instant::from_millis(160)), Instant::from_millis(110));
        c.jump(1_000_000_000);
        assert_eq!(c.local(Instant::from_millis(160)), Instant::from_millis(1_110));
    }

    #[test]
    fn to_global_is_the_earliest_time_the_deadline_holds() {
        for (drift, offset) in [(0, 0), (300, 7), (-300, 1_000_000), (123_456, -5)] {
            let mut c = NodeClock::new(drift, offset);
            let now = Instant::from_millis(10);
            let local_now = c.local(now);
            let deadline = local_now + std::time::Duration::from_millis(150);
            let g = c.to_global(now, deadline);
            let mut probe = c.clone();
            assert!(probe.local(g) >= deadline, "drift {drift}");
            let mut before = c.clone();
            assert!(before.local(Instant::from_nanos(g.as_nanos() - 1)) < deadline);
            assert_eq!(c.to_global(now, Instant::ZERO), now, "past deadline fires now");
        }
    }

    #[test]
    fn life_cycle() {
        let mut p = Process::new(NodeClock::perfect());
        assert!(p.is_current(0));
        p.pause(Instant::from_millis(10));
        assert_eq!(
            p.paused_until(Instant::from_millis(5)),
            Some(Instant::from_millis(10))
        );
        assert_eq!(p.paused_until(Instant::from_millis(10)), None);
        assert_eq!(p.liveness, Liveness::Up);
        p.crash();
        assert!(!p.is_current(0));
        p.restart();
        assert!(p.is_current(1) && !p.is_current(0));
    }
}
