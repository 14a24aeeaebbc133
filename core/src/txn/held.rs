//! [`HeldRequests`]: coordinator requests that wait for their transactional id to
//! settle instead of being answered CONCURRENT_TRANSACTIONS.
//!
//! EndTxn is answered once its Prepare* decision is durable (as Kafka does); the
//! markers and the Complete* record follow. A producer's next request for the id
//! (its next transaction's AddPartitionsToTxn, a retried EndTxn, an InitProducerId)
//! arrives while they are still being written. Answering CONCURRENT_TRANSACTIONS would
//! send the client into its retry back-off (100 ms per transaction with librdkafka's
//! defaults), so the coordinator holds the request here, in arrival order per id, and
//! serves it as soon as the id has no append in flight and no decision being marked.
//!
//! Bounded: a request waits at most `hold_ms` and at most [`MAX_HELD_PER_ID`] wait per
//! id; past either it gets the old answer, CONCURRENT_TRANSACTIONS (the client
//! retries, as before). Deterministic: ids in a `BTreeMap`, time an input.

use super::coordinator::{TxnOp, TxnReplyId};
use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};

/// Most requests held per transactional id (a producer has one coordinator request
/// outstanding at a time; the rest are retries of timed-out ones).
pub const MAX_HELD_PER_ID: usize = 8;

/// One held request.
#[derive(Clone, Debug)]
pub struct Held {
    /// Whom to answer.
    pub reply: TxnReplyId,
    /// The request, to serve again.
    pub op: TxnOp,
    /// When it gets CONCURRENT_TRANSACTIONS if still held.
    pub deadline: Instant,
}

/// Held requests by transactional id.
#[derive(Clone, Debug, Default)]
pub struct HeldRequests {
    by_id: BTreeMap<String, VecDeque<Held>>,
}

impl HeldRequests {
    /// Holds `held` behind the others of `id`; gives it back if `id` has
    /// [`MAX_HELD_PER_ID`] already.
    pub fn hold(&mut self, id: &str, held: Held) -> Result<(), Held> {
        let queue = self.by_id.entry(id.to_string()).or_default();
        if queue.len() >= MAX_HELD_PER_ID {
            return Err(held);
        }
        queue.push_back(held);
        Ok(())
    }

    /// Whether requests of `id` are waiting (a new one must queue behind them).
    pub fn has(&self, id: &str) -> bool {
        self.by_id.get(id).is_some_and(|q| !q.is_empty())
    }

    /// The oldest held request of the first id (in id order) that `ready` accepts.
    pub fn pop_ready(&mut self, ready: impl Fn(&str) -> bool) -> Option<Held> {
        let id = self.by_id.keys().find(|id| ready(id))?.clone();
        let queue = self.by_id.get_mut(&id)?;
        let held = queue.pop_front();
        if queue.is_empty() {
            self.by_id.remove(&id);
        }
        held
    }

    /// Removes the requests whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<TxnReplyId> {
        let mut expired = Vec::new();
        for queue in self.by_id.values_mut() {
            queue.retain(|h| {
                let keep = h.deadline > now;
                if !keep {
                    expired.push(h.reply);
                }
                keep
            });
        }
        self.by_id.retain(|_, q| !q.is_empty());
        expired
    }

    /// Removes every held request.
    pub fn take_all(&mut self) -> Vec<TxnReplyId> {
        std::mem::take(&mut self.by_id)
            .into_values()
            .flatten()
            .map(|h| h.reply)
            .collect()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_id.values().flatten().map(|h| h.deadline).min()
    }

    /// Requests held.
    pub fn len(&self) -> usize {
        self.by_id.values().map(VecDeque::len).sum()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn held(reply: u64, at_ms: u64) -> Held {
        Held {
            reply,
            op: TxnOp::Describe {
                transactional_ids: Vec::new(),
            },
            deadline: Instant::ZERO + Duration::from_millis(at_ms),
        }
    }

    #[test]
    fn requests_leave_in_arrival_order_per_id_and_only_when_ready() {
        let mut h = HeldRequests::default();
        h.hold("b", held(1, 10)).unwrap();
        h.hold("a", held(2, 10)).unwrap();
        h.hold("b", held(3, 10)).unwrap();
        assert!(h.has("b") && h.has("a") && !h.has("c"));
        assert_eq!(h.pop_ready(|id| id == "b").map(|h| h.reply), Some(1));
        assert_eq!(h.pop_ready(|id| id == "b").map(|h| h.reply), Some(3));
        assert!(h.pop_ready(|id| id == "b").is_none());
        assert_eq!(h.len(), 1);
        assert_eq!(h.take_all(), vec![2]);
        assert!(h.is_empty());
    }

    #[test]
    fn the_bound_per_id_and_the_deadline_are_kept() {
        let mut h = HeldRequests::default();
        for i in 0..MAX_HELD_PER_ID as u64 {
            h.hold("a", held(i, 5 + i)).unwrap();
        }
        assert!(h.hold("a", held(99, 1)).is_err());
        assert!(h.hold("b", held(100, 1)).is_ok());
        assert_eq!(h.next_deadline(), Some(Instant::ZERO + Duration::from_millis(1)));
        let expired = h.take_expired(Instant::ZERO + Duration::from_millis(6));
        assert_eq!(expired, vec![0, 1, 100]);
        assert_eq!(h.len(), MAX_HELD_PER_ID - 2);
    }
}
