//! Safety checkers: what must hold in every run, whatever the faults.
//!
//! The cluster driver feeds observations as they happen; each check reports a
//! [`Violation`] naming the invariant, the node and the index, so a failing seed says
//! *what* broke. Checks:
//!
//! * **election safety** — at most one leader per term ([`Checker::on_leader`]);
//! * **committed entries are immutable** — once an index is committed with (term, data),
//!   no node ever reports a different committed entry there, across crashes too
//!   ([`Checker::on_committed`]), and the log a live majority converges on still holds
//!   every committed entry at the end ([`Checker::check_final_logs`]);
//! * **commit index never goes back** within one incarnation of a node
//!   ([`Checker::on_commit_index`]);
//! * **log matching** — two logs with the same term at an index agree on every entry up
//!   to it ([`check_log_matching`]);
//! * **queue semantics** (Jepsen's queue check) over the client history — every
//!   acknowledged write is read back exactly once, at the offset it was acknowledged at,
//!   in offset order, and nothing read was uncommitted ([`check_history`]).

use crate::history::{History, OpOutcome};
use crate::net::NodeId;
use std::collections::BTreeMap;
use std::fmt;

/// Names of every invariant the simulator checks (what [`Violation::invariant`] holds).
pub const INVARIANTS: &[&str] = &[
    "election-safety",
    "committed-entry-changed",
    "committed-entry-lost",
    "commit-index-monotonic",
    "commit-beyond-log",
    "log-matching",
    "queue-ack-unique",
    "queue-order",
    "queue-read-once",
    "queue-garbage",
    "read-uncommitted",
    "queue-ack-offset",
    "queue-lost-ack",
    "liveness",
    "storage-contract",
    "replica-contract",
    "replica-init",
    "simulator-bound",
    "tier-manifest-names-missing-object",
    "tier-acked-record-unreadable",
    "tier-liveness",
    "tier-orphans-collected",
    "metadata-diverged",
    "rpc-frame",
    "core-assertion",
    "groups-acked-commit-lost",
    "groups-fenced-commit-acked",
    "groups-partition-two-owners",
    "groups-clients-share-partition",
    "groups-rebuild-differs",
    "groups-load",
    "txn-aborted-read",
    "txn-partial-read",
    "txn-zombie-write",
    "txn-lso-regressed",
    "txn-read-past-lso",
    "txn-acked-commit-unreadable",
    "txn-duplicate-write",
    "txn-acked-write-lost",
    "txn-load",
    "txn-read",
    "kafka-response",
];

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (stable short name, e.g. `election-safety`).
    pub invariant: &'static str,
    /// What exactly was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// Keeps `v` as the run's violation unless its invariant is switched off in the
/// scenario (then counted as `check.suppressed`) or an earlier one is already kept.
/// Returns the violation when it was kept now, for the caller's trace.
pub fn record_violation<'a>(
    first: &'a mut Option<Violation>,
    disabled: &[String],
    coverage: &mut crate::coverage::Coverage,
    v: Violation,
) -> Option<&'a Violation> {
    if disabled.iter().any(|d| d == v.invariant) {
        coverage.hit("check.suppressed");
        return None;
    }
    if first.is_some() {
        return None;
    }
    Some(first.insert(v))
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// An entry as the checkers see it: its term and a digest of its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Term the entry was proposed in.
    pub term: u64,
    /// Digest of the entry's bytes.
    pub digest: u64,
    /// Whether it is client data (not a no-op or configuration entry).
    pub data: bool,
}

/// The online checkers' state.
#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<u64, NodeId>,
    committed: BTreeMap<u64, EntryId>,
    commit_index: BTreeMap<(NodeId, u64), u64>,
}

