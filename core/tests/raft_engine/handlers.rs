//! Unit tests per message handler and per input: one engine, messages written by hand,
//! effects asserted exactly.

use std::time::Duration;

use bytes::Bytes;
use oxbow_core::raft::*;
use oxbow_core::time::Instant;

const T0: Instant = Instant::ZERO;

fn cfg() -> RaftConfig {
    RaftConfig::default()
}

fn node(id: NodeId, rec: RecoveredState) -> Raft {
    let m = Membership::with_voters([1, 2, 3]).unwrap();
    Raft::new(id, cfg(), m, rec, 42, T0).unwrap()
}

fn effects(r: &mut Raft) -> Vec<Effect> {
    std::iter::from_fn(|| r.poll_effect()).collect()
}

fn sends(effects: &[Effect]) -> Vec<Message> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Send(m) = e {
                Some(m.clone())
            } else {
                None
            }
        })
        .collect()
}

fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Input {
    Input::Message(Message { from, to, term, body })
}

/// The leader's next heartbeat round, answered by node 2 (in `term`) as having received
/// nothing since the last round — how a leader learns its last append was lost.
/// Returns the round's time and the leader's effects after the answer.
fn heartbeat_round_that_received_nothing(r: &mut Raft, term: Term) -> (Instant, Vec<Effect>) {
    let t1 = T0 + cfg().heartbeat_interval;
    r.handle_timeout(t1);
    effects(r);
    let hb = HeartbeatResponse {
        round: 1,
        received: None,
    };
    r.handle(t1, msg(2, 1, term, MessageBody::HeartbeatResp(hb)));
    (t1, effects(r))
}

fn data(term: Term, index: Index, count: u64, p: &'static str) -> Entry {
    Entry::data(term, index, count, Bytes::from_static(p.as_bytes()))
}

/// A follower of leader 1 in term 2 whose log holds `entries` durably.
fn follower_with(entries: &[Entry], term: Term) -> Raft {
    let mut bounds: Vec<(Term, Index)> = Vec::new();
    for e in entries {
        if bounds.last().is_none_or(|b| b.0 != e.term) {
            bounds.push((e.term, e.index));
        }
    }
    let rec = RecoveredState {
        hard_state: HardState { term, vote: None },
        term_boundaries: bounds,
        last_index: entries.last().map(|e| e.last_index),
        ..RecoveredState::default()
    };
    let mut r = node(2, rec);
    effects(&mut r);
    r
}

fn complete_writes(r: &mut Raft, effects: &[Effect]) {
    for e in effects {
        match e {
            Effect::Append { write_id, .. }
            | Effect::Truncate { write_id, .. }
            | Effect::WriteSnapshotChunk { write_id, .. }
            | Effect::InstallSnapshot { write_id, .. } => {
                r.handle(T0, Input::WriteDurable { write_id: *write_id })
            }
            Effect::PersistHardState(hs) => r.handle(T0, Input::HardStateDurable(*hs)),
            _ => {}
        }
    }
}

// ----- vote / pre-vote ------------------------------------------------------------------

#[test]
fn vote_is_sent_only_after_hard_state_is_durable() {
    let mut r = node(2, RecoveredState::default());
    effects(&mut r);
    let req = VoteRequest {
        last_log: None,
        transfer: false,
    };
    r.handle(T0, msg(3, 2, 1, MessageBody::Vote(req)));
    let e = effects(&mut r);
    assert_eq!(
        e,
        vec![
            Effect::PersistHardState(HardState { term: 1, vote: None }),
            Effect::PersistHardState(HardState {
                term: 1,
                vote: Some(3)
            }),
            Effect::RoleChanged {
                role: Role::Follower,
                term: 1,
                leader: None
            },
        ]
    );
    // The first completion is not enough: the vote itself is not durable yet.
    r.handle(T0, Input::HardStateDurable(HardState { term: 1, vote: None }));
    assert!(sends(&effects(&mut r)).is_empty());
    r.handle(
        T0,
        Input::HardStateDurable(HardState {
            term: 1,
            vote: Some(3),
        }),
    );
    let s = sends(&effects(&mut r));
    assert_eq!(
        s,
        vec![Message {
            from: 2,
            to: 3,
            term: 1,
            body: MessageBody::VoteResp(VoteResponse { granted: true })
        }]
    );
    // A late duplicate completion is dropped with a reason.
    r.handle(T0, Input::HardStateDurable(HardState { term: 1, vote: None }));
    assert_eq!(r.stats().last_drop, Some(DropReason::StaleCompletion));
}

