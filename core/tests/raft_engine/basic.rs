//! Smoke tests of the whole engine through the harness.

use std::time::Duration;

use oxbow_core::raft::*;

use crate::harness::{Cluster, Options};

pub fn elect(c: &mut Cluster) -> NodeId {
    assert!(
        c.run_until(Duration::from_secs(10), |c| c.leader().is_some()),
        "no leader elected"
    );
    c.leader().unwrap()
}

#[test]
fn three_nodes_elect_and_commit() {
    let mut c = Cluster::new(Options::new(3, 1));
    let l = elect(&mut c);
    let id = c.propose(l, "hello", 3).unwrap();
    assert!(c.run_until(Duration::from_secs(1), |c| c.all_applied(id.index)));
    for n in c.ids() {
        assert_eq!(c.raft(n).commit_index(), Some(id.index));
        assert_eq!(c.raft(n).leader(), Some(l));
    }
    c.check_log_matching();
}

#[test]
fn single_node_elects_itself() {
    let mut c = Cluster::new(Options::new(1, 2));
    let l = elect(&mut c);
    assert_eq!(l, 1);
    let id = c.propose(1, "x", 1).unwrap();
    assert!(c.run_until(Duration::from_millis(100), |c| c.all_applied(id.index)));
}

#[test]
fn leader_crash_then_new_leader_keeps_committed() {
    let mut c = Cluster::new(Options::new(5, 3));
    let l = elect(&mut c);
    let mut last = None;
    for i in 0..20 {
        last = Some(c.propose(l, &format!("v{i}"), 2).unwrap());
    }
    let last = last.unwrap();
    assert!(c.run_until(Duration::from_secs(1), |c| c.all_applied(last.index)));
    c.crash(l);
    assert!(c.run_until(Duration::from_secs(10), |c| c.leader().is_some_and(|n| n != l)));
    let l2 = c.leader().unwrap();
    let id = c.propose(l2, "after", 1).unwrap();
    assert!(c.run_until(Duration::from_secs(2), |c| c.all_applied(id.index)));
    c.restart(l);
    assert!(c.run_until(Duration::from_secs(3), |c| c.all_applied(id.index)));
    c.check_log_matching();
}
