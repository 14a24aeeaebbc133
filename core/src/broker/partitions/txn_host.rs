//! Hosting transaction coordinators ([`TxnCoordinator`]) on `__transaction_state`
//! partitions, the way `__consumer_offsets` partitions host group coordinators: the
//! coordinator loads from its partition's log when the replica leads, its records are
//! appended with acks=all through the replica, its checkpoints trim the log, and its
//! markers leave as [`MarkerSend`]s for the broker to route to the shards owning the
//! partitions (where [`Partitions::write_marker`] appends them through each
//! partition's normal Raft path).

use super::{Hosted, OpRef, OpResult, Partitions, TopicPartition};
use crate::broker::io::{BrokerEffect, BrokerInput};
use crate::group::coordinator::txn_offsets::TxnCommit;
use crate::group::ReplyId;
use crate::kafka::ErrorCode;
use crate::log::read::trim_fetched;
use crate::partition::{Acks, ProduceError, ProduceToken, ReadToken};
use crate::time::Instant;
use crate::txn::coordinator::code;
use crate::txn::marker::Marker;
use crate::txn::{TxnConfig, TxnCoordinator, TxnOp, TxnOutput, TxnResult, TXN_STATE_TOPIC};
use std::collections::{BTreeMap, VecDeque};

/// Bytes read per step while a coordinator replays its log.
const LOAD_READ_BYTES: u64 = 1 << 20;

/// A marker a coordinator wants written to a partition (possibly on another shard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerSend {
    /// The coordinator's partition.
    pub coordinator: TopicPartition,
    /// The coordinator's token, quoted back in [`Partitions::txn_marker_done`].
    pub token: u64,
    /// Where the marker goes.
    pub topic: String,
    /// Where the marker goes.
    pub partition: i32,
    /// The marker.
    pub marker: Marker,
    /// Wall-clock ms to stamp it with.
    pub timestamp_ms: i64,
}

/// Replay progress: next offset, the end (fixed once everything is committed), the
/// read in flight.
#[derive(Clone, Copy, Debug)]
struct Load {
    next: i64,
    until: Option<i64>,
    reading: Option<ReadToken>,
}

#[derive(Debug)]
struct TxnHost {
    coordinator: TxnCoordinator,
    load: Option<Load>,
}

/// The transaction coordinators of one shard and their bookkeeping.
#[derive(Debug, Default)]
pub struct TxnHosts {
    config: TxnConfig,
    /// Producer-state settings of every hosted partition.
    producers: crate::txn::ProducerStateConfig,
    /// Counters of coordinators no longer hosted here (so totals never go back).
    retired: crate::txn::TxnMetrics,
    hosts: BTreeMap<TopicPartition, TxnHost>,
    replies: BTreeMap<u64, OpRef>,
    appends: BTreeMap<ProduceToken, (TopicPartition, u64)>,
    load_reads: BTreeMap<ReadToken, TopicPartition>,
    /// Markers appended to `__consumer_offsets` partitions: their group coordinator
    /// settles the producer's transactional offsets once the marker is committed.
    group_markers: BTreeMap<ProduceToken, (TopicPartition, i64, bool)>,
    /// Markers to route (drained by the broker).
    pub sends: VecDeque<MarkerSend>,
}

impl TxnHosts {
    /// The coordinators' settings.
    pub fn set_config(&mut self, config: TxnConfig) {
        self.config = config;
    }

    /// The coordinators' settings.
    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// The producer-state settings of every partition hosted from now on.
    pub fn set_producer_config(&mut self, config: crate::txn::ProducerStateConfig) {
        self.producers = config;
    }

    /// The producer-state settings partitions are hosted with.
    pub fn producer_config(&self) -> crate::txn::ProducerStateConfig {
        self.producers
    }

    /// The coordinators' counters (those no longer hosted included) and the
    /// transactions they have open.
    pub fn metrics(&self) -> (crate::txn::TxnMetrics, u64) {
        let mut total = self.retired.clone();
        let mut ongoing = 0;
        for host in self.hosts.values() {
            total.add(host.coordinator.metrics());
            ongoing += host.coordinator.ongoing();
        }
        (total, ongoing)
    }

    /// The coordinator of a hosted `__transaction_state` partition.
    pub fn coordinator(&self, tp: &TopicPartition) -> Option<&TxnCoordinator> {
        self.hosts.get(tp).map(|h| &h.coordinator)
    }
}

