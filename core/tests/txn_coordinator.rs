//! The transaction coordinator as a state machine, driven directly: fencing by a new
//! InitProducerId, the decision made durable before any marker, marker retries,
//! timeouts that abort with an epoch bump, replay from the log (finishing decided
//! transactions), checkpoints that trim the log, failed appends, and transaction
//! protocol v2 (KIP-890 part 2): an epoch bump per EndTxn, retries, exhaustion; and
//! requests parked while their id's transaction is ending.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::time::Instant;
use oxbow_core::txn::coordinator::{code, encode_key, encode_value};
use oxbow_core::txn::marker::Marker;
use oxbow_core::txn::{TxnConfig, TxnCoordinator, TxnMeta, TxnOp, TxnOutput, TxnResult, TxnState};
use std::time::Duration;

const ID: &str = "app-1";

/// A coordinator with a log it appends to (committed on demand) and what it emitted.
struct Harness {
    c: TxnCoordinator,
    config: TxnConfig,
    /// Committed batches, with their base offsets.
    log: Vec<(i64, Bytes)>,
    next_offset: i64,
    in_flight: Vec<(u64, Bytes)>,
    markers: Vec<(u64, String, i32, Marker)>,
    replies: Vec<(u64, TxnResult)>,
    trims: Vec<i64>,
    reloads: usize,
    now: Instant,
    wall_ms: i64,
    next_reply: u64,
}

impl Harness {
    fn new(config: TxnConfig) -> Harness {
        let mut c = TxnCoordinator::new(0, config.clone());
        c.begin_load(1);
        c.finish_load(Instant::ZERO, 0);
        Harness {
            c,
            config,
            log: Vec::new(),
            next_offset: 0,
            in_flight: Vec::new(),
            markers: Vec::new(),
            replies: Vec::new(),
            trims: Vec::new(),
            reloads: 0,
            now: Instant::ZERO,
            wall_ms: 1_000_000,
            next_reply: 1,
        }
    }

