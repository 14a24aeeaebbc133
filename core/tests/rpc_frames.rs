//! Broker-to-broker RPC frames: every Raft message round-trips through a frame, batched
//! and coalesced frames deliver exactly what was pushed, and the decoder turns garbage
//! — random bytes, flipped bits, cut frames, lying lengths — into errors, never a panic
//! or an allocation beyond its bound.

use bytes::Bytes;
use oxbow_core::raft::*;
use oxbow_core::rpc::*;
use proptest::prelude::*;

fn log_id() -> impl Strategy<Value = LogId> {
    (0u64..1 << 40, 0u64..1 << 40).prop_map(|(t, i)| LogId::new(t, i))
}

fn opt_index() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(any::<u64>())
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        0u64..1 << 50,
        0u64..64,
        0u8..3,
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(term, index, extra, kind, payload)| Entry {
            term,
            index,
            last_index: index + extra,
            kind: match kind {
                0 => EntryKind::Data,
                1 => EntryKind::Noop,
                _ => EntryKind::Config,
            },
            payload: Bytes::from(payload),
        })
}

fn membership() -> impl Strategy<Value = Membership> {
    (
        proptest::collection::btree_map(any::<u64>(), 0u32..20, 1..5),
        proptest::collection::btree_set(any::<u64>(), 0..3),
    )
        .prop_map(|(voters, learners)| {
            let learners: Vec<u64> = learners.into_iter().filter(|l| !voters.contains_key(l)).collect();
            Membership::new(voters, learners).expect("distinct members")
        })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (proptest::option::of(log_id()), any::<bool>())
            .prop_map(|(last_log, transfer)| MessageBody::PreVote(VoteRequest { last_log, transfer })),
        (proptest::option::of(log_id()), any::<bool>())
            .prop_map(|(last_log, transfer)| MessageBody::Vote(VoteRequest { last_log, transfer })),
        any::<bool>().prop_map(|granted| MessageBody::PreVoteResp(VoteResponse { granted })),
        any::<bool>().prop_map(|granted| MessageBody::VoteResp(VoteResponse { granted })),
        (
            proptest::option::of(log_id()),
            proptest::collection::vec(entry(), 0..4),
            opt_index()
        )
            .prop_map(|(prev, entries, commit)| MessageBody::Append(AppendRequest {
                prev,
                entries,
                commit
            })),
        opt_index().prop_map(|match_index| MessageBody::AppendResp(AppendResponse::Accepted { match_index })),
        (any::<u64>(), proptest::option::of(log_id())).prop_map(|(rejected_prev, hint)| {
            MessageBody::AppendResp(AppendResponse::Rejected { rejected_prev, hint })
        }),
        (opt_index(), any::<u64>())
            .prop_map(|(commit, round)| MessageBody::Heartbeat(HeartbeatRequest { commit, round })),
        (any::<u64>(), opt_index())
            .prop_map(|(round, received)| MessageBody::HeartbeatResp(HeartbeatResponse { round, received })),
        (
            log_id(),
            membership(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>()
        )
            .prop_map(
                |(last, membership, offset, data, done)| MessageBody::InstallSnapshot(SnapshotChunk {
                    meta: SnapshotMeta { last, membership },
                    offset,
                    data: Bytes::from(data),
                    done,
                })
            ),
        (log_id(), any::<u64>(), any::<bool>()).prop_map(|(snapshot, next_offset, installed)| {
            MessageBody::InstallSnapshotResp(SnapshotResponse {
                snapshot,
                next_offset,
                installed,
            })
        }),
        Just(MessageBody::TimeoutNow),
    ]
}

fn group_messages(from: u64, to: u64) -> impl Strategy<Value = Vec<(u64, u64, MessageBody)>> {
    let _ = (from, to);
    proptest::collection::vec((0u64..50, any::<u64>(), body()), 0..24)
}

fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message { from, to, term, body }
}