#[test]
fn vote_requests_from_a_node_of_an_unseen_configuration_are_answered() {
    // Node 2 knows only the bootstrap voters {1, 2, 3}; node 9 is a voter of a
    // configuration node 2 has not received yet. Voting never depends on the
    // configuration (dissertation §4.1): dropping the request could leave the newer
    // configuration without a quorum of willing voters.
    let mut r = node(2, RecoveredState::default());
    effects(&mut r);
    let req = VoteRequest {
        last_log: None,
        transfer: false,
    };
    r.handle(T0, msg(9, 2, 1, MessageBody::PreVote(req)));
    let s = sends(&effects(&mut r));
    assert_eq!(
        s,
        vec![Message {
            from: 2,
            to: 9,
            term: 1,
            body: MessageBody::PreVoteResp(VoteResponse { granted: true })
        }]
    );
    assert_eq!(r.term(), 0, "a pre-vote changes nothing");
    r.handle(T0, msg(9, 2, 1, MessageBody::Vote(req)));
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    let s = sends(&effects(&mut r));
    assert_eq!(
        s,
        vec![Message {
            from: 2,
            to: 9,
            term: 1,
            body: MessageBody::VoteResp(VoteResponse { granted: true })
        }]
    );
    assert_eq!(
        r.hard_state(),
        HardState {
            term: 1,
            vote: Some(9)
        }
    );
    assert_eq!(r.stats().dropped(DropReason::UnknownSender), 0);
    // Answers from unknown nodes still count for nothing.
    r.handle(
        T0,
        msg(9, 2, 1, MessageBody::VoteResp(VoteResponse { granted: true })),
    );
    assert_eq!(r.stats().last_drop, Some(DropReason::UnknownSender));
}

#[test]
fn vote_denied_to_a_candidate_with_an_older_log_and_once_voted() {
    let mut r = follower_with(&[data(1, 0, 1, "a"), data(2, 1, 2, "b")], 2);
    let behind = VoteRequest {
        last_log: Some(LogId::new(1, 5)),
        transfer: false,
    };
    r.handle(T0, msg(3, 2, 3, MessageBody::Vote(behind)));
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    let s = sends(&effects(&mut r));
    assert_eq!(s[0].body, MessageBody::VoteResp(VoteResponse { granted: false }));
    let ok = VoteRequest {
        last_log: Some(LogId::new(2, 2)),
        transfer: false,
    };
    r.handle(T0, msg(1, 2, 3, MessageBody::Vote(ok)));
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    assert_eq!(
        sends(&effects(&mut r))[0].body,
        MessageBody::VoteResp(VoteResponse { granted: true })
    );
    // Already voted for 1 in term 3: node 3 is refused even with a good log.
    r.handle(T0, msg(3, 2, 3, MessageBody::Vote(ok)));
    assert_eq!(
        sends(&effects(&mut r))[0].body,
        MessageBody::VoteResp(VoteResponse { granted: false })
    );
    assert_eq!(
        r.hard_state(),
        HardState {
            term: 3,
            vote: Some(1)
        }
    );
}

#[test]
fn pre_vote_changes_no_state() {
    let mut r = follower_with(&[data(1, 0, 1, "a")], 1);
    let req = VoteRequest {
        last_log: Some(LogId::new(1, 0)),
        transfer: false,
    };
    r.handle(T0, msg(3, 2, 2, MessageBody::PreVote(req)));
    let e = effects(&mut r);
    assert_eq!(
        e,
        vec![Effect::Send(Message {
            from: 2,
            to: 3,
            term: 2,
            body: MessageBody::PreVoteResp(VoteResponse { granted: true })
        })]
    );
    assert_eq!(r.hard_state(), HardState { term: 1, vote: None });
}

#[test]
fn vote_requests_are_ignored_inside_the_leader_lease_unless_transfer() {
    let mut r = follower_with(&[data(1, 0, 1, "a")], 1);
    let hb = HeartbeatRequest {
        commit: None,
        round: 1,
    };
    r.handle(T0, msg(1, 2, 1, MessageBody::Heartbeat(hb)));
    effects(&mut r);
    let req = VoteRequest {
        last_log: Some(LogId::new(1, 0)),
        transfer: false,
    };
    let soon = T0 + Duration::from_millis(500);
    r.handle(soon, msg(3, 2, 2, MessageBody::Vote(req)));
    assert_eq!(r.stats().dropped(DropReason::LeaderLease), 1);
    assert_eq!(r.term(), 1);
    assert!(effects(&mut r).is_empty());
    let transfer = VoteRequest {
        transfer: true,
        ..req
    };
    r.handle(soon, msg(3, 2, 2, MessageBody::Vote(transfer)));
    assert_eq!(
        r.hard_state(),
        HardState {
            term: 2,
            vote: Some(3)
        }
    );
}

