//! [`Coordinator`]: the groups of one `__consumer_offsets` partition — their live state,
//! their committed offsets, loading them from the partition's log, writing their
//! changes to it, their timers, offset retention and checkpoints.
//!
//! # Contract with the partition that hosts it
//!
//! * When the partition's replica becomes leader, call [`Coordinator::begin_load`], then
//!   feed every batch of the log from its start to the high watermark, in order, with
//!   [`Coordinator::load_batches`], then [`Coordinator::finish_load`]. Until then every
//!   request is answered COORDINATOR_LOAD_IN_PROGRESS. When it stops leading, call
//!   [`Coordinator::unload`] (waiting requests get NOT_COORDINATOR).
//! * [`CoordinatorOutput::Append`] asks for a batch to be appended with `acks=all`;
//!   answer with [`Coordinator::on_append_done`]. Nothing that depends on an append is
//!   answered before it is committed.
//! * [`CoordinatorOutput::TrimLog`] says every record below `offset` is superseded by a
//!   committed checkpoint: the log start may move there.
//! * A failed append makes the coordinator ask to be reloaded
//!   ([`CoordinatorOutput::Reload`]): its live state may be ahead of the log.

use super::classic::{self, ClassicGroup};
use super::consumer::{self, ConsumerGroup};
use super::records::{GroupRecord, GroupValue, OffsetValue};
use super::{
    ClientInfo, CommitEntry, FetchedOffset, GroupConfig, GroupMetrics, GroupOp, GroupResult, PartitionErrors,
    ReplyId, TopicPartitionList, Topics,
};
use crate::kafka::protocol::messages as m;
use crate::kafka::protocol::protocol::StrBytes;
use crate::kafka::ErrorCode;
use crate::log::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::log::builder::{build_batch, BatchOptions, NewRecord};
use crate::log::records::parse_uncompressed_records;
use crate::time::Instant;
use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub mod txn_offsets;

/// Largest batch the coordinator writes (a checkpoint is split into batches this size).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Why replaying the log failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A batch header could not be read.
    #[error("unreadable batch at byte {at}: {reason}")]
    BadBatch {
        /// Where.
        at: usize,
        /// Why.
        reason: String,
    },
}

/// Committed offsets by group, then (topic, partition).
pub type CommittedOffsets = BTreeMap<String, BTreeMap<(String, i32), OffsetValue>>;

/// Something the hosting partition must do.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CoordinatorOutput {
    /// Answer a request.
    Reply {
        /// The request.
        reply: ReplyId,
        /// The answer.
        result: GroupResult,
    },
    /// Append `batch` with acks=all; answer with [`Coordinator::on_append_done`].
    Append {
        /// Quote in the answer.
        token: u64,
        /// An uncompressed batch of group records.
        batch: Bytes,
    },
    /// Records below `offset` are superseded by a committed checkpoint.
    TrimLog {
        /// The new log start.
        offset: i64,
    },
    /// The live state may be ahead of the log: unload and load again.
    Reload,
}

/// A group of either protocol.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
enum Group {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

impl Group {
    fn has_members(&self) -> bool {
        match self {
            Group::Classic(g) => g.has_members(),
            Group::Consumer(g) => g.has_members(),
        }
    }
    fn state_name(&self) -> &'static str {
        match self {
            Group::Classic(g) => g.state().name(),
            Group::Consumer(g) => g.state_name(),
        }
    }
    fn empty_since_ms(&self) -> Option<i64> {
        match self {
            Group::Classic(g) => g.empty_since_ms,
            Group::Consumer(g) => g.empty_since_ms,
        }
    }
    fn to_value(&self) -> GroupValue {
        match self {
            Group::Classic(g) => GroupValue::Classic(g.to_value()),
            Group::Consumer(g) => GroupValue::Consumer(g.to_value()),
        }
    }
}

/// Member ids: deterministic from the coordinator's seed, unique across leader epochs.
#[derive(Debug)]
struct MemberIds {
    rng: ChaCha8Rng,
    epoch: i32,
}

/// What a group method needs besides the group: time, settings, and where its answers
/// and write requests go.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Now.
    pub now: Instant,
    /// Wall-clock ms (commit timestamps, retention).
    pub wall_ms: i64,
    /// Settings.
    pub config: &'a GroupConfig,
    /// Counters.
    pub metrics: &'a mut GroupMetrics,
    replies: &'a mut Vec<(ReplyId, GroupResult)>,
    persist: &'a mut BTreeSet<String>,
    held: &'a mut Vec<(String, ReplyId, GroupResult)>,
    ids: &'a mut MemberIds,
    /// Planted bugs (simulator only; see [`super::GroupBugs`]).
    #[cfg(feature = "sim-bugs")]
    pub planted: super::GroupBugs,
}

impl Ctx<'_> {
    /// Answers a request now.
    pub fn reply(&mut self, reply: ReplyId, result: GroupResult) {
        self.replies.push((reply, result));
    }

    /// Asks for `group`'s state to be written.
    pub fn persist(&mut self, group: &str) {
        self.persist.insert(group.to_string());
    }

    /// Answers a request once `group`'s next write is committed.
    pub fn reply_after_persist(&mut self, group: &str, reply: ReplyId, result: GroupResult) {
        self.held.push((group.to_string(), reply, result));
    }

    /// A new member id (`prefix-<uuid>`).
    pub fn new_member_id(&mut self, prefix: &str) -> String {
        let mut raw = [0u8; 16];
        self.ids.rng.fill_bytes(&mut raw);
        raw[..4].copy_from_slice(&self.ids.epoch.to_be_bytes());
        let uuid = uuid::Builder::from_random_bytes(raw).into_uuid();
        let prefix: String = prefix.chars().take(200).collect();
        format!("{prefix}-{uuid}")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Inactive,
    Loading,
    Active,
}

