//! Scenarios: named, reviewed fault settings read from `scenarios/*.toml`, and swarm
//! testing — each seed choosing which of a scenario's faults are on, and how hard.
//!
//! Every field has a default (see [`Scenario::default`]), so a scenario file names only
//! what it changes. Unknown keys are errors that name the key. With `swarm = true` the
//! scenario's fault weights and network/disk rates are *upper bounds*: each seed keeps
//! each fault kind with probability 1/2 (at least one) and draws each rate in
//! `[0, bound]` ([`Scenario::swarm`]).

use crate::disk::DiskConfig;
use crate::dist::Latency;
use crate::model_raft::PlantedBugs;
use crate::net::LinkConfig;
use crate::process::ClockConfig;
use crate::rng::{RngExt, SimRng};
use serde::Deserialize;
use std::path::Path;

/// A scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The TOML does not parse or names an unknown key.
    #[error("scenario {origin}: {message}")]
    Parse {
        /// File or name.
        origin: String,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range.
    #[error("scenario {origin}: {message}")]
    Invalid {
        /// File or name.
        origin: String,
        /// What is wrong, naming the option.
        message: String,
    },
}

/// Fault injection during the safety phase. Weights are relative: at each nemesis tick
/// one fault kind is drawn in proportion to its weight (0 = never).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Shortest time between two nemesis ticks.
    pub interval_min_ms: u64,
    /// Longest time between two nemesis ticks.
    pub interval_max_ms: u64,
    /// Weight: crash a node (restarted later from its disk).
    pub crash: f64,
    /// Weight: pause a node (GC-like stop).
    pub pause: f64,
    /// Weight: split the nodes into two sides (symmetric partition).
    pub partition: f64,
    /// Weight: cut one direction of one link.
    pub one_way: f64,
    /// Weight: hold a link's messages, release them later in one burst.
    pub hold: f64,
    /// Weight: make one node's outgoing links slow (gray failure).
    pub slow_link: f64,
    /// Weight: make one node's disk `slow_factor` times slower for a while (gray
    /// failure: slow fsync).
    pub slow_disk: f64,
    /// Weight: jump a node's clock.
    pub clock_jump: f64,
    /// Weight: flip a bit in durable data of the bit-rot node's disk.
    pub bit_flip: f64,
    /// Weight: make the leader step down.
    pub step_down: f64,
    /// Weight: make the leader transfer leadership.
    pub transfer: f64,
    /// Weight: fill a node's disk for a while (ENOSPC).
    pub enospc: f64,
    /// Weight: the leader changes a random voter's priority (1..=3).
    pub priority: f64,
    /// Weight: the leader demotes a follower to learner, or promotes a learner back.
    /// Demotion is skipped while bit rot can take a node out for good (fewer than 5
    /// nodes), so a majority of voters always survives.
    pub membership: f64,
    /// Restart delay after a crash: shortest.
    pub restart_min_ms: u64,
    /// Restart delay after a crash: longest.
    pub restart_max_ms: u64,
    /// Longest pause.
    pub pause_max_ms: u64,
    /// How long a partition, cut, hold or slow link lasts: shortest.
    pub heal_min_ms: u64,
    /// How long a partition, cut, hold or slow link lasts: longest.
    pub heal_max_ms: u64,
    /// Largest clock jump, either way.
    pub clock_jump_max_ms: u64,
    /// Slowdown factor of a slow link.
    pub slow_factor: u64,
    /// Crash nodes one after another in id order instead of at random (rolling restart).
    pub rolling: bool,
    /// Bit flips may hit any byte of a segment, including the batch-header fields Kafka's
    /// CRC32C does not cover (base offset, length, partition leader epoch). Off by
    /// default: such damage is undetected by the v2 format itself (see the report).
    pub bit_flip_anywhere: bool,
    /// Bit flips may also hit batches synced after the log's last checkpoint. Off by
    /// default: recovery cannot tell rot in that tail from a torn write and cuts it,
    /// which loses acknowledged data (see the report).
    pub bit_flip_past_checkpoint: bool,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            interval_min_ms: 200,
            interval_max_ms: 1_500,
            crash: 0.0,
            pause: 0.0,
            partition: 0.0,
            one_way: 0.0,
            hold: 0.0,
            slow_link: 0.0,
            slow_disk: 0.0,
            clock_jump: 0.0,
            bit_flip: 0.0,
            step_down: 0.0,
            transfer: 0.0,
            enospc: 0.0,
            priority: 0.0,
            membership: 0.0,
            restart_min_ms: 100,
            restart_max_ms: 3_000,
            pause_max_ms: 2_000,
            heal_min_ms: 200,
            heal_max_ms: 4_000,
            clock_jump_max_ms: 2_000,
            slow_factor: 20,
            rolling: false,
            bit_flip_anywhere: false,
            bit_flip_past_checkpoint: false,
        }
    }
}