#[test]
fn candidate_counts_own_vote_only_when_durable() {
    let m = Membership::with_voters([1, 2, 3]).unwrap();
    let c = RaftConfig {
        pre_vote: false,
        ..cfg()
    };
    let mut r = Raft::new(1, c, m, RecoveredState::default(), 1, T0).unwrap();
    r.campaign(T0);
    let e = effects(&mut r);
    assert!(e.contains(&Effect::PersistHardState(HardState {
        term: 1,
        vote: Some(1)
    })));
    assert!(sends(&e).is_empty(), "vote requests wait for the durable vote");
    r.handle(
        T0,
        msg(2, 1, 1, MessageBody::VoteResp(VoteResponse { granted: true })),
    );
    assert_eq!(
        r.role(),
        Role::Candidate,
        "one grant without the own durable vote is no majority"
    );
    r.handle(
        T0,
        Input::HardStateDurable(HardState {
            term: 1,
            vote: Some(1),
        }),
    );
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn priority_zero_never_campaigns_and_refuses_timeout_now() {
    let m = Membership::new([(1, 1), (2, 0), (3, 1)], []).unwrap();
    let mut r = Raft::new(2, cfg(), m, RecoveredState::default(), 1, T0).unwrap();
    assert_eq!(r.poll_timeout(), None, "no election timer");
    r.handle_timeout(T0 + Duration::from_secs(100));
    assert_eq!(r.role(), Role::Follower);
    r.handle(T0, msg(1, 2, 0, MessageBody::TimeoutNow));
    assert_eq!(r.stats().last_drop, Some(DropReason::CannotLead));
}

#[test]
fn lower_priority_waits_then_relaxes() {
    let m = Membership::new([(1, 3), (2, 1), (3, 1)], []).unwrap();
    let mut r = Raft::new(2, cfg(), m, RecoveredState::default(), 1, T0).unwrap();
    assert_eq!(r.target_priority(), 3);
    let mut waits = 0;
    while r.role() == Role::Follower {
        let now = r.poll_timeout().unwrap();
        r.handle_timeout(now);
        waits += 1;
        assert!(waits < 10);
    }
    // Max priority 3 in 3 steps: one step per timeout, 3 -> 2 -> 1, then it may campaign.
    assert_eq!(r.stats().priority_waits, 2);
    assert_eq!(r.role(), Role::PreCandidate);
}

// ----- append ---------------------------------------------------------------------------

#[test]
fn append_conflict_truncates_then_acks_only_when_durable() {
    let mut r = follower_with(&[data(1, 0, 1, "a"), data(1, 1, 3, "b"), data(1, 4, 1, "c")], 1);
    // Leader of term 2 has "a" then its own entry at 1..=2.
    let req = AppendRequest {
        prev: Some(LogId::new(1, 0)),
        entries: vec![data(2, 1, 2, "x")],
        commit: Some(0),
    };
    r.handle(T0, msg(1, 2, 2, MessageBody::Append(req)));
    let e = effects(&mut r);
    let kinds: Vec<&str> = e
        .iter()
        .map(|e| match e {
            Effect::PersistHardState(_) => "hs",
            Effect::Truncate { from_index: 1, .. } => "truncate@1",
            Effect::Append { .. } => "append",
            Effect::CommitAdvanced { commit: 0 } => "commit0",
            Effect::ReadEntries { .. } => "read",
            Effect::RoleChanged { .. } => "role",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["hs", "truncate@1", "append", "commit0", "read", "role"]
    );
    assert!(sends(&e).is_empty(), "no ack before durability");
    assert_eq!(r.last_log_id(), Some(LogId::new(2, 2)));
    complete_writes(&mut r, &e);
    // Acks follow durability: the truncation's completion already proves offset 0, the
    // append's proves the rest.
    let s = sends(&effects(&mut r));
    let acks: Vec<MessageBody> = s.into_iter().map(|m| m.body).collect();
    assert_eq!(
        acks,
        vec![
            MessageBody::AppendResp(AppendResponse::Accepted { match_index: Some(0) }),
            MessageBody::AppendResp(AppendResponse::Accepted { match_index: Some(2) }),
        ]
    );
}

#[test]
fn append_mismatch_is_rejected_with_a_backtracking_hint() {
    // Follower: t1 at 0..=3, t3 at 4..=5. Leader says prev = (t4, 5).
    let mut r = follower_with(&[data(1, 0, 4, "a"), data(3, 4, 2, "b")], 4);
    let req = AppendRequest {
        prev: Some(LogId::new(4, 5)),
        entries: vec![],
        commit: None,
    };
    r.handle(T0, msg(1, 2, 4, MessageBody::Append(req)));
    let s = sends(&effects(&mut r));
    let hint = Some(LogId::new(3, 5));
    assert_eq!(
        s[0].body,
        MessageBody::AppendResp(AppendResponse::Rejected {
            rejected_prev: 5,
            hint
        })
    );
    // prev term 2 at offset 9 (beyond the log): largest offset with term <= 2 is 3.
    let req = AppendRequest {
        prev: Some(LogId::new(2, 9)),
        entries: vec![],
        commit: None,
    };
    r.handle(T0, msg(1, 2, 4, MessageBody::Append(req)));
    let s = sends(&effects(&mut r));
    let hint = Some(LogId::new(1, 3));
    assert_eq!(
        s[0].body,
        MessageBody::AppendResp(AppendResponse::Rejected {
            rejected_prev: 9,
            hint
        })
    );
}

#[test]
fn malformed_append_is_dropped_with_a_reason() {
    let mut r = follower_with(&[data(1, 0, 1, "a")], 1);
    let gap = AppendRequest {
        prev: Some(LogId::new(1, 0)),
        entries: vec![data(1, 5, 1, "x")],
        commit: None,
    };
    r.handle(T0, msg(1, 2, 1, MessageBody::Append(gap)));
    assert_eq!(r.stats().last_drop, Some(DropReason::Malformed));
    let future_term = AppendRequest {
        prev: Some(LogId::new(1, 0)),
        entries: vec![data(9, 1, 1, "x")],
        commit: None,
    };
    r.handle(T0, msg(1, 2, 1, MessageBody::Append(future_term)));
    assert_eq!(r.stats().dropped(DropReason::Malformed), 2);
    assert_eq!(r.last_log_id(), Some(LogId::new(1, 0)));
}

#[test]
fn stale_leader_is_told_the_newer_term() {
    let mut r = follower_with(&[data(1, 0, 1, "a")], 5);
    let req = AppendRequest {
        prev: None,
        entries: vec![],
        commit: None,
    };
    r.handle(T0, msg(1, 2, 3, MessageBody::Append(req)));
    let s = sends(&effects(&mut r));
    assert_eq!(s[0].term, 5);
    assert!(matches!(s[0].body, MessageBody::HeartbeatResp(_)));
    assert_eq!(r.stats().last_drop, Some(DropReason::StaleTerm));
}

#[test]
fn wrong_recipient_and_unknown_sender_are_dropped() {
    let mut r = follower_with(&[], 1);
    let hb = HeartbeatRequest {
        commit: None,
        round: 1,
    };
    r.handle(T0, msg(1, 7, 1, MessageBody::Heartbeat(hb)));
    assert_eq!(r.stats().last_drop, Some(DropReason::WrongRecipient));
    r.handle(
        T0,
        msg(9, 2, 1, MessageBody::VoteResp(VoteResponse { granted: true })),
    );
    assert_eq!(r.stats().last_drop, Some(DropReason::UnknownSender));
    // A leader message from an unknown node at a current term is processed (it may be a
    // leader added by a configuration this node has not seen yet).
    r.handle(T0, msg(9, 2, 1, MessageBody::Heartbeat(hb)));
    assert_eq!(r.stats().unknown_leader_accepted, 1);
    assert_eq!(r.leader(), Some(9));
}

#[test]
fn heartbeat_advances_commit_and_echoes_the_round() {
    let mut r = follower_with(&[data(1, 0, 1, "a"), data(1, 1, 1, "b")], 1);
    r.handle(
        T0,
        msg(
            1,
            2,
            1,
            MessageBody::Heartbeat(HeartbeatRequest {
                commit: Some(1),
                round: 7,
            }),
        ),
    );
    let e = effects(&mut r);
    assert!(e.contains(&Effect::CommitAdvanced { commit: 1 }));
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::ReadEntries {
            target: ReadTarget::Apply,
            from_index: 0,
            ..
        }
    )));
    let s = sends(&e);
    assert_eq!(
        s[0].body,
        MessageBody::HeartbeatResp(HeartbeatResponse {
            round: 7,
            received: None
        })
    );
}