/// Pushes everything through an outbox, decodes the frames, and returns what arrived,
/// per destination, in order.
fn through_outbox(from: u64, pushed: &[(u64, Message)], config: OutboxConfig) -> Vec<(u64, GroupMessage)> {
    let mut outbox = Outbox::new(from, config);
    for (group, m) in pushed {
        outbox.push(*group, m.clone()).expect("fits");
    }
    let limits = FrameLimits {
        max_frame_bytes: config.max_frame_bytes,
        ..FrameLimits::default()
    };
    let mut arrived = Vec::new();
    for (to, bytes) in outbox.flush() {
        assert!(bytes.len() <= config.max_frame_bytes);
        let (frame, used) = decode_frame(&bytes, &limits).expect("valid").expect("whole");
        assert_eq!(used, bytes.len());
        assert_eq!((frame.from, frame.to), (from, to));
        for m in frame.messages {
            assert_eq!(FrameKind::for_message(&m.message), frame.kind);
            arrived.push((to, m));
        }
    }
    arrived
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn raft_frames_round_trip(items in group_messages(1, 2), from in any::<u64>(), to in any::<u64>()) {
        let messages: Vec<GroupMessage> = items
            .into_iter()
            .filter(|(_, _, b)| !matches!(b, MessageBody::Heartbeat(_) | MessageBody::HeartbeatResp(_)))
            .map(|(group, term, body)| GroupMessage { group, message: message(from, to, term, body) })
            .collect();
        let frame = Frame { kind: FrameKind::Raft, from, to, messages, cluster: Vec::new() };
        let bytes = encode_frame(&frame).unwrap();
        let (back, used) = decode_frame(&bytes, &FrameLimits::default()).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(back, frame);
    }

    #[test]
    fn outbox_delivers_every_message_once_in_order_per_peer_and_kind(
        items in proptest::collection::vec((0u64..4, 0u64..50, any::<u64>(), body()), 0..40),
        small_frames in any::<bool>(),
    ) {
        let from = 9;
        let pushed: Vec<(u64, Message)> = items
            .into_iter()
            .map(|(to, group, term, body)| (group, message(from, to, term, body)))
            .collect();
        let config = OutboxConfig {
            max_frame_bytes: if small_frames { 700 } else { 1 << 20 },
            max_pending_bytes: 1 << 24,
        };
        let pushed: Vec<(u64, Message)> = pushed
            .into_iter()
            .filter(|(g, m)| Outbox::new(from, config).push(*g, m.clone()).is_ok())
            .collect();
        let arrived = through_outbox(from, &pushed, config);
        prop_assert_eq!(arrived.len(), pushed.len());
        for to in 0..4u64 {
            for kind in [FrameKind::Raft, FrameKind::Heartbeats, FrameKind::HeartbeatResponses] {
                let sent: Vec<(u64, &Message)> = pushed
                    .iter()
                    .filter(|(_, m)| m.to == to && FrameKind::for_message(m) == kind)
                    .map(|(g, m)| (*g, m))
                    .collect();
                let got: Vec<(u64, &Message)> = arrived
                    .iter()
                    .filter(|(t, m)| *t == to && FrameKind::for_message(&m.message) == kind)
                    .map(|(_, m)| (m.group, &m.message))
                    .collect();
                prop_assert_eq!(sent, got);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_and_never_decode_silently(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let limits = FrameLimits { max_frame_bytes: 4096, ..FrameLimits::default() };
        if let Ok(Some((_, used))) = decode_frame(&bytes, &limits) {
            // Only possible if the random bytes carry a matching CRC32C; then they must
            // re-encode to themselves.
            prop_assert!(used <= bytes.len());
        }
        let mut decoder = FrameDecoder::new(limits);
        let taken = decoder.push(&bytes);
        prop_assert!(taken <= 4096);
        let _ = decoder.next_frame();
    }

    #[test]
    fn every_corruption_of_a_valid_frame_is_an_error(
        items in group_messages(1, 2),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let messages: Vec<GroupMessage> = items
            .into_iter()
            .filter(|(_, _, b)| !matches!(b, MessageBody::Heartbeat(_) | MessageBody::HeartbeatResp(_)))
            .map(|(group, term, body)| GroupMessage { group, message: message(1, 2, term, body) })
            .collect();
        let bytes = encode_frame(&Frame { kind: FrameKind::Raft, from: 1, to: 2, messages, cluster: Vec::new() }).unwrap();
        let mut damaged = bytes.to_vec();
        let at = position.index(damaged.len());
        damaged[at] ^= 1 << bit;
        let result = decode_frame(&damaged, &FrameLimits::default());
        // A damaged length may make the frame look incomplete (Ok(None)) or too long;
        // anything else must be refused.
        prop_assert!(!matches!(result, Ok(Some(_))), "byte {} bit {} accepted", at, bit);
        let cut = &bytes[..at];
        prop_assert!(matches!(decode_frame(cut, &FrameLimits::default()), Ok(None) | Err(_)));
        prop_assert!(!matches!(decode_frame(cut, &FrameLimits::default()), Ok(Some(_))));
    }
}

#[test]
fn a_lying_length_is_refused_before_anything_is_buffered() {
    let limits = FrameLimits {
        max_frame_bytes: 1024,
        ..FrameLimits::default()
    };
    let mut huge = vec![0xff, 0xff, 0xff, 0xf0];
    huge.extend_from_slice(&[0; 16]);
    assert!(matches!(
        decode_frame(&huge, &limits),
        Err(FrameError::BadLength { .. })
    ));
    let mut decoder = FrameDecoder::new(limits);
    assert_eq!(
        decoder.push(&vec![7u8; 5000]),
        1024,
        "the decoder takes at most one frame"
    );
    assert!(decoder.next_frame().is_err());
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::StreamBroken),
        "a broken stream stays broken"
    );
    assert_eq!(decoder.push(&[0; 16]), 0);
}

#[test]
fn a_count_larger_than_the_body_is_refused_without_allocating() {
    // A Raft frame claiming 2^32-1 messages in a 20-byte body.
    let mut body = Vec::new();
    body.extend_from_slice(&1u64.to_be_bytes());
    body.extend_from_slice(&2u64.to_be_bytes());
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut checked = vec![0, 1, 0, 1];
    checked.extend_from_slice(&body);
    let crc = crc32c::crc32c(&checked);
    let mut frame = ((12 - 4 + body.len()) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&checked[..4]);
    frame.extend_from_slice(&crc.to_be_bytes());
    frame.extend_from_slice(&body);
    assert!(matches!(
        decode_frame(&frame, &FrameLimits::default()),
        Err(FrameError::Body(_))
    ));
}

/// Two brokers sharing 1,000 groups: one heartbeat frame each way per interval.
#[test]
fn heartbeats_of_all_shared_groups_travel_in_one_frame_per_peer() {
    let mut outbox = Outbox::new(1, OutboxConfig::default());
    let groups = (0..1000u64).map(|g| {
        let beats = [2u64, 3]
            .into_iter()
            .map(|to| {
                message(
                    1,
                    to,
                    4,
                    MessageBody::Heartbeat(HeartbeatRequest {
                        commit: Some(g),
                        round: 7,
                    }),
                )
            })
            .collect();
        (g, beats)
    });
    outbox.push_heartbeats(groups).unwrap();
    let frames = outbox.flush();
    assert_eq!(frames.len(), 2, "one frame per peer");
    for (to, bytes) in &frames {
        let (frame, _) = decode_frame(bytes, &FrameLimits::default()).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Heartbeats);
        assert_eq!(frame.to, *to);
        assert_eq!(frame.messages.len(), 1000);
        // Compact: 8 group + 8 term + 9 commit + 8 round per group.
        assert!(bytes.len() < 1000 * 34 + 64, "{} bytes", bytes.len());
    }
    assert_eq!(outbox.pending_bytes(), 0);
    assert!(outbox.flush().is_empty());
}

#[test]
fn outbox_bounds_are_errors() {
    let config = OutboxConfig {
        max_frame_bytes: 200,
        max_pending_bytes: 300,
    };
    let mut outbox = Outbox::new(1, config);
    let big = MessageBody::Append(AppendRequest {
        prev: None,
        entries: vec![Entry::data(1, 0, 1, Bytes::from(vec![0; 500]))],
        commit: None,
    });
    assert!(matches!(
        outbox.push(0, message(1, 2, 1, big)),
        Err(OutboxError::TooLarge { .. })
    ));
    assert!(matches!(
        outbox.push(0, message(5, 2, 1, MessageBody::TimeoutNow)),
        Err(OutboxError::NotOurs { .. })
    ));
    let mut pushed = 0;
    while outbox.push(0, message(1, 2, 1, MessageBody::TimeoutNow)).is_ok() {
        pushed += 1;
        assert!(pushed < 1000);
    }
    assert!(outbox.pending_bytes() <= 300);
    let frames = outbox.flush();
    assert!(frames.len() > 1, "split over frames of at most 200 bytes");
    assert!(frames.iter().all(|(_, f)| f.len() <= 200));
}
