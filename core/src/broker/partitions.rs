//! The partitions one shard hosts, and the execution of [`PartitionOp`]s on them:
//! produce (waiting for the acknowledgement the producer asked for), fetch (reading
//! whole batches below the high watermark, long-polling when there is nothing new),
//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords. Results leave as
//! `(OpRef, OpResult)` pairs for the broker to route to the request's shard.

use super::io::{BrokerEffect, BrokerInput, PartitionKey};
use super::shard::{OpRef, OpResult, PartitionOp};
use crate::group::{Coordinator, CoordinatorOutput, GroupConfig, ReplyId, Topics, OFFSETS_TOPIC};
use crate::kafka::ErrorCode;
use crate::log::read::{find_offset_for_timestamp, trim_fetched};
use crate::log::{DiskError, FileRange, Log, LogConfig};
use crate::partition::{Acks, ProduceToken, ReadToken, Replica, ReplicaEffect, ReplicaEvent, ReplicaSetup};
use crate::raft::{HardState, Membership, RaftConfig, Role};
use crate::time::Instant;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

mod hosted;
mod tier_host;
mod txn_host;

use hosted::HostedTable;

pub use tier_host::{TierSettings, TierStats};

/// Topic and partition number.
pub type TopicPartition = (String, i32);

struct Hosted {
    key: PartitionKey,
    replica: Replica,
    /// The group coordinator of a `__consumer_offsets` partition.
    coordinator: Option<Box<Coordinator>>,
    /// A coordinator's replay of the log, while it runs.
    load: Option<GroupLoad>,
}

/// Progress of a coordinator's replay: the next offset to read, up to where, and the
/// read in flight.
#[derive(Clone, Copy, Debug)]
struct GroupLoad {
    next: i64,
    until: Option<i64>,
    reading: Option<ReadToken>,
}

#[derive(Clone, Debug)]
enum ReadPurpose {
    Fetch {
        offset: i64,
        max_bytes: u64,
        read_committed: bool,
    },
    Timestamp {
        timestamp: i64,
    },
    GroupLoad,
}

struct PendingRead {
    op_ref: OpRef,
    tp: TopicPartition,
    purpose: ReadPurpose,
    high_watermark: i64,
}

struct ParkedFetch {
    op_ref: OpRef,
    tp: TopicPartition,
    offset: i64,
    max_bytes: u64,
    wait_until: Instant,
    read_committed: bool,
}

/// The partitions of one shard.
pub struct Partitions {
    node_id: i32,
    raft: RaftConfig,
    /// With coalesced heartbeats (cluster mode): when every led group next sends its
    /// heartbeats, all in the same turn, so they leave as one frame per peer.
    heartbeats_at: Option<Instant>,
    hosted: HostedTable,
    /// Raft counters of partitions no longer hosted (so the totals never go down).
    retired_raft: crate::raft::RaftTotals,
    produce_waits: BTreeMap<ProduceToken, OpRef>,
    reads: BTreeMap<ReadToken, PendingRead>,
    parked: Vec<ParkedFetch>,
    delete_waits: BTreeMap<TopicPartition, Vec<(OpRef, i64)>>,
    next_token: u64,
    group_config: GroupConfig,
    wall_clock_origin_ms: i64,
    topics: Topics,
    /// Group requests waiting at a coordinator.
    group_replies: BTreeMap<ReplyId, OpRef>,
    /// Coordinator appends: produce token → (partition, coordinator token).
    coordinator_appends: BTreeMap<ProduceToken, (TopicPartition, u64)>,
    /// Results ready for routing.
    pub results: VecDeque<(OpRef, OpResult)>,
    /// Effects for the runtime.
    pub effects: VecDeque<BrokerEffect>,
    /// Leaderships that changed: (key, this replica's leader epoch or -1, the leader
    /// if known, the term).
    pub epoch_changes: VecDeque<(PartitionKey, i32, Option<u64>, i32)>,
    /// Transaction coordinators of `__transaction_state` partitions.
    pub txn: txn_host::TxnHosts,
    /// Archivers and remote reads of tiered partitions.
    pub tier: tier_host::TierHosts,
}

impl std::fmt::Debug for Partitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partitions")
            .field("hosted", &self.hosted.len())
            .finish()
    }
}

fn tp_of(key: &PartitionKey) -> TopicPartition {
    (key.topic.clone(), key.partition)
}

impl Partitions {
    /// An empty table.
    pub fn new(node_id: i32, raft: RaftConfig) -> Self {
        Partitions {
            node_id,
            raft,
            heartbeats_at: None,
            hosted: HostedTable::default(),
            retired_raft: crate::raft::RaftTotals::default(),
            produce_waits: BTreeMap::new(),
            reads: BTreeMap::new(),
            parked: Vec::new(),
            delete_waits: BTreeMap::new(),
            next_token: 1,
            group_config: GroupConfig::default(),
            wall_clock_origin_ms: 0,
            topics: Topics::new(),
            group_replies: BTreeMap::new(),
            coordinator_appends: BTreeMap::new(),
            results: VecDeque::new(),
            effects: VecDeque::new(),
            epoch_changes: VecDeque::new(),
            txn: txn_host::TxnHosts::default(),
            tier: tier_host::TierHosts::default(),
        }
    }