impl Checker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` is leader of `term`.
    pub fn on_leader(&mut self, node: NodeId, term: u64) -> Result<(), Violation> {
        match self.leaders.get(&term) {
            Some(&other) if other != node => Err(violation(
                "election-safety",
                format!("nodes {other} and {node} both leader of term {term}"),
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, node);
                Ok(())
            }
        }
    }

    /// `node` reports `entry` committed at `index`.
    pub fn on_committed(&mut self, node: NodeId, index: u64, entry: EntryId) -> Result<(), Violation> {
        match self.committed.get(&index) {
            Some(&first) if first != entry => Err(violation(
                "committed-entry-changed",
                format!(
                    "index {index} was committed as term {} digest {:016x}; node {node} now commits term {} digest {:016x}",
                    first.term, first.digest, entry.term, entry.digest
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.committed.insert(index, entry);
                Ok(())
            }
        }
    }

    /// `node` (in `incarnation`) has commit index `index`.
    pub fn on_commit_index(&mut self, node: NodeId, incarnation: u64, index: u64) -> Result<(), Violation> {
        let seen = self.commit_index.entry((node, incarnation)).or_insert(0);
        if index < *seen {
            return Err(violation(
                "commit-index-monotonic",
                format!("node {node} (incarnation {incarnation}) commit index went from {seen} to {index}"),
            ));
        }
        *seen = index;
        Ok(())
    }

    /// Every entry committed so far, by index.
    pub fn committed(&self) -> &BTreeMap<u64, EntryId> {
        &self.committed
    }

    /// Terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }

    /// At the end: the log of `node` (which leads a healthy cluster, or has caught up)
    /// must hold every entry ever committed up to its own commit index.
    pub fn check_final_logs(
        &self,
        node: NodeId,
        log: &BTreeMap<u64, EntryId>,
        commit_index: u64,
    ) -> Result<(), Violation> {
        for (&index, &entry) in self.committed.range(..=commit_index) {
            match log.get(&index) {
                Some(&e) if e == entry => {}
                Some(&e) => {
                    return Err(violation(
                        "committed-entry-changed",
                        format!(
                            "node {node} holds term {} at committed index {index} (committed term {})",
                            e.term, entry.term
                        ),
                    ))
                }
                None => {
                    return Err(violation(
                        "committed-entry-lost",
                        format!("node {node} (commit index {commit_index}) lacks committed index {index}"),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Log matching over the in-memory logs of all nodes: if two logs hold an entry of the
/// same term at an index, they are identical up to it.
pub fn check_log_matching(logs: &[(NodeId, BTreeMap<u64, EntryId>)]) -> Result<(), Violation> {
    for (i, (a, la)) in logs.iter().enumerate() {
        for (b, lb) in &logs[i + 1..] {
            // The highest index where both hold the same term.
            let top = la
                .iter()
                .rev()
                .find(|(idx, e)| lb.get(idx).is_some_and(|f| f.term == e.term))
                .map(|(&idx, _)| idx);
            let Some(top) = top else { continue };
            for (idx, ea) in la.range(..=top) {
                if let Some(eb) = lb.get(idx) {
                    if ea != eb {
                        return Err(violation(
                            "log-matching",
                            format!(
                                "nodes {a} and {b} agree on term at index {top} but differ at {idx}: {ea:?} vs {eb:?}"
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Jepsen-style queue checks over the client history, given the final committed map.
///
/// Linear in the size of each read (plus sorting the acknowledgements once): reads are
/// checked against the committed map and the acknowledgements by merging sorted lists,
/// so long runs with many full reads stay cheap.
pub fn check_history(history: &History, committed: &BTreeMap<u64, EntryId>) -> Result<(), Violation> {
    // Values are the workload's own counters: small and dense, so index by value.
    let max_value = history.ops().iter().map(|op| op.value).max().unwrap_or(0);
    let slots = usize::try_from(max_value).unwrap_or(usize::MAX).saturating_add(1);
    let mut written = vec![false; slots];
    let mut acked_at: Vec<Option<u64>> = vec![None; slots];
    let mut acked: Vec<(u64, u64)> = Vec::new(); // (offset, value)
    for op in history.ops() {
        let v = usize::try_from(op.value).unwrap_or(usize::MAX);
        written[v] = true;
        if let OpOutcome::WriteAcked { offset } = op.outcome {
            if let Some(prev) = acked_at[v] {
                return Err(violation(
                    "queue-ack-unique",
                    format!(
                        "value {} acknowledged twice (offsets {prev} and {offset})",
                        op.value
                    ),
                ));
            }
            acked_at[v] = Some(offset);
            acked.push((offset, op.value));
        }
    }
    acked.sort_unstable();
    for w in acked.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(violation(
                "queue-ack-unique",
                format!(
                    "values {} and {} both acknowledged at offset {}",
                    w[0].1, w[1].1, w[0].0
                ),
            ));
        }
    }
    // A value committed at two offsets would be read twice by a full read.
    let mut digests: Vec<(u64, u64)> = committed
        .iter()
        .filter(|(_, e)| e.data)
        .map(|(&o, e)| (e.digest, o))
        .collect();
    digests.sort_unstable();
    for w in digests.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(violation(
                "queue-read-once",
                format!("the same value is committed at offsets {} and {}", w[0].1, w[1].1),
            ));
        }
    }
    // Offsets are dense from 0: index the committed digests by offset.
    let top = committed
        .keys()
        .next_back()
        .map_or(0, |&o| usize::try_from(o).unwrap_or(0) + 1);
    let mut committed_digest: Vec<Option<u64>> = vec![None; top];
    for (&o, e) in committed {
        if let Some(slot) = usize::try_from(o).ok().and_then(|o| committed_digest.get_mut(o)) {
            *slot = Some(e.digest);
        }
    }
    for read in history.reads() {
        let mut last: Option<u64> = None;
        for &(offset, value) in &read.records {
            if last.is_some_and(|l| offset <= l) {
                return Err(violation(
                    "queue-order",
                    format!(
                        "read by client {} at {}: offset {offset} after {last:?}",
                        read.client, read.at
                    ),
                ));
            }
            last = Some(offset);
            let v = usize::try_from(value).unwrap_or(usize::MAX);
            if !written.get(v).copied().unwrap_or(false) {
                return Err(violation(
                    "queue-garbage",
                    format!("value {value} at offset {offset} was never written"),
                ));
            }
            let at = usize::try_from(offset)
                .ok()
                .and_then(|o| committed_digest.get(o).copied().flatten());
            if at != Some(crate::history::value_digest(value)) {
                return Err(violation(
                    "read-uncommitted",
                    format!(
                        "client {} read value {value} at offset {offset}, not what was committed there",
                        read.client
                    ),
                ));
            }
            if let Some(o) = acked_at[v] {
                if o != offset {
                    return Err(violation(
                        "queue-ack-offset",
                        format!("value {value} acknowledged at offset {o} but read at {offset}"),
                    ));
                }
            }
        }
        if read.complete {
            // A full read from the start: every value acknowledged at or below its end is
            // there, at its offset. Both lists are sorted by offset: merge them.
            let mut records = read.records.iter().peekable();
            for &(o, v) in acked.iter().take_while(|(o, _)| *o <= read.upto_offset) {
                while records.peek().is_some_and(|(ro, _)| *ro < o) {
                    records.next();
                }
                if records.peek().is_none_or(|&&(ro, rv)| ro != o || rv != v) {
                    return Err(violation(
                        "queue-lost-ack",
                        format!(
                            "value {v} acknowledged at offset {o} missing from a full read up to {}",
                            read.upto_offset
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{value_digest, ReadRecord};
    use oxbow_core::time::Instant;

    fn e(term: u64, digest: u64) -> EntryId {
        EntryId {
            term,
            digest,
            data: true,
        }
    }

    #[test]
    fn election_safety() {
        let mut c = Checker::new();
        c.on_leader(1, 3).unwrap();
        c.on_leader(1, 3).unwrap();
        c.on_leader(2, 4).unwrap();
        assert_eq!(c.on_leader(2, 3).unwrap_err().invariant, "election-safety");
    }

    #[test]
    fn committed_entries_and_commit_index() {
        let mut c = Checker::new();
        c.on_committed(0, 1, e(1, 10)).unwrap();
        c.on_committed(1, 1, e(1, 10)).unwrap();
        assert_eq!(
            c.on_committed(2, 1, e(2, 11)).unwrap_err().invariant,
            "committed-entry-changed"
        );
        c.on_commit_index(0, 0, 5).unwrap();
        c.on_commit_index(0, 1, 0).unwrap(); // a restart may start from zero
        assert_eq!(
            c.on_commit_index(0, 0, 4).unwrap_err().invariant,
            "commit-index-monotonic"
        );
        let log: BTreeMap<u64, EntryId> = [(1, e(1, 10))].into();
        c.check_final_logs(0, &log, 1).unwrap();
        assert_eq!(
            c.check_final_logs(0, &BTreeMap::new(), 1).unwrap_err().invariant,
            "committed-entry-lost"
        );
    }

    #[test]
    fn log_matching() {
        let a: BTreeMap<u64, EntryId> = [(1, e(1, 1)), (2, e(1, 2)), (3, e(2, 3))].into();
        let mut b = a.clone();
        b.insert(4, e(3, 9));
        check_log_matching(&[(0, a.clone()), (1, b.clone())]).unwrap();
        b.insert(2, e(1, 99));
        assert_eq!(
            check_log_matching(&[(0, a), (1, b)]).unwrap_err().invariant,
            "log-matching"
        );
    }

    fn history_with(read: Vec<(u64, u64)>, complete: bool) -> (History, BTreeMap<u64, EntryId>) {
        let mut h = History::default();
        let w1 = h.begin_write(0, Instant::ZERO, 100);
        h.finish_write(w1, Instant::ZERO, OpOutcome::WriteAcked { offset: 1 });
        let w2 = h.begin_write(0, Instant::ZERO, 101);
        h.finish_write(w2, Instant::ZERO, OpOutcome::WriteAcked { offset: 2 });
        h.record_read(ReadRecord {
            client: 0,
            at: Instant::ZERO,
            records: read,
            complete,
            upto_offset: 2,
        });
        let committed = [(1, e(1, value_digest(100))), (2, e(1, value_digest(101)))].into();
        (h, committed)
    }

    #[test]
    fn queue_checks() {
        let (h, c) = history_with(vec![(1, 100), (2, 101)], true);
        check_history(&h, &c).unwrap();
        let (h, c) = history_with(vec![(1, 100)], true);
        assert_eq!(check_history(&h, &c).unwrap_err().invariant, "queue-lost-ack");
        let (h, c) = history_with(vec![(2, 101), (1, 100)], false);
        assert_eq!(check_history(&h, &c).unwrap_err().invariant, "queue-order");
        let (h, c) = history_with(vec![(1, 101)], false);
        assert_eq!(check_history(&h, &c).unwrap_err().invariant, "read-uncommitted");
        let (h, mut c) = history_with(vec![(1, 100), (3, 100)], false);
        c.insert(3, e(1, value_digest(100)));
        assert_eq!(check_history(&h, &c).unwrap_err().invariant, "queue-read-once");
    }
}
