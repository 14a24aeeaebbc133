//! [`HardStateQueue`]: the shard's Raft hard states on their way to its key-value log,
//! in the order the replicas asked for them — buffered in the log (durable after its
//! next flush) or, while its buffer is full, queued until a flush makes room.
//!
//! A hard state is never dropped: a replica waits for each one to be reported durable
//! (a vote, a term) before it answers, so one lost on the way would stall it for good.
//! The buffer stays full when a flush fails and the retry waits; the queue holds what
//! arrives meanwhile, in order, and moves it into the buffer after the next successful
//! flush.

use std::collections::VecDeque;

use oxbow_core::broker::io::PartitionKey;
use oxbow_core::raft::HardState;

use super::kv::{encode_hard_state, KvError, KvLog};

/// Hard states not yet durable, oldest first.
#[derive(Debug, Default)]
pub(crate) struct HardStateQueue {
    /// In the kv log's buffer: durable after its next flush.
    buffered: Vec<(PartitionKey, HardState)>,
    /// Waiting for room in the buffer (it was full), in arrival order.
    unbuffered: VecDeque<(PartitionKey, HardState)>,
}

impl HardStateQueue {
    /// Adds `hard_state` behind every hard state not yet buffered, then buffers what
    /// fits. `Err`: the log refused one outright (it is dropped; see [`KvError`]).
    pub(crate) fn persist(
        &mut self,
        kv: &mut KvLog,
        key: PartitionKey,
        hard_state: HardState,
    ) -> Result<(), KvError> {
        self.unbuffered.push_back((key, hard_state));
        self.buffer_waiting(kv)
    }

    /// Moves waiting hard states into the kv log's buffer, oldest first, until it is
    /// full. `Err`: the log refused one outright (the last such error); it is dropped
    /// and the rest go on.
    pub(crate) fn buffer_waiting(&mut self, kv: &mut KvLog) -> Result<(), KvError> {
        let mut refused = Ok(());
        while let Some((key, hard_state)) = self.unbuffered.front() {
            let put = kv.put(&key.dir(), &encode_hard_state(hard_state));
            if matches!(put, Ok(Err(_))) {
                break; // full: the next flush makes room
            }
            let Some(front) = self.unbuffered.pop_front() else {
                break;
            };
            match put {
                Ok(_) => self.buffered.push(front),
                Err(error) => refused = Err(error),
            }
        }
        refused
    }

    /// How many hard states wait for room in the buffer.
    pub(crate) fn unbuffered_len(&self) -> usize {
        self.unbuffered.len()
    }

    /// After a successful flush: the buffered hard states, now durable, oldest first.
    pub(crate) fn take_durable(&mut self) -> Vec<(PartitionKey, HardState)> {
        std::mem::take(&mut self.buffered)
    }

    /// Forgets the waiting hard states of a removed partition (its key is deleted
    /// from the log; writing them later would bring it back).
    pub(crate) fn forget(&mut self, key: &PartitionKey) {
        self.unbuffered.retain(|(k, _)| k != key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::shard::kv::{decode_hard_state, KvConfig};

    fn key(partition: i32) -> PartitionKey {
        PartitionKey {
            topic: "t".to_string(),
            partition,
            revision: 1,
        }
    }

    fn hs(term: u64) -> HardState {
        HardState { term, vote: None }
    }

    fn stored(kv: &KvLog, k: &PartitionKey) -> Option<HardState> {
        kv.get(&k.dir()).and_then(|v| decode_hard_state(v.as_ref()))
    }

    /// A log whose buffer holds two hard-state records and not three.
    fn small_log(dir: &std::path::Path) -> KvLog {
        let (mut probe, _) = KvLog::open(dir, 1, KvConfig::default()).unwrap();
        probe
            .put(&key(0).dir(), &encode_hard_state(&hs(1)))
            .unwrap()
            .unwrap();
        probe.flush().unwrap();
        let record_bytes = usize::try_from(probe.file_bytes()).unwrap();
        let config = KvConfig {
            max_pending_bytes: 2 * record_bytes,
            ..KvConfig::default()
        };
        KvLog::open(dir, 0, config).unwrap().0
    }

    #[test]
    fn hard_states_that_find_the_buffer_full_wait_in_order_for_the_next_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = small_log(dir.path());
        let mut q = HardStateQueue::default();
        // The buffer is full after two; the flush that would make room is not possible
        // now (a failed flush waits before its retry).
        q.persist(&mut kv, key(0), hs(1)).unwrap();
        q.persist(&mut kv, key(1), hs(1)).unwrap();
        q.persist(&mut kv, key(0), hs(2)).unwrap();
        q.persist(&mut kv, key(2), hs(1)).unwrap();
        assert_eq!(q.unbuffered_len(), 2, "none is dropped");
        kv.flush().unwrap();
        assert_eq!(q.take_durable(), vec![(key(0), hs(1)), (key(1), hs(1))]);
        q.buffer_waiting(&mut kv).unwrap();
        assert_eq!(q.unbuffered_len(), 0);
        kv.flush().unwrap();
        assert_eq!(q.take_durable(), vec![(key(0), hs(2)), (key(2), hs(1))]);
        assert_eq!(stored(&kv, &key(0)), Some(hs(2)), "the later one last");
        assert_eq!(stored(&kv, &key(2)), Some(hs(1)));
    }

    #[test]
    fn a_removed_partition_s_waiting_hard_states_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = small_log(dir.path());
        let mut q = HardStateQueue::default();
        q.persist(&mut kv, key(0), hs(1)).unwrap();
        q.persist(&mut kv, key(1), hs(1)).unwrap();
        q.persist(&mut kv, key(2), hs(1)).unwrap();
        q.forget(&key(2));
        kv.flush().unwrap();
        q.take_durable();
        q.buffer_waiting(&mut kv).unwrap();
        assert!(!kv.has_pending());
        assert_eq!(stored(&kv, &key(2)), None);
    }
}