    /// Settings of the group coordinators of `__consumer_offsets` partitions, and the
    /// wall clock at `Instant::ZERO` (commit timestamps, retention).
    pub fn configure_groups(&mut self, config: GroupConfig, wall_clock_origin_ms: i64) {
        self.group_config = config;
        self.wall_clock_origin_ms = wall_clock_origin_ms;
    }

    fn wall_ms(&self, now: Instant) -> i64 {
        self.wall_clock_origin_ms + i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    }

    /// Tells coordinators about topics (KIP-848 assignments).
    pub fn set_topics(&mut self, now: Instant, topics: Topics) {
        if topics == self.topics {
            return;
        }
        self.topics = topics.clone();
        let wall_ms = self.wall_ms(now);
        let tps: Vec<TopicPartition> = self
            .hosted
            .iter()
            .filter(|(_, h)| h.coordinator.is_some())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in tps {
            if let Some(c) = self.hosted.get_mut(&tp).and_then(|h| h.coordinator.as_mut()) {
                c.set_topics(now, wall_ms, topics.clone());
            }
            self.drain(now, &tp);
        }
    }

    /// Group-coordinator counters of this shard's coordinators, summed.
    pub fn group_metrics(&self) -> crate::group::GroupMetrics {
        let mut total = crate::group::GroupMetrics::default();
        for coordinator in self.hosted.values().filter_map(|h| h.coordinator.as_ref()) {
            let metrics = coordinator.metrics();
            for (state, count) in metrics.groups_by_state {
                *total.groups_by_state.entry(state).or_default() += count;
            }
            total.rebalances += metrics.rebalances;
            total.offset_commits += metrics.offset_commits;
        }
        total
    }

    /// Transaction counters of this shard: its coordinators' (summed), transactions
    /// open there, and producers tracked by its partitions' producer state.
    pub fn txn_metrics(&self) -> crate::txn::TxnShardMetrics {
        let (coordinators, ongoing) = self.txn.metrics();
        let producers = self
            .hosted
            .values()
            .map(|h| h.replica.producers().tip().len() as u64)
            .sum();
        crate::txn::TxnShardMetrics {
            coordinators,
            ongoing,
            producers,
        }
    }

    fn token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// The partitions hosted, with their keys.
    pub fn keys(&self) -> Vec<PartitionKey> {
        self.hosted.values().map(|h| h.key.clone()).collect()
    }

    /// The Raft counters of every partition this shard hosts or hosted.
    pub fn raft_totals(&self) -> crate::raft::RaftTotals {
        let mut totals = self.retired_raft;
        for hosted in self.hosted.values() {
            totals.add(hosted.replica.raft().stats());
        }
        totals
    }

    /// How many of the hosted partitions this shard leads now.
    pub fn led_count(&self) -> usize {
        self.hosted.values().filter(|h| h.replica.is_leader()).count()
    }

    /// Partitions this shard leads: their key, leader epoch and in-sync replicas
    /// (voters streaming appends and heard from within `max_silence`).
    pub fn led(&self, now: Instant, max_silence: std::time::Duration) -> Vec<(PartitionKey, i32, Vec<u64>)> {
        self.hosted
            .values()
            .filter(|h| h.replica.is_leader())
            .filter_map(|h| {
                let isr = h.replica.raft().in_sync_voters(now, max_silence)?;
                Some((h.key.clone(), h.replica.leader_epoch(), isr))
            })
            .collect()
    }

    /// The replica of a hosted partition.
    pub fn replica(&self, tp: &TopicPartition) -> Option<&Replica> {
        self.hosted.get(tp).map(|h| &h.replica)
    }

    /// Starts hosting a partition over `log` (new and empty, or recovered), a Raft group
    /// of `voters` (broker ids and election priorities, the preferred leader on top;
    /// empty: this broker alone, on a single node).
    pub fn host(
        &mut self,
        now: Instant,
        key: PartitionKey,
        log: Log,
        hard_state: HardState,
        voters: &[(u64, crate::raft::Priority)],
    ) -> Result<(), String> {
        let node = u64::try_from(self.node_id).map_err(|_| "negative node id".to_string())?;
        let bootstrap = match voters {
            [] => Membership::with_voters([node]),
            voters => Membership::new(voters.iter().copied(), []),
        };
        let seed = u64::from(crc32c::crc32c(key.dir().as_bytes()));
        let setup = ReplicaSetup {
            node_id: node,
            raft: self.raft.clone(),
            bootstrap: bootstrap.map_err(|e| e.to_string())?,
            hard_state,
            config_entries: Vec::new(),
            // Each replica of the group its own election timeouts: with one seed on
            // every broker, two followers that lost their leader at the same moment
            // time out in lockstep and split every vote, term after term.
            seed: seed ^ node.rotate_left(32),
        };
        let mut replica = Replica::new(now, setup, log).map_err(|e| e.to_string())?;
        replica.set_producer_config(self.txn.producer_config());
        if self.raft.coalesced_heartbeats && self.heartbeats_at.is_none() {
            self.heartbeats_at = Some(now + self.raft.heartbeat_interval);
        }
        let tp = tp_of(&key);
        let coordinator = (key.topic == OFFSETS_TOPIC).then(|| {
            let mut c = Coordinator::new(
                key.partition,
                self.group_config.clone(),
                seed ^ node.rotate_left(17),
            );
            c.set_topics(now, 0, self.topics.clone());
            Box::new(c)
        });
        self.hosted.insert(
            tp.clone(),
            Hosted {
                key,
                replica,
                coordinator,
                load: None,
            },
        );
        self.txn_on_host(&tp);
        self.drain(now, &tp);
        self.hosted.refresh();
        Ok(())
    }

