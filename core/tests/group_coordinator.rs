//! The group coordinator on its own: requests in, answers and log appends out, appends
//! acknowledged by the test (or failed), the log replayed into a fresh coordinator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use oxbow_core::group::{
    ClientInfo, CommitEntry, Coordinator, CoordinatorOutput, GroupConfig, GroupOp, GroupResult, ReplyId,
    TopicInfo, Topics,
};
use oxbow_core::kafka::protocol::messages as m;
use oxbow_core::kafka::protocol::protocol::StrBytes;
use oxbow_core::kafka::ErrorCode;
use oxbow_core::log::batch::iter_batches;
use oxbow_core::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A coordinator with a log the test keeps: every append is committed at once unless
/// the test holds appends back.
struct Harness {
    coordinator: Coordinator,
    now: Instant,
    log: BytesMut,
    next_offset: i64,
    replies: BTreeMap<u64, GroupResult>,
    next_reply: u64,
    hold_appends: bool,
    held: Vec<(u64, Bytes)>,
    trimmed_to: i64,
}

const WALL_MS: i64 = 1_700_000_000_000;

fn topics() -> Topics {
    [(
        "t".to_string(),
        TopicInfo {
            id: [7; 16],
            partitions: 8,
        },
    )]
    .into_iter()
    .collect()
}

impl Harness {
    fn new(config: GroupConfig) -> Harness {
        let mut coordinator = Coordinator::new(0, config, 42);
        coordinator.set_topics(Instant::ZERO, WALL_MS, topics());
        coordinator.begin_load(1);
        coordinator.finish_load(Instant::ZERO, WALL_MS);
        Harness {
            coordinator,
            now: Instant::ZERO,
            log: BytesMut::new(),
            next_offset: 0,
            replies: BTreeMap::new(),
            next_reply: 1,
            hold_appends: false,
            held: Vec::new(),
            trimmed_to: 0,
        }
    }

    fn wall(&self) -> i64 {
        WALL_MS + self.now.as_millis() as i64
    }

    fn pump(&mut self) {
        while let Some(output) = self.coordinator.poll_output() {
            match output {
                CoordinatorOutput::Reply { reply, result } => {
                    self.replies.insert(reply.0, result);
                }
                CoordinatorOutput::Append { token, batch } => {
                    if self.hold_appends {
                        self.held.push((token, batch));
                    } else {
                        self.commit(token, batch);
                    }
                }
                CoordinatorOutput::TrimLog { offset } => self.trimmed_to = offset,
                CoordinatorOutput::Reload => panic!("unexpected reload"),
                _ => {}
            }
        }
    }

    fn commit(&mut self, token: u64, batch: Bytes) {
        let mut batch = BytesMut::from(&batch[..]);
        batch[..8].copy_from_slice(&self.next_offset.to_be_bytes());
        let count = i32::from_be_bytes(batch[57..61].try_into().unwrap());
        let base = self.next_offset;
        self.next_offset += i64::from(count);
        self.log.extend_from_slice(&batch);
        let wall = self.wall();
        self.coordinator.on_append_done(self.now, wall, token, Ok(base));
    }

    fn release(&mut self) {
        self.hold_appends = false;
        for (token, batch) in std::mem::take(&mut self.held) {
            self.commit(token, batch);
        }
        self.pump();
    }

    fn send(&mut self, op: GroupOp) -> u64 {
        let id = self.next_reply;
        self.next_reply += 1;
        let wall = self.wall();
        self.coordinator.handle(self.now, wall, ReplyId(id), op);
        self.pump();
        id
    }

    fn take(&mut self, id: u64) -> GroupResult {
        self.replies
            .remove(&id)
            .unwrap_or_else(|| panic!("no answer to request {id}"))
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let wall = self.wall();
        self.coordinator.handle_timeout(self.now, wall);
        self.pump();
    }