#[test]
fn responses_at_a_follower_are_unexpected() {
    let mut r = follower_with(&[], 1);
    r.handle(
        T0,
        msg(
            1,
            2,
            1,
            MessageBody::AppendResp(AppendResponse::Accepted { match_index: None }),
        ),
    );
    assert_eq!(r.stats().last_drop, Some(DropReason::UnexpectedMessage));
}

// ----- leader side ----------------------------------------------------------------------

fn single_leader(cache_bytes: usize) -> Raft {
    let m = Membership::with_voters([1]).unwrap();
    let c = RaftConfig {
        entry_cache_bytes: cache_bytes,
        ..cfg()
    };
    let mut r = Raft::new(1, c, m, RecoveredState::default(), 1, T0).unwrap();
    r.campaign(T0);
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    assert_eq!(r.role(), Role::Leader);
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    effects(&mut r);
    r
}

#[test]
fn leader_counts_itself_only_up_to_its_durable_offset() {
    let mut r = single_leader(1 << 20);
    let id = r.propose(T0, Bytes::from_static(b"x"), 3).unwrap();
    assert_eq!(id, LogId::new(1, 3));
    let e = effects(&mut r);
    assert_eq!(r.commit_index(), Some(0), "not durable yet");
    complete_writes(&mut r, &e);
    assert_eq!(r.commit_index(), Some(3));
    let applied: Vec<Effect> = effects(&mut r);
    assert!(applied
        .iter()
        .any(|e| matches!(e, Effect::Apply { entries } if entries[0].index == 1)));
}

