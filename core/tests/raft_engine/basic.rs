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

#[test]
fn recovery_of_a_lagging_follower_is_rate_limited() {
    let mut o = Options::new(3, 5);
    o.raft.entry_cache_bytes = 1024;
    o.raft.max_append_bytes = 1024;
    o.raft.snapshot_chunk_bytes = 1024;
    o.raft.recovery_rate_bytes_per_sec = 20_000;
    let mut c = Cluster::new(o);
    c.with(1, |r, now| r.campaign(now));
    let l = elect(&mut c);
    c.crash(3);
    let payload = "x".repeat(500);
    let mut last = None;
    for _ in 0..200 {
        last = Some(c.propose(l, &payload, 1).unwrap());
        c.run_for(Duration::from_millis(1));
    }
    let last = last.unwrap().index;
    assert!(c.run_until(Duration::from_secs(1), |c| c.raft(l).commit_index() == Some(last)));
    let before = c.raft(l).stats().recovery_bytes_sent;
    c.restart(3);
    let start = c.now;
    assert!(c.run_until(Duration::from_secs(60), |c| c.all_applied(last)));
    let took = c.now - start;
    let sent = c.raft(l).stats().recovery_bytes_sent - before;
    assert!(
        sent > 100_000,
        "the follower was recovered from disk reads: {sent}"
    );
    // Burst capacity is one second's worth (20 kB); the rest goes at 20 kB/s.
    let floor = Duration::from_secs_f64((sent as f64 - 20_000.0) / 20_000.0);
    assert!(
        took >= floor,
        "recovery took {took:?}, faster than the rate allows ({floor:?})"
    );
    assert!(
        took < floor + Duration::from_secs(2),
        "recovery took {took:?}, far slower than the rate"
    );
}

#[test]
fn transfer_to_an_unreachable_voter_times_out_and_writes_resume() {
    let mut c = Cluster::new(Options::new(3, 6));
    c.with(1, |r, now| r.campaign(now));
    let l = elect(&mut c);
    c.isolate(3);
    c.propose(l, "behind", 1).unwrap();
    c.run_for(Duration::from_millis(10));
    c.with(l, |r, now| r.transfer_leadership(now, 3))
        .unwrap()
        .unwrap();
    assert_eq!(c.propose(l, "during", 1), Err(ProposeError::TransferInProgress));
    c.run_for(Duration::from_millis(1600));
    assert_eq!(c.raft(l).stats().transfers_aborted, 1);
    assert_eq!(c.leader(), Some(l));
    assert!(c.propose(l, "after", 1).is_ok());
    assert_eq!(
        c.with(l, |r, now| r.transfer_leadership(now, 9)).unwrap(),
        Err(TransferError::CannotLead(9))
    );
}

#[test]
fn forced_step_down_leads_to_a_new_election() {
    let mut c = Cluster::new(Options::new(3, 8));
    c.with(1, |r, now| r.campaign(now));
    let l = elect(&mut c);
    let term = c.raft(l).term();
    c.with(l, |r, now| r.step_down(now));
    assert_eq!(c.raft(l).role(), Role::Follower);
    assert_eq!(c.leader(), None);
    assert!(c.run_until(Duration::from_secs(5), |c| c.leader().is_some()));
    assert!(c.raft(c.leader().unwrap()).term() > term);
    let id = c.propose(c.leader().unwrap(), "x", 1).unwrap();
    assert!(c.run_until(Duration::from_secs(1), |c| c.all_applied(id.index)));
}