    /// A fresh coordinator rebuilt from this one's log.
    fn replay(&self, config: GroupConfig) -> Coordinator {
        let mut fresh = Coordinator::new(0, config, 43);
        fresh.set_topics(self.now, self.wall(), topics());
        fresh.begin_load(2);
        fresh.load_batches(&Bytes::copy_from_slice(&self.log)).unwrap();
        fresh.finish_load(self.now, self.wall());
        fresh
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn heartbeat(group: &str, member: &str, epoch: i32, owned: Option<&[i32]>) -> GroupOp {
    let mut request = m::ConsumerGroupHeartbeatRequest::default();
    request.group_id = m::GroupId(s(group));
    request.member_id = s(member);
    request.member_epoch = epoch;
    request.rebalance_timeout_ms = 30_000;
    if epoch == 0 {
        request.subscribed_topic_names = Some(vec![m::TopicName(s("t"))]);
        request.topic_partitions = Some(Vec::new());
    }
    if let Some(owned) = owned {
        let mut tp = m::consumer_group_heartbeat_request::TopicPartitions::default();
        tp.topic_id = uuid::Uuid::from_bytes([7; 16]);
        tp.partitions = owned.to_vec();
        request.topic_partitions = Some(if owned.is_empty() { Vec::new() } else { vec![tp] });
    }
    GroupOp::ConsumerHeartbeat {
        request,
        client: ClientInfo::default(),
    }
}

fn hb_response(result: GroupResult) -> m::ConsumerGroupHeartbeatResponse {
    match result {
        GroupResult::ConsumerHeartbeat(r) => r,
        other => panic!("not a heartbeat answer: {other:?}"),
    }
}

fn assigned(r: &m::ConsumerGroupHeartbeatResponse) -> Option<BTreeSet<i32>> {
    r.assignment.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().copied())
            .collect()
    })
}

#[test]
fn consumer_protocol_members_share_partitions_without_overlap() {
    let mut h = Harness::new(GroupConfig::default());
    let a = h.send(heartbeat("g", "A", 0, None));
    let ra = hb_response(h.take(a));
    assert_eq!(ra.error_code, 0, "{ra:?}");
    assert_eq!(ra.member_epoch, 1);
    assert_eq!(assigned(&ra).unwrap().len(), 8);
    // B joins: it gets nothing until A releases what the target moves to B.
    let b = h.send(heartbeat("g", "B", 0, None));
    let rb = hb_response(h.take(b));
    assert_eq!(rb.error_code, 0, "{rb:?}");
    assert_eq!(assigned(&rb).unwrap_or_default().len(), 0);
    // A heartbeats (still at epoch 1, owning all 8): told to keep 4.
    let a = h.send(heartbeat("g", "A", 1, Some(&[0, 1, 2, 3, 4, 5, 6, 7])));
    let ra = hb_response(h.take(a));
    let kept = assigned(&ra).unwrap();
    assert_eq!(kept.len(), 4);
    assert_eq!(ra.member_epoch, 1, "epoch moves only after revocation");
    // A confirms; it moves to epoch 2.
    let owned: Vec<i32> = kept.iter().copied().collect();
    let a = h.send(heartbeat("g", "A", 1, Some(&owned)));
    let ra = hb_response(h.take(a));
    assert_eq!(ra.member_epoch, 2);
    // B now gets the freed partitions.
    let b = h.send(heartbeat("g", "B", 2, Some(&[])));
    let rb = hb_response(h.take(b));
    let got = assigned(&rb).unwrap();
    assert_eq!(got.len(), 4);
    assert!(got.is_disjoint(&kept));
    // A stale epoch is fenced.
    let a = h.send(heartbeat("g", "A", 7, Some(&owned)));
    assert_eq!(
        hb_response(h.take(a)).error_code,
        ErrorCode::FENCED_MEMBER_EPOCH.0
    );
    // The state rebuilt from the log equals the state before.
    let fresh = h.replay(GroupConfig::default());
    assert_eq!(fresh.durable_state().0, h.coordinator.durable_state().0);
}