#[test]
fn proposals_are_batched_into_one_write() {
    let mut r = single_leader(1 << 20);
    for _ in 0..10 {
        r.propose(T0, Bytes::from_static(b"x"), 1).unwrap();
    }
    let e = effects(&mut r);
    let appends: Vec<usize> = e
        .iter()
        .filter_map(|e| {
            if let Effect::Append { entries, .. } = e {
                Some(entries.len())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(appends, vec![10]);
}

#[test]
fn follower_refuses_proposals_and_config_changes() {
    let mut r = follower_with(&[], 1);
    assert_eq!(
        r.propose(T0, Bytes::new(), 1),
        Err(ProposeError::NotLeader { leader: None })
    );
    assert!(matches!(
        r.propose_config_change(T0, ConfigChange::AddLearner(4)),
        Err(ConfigChangeError::Propose(ProposeError::NotLeader { .. }))
    ));
    assert_eq!(r.transfer_leadership(T0, 3), Err(TransferError::NotLeader));
}

#[test]
fn applying_uncached_entries_goes_through_reads_and_drops_stale_answers() {
    let mut r = single_leader(64); // cache too small for anything
    r.propose(T0, Bytes::from_static(b"payload-that-does-not-fit"), 1)
        .unwrap();
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    let e = effects(&mut r);
    let read = e.iter().find_map(|e| match e {
        Effect::ReadEntries {
            read_id,
            from_index,
            target: ReadTarget::Apply,
            ..
        } => Some((*read_id, *from_index)),
        _ => None,
    });
    let (read_id, from) = read.expect("an apply read");
    assert_eq!(from, 1);
    r.handle(
        T0,
        Input::EntriesRead {
            read_id: ReadId(999),
            result: Ok(vec![]),
        },
    );
    assert_eq!(r.stats().last_drop, Some(DropReason::StaleCompletion));
    let entry = Entry::data(1, 1, 1, Bytes::from_static(b"payload-that-does-not-fit"));
    r.handle(
        T0,
        Input::EntriesRead {
            read_id,
            result: Ok(vec![entry.clone()]),
        },
    );
    let e = effects(&mut r);
    assert_eq!(e, vec![Effect::Apply { entries: vec![entry] }]);
    assert_eq!(r.applied_index(), Some(1));
}

#[test]
fn snapshot_taken_compacts_and_reports_membership() {
    let mut r = single_leader(1 << 20);
    r.propose(T0, Bytes::from_static(b"x"), 2).unwrap();
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    effects(&mut r);
    assert_eq!(r.snapshot_taken(T0, 9), Err(SnapshotError::NotApplied(9)));
    let meta = r.snapshot_taken(T0, 2).unwrap();
    assert_eq!(meta.last, LogId::new(1, 2));
    assert_eq!(meta.membership, Membership::with_voters([1]).unwrap());
    assert_eq!(effects(&mut r), vec![Effect::CompactLog { through_index: 2 }]);
    assert_eq!(r.snapshot_taken(T0, 2), Err(SnapshotError::AlreadyCovered(2)));
    assert_eq!(r.log_meta().first_index(), 3);
}

// ----- snapshots at a follower ------------------------------------------------------------

#[test]
fn follower_installs_a_snapshot_chunk_by_chunk() {
    let mut r = follower_with(&[data(1, 0, 1, "old")], 1);
    let meta = SnapshotMeta {
        last: LogId::new(2, 50),
        membership: Membership::with_voters([1, 2, 3]).unwrap(),
    };
    let chunk = |offset, data: &'static [u8], done| {
        MessageBody::InstallSnapshot(SnapshotChunk {
            meta: meta.clone(),
            offset,
            data: Bytes::from_static(data),
            done,
        })
    };
    r.handle(T0, msg(1, 2, 2, chunk(0, b"abc", false)));
    let e = effects(&mut r);
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::WriteSnapshotChunk {
            offset: 0,
            done: false,
            ..
        }
    )));
    // An out-of-order chunk is answered with the offset expected.
    r.handle(T0, msg(1, 2, 2, chunk(9, b"zzz", false)));
    assert!(
        effects(&mut r).is_empty(),
        "nothing while the first chunk is being written"
    );
    complete_writes(&mut r, &e);
    let s = sends(&effects(&mut r));
    let resp = SnapshotResponse {
        snapshot: meta.last,
        next_offset: 3,
        installed: false,
    };
    assert_eq!(s.last().unwrap().body, MessageBody::InstallSnapshotResp(resp));
    r.handle(T0, msg(1, 2, 2, chunk(3, b"de", true)));
    let e = effects(&mut r);
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::InstallSnapshot {
            discard_log: true,
            ..
        }
    )));
    assert!(
        !e.iter().any(|e| matches!(e, Effect::RestoreSnapshot { .. })),
        "restore waits for durability"
    );
    complete_writes(&mut r, &e);
    let e = effects(&mut r);
    assert!(e.contains(&Effect::RestoreSnapshot { meta: meta.clone() }));
    let resp = SnapshotResponse {
        snapshot: meta.last,
        next_offset: 0,
        installed: true,
    };
    assert!(sends(&e)
        .iter()
        .any(|m| m.body == MessageBody::InstallSnapshotResp(resp)));
    assert_eq!(r.commit_index(), Some(50));
    assert_eq!(r.applied_index(), Some(50));
    assert_eq!(r.log_meta().first_index(), 51);
}

