//! Gray failures and many groups: a slow minority adds no commit latency (measured in
//! simulated time), and coalesced heartbeats cost one frame per peer node per interval
//! however many groups two nodes share.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use oxbow_core::raft::*;
use oxbow_core::time::Instant;

use crate::harness::{Cluster, Options};
use crate::raft_basic::elect;

/// Commit latencies (simulated) of `n` proposals, one every 20 ms, with the followers in
/// `slow` receiving every message `delay` late.
fn commit_latencies(nodes: u64, slow: &[NodeId], delay: Duration) -> Vec<Duration> {
    let mut c = Cluster::new(Options::new(nodes, 11));
    c.with(1, |r, now| r.campaign(now));
    let l = elect(&mut c);
    assert_eq!(l, 1);
    c.run_for(Duration::from_millis(200));
    for &s in slow {
        c.slow.insert(s, delay);
    }
    let mut out = Vec::new();
    for i in 0..60 {
        let start = c.now;
        let id = c.propose(l, &format!("w{i}"), 1).unwrap();
        assert!(c.run_until(Duration::from_secs(5), |c| c.raft(l).commit_index()
            >= Some(id.index)));
        out.push(c.now - start);
        c.run_for(Duration::from_millis(20));
    }
    // The slow followers are still in the group and eventually apply everything.
    c.slow.clear();
    let last = c.raft(l).last_log_id().unwrap().index;
    assert!(c.run_until(Duration::from_secs(10), |c| c.all_applied(last)));
    assert_eq!(
        c.leader(),
        Some(l),
        "no election was caused by the slow followers"
    );
    out
}

#[test]
fn slow_follower_adds_no_commit_latency() {
    let heartbeat = RaftConfig::default().heartbeat_interval;
    let baseline = commit_latencies(3, &[], Duration::ZERO);
    let slow = commit_latencies(3, &[3], heartbeat * 10);
    assert_eq!(baseline, slow, "a slow follower changed commit latency");
    // Latency is one round trip plus fsyncs: a few milliseconds.
    assert!(
        baseline.iter().all(|d| *d < Duration::from_millis(5)),
        "{baseline:?}"
    );
}

#[test]
fn slow_minority_of_five_adds_no_commit_latency() {
    let heartbeat = RaftConfig::default().heartbeat_interval;
    let baseline = commit_latencies(5, &[], Duration::ZERO);
    let slow = commit_latencies(5, &[4, 5], heartbeat * 10);
    assert_eq!(baseline, slow);
}

/// A tiny multi-group driver: every group has an engine on nodes 1..=3; messages are
/// delivered at once; writes complete at once.
struct Groups {
    engines: Vec<BTreeMap<NodeId, Raft>>,
    queue: VecDeque<(usize, Message)>,
}

impl Groups {
    fn new(groups: usize) -> Groups {
        let cfg = RaftConfig {
            coalesced_heartbeats: true,
            ..RaftConfig::default()
        };
        let m = Membership::with_voters([1, 2, 3]).unwrap();
        let engines = (0..groups)
            .map(|g| {
                (1..=3)
                    .map(|id| {
                        let seed = (g as u64) << 8 | id;
                        let r = Raft::new(
                            id,
                            cfg.clone(),
                            m.clone(),
                            RecoveredState::default(),
                            seed,
                            Instant::ZERO,
                        );
                        (id, r.unwrap())
                    })
                    .collect()
            })
            .collect();
        Groups {
            engines,
            queue: VecDeque::new(),
        }
    }

    /// Drains one engine's effects, completing writes at once; returns its sends.
    fn drain(&mut self, g: usize, id: NodeId, now: Instant) {
        loop {
            let r = self.engines[g].get_mut(&id).unwrap();
            let Some(e) = r.poll_effect() else { return };
            match e {
                Effect::Send(m) => self.queue.push_back((g, m)),
                Effect::PersistHardState(hs) => r.handle(now, Input::HardStateDurable(hs)),
                Effect::Append { write_id, .. } | Effect::Truncate { write_id, .. } => {
                    r.handle(now, Input::WriteDurable { write_id })
                }
                _ => {}
            }
        }
    }

