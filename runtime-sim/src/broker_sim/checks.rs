//! The whole-broker checkers (metadata divergence is [`crate::controller_sim`]'s
//! [`crate::controller_sim::MetadataChecker`], fed by every broker's controller):
//!
//! * [`ReadChecks`] — Jepsen's queue check per partition over what clients saw on the
//!   wire: every acknowledged acks=all record is read back exactly once, at the offset
//!   it was acknowledged at, in offset order, by every full read that covers it; no
//!   value is read at two offsets; and two reads never see different records at one
//!   offset (what a consumer sees below the high watermark never changes). The
//!   "committed" map [`crate::checker::check_history`] wants is built from the reads
//!   themselves, since consumers only ever see records below the high watermark.
//! * [`RaftChecks`] — the Raft-level checks that apply to whole brokers, for the
//!   controller group and every partition group: at most one leader per term; a
//!   replica's commit index never goes back within one incarnation.

use std::collections::BTreeMap;

use crate::checker::{check_history, Checker, EntryId, Violation};
use crate::history::{value_digest, History, OpId, OpOutcome, ReadRecord};
use crate::net::NodeId;
use oxbow_core::time::Instant;

/// One partition's client history and what reads saw at each offset.
#[derive(Debug, Default)]
struct PartitionReads {
    history: History,
    seen: BTreeMap<u64, EntryId>,
}

/// The queue checks of every partition of the workload topic.
#[derive(Debug, Default)]
pub struct ReadChecks {
    partitions: BTreeMap<i32, PartitionReads>,
}

impl ReadChecks {
    fn partition(&mut self, partition: i32) -> &mut PartitionReads {
        self.partitions.entry(partition).or_default()
    }

    /// A producer sends `value` to `partition` through broker `node`.
    pub fn begin_write(
        &mut self,
        partition: i32,
        client: u32,
        node: NodeId,
        now: Instant,
        value: u64,
    ) -> OpId {
        let history = &mut self.partition(partition).history;
        let op = history.begin_write(client, now, value);
        history.set_node(op, node);
        op
    }

    /// How a write ended.
    pub fn finish_write(&mut self, partition: i32, op: OpId, now: Instant, outcome: OpOutcome) {
        self.partition(partition).history.finish_write(op, now, outcome);
    }

    /// Records read at offsets (one fetch): two reads must agree on every offset.
    pub fn observe(&mut self, partition: i32, records: &[(u64, u64)]) -> Result<(), Violation> {
        let seen = &mut self.partition(partition).seen;
        for &(offset, value) in records {
            let entry = EntryId {
                term: 0,
                digest: value_digest(value),
                data: true,
            };
            match seen.get(&offset) {
                Some(first) if *first != entry => {
                    return Err(Violation {
                        invariant: "committed-entry-changed",
                        detail: format!(
                            "partition {partition}: consumers read two different records at offset {offset} (now value {value})"
                        ),
                    })
                }
                Some(_) => {}
                None => {
                    seen.insert(offset, entry);
                }
            }
        }
        Ok(())
    }

    /// A full read of `partition` from offset 0 up to `upto_offset`.
    pub fn record_full_read(&mut self, partition: i32, read: ReadRecord) {
        self.partition(partition).history.record_read(read);
    }

    /// The highest acknowledged offset of `partition`.
    pub fn max_acked(&self, partition: i32) -> Option<u64> {
        self.partitions.get(&partition).and_then(|p| {
            p.history
                .ops()
                .iter()
                .filter_map(|op| match op.outcome {
                    OpOutcome::WriteAcked { offset } => Some(offset),
                    _ => None,
                })
                .max()
        })
    }

    /// Writes acknowledged over every partition.
    pub fn acked(&self) -> usize {
        self.partitions.values().map(|p| p.history.acked()).sum()
    }

    /// The queue checks over every partition's history.
    pub fn check(&self) -> Result<(), Violation> {
        for (partition, p) in &self.partitions {
            check_history(&p.history, &p.seen).map_err(|v| Violation {
                invariant: v.invariant,
                detail: format!("partition {partition}: {}", v.detail),
            })?;
        }
        Ok(())
    }
}

/// Election safety and commit-index monotonicity per Raft group (0: the controller).
#[derive(Debug, Default)]
pub struct RaftChecks {
    groups: BTreeMap<u64, Checker>,
}

impl RaftChecks {
    /// `node` (in `incarnation`) reports group `group` at `term`, leading or not, with
    /// `commit_index`.
    pub fn observe(
        &mut self,
        group: u64,
        node: NodeId,
        incarnation: u64,
        (leader, term): (bool, u64),
        commit_index: Option<u64>,
    ) -> Result<(), Violation> {
        let checker = self.groups.entry(group).or_default();
        let named = |v: Violation| Violation {
            invariant: v.invariant,
            detail: format!("raft group {group}: {}", v.detail),
        };
        if leader {
            checker.on_leader(node, term).map_err(named)?;
        }
        if let Some(index) = commit_index {
            checker.on_commit_index(node, incarnation, index).map_err(named)?;
        }
        Ok(())
    }

    /// Terms that had a leader, over every group.
    pub fn leader_terms(&self) -> usize {
        self.groups.values().map(Checker::leader_terms).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_reads_disagreeing_at_an_offset_are_caught() {
        let mut r = ReadChecks::default();
        r.observe(0, &[(1, 10), (2, 11)]).unwrap();
        r.observe(0, &[(2, 11)]).unwrap();
        let v = r.observe(0, &[(2, 12)]).unwrap_err();
        assert_eq!(v.invariant, "committed-entry-changed");
    }

    #[test]
    fn an_acked_write_missing_from_a_full_read_is_caught() {
        let mut r = ReadChecks::default();
        let op = r.begin_write(0, 1, 0, Instant::ZERO, 7);
        r.finish_write(0, op, Instant::ZERO, OpOutcome::WriteAcked { offset: 3 });
        r.observe(0, &[]).unwrap();
        r.record_full_read(
            0,
            ReadRecord {
                client: 2,
                at: Instant::ZERO,
                records: vec![],
                complete: true,
                upto_offset: 5,
            },
        );
        assert_eq!(r.check().unwrap_err().invariant, "queue-lost-ack");
    }

    #[test]
    fn two_leaders_of_one_term_are_caught() {
        let mut c = RaftChecks::default();
        c.observe(5, 0, 0, (true, 2), Some(1)).unwrap();
        assert_eq!(
            c.observe(5, 1, 0, (true, 2), None).unwrap_err().invariant,
            "election-safety"
        );
        assert_eq!(
            c.observe(5, 0, 0, (false, 2), Some(0)).unwrap_err().invariant,
            "commit-index-monotonic"
        );
    }
}
