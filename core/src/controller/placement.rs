//! Placement: which brokers hold a new partition's replicas, which replica should lead
//! (its Raft priority), and the leadership transfers that rebalance leaders when a
//! broker returns.
//!
//! * Replicas go to live brokers only, least-loaded first (replica count), preferring
//!   racks the partition does not use yet when racks are set, ties broken by broker id:
//!   the same inputs always give the same placement.
//! * The preferred leader (first replica) is the chosen broker leading the fewest
//!   partitions; it gets [`PREFERRED_LEADER_PRIORITY`], the other replicas
//!   [`FOLLOWER_PRIORITY`], so Raft itself moves leadership back to it
//!   (`RaftConfig::auto_transfer_to_priority`).
//! * [`rebalance_plan`] lists the transfers that hand every live preferred leader its
//!   partitions back (bounded per plan), for a runtime that wants them at once.

use std::collections::{BTreeMap, BTreeSet};

use super::command::BrokerId;
use super::state::{ControllerState, PartitionAssignment};
use crate::raft::Priority;

/// Raft priority of a partition's preferred leader.
pub const PREFERRED_LEADER_PRIORITY: Priority = 10;
/// Raft priority of its other replicas.
pub const FOLLOWER_PRIORITY: Priority = 1;

/// Why no placement exists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// Fewer live brokers than the replication factor (Kafka INVALID_REPLICATION_FACTOR).
    #[error("replication factor {replication_factor} exceeds the {live_brokers} live brokers")]
    NotEnoughBrokers {
        /// Asked for.
        replication_factor: usize,
        /// Available.
        live_brokers: usize,
    },
    /// Zero replicas or zero partitions asked for.
    #[error("nothing to place")]
    Empty,
}

impl PlacementError {
    /// The Kafka error code.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            PlacementError::NotEnoughBrokers { .. } => 38, // INVALID_REPLICATION_FACTOR
            PlacementError::Empty => 37,                   // INVALID_PARTITIONS
        }
    }
}

/// Replica and leader counts per broker, the input of placement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Load {
    replicas: BTreeMap<BrokerId, u64>,
    leaders: BTreeMap<BrokerId, u64>,
}

impl Load {
    /// The load of every live broker in `state` (preferred leaders count as leaders).
    pub fn of(state: &ControllerState) -> Load {
        let mut load = Load::default();
        for b in state.live_brokers() {
            load.replicas.insert(b.registration.id, 0);
            load.leaders.insert(b.registration.id, 0);
        }
        for p in state.assignments.values().flatten() {
            load.add(&p.replicas);
        }
        load
    }

    fn add(&mut self, replicas: &[BrokerId]) {
        for r in replicas {
            if let Some(n) = self.replicas.get_mut(r) {
                *n += 1;
            }
        }
        if let Some(n) = replicas.first().and_then(|l| self.leaders.get_mut(l)) {
            *n += 1;
        }
    }

    /// Replicas on `broker`.
    pub fn replicas_on(&self, broker: BrokerId) -> u64 {
        self.replicas.get(&broker).copied().unwrap_or(0)
    }

    /// Preferred leaderships of `broker`.
    pub fn leaders_on(&self, broker: BrokerId) -> u64 {
        self.leaders.get(&broker).copied().unwrap_or(0)
    }
}

/// Places `partitions` new partitions of `replication_factor` replicas over the live
/// brokers of `state`. Each list's first broker is the preferred leader.
pub fn place(
    state: &ControllerState,
    partitions: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    if partitions == 0 || replication_factor == 0 {
        return Err(PlacementError::Empty);
    }
    let racks: BTreeMap<BrokerId, Option<&str>> = state
        .live_brokers()
        .map(|b| (b.registration.id, b.registration.rack.as_deref()))
        .collect();
    if racks.len() < replication_factor {
        return Err(PlacementError::NotEnoughBrokers {
            replication_factor,
            live_brokers: racks.len(),
        });
    }
    let mut load = Load::of(state);
    let mut out = Vec::with_capacity(partitions);
    for _ in 0..partitions {
        let replicas = place_one(&racks, &load, replication_factor);
        load.add(&replicas);
        out.push(replicas);
    }
    Ok(out)
}

fn place_one(
    racks: &BTreeMap<BrokerId, Option<&str>>,
    load: &Load,
    replication_factor: usize,
) -> Vec<BrokerId> {
    let mut chosen: Vec<BrokerId> = Vec::with_capacity(replication_factor);
    let mut used_racks: BTreeSet<&str> = BTreeSet::new();
    while chosen.len() < replication_factor {
        let best = racks
            .iter()
            .filter(|(id, _)| !chosen.contains(id))
            .min_by_key(|(id, rack)| {
                let rack_used = rack.is_some_and(|r| used_racks.contains(r));
                (rack_used, load.replicas_on(**id), **id)
            });
        let Some((id, rack)) = best else { break };
        chosen.push(*id);
        if let Some(rack) = rack {
            used_racks.insert(rack);
        }
    }
    assert_eq!(
        chosen.len(),
        replication_factor,
        "enough live brokers were checked"
    );
    let leader_at = chosen
        .iter()
        .enumerate()
        .min_by_key(|(_, id)| (load.leaders_on(**id), **id))
        .map_or(0, |(i, _)| i);
    chosen.swap(0, leader_at);
    chosen
}