fn commit(group: &str, generation: i32, member: &str, offset: i64) -> GroupOp {
    GroupOp::Commit {
        group: group.to_string(),
        generation_or_epoch: generation,
        member_id: member.to_string(),
        instance_id: None,
        entries: vec![CommitEntry {
            topic: "t".into(),
            partition: 0,
            offset,
            leader_epoch: 3,
            metadata: Some("m".into()),
        }],
    }
}

fn fetch(group: &str) -> GroupOp {
    GroupOp::FetchOffsets {
        group: group.to_string(),
        topics: Some(vec![("t".to_string(), vec![0])]),
        require_stable: true,
        member: None,
    }
}

fn fetched_offset(result: GroupResult) -> (i64, i16) {
    match result {
        GroupResult::Offsets { topics, .. } => {
            let o = &topics["t"][0];
            (o.offset, o.error)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn commits_are_answered_only_once_durable_and_survive_a_replay() {
    let mut h = Harness::new(GroupConfig::default());
    h.hold_appends = true;
    let c = h.send(commit("simple", -1, "", 10));
    assert!(!h.replies.contains_key(&c), "no answer before the append commits");
    let f = h.send(fetch("simple"));
    assert_eq!(
        fetched_offset(h.take(f)),
        (-1, ErrorCode::UNSTABLE_OFFSET_COMMIT.0)
    );
    h.release();
    assert!(matches!(h.take(c), GroupResult::Committed(ref e) if e["t"] == vec![(0, 0)]));
    let f = h.send(fetch("simple"));
    assert_eq!(fetched_offset(h.take(f)), (10, 0));
    let mut fresh = h.replay(GroupConfig::default());
    fresh.handle(h.now, h.wall(), ReplyId(999), fetch("simple"));
    let Some(CoordinatorOutput::Reply { result, .. }) = fresh.poll_output() else {
        panic!()
    };
    assert_eq!(fetched_offset(result), (10, 0));
}

#[test]
fn a_failed_append_fails_its_request_and_asks_for_a_reload() {
    let mut h = Harness::new(GroupConfig::default());
    h.hold_appends = true;
    let c = h.send(commit("g", -1, "", 5));
    let (token, _) = h.held.pop().unwrap();
    h.coordinator
        .on_append_done(h.now, h.wall(), token, Err(ErrorCode::NOT_LEADER_OR_FOLLOWER.0));
    let mut outputs = Vec::new();
    while let Some(o) = h.coordinator.poll_output() {
        outputs.push(o);
    }
    assert!(outputs.iter().any(|o| matches!(o, CoordinatorOutput::Reply { reply, result: GroupResult::Error(code) } if reply.0 == c && *code == ErrorCode::NOT_COORDINATOR.0)));
    assert!(outputs.iter().any(|o| matches!(o, CoordinatorOutput::Reload)));
    assert!(!h.coordinator.is_active());
}

#[test]
fn a_checkpoint_rewrites_live_keys_and_trims_the_prefix() {
    let config = GroupConfig {
        checkpoint_every_records: 10,
        ..GroupConfig::default()
    };
    let mut h = Harness::new(config.clone());
    for offset in 0..30 {
        let c = h.send(commit("g", -1, "", offset));
        h.take(c);
    }
    assert!(h.trimmed_to > 0, "a checkpoint was written and committed");
    // Replaying only the suffix from the trim point rebuilds the same state.
    let (before_groups, before_offsets) = {
        let (g, o) = h.coordinator.durable_state();
        (g.clone(), o.clone())
    };
    let mut suffix = Harness::new(config.clone());
    let mut batches = iter_batches(&h.log);
    for (at, header) in batches.by_ref() {
        if header.base_offset >= h.trimmed_to {
            suffix.log.extend_from_slice(&h.log[at..at + header.size_bytes()]);
        }
    }
    assert_eq!(batches.position(), h.log.len(), "{:?}", batches.error());
    let fresh = suffix.replay(config);
    assert_eq!(fresh.durable_state().0, &before_groups);
    assert_eq!(fresh.durable_state().1, &before_offsets);
}

#[test]
fn a_checkpoint_never_writes_more_than_the_records_since_the_last_one() {
    let config = GroupConfig {
        checkpoint_every_records: 4,
        ..GroupConfig::default()
    };
    let mut h = Harness::new(config);
    // 30 groups, each committing twice: 60 offset records, 30 live keys.
    for offset in 0..2 {
        for group in 0..30 {
            let c = h.send(commit(&format!("g{group}"), -1, "", offset));
            h.take(c);
        }
    }
    let mut batches = iter_batches(&h.log);
    let records: i64 = batches
        .by_ref()
        .map(|(_, header)| i64::from(header.record_count))
        .sum();
    assert_eq!(batches.position(), h.log.len(), "{:?}", batches.error());
    let checkpointed = records - 60;
    // Every checkpoint copies all live keys; one every 4 records would have written
    // well over 200.
    assert!(
        (1..=60).contains(&checkpointed),
        "checkpoint records: {checkpointed}"
    );
    assert!(h.trimmed_to > 0, "a checkpoint was written and committed");
}

fn join(group: &str, member: &str, version: i16) -> GroupOp {
    let mut request = m::JoinGroupRequest::default();
    request.group_id = m::GroupId(s(group));
    request.member_id = s(member);
    request.session_timeout_ms = 10_000;
    request.rebalance_timeout_ms = 10_000;
    request.protocol_type = s("consumer");
    let mut protocol = m::join_group_request::JoinGroupRequestProtocol::default();
    protocol.name = s("range");
    protocol.metadata = Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]);
    request.protocols = vec![protocol];
    GroupOp::Join {
        request,
        version,
        client: ClientInfo::default(),
    }
}

fn join_response(r: GroupResult) -> m::JoinGroupResponse {
    match r {
        GroupResult::Join(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn classic_join_sync_heartbeat_and_fencing() {
    let config = GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    };
    let mut h = Harness::new(config);
    // KIP-394: a first join without an id gets one to use.
    let j = h.send(join("c", "", 6));
    let r = join_response(h.take(j));
    assert_eq!(r.error_code, ErrorCode::MEMBER_ID_REQUIRED.0);
    let id = r.member_id.to_string();
    let j = h.send(join("c", &id, 6));
    h.advance(Duration::from_millis(1));
    let r = join_response(h.take(j));
    assert_eq!(r.error_code, 0);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader.as_str(), id);
    let mut sync = m::SyncGroupRequest::default();
    sync.group_id = m::GroupId(s("c"));
    sync.generation_id = 1;
    sync.member_id = s(&id);
    let mut a = m::sync_group_request::SyncGroupRequestAssignment::default();
    a.member_id = s(&id);
    a.assignment = Bytes::from_static(b"assignment");
    sync.assignments = vec![a];
    let sy = h.send(GroupOp::Sync {
        request: sync,
        version: 3,
    });
    match h.take(sy) {
        GroupResult::Sync(r) => assert_eq!(&r.assignment[..], b"assignment"),
        other => panic!("{other:?}"),
    }
    // A commit from an old generation is refused; from the current one accepted.
    let c = h.send(commit("c", 0, &id, 4));
    assert!(
        matches!(h.take(c), GroupResult::Committed(ref e) if e["t"] == vec![(0, ErrorCode::ILLEGAL_GENERATION.0)])
    );
    let c = h.send(commit("c", 1, &id, 4));
    assert!(matches!(h.take(c), GroupResult::Committed(ref e) if e["t"] == vec![(0, 0)]));
    // The member stops heartbeating: after its session it is gone, the group empty.
    h.advance(Duration::from_secs(11));
    let mut hb = m::HeartbeatRequest::default();
    hb.group_id = m::GroupId(s("c"));
    hb.generation_id = 1;
    hb.member_id = s(&id);
    let b = h.send(GroupOp::Heartbeat { request: hb });
    assert_eq!(h.take(b), GroupResult::Heartbeat(ErrorCode::UNKNOWN_MEMBER_ID.0));
    // The stored group rebuilds to the same durable state.
    let fresh = h.replay(GroupConfig::default());
    assert_eq!(fresh.durable_state().0, h.coordinator.durable_state().0);
    assert_eq!(fresh.durable_state().1, h.coordinator.durable_state().1);
}

/// Found by the simulator (consumer-groups seeds 313, 335, 355): a reload in the same
/// leader epoch (after a failed append) reseeded the member-id stream, so the next
/// joiner got the id of a member that was already in the group — two consumers shared
/// one member id (and its partitions).
#[test]
fn a_reload_in_the_same_epoch_never_hands_out_a_member_id_again() {
    let mut h = Harness::new(GroupConfig::default());
    let j = h.send(join("c", "", 6));
    let first = join_response(h.take(j)).member_id.to_string();
    // An append fails: the coordinator reloads in the same epoch, from the same log.
    h.coordinator.begin_load(1);
    h.coordinator
        .load_batches(&Bytes::copy_from_slice(&h.log))
        .unwrap();
    h.coordinator.finish_load(h.now, h.wall());
    let j = h.send(join("c", "", 6));
    let second = join_response(h.take(j)).member_id.to_string();
    assert_ne!(first, second, "a member id was handed out twice");
    // A new epoch still draws from its own stream.
    h.coordinator.begin_load(2);
    h.coordinator.finish_load(h.now, h.wall());
    let j = h.send(join("c", "", 6));
    let third = join_response(h.take(j)).member_id.to_string();
    assert!(third.starts_with("-00000002-"), "{third}");
}

/// Found by the simulator (consumer-groups seed 870): a heartbeat answered at once with
/// an assignment that another member's request had changed but not yet made durable;
/// the append then failed, the new coordinator had the older assignment, and two
/// consumers held the same partition.
#[test]
fn a_heartbeat_tells_an_assignment_only_once_it_is_durable() {
    let mut h = Harness::new(GroupConfig::default());
    let a = h.send(heartbeat("g", "A", 0, None));
    assert_eq!(hb_response(h.take(a)).member_epoch, 1);
    // B joins: A's target shrinks; that change waits in an append not yet committed.
    h.hold_appends = true;
    let b = h.send(heartbeat("g", "B", 0, None));
    assert!(!h.replies.contains_key(&b));
    // A heartbeats: its new assignment must not be told before it is durable.
    let a = h.send(heartbeat("g", "A", 1, Some(&[0, 1, 2, 3, 4, 5, 6, 7])));
    assert!(
        !h.replies.contains_key(&a),
        "A was told an assignment that is not durable: {:?}",
        h.replies.get(&a)
    );
    h.release();
    let ra = hb_response(h.take(a));
    assert_eq!(assigned(&ra).map(|s| s.len()), Some(4), "{ra:?}");
    h.take(b);
}

/// Seen in the simulator: when the answer that told a member to give partitions up was
/// lost, its next heartbeats (still reporting them) got no assignment, so the
/// revocation waited for its deadline and the member was fenced.
#[test]
fn a_member_that_missed_its_revocation_is_told_again() {
    let mut h = Harness::new(GroupConfig::default());
    let a = h.send(heartbeat("g", "A", 0, None));
    assert_eq!(hb_response(h.take(a)).member_epoch, 1);
    let b = h.send(heartbeat("g", "B", 0, None));
    h.take(b);
    let all = [0, 1, 2, 3, 4, 5, 6, 7];
    let a = h.send(heartbeat("g", "A", 1, Some(&all)));
    let told = assigned(&hb_response(h.take(a))).expect("the revocation is told");
    assert_eq!(told.len(), 4);
    // That answer is lost: A still reports all eight.
    let a = h.send(heartbeat("g", "A", 1, Some(&all)));
    let again = hb_response(h.take(a));
    assert_eq!(assigned(&again), Some(told), "{again:?}");
}