#[derive(Debug)]
enum AppendKind {
    /// A group's state; for a classic group, the generation it records.
    GroupState {
        group: String,
        value: Option<GroupValue>,
        classic_generation: Option<i32>,
    },
    /// Offset commits (and the request's answer once applied).
    Commit {
        reply: ReplyId,
        group: String,
        entries: Vec<(String, i32, OffsetValue)>,
        errors: PartitionErrors,
    },
    /// Deletions: offsets and maybe the group.
    Tombstones {
        reply: Option<(ReplyId, GroupResult)>,
        records: Vec<GroupRecord>,
    },
    /// Part of a checkpoint.
    Checkpoint,
}

#[derive(Debug)]
struct PendingAppend {
    kind: AppendKind,
    held: Vec<(ReplyId, GroupResult)>,
    record_count: u64,
}

#[derive(Debug, Default)]
struct CheckpointState {
    /// Tokens of the checkpoint's batches still in flight.
    tokens: BTreeSet<u64>,
    /// Base offset of its first batch.
    first_offset: Option<i64>,
}

/// The coordinator of one `__consumer_offsets` partition.
#[derive(Debug)]
pub struct Coordinator {
    partition: i32,
    config: GroupConfig,
    status: Status,
    groups: BTreeMap<String, Group>,
    /// Group state as last committed to the log.
    durable_groups: BTreeMap<String, GroupValue>,
    /// Committed offsets by group, then (topic, partition).
    offsets: CommittedOffsets,
    topics: Topics,
    ids: MemberIds,
    seed: u64,
    /// Whether `ids` was seeded by [`Coordinator::begin_load`] for `ids.epoch`.
    ids_seeded: bool,
    next_token: u64,
    appends: BTreeMap<u64, PendingAppend>,
    outputs: VecDeque<CoordinatorOutput>,
    records_since_checkpoint: u64,
    /// Live keys counted when a checkpoint last came due but had fewer records since
    /// the last one: the next count waits for that many (0: none pending).
    checkpoint_due: u64,
    checkpoint: Option<CheckpointState>,
    next_retention_check: Option<Instant>,
    metrics: GroupMetrics,
    corrupt_records: u64,
    /// Transactional offset commits waiting for their producer's marker.
    txn_offsets: txn_offsets::TxnOffsets,
    /// Planted bugs (simulator only).
    #[cfg(feature = "sim-bugs")]
    planted: super::GroupBugs,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Coordinator {
    /// The coordinator of partition `partition`, idle until its replica leads.
    pub fn new(partition: i32, config: GroupConfig, seed: u64) -> Coordinator {
        Coordinator {
            partition,
            config,
            status: Status::Inactive,
            groups: BTreeMap::new(),
            durable_groups: BTreeMap::new(),
            offsets: BTreeMap::new(),
            topics: Topics::new(),
            ids: MemberIds {
                rng: ChaCha8Rng::seed_from_u64(seed),
                epoch: 0,
            },
            seed,
            ids_seeded: false,
            next_token: 1,
            appends: BTreeMap::new(),
            outputs: VecDeque::new(),
            records_since_checkpoint: 0,
            checkpoint_due: 0,
            checkpoint: None,
            next_retention_check: None,
            metrics: GroupMetrics::default(),
            corrupt_records: 0,
            txn_offsets: txn_offsets::TxnOffsets::default(),
            #[cfg(feature = "sim-bugs")]
            planted: super::GroupBugs::default(),
        }
    }

    /// The partition it coordinates.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Whether it serves requests (loaded, leading).
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }

    /// Whether it is replaying its log.
    pub fn is_loading(&self) -> bool {
        self.status == Status::Loading
    }

    /// Counters, with groups by state.
    pub fn metrics(&self) -> GroupMetrics {
        let mut metrics = self.metrics.clone();
        for group in self.groups.values() {
            *metrics
                .groups_by_state
                .entry(group.state_name().to_string())
                .or_default() += 1;
        }
        metrics
    }