impl FaultConfig {
    /// `(name, weight)` of every fault kind, in a fixed order.
    pub fn weights(&self) -> [(&'static str, f64); 14] {
        [
            ("crash", self.crash),
            ("pause", self.pause),
            ("partition", self.partition),
            ("one_way", self.one_way),
            ("hold", self.hold),
            ("slow_link", self.slow_link),
            ("slow_disk", self.slow_disk),
            ("clock_jump", self.clock_jump),
            ("bit_flip", self.bit_flip),
            ("step_down", self.step_down),
            ("transfer", self.transfer),
            ("enospc", self.enospc),
            ("priority", self.priority),
            ("membership", self.membership),
        ]
    }

    fn weight_mut(&mut self, name: &str) -> Option<&mut f64> {
        Some(match name {
            "crash" => &mut self.crash,
            "pause" => &mut self.pause,
            "partition" => &mut self.partition,
            "one_way" => &mut self.one_way,
            "hold" => &mut self.hold,
            "slow_link" => &mut self.slow_link,
            "slow_disk" => &mut self.slow_disk,
            "clock_jump" => &mut self.clock_jump,
            "bit_flip" => &mut self.bit_flip,
            "step_down" => &mut self.step_down,
            "transfer" => &mut self.transfer,
            "enospc" => &mut self.enospc,
            "priority" => &mut self.priority,
            "membership" => &mut self.membership,
            _ => return None,
        })
    }

    /// Whether any fault can happen.
    pub fn any(&self) -> bool {
        self.weights().iter().any(|(_, w)| *w > 0.0)
    }
}

/// Everything a run needs besides its seed.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it exercises.
    pub description: String,
    /// Nodes in the cluster (1..=9).
    pub nodes: u32,
    /// Raft groups (partitions); every node runs a replica of each, sharing its disk,
    /// network and process.
    pub groups: u32,
    /// Concurrent clients (client `c` writes to group `c % groups`).
    pub clients: u32,
    /// Length of the safety phase (faults on), simulated seconds.
    pub safety_secs: u64,
    /// Bound of the liveness phase (faults off, network healed), simulated seconds.
    pub liveness_secs: u64,
    /// Time between two writes of one client.
    pub client_interval_ms: u64,
    /// Writes one client keeps in flight at most (1..=64).
    pub client_pipeline: u32,
    /// A replica takes a Raft snapshot every this many applied entries (0: never), so
    /// lagging followers are brought up by InstallSnapshot.
    pub snapshot_every_entries: u64,
    /// Time between two full reads of one client.
    pub read_interval_ms: u64,
    /// A write without an answer after this long is indeterminate.
    pub client_timeout_ms: u64,
    /// Swarm testing: treat fault weights and rates as bounds drawn per seed.
    pub swarm: bool,
    /// Default behaviour of every link.
    pub network: LinkConfig,
    /// Every node's disk.
    pub disk: DiskConfig,
    /// Node clocks.
    pub clock: ClockConfig,
    /// Faults of the safety phase.
    pub faults: FaultConfig,
    /// Planted bugs (for the checkers' own tests).
    pub bugs: PlantedBugs,
    /// Which Raft the nodes run: `core` (Oxbow's, the default) or `model` (the
    /// simulator's small reference Raft, which hosts the Raft-level planted bugs).
    pub replica: ReplicaKind,
    /// Invariants not to check (by name, e.g. `committed-entry-changed`), so a test can
    /// show that another checker catches a planted bug on its own.
    pub disabled_checks: Vec<String>,
    /// Where Raft's reads of old entries are served from: `disk` (the default: core's
    /// `Log::read_plan` over the simulated disk, then `trim_fetched`, each result checked
    /// against what was written) or `memory` (what the simulator saw written).
    pub log_reads: LogReads,
    /// `[tier]`: a tiered-storage run instead of a Raft cluster run (see
    /// [`crate::tier_sim`]); off by default.
    pub tier: crate::tier_sim::TierSimConfig,
    /// `[consumer_groups]`: core's group coordinator on the last Raft group, with
    /// simulated consumers (see [`crate::group_sim`]); off by default.
    pub consumer_groups: crate::group_sim::GroupSimConfig,
    /// `[transactions]`: a transaction run instead of a Raft cluster run (see
    /// [`crate::txn_sim`]); off by default.
    pub transactions: crate::txn_sim::TxnSimConfig,
    /// Planted bugs of the controller runtime (`replica = "controller"` and
    /// `[brokers]` runs).
    pub controller_bugs: ControllerBugs,
    /// `[brokers]`: whole core brokers in cluster mode with Kafka clients (see
    /// [`crate::broker_sim`]); off by default.
    pub brokers: crate::broker_sim::BrokerSimConfig,
}