// ----- recovery -----------------------------------------------------------------------------

#[test]
fn recovery_rejects_inconsistent_metadata_and_restores_configs() {
    let m = Membership::with_voters([1, 2, 3]).unwrap();
    let bad = RecoveredState {
        term_boundaries: vec![(2, 0), (1, 3)],
        last_index: Some(5),
        ..RecoveredState::default()
    };
    assert!(matches!(
        Raft::new(1, cfg(), m.clone(), bad, 1, T0),
        Err(InitError::Log(_))
    ));
    let behind = RecoveredState {
        hard_state: HardState { term: 1, vote: None },
        term_boundaries: vec![(3, 0)],
        last_index: Some(0),
        ..RecoveredState::default()
    };
    assert!(matches!(
        Raft::new(1, cfg(), m.clone(), behind, 1, T0),
        Err(InitError::TermBehindLog(1, 3))
    ));
    let next = m.apply(ConfigChange::AddLearner(4)).unwrap();
    let rec = RecoveredState {
        hard_state: HardState { term: 2, vote: None },
        term_boundaries: vec![(2, 0)],
        last_index: Some(1),
        config_entries: vec![Entry::config(2, 1, &next)],
        commit_hint: Some(7),
        ..RecoveredState::default()
    };
    let r = Raft::new(1, cfg(), m, rec, 1, T0).unwrap();
    assert_eq!(r.membership(), &next);
    assert_eq!(r.commit_index(), Some(1), "hint capped at the log's end");
}

#[test]
fn a_leader_alone_wakes_once_per_election_timeout_not_per_heartbeat() {
    let mut r = single_leader(1 << 20);
    let first = r.poll_timeout().expect("check-quorum");
    assert!(
        first >= T0 + cfg().election_timeout,
        "{first:?}: no heartbeat tick"
    );
    r.handle_timeout(first);
    assert_eq!(r.role(), Role::Leader);
    assert!(effects(&mut r).is_empty());
    let next = r.poll_timeout().expect("check-quorum");
    assert!(
        next >= first + cfg().election_timeout,
        "{next:?}: no heartbeat tick"
    );
    // Long idle; then a learner joins: heartbeats resume, counted from the change.
    let later = T0 + Duration::from_secs(3600);
    r.handle_timeout(later);
    r.propose_config_change(later, ConfigChange::AddLearner(2))
        .unwrap();
    let deadline = r.poll_timeout().expect("a leader with a learner has timers");
    assert!(
        deadline > later,
        "deadline {deadline:?} restarts after the change at {later:?}"
    );
    assert!(deadline <= later + cfg().heartbeat_interval);
    r.handle_timeout(later + cfg().election_timeout);
    assert_eq!(r.role(), Role::Leader);
}

// ----- leader: rejections -------------------------------------------------------------------