    /// Stops hosting a partition and asks the runtime to delete its storage.
    pub fn remove(&mut self, tp: &TopicPartition) {
        if let Some(mut hosted) = self.hosted.remove(tp) {
            self.retired_raft.add(hosted.replica.raft().stats());
            if let Some(coordinator) = hosted.coordinator.as_mut() {
                coordinator.unload();
                while let Some(output) = coordinator.poll_output() {
                    if let CoordinatorOutput::Reply { reply, result } = output {
                        if let Some(op_ref) = self.group_replies.remove(&reply) {
                            self.results
                                .push_back((op_ref, OpResult::Group(Box::new(result))));
                        }
                    }
                }
            }
            self.coordinator_appends.retain(|_, (t, _)| t != tp);
            self.txn_on_remove(tp);
            self.tier_on_remove(tp);
            if let Some(waits) = self.delete_waits.remove(tp) {
                for (op_ref, _) in waits {
                    self.results
                        .push_back((op_ref, OpResult::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0)));
                }
            }
            self.parked.retain(|p| &p.tp != tp);
            self.effects
                .push_back(BrokerEffect::RemovePartition { key: hosted.key });
        }
    }

    /// Applies new log settings to a hosted partition.
    pub fn set_log_config(&mut self, tp: &TopicPartition, config: LogConfig) {
        if let Some(hosted) = self.hosted.get_mut(tp) {
            hosted.replica.log_mut().set_config(config);
        }
    }

    /// Runs an operation on a hosted partition.
    pub fn run(&mut self, now: Instant, op_ref: OpRef, tp: TopicPartition, op: PartitionOp) {
        self.hosted.refresh();
        let remote = matches!(&op, PartitionOp::Fetch { offset, .. } if self.tier_serves(&tp, *offset));
        let Some(hosted) = self.hosted.get_mut(&tp) else {
            self.results
                .push_back((op_ref, OpResult::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0)));
            return;
        };
        let replica = &mut hosted.replica;
        let key = hosted.key.clone();
        match op {
            PartitionOp::Produce { batch, acks } => {
                let token = ProduceToken(self.next_token);
                self.next_token += 1;
                match replica.produce(now, batch, acks, token) {
                    Ok(base_offset) if acks == Acks::None => {
                        let log_start_offset = replica.log().start_offset();
                        self.results.push_back((
                            op_ref,
                            OpResult::Produced {
                                base_offset,
                                log_start_offset,
                            },
                        ));
                    }
                    Ok(_) => {
                        self.produce_waits.insert(token, op_ref);
                    }
                    Err(error) => self
                        .results
                        .push_back((op_ref, OpResult::Error(error.kafka_error_code()))),
                }
            }
            PartitionOp::Fetch {
                offset,
                max_bytes,
                wait_until,
                read_committed,
            } => {
                let visible_end = if read_committed {
                    replica.last_stable_offset()
                } else {
                    replica.high_watermark()
                };
                if !replica.is_leader() {
                    self.results
                        .push_back((op_ref, OpResult::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER.0)));
                } else if remote {
                    self.tier_fetch(now, op_ref, tp.clone(), offset, (max_bytes, read_committed));
                } else if offset >= visible_end
                    && offset <= replica.log_end_offset()
                    && wait_until.is_some_and(|d| d > now)
                {
                    // Nothing readable yet at this offset (at or past the high
                    // watermark, not past the log end): wait here for new data.
                    self.parked.push(ParkedFetch {
                        op_ref,
                        tp: tp.clone(),
                        offset,
                        max_bytes,
                        wait_until: wait_until.unwrap_or(now),
                        read_committed,
                    });
                } else {
                    self.start_fetch(op_ref, tp.clone(), key, offset, (max_bytes, read_committed));
                }
            }
            PartitionOp::ListOffsets {
                timestamp,
                read_committed,
            } => self.list_offsets(now, op_ref, tp.clone(), key, (timestamp, read_committed)),
            PartitionOp::Txn(op) => self.txn_run(now, op_ref, &tp, *op),
            PartitionOp::TxnOffsetCommit(commit) => self.txn_offset_commit(now, op_ref, &tp, *commit),
            PartitionOp::DescribeProducers => self.describe_producers(op_ref, &tp),
            PartitionOp::WriteMarker { marker, timestamp_ms } => {
                self.write_marker(now, op_ref, &tp, &marker, timestamp_ms)
            }
            PartitionOp::Refused { code } => self.results.push_back((op_ref, OpResult::Error(code))),
            PartitionOp::Group(op) => {
                let wall_ms = self.wall_clock_origin_ms + i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
                let reply = ReplyId(self.next_token);
                self.next_token += 1;
                match hosted.coordinator.as_mut() {
                    Some(coordinator) => {
                        self.group_replies.insert(reply, op_ref);
                        coordinator.handle(now, wall_ms, reply, *op);
                    }
                    None => self
                        .results
                        .push_back((op_ref, OpResult::Error(ErrorCode::NOT_COORDINATOR.0))),
                }
            }
            // Answered by the leader only, as Kafka does (a follower's log may still
            // be truncated; its start offset is not the partition's).
            PartitionOp::EpochEnd { .. } | PartitionOp::DeleteRecords { .. } if !replica.is_leader() => {
                self.results
                    .push_back((op_ref, OpResult::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER.0)));
            }
            PartitionOp::EpochEnd { epoch } => {
                let result = match replica.end_offset_for_epoch(epoch) {
                    Some((epoch, end_offset)) => OpResult::EpochEnd { epoch, end_offset },
                    None => OpResult::EpochEnd {
                        epoch: -1,
                        end_offset: -1,
                    },
                };
                self.results.push_back((op_ref, result));
            }
            PartitionOp::DeleteRecords { offset } => {
                let high_watermark = replica.high_watermark();
                let target = if offset == -1 { high_watermark } else { offset };
                if target > high_watermark || target < 0 {
                    self.results
                        .push_back((op_ref, OpResult::Error(ErrorCode::OFFSET_OUT_OF_RANGE.0)));
                } else if target <= replica.log().start_offset() {
                    let low_watermark = replica.log().start_offset();
                    self.results
                        .push_back((op_ref, OpResult::RecordsDeleted { low_watermark }));
                } else {
                    match replica.log_mut().delete_records(now, target) {
                        Ok(_) => self
                            .delete_waits
                            .entry(tp.clone())
                            .or_default()
                            .push((op_ref, target)),
                        Err(e) => self
                            .results
                            .push_back((op_ref, OpResult::Error(e.kafka_error_code()))),
                    }
                }
            }
        }
        self.drain(now, &tp);
    }

    /// Starts a fetch; `(max_bytes, read_committed)` bound it.
    fn start_fetch(
        &mut self,
        op_ref: OpRef,
        tp: TopicPartition,
        key: PartitionKey,
        offset: i64,
        (max_bytes, read_committed): (u64, bool),
    ) {
        let Some(hosted) = self.hosted.get(&tp) else {
            return;
        };
        let replica = &hosted.replica;
        let high_watermark = replica.high_watermark();
        let last_stable_offset = replica.last_stable_offset();
        let end = if read_committed {
            last_stable_offset
        } else {
            high_watermark
        };
        match replica.fetch_plan_until(offset, max_bytes, end) {
            Err(e) => self
                .results
                .push_back((op_ref, OpResult::Error(e.kafka_error_code()))),
            Ok(plan) if plan.ranges.is_empty() => {
                let log_start_offset = self.tier_log_start(&tp, replica.log().start_offset());
                self.results.push_back((
                    op_ref,
                    OpResult::Fetched {
                        high_watermark,
                        log_start_offset,
                        last_stable_offset,
                        aborted: Vec::new(),
                        records: Bytes::new(),
                    },
                ));
            }
            Ok(plan) => self.read(
                op_ref,
                tp,
                key,
                plan.ranges,
                ReadPurpose::Fetch {
                    offset,
                    max_bytes,
                    read_committed,
                },
                end,
            ),
        }
    }

    fn read(
        &mut self,
        op_ref: OpRef,
        tp: TopicPartition,
        key: PartitionKey,
        ranges: Vec<FileRange>,
        purpose: ReadPurpose,
        high_watermark: i64,
    ) {
        let token = ReadToken(self.token());
        self.reads.insert(
            token,
            PendingRead {
                op_ref,
                tp,
                purpose,
                high_watermark,
            },
        );
        self.effects
            .push_back(BrokerEffect::ReadRanges { key, token, ranges });
    }

    fn list_offsets(
        &mut self,
        now: Instant,
        op_ref: OpRef,
        tp: TopicPartition,
        key: PartitionKey,
        (timestamp, read_committed): (i64, bool),
    ) {
        let Some(hosted) = self.hosted.get(&tp) else {
            return;
        };
        let replica = &hosted.replica;
        let leader_epoch = replica.leader_epoch();
        let offset = |offset| OpResult::Offset {
            offset,
            timestamp: -1,
            leader_epoch,
        };
        if !replica.is_leader() {
            self.results
                .push_back((op_ref, OpResult::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER.0)));
            return;
        }
        let high_watermark = replica.high_watermark();
        let log_start = self.tier_log_start(&tp, replica.log().start_offset());
        if timestamp != -2 && !replica.high_watermark_established() {
            // The end (and what lies below it) is not known yet: retriable.
            self.results
                .push_back((op_ref, OpResult::Error(ErrorCode::OFFSET_NOT_AVAILABLE.0)));
            return;
        }
        match timestamp {
            -2 => self.results.push_back((op_ref, offset(log_start))),
            -1 if read_committed => self
                .results
                .push_back((op_ref, offset(replica.last_stable_offset()))),
            -1 => self.results.push_back((op_ref, offset(high_watermark))),
            ts if ts >= 0 && self.tier_has_remote(&tp) => self.tier_find_timestamp(now, op_ref, tp, ts),
            ts => self.local_timestamp(op_ref, tp, key, ts),
        }
    }

    /// ListOffsets by timestamp in the local log.
    fn local_timestamp(&mut self, op_ref: OpRef, tp: TopicPartition, key: PartitionKey, ts: i64) {
        let Some(hosted) = self.hosted.get(&tp) else {
            return;
        };
        let replica = &hosted.replica;
        let leader_epoch = replica.leader_epoch();
        let offset = |offset| OpResult::Offset {
            offset,
            timestamp: -1,
            leader_epoch,
        };
        let high_watermark = replica.high_watermark();
        // -3 (newest timestamp): the batch holding the largest timestamp; the segment
        // maxima bound it, the read finds the batch.
        let target = if ts == -3 {
            replica
                .log()
                .segments()
                .iter()
                .map(|s| s.max_timestamp_ms)
                .max()
                .unwrap_or(-1)
        } else {
            ts
        };
        match replica.log().timestamp_plan(target) {
            Some(range) if target >= 0 => self.read(
                op_ref,
                tp,
                key,
                vec![range],
                ReadPurpose::Timestamp { timestamp: target },
                high_watermark,
            ),
            _ => self.results.push_back((op_ref, offset(-1))),
        }
    }

    /// Takes a completion for one of this shard's partitions or reads.
    pub fn handle(&mut self, now: Instant, input: BrokerInput) {
        self.hosted.refresh();
        let input = match self.txn_on_input(now, input) {
            Some(input) => input,
            None => return,
        };
        let load_tp = match &input {
            BrokerInput::RangesRead { token, .. } => self
                .reads
                .get(token)
                .filter(|r| matches!(r.purpose, ReadPurpose::GroupLoad))
                .map(|r| r.tp.clone()),
            _ => None,
        };
        if let Some(tp) = load_tp {
            if let BrokerInput::RangesRead { token, result } = input {
                self.reads.remove(&token);
                self.on_load_read(token, &tp, result);
                self.advance_load(now, &tp);
                self.drain(now, &tp);
            }
            return;
        }
        match input {
            BrokerInput::Partition { key, input } => {
                let tp = tp_of(&key);
                if let Some(hosted) = self.hosted.get_mut(&tp) {
                    if hosted.key == key {
                        hosted.replica.handle(now, input);
                        self.drain(now, &tp);
                    }
                }
            }
            BrokerInput::RangesRead { token, result } => self.on_read(token, result),
            BrokerInput::Store {
                key,
                owner,
                completion,
            } => self.tier_on_store(now, &key, owner, completion),
            _ => {}
        }
    }

    fn on_read(&mut self, token: ReadToken, result: Result<Vec<Bytes>, DiskError>) {
        let Some(read) = self.reads.remove(&token) else {
            return;
        };
        let Some(hosted) = self.hosted.get(&read.tp) else {
            self.results.push_back((
                read.op_ref,
                OpResult::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0),
            ));
            return;
        };
        let replica = &hosted.replica;
        let chunks = match result {
            Ok(chunks) => chunks,
            Err(_) => {
                self.results
                    .push_back((read.op_ref, OpResult::Error(ErrorCode::KAFKA_STORAGE_ERROR.0)));
                return;
            }
        };
        let result = match read.purpose {
            ReadPurpose::Fetch {
                offset,
                max_bytes,
                read_committed,
            } => {
                // `read.high_watermark` is the end the read stopped at (the last stable
                // offset for read_committed).
                match trim_fetched(&chunks, offset, read.high_watermark - 1, max_bytes) {
                    Ok(records) => OpResult::Fetched {
                        high_watermark: replica.high_watermark().max(read.high_watermark),
                        log_start_offset: self.tier_log_start(&read.tp, replica.log().start_offset()),
                        last_stable_offset: replica.last_stable_offset().max(if read_committed {
                            read.high_watermark
                        } else {
                            -1
                        }),
                        aborted: if read_committed {
                            replica
                                .aborted_transactions(offset, read.high_watermark)
                                .into_iter()
                                .map(|a| (a.producer_id, a.first_offset))
                                .collect()
                        } else {
                            Vec::new()
                        },
                        records,
                    },
                    Err(_) => OpResult::Error(ErrorCode::CORRUPT_MESSAGE.0),
                }
            }
            ReadPurpose::GroupLoad => return,
            ReadPurpose::Timestamp { timestamp } => {
                let bytes: Bytes = chunks.into_iter().next().unwrap_or_default();
                match find_offset_for_timestamp(&bytes, timestamp, replica.log().start_offset()) {
                    Ok(Some(offset)) if offset < read.high_watermark => OpResult::Offset {
                        offset,
                        timestamp,
                        leader_epoch: replica.leader_epoch(),
                    },
                    Ok(_) => OpResult::Offset {
                        offset: -1,
                        timestamp: -1,
                        leader_epoch: replica.leader_epoch(),
                    },
                    Err(_) => OpResult::Error(ErrorCode::CORRUPT_MESSAGE.0),
                }
            }
        };
        self.results.push_back((read.op_ref, result));
    }

    /// Runs timers: replicas, coalesced heartbeats, parked fetches past their
    /// deadline, retention.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.heartbeats_at.is_some_and(|at| at <= now) {
            self.heartbeats_at = Some(now + self.raft.heartbeat_interval);
            self.send_heartbeats(now);
        }
        // Only the partitions whose deadline came: found in the deadline index, not
        // by visiting every partition.
        self.hosted.refresh();
        let wall_ms = self.wall_ms(now);
        for tp in self.hosted.due(now) {
            let Some(hosted) = self.hosted.get_mut(&tp) else {
                continue;
            };
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
            if due(hosted.replica.poll_timeout()) {
                hosted.replica.handle_timeout(now);
                self.drain(now, &tp);
            }
            if let Some(c) = self
                .hosted
                .get_mut(&tp)
                .and_then(|h| h.coordinator.as_mut())
                .filter(|c| due(c.poll_timeout()))
            {
                c.handle_timeout(now, wall_ms);
                self.drain(now, &tp);
            }
        }
        self.txn_handle_timeout(now);
        self.tier_handle_timeout(now);
        self.wake_parked(now);
        self.hosted.refresh();
    }

    /// Every group this shard leads takes its heartbeat turn now; the heartbeats go
    /// out as partition `Send` effects, which the broker's outbox packs into one
    /// compact frame per peer.
    fn send_heartbeats(&mut self, now: Instant) {
        let leading: Vec<TopicPartition> = self
            .hosted
            .iter()
            .filter(|(_, h)| h.replica.is_leader())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in leading {
            if let Some(hosted) = self.hosted.get_mut(&tp) {
                for message in hosted.replica.take_heartbeats(now) {
                    self.effects.push_back(BrokerEffect::Partition {
                        key: hosted.key.clone(),
                        effect: ReplicaEffect::Send(message),
                    });
                }
            }
            self.drain(now, &tp);
        }
    }

    /// Applies retention to every hosted partition (wall-clock `now_wall_ms`).
    pub fn enforce_retention(&mut self, now: Instant, now_wall_ms: i64) {
        let tps: Vec<TopicPartition> = self.hosted.keys().cloned().collect();
        for tp in tps {
            let tiered = self.tier.manages_retention(&tp);
            if let Some(hosted) = self.hosted.get_mut(&tp) {
                let committed = hosted.replica.high_watermark() - 1;
                // A tiered partition's archiver applies local and total retention
                // (local data goes only once the object store holds it).
                if !tiered {
                    hosted
                        .replica
                        .log_mut()
                        .enforce_retention(now, now_wall_ms, committed);
                }
                hosted.replica.expire_producers(now_wall_ms);
            }
            self.drain(now, &tp);
        }
        self.hosted.refresh();
    }

    /// The earliest deadline among replicas, coordinators and parked fetches (the
    /// partitions' from the deadline index).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let parked = self.parked.iter().map(|p| p.wait_until);
        self.hosted
            .next_deadline()
            .into_iter()
            .chain(self.heartbeats_at)
            .chain(parked)
            .chain(self.txn_poll_timeout())
            .chain(self.tier_poll_timeout())
            .min()
    }

    /// Parked fetches whose partition has new data or whose deadline passed read now.
    fn wake_parked(&mut self, now: Instant) {
        let parked = std::mem::take(&mut self.parked);
        for fetch in parked {
            let new_data = self.hosted.get(&fetch.tp).is_none_or(|h| {
                let end = if fetch.read_committed {
                    h.replica.last_stable_offset()
                } else {
                    h.replica.high_watermark()
                };
                end > fetch.offset || !h.replica.is_leader()
            });
            if new_data || fetch.wait_until <= now {
                let key = self.hosted.get(&fetch.tp).map(|h| h.key.clone());
                match key {
                    Some(key) => self.start_fetch(
                        fetch.op_ref,
                        fetch.tp,
                        key,
                        fetch.offset,
                        (fetch.max_bytes, fetch.read_committed),
                    ),
                    None => self.results.push_back((
                        fetch.op_ref,
                        OpResult::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0),
                    )),
                }
            } else {
                self.parked.push(fetch);
            }
        }
    }

    /// Moves a replica's effects out and acts on its events.
    fn drain(&mut self, now: Instant, tp: &TopicPartition) {
        let Some(hosted) = self.hosted.get_mut(tp) else {
            return;
        };
        let key = hosted.key.clone();
        while let Some(effect) = hosted.replica.poll_effect() {
            self.effects.push_back(BrokerEffect::Partition {
                key: key.clone(),
                effect,
            });
        }
        let mut events = Vec::new();
        while let Some(event) = hosted.replica.poll_event() {
            events.push(event);
        }
        let log_start_offset = hosted.replica.log().start_offset();
        let leader_epoch = hosted.replica.leader_epoch();
        let mut woke = false;
        for event in events {
            match event {
                ReplicaEvent::ProduceDone { token, result } => {
                    if let Some((ctp, ctoken)) = self.coordinator_appends.remove(&token) {
                        let result = result.map_err(|e| e.kafka_error_code());
                        let wall_ms =
                            self.wall_clock_origin_ms + i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
                        if let Some(c) = self.hosted.get_mut(&ctp).and_then(|h| h.coordinator.as_mut()) {
                            c.on_append_done(now, wall_ms, ctoken, result);
                        }
                        continue;
                    }
                    if self.txn_on_produce_done(now, token, &result) {
                        continue;
                    }
                    if let Some(op_ref) = self.produce_waits.remove(&token) {
                        let result = match result {
                            Ok(base_offset) => OpResult::Produced {
                                base_offset,
                                log_start_offset,
                            },
                            Err(e) => OpResult::Error(e.kafka_error_code()),
                        };
                        self.results.push_back((op_ref, result));
                    }
                }
                ReplicaEvent::HighWatermark { .. } => woke = true,
                ReplicaEvent::RoleChanged { role, term, leader } => {
                    let epoch = if role == Role::Leader { leader_epoch } else { -1 };
                    let term = i32::try_from(term).unwrap_or(i32::MAX);
                    self.epoch_changes.push_back((key.clone(), epoch, leader, term));
                    self.txn_on_role(tp, role == Role::Leader, leader_epoch);
                    self.tier_on_role(now, tp, role == Role::Leader, leader_epoch);
                    if let Some(hosted) = self.hosted.get_mut(tp) {
                        if let Some(coordinator) = hosted.coordinator.as_mut() {
                            if role == Role::Leader {
                                coordinator.begin_load(leader_epoch);
                                hosted.load = Some(GroupLoad {
                                    next: hosted.replica.log().start_offset(),
                                    until: None,
                                    reading: None,
                                });
                            } else {
                                coordinator.unload();
                                hosted.load = None;
                            }
                        }
                    }
                    woke = true;
                }
                // DeleteRecords answers once the new start is durable on the leader and
                // committed in the log (so every replica trims, and a new leader keeps it).
                ReplicaEvent::StartOffsetReplicated { start_offset } => {
                    let waits = self.delete_waits.remove(tp).unwrap_or_default();
                    let (done, keep): (Vec<_>, Vec<_>) =
                        waits.into_iter().partition(|(_, t)| *t <= start_offset);
                    for (op_ref, _) in done {
                        self.results.push_back((
                            op_ref,
                            OpResult::RecordsDeleted {
                                low_watermark: start_offset,
                            },
                        ));
                    }
                    if !keep.is_empty() {
                        self.delete_waits.insert(tp.clone(), keep);
                    }
                }
                _ => {}
            }
        }
        if woke {
            self.wake_parked(now);
        }
        self.advance_load(now, tp);
        self.drain_coordinator(now, tp);
        self.txn_drain(now, tp);
    }

    /// Moves a coordinator's outputs: answers, appends, log trims, reloads.
    fn drain_coordinator(&mut self, now: Instant, tp: &TopicPartition) {
        let wall_ms = self.wall_ms(now);
        loop {
            let Some(hosted) = self.hosted.get_mut(tp) else {
                return;
            };
            let Some(coordinator) = hosted.coordinator.as_mut() else {
                return;
            };
            let Some(output) = coordinator.poll_output() else {
                return;
            };
            match output {
                CoordinatorOutput::Reply { reply, result } => {
                    if let Some(op_ref) = self.group_replies.remove(&reply) {
                        self.results
                            .push_back((op_ref, OpResult::Group(Box::new(result))));
                    }
                }
                CoordinatorOutput::Append { token, batch } => {
                    let produce_token = ProduceToken(self.next_token);
                    self.next_token += 1;
                    match hosted.replica.produce(now, batch, Acks::All, produce_token) {
                        Ok(_) => {
                            self.coordinator_appends
                                .insert(produce_token, (tp.clone(), token));
                        }
                        Err(error) => {
                            if let Some(c) = hosted.coordinator.as_mut() {
                                c.on_append_done(now, wall_ms, token, Err(error.kafka_error_code()));
                            }
                        }
                    }
                    self.drain_replica_effects(tp);
                }
                CoordinatorOutput::TrimLog { offset } => {
                    // The checkpoint is committed: the prefix it supersedes may go.
                    // Failing to trim only costs replay time.
                    // Never past the last stable offset: transactional offset commits
                    // still waiting for their marker must stay in the log.
                    if offset > hosted.replica.log().start_offset()
                        && offset < hosted.replica.last_stable_offset()
                    {
                        let _ = hosted.replica.log_mut().delete_records(now, offset);
                    }
                    self.drain_replica_effects(tp);
                }
                CoordinatorOutput::Reload => {
                    if hosted.replica.is_leader() {
                        let epoch = hosted.replica.leader_epoch();
                        if let Some(c) = hosted.coordinator.as_mut() {
                            c.begin_load(epoch);
                        }
                        hosted.load = Some(GroupLoad {
                            next: hosted.replica.log().start_offset(),
                            until: None,
                            reading: None,
                        });
                        self.advance_load(now, tp);
                    }
                }
            }
        }
    }

    /// Moves a replica's effects out (without handling its events).
    fn drain_replica_effects(&mut self, tp: &TopicPartition) {
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

    /// Drives a coordinator's replay: waits until everything in the log is committed
    /// (the new leader's first entry), then reads the log up to the high watermark.
    fn advance_load(&mut self, now: Instant, tp: &TopicPartition) {
        let wall_ms = self.wall_ms(now);
        let Some(hosted) = self.hosted.get_mut(tp) else {
            return;
        };
        let Some(mut load) = hosted.load else {
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
            hosted.load = None;
            if let Some(c) = hosted.coordinator.as_mut() {
                c.finish_load(now, wall_ms);
            }
            return;
        }
        match hosted.replica.log().read_plan(load.next, 1 << 20, until - 1) {
            Ok(plan) if !plan.ranges.is_empty() => {
                let token = ReadToken(self.next_token);
                self.next_token += 1;
                load.reading = Some(token);
                hosted.load = Some(load);
                let key = hosted.key.clone();
                self.reads.insert(
                    token,
                    PendingRead {
                        op_ref: OpRef {
                            origin: super::io::ShardId(u32::MAX),
                            request: 0,
                            slot: 0,
                        },
                        tp: tp.clone(),
                        purpose: ReadPurpose::GroupLoad,
                        high_watermark: until,
                    },
                );
                self.effects.push_back(BrokerEffect::ReadRanges {
                    key,
                    token,
                    ranges: plan.ranges,
                });
            }
            _ => {
                // Nothing readable below the watermark although it is above the log
                // start: the log moved under the replay. Start over.
                hosted.load = Some(GroupLoad {
                    next: hosted.replica.log().start_offset(),
                    until: None,
                    reading: None,
                });
                if let Some(c) = hosted.coordinator.as_mut() {
                    c.begin_load(hosted.replica.leader_epoch());
                }
            }
        }
    }

    fn on_load_read(&mut self, token: ReadToken, tp: &TopicPartition, result: Result<Vec<Bytes>, DiskError>) {
        let Some(hosted) = self.hosted.get_mut(tp) else {
            return;
        };
        let Some(mut load) = hosted.load.filter(|l| l.reading == Some(token)) else {
            return;
        };
        load.reading = None;
        let Some(coordinator) = hosted.coordinator.as_mut() else {
            return;
        };
        let until = load.until.unwrap_or(0);
        let loaded = result
            .map_err(|e| e.to_string())
            .and_then(|chunks| trim_fetched(&chunks, load.next, until - 1, 1 << 20).map_err(|e| e.reason))
            .and_then(|bytes| coordinator.load_batches(&bytes).map_err(|e| e.to_string()));
        match loaded {
            Ok(Some(next)) if next > load.next => load.next = next,
            // No progress (an unreadable log): the coordinator stays loading, answering
            // COORDINATOR_LOAD_IN_PROGRESS, and the replay is not retried in a loop;
            // the next leadership change (or a restart) tries again.
            _ => {
                load.until = Some(i64::MAX);
                load.reading = Some(token);
            }
        }
        hosted.load = Some(load);
    }

    /// Asks every replica to close its log cleanly.
    pub fn close(&mut self, now: Instant) {
        let tps: Vec<TopicPartition> = self.hosted.keys().cloned().collect();
        for tp in tps {
            if let Some(hosted) = self.hosted.get_mut(&tp) {
                hosted.replica.log_mut().close(now);
            }
            self.drain(now, &tp);
        }
        self.hosted.refresh();
    }

    /// Whether an effect belongs to a partition this shard hosts.
    pub fn hosts(&self, key: &PartitionKey) -> bool {
        self.hosted.get(&tp_of(key)).is_some_and(|h| &h.key == key)
    }

    /// Number of hosted partitions.
    pub fn len(&self) -> usize {
        self.hosted.len()
    }

    /// Whether no partition is hosted.
    pub fn is_empty(&self) -> bool {
        self.hosted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first election deadline of `node`'s replica of a three-voter partition.
    fn first_deadline(node: i32) -> Option<Instant> {
        let key = PartitionKey {
            topic: "orders".to_string(),
            partition: 0,
            revision: 1,
        };
        let mut partitions = Partitions::new(node, RaftConfig::default());
        let log = Log::new(LogConfig::default(), 0);
        let voters = [(1, 2), (2, 1), (3, 1)];
        partitions
            .host(Instant::ZERO, key, log, HardState::default(), &voters)
            .expect("hosted");
        partitions.poll_timeout()
    }

    /// The earliest partition deadline found by visiting every partition (what the
    /// index replaces).
    fn scanned_deadline(partitions: &Partitions) -> Option<Instant> {
        partitions.hosted.values().filter_map(hosted::deadline).min()
    }

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            topic: topic.to_string(),
            partition,
            revision: 1,
        }
    }

    #[test]
    fn the_deadline_index_agrees_with_a_scan_of_every_partition() {
        let mut partitions = Partitions::new(2, RaftConfig::default());
        let mut now = Instant::ZERO;
        // Partitions hosted at different times: single-voter leaders (a check-quorum
        // wake-up per election timeout) and followers of three-voter groups whose
        // peers never answer (election deadlines, campaigns).
        for i in 0..24 {
            let voters: &[(u64, crate::raft::Priority)] = if i % 3 == 0 {
                &[(1, 2), (2, 1), (3, 1)]
            } else {
                &[]
            };
            let log = Log::new(LogConfig::default(), 0);
            partitions
                .host(now, key("t", i), log, HardState::default(), voters)
                .expect("hosted");
            now += std::time::Duration::from_millis(37);
        }
        let mut wakeups = 0;
        let until = now + std::time::Duration::from_secs(30);
        while let Some(next) = partitions.poll_timeout() {
            if next > until {
                break;
            }
            assert_eq!(Some(next), scanned_deadline(&partitions), "index and scan differ");
            now = now.max(next);
            partitions.handle_timeout(now);
            wakeups += 1;
            // Disk and network effects are dropped: the point is the timers.
            partitions.effects.clear();
            assert_eq!(
                partitions.hosted.touched_len(),
                0,
                "every touched partition re-indexed"
            );
            let with_deadline = partitions
                .hosted
                .values()
                .filter(|h| hosted::deadline(h).is_some())
                .count();
            assert_eq!(partitions.hosted.indexed_len(), with_deadline);
            assert!(
                partitions.hosted.due(now).is_empty(),
                "nothing left due after handle_timeout at {now:?}"
            );
        }
        assert!(wakeups > 24, "timers ran ({wakeups} wake-ups)");
        // A removed partition leaves the index.
        for i in 0..24 {
            partitions.remove(&("t".to_string(), i));
        }
        assert_eq!(partitions.hosted.indexed_len(), 0);
        assert_eq!(partitions.poll_timeout(), None);
    }

    #[test]
    fn replicas_of_one_partition_on_different_brokers_time_out_apart() {
        let (two, three) = (first_deadline(2), first_deadline(3));
        assert!(two.is_some() && three.is_some(), "followers wait for an election");
        assert_ne!(two, three, "the same election timeout on two brokers");
        assert_eq!(first_deadline(2), two, "deterministic per broker");
    }
}