#[test]
fn a_learner_is_promoted_only_once_caught_up_and_never_votes_before() {
    let mut o = Options::new(3, 9);
    o.extra_nodes = vec![4];
    let mut c = Cluster::new(o);
    c.with(1, |r, now| r.campaign(now));
    let l = elect(&mut c);
    c.isolate(4);
    let early = c
        .with(l, |r, now| {
            r.propose_config_change(now, ConfigChange::AddLearner(4))
        })
        .unwrap();
    assert_eq!(
        early,
        Err(ConfigChangeError::ChangeInProgress),
        "the new term has committed nothing yet"
    );
    c.run_for(Duration::from_millis(10));
    c.with(l, |r, now| {
        r.propose_config_change(now, ConfigChange::AddLearner(4))
    })
    .unwrap()
    .unwrap();
    for i in 0..1500 {
        c.propose(l, &format!("e{i}"), 1).unwrap();
    }
    c.run_for(Duration::from_millis(100));
    let r = c
        .with(l, |r, now| {
            r.propose_config_change(now, ConfigChange::PromoteLearner(4, 1))
        })
        .unwrap();
    assert_eq!(r, Err(ConfigChangeError::NotCaughtUp(4)));
    c.heal();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.raft(4).role(), Role::Follower);
    assert_eq!(
        c.raft(4).stats().elections_started + c.raft(4).stats().pre_votes_started,
        0
    );
    let id = c
        .with(l, |r, now| {
            r.propose_config_change(now, ConfigChange::PromoteLearner(4, 1))
        })
        .unwrap()
        .unwrap();
    assert!(c.run_until(Duration::from_secs(1), |c| c.all_applied(id.index)));
    assert!(c.raft(4).membership().is_voter(4));
    // One change at a time: a second change waits for the first to commit.
    c.with(l, |r, now| {
        r.propose_config_change(now, ConfigChange::RemoveNode(2))
    })
    .unwrap()
    .unwrap();
    let r = c
        .with(l, |r, now| {
            r.propose_config_change(now, ConfigChange::RemoveNode(3))
        })
        .unwrap();
    assert_eq!(r, Err(ConfigChangeError::ChangeInProgress));
}

/// A voter promoted while it was down (an empty learner is "caught up" on a short log)
/// restarts knowing only the bootstrap configuration. The only candidate able to win is a
/// voter added later, unknown to it: it must still answer that candidate's (pre-)votes.
#[test]
fn a_voter_that_missed_every_configuration_still_votes_for_newer_voters() {
    let mut o = Options::new(3, 11);
    o.extra_nodes = vec![4, 5];
    let mut c = Cluster::new(o);
    c.with(1, |r, now| r.campaign(now));
    let l = elect(&mut c);
    assert_eq!(l, 1);
    let change = |c: &mut Cluster, ch: ConfigChange| {
        let id = c
            .with(1, |r, now| r.propose_config_change(now, ch))
            .unwrap()
            .unwrap();
        assert!(
            c.run_until(Duration::from_secs(1), |c| {
                c.raft(1).commit_index() >= Some(id.index)
            }),
            "{ch:?} commits"
        );
    };
    c.propose(1, "a", 1).unwrap();
    c.run_for(Duration::from_millis(10));
    // 5 joins properly; 4 is added and promoted while down, its log empty.
    change(&mut c, ConfigChange::AddLearner(5));
    change(&mut c, ConfigChange::PromoteLearner(5, 1));
    c.crash(4);
    change(&mut c, ConfigChange::AddLearner(4));
    change(&mut c, ConfigChange::PromoteLearner(4, 1));
    // Voters {1, 3, 4, 5}: quorum 3, met by 1, 3 and 5.
    change(&mut c, ConfigChange::RemoveNode(2));
    // 5 gets an entry 3 lacks, so 3 cannot win 5's vote; then the leader dies.
    c.isolate(3);
    c.propose(1, "only on 1 and 5", 1).unwrap();
    assert!(c.run_until(Duration::from_secs(1), |c| {
        c.raft(5).durable_index() > c.raft(3).last_log_id().map(|l| l.index)
    }));
    c.crash(1);
    c.heal();
    c.restart(4);
    assert_eq!(
        c.raft(4).membership().voters().len(),
        3,
        "4 knows only the bootstrap"
    );
    assert!(!c.raft(4).membership().contains(5));
    // 5 can win only with the votes of 3 and 4.
    assert!(
        c.run_until(Duration::from_secs(10), |c| c.leader() == Some(5)),
        "5 is elected"
    );
    let id = c.propose(5, "after", 1).unwrap();
    assert!(c.run_until(Duration::from_secs(2), |c| {
        c.raft(5).commit_index() >= Some(id.index)
    }));
    c.check_log_matching();
}