impl Partitions {
    /// A partition started being hosted: give `__transaction_state` partitions a
    /// coordinator.
    pub(super) fn txn_on_host(&mut self, tp: &TopicPartition) {
        if tp.0 == TXN_STATE_TOPIC {
            let coordinator = TxnCoordinator::new(tp.1, self.txn.config.clone());
            self.txn.hosts.insert(
                tp.clone(),
                TxnHost {
                    coordinator,
                    load: None,
                },
            );
        }
    }

    /// A partition stops being hosted: its coordinator's waiting requests fail.
    pub(super) fn txn_on_remove(&mut self, tp: &TopicPartition) {
        if let Some(mut host) = self.txn.hosts.remove(tp) {
            self.txn.retired.add(host.coordinator.metrics());
            host.coordinator.unload();
            while let Some(output) = host.coordinator.poll_output() {
                if let TxnOutput::Reply { reply, result } = output {
                    self.txn_reply(reply, result);
                }
            }
        }
        self.txn.appends.retain(|_, (t, _)| t != tp);
        self.txn.group_markers.retain(|_, (t, ..)| t != tp);
        self.txn.load_reads.retain(|_, t| t != tp);
    }

    fn txn_reply(&mut self, reply: u64, result: TxnResult) {
        if let Some(op_ref) = self.txn.replies.remove(&reply) {
            self.results.push_back((op_ref, OpResult::Txn(Box::new(result))));
        }
    }

    /// A request for the coordinator of `tp`.
    pub(super) fn txn_run(&mut self, now: Instant, op_ref: OpRef, tp: &TopicPartition, op: TxnOp) {
        let wall_ms = self.wall_ms(now);
        let reply = self.token();
        match self.txn.hosts.get_mut(tp) {
            Some(host) => {
                self.txn.replies.insert(reply, op_ref);
                host.coordinator.handle(now, wall_ms, reply, op);
            }
            None => {
                let result = TxnResult::Error(code::NOT_COORDINATOR);
                self.results.push_back((op_ref, OpResult::Txn(Box::new(result))));
            }
        }
    }

    /// TxnOffsetCommit for the group coordinator of `__consumer_offsets` partition `tp`.
    pub(super) fn txn_offset_commit(
        &mut self,
        now: Instant,
        op_ref: OpRef,
        tp: &TopicPartition,
        commit: TxnCommit,
    ) {
        let wall_ms = self.wall_ms(now);
        let reply = ReplyId(self.token());
        let has_coordinator = self.hosted.get(tp).is_some_and(|h| h.coordinator.is_some());
        if !has_coordinator {
            self.results
                .push_back((op_ref, OpResult::Error(ErrorCode::NOT_COORDINATOR.0)));
            return;
        }
        self.group_replies.insert(reply, op_ref);
        if let Some(c) = self.hosted.get_mut(tp).and_then(|h| h.coordinator.as_mut()) {
            c.txn_commit(now, wall_ms, reply, commit);
        }
    }

