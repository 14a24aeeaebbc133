//! The simulated network between nodes: per-link latency, loss, duplication,
//! reordering, partitions (symmetric and one-way), held links and slow links.
//!
//! The network decides a message's fate twice. At **send** ([`SimNetwork::send`]) it may
//! drop it (a cut link, loss, a full network) or duplicate it, and samples each copy's
//! delay; the caller schedules the arrivals. At **arrival** ([`SimNetwork::arrive`]) it
//! looks at the link as it is *then*: a link cut meanwhile drops the message, a held link
//! keeps it (in order, bounded) until [`SimNetwork::release`]. Reordering comes from
//! jitter plus an occasional extra delay. Links are directed: `(a, b)` and `(b, a)` are
//! separate, which is what makes one-way partitions possible.

use crate::dist::Latency;
use crate::rng::{RngExt, SimRng};
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A node's identity in the simulator.
pub type NodeId = u32;

/// Behaviour of one directed link.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// One-way delay.
    pub latency: Latency,
    /// Probability a message is lost.
    pub loss_prob: f64,
    /// Probability a message is delivered twice.
    pub dup_prob: f64,
    /// Probability a message gets an extra delay (overtaken by later ones).
    pub reorder_prob: f64,
    /// Largest extra delay of a reordered message.
    pub reorder_max_us: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Latency::uniform_us(100, 1_000),
            loss_prob: 0.0,
            dup_prob: 0.0,
            reorder_prob: 0.0,
            reorder_max_us: 10_000,
        }
    }
}

impl LinkConfig {
    /// Checks the parameters; the message names the bad field.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        self.latency.validate(&format!("{what}.latency"))?;
        for (name, p) in [
            ("loss_prob", self.loss_prob),
            ("dup_prob", self.dup_prob),
            ("reorder_prob", self.reorder_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{what}.{name} = {p} is not a probability"));
            }
        }
        Ok(())
    }
}

/// Bounds of the network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetLimits {
    /// Messages in flight across the whole network; sends beyond it are dropped.
    pub max_in_flight: usize,
    /// Messages a held link keeps; arrivals beyond it are dropped.
    pub max_held_per_link: usize,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_in_flight: 100_000,
            max_held_per_link: 10_000,
        }
    }
}

#[derive(Debug)]
struct Link<M> {
    config: Option<LinkConfig>,
    cut: bool,
    slow_factor: u64,
    held: Option<VecDeque<M>>,
}

impl<M> Default for Link<M> {
    fn default() -> Self {
        Link {
            config: None,
            cut: false,
            slow_factor: 1,
            held: None,
        }
    }
}

/// What happened to a message when it reached the end of its link.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<M> {
    /// Hand it to the destination.
    Deliver(M),
    /// The link was cut while it was in flight.
    Dropped,
    /// The link is held: the network keeps it until released.
    Held,
}

/// Counters of what the network did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Lost to random loss.
    pub lost: u64,
    /// Dropped by a partition (at send or in flight).
    pub partitioned: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Messages given an extra delay.
    pub reordered: u64,
    /// Dropped because a bound was reached.
    pub overflowed: u64,
    /// Messages held on a link.
    pub held: u64,
}

/// The network.
#[derive(Debug)]
pub struct SimNetwork<M> {
    default_link: LinkConfig,
    limits: NetLimits,
    links: BTreeMap<(NodeId, NodeId), Link<M>>,
    in_flight: usize,
    stats: NetStats,
}

impl<M: Clone> SimNetwork<M> {
    /// A fully connected network whose links all behave as `default_link`.
    pub fn new(default_link: LinkConfig, limits: NetLimits) -> Self {
        SimNetwork {
            default_link,
            limits,
            links: BTreeMap::new(),
            in_flight: 0,
            stats: NetStats::default(),
        }
    }