/// The Raft voters of a partition with their priorities: the preferred leader (first
/// replica) on top.
pub fn voter_priorities(replicas: &[BrokerId]) -> Vec<(BrokerId, Priority)> {
    replicas
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let priority = if i == 0 {
                PREFERRED_LEADER_PRIORITY
            } else {
                FOLLOWER_PRIORITY
            };
            (*id, priority)
        })
        .collect()
}

/// One leadership transfer of a rebalance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Transfer {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Current leader.
    pub from: BrokerId,
    /// Preferred leader to hand it to.
    pub to: BrokerId,
}

/// Transfers that give every live preferred leader its partitions back, at most
/// `max_transfers`, in (topic, partition) order. `leaders` holds the current leader of
/// each `(topic, partition)` the caller knows; partitions without a known leader are
/// left to their election (priorities already favour the preferred leader).
pub fn rebalance_plan(
    state: &ControllerState,
    leaders: &BTreeMap<(String, i32), BrokerId>,
    max_transfers: usize,
) -> Vec<Transfer> {
    let live: BTreeSet<BrokerId> = state.live_brokers().map(|b| b.registration.id).collect();
    let mut plan = Vec::new();
    for (topic, partitions) in &state.assignments {
        for (index, assignment) in partitions.iter().enumerate() {
            if plan.len() >= max_transfers {
                return plan;
            }
            let partition = i32::try_from(index).unwrap_or(i32::MAX);
            if let Some(t) = transfer_for(topic, partition, assignment, leaders, &live) {
                plan.push(t);
            }
        }
    }
    plan
}

fn transfer_for(
    topic: &str,
    partition: i32,
    assignment: &PartitionAssignment,
    leaders: &BTreeMap<(String, i32), BrokerId>,
    live: &BTreeSet<BrokerId>,
) -> Option<Transfer> {
    let preferred = *assignment.replicas.first()?;
    let current = *leaders.get(&(topic.to_string(), partition))?;
    (current != preferred && live.contains(&preferred)).then(|| Transfer {
        topic: topic.to_string(),
        partition,
        from: current,
        to: preferred,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::command::{BrokerRegistration, Command};

    fn cluster(racks: &[Option<&str>]) -> ControllerState {
        let mut s = ControllerState::new();
        for (i, rack) in racks.iter().enumerate() {
            let id = i as u64 + 1;
            s.apply(
                id,
                &Command::RegisterBroker(BrokerRegistration {
                    id,
                    rpc_addr: format!("n{id}"),
                    kafka_addr: format!("n{id}"),
                    rack: rack.map(str::to_string),
                    epoch: 1,
                }),
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn spreads_replicas_and_leaders_evenly() {
        let s = cluster(&[None; 5]);
        let placed = place(&s, 10, 3).unwrap();
        let mut replicas = BTreeMap::<u64, u32>::new();
        let mut leaders = BTreeMap::<u64, u32>::new();
        for p in &placed {
            assert_eq!(p.iter().collect::<BTreeSet<_>>().len(), 3, "distinct replicas");
            *leaders.entry(p[0]).or_default() += 1;
            for r in p {
                *replicas.entry(*r).or_default() += 1;
            }
        }
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![6; 5]);
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2; 5]);
        assert_eq!(place(&s, 10, 3).unwrap(), placed, "deterministic");
    }

    #[test]
    fn racks_are_spread_before_load() {
        let s = cluster(&[Some("a"), Some("a"), Some("b"), Some("b"), Some("c")]);
        for p in place(&s, 6, 3).unwrap() {
            let racks: BTreeSet<_> = p
                .iter()
                .map(|id| s.brokers[id].registration.rack.clone())
                .collect();
            assert_eq!(racks.len(), 3, "{p:?} covers three racks");
        }
    }

    #[test]
    fn dead_brokers_get_nothing_and_too_few_is_an_error() {
        let mut s = cluster(&[None; 3]);
        s.apply(
            9,
            &Command::SetBrokerLiveness {
                broker: 2,
                epoch: 1,
                alive: false,
            },
        )
        .unwrap();
        assert!(place(&s, 4, 2).unwrap().iter().flatten().all(|r| *r != 2));
        let err = place(&s, 1, 3).unwrap_err();
        assert_eq!(err.kafka_error_code(), 38);
    }

    #[test]
    fn rebalance_hands_leadership_back_to_a_returning_broker() {
        let mut s = cluster(&[None; 3]);
        let assignment = place(&s, 3, 3).unwrap();
        s.apply(
            10,
            &Command::CreateTopic {
                name: "t".into(),
                configs: BTreeMap::new(),
                assignment: assignment.clone(),
            },
        )
        .unwrap();
        // Broker 1 was away: its partition is led by someone else.
        let mut leaders = BTreeMap::new();
        for (p, replicas) in assignment.iter().enumerate() {
            let leader = if replicas[0] == 1 {
                replicas[1]
            } else {
                replicas[0]
            };
            leaders.insert(("t".to_string(), p as i32), leader);
        }
        let plan = rebalance_plan(&s, &leaders, 10);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].to, 1);
        assert_eq!(rebalance_plan(&s, &leaders, 0), vec![]);
        assert_eq!(voter_priorities(&[3, 1, 2])[0], (3, PREFERRED_LEADER_PRIORITY));
    }
}