/// Voters {1, 2}: leader 1 appends its own removal (config {2}, quorum 1: only 2's ack
/// counts) while 2 is cut off, so the removal cannot commit and check-quorum makes 1 step
/// down. 2 still uses {1, 2} and needs 1's vote, which 1 refuses (2 lacks the removal
/// entry). 1 is no voter in its latest configuration, yet the group needs it: it must
/// campaign under {2} (not counting itself), commit the removal, and hand over to 2
/// (dissertation §4.2.2). `demote` makes 1 a learner instead of removing it.
fn self_removal_with_the_only_other_voter_cut_off(change: ConfigChange, seed: u64) {
    let mut c = Cluster::new(Options::new(2, seed));
    c.with(1, |r, now| r.campaign(now));
    assert_eq!(elect(&mut c), 1);
    let id = c.propose(1, "a", 1).unwrap();
    assert!(c.run_until(Duration::from_secs(1), |c| c.all_applied(id.index)));
    c.isolate(2);
    let removal = c
        .with(1, |r, now| r.propose_config_change(now, change))
        .unwrap()
        .unwrap();
    // More writes on the removed leader's log only make it longer than 2's.
    c.propose(1, "b", 1).unwrap();
    c.run_for(Duration::from_secs(3));
    assert_ne!(c.raft(1).role(), Role::Leader, "1 stepped down on check-quorum");
    assert!(!c.raft(1).membership().is_voter(1));
    assert!(c.raft(1).commit_index() < Some(removal.index));
    assert!(!log_up_to_date(c.raft(2).last_log_id(), c.raft(1).last_log_id()));
    c.heal();
    assert!(
        c.run_until(Duration::from_secs(20), |c| c.leader() == Some(2)
            && c.raft(2).commit_index() >= Some(removal.index)),
        "2 leads with the removal committed; 1: {:?} {:?}, 2: {:?} {:?}",
        c.raft(1).role(),
        c.raft(1).stats(),
        c.raft(2).role(),
        c.raft(2).stats(),
    );
    assert!(!c.raft(2).membership().is_voter(1));
    let id = c.propose(2, "after", 1).unwrap();
    assert!(c.run_until(Duration::from_secs(2), |c| {
        c.raft(2).commit_index() >= Some(id.index)
    }));
    // The removal is committed: 1 no longer campaigns.
    let elections = c.raft(1).stats().pre_votes_started + c.raft(1).stats().elections_started;
    c.run_for(Duration::from_secs(5));
    assert_eq!(
        c.raft(1).stats().pre_votes_started + c.raft(1).stats().elections_started,
        elections
    );
    assert_eq!(c.leader(), Some(2));
    c.check_log_matching();
}

#[test]
fn a_leader_removed_by_an_uncommitted_entry_still_campaigns_to_commit_it() {
    for seed in 1..=5 {
        self_removal_with_the_only_other_voter_cut_off(ConfigChange::RemoveNode(1), seed);
    }
}

#[test]
fn a_leader_demoted_by_an_uncommitted_entry_still_campaigns_to_commit_it() {
    for seed in 1..=5 {
        self_removal_with_the_only_other_voter_cut_off(ConfigChange::DemoteVoter(1), seed);
    }
}

#[test]
fn a_follower_whose_disk_lost_acknowledged_entries_catches_up() {
    let mut o = Options::new(3, 11);
    o.net.dup_per_mille = 300;
    let mut c = Cluster::new(o);
    c.with(1, |r, now| r.campaign(now));
    let l = elect(&mut c);
    let mut last = None;
    for i in 0..20 {
        last = Some(c.propose(l, &format!("v{i}"), 1).unwrap());
    }
    let last = last.unwrap().index;
    assert!(c.run_until(Duration::from_secs(1), |c| c.all_applied(last)));
    let victim = if l == 3 { 2 } else { 3 };
    c.crash(victim);
    // The victim's disk lied about its syncs: the last ten entries it acknowledged are
    // gone after the restart.
    let disk = &mut c.nodes.get_mut(&victim).unwrap().durable;
    let keep = disk.log.len() - 10;
    disk.log.truncate(keep);
    disk.commit_hint = disk.commit_hint.min(disk.log.last().map(|e| e.last_index));
    c.restart(victim);
    let sent_before = c.messages_sent;
    let id = c.propose(l, "after", 1).unwrap();
    // Duplicated rejections are dropped, not each answered with a new probe: a storm
    // stops the run early.
    let max_messages = 1_000;
    let storm = |c: &Cluster| c.messages_sent - sent_before > max_messages;
    c.run_until(Duration::from_secs(5), |c| c.all_applied(id.index) || storm(c));
    assert!(
        !storm(&c),
        "over {max_messages} messages to catch one follower up"
    );
    assert!(
        c.all_applied(id.index),
        "the victim never caught up: {:?}",
        c.raft(victim).last_log_id()
    );
    assert_eq!(c.leader(), Some(l));
    assert!(c.raft(l).stats().acknowledged_entries_lost >= 1);
    c.check_log_matching();
}