    fn pump(&mut self) {
        while let Some(output) = self.c.poll_output() {
            match output {
                TxnOutput::Reply { reply, result } => self.replies.push((reply, result)),
                TxnOutput::Append { token, batch } => self.in_flight.push((token, batch)),
                TxnOutput::WriteMarker {
                    token,
                    topic,
                    partition,
                    marker,
                } => self.markers.push((token, topic, partition, marker)),
                TxnOutput::TrimLog { offset } => self.trims.push(offset),
                TxnOutput::Reload => self.reloads += 1,
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    /// Sends `op`; returns the answer if it came at once.
    fn request(&mut self, op: TxnOp) -> Option<TxnResult> {
        let reply = self.next_reply;
        self.next_reply += 1;
        self.c.handle(self.now, self.wall_ms, reply, op);
        self.pump();
        self.take_reply(reply)
    }

    fn take_reply(&mut self, reply: u64) -> Option<TxnResult> {
        let at = self.replies.iter().position(|(r, _)| *r == reply)?;
        Some(self.replies.remove(at).1)
    }

    /// Commits every append in flight, in order.
    fn commit_appends(&mut self) {
        while !self.in_flight.is_empty() {
            let (token, batch) = self.in_flight.remove(0);
            let mut stored = BytesMut::from(&batch[..]);
            oxbow_core::log::batch::set_base_offset(&mut stored, self.next_offset);
            let header = oxbow_core::log::BatchHeader::parse(&stored).unwrap();
            let base = self.next_offset;
            self.next_offset = header.next_offset();
            self.log.push((base, stored.freeze()));
            self.c.on_append_done(self.now, self.wall_ms, token, Ok(base));
            self.pump();
        }
    }

    /// Answers every marker in flight with `code`.
    fn answer_markers(&mut self, code: i16) -> Vec<(String, i32, Marker)> {
        let markers = std::mem::take(&mut self.markers);
        for (token, ..) in &markers {
            self.c.on_marker_done(self.now, self.wall_ms, *token, code);
        }
        self.pump();
        markers.into_iter().map(|(_, t, p, m)| (t, p, m)).collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall_ms += i64::try_from(by.as_millis()).unwrap();
        self.c.handle_timeout(self.now, self.wall_ms);
        self.pump();
    }

    fn init(&mut self, fresh_producer_id: i64) -> TxnResult {
        self.init_with_timeout(60_000, fresh_producer_id)
    }

    /// InitProducerId asking for `timeout_ms`, answered once durable.
    fn init_with_timeout(&mut self, timeout_ms: i32, fresh_producer_id: i64) -> TxnResult {
        let op = TxnOp::InitProducerId {
            transactional_id: ID.to_string(),
            timeout_ms,
            producer_id: -1,
            producer_epoch: -1,
            fresh_producer_id,
        };
        let reply = self.next_reply;
        if let Some(answer) = self.request(op) {
            return answer;
        }
        self.commit_appends();
        self.take_reply(reply).expect("answered once durable")
    }

    fn add(&mut self, producer: (i64, i16), partitions: &[(&str, i32)]) -> TxnResult {
        let op = TxnOp::AddPartitions {
            transactional_id: ID.to_string(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            partitions: partitions.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            verify_only: false,
        };
        let reply = self.next_reply;
        if let Some(answer) = self.request(op) {
            return answer;
        }
        self.commit_appends();
        self.take_reply(reply).expect("answered once durable")
    }

    fn end(&mut self, producer: (i64, i16), commit: bool) -> (u64, Option<TxnResult>) {
        let reply = self.next_reply;
        let op = TxnOp::EndTxn {
            transactional_id: ID.to_string(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            commit,
        };
        (reply, self.request(op))
    }

    fn state(&self) -> TxnState {
        self.c.transactions()[ID].state
    }

    /// A fresh coordinator loaded from this log (from `from` on).
    fn reloaded(&self, from: i64) -> TxnCoordinator {
        let mut c = TxnCoordinator::new(0, self.config.clone());
        c.begin_load(2);
        let mut bytes = BytesMut::new();
        for (base, batch) in &self.log {
            if *base >= from {
                bytes.extend_from_slice(batch);
            }
        }
        let next = c.load_batches(&bytes.freeze()).unwrap();
        assert_eq!(next, Some(self.next_offset));
        c.finish_load(Instant::ZERO, self.wall_ms);
        c
    }
}

fn producer_of(result: &TxnResult) -> (i64, i16) {
    match result {
        TxnResult::ProducerId {
            producer_id,
            producer_epoch,
        } => (*producer_id, *producer_epoch),
        other => panic!("not a producer id: {other:?}"),
    }
}

#[test]
fn a_new_init_fences_the_old_epoch_and_aborts_its_open_transaction() {
    let mut h = Harness::new(TxnConfig::default());
    let old = producer_of(&h.init(7));
    assert_eq!(old, (7, 0));
    assert_eq!(h.add(old, &[("t", 0), ("t", 1)]), TxnResult::Done);
    // The second instance: the open transaction is aborted first, and the request
    // waits for the abort to complete.
    let op = TxnOp::InitProducerId {
        transactional_id: ID.to_string(),
        timeout_ms: 60_000,
        producer_id: -1,
        producer_epoch: -1,
        fresh_producer_id: 8,
    };
    let init_reply = h.next_reply;
    assert_eq!(h.request(op), None, "parked until the abort completes");
    assert!(
        h.markers.is_empty(),
        "no marker before the abort decision is durable"
    );
    h.commit_appends();
    assert_eq!(h.state(), TxnState::PrepareAbort);
    assert_eq!(h.take_reply(init_reply), None);
    let markers = h.answer_markers(0);
    assert_eq!(markers.len(), 2);
    assert!(markers
        .iter()
        .all(|(_, _, m)| !m.commit && m.producer_id == 7 && m.producer_epoch == 1));
    // CompleteAbort is durable, then the parked InitProducerId is served.
    h.commit_appends();
    assert_eq!(h.state(), TxnState::Empty);
    let new = producer_of(&h.take_reply(init_reply).expect("served after the abort"));
    assert_eq!(new, (7, 2), "same producer id, a newer epoch");
    assert_eq!(h.c.metrics().aborts, 1);
    assert_eq!(h.c.metrics().parked, 1);
    // The old instance is fenced everywhere.
    assert_eq!(
        h.add(old, &[("t", 2)]),
        TxnResult::Error(code::INVALID_PRODUCER_EPOCH)
    );
    assert_eq!(
        h.end(old, true).1,
        Some(TxnResult::Error(code::INVALID_PRODUCER_EPOCH))
    );
    assert_eq!(
        h.add((99, 2), &[("t", 2)]),
        TxnResult::Error(code::INVALID_PRODUCER_ID_MAPPING)
    );
}

#[test]
fn markers_go_out_only_after_the_decision_is_durable_and_failures_are_retried() {
    let mut h = Harness::new(TxnConfig::default());
    let p = producer_of(&h.init(1));
    h.add(p, &[("a", 0), ("b", 0)]);
    let (reply, early) = h.end(p, true);
    assert_eq!(early, None, "EndTxn waits for the decision to be durable");
    assert!(h.markers.is_empty());
    assert_eq!(h.in_flight.len(), 1, "the PrepareCommit record");
    h.commit_appends();
    assert_eq!(
        h.take_reply(reply),
        Some(TxnResult::Done),
        "answered at the durable decision"
    );
    assert_eq!(h.markers.len(), 2);
    assert!(h.markers.iter().all(|(.., m)| m.commit));
    // Partition b refuses (not leader); a is written.
    let b = h.markers.iter().position(|(_, t, ..)| t == "b").unwrap();
    let (b_token, ..) = h.markers.remove(b);
    h.c.on_marker_done(h.now, h.wall_ms, b_token, 6);
    h.answer_markers(0);
    assert!(h.in_flight.is_empty(), "not complete while b is missing");
    assert_eq!(h.state(), TxnState::PrepareCommit);
    // A retry of the same EndTxn meanwhile waits for the transaction to complete.
    let (retry, early) = h.end(p, true);
    assert_eq!(early, None, "parked while the markers are written");
    h.advance(Duration::from_millis(h.config.marker_retry_ms));
    assert_eq!(h.markers.len(), 1, "only b is retried");
    assert_eq!(h.markers[0].1, "b");
    h.answer_markers(0);
    // Every marker is written: the outcome no longer depends on the CompleteCommit
    // record (a coordinator that lost it would write the same markers and record the
    // same end), so the retry is answered as that record is appended.
    assert_eq!(h.state(), TxnState::CompleteCommit);
    assert_eq!(h.in_flight.len(), 1, "the CompleteCommit record");
    assert_eq!(h.take_reply(retry), Some(TxnResult::Done));
    h.commit_appends();
    assert_eq!(
        h.end(p, true).1,
        Some(TxnResult::Done),
        "a late retry of the commit succeeds"
    );
    assert_eq!(h.end(p, false).1, Some(TxnResult::Error(code::INVALID_TXN_STATE)));
    assert_eq!(h.c.metrics().commits, 1);
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let config = TxnConfig::default();
    let mut h = Harness::new(config.clone());
    h.init_with_timeout(5_000, 3);
    let p = (3, 0);
    h.add(p, &[("t", 0)]);
    h.advance(Duration::from_millis(config.abort_check_interval_ms));
    assert_eq!(h.state(), TxnState::Ongoing, "within its timeout");
    h.advance(Duration::from_millis(5_000));
    h.commit_appends();
    assert_eq!(h.state(), TxnState::PrepareAbort);
    let markers = h.answer_markers(0);
    assert_eq!(markers.len(), 1);
    assert!(!markers[0].2.commit);
    assert_eq!(
        markers[0].2.producer_epoch, 1,
        "the epoch is bumped: the late producer is fenced"
    );
    h.commit_appends();
    assert_eq!(h.state(), TxnState::CompleteAbort);
    assert_eq!(
        h.end(p, true).1,
        Some(TxnResult::Error(code::INVALID_PRODUCER_EPOCH))
    );
    assert_eq!(h.c.metrics().timeouts, 1);
}

#[test]
fn replay_rebuilds_every_transaction_and_finishes_a_decided_one() {
    let mut h = Harness::new(TxnConfig::default());
    let p = producer_of(&h.init(11));
    h.add(p, &[("x", 0), ("x", 1), ("y", 3)]);
    let (_, _) = h.end(p, false);
    h.commit_appends();
    assert_eq!(h.state(), TxnState::PrepareAbort);
    // The leader fails before the markers are written: a new leader replays the log.
    let mut replayed = h.reloaded(0);
    assert_eq!(replayed.transactions(), h.c.transactions());
    let mut markers = Vec::new();
    while let Some(output) = replayed.poll_output() {
        if let TxnOutput::WriteMarker {
            topic,
            partition,
            marker,
            ..
        } = output
        {
            markers.push((topic, partition, marker.commit));
        }
    }
    assert_eq!(
        markers,
        vec![
            ("x".to_string(), 0, false),
            ("x".to_string(), 1, false),
            ("y".to_string(), 3, false)
        ],
        "the decided abort is finished by the new leader"
    );
}

#[test]
fn checkpoints_trim_the_log_and_the_suffix_replays_to_the_same_state() {
    let config = TxnConfig {
        checkpoint_records: 6,
        ..TxnConfig::default()
    };
    let mut h = Harness::new(config);
    let mut p = producer_of(&h.init(21));
    for round in 0..4 {
        h.add(p, &[("t", round)]);
        let (_, _) = h.end(p, round % 2 == 0);
        h.commit_appends();
        h.answer_markers(0);
        h.commit_appends();
        p = producer_of(&h.init(21));
    }
    let trim = *h.trims.last().expect("a checkpoint trimmed the log");
    assert!(trim > 0);
    let replayed = h.reloaded(trim);
    assert_eq!(replayed.transactions(), h.c.transactions());
}

#[test]
fn a_failed_append_answers_and_asks_for_a_reload() {
    let mut h = Harness::new(TxnConfig::default());
    let op = TxnOp::InitProducerId {
        transactional_id: ID.to_string(),
        timeout_ms: 60_000,
        producer_id: -1,
        producer_epoch: -1,
        fresh_producer_id: 5,
    };
    let reply = h.next_reply;
    assert_eq!(h.request(op), None);
    let (token, _) = h.in_flight.remove(0);
    h.c.on_append_done(h.now, h.wall_ms, token, Err(6));
    h.pump();
    assert_eq!(h.take_reply(reply), Some(TxnResult::Error(code::NOT_COORDINATOR)));
    assert_eq!(h.reloads, 1);
    assert!(!h.c.is_active());
    let op = TxnOp::EndTxn {
        transactional_id: ID.to_string(),
        producer_id: 5,
        producer_epoch: 0,
        commit: true,
    };
    assert_eq!(h.request(op), Some(TxnResult::Error(code::NOT_COORDINATOR)));
}

#[test]
fn bad_timeouts_and_unknown_ids_are_refused() {
    let mut h = Harness::new(TxnConfig::default());
    let op = TxnOp::InitProducerId {
        transactional_id: ID.to_string(),
        timeout_ms: h.config.max_timeout_ms + 1,
        producer_id: -1,
        producer_epoch: -1,
        fresh_producer_id: 1,
    };
    assert_eq!(
        h.request(op),
        Some(TxnResult::Error(code::INVALID_TRANSACTION_TIMEOUT))
    );
    assert_eq!(
        h.add((1, 0), &[("t", 0)]),
        TxnResult::Error(code::INVALID_PRODUCER_ID_MAPPING)
    );
    let describe = TxnOp::Describe {
        transactional_ids: vec!["nobody".to_string()],
    };
    match h.request(describe) {
        Some(TxnResult::Transactions(list)) => {
            assert_eq!(list[0].error_code, code::TRANSACTIONAL_ID_NOT_FOUND)
        }
        other => panic!("{other:?}"),
    }
}

impl Harness {
    /// EndTxn v5 (transaction protocol v2).
    fn end_v2(
        &mut self,
        producer: (i64, i16),
        commit: bool,
        fresh_producer_id: i64,
    ) -> (u64, Option<TxnResult>) {
        let reply = self.next_reply;
        let op = TxnOp::EndTxnV2 {
            transactional_id: ID.to_string(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            commit,
            fresh_producer_id,
        };
        (reply, self.request(op))
    }

    /// Runs a v2 EndTxn to completion (every marker written): the markers and the
    /// answer.
    fn end_v2_completed(
        &mut self,
        producer: (i64, i16),
        commit: bool,
        fresh: i64,
    ) -> (Vec<Marker>, TxnResult) {
        let (reply, early) = self.end_v2(producer, commit, fresh);
        assert_eq!(early, None, "answered once the decision is durable");
        self.commit_appends();
        let answer = self.take_reply(reply).expect("answered at the decision");
        let markers = self.answer_markers(0).into_iter().map(|(.., m)| m).collect();
        self.commit_appends();
        (markers, answer)
    }
}

#[test]
fn protocol_v2_bumps_the_epoch_with_each_decision_and_its_markers_carry_it() {
    let mut h = Harness::new(TxnConfig::default());
    let mut p = producer_of(&h.init(5));
    for (round, commit) in [true, false, true].into_iter().enumerate() {
        assert_eq!(h.add(p, &[("t", 0), ("t", 1)]), TxnResult::Done);
        let (markers, answer) = h.end_v2_completed(p, commit, -1);
        assert_eq!(markers.len(), 2);
        assert!(
            markers
                .iter()
                .all(|m| m.commit == commit && m.producer_id == 5 && m.producer_epoch == p.1 + 1),
            "round {round}: markers carry the bumped epoch: {markers:?}"
        );
        let next = producer_of(&answer);
        assert_eq!(
            next,
            (5, p.1 + 1),
            "round {round}: the epoch increases per EndTxn"
        );
        // The epoch of the finished transaction is fenced: a late add (a produce
        // retried into the next transaction) is refused — after an abort with
        // TRANSACTION_ABORTABLE (that epoch's transaction can only be aborted, and
        // an EndTxn v5 abort naming it is answered with the next epoch).
        let refusal = if commit {
            code::INVALID_PRODUCER_EPOCH
        } else {
            code::TRANSACTION_ABORTABLE
        };
        assert_eq!(h.add(p, &[("t", 0)]), TxnResult::Error(refusal));
        // A retried EndTxn whose answer was lost is answered again, not fenced.
        assert_eq!(h.end_v2(p, commit, -1).1, Some(answer.clone()));
        // The other decision under the old epoch is fenced.
        assert_eq!(
            h.end_v2(p, !commit, -1).1,
            Some(TxnResult::Error(code::PRODUCER_FENCED))
        );
        p = next;
    }
    assert_eq!(h.c.metrics().epoch_bumps, 3);
    // Replay keeps the bump: the retry is still recognised after a reload.
    let mut reloaded = h.reloaded(0);
    reloaded.handle(
        h.now,
        h.wall_ms,
        900,
        TxnOp::EndTxnV2 {
            transactional_id: ID.to_string(),
            producer_id: 5,
            producer_epoch: p.1 - 1,
            commit: true,
            fresh_producer_id: -1,
        },
    );
    assert_eq!(
        reloaded.poll_output(),
        Some(TxnOutput::Reply {
            reply: 900,
            result: TxnResult::ProducerId {
                producer_id: 5,
                producer_epoch: p.1
            }
        })
    );
}

#[test]
fn protocol_v2_epoch_exhaustion_moves_the_producer_to_a_fresh_id() {
    let mut h = Harness::new(TxnConfig::default());
    // An id at the last epoch that can still be bumped, with a transaction open:
    // written into the log, then loaded.
    let meta = TxnMeta {
        producer_id: 40,
        producer_epoch: i16::MAX - 1,
        timeout_ms: 60_000,
        state: TxnState::Ongoing,
        partitions: [("t".to_string(), 0)].into_iter().collect(),
        start_ms: h.wall_ms,
        last_update_ms: h.wall_ms,
        prev_producer_id: -1,
        last_producer_epoch: -1,
        next_producer_id: -1,
    };
    let record = NewRecord {
        key: Some(encode_key(ID)),
        value: Some(encode_value(&meta)),
        timestamp_ms: h.wall_ms,
        headers: Vec::new(),
    };
    h.in_flight
        .push((0, build_batch(&[record], BatchOptions::default())));
    h.commit_appends();
    h.c = h.reloaded(0);
    let old = (40, i16::MAX - 1);
    assert_eq!(
        h.end_v2(old, true, -1).1,
        Some(TxnResult::Error(code::INVALID_PRODUCER_EPOCH)),
        "the bump needs a fresh id"
    );
    let (reply, _) = h.end_v2(old, true, 41);
    h.commit_appends();
    let answer = h.take_reply(reply).expect("answered at PrepareCommit");
    // The producer goes on with the fresh id at once: its request waits until the
    // transaction is complete (the fresh id is the id's producer only from then on).
    let (retry, early) = h.end_v2(old, true, -1);
    assert_eq!(early, None, "a retry waits for the transaction to complete");
    let add = h.next_reply;
    let op = TxnOp::AddPartitions {
        transactional_id: ID.to_string(),
        producer_id: 41,
        producer_epoch: 0,
        partitions: vec![("t".to_string(), 2)],
        verify_only: false,
    };
    assert_eq!(h.request(op), None, "parked");
    let markers: Vec<Marker> = h.answer_markers(0).into_iter().map(|(.., m)| m).collect();
    h.commit_appends();
    assert_eq!(
        h.take_reply(retry),
        Some(answer.clone()),
        "a retry is answered again"
    );
    assert_eq!(h.take_reply(add), Some(TxnResult::Done));
    assert_eq!(markers.len(), 1);
    assert_eq!(
        (markers[0].producer_id, markers[0].producer_epoch),
        (40, i16::MAX),
        "the markers carry the last epoch of the old id"
    );
    assert_eq!(producer_of(&answer), (41, 0), "a fresh producer id at epoch 0");
    assert_eq!(h.c.metrics().epochs_exhausted, 1);
    assert_eq!(h.add((41, 0), &[("t", 1)]), TxnResult::Done);
    assert_eq!(h.c.transactions()[ID].partitions.len(), 2);
}

#[test]
fn a_v2_producer_ending_a_transaction_a_timeout_aborted_gets_its_next_epoch() {
    let config = TxnConfig::default();
    let mut h = Harness::new(config.clone());
    h.init_with_timeout(2_000, 3);
    let p = (3, 0);
    h.add(p, &[("t", 0)]);
    h.advance(Duration::from_millis(2_000 + config.abort_check_interval_ms));
    h.commit_appends();
    h.answer_markers(0);
    h.commit_appends();
    assert_eq!(h.state(), TxnState::CompleteAbort);
    // v1 producers are fenced (unchanged); a v2 producer's abort learns its epoch.
    assert_eq!(
        h.end(p, false).1,
        Some(TxnResult::Error(code::INVALID_PRODUCER_EPOCH))
    );
    assert_eq!(
        h.end_v2(p, false, -1).1,
        Some(TxnResult::ProducerId {
            producer_id: 3,
            producer_epoch: 1
        })
    );
    assert_eq!(
        h.end_v2(p, true, -1).1,
        Some(TxnResult::Error(code::PRODUCER_FENCED)),
        "its commit is not"
    );
    assert!(h.c.metrics().fenced >= 1);
}

#[test]
fn requests_for_an_ending_transaction_wait_for_it_in_order() {
    let config = TxnConfig::default();
    let mut h = Harness::new(config.clone());
    let p = producer_of(&h.init(11));
    h.add(p, &[("a", 0), ("b", 0)]);
    let (end, _) = h.end(p, true);
    h.commit_appends();
    assert_eq!(
        h.take_reply(end),
        Some(TxnResult::Done),
        "answered at PrepareCommit"
    );
    assert_eq!(h.state(), TxnState::PrepareCommit);
    // The producer's next transaction starts while the markers are being written.
    let add_a = |verify_only| TxnOp::AddPartitions {
        transactional_id: ID.to_string(),
        producer_id: p.0,
        producer_epoch: p.1,
        partitions: vec![("a".to_string(), 0)],
        verify_only,
    };
    let add = add_a(false);
    let first = h.next_reply;
    assert_eq!(h.request(add.clone()), None, "parked");
    let second = h.next_reply;
    assert_eq!(h.request(add.clone()), None, "parked behind the first");
    // A KIP-890 verification is answered from the state as it is.
    assert_eq!(
        h.request(add_a(true)),
        Some(TxnResult::Error(code::TRANSACTION_ABORTABLE))
    );
    h.answer_markers(0);
    // CompleteCommit and the first add's Ongoing record are appended together (one
    // sync, not two in turn); the first add is answered at its own record's commit.
    assert_eq!(h.in_flight.len(), 2, "CompleteCommit and the next Ongoing");
    assert!(h.take_reply(first).is_none(), "not before its record is durable");
    let complete = h.in_flight.remove(0);
    let ongoing = std::mem::take(&mut h.in_flight);
    h.in_flight.push(complete);
    h.commit_appends();
    assert!(
        h.take_reply(first).is_none(),
        "CompleteCommit durable, the Ongoing record not yet"
    );
    // The second waits for the first's record.
    assert!(h.take_reply(second).is_none());
    h.in_flight = ongoing;
    h.commit_appends();
    assert_eq!(h.take_reply(first), Some(TxnResult::Done));
    assert_eq!(
        h.take_reply(second),
        Some(TxnResult::Done),
        "served in order, already added"
    );
    assert_eq!(h.state(), TxnState::Ongoing);
    assert_eq!(
        h.c.transactions()[ID].partitions.len(),
        1,
        "the new transaction's partitions"
    );
    assert_eq!(h.c.metrics().parked, 2);

    // Markers that cannot be written: a parked request gives up after
    // `ending_wait_ms`, and at most MAX_PARKED_PER_ID wait.
    let (end, _) = h.end(p, false);
    h.commit_appends();
    assert_eq!(h.take_reply(end), Some(TxnResult::Done));
    let waiting: Vec<u64> = (0..oxbow_core::txn::coordinator::MAX_PARKED_PER_ID)
        .map(|_| {
            let reply = h.next_reply;
            assert_eq!(h.request(add.clone()), None);
            reply
        })
        .collect();
    assert_eq!(
        h.request(add.clone()),
        Some(TxnResult::Error(code::CONCURRENT_TRANSACTIONS)),
        "beyond the bound"
    );
    h.advance(Duration::from_millis(config.ending_wait_ms - 1));
    assert!(waiting.iter().all(|r| h.take_reply(*r).is_none()));
    h.advance(Duration::from_millis(1));
    for reply in waiting {
        assert_eq!(
            h.take_reply(reply),
            Some(TxnResult::Error(code::CONCURRENT_TRANSACTIONS))
        );
    }
    assert_eq!(h.c.metrics().park_timeouts, 16);
    // Losing leadership answers whoever is still parked.
    let last = h.next_reply;
    assert_eq!(h.request(add), None);
    h.c.unload();
    h.pump();
    assert_eq!(h.take_reply(last), Some(TxnResult::Error(code::NOT_COORDINATOR)));
}

#[test]
fn a_request_served_behind_an_unwritten_complete_record_is_refused_with_it() {
    let mut h = Harness::new(TxnConfig::default());
    let p = producer_of(&h.init(12));
    h.add(p, &[("a", 0)]);
    h.end(p, true);
    h.commit_appends();
    let next = h.next_reply;
    let add = TxnOp::AddPartitions {
        transactional_id: ID.to_string(),
        producer_id: p.0,
        producer_epoch: p.1,
        partitions: vec![("b".to_string(), 0)],
        verify_only: false,
    };
    assert_eq!(h.request(add), None, "parked while the marker is written");
    h.answer_markers(0);
    assert_eq!(h.in_flight.len(), 2);
    // The CompleteCommit append fails (leadership lost): the add behind it is refused,
    // never answered from a record the log may not hold.
    let (token, _) = h.in_flight.remove(0);
    h.c.on_append_done(h.now, h.wall_ms, token, Err(6));
    h.pump();
    assert_eq!(h.take_reply(next), Some(TxnResult::Error(code::NOT_COORDINATOR)));
    assert_eq!(h.reloads, 1);
    // Reloaded from the log, the coordinator finishes the decided transaction: the
    // marker again, then CompleteCommit.
    let mut c = h.reloaded(0);
    let mut markers = Vec::new();
    while let Some(output) = c.poll_output() {
        if let TxnOutput::WriteMarker { token, marker, .. } = output {
            markers.push((token, marker));
        }
    }
    assert_eq!(markers.len(), 1);
    assert!(markers[0].1.commit);
    c.on_marker_done(h.now, h.wall_ms, markers[0].0, 0);
    assert_eq!(c.transactions()[ID].state, TxnState::CompleteCommit);
}

#[test]
fn a_checkpoint_never_writes_more_than_the_records_since_the_last_one() {
    let config = TxnConfig {
        checkpoint_records: 4,
        ..TxnConfig::default()
    };
    let mut h = Harness::new(config);
    // 30 ids, each given a producer and then a new epoch: 60 state records.
    for _round in 0..2 {
        for i in 0..30 {
            let op = TxnOp::InitProducerId {
                transactional_id: format!("id-{i}"),
                timeout_ms: 60_000,
                producer_id: -1,
                producer_epoch: -1,
                fresh_producer_id: i,
            };
            let reply = h.next_reply;
            h.request(op);
            h.commit_appends();
            assert!(matches!(h.take_reply(reply), Some(TxnResult::ProducerId { .. })));
        }
    }
    let records: i64 = h
        .log
        .iter()
        .map(|(_, batch)| i64::from(oxbow_core::log::BatchHeader::parse(batch).unwrap().record_count))
        .sum();
    let checkpointed = records - 60;
    // Every checkpoint copies all ids; one every 4 records would have written ~200.
    assert!(
        (1..=60).contains(&checkpointed),
        "checkpoint records: {checkpointed}"
    );
    let trim = *h.trims.last().expect("a checkpoint trimmed the log");
    assert_eq!(h.reloaded(trim).transactions(), h.c.transactions());
}