/// Bugs to plant in the controller driver's runtime ([`crate::controller_sim`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerBugs {
    /// At restart, hand Raft the end of the durable log as the commit hint instead of
    /// a persisted `commit_hint()`, so a restarted broker applies entries that may
    /// never commit (breaks "metadata never diverges").
    pub commit_hint_from_log_end: bool,
}

/// Where entry reads are served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogReads {
    /// From the entries the simulator saw written.
    Memory,
    /// Through core's log read path on the simulated disk.
    #[default]
    Disk,
}

/// Which Raft implementation a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaKind {
    /// `oxbow_core::raft::Raft`.
    #[default]
    Core,
    /// [`crate::model_raft::ModelRaft`].
    Model,
    /// The controller group: core's `ControllerReplica` on every node, driven by
    /// [`crate::controller_sim`].
    Controller,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "default".into(),
            description: "every fault, swarm-chosen per seed".into(),
            nodes: 3,
            groups: 1,
            clients: 3,
            safety_secs: 20,
            liveness_secs: 15,
            client_interval_ms: 100,
            client_pipeline: 2,
            snapshot_every_entries: 100,
            read_interval_ms: 2_000,
            client_timeout_ms: 3_000,
            swarm: true,
            network: LinkConfig {
                latency: Latency::uniform_us(200, 3_000).with_tail(0.01, 50_000),
                loss_prob: 0.05,
                dup_prob: 0.05,
                reorder_prob: 0.05,
                reorder_max_us: 20_000,
            },
            disk: DiskConfig {
                enospc_prob: 0.0,
                sync_latency: Latency::uniform_us(200, 2_000).with_tail(0.02, 200_000),
                ..DiskConfig::default()
            },
            clock: ClockConfig {
                max_drift_ppm: 200,
                max_offset_ms: 1_000,
            },
            faults: FaultConfig {
                crash: 1.0,
                pause: 1.0,
                partition: 1.0,
                one_way: 1.0,
                hold: 0.5,
                slow_link: 0.5,
                slow_disk: 0.5,
                clock_jump: 0.5,
                bit_flip: 0.2,
                step_down: 0.5,
                transfer: 0.5,
                enospc: 0.3,
                priority: 0.3,
                membership: 0.3,
                ..FaultConfig::default()
            },
            bugs: PlantedBugs::default(),
            replica: ReplicaKind::Core,
            disabled_checks: Vec::new(),
            log_reads: LogReads::Disk,
            tier: crate::tier_sim::TierSimConfig::default(),
            consumer_groups: crate::group_sim::GroupSimConfig::default(),
            transactions: crate::txn_sim::TxnSimConfig::default(),
            controller_bugs: ControllerBugs::default(),
            brokers: crate::broker_sim::BrokerSimConfig::default(),
        }
    }
}