    /// DescribeProducers on `tp` (leader only): the producers of everything applied.
    pub(super) fn describe_producers(&mut self, op_ref: OpRef, tp: &TopicPartition) {
        let result = match self.hosted.get(tp) {
            None => OpResult::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0),
            Some(h) if !h.replica.is_leader() => OpResult::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER.0),
            Some(h) => OpResult::Producers(h.replica.producers().tip().summaries()),
        };
        self.results.push_back((op_ref, result));
    }

    /// Appends a transaction marker to `tp` (acknowledged once committed, like a
    /// produce with acks=all).
    pub(super) fn write_marker(
        &mut self,
        now: Instant,
        op_ref: OpRef,
        tp: &TopicPartition,
        marker: &Marker,
        timestamp_ms: i64,
    ) {
        let token = ProduceToken(self.token());
        let Some(hosted) = self.hosted.get_mut(tp) else {
            self.results
                .push_back((op_ref, OpResult::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0)));
            return;
        };
        match hosted.replica.append_marker(now, marker, timestamp_ms, token) {
            Ok(_) => {
                self.produce_waits.insert(token, op_ref);
                if hosted.coordinator.is_some() {
                    self.txn
                        .group_markers
                        .insert(token, (tp.clone(), marker.producer_id, marker.commit));
                }
            }
            Err(error) => self
                .results
                .push_back((op_ref, OpResult::Error(error.kafka_error_code()))),
        }
    }

    /// Takes the completion of a coordinator's replay read; other inputs come back.
    pub(super) fn txn_on_input(&mut self, now: Instant, input: BrokerInput) -> Option<BrokerInput> {
        let BrokerInput::RangesRead { token, result } = input else {
            return Some(input);
        };
        let Some(tp) = self.txn.load_reads.remove(&token) else {
            return Some(BrokerInput::RangesRead { token, result });
        };
        let host = self.txn.hosts.get_mut(&tp)?;
        let mut load = host.load.filter(|l| l.reading == Some(token))?;
        load.reading = None;
        let until = load.until.unwrap_or(0);
        let loaded = result
            .map_err(|e| e.to_string())
            .and_then(|chunks| {
                trim_fetched(&chunks, load.next, until - 1, LOAD_READ_BYTES).map_err(|e| e.reason)
            })
            .and_then(|bytes| host.coordinator.load_batches(&bytes).map_err(|e| e.to_string()));
        match loaded {
            Ok(Some(next)) if next > load.next => load.next = next,
            // No progress (an unreadable log): stay loading (requests are answered
            // COORDINATOR_LOAD_IN_PROGRESS); the next leadership change tries again.
            _ => {
                load.until = Some(i64::MAX);
                load.reading = Some(token);
            }
        }
        host.load = Some(load);
        self.drain(now, &tp);
        None
    }

    /// A produce finished: if it was a coordinator's append, hand it over (`true`).
    pub(super) fn txn_on_produce_done(
        &mut self,
        now: Instant,
        token: ProduceToken,
        result: &Result<i64, ProduceError>,
    ) -> bool {
        if let Some((tp, producer_id, commit)) = self.txn.group_markers.remove(&token) {
            if result.is_ok() {
                if let Some(c) = self.hosted.get_mut(&tp).and_then(|h| h.coordinator.as_mut()) {
                    c.on_txn_marker(producer_id, commit);
                }
            }
            // The marker's own requester is answered through the produce waits.
            return false;
        }
        let Some((tp, coordinator_token)) = self.txn.appends.remove(&token) else {
            return false;
        };
        let wall_ms = self.wall_ms(now);
        if let Some(host) = self.txn.hosts.get_mut(&tp) {
            let result = result.as_ref().map(|o| *o).map_err(|e| e.kafka_error_code());
            host.coordinator
                .on_append_done(now, wall_ms, coordinator_token, result);
        }
        true
    }

    /// The replica of `tp` became leader (or stopped leading).
    pub(super) fn txn_on_role(&mut self, tp: &TopicPartition, leader: bool, epoch: i32) {
        let Some(host) = self.txn.hosts.get_mut(tp) else {
            return;
        };
        if leader {
            host.coordinator.begin_load(epoch);
            host.load = Some(Load {
                next: 0,
                until: None,
                reading: None,
            });
        } else {
            host.coordinator.unload();
            host.load = None;
        }
    }

    /// A marker the coordinator of `coordinator` asked for finished with `error_code`.
    pub fn txn_marker_done(
        &mut self,
        now: Instant,
        coordinator: &TopicPartition,
        token: u64,
        error_code: i16,
    ) {
        let wall_ms = self.wall_ms(now);
        if let Some(host) = self.txn.hosts.get_mut(coordinator) {
            host.coordinator.on_marker_done(now, wall_ms, token, error_code);
        }
        self.drain(now, coordinator);
    }

    /// Timers of every coordinator.
    pub(super) fn txn_handle_timeout(&mut self, now: Instant) {
        let wall_ms = self.wall_ms(now);
        let due: Vec<TopicPartition> = self
            .txn
            .hosts
            .iter()
            .filter(|(_, h)| h.coordinator.poll_timeout().is_some_and(|t| t <= now))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            if let Some(host) = self.txn.hosts.get_mut(&tp) {
                host.coordinator.handle_timeout(now, wall_ms);
            }
            self.drain(now, &tp);
        }
    }

    /// The earliest coordinator timer.
    pub(super) fn txn_poll_timeout(&self) -> Option<Instant> {
        self.txn
            .hosts
            .values()
            .filter_map(|h| h.coordinator.poll_timeout())
            .min()
    }

    /// Advances the replay of `tp` and moves its coordinator's outputs.
    pub(super) fn txn_drain(&mut self, now: Instant, tp: &TopicPartition) {
        if !self.txn.hosts.contains_key(tp) {
            return;
        }
        self.txn_advance_load(now, tp);
        let wall_ms = self.wall_ms(now);
        loop {
            let Some(output) = self
                .txn
                .hosts
                .get_mut(tp)
                .and_then(|h| h.coordinator.poll_output())
            else {
                return;
            };
            match output {
                TxnOutput::Reply { reply, result } => self.txn_reply(reply, result),
                TxnOutput::Append { token, batch } => self.txn_append(now, wall_ms, tp, token, batch),
                TxnOutput::WriteMarker {
                    token,
                    topic,
                    partition,
                    marker,
                } => self.txn.sends.push_back(MarkerSend {
                    coordinator: tp.clone(),
                    token,
                    topic,
                    partition,
                    marker,
                    timestamp_ms: wall_ms,
                }),
                TxnOutput::TrimLog { offset } => {
                    if let Some(hosted) = self.hosted.get_mut(tp) {
                        if offset > hosted.replica.log().start_offset()
                            && offset < hosted.replica.high_watermark()
                        {
                            // Failing to trim only costs replay time.
                            let _ = hosted.replica.log_mut().delete_records(now, offset);
                        }
                    }
                    self.txn_replica_effects(tp);
                }
                TxnOutput::Reload => {
                    let leader = self
                        .hosted
                        .get(tp)
                        .map(|h| (h.replica.is_leader(), h.replica.leader_epoch()));
                    if let Some((true, epoch)) = leader {
                        self.txn_on_role(tp, true, epoch);
                        self.txn_advance_load(now, tp);
                    }
                }
            }
        }
    }

    fn txn_append(
        &mut self,
        now: Instant,
        wall_ms: i64,
        tp: &TopicPartition,
        token: u64,
        batch: bytes::Bytes,
    ) {
        let produce_token = ProduceToken(self.token());
        let Some(Hosted { replica, .. }) = self.hosted.get_mut(tp) else {
            return;
        };
        match replica.produce(now, batch, Acks::All, produce_token) {
            Ok(_) => {
                self.txn.appends.insert(produce_token, (tp.clone(), token));
            }
            Err(error) => {
                if let Some(host) = self.txn.hosts.get_mut(tp) {
                    host.coordinator
                        .on_append_done(now, wall_ms, token, Err(error.kafka_error_code()));
                }
            }
        }
        self.txn_replica_effects(tp);
    }

    /// Moves a replica's effects out (its events are handled by the next drain).
    fn txn_replica_effects(&mut self, tp: &TopicPartition) {
        let Some(hosted) = self.hosted.get_mut(tp) else {
            return;
        };
        while let Some(effect) = hosted.replica.poll_effect() {
            self.effects.push_back(BrokerEffect::Partition {
                key: hosted.key.clone(),
                effect,
            });
        }
    }

    /// Drives a coordinator's replay: once everything in the log is committed (the new
    /// leader's first entry included), reads from the log start to the high watermark.
    fn txn_advance_load(&mut self, now: Instant, tp: &TopicPartition) {
        let wall_ms = self.wall_ms(now);
        let Some(hosted) = self.hosted.get(tp) else {
            return;
        };
        let Some(host) = self.txn.hosts.get_mut(tp) else {
            return;
        };
        let Some(mut load) = host.load else {
            return;
        };
        if load.reading.is_some() || !hosted.replica.is_leader() {
            return;
        }
        let high_watermark = hosted.replica.high_watermark();
        let until = match load.until {
            Some(until) => until,
            None if high_watermark < hosted.replica.log_end_offset() => return,
            None => high_watermark,
        };
        load.until = Some(until);
        load.next = load.next.max(hosted.replica.log().start_offset());
        if load.next >= until {
            host.load = None;
            host.coordinator.finish_load(now, wall_ms);
            return;
        }
        match hosted
            .replica
            .log()
            .read_plan(load.next, LOAD_READ_BYTES, until - 1)
        {
            Ok(plan) if !plan.ranges.is_empty() => {
                let token = ReadToken(self.next_token);
                self.next_token += 1;
                load.reading = Some(token);
                host.load = Some(load);
                self.txn.load_reads.insert(token, tp.clone());
                self.effects.push_back(BrokerEffect::ReadRanges {
                    key: hosted.key.clone(),
                    token,
                    ranges: plan.ranges,
                });
            }
            _ => {
                // The log moved under the replay: start over.
                let epoch = hosted.replica.leader_epoch();
                host.coordinator.begin_load(epoch);
                host.load = Some(Load {
                    next: hosted.replica.log().start_offset(),
                    until: None,
                    reading: None,
                });
            }
        }
    }
}