    /// Records that could not be decoded while loading (skipped).
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt_records
    }

    /// Plants bugs (the simulator's proof that its checkers catch them).
    #[cfg(feature = "sim-bugs")]
    pub fn plant(&mut self, bugs: super::GroupBugs) {
        self.planted = bugs;
    }

    /// The KIP-848 group `name`, if it is one (for the simulator's checkers).
    pub fn consumer_group(&self, name: &str) -> Option<&ConsumerGroup> {
        match self.groups.get(name) {
            Some(Group::Consumer(g)) => Some(g),
            _ => None,
        }
    }

    /// The durable state: group values and committed offsets (what a replay of the log
    /// rebuilds; used by the simulator's checkers).
    pub fn durable_state(&self) -> (&BTreeMap<String, GroupValue>, &CommittedOffsets) {
        (&self.durable_groups, &self.offsets)
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<CoordinatorOutput> {
        self.outputs.pop_front()
    }

    /// Updates what the coordinator knows of topics (KIP-848 assignments).
    pub fn set_topics(&mut self, now: Instant, wall_ms: i64, topics: Topics) {
        if topics == self.topics {
            return;
        }
        self.topics = topics;
        if self.status != Status::Active {
            return;
        }
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            self.with_group(now, wall_ms, &name, |group, ctx, topics| {
                if let Group::Consumer(g) = group {
                    if g.on_topics_changed(ctx, topics) {
                        ctx.persist(&name);
                    }
                }
            });
        }
    }

    /// The replica leads (term `epoch`): forget everything and start a replay.
    ///
    /// Member ids are drawn from a stream seeded by the epoch; a reload within the same
    /// epoch (after a failed append) continues that stream, so an id handed out before
    /// the reload — already durable for a live member — is never handed out again.
    pub fn begin_load(&mut self, epoch: i32) {
        self.unload();
        self.status = Status::Loading;
        if self.ids.epoch != epoch || !self.ids_seeded {
            self.ids = MemberIds {
                rng: ChaCha8Rng::seed_from_u64(self.seed ^ (u64::from(epoch.unsigned_abs()) << 32)),
                epoch,
            };
            self.ids_seeded = true;
        }
    }

    /// Replays whole batches from the log (control batches and other producers'
    /// batches are skipped; an undecodable record is counted and skipped). Returns the
    /// offset after the last batch.
    pub fn load_batches(&mut self, bytes: &Bytes) -> Result<Option<i64>, LoadError> {
        let mut at = 0usize;
        let mut next = None;
        while at + BATCH_HEADER_BYTES <= bytes.len() {
            let header = BatchHeader::parse(&bytes[at..]).map_err(|e| LoadError::BadBatch {
                at,
                reason: e.to_string(),
            })?;
            let end = at + header.size_bytes();
            if end > bytes.len() {
                break;
            }
            next = Some(header.next_offset());
            let is_control = header.attributes & 0x20 != 0;
            let compressed = header.attributes & 0x07 != 0;
            if header.is_transactional() {
                self.replay_txn_batch(&header, &bytes.slice(at..end));
            } else if !is_control && !compressed {
                let records = bytes.slice(at + BATCH_HEADER_BYTES..end);
                match parse_uncompressed_records(&records, header.record_count) {
                    Ok(records) => {
                        for record in records {
                            match GroupRecord::decode(record.key.as_deref(), record.value.as_deref()) {
                                Ok(record) => self.apply_durable(record),
                                Err(_) => self.corrupt_records += 1,
                            }
                        }
                    }
                    Err(_) => self.corrupt_records += 1,
                }
            }
            self.records_since_checkpoint += u64::try_from(header.record_count).unwrap_or(0);
            at = end;
        }
        Ok(next)
    }

    /// The replay reached the high watermark: build the live groups and serve.
    pub fn finish_load(&mut self, now: Instant, wall_ms: i64) {
        self.groups = self
            .durable_groups
            .iter()
            .map(|(id, value)| {
                let group = match value {
                    GroupValue::Classic(v) => Group::Classic(ClassicGroup::from_value(id, v, now)),
                    GroupValue::Consumer(v) => Group::Consumer(ConsumerGroup::from_value(
                        id,
                        v,
                        now,
                        self.config.consumer_session_timeout_ms,
                        wall_ms,
                    )),
                };
                (id.clone(), group)
            })
            .collect();
        self.status = Status::Active;
        self.next_retention_check = Some(now + self.retention_interval());
    }

    /// The replica stopped leading: answer every waiting request NOT_COORDINATOR and
    /// drop the live state.
    pub fn unload(&mut self) {
        self.txn_offsets_unload();
        let code = ErrorCode::NOT_COORDINATOR.0;
        let mut replies = Vec::new();
        {
            let mut persist = BTreeSet::new();
            let mut held = Vec::new();
            let mut ctx = Ctx {
                now: Instant::ZERO,
                wall_ms: 0,
                config: &self.config,
                metrics: &mut self.metrics,
                replies: &mut replies,
                persist: &mut persist,
                held: &mut held,
                ids: &mut self.ids,
                #[cfg(feature = "sim-bugs")]
                planted: self.planted,
            };
            for group in self.groups.values_mut() {
                if let Group::Classic(g) = group {
                    g.abandon(&mut ctx, code);
                }
            }
        }
        for (_, pending) in std::mem::take(&mut self.appends) {
            for (reply, result) in pending.held {
                replies.push((reply, error_like(&result, code)));
            }
            match pending.kind {
                AppendKind::Commit { reply, .. } => replies.push((reply, GroupResult::Error(code))),
                AppendKind::Tombstones {
                    reply: Some((reply, result)),
                    ..
                } => replies.push((reply, error_like(&result, code))),
                _ => {}
            }
        }
        for (reply, result) in replies {
            self.outputs.push_back(CoordinatorOutput::Reply { reply, result });
        }
        self.groups.clear();
        self.durable_groups.clear();
        self.offsets.clear();
        self.checkpoint = None;
        self.records_since_checkpoint = 0;
        self.checkpoint_due = 0;
        self.status = Status::Inactive;
        self.next_retention_check = None;
    }

    fn retention_interval(&self) -> Duration {
        Duration::from_millis(
            u64::try_from(self.config.offsets_retention_check_interval_ms)
                .unwrap_or(600_000)
                .max(1),
        )
    }

    /// Applies a committed record to the durable state.
    fn apply_durable(&mut self, record: GroupRecord) {
        match record {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(value) => {
                    self.offsets
                        .entry(group)
                        .or_default()
                        .insert((topic, partition), value);
                }
                None => {
                    if let Some(offsets) = self.offsets.get_mut(&group) {
                        offsets.remove(&(topic, partition));
                        if offsets.is_empty() {
                            self.offsets.remove(&group);
                        }
                    }
                }
            },
            GroupRecord::Group { group, value } => match value {
                Some(value) => {
                    self.durable_groups.insert(group, value);
                }
                None => {
                    self.durable_groups.remove(&group);
                }
            },
        }
    }

    /// Runs `f` on group `name` with a context; then turns what it asked for into
    /// outputs.
    fn with_group<R>(
        &mut self,
        now: Instant,
        wall_ms: i64,
        name: &str,
        f: impl FnOnce(&mut Group, &mut Ctx<'_>, &Topics) -> R,
    ) -> Option<R> {
        let mut replies = Vec::new();
        let mut persist = BTreeSet::new();
        let mut held = Vec::new();
        let result = {
            let Coordinator {
                groups,
                config,
                metrics,
                ids,
                topics,
                #[cfg(feature = "sim-bugs")]
                planted,
                ..
            } = self;
            let group = groups.get_mut(name)?;
            let mut ctx = Ctx {
                now,
                wall_ms,
                config,
                metrics,
                replies: &mut replies,
                persist: &mut persist,
                held: &mut held,
                ids,
                #[cfg(feature = "sim-bugs")]
                planted: *planted,
            };
            f(group, &mut ctx, topics)
        };
        self.flush_ctx(replies, persist, held);
        Some(result)
    }

    fn flush_ctx(
        &mut self,
        replies: Vec<(ReplyId, GroupResult)>,
        persist: BTreeSet<String>,
        mut held: Vec<(String, ReplyId, GroupResult)>,
    ) {
        for (reply, result) in replies {
            self.outputs.push_back(CoordinatorOutput::Reply { reply, result });
        }
        for name in persist {
            let (value, classic_generation) = match self.groups.get(&name) {
                Some(group) => {
                    let generation = match group {
                        Group::Classic(g) => Some(g.generation()),
                        Group::Consumer(_) => None,
                    };
                    (Some(group.to_value()), generation)
                }
                None => (None, None),
            };
            let record = GroupRecord::Group {
                group: name.clone(),
                value: value.clone(),
            };
            let (mine, rest): (Vec<_>, Vec<_>) = held.into_iter().partition(|(g, _, _)| *g == name);
            held = rest;
            self.append(
                vec![record],
                AppendKind::GroupState {
                    group: name,
                    value,
                    classic_generation,
                },
                mine.into_iter().map(|(_, r, res)| (r, res)).collect(),
            );
        }
        // Held answers whose group had nothing to write go out now.
        for (_, reply, result) in held {
            self.outputs.push_back(CoordinatorOutput::Reply { reply, result });
        }
    }

    fn append(&mut self, records: Vec<GroupRecord>, kind: AppendKind, held: Vec<(ReplyId, GroupResult)>) {
        let token = self.next_token;
        self.next_token += 1;
        let record_count = records.len() as u64;
        let batch = encode_batch(&records);
        self.appends.insert(
            token,
            PendingAppend {
                kind,
                held,
                record_count,
            },
        );
        self.outputs.push_back(CoordinatorOutput::Append { token, batch });
    }

    /// An append finished: committed at `base_offset`, or failed with a Kafka error code.
    pub fn on_append_done(&mut self, now: Instant, wall_ms: i64, token: u64, result: Result<i64, i16>) {
        if self.txn_append_done(token, result) {
            return;
        }
        let Some(pending) = self.appends.remove(&token) else {
            return;
        };
        let code = match result {
            Ok(_) => None,
            Err(_) => Some(ErrorCode::NOT_COORDINATOR.0),
        };
        if let Some(code) = code {
            // The live state may now be ahead of the log: answer, then reload.
            for (reply, result) in pending.held {
                self.outputs.push_back(CoordinatorOutput::Reply {
                    reply,
                    result: error_like(&result, code),
                });
            }
            match pending.kind {
                AppendKind::Commit { reply, .. } => self.outputs.push_back(CoordinatorOutput::Reply {
                    reply,
                    result: GroupResult::Error(code),
                }),
                AppendKind::Tombstones {
                    reply: Some((reply, result)),
                    ..
                } => self.outputs.push_back(CoordinatorOutput::Reply {
                    reply,
                    result: error_like(&result, code),
                }),
                _ => {}
            }
            self.unload();
            self.outputs.push_back(CoordinatorOutput::Reload);
            return;
        }
        self.records_since_checkpoint += pending.record_count;
        for (reply, result) in pending.held {
            self.outputs.push_back(CoordinatorOutput::Reply { reply, result });
        }
        match pending.kind {
            AppendKind::GroupState {
                group,
                value,
                classic_generation,
            } => {
                self.apply_durable(GroupRecord::Group {
                    group: group.clone(),
                    value,
                });
                if let Some(generation) = classic_generation {
                    self.with_group(now, wall_ms, &group, |g, ctx, _| {
                        if let Group::Classic(g) = g {
                            g.on_persisted(ctx, generation, Ok(()));
                        }
                    });
                }
            }
            AppendKind::Commit {
                reply,
                group,
                entries,
                errors,
            } => {
                self.metrics.offset_commits += entries.len() as u64;
                for (topic, partition, value) in entries {
                    self.apply_durable(GroupRecord::Offset {
                        group: group.clone(),
                        topic,
                        partition,
                        value: Some(value),
                    });
                }
                self.outputs.push_back(CoordinatorOutput::Reply {
                    reply,
                    result: GroupResult::Committed(errors),
                });
            }
            AppendKind::Tombstones { reply, records } => {
                for record in records {
                    self.apply_durable(record);
                }
                if let Some((reply, result)) = reply {
                    self.outputs.push_back(CoordinatorOutput::Reply { reply, result });
                }
            }
            AppendKind::Checkpoint => {
                if let Some(checkpoint) = self.checkpoint.as_mut() {
                    checkpoint.tokens.remove(&token);
                    if let Ok(base) = result {
                        checkpoint.first_offset = Some(checkpoint.first_offset.map_or(base, |f| f.min(base)));
                    }
                    if checkpoint.tokens.is_empty() {
                        if let Some(offset) = checkpoint.first_offset {
                            self.outputs.push_back(CoordinatorOutput::TrimLog { offset });
                        }
                        self.checkpoint = None;
                    }
                }
            }
        }
        self.maybe_checkpoint();
    }

    /// Writes every live key again once enough records accumulated — at least
    /// `checkpoint_every_records`, and at least as many as there are live keys, so a
    /// checkpoint never writes more than the records since the last one — and nothing
    /// else is in flight (so the durable state is exactly the log's).
    fn maybe_checkpoint(&mut self) {
        if self.status != Status::Active
            || self.checkpoint.is_some()
            || !self.appends.is_empty()
            || self.records_since_checkpoint < self.config.checkpoint_every_records.max(self.checkpoint_due)
        {
            return;
        }
        // Counting takes a pass over the groups: done once per `checkpoint_due` records,
        // not after every append.
        let live_keys =
            self.durable_groups.len() as u64 + self.offsets.values().map(|o| o.len() as u64).sum::<u64>();
        if self.records_since_checkpoint < live_keys {
            self.checkpoint_due = live_keys;
            return;
        }
        self.checkpoint_due = 0;
        let mut records: Vec<GroupRecord> = Vec::new();
        for (group, value) in &self.durable_groups {
            records.push(GroupRecord::Group {
                group: group.clone(),
                value: Some(value.clone()),
            });
        }
        for (group, offsets) in &self.offsets {
            for ((topic, partition), value) in offsets {
                records.push(GroupRecord::Offset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: Some(value.clone()),
                });
            }
        }
        // PLANTED BUG (sim-bugs): the checkpoint forgets its last key.
        #[cfg(feature = "sim-bugs")]
        if self.planted.drop_checkpoint_key {
            records.pop();
        }
        self.records_since_checkpoint = 0;
        if records.is_empty() {
            return;
        }
        let mut checkpoint = CheckpointState::default();
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0usize;
        let mut chunks = Vec::new();
        for record in records {
            let size = record.key().len() + record.value().map_or(0, |v| v.len()) + 16;
            if chunk_bytes + size > MAX_BATCH_BYTES && !chunk.is_empty() {
                chunks.push(std::mem::take(&mut chunk));
                chunk_bytes = 0;
            }
            chunk_bytes += size;
            chunk.push(record);
        }
        chunks.push(chunk);
        for chunk in chunks {
            let token = self.next_token;
            checkpoint.tokens.insert(token);
            // Checkpoint records restate the durable state: they do not count toward
            // the next checkpoint.
            self.append(chunk, AppendKind::Checkpoint, Vec::new());
            if let Some(p) = self.appends.get_mut(&token) {
                p.record_count = 0;
            }
        }
        self.checkpoint = Some(checkpoint);
    }

    /// When [`Coordinator::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.status != Status::Active {
            return None;
        }
        let groups = self.groups.values().filter_map(|g| match g {
            Group::Classic(g) => g.poll_timeout(),
            Group::Consumer(g) => g.poll_timeout(),
        });
        groups.chain(self.next_retention_check).min()
    }

    /// Runs group deadlines and offset retention.
    pub fn handle_timeout(&mut self, now: Instant, wall_ms: i64) {
        if self.status != Status::Active {
            return;
        }
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                match g {
                    Group::Classic(g) => g.poll_timeout(),
                    Group::Consumer(g) => g.poll_timeout(),
                }
                .is_some_and(|t| t <= now)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.with_group(now, wall_ms, &name, |group, ctx, topics| match group {
                Group::Classic(g) => g.handle_timeout(ctx),
                Group::Consumer(g) => {
                    if g.handle_timeout(ctx, topics) {
                        ctx.persist(&name);
                    }
                }
            });
        }
        if self.next_retention_check.is_some_and(|t| t <= now) {
            self.next_retention_check = Some(now + self.retention_interval());
            self.expire_offsets(wall_ms);
        }
    }

    /// Offsets of groups that have been empty for the retention period (or, for groups
    /// that never had members, offsets older than it) are deleted.
    fn expire_offsets(&mut self, wall_ms: i64) {
        let retention = self.config.offsets_retention_ms;
        let mut records = Vec::new();
        for (group, offsets) in &self.offsets {
            let live = self.groups.get(group);
            if live.is_some_and(Group::has_members) {
                continue;
            }
            let empty_since = live.and_then(Group::empty_since_ms);
            for ((topic, partition), value) in offsets {
                let since = empty_since
                    .unwrap_or(value.commit_timestamp_ms)
                    .max(value.commit_timestamp_ms);
                if wall_ms.saturating_sub(since) >= retention {
                    records.push(GroupRecord::Offset {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    });
                }
            }
            let all_expire = records.iter().filter(|r| r.group() == group).count() == offsets.len();
            if all_expire && live.is_some_and(|g| !g.has_members()) {
                records.push(GroupRecord::Group {
                    group: group.clone(),
                    value: None,
                });
            }
        }
        if records.is_empty() {
            return;
        }
        for record in &records {
            if let GroupRecord::Group { group, .. } = record {
                self.groups.remove(group);
            }
        }
        self.append(
            records.clone(),
            AppendKind::Tombstones { reply: None, records },
            Vec::new(),
        );
    }

    /// Serves one request.
    pub fn handle(&mut self, now: Instant, wall_ms: i64, reply: ReplyId, op: GroupOp) {
        match self.status {
            Status::Active => {}
            Status::Loading => {
                return self.reply(
                    reply,
                    GroupResult::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS.0),
                )
            }
            Status::Inactive => return self.reply(reply, GroupResult::Error(ErrorCode::NOT_COORDINATOR.0)),
        }
        if op.group().is_some_and(str::is_empty) {
            return self.reply(reply, GroupResult::Error(ErrorCode::INVALID_GROUP_ID.0));
        }
        match op {
            GroupOp::Join {
                request,
                version,
                client,
            } => self.join(now, wall_ms, reply, request, version, client),
            GroupOp::Sync { request, version } => {
                let name = request.group_id.0.as_str().to_string();
                let found = self.with_group(now, wall_ms, &name, |group, ctx, _| match group {
                    Group::Classic(g) => g.sync(ctx, reply, &request, version),
                    Group::Consumer(_) => ctx.reply(
                        reply,
                        GroupResult::Sync(classic::sync_error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL.0)),
                    ),
                });
                if found.is_none() {
                    self.reply(
                        reply,
                        GroupResult::Sync(classic::sync_error(ErrorCode::UNKNOWN_MEMBER_ID.0)),
                    );
                }
            }
            GroupOp::Heartbeat { request } => {
                let name = request.group_id.0.as_str().to_string();
                let code = self
                    .with_group(now, wall_ms, &name, |group, ctx, _| match group {
                        Group::Classic(g) => g.heartbeat(ctx, &request),
                        Group::Consumer(_) => ErrorCode::INCONSISTENT_GROUP_PROTOCOL.0,
                    })
                    .unwrap_or(ErrorCode::UNKNOWN_MEMBER_ID.0);
                self.reply(reply, GroupResult::Heartbeat(code));
            }
            GroupOp::Leave { request, version } => {
                let name = request.group_id.0.as_str().to_string();
                let response = self.with_group(now, wall_ms, &name, |group, ctx, _| match group {
                    Group::Classic(g) => g.leave(ctx, &request, version),
                    Group::Consumer(_) => {
                        let mut r = m::LeaveGroupResponse::default();
                        r.error_code = ErrorCode::INCONSISTENT_GROUP_PROTOCOL.0;
                        r
                    }
                });
                let response = response.unwrap_or_else(|| {
                    let mut r = m::LeaveGroupResponse::default();
                    r.error_code = ErrorCode::UNKNOWN_MEMBER_ID.0;
                    r
                });
                self.reply(reply, GroupResult::Leave(response));
            }
            GroupOp::Commit {
                group,
                generation_or_epoch,
                member_id,
                instance_id,
                entries,
            } => self.commit(
                now,
                wall_ms,
                reply,
                group,
                generation_or_epoch,
                member_id,
                instance_id,
                entries,
            ),
            GroupOp::FetchOffsets {
                group,
                topics,
                require_stable,
                member,
            } => {
                let result = self.fetch_offsets(&group, topics, require_stable, member);
                self.reply(reply, result);
            }
            GroupOp::DeleteOffsets { group, topics } => self.delete_offsets(reply, group, topics),
            GroupOp::Describe { group } => {
                let described = match self.groups.get(&group) {
                    Some(Group::Classic(g)) => g.describe(),
                    Some(Group::Consumer(g)) => g.describe_classic(),
                    None => {
                        let mut d = m::describe_groups_response::DescribedGroup::default();
                        d.group_id = m::GroupId(str_bytes(&group));
                        d.group_state = str_bytes("Dead");
                        d.error_code = ErrorCode::GROUP_ID_NOT_FOUND.0;
                        d.authorized_operations = i32::MIN;
                        d
                    }
                };
                self.reply(reply, GroupResult::Described(described));
            }
            GroupOp::ConsumerDescribe { group } => {
                let described = match self.groups.get(&group) {
                    Some(Group::Consumer(g)) => {
                        g.describe(&self.topics, &self.config.consumer_default_assignor)
                    }
                    other => {
                        let mut d = m::consumer_group_describe_response::DescribedGroup::default();
                        d.group_id = m::GroupId(str_bytes(&group));
                        d.group_state = str_bytes("Dead");
                        d.error_code = ErrorCode::GROUP_ID_NOT_FOUND.0;
                        if other.is_some() {
                            d.error_message = Some(str_bytes("the group is a classic group"));
                        }
                        d
                    }
                };
                self.reply(reply, GroupResult::ConsumerDescribed(described));
            }
            GroupOp::Delete { group } => self.delete_group(reply, group),
            GroupOp::List { states, types } => {
                let listed = self
                    .groups
                    .iter()
                    .filter(|(_, g)| {
                        states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(g.state_name()))
                    })
                    .filter(|(_, g)| {
                        let kind = match g {
                            Group::Classic(_) => "classic",
                            Group::Consumer(_) => "consumer",
                        };
                        types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case(kind))
                    })
                    .map(|(name, g)| {
                        let mut entry = m::list_groups_response::ListedGroup::default();
                        entry.group_id = m::GroupId(str_bytes(name));
                        entry.group_state = str_bytes(g.state_name());
                        match g {
                            Group::Classic(c) => {
                                entry.protocol_type = str_bytes(c.protocol_type());
                                entry.group_type = str_bytes("classic");
                            }
                            Group::Consumer(_) => {
                                entry.protocol_type = str_bytes("consumer");
                                entry.group_type = str_bytes("consumer");
                            }
                        }
                        entry
                    })
                    .collect();
                self.reply(reply, GroupResult::Listed(listed));
            }
            GroupOp::ConsumerHeartbeat { request, client } => {
                self.consumer_heartbeat(now, wall_ms, reply, request, client)
            }
        }
        self.maybe_checkpoint();
    }

    fn reply(&mut self, reply: ReplyId, result: GroupResult) {
        self.outputs.push_back(CoordinatorOutput::Reply { reply, result });
    }

    fn join(
        &mut self,
        now: Instant,
        wall_ms: i64,
        reply: ReplyId,
        request: m::JoinGroupRequest,
        version: i16,
        client: ClientInfo,
    ) {
        let name = request.group_id.0.as_str().to_string();
        match self.groups.get(&name) {
            Some(Group::Consumer(g)) if g.has_members() => {
                let member = request.member_id.as_str().to_string();
                return self.reply(
                    reply,
                    GroupResult::Join(classic::join_error(
                        ErrorCode::INCONSISTENT_GROUP_PROTOCOL.0,
                        &member,
                        version,
                    )),
                );
            }
            Some(Group::Classic(_)) => {}
            // New, or an empty consumer group turning classic (offsets stay).
            _ => {
                self.groups
                    .insert(name.clone(), Group::Classic(ClassicGroup::new(&name, wall_ms)));
            }
        }
        self.with_group(now, wall_ms, &name, |group, ctx, _| {
            if let Group::Classic(g) = group {
                g.join(ctx, reply, &request, version, &client);
            }
        });
    }

    fn consumer_heartbeat(
        &mut self,
        now: Instant,
        wall_ms: i64,
        reply: ReplyId,
        request: m::ConsumerGroupHeartbeatRequest,
        client: ClientInfo,
    ) {
        let name = request.group_id.0.as_str().to_string();
        match self.groups.get(&name) {
            Some(Group::Classic(g)) if g.has_members() => {
                return self.reply(
                    reply,
                    GroupResult::ConsumerHeartbeat(consumer::heartbeat_error(
                        ErrorCode::GROUP_ID_NOT_FOUND.0,
                        "the group is a classic group with members; it becomes a consumer group once empty",
                    )),
                );
            }
            Some(Group::Consumer(_)) => {}
            _ => {
                self.groups
                    .insert(name.clone(), Group::Consumer(ConsumerGroup::new(&name, wall_ms)));
            }
        }
        self.with_group(now, wall_ms, &name, |group, ctx, topics| {
            if let Group::Consumer(g) = group {
                g.heartbeat(ctx, reply, &request, &client, topics);
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        now: Instant,
        wall_ms: i64,
        reply: ReplyId,
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        entries: Vec<CommitEntry>,
    ) {
        let check = match self.groups.get_mut(&group) {
            None => {
                if generation >= 0 || !member_id.is_empty() {
                    Err(ErrorCode::ILLEGAL_GENERATION)
                } else {
                    // A simple commit creates an empty group, as Kafka does.
                    self.groups
                        .insert(group.clone(), Group::Classic(ClassicGroup::new(&group, wall_ms)));
                    Ok(())
                }
            }
            Some(Group::Classic(g)) => {
                let check = g.check_commit(generation, &member_id, instance_id.as_deref());
                if check.is_ok() {
                    g.touch(now, &member_id);
                }
                check
            }
            Some(Group::Consumer(g)) => g.check_commit(generation, &member_id),
        };
        // PLANTED BUG (sim-bugs): commits from fenced generations / epochs accepted.
        #[cfg(feature = "sim-bugs")]
        let check = if self.planted.skip_generation_check {
            Ok(())
        } else {
            check
        };
        let mut errors = PartitionErrors::new();
        let mut accepted = Vec::new();
        for entry in entries {
            let code = match &check {
                Err(code) => code.0,
                Ok(())
                    if entry
                        .metadata
                        .as_ref()
                        .is_some_and(|m| m.len() > self.config.max_metadata_bytes) =>
                {
                    ErrorCode::OFFSET_METADATA_TOO_LARGE.0
                }
                Ok(()) => {
                    accepted.push((
                        entry.topic.clone(),
                        entry.partition,
                        OffsetValue {
                            offset: entry.offset,
                            leader_epoch: entry.leader_epoch,
                            metadata: entry.metadata.clone(),
                            commit_timestamp_ms: wall_ms,
                        },
                    ));
                    0
                }
            };
            errors
                .entry(entry.topic)
                .or_default()
                .push((entry.partition, code));
        }
        if accepted.is_empty() {
            return self.reply(reply, GroupResult::Committed(errors));
        }
        let records = accepted
            .iter()
            .map(|(topic, partition, value)| GroupRecord::Offset {
                group: group.clone(),
                topic: topic.clone(),
                partition: *partition,
                value: Some(value.clone()),
            })
            .collect();
        // PLANTED BUG (sim-bugs): the commit is acknowledged before it is durable.
        #[cfg(feature = "sim-bugs")]
        if self.planted.ack_commit_before_durable {
            self.reply(reply, GroupResult::Committed(errors.clone()));
        }
        self.append(
            records,
            AppendKind::Commit {
                reply,
                group,
                entries: accepted,
                errors,
            },
            Vec::new(),
        );
    }

    fn fetch_offsets(
        &self,
        group: &str,
        topics: Option<TopicPartitionList>,
        require_stable: bool,
        member: Option<(String, i32)>,
    ) -> GroupResult {
        if let (Some((member_id, epoch)), Some(Group::Consumer(g))) = (&member, self.groups.get(group)) {
            if let Err(code) = g.check_commit(*epoch, member_id) {
                return GroupResult::Offsets {
                    error: code.0,
                    topics: BTreeMap::new(),
                };
            }
        }
        let committed = self.offsets.get(group);
        let mut in_flight: BTreeSet<(String, i32)> = if require_stable {
            self.appends
                .values()
                .filter_map(|p| match &p.kind {
                    AppendKind::Commit {
                        group: g, entries, ..
                    } if g == group => Some(entries),
                    _ => None,
                })
                .flatten()
                .map(|(t, p, _)| (t.clone(), *p))
                .collect()
        } else {
            BTreeSet::new()
        };
        if require_stable {
            // KIP-447: offsets of an open transaction are not stable yet either.
            in_flight.extend(self.txn_pending_partitions(group));
        }
        let wanted: TopicPartitionList = match topics {
            Some(list) => list,
            None => {
                let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in committed
                    .map(|c| c.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    all.entry(topic).or_default().push(partition);
                }
                all.into_iter().collect()
            }
        };
        let mut out: BTreeMap<String, Vec<FetchedOffset>> = BTreeMap::new();
        for (topic, partitions) in wanted {
            let entries = out.entry(topic.clone()).or_default();
            for partition in partitions {
                let key = (topic.clone(), partition);
                let value = committed.and_then(|c| c.get(&key));
                entries.push(FetchedOffset {
                    partition,
                    offset: value.map_or(-1, |v| v.offset),
                    leader_epoch: value.map_or(-1, |v| v.leader_epoch),
                    metadata: value.map_or(Some(String::new()), |v| v.metadata.clone()),
                    error: if in_flight.contains(&key) {
                        ErrorCode::UNSTABLE_OFFSET_COMMIT.0
                    } else {
                        0
                    },
                });
            }
        }
        GroupResult::Offsets {
            error: 0,
            topics: out,
        }
    }

    fn delete_offsets(&mut self, reply: ReplyId, group: String, topics: TopicPartitionList) {
        let subscribed: BTreeSet<String> = match self.groups.get(&group) {
            None if !self.offsets.contains_key(&group) => {
                return self.reply(
                    reply,
                    GroupResult::OffsetsDeleted {
                        error: ErrorCode::GROUP_ID_NOT_FOUND.0,
                        partitions: PartitionErrors::new(),
                    },
                )
            }
            None => BTreeSet::new(),
            Some(Group::Classic(g)) => g.subscribed_topics().into_iter().collect(),
            Some(Group::Consumer(g)) => g.subscribed_topics(),
        };
        let mut errors = PartitionErrors::new();
        let mut records = Vec::new();
        for (topic, partitions) in topics {
            for partition in partitions {
                let code = if subscribed.contains(&topic) {
                    ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC.0
                } else {
                    let exists = self
                        .offsets
                        .get(&group)
                        .is_some_and(|o| o.contains_key(&(topic.clone(), partition)));
                    if exists {
                        records.push(GroupRecord::Offset {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition,
                            value: None,
                        });
                    }
                    0
                };
                errors.entry(topic.clone()).or_default().push((partition, code));
            }
        }
        let result = GroupResult::OffsetsDeleted {
            error: 0,
            partitions: errors,
        };
        if records.is_empty() {
            return self.reply(reply, result);
        }
        self.append(
            records.clone(),
            AppendKind::Tombstones {
                reply: Some((reply, result)),
                records,
            },
            Vec::new(),
        );
    }

    fn delete_group(&mut self, reply: ReplyId, group: String) {
        let exists = self.groups.contains_key(&group) || self.offsets.contains_key(&group);
        if !exists {
            return self.reply(reply, GroupResult::Deleted(ErrorCode::GROUP_ID_NOT_FOUND.0));
        }
        if self.groups.get(&group).is_some_and(Group::has_members) {
            return self.reply(reply, GroupResult::Deleted(ErrorCode::NON_EMPTY_GROUP.0));
        }
        self.groups.remove(&group);
        let mut records: Vec<GroupRecord> = self
            .offsets
            .get(&group)
            .map(|o| {
                o.keys()
                    .map(|(topic, partition)| GroupRecord::Offset {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(GroupRecord::Group { group, value: None });
        self.append(
            records.clone(),
            AppendKind::Tombstones {
                reply: Some((reply, GroupResult::Deleted(0))),
                records,
            },
            Vec::new(),
        );
    }
}

/// The same kind of answer as `result`, carrying `code`.
fn error_like(result: &GroupResult, code: i16) -> GroupResult {
    match result {
        GroupResult::Join(r) => GroupResult::Join(classic::join_error(code, r.member_id.as_str(), 7)),
        GroupResult::Sync(_) => GroupResult::Sync(classic::sync_error(code)),
        GroupResult::ConsumerHeartbeat(_) => {
            GroupResult::ConsumerHeartbeat(consumer::heartbeat_error(code, ""))
        }
        GroupResult::Deleted(_) => GroupResult::Deleted(code),
        _ => GroupResult::Error(code),
    }
}

/// Encodes records as one uncompressed batch.
fn encode_batch(records: &[GroupRecord]) -> Bytes {
    let records: Vec<NewRecord> = records
        .iter()
        .map(|r| NewRecord {
            key: Some(r.key()),
            value: r.value(),
            timestamp_ms: 0,
            headers: Vec::new(),
        })
        .collect();
    build_batch(&records, BatchOptions::default())
}