impl Scenario {
    /// Parses a scenario from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        scenario.validate().map_err(|message| ScenarioError::Invalid {
            origin: origin.to_string(),
            message,
        })?;
        Ok(scenario)
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Checks every value; the message names the bad option.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=9).contains(&self.nodes) {
            return Err(format!("nodes = {} (must be 1..=9)", self.nodes));
        }
        if !(1..=64).contains(&self.groups) {
            return Err(format!("groups = {} (must be 1..=64)", self.groups));
        }
        if !(1..=64).contains(&self.client_pipeline) {
            return Err(format!(
                "client_pipeline = {} (must be 1..=64)",
                self.client_pipeline
            ));
        }
        if self.clients > 64 {
            return Err(format!("clients = {} (at most 64)", self.clients));
        }
        if self.safety_secs > 3_600 || self.liveness_secs > 3_600 {
            return Err("safety_secs and liveness_secs must be at most 3600".into());
        }
        if self.liveness_secs == 0 {
            return Err("liveness_secs must be positive".into());
        }
        if self.client_interval_ms == 0 || self.read_interval_ms == 0 || self.client_timeout_ms == 0 {
            return Err("client_interval_ms, read_interval_ms and client_timeout_ms must be positive".into());
        }
        self.network.validate("network")?;
        self.disk.validate()?;
        if self.clock.max_drift_ppm > 100_000 {
            return Err(format!(
                "clock.max_drift_ppm = {} (at most 100000)",
                self.clock.max_drift_ppm
            ));
        }
        for name in &self.disabled_checks {
            if !crate::checker::INVARIANTS.contains(&name.as_str()) {
                return Err(format!(
                    "disabled_checks: unknown invariant {name:?} (known: {})",
                    crate::checker::INVARIANTS.join(", ")
                ));
            }
        }
        if self.tier.enabled {
            self.tier.validate()?;
        }
        if self.transactions.enabled {
            self.transactions.validate()?;
        }
        if self.consumer_groups.enabled {
            self.consumer_groups.validate()?;
            if self.groups == 1 && self.clients > 0 {
                return Err("consumer_groups: the offsets partition is the last Raft group; clients need groups >= 2 (or clients = 0)".into());
            }
        }
        if self.brokers.enabled {
            self.brokers.validate(self.nodes)?;
        }
        let f = &self.faults;
        if f.interval_min_ms == 0 || f.interval_max_ms < f.interval_min_ms {
            return Err("faults.interval_min_ms must be positive and at most faults.interval_max_ms".into());
        }
        if f.restart_max_ms < f.restart_min_ms {
            return Err("faults.restart_max_ms < faults.restart_min_ms".into());
        }
        if f.heal_max_ms < f.heal_min_ms {
            return Err("faults.heal_max_ms < faults.heal_min_ms".into());
        }
        for (name, w) in f.weights() {
            if !(0.0..=1_000.0).contains(&w) {
                return Err(format!("faults.{name} = {w} (weights must be in 0..=1000)"));
            }
        }
        Ok(())
    }

    /// The scenario this seed runs: with `swarm`, a random subset of the fault kinds and
    /// rates drawn below their bounds; otherwise the scenario itself.
    pub fn swarm(&self, rng: &mut SimRng) -> Scenario {
        let mut s = self.clone();
        if !self.swarm {
            return s;
        }
        let enabled: Vec<&'static str> = self
            .faults
            .weights()
            .iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(n, _)| *n)
            .collect();
        if !enabled.is_empty() {
            let keep_one = enabled[rng.index(enabled.len())];
            for name in &enabled {
                let keep = *name == keep_one || rng.chance(0.5);
                if let Some(w) = s.faults.weight_mut(name) {
                    if !keep {
                        *w = 0.0;
                    }
                }
            }
        }
        let frac = |rng: &mut SimRng, bound: f64| -> f64 {
            if bound <= 0.0 || rng.chance(0.5) {
                0.0
            } else {
                bound * (rng.between(0, 1_000) as f64) / 1_000.0
            }
        };
        s.network.loss_prob = frac(rng, self.network.loss_prob);
        s.network.dup_prob = frac(rng, self.network.dup_prob);
        s.network.reorder_prob = frac(rng, self.network.reorder_prob);
        s.disk.enospc_prob = frac(rng, self.disk.enospc_prob);
        s.disk.io_error_prob = frac(rng, self.disk.io_error_prob);
        s.faults.interval_max_ms = rng.between(self.faults.interval_min_ms, self.faults.interval_max_ms);
        s
    }

    /// A one-line summary of what is on, for traces and failure reports.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .weights()
            .iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(n, w)| format!("{n}={w}"))
            .collect();
        format!(
            "scenario {} replica={:?} nodes={} groups={} clients={} faults=[{}] loss={:.3} dup={:.3} reorder={:.3} enospc={:.4} io_err={:.4} tear={:?} drift<={}ppm bugs={:?}",
            self.name,
            self.replica,
            self.nodes,
            self.groups,
            self.clients,
            faults.join(","),
            self.network.loss_prob,
            self.network.dup_prob,
            self.network.reorder_prob,
            self.disk.enospc_prob,
            self.disk.io_error_prob,
            self.disk.tear,
            self.clock.max_drift_ppm,
            self.bugs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Seeds;

    #[test]
    fn defaults_validate_and_files_override() {
        Scenario::default().validate().unwrap();
        let s = Scenario::from_toml(
            "name = \"x\"\nnodes = 5\n[faults]\ncrash = 2.0\n[network]\nloss_prob = 0.1\n",
            "inline",
        )
        .unwrap();
        assert_eq!(s.nodes, 5);
        assert_eq!(s.faults.crash, 2.0);
        assert_eq!(s.faults.pause, 0.0, "fault weights default to off");
        assert_eq!(s.network.loss_prob, 0.1);
    }

    #[test]
    fn errors_name_the_bad_option() {
        let e = Scenario::from_toml("nodez = 3\n", "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.toml") && e.contains("nodez"), "{e}");
        let e = Scenario::from_toml("nodes = 0\n", "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodes = 0"), "{e}");
        let e = Scenario::from_toml("[network]\nloss_prob = 2.0\n", "b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("network.loss_prob"), "{e}");
        let e = Scenario::from_toml("[faults]\ncrash = -1.0\n", "b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("faults.crash"), "{e}");
    }

    #[test]
    fn swarm_keeps_a_subset_and_is_seeded() {
        let base = Scenario::default();
        let a = base.swarm(&mut Seeds::new(1).stream("swarm"));
        let b = base.swarm(&mut Seeds::new(1).stream("swarm"));
        assert_eq!(a, b);
        assert!(a.faults.any());
        let mut differs = false;
        for seed in 0..20 {
            differs |= base.swarm(&mut Seeds::new(seed).stream("swarm")).faults != a.faults;
        }
        assert!(differs);
    }
}
