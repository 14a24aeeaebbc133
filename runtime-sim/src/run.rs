//! Running one seed: the swarm draw, the cluster, the result — and the determinism
//! self-check that runs a seed twice and compares trace hashes.

use crate::cluster::{Cluster, NodeFactory, RunResult};
use crate::core_replica::CoreFactory;
use crate::model_raft::{ModelConfig, ModelRaft, PlantedBugs, Restored};
use crate::net::NodeId;
use crate::rng::{Seeds, SimRng};
use crate::scenario::{ReplicaKind, Scenario};
use oxbow_core::time::Instant;

/// Builds the reference model Raft (see [`crate::model_raft`]) for every node.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelFactory {
    /// Timings.
    pub config: ModelConfig,
    /// Planted bugs.
    pub bugs: PlantedBugs,
}

impl NodeFactory for ModelFactory {
    type R = ModelRaft;

    fn start(
        &mut self,
        id: NodeId,
        peers: &[NodeId],
        rng: SimRng,
        now: Instant,
        restored: Restored,
    ) -> Result<(ModelRaft, bool), String> {
        Ok((
            ModelRaft::new(id, peers.to_vec(), self.config, self.bugs, rng, now, restored),
            false,
        ))
    }
}

/// Runs `seed` of `scenario` (swarm applied) and returns its result.
pub fn run_seed(seed: u64, scenario: &Scenario, keep_trace: bool) -> RunResult {
    let effective = scenario.swarm(&mut Seeds::new(seed).stream("swarm"));
    if effective.tier.enabled {
        return crate::tier_sim::run_tier_seed(seed, &effective, keep_trace);
    }
    if effective.transactions.enabled {
        return crate::txn_sim::run_txn_seed(seed, &effective, keep_trace);
    }
    if effective.brokers.enabled {
        return crate::broker_sim::run_brokers(seed, effective, keep_trace);
    }
    match effective.replica {
        ReplicaKind::Core => Cluster::new(seed, effective, CoreFactory::default(), keep_trace).run(),
        ReplicaKind::Model => {
            let factory = ModelFactory {
                config: ModelConfig::default(),
                bugs: effective.bugs,
            };
            Cluster::new(seed, effective, factory, keep_trace).run()
        }
        ReplicaKind::Controller => crate::controller_sim::run_controller(seed, effective, keep_trace),
    }
}

/// A seed gave two different traces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed} is not deterministic: trace hashes {first:016x} and {second:016x}")]
pub struct NonDeterminism {
    /// The seed.
    pub seed: u64,
    /// First run's hash.
    pub first: u64,
    /// Second run's hash.
    pub second: u64,
}

/// Runs `seed` twice; the trace hashes must be equal.
pub fn check_determinism(seed: u64, scenario: &Scenario) -> Result<u64, NonDeterminism> {
    let first = run_seed(seed, scenario, false).trace_hash;
    let second = run_seed(seed, scenario, false).trace_hash;
    if first == second {
        Ok(first)
    } else {
        Err(NonDeterminism { seed, first, second })
    }
}