    /// What the network has done.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Messages currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn link(&mut self, from: NodeId, to: NodeId) -> &mut Link<M> {
        self.links.entry((from, to)).or_default()
    }

    /// Sends `msg`; returns the copies to deliver with their delays (none, one or two).
    /// Every returned copy must come back through [`SimNetwork::arrive`].
    pub fn send(&mut self, rng: &mut SimRng, from: NodeId, to: NodeId, msg: M) -> Vec<(Duration, M)> {
        self.stats.sent += 1;
        let default = self.default_link;
        let link = self.link(from, to);
        if link.cut {
            self.stats.partitioned += 1;
            return Vec::new();
        }
        let config = link.config.unwrap_or(default);
        let slow = link.slow_factor;
        if rng.chance(config.loss_prob) {
            self.stats.lost += 1;
            return Vec::new();
        }
        let copies = if rng.chance(config.dup_prob) { 2 } else { 1 };
        if self.in_flight + copies > self.limits.max_in_flight {
            self.stats.overflowed += 1;
            return Vec::new();
        }
        if copies == 2 {
            self.stats.duplicated += 1;
        }
        let mut out = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut delay = config.latency.scaled(slow).sample(rng);
            if rng.chance(config.reorder_prob) {
                self.stats.reordered += 1;
                delay += Duration::from_micros(rng.between(0, config.reorder_max_us));
            }
            out.push((delay, msg.clone()));
        }
        self.in_flight += copies;
        out
    }

    /// A copy returned by [`SimNetwork::send`] reaches the end of its link.
    pub fn arrive(&mut self, from: NodeId, to: NodeId, msg: M) -> Arrival<M> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let max_held = self.limits.max_held_per_link;
        let link = self.link(from, to);
        if link.cut {
            self.stats.partitioned += 1;
            return Arrival::Dropped;
        }
        if let Some(held) = link.held.as_mut() {
            if held.len() >= max_held {
                self.stats.overflowed += 1;
                return Arrival::Dropped;
            }
            held.push_back(msg);
            self.stats.held += 1;
            return Arrival::Held;
        }
        self.stats.delivered += 1;
        Arrival::Deliver(msg)
    }

    /// Whether messages from `from` currently reach `to`.
    pub fn is_connected(&self, from: NodeId, to: NodeId) -> bool {
        self.links.get(&(from, to)).is_none_or(|l| !l.cut)
    }

    /// Cuts the link from `from` to `to` only (a one-way partition).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.link(from, to).cut = true;
    }

    /// Restores the link from `from` to `to` (after [`SimNetwork::cut_one_way`]).
    pub fn restore_one_way(&mut self, from: NodeId, to: NodeId) {
        self.link(from, to).cut = false;
    }

    /// Changes the behaviour of every link without an override.
    pub fn set_default_link(&mut self, config: LinkConfig) {
        self.default_link = config;
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Splits the nodes into `groups`: links between groups are cut both ways, links
    /// inside a group are restored.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (gi, g) in groups.iter().enumerate() {
            for (hi, h) in groups.iter().enumerate() {
                for &a in g {
                    for &b in h {
                        if a != b {
                            self.link(a, b).cut = gi != hi;
                        }
                    }
                }
            }
        }
    }

    /// Restores every cut link (held links stay held; slow links stay slow).
    pub fn heal_partitions(&mut self) {
        for link in self.links.values_mut() {
            link.cut = false;
        }
    }

    /// Restores everything: cuts, slowness, per-link overrides. Held messages are
    /// returned in order, per link in link order, for delivery.
    pub fn heal_all(&mut self) -> Vec<(NodeId, NodeId, M)> {
        let mut released = Vec::new();
        for (&(from, to), link) in self.links.iter_mut() {
            link.cut = false;
            link.slow_factor = 1;
            link.config = None;
            if let Some(held) = link.held.take() {
                released.extend(held.into_iter().map(|m| (from, to, m)));
            }
        }
        released
    }

    /// Holds the link: arrivals are kept until [`SimNetwork::release`].
    pub fn hold(&mut self, from: NodeId, to: NodeId) {
        let link = self.link(from, to);
        if link.held.is_none() {
            link.held = Some(VecDeque::new());
        }
    }

    /// Whether the link is held.
    pub fn is_held(&self, from: NodeId, to: NodeId) -> bool {
        self.links.get(&(from, to)).is_some_and(|l| l.held.is_some())
    }

    /// Releases a held link; returns its messages in arrival order for delivery.
    pub fn release(&mut self, from: NodeId, to: NodeId) -> Vec<M> {
        self.link(from, to).held.take().map(Vec::from).unwrap_or_default()
    }

    /// Makes the link `factor` times slower (1 = normal).
    pub fn set_slow(&mut self, from: NodeId, to: NodeId, factor: u64) {
        self.link(from, to).slow_factor = factor.max(1);
    }

    /// Overrides one link's behaviour (`None`: back to the default).
    pub fn set_link(&mut self, from: NodeId, to: NodeId, config: Option<LinkConfig>) {
        self.link(from, to).config = config;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Seeds;

    fn net() -> (SimNetwork<u32>, SimRng) {
        (
            SimNetwork::new(LinkConfig::default(), NetLimits::default()),
            Seeds::new(11).stream("network"),
        )
    }

    #[test]
    fn delivers_with_latency_in_range() {
        let (mut n, mut rng) = net();
        for i in 0..100 {
            let out = n.send(&mut rng, 0, 1, i);
            assert_eq!(out.len(), 1);
            let (d, m) = out.into_iter().next().unwrap();
            assert!(d >= Duration::from_micros(100) && d <= Duration::from_micros(1_000));
            assert_eq!(n.arrive(0, 1, m), Arrival::Deliver(i));
        }
        assert_eq!(n.in_flight(), 0);
        assert_eq!(n.stats().delivered, 100);
    }

    #[test]
    fn loss_and_duplication_rates() {
        let (mut n, mut rng) = net();
        n.set_link(
            0,
            1,
            Some(LinkConfig {
                loss_prob: 0.3,
                dup_prob: 0.2,
                ..LinkConfig::default()
            }),
        );
        let mut copies = 0;
        for i in 0..10_000 {
            copies += n.send(&mut rng, 0, 1, i).len();
        }
        let s = n.stats().clone();
        assert!((2_700..3_300).contains(&s.lost), "{s:?}");
        assert!((1_200..1_600).contains(&s.duplicated), "{s:?}");
        assert_eq!(copies as u64, 10_000 - s.lost + s.duplicated);
        // The other direction is unaffected.
        assert_eq!(n.send(&mut rng, 1, 0, 0).len(), 1);
    }

    #[test]
    fn reordering_lets_later_messages_overtake() {
        let (mut n, mut rng) = net();
        n.set_link(
            0,
            1,
            Some(LinkConfig {
                latency: Latency::fixed_us(100),
                reorder_prob: 0.5,
                reorder_max_us: 1_000,
                ..LinkConfig::default()
            }),
        );
        let mut arrivals: Vec<(Duration, u32)> = Vec::new();
        for i in 0..50u32 {
            let sent_at = Duration::from_micros(u64::from(i) * 10);
            for (d, m) in n.send(&mut rng, 0, 1, i) {
                arrivals.push((sent_at + d, m));
            }
        }
        arrivals.sort();
        let order: Vec<u32> = arrivals.iter().map(|a| a.1).collect();
        assert!(order.windows(2).any(|w| w[0] > w[1]), "some message overtaken");
    }

    #[test]
    fn partitions_symmetric_one_way_and_in_flight() {
        let (mut n, mut rng) = net();
        n.partition(&[vec![0], vec![1, 2]]);
        assert!(n.send(&mut rng, 0, 1, 1).is_empty());
        assert!(n.send(&mut rng, 2, 0, 1).is_empty());
        assert_eq!(n.send(&mut rng, 1, 2, 1).len(), 1);
        n.heal_partitions();
        n.cut_one_way(0, 1);
        assert!(n.send(&mut rng, 0, 1, 1).is_empty());
        let (_, m) = n.send(&mut rng, 1, 0, 7).pop().unwrap();
        assert_eq!(n.arrive(1, 0, m), Arrival::Deliver(7));
        // A message in flight when the link is cut is dropped on arrival.
        let (_, m) = n.send(&mut rng, 2, 0, 9).pop().unwrap();
        n.cut(2, 0);
        assert_eq!(n.arrive(2, 0, m), Arrival::Dropped);
        assert!(!n.is_connected(0, 2));
        n.heal_all();
        assert!(n.is_connected(0, 1) && n.is_connected(0, 2));
    }

    #[test]
    fn hold_and_release_keep_order() {
        let (mut n, mut rng) = net();
        n.hold(0, 1);
        for i in 0..5 {
            let (_, m) = n.send(&mut rng, 0, 1, i).pop().unwrap();
            assert_eq!(n.arrive(0, 1, m), Arrival::Held);
        }
        assert!(n.is_held(0, 1));
        assert_eq!(n.release(0, 1), vec![0, 1, 2, 3, 4]);
        assert!(!n.is_held(0, 1));
        assert!(n.release(0, 1).is_empty());
    }

    #[test]
    fn slow_links_and_bounds() {
        let mut n: SimNetwork<u32> = SimNetwork::new(
            LinkConfig {
                latency: Latency::fixed_us(100),
                ..LinkConfig::default()
            },
            NetLimits {
                max_in_flight: 2,
                max_held_per_link: 1,
            },
        );
        let mut rng = Seeds::new(1).stream("network");
        n.set_slow(0, 1, 50);
        assert_eq!(n.send(&mut rng, 0, 1, 1)[0].0, Duration::from_micros(5_000));
        n.send(&mut rng, 0, 2, 2);
        assert!(n.send(&mut rng, 0, 2, 3).is_empty(), "in-flight bound");
        assert_eq!(n.stats().overflowed, 1);
        n.hold(0, 1);
        assert_eq!(n.arrive(0, 1, 1), Arrival::Held);
        assert_eq!(n.arrive(0, 1, 1), Arrival::Dropped, "held bound");
    }
}
