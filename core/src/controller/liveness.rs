//! [`LivenessTracker`]: the controller leader's view of which brokers are alive, as a
//! state machine with time as input. Brokers report in (a heartbeat carrying their
//! registration epoch); a broker silent for `timeout` is proposed dead, one heard from
//! again is proposed alive — as [`Command::SetBrokerLiveness`] entries, so every broker
//! learns liveness from the controller log, never from its own clock.
//!
//! Only the leader's tracker proposes; a new leader starts with everyone "just seen"
//! (a grace period of one `timeout`), so a leader change never marks brokers dead
//! because the new leader has not heard from them yet.

use std::collections::BTreeMap;
use std::time::Duration;

use super::command::{BrokerId, Command};
use super::state::ControllerState;
use crate::time::Instant;

/// Tracks broker heartbeats and proposes liveness changes. See the module docs.
#[derive(Clone, Debug)]
pub struct LivenessTracker {
    timeout: Duration,
    /// Last heartbeat per broker with the epoch it carried.
    last_seen: BTreeMap<BrokerId, (u64, Instant)>,
    /// Until when brokers not heard from yet count as alive (leadership start + timeout).
    grace_until: Instant,
}

impl LivenessTracker {
    /// A tracker for a controller that became leader at `now`.
    pub fn new(now: Instant, timeout: Duration) -> Self {
        LivenessTracker {
            timeout,
            last_seen: BTreeMap::new(),
            grace_until: now + timeout,
        }
    }

    /// Broker `broker` (registered with `epoch`) reported in at `now`. Heartbeats of
    /// brokers `state` does not know are ignored, so the table is bounded by the
    /// registered brokers.
    pub fn on_heartbeat(&mut self, now: Instant, broker: BrokerId, epoch: u64, state: &ControllerState) {
        if !state.brokers.contains_key(&broker) {
            return;
        }
        self.last_seen.retain(|id, _| state.brokers.contains_key(id));
        let entry = self.last_seen.entry(broker).or_insert((epoch, now));
        if epoch >= entry.0 {
            *entry = (epoch, now.max(entry.1));
        }
    }

    fn alive_now(&self, now: Instant, broker: BrokerId, epoch: u64) -> bool {
        match self.last_seen.get(&broker) {
            Some(&(seen_epoch, at)) if seen_epoch == epoch => now < at + self.timeout,
            Some(_) => false,
            None => now < self.grace_until,
        }
    }

    /// The liveness changes to propose at `now`: one command per registered broker
    /// whose recorded liveness disagrees with what this leader observes, in broker id
    /// order.
    pub fn changes(&self, now: Instant, state: &ControllerState) -> Vec<Command> {
        state
            .brokers
            .values()
            .filter_map(|info| {
                let id = info.registration.id;
                let epoch = info.registration.epoch;
                let alive = self.alive_now(now, id, epoch);
                (alive != info.alive).then_some(Command::SetBrokerLiveness {
                    broker: id,
                    epoch,
                    alive,
                })
            })
            .collect()
    }

    /// When a registered broker next times out (the caller runs [`Self::changes`]
    /// then).
    pub fn poll_timeout(&self, state: &ControllerState) -> Option<Instant> {
        state
            .live_brokers()
            .map(|info| {
                let id = info.registration.id;
                match self.last_seen.get(&id) {
                    Some(&(epoch, at)) if epoch == info.registration.epoch => at + self.timeout,
                    _ => self.grace_until,
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::command::BrokerRegistration;

    fn state_with(brokers: &[u64]) -> ControllerState {
        let mut s = ControllerState::new();
        for &id in brokers {
            s.apply(
                id,
                &Command::RegisterBroker(BrokerRegistration {
                    id,
                    rpc_addr: "a".into(),
                    kafka_addr: "b".into(),
                    rack: None,
                    epoch: 1,
                }),
            )
            .unwrap();
        }
        s
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn silent_brokers_are_proposed_dead_after_the_grace_and_alive_when_back() {
        let timeout = Duration::from_secs(5);
        let mut s = state_with(&[1, 2]);
        let mut t = LivenessTracker::new(at(0), timeout);
        assert!(
            t.changes(at(4_000), &s).is_empty(),
            "grace period of a new leader"
        );
        assert_eq!(t.poll_timeout(&s), Some(at(5_000)));
        t.on_heartbeat(at(4_500), 1, 1, &s);
        let changes = t.changes(at(6_000), &s);
        assert_eq!(
            changes,
            vec![Command::SetBrokerLiveness {
                broker: 2,
                epoch: 1,
                alive: false
            }]
        );
        for c in &changes {
            s.apply(10, c).unwrap();
        }
        assert!(t.changes(at(6_000), &s).is_empty(), "nothing more to say");
        assert_eq!(t.poll_timeout(&s), Some(at(9_500)), "broker 1 times out next");
        t.on_heartbeat(at(7_000), 2, 1, &s);
        t.on_heartbeat(at(7_000), 99, 1, &s);
        assert_eq!(t.last_seen.len(), 2, "unknown brokers are not tracked");
        assert_eq!(
            t.changes(at(7_000), &s),
            vec![Command::SetBrokerLiveness {
                broker: 2,
                epoch: 1,
                alive: true
            }]
        );
    }

    #[test]
    fn a_heartbeat_of_an_older_epoch_does_not_count() {
        let s = state_with(&[1]);
        let mut t = LivenessTracker::new(at(0), Duration::from_secs(1));
        t.on_heartbeat(at(2_000), 1, 0, &s);
        assert_eq!(
            t.changes(at(2_000), &s),
            vec![Command::SetBrokerLiveness {
                broker: 1,
                epoch: 1,
                alive: false
            }]
        );
    }
}