/// Node 1 elected leader of voters {1, 2, 3} one term past `rec`'s, with `cache_bytes`
/// of entry cache; returns it and the effects of its first flush (the no-op's write, the
/// first probe or read per follower).
fn leader_of_three(rec: RecoveredState, cache_bytes: usize) -> (Raft, Vec<Effect>) {
    let m = Membership::with_voters([1, 2, 3]).unwrap();
    let c = RaftConfig {
        pre_vote: false,
        entry_cache_bytes: cache_bytes,
        ..cfg()
    };
    let term = rec.hard_state.term + 1;
    let mut r = Raft::new(1, c, m, rec, 1, T0).unwrap();
    r.campaign(T0);
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    effects(&mut r);
    let granted = MessageBody::VoteResp(VoteResponse { granted: true });
    r.handle(T0, msg(2, 1, term, granted));
    assert_eq!(r.role(), Role::Leader);
    let e = effects(&mut r);
    (r, e)
}

fn rejected(rejected_prev: Index, hint: Option<LogId>) -> MessageBody {
    MessageBody::AppendResp(AppendResponse::Rejected { rejected_prev, hint })
}

fn accepted(match_index: Index) -> MessageBody {
    MessageBody::AppendResp(AppendResponse::Accepted {
        match_index: Some(match_index),
    })
}

/// The `prev` and first entry offset of each append sent to `to`.
fn appends_to(to: NodeId, effects: &[Effect]) -> Vec<(Option<LogId>, Option<Index>)> {
    sends(effects)
        .into_iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match m.body {
            MessageBody::Append(a) => Some((a.prev, a.entries.first().map(|e| e.index))),
            _ => None,
        })
        .collect()
}

fn peer_reads(peer: NodeId, effects: &[Effect]) -> Vec<(ReadId, Index)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ReadEntries {
                read_id,
                target: ReadTarget::Peer(p),
                from_index,
                ..
            } if *p == peer => Some((*read_id, *from_index)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_duplicated_rejection_while_the_next_probe_is_read_from_disk_is_dropped() {
    // Leader of term 2 over a t1 log 0..=9; no cache, so every append is read from disk.
    let rec = RecoveredState {
        hard_state: HardState { term: 1, vote: None },
        term_boundaries: vec![(1, 0)],
        last_index: Some(9),
        ..RecoveredState::default()
    };
    let (mut r, e) = leader_of_three(rec, 0);
    let reads = peer_reads(2, &e);
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].1, 10, "the first probe carries the no-op");
    r.handle(
        T0,
        Input::EntriesRead {
            read_id: reads[0].0,
            result: Ok(vec![Entry::noop(2, 10)]),
        },
    );
    let e = effects(&mut r);
    assert_eq!(appends_to(2, &e), vec![(Some(LogId::new(1, 9)), Some(10))]);
    // Node 2's log ends at 4: the probe is rejected, the next one needs a read from 5.
    let no = rejected(9, Some(LogId::new(1, 4)));
    r.handle(T0, msg(2, 1, 2, no.clone()));
    let e = effects(&mut r);
    assert!(appends_to(2, &e).is_empty());
    assert_eq!(peer_reads(2, &e).iter().map(|r| r.1).collect::<Vec<_>>(), vec![5]);
    // The network delivers the rejection twice. The copy answers nothing in flight: no
    // second read, no send.
    let stale_before = r.stats().dropped(DropReason::StaleResponse);
    r.handle(T0, msg(2, 1, 2, no));
    assert_eq!(effects(&mut r), vec![]);
    assert_eq!(r.stats().dropped(DropReason::StaleResponse), stale_before + 1);
}

/// Leader 1 of term 1 with entries 0..=7 whose node 2 acknowledged 6 (commit 5: the
/// leader's own writes of 6 and 7 are not durable yet, and are returned). The append of
/// 7 went unanswered and the heartbeat answer showed it lost, so the leader probes node
/// 2 at prev 6 again, at `T0 + heartbeat_interval` (returned).
fn leader_probing_an_acknowledged_offset() -> (Raft, Instant, Vec<Effect>) {
    let (mut r, e) = leader_of_three(RecoveredState::default(), 1 << 20);
    assert_eq!(appends_to(2, &e), vec![(None, Some(0))]);
    complete_writes(&mut r, &e);
    r.handle(T0, msg(2, 1, 1, accepted(0)));
    for _ in 0..5 {
        r.propose(T0, Bytes::from_static(b"x"), 1).unwrap();
    }
    let e = effects(&mut r);
    complete_writes(&mut r, &e);
    r.handle(T0, msg(2, 1, 1, accepted(5)));
    assert_eq!(r.commit_index(), Some(5));
    r.propose(T0, Bytes::from_static(b"x"), 1).unwrap();
    let mut leader_writes = effects(&mut r);
    r.handle(T0, msg(2, 1, 1, accepted(6)));
    assert_eq!(r.commit_index(), Some(5), "the leader's own 6 is not durable yet");
    r.propose(T0, Bytes::from_static(b"x"), 1).unwrap();
    let e = effects(&mut r);
    assert_eq!(appends_to(2, &e), vec![(Some(LogId::new(1, 6)), Some(7))]);
    leader_writes.extend(e);
    let (t1, e) = heartbeat_round_that_received_nothing(&mut r, 1);
    assert_eq!(appends_to(2, &e), vec![(Some(LogId::new(1, 6)), Some(7))]);
    (r, t1, leader_writes)
}