    fn pump(&mut self, now: Instant) {
        while let Some((g, m)) = self.queue.pop_front() {
            let to = m.to;
            self.engines[g]
                .get_mut(&to)
                .unwrap()
                .handle(now, Input::Message(m));
            self.drain(g, to, now);
        }
    }

    fn timeouts(&mut self, now: Instant) -> usize {
        let mut sends = 0;
        for g in 0..self.engines.len() {
            for id in 1..=3 {
                let r = self.engines[g].get_mut(&id).unwrap();
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                    let before = self.queue.len();
                    self.drain(g, id, now);
                    sends += self.queue.len() - before;
                }
            }
        }
        sends
    }
}

#[test]
fn coalesced_heartbeats_send_one_frame_per_peer_per_interval() {
    const GROUPS: usize = 200;
    let mut gs = Groups::new(GROUPS);
    let mut now = Instant::ZERO;
    for g in 0..GROUPS {
        gs.engines[g].get_mut(&1).unwrap().campaign(now);
        gs.drain(g, 1, now);
    }
    gs.pump(now);
    assert!(gs.engines.iter().all(|e| e[&1].role() == Role::Leader));

    let interval = RaftConfig::default().heartbeat_interval;
    let mut frames_out = 0;
    let mut frames_back = 0;
    let mut heartbeats = 0;
    for _ in 0..100 {
        now += interval;
        // The engines' own timers never produce heartbeats in coalesced mode.
        assert_eq!(gs.timeouts(now), 0, "no spontaneous sends while idle");
        // The runtime's per-node ticker: one frame per (leader node, peer node).
        let mut frames: BTreeMap<(NodeId, NodeId), Vec<(usize, Message)>> = BTreeMap::new();
        for g in 0..GROUPS {
            for m in gs.engines[g].get_mut(&1).unwrap().take_heartbeats(now) {
                frames.entry((m.from, m.to)).or_default().push((g, m));
            }
        }
        frames_out += frames.len();
        heartbeats += frames.values().map(Vec::len).sum::<usize>();
        // The receiving runtime hands each group its heartbeat and packs the answers.
        let mut replies: BTreeMap<(NodeId, NodeId), Vec<(usize, Message)>> = BTreeMap::new();
        for ((_, to), batch) in frames {
            for (g, m) in batch {
                let r = gs.engines[g].get_mut(&to).unwrap();
                r.handle(now, Input::Message(m));
                while let Some(e) = r.poll_effect() {
                    if let Effect::Send(reply) = e {
                        assert!(matches!(reply.body, MessageBody::HeartbeatResp(_)));
                        replies
                            .entry((reply.from, reply.to))
                            .or_default()
                            .push((g, reply));
                    }
                }
            }
        }
        frames_back += replies.len();
        for (_, batch) in replies {
            for (g, m) in batch {
                gs.engines[g].get_mut(&1).unwrap().handle(now, Input::Message(m));
                gs.drain(g, 1, now);
            }
        }
        gs.pump(now);
    }
    assert_eq!(heartbeats, 100 * GROUPS * 2, "every group heartbeats every peer");
    assert_eq!(frames_out, 100 * 2, "one frame per peer node per interval");
    assert_eq!(frames_back, 100 * 2, "one reply frame per peer node per interval");
    // 15 s of idle time: nobody lost its leader (heartbeats kept followers quiet).
    for e in &gs.engines {
        assert_eq!(e[&1].role(), Role::Leader);
        assert_eq!(e[&2].leader(), Some(1));
        assert_eq!(e[&3].term(), 1);
    }
    // And the groups still replicate.
    let r = gs.engines[7].get_mut(&1).unwrap();
    let id = r.propose(now, Bytes::from_static(b"x"), 1).unwrap();
    gs.drain(7, 1, now);
    gs.pump(now);
    assert!(gs.engines[7][&1].commit_index() >= Some(id.index));
}
