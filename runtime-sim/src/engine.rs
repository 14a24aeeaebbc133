//! The discrete-event core: one virtual clock and one queue of pending events ordered by
//! `(time, sequence)`.
//!
//! The sequence number is assigned at scheduling, so two events due at the same instant
//! fire in the order they were scheduled — never in an order that depends on a heap's
//! internals. The clock only moves forward, to the time of the event being popped. The
//! queue is bounded: scheduling past [`EventQueue::capacity`] is an error, not growth.

use oxbow_core::time::Instant;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Scheduling failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The event queue already holds `capacity` events.
    #[error("event queue full ({capacity} events): a runaway feedback loop?")]
    QueueFull {
        /// The bound.
        capacity: usize,
    },
}

/// A heap entry: small and `Copy`, so sifting is cheap; the event itself waits in a slab.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Scheduled {
    at: Instant,
    seq: u64,
    slot: usize,
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest (time, seq) is on top.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The event queue and the virtual clock.
pub struct EventQueue<E> {
    now: Instant,
    next_seq: u64,
    heap: BinaryHeap<Scheduled>,
    slab: Vec<Option<E>>,
    free: Vec<usize>,
    capacity: usize,
    popped: u64,
}

impl<E> std::fmt::Debug for EventQueue<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventQueue")
            .field("now", &self.now)
            .field("pending", &self.heap.len())
            .field("popped", &self.popped)
            .finish()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            now: Instant::ZERO,
            next_seq: 0,
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            capacity,
            popped: 0,
        }
    }

    /// The virtual time: the time of the last event popped.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The bound on pending events.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events popped so far.
    pub fn popped(&self) -> u64 {
        self.popped
    }

    /// Schedules `event` at `at`; a time in the past is clamped to now (the clock never
    /// goes back).
    pub fn schedule_at(&mut self, at: Instant, event: E) -> Result<(), EngineError> {
        if self.heap.len() >= self.capacity {
            return Err(EngineError::QueueFull {
                capacity: self.capacity,
            });
        }
        let at = at.max(self.now);
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot] = Some(event);
                slot
            }
            None => {
                self.slab.push(Some(event));
                self.slab.len() - 1
            }
        };
        self.heap.push(Scheduled { at, seq, slot });
        Ok(())
    }

    /// Schedules `event` after `delay` from now.
    pub fn schedule_in(&mut self, delay: Duration, event: E) -> Result<(), EngineError> {
        self.schedule_at(self.now + delay, event)
    }

    /// Time of the next event, if any.
    pub fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|s| s.at)
    }

    /// Pops the next event and advances the clock to its time.
    pub fn pop(&mut self) -> Option<(Instant, E)> {
        loop {
            let s = self.heap.pop()?;
            let Some(event) = self.slab.get_mut(s.slot).and_then(Option::take) else {
                continue; // removed by `retain`
            };
            self.free.push(s.slot);
            debug_assert!(s.at >= self.now, "clock went back");
            self.now = s.at;
            self.popped += 1;
            return Some((s.at, event));
        }
    }

    /// Drops every pending event for which `keep` is false (e.g. a crashed node's timers).
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        let slab = &mut self.slab;
        let free = &mut self.free;
        self.heap.retain(|s| {
            let kept = slab[s.slot].as_ref().is_some_and(&mut keep);
            if !kept {
                slab[s.slot] = None;
                free.push(s.slot);
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_schedule_order() {
        let mut q = EventQueue::new(16);
        q.schedule_at(Instant::from_millis(5), "c").unwrap();
        q.schedule_at(Instant::from_millis(1), "a").unwrap();
        q.schedule_at(Instant::from_millis(5), "d").unwrap();
        q.schedule_at(Instant::from_millis(1), "b").unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!["a", "b", "c", "d"]);
        assert_eq!(q.now(), Instant::from_millis(5));
    }

    #[test]
    fn past_is_clamped_and_capacity_enforced() {
        let mut q = EventQueue::new(2);
        q.schedule_at(Instant::from_millis(10), 1).unwrap();
        q.pop();
        q.schedule_at(Instant::from_millis(3), 2).unwrap();
        assert_eq!(q.peek_time(), Some(Instant::from_millis(10)));
        q.schedule_in(Duration::from_millis(1), 3).unwrap();
        assert_eq!(
            q.schedule_in(Duration::ZERO, 4),
            Err(EngineError::QueueFull { capacity: 2 })
        );
        q.retain(|e| *e != 2);
        assert_eq!(q.pop(), Some((Instant::from_millis(11), 3)));
    }
}
