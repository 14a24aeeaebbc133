//! "Sometimes" coverage: counters of interesting things a run reached (elections,
//! truncations, torn tails repaired, partitions, …). A sweep adds them up and prints
//! them, so a sweep that never reaches a state is visible, not silently green.

use std::collections::BTreeMap;
use std::fmt;

/// Counters by name (sorted: printing order is stable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    counts: BTreeMap<&'static str, u64>,
}

/// Names every report lists, even at zero, so a missing one stands out.
pub const EXPECTED: &[&str] = &[
    "client.write.acked",
    "client.write.rejected",
    "client.write.timed_out",
    "client.read",
    "raft.election.won",
    "raft.leader.step_down",
    "raft.truncation",
    "raft.commit",
    "raft.core.pre_votes_started",
    "raft.core.elections_started",
    "raft.core.check_quorum_step_downs",
    "raft.core.transfers_started",
    "raft.core.retransmits",
    "raft.core.messages_dropped",
    "raft.core.snapshots_installed",
    "raft.core.snapshots_sent",
    "raft.snapshot.taken",
    "log.read.from_disk",
    "log.read.from_memory",
    "log.read.corruption_detected",
    "disk.crash.torn_write",
    "disk.crash.unsynced_kept",
    "disk.crash.file_vanished",
    "disk.enospc",
    "disk.bit_flip",
    "recovery.torn_tail_cut",
    "recovery.index_rebuilt",
    "recovery.corruption_detected",
    "fault.crash",
    "fault.pause",
    "fault.partition",
    "fault.one_way",
    "fault.hold",
    "fault.slow_link",
    "fault.slow_disk",
    "fault.clock_jump",
    "fault.churn.step_down",
    "fault.churn.transfer",
    "fault.enospc_window",
    "fault.churn.priority",
    "fault.membership.demote",
    "fault.membership.promote",
    "net.lost",
    "net.duplicated",
    "net.reordered",
    "liveness.reached",
    "tier.upload",
    "tier.manifest_put",
    "tier.spill",
    "tier.store_error",
    "tier.throttled",
    "tier.partial_upload",
    "tier.archiver_crash",
    "tier.crash_between_upload_and_manifest",
    "tier.local_deleted",
    "tier.remote_read",
    "tier.consumer_remote_read",
    "tier.consumer_retry",
    "tier.archive_loaded",
    "tier.orphan_deleted",
    "tier.remote_expired",
    "tier.late_landing",
    "tier.recovered",
    "groups.coordinator.loaded",
    "groups.checkpoint.loaded",
    "groups.checkpoint.committed",
    "groups.coordinator.unloaded",
    "groups.coordinator.crashed",
    "groups.classic.rebalance_done",
    "groups.kip848.revoked",
    "groups.member.fenced",
    "groups.commit.acked",
    "groups.commit.zombie_refused",
    "groups.fetch.served",
    "txn.commit.acked",
    "txn.abort.acked",
    "txn.marker.commit",
    "txn.marker.abort",
    "txn.producer.fenced",
    "txn.producer.zombie",
    "txn.producer.stalled",
    "txn.produce.verification_refused",
    "txn.coordinator.loaded",
    "txn.coordinator.loaded_after_trim",
    "txn.partition.snapshot_installed",
    "txn.v2.commit.acked",
    "txn.v2.abort.acked",
    "txn.v2.transaction_abortable",
    "txn.v2.late_retry.sent",
    "txn.v2.late_retry.refused_by_coordinator",
    "txn.v2.late_retry.refused_by_partition",
    "txn.v1.late_retry.sent",
];

impl Coverage {
    /// Counts one occurrence of `name`.
    pub fn hit(&mut self, name: &'static str) {
        self.add(name, 1);
    }

    /// Counts `n` occurrences of `name`.
    pub fn add(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.counts.entry(name).or_insert(0) += n;
        }
    }

    /// The count of `name`.
    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Adds another run's counters.
    pub fn merge(&mut self, other: &Coverage) {
        for (k, v) in &other.counts {
            *self.counts.entry(k).or_insert(0) += v;
        }
    }

    /// Every counter that was hit.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().map(|(k, v)| (*k, *v))
    }
}

/// Coverage of a sweep: totals and in how many runs each counter was reached.
#[derive(Clone, Debug, Default)]
pub struct SweepCoverage {
    totals: Coverage,
    runs_reaching: BTreeMap<&'static str, u64>,
    runs: u64,
}

impl SweepCoverage {
    /// Adds one run.
    pub fn add_run(&mut self, run: &Coverage) {
        self.totals.merge(run);
        for (k, _) in run.iter() {
            *self.runs_reaching.entry(k).or_insert(0) += 1;
        }
        self.runs += 1;
    }

    /// Runs added.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Totals.
    pub fn totals(&self) -> &Coverage {
        &self.totals
    }

    /// Names in [`EXPECTED`] that no run reached.
    pub fn never_reached(&self) -> Vec<&'static str> {
        EXPECTED
            .iter()
            .copied()
            .filter(|n| self.totals.get(n) == 0)
            .collect()
    }
}

impl fmt::Display for SweepCoverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "coverage over {} runs (total, runs reaching):", self.runs)?;
        let mut names: Vec<&'static str> = EXPECTED.to_vec();
        for (k, _) in self.totals.iter() {
            if !names.contains(&k) {
                names.push(k);
            }
        }
        names.sort_unstable();
        for name in names {
            let total = self.totals.get(name);
            let runs = self.runs_reaching.get(name).copied().unwrap_or(0);
            let mark = if total == 0 { "  <-- never reached" } else { "" };
            writeln!(f, "  {name:<32} {total:>10} {runs:>7}{mark}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_and_report_gaps() {
        let mut a = Coverage::default();
        a.hit("raft.election.won");
        a.add("raft.commit", 5);
        a.add("raft.truncation", 0);
        let mut s = SweepCoverage::default();
        s.add_run(&a);
        s.add_run(&a);
        assert_eq!(s.totals().get("raft.commit"), 10);
        assert!(s.never_reached().contains(&"raft.truncation"));
        let text = s.to_string();
        assert!(text.contains("raft.truncation") && text.contains("never reached"));
    }
}