#[test]
fn a_follower_that_lost_acknowledged_entries_is_probed_below_them_and_not_counted() {
    // Node 2 restarted having lost 3..=6 (a disk that lied about a sync).
    let (mut r, t1, leader_writes) = leader_probing_an_acknowledged_offset();
    // Rejected at 6, which node 2 acknowledged: the next probe goes just below it.
    let no = rejected(6, Some(LogId::new(1, 2)));
    r.handle(t1, msg(2, 1, 1, no.clone()));
    let e = effects(&mut r);
    assert_eq!(appends_to(2, &e), vec![(Some(LogId::new(1, 5)), Some(6))]);
    assert_eq!(r.stats().acknowledged_entries_lost, 0, "not confirmed yet");
    // A copy of the rejection sends nothing.
    r.handle(t1, msg(2, 1, 1, no));
    assert_eq!(effects(&mut r), vec![]);
    // That probe is rejected too: the loss is confirmed, and the hint leads to where
    // node 2's log ends.
    let no = rejected(5, Some(LogId::new(1, 2)));
    r.handle(t1, msg(2, 1, 1, no.clone()));
    let e = effects(&mut r);
    assert_eq!(appends_to(2, &e), vec![(Some(LogId::new(1, 2)), Some(3))]);
    assert_eq!(r.stats().acknowledged_entries_lost, 1);
    r.handle(t1, msg(2, 1, 1, no));
    assert_eq!(effects(&mut r), vec![]);
    assert_eq!(r.stats().acknowledged_entries_lost, 1);
    // Node 2's lost acknowledgement of 6 no longer counts towards commit.
    complete_writes(&mut r, &leader_writes);
    assert_eq!(r.commit_index(), Some(5));
    // Once node 2 has the entries again, commit moves.
    r.handle(t1, msg(2, 1, 1, accepted(7)));
    assert_eq!(r.commit_index(), Some(7));
    assert_eq!(r.stats().acknowledged_entries_lost, 1);
}

#[test]
fn a_late_rejection_below_the_acknowledged_offset_costs_one_probe() {
    // Node 2 has everything; a rejection of prev 6 it sent before it had 6 arrives now.
    let (mut r, t1, leader_writes) = leader_probing_an_acknowledged_offset();
    r.handle(t1, msg(2, 1, 1, rejected(6, Some(LogId::new(1, 0)))));
    let e = effects(&mut r);
    assert_eq!(
        appends_to(2, &e),
        vec![(Some(LogId::new(1, 5)), Some(6))],
        "just below, not by the stale hint"
    );
    complete_writes(&mut r, &leader_writes);
    assert_eq!(
        r.commit_index(),
        Some(5),
        "node 2 counts for nothing until it answers"
    );
    r.handle(t1, msg(2, 1, 1, accepted(7)));
    assert_eq!(r.commit_index(), Some(7));
    assert_eq!(r.stats().acknowledged_entries_lost, 0);
}

#[test]
fn a_lost_probe_is_sent_again_where_it_was_not_from_offset_zero() {
    // Leader of term 2 over a snapshot through 5 and t1 entries 6..=9.
    let rec = RecoveredState {
        hard_state: HardState { term: 1, vote: None },
        snapshot: Some(SnapshotMeta {
            last: LogId::new(1, 5),
            membership: Membership::with_voters([1, 2, 3]).unwrap(),
        }),
        term_boundaries: vec![(1, 6)],
        last_index: Some(9),
        ..RecoveredState::default()
    };
    let (mut r, e) = leader_of_three(rec, 1 << 20);
    assert_eq!(appends_to(2, &e), vec![(Some(LogId::new(1, 9)), Some(10))]);
    complete_writes(&mut r, &e);
    // The probe is lost: the heartbeat answer of the next round shows it.
    let (_, e) = heartbeat_round_that_received_nothing(&mut r, 2);
    // Nothing is known of node 2's log: probing from offset 0 would mean a snapshot.
    assert_eq!(appends_to(2, &e), vec![(Some(LogId::new(1, 9)), Some(10))]);
    assert!(!e.iter().any(|e| matches!(e, Effect::ReadSnapshotChunk { .. })));
    assert_eq!(r.stats().retransmits, 1);
}
