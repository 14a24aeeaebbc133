//! [`Replica`]: one replica of one partition — a Raft group member whose log is the
//! partition's Kafka log ([`Log`]). It turns Raft's writes into log appends and
//! truncations, Raft's reads into file reads, log syncs into Raft durability, and
//! commit progress into produce acknowledgements and the high watermark.
//!
//! Durability: each Raft write is followed by [`Log::sync`]; its ticket's completion is
//! what reports the write durable to Raft. Produce with `acks=all` is acknowledged once
//! the entry is committed (a majority durable; with one voter, the leader's own fsync);
//! `acks=1` once the leader has written it to its file.
//!
//! Producer state ([`super::producers`]) is fed every batch appended to the log, on
//! leaders and followers alike, cut back on truncation, and recovered from its
//! snapshot plus the log suffix; the leader checks each produced batch against it
//! (duplicates are acknowledged with their original offsets, when the original is).
//!
//! Snapshots ([`super::snapshot`]): Raft's snapshot point follows the log's first
//! retained segment (the leader can send whole entries from there). A follower whose
//! next offset lies below it gets a [`PartitionSnapshot`] through Raft's chunked
//! snapshot path; installing it empties the follower's log to start after the point
//! ([`Log::reset_to`], unless its log already holds the point's entry), rebuilds the
//! producer state from what follows, and moves the log start to the leader's once
//! the log reaches it.
//!
//! Log start replication: when the leader's log start moves (retention, DeleteRecords,
//! a coordinator's trim, all applied to the leader's log directly), the leader proposes
//! a [`super::control::log_start_batch`]; every replica moves its own log start there
//! once that entry is committed, and [`ReplicaEvent::StartOffsetReplicated`] reports
//! it, so the low watermark survives a leader change. A group of one replica writes
//! no such entry (its durable start is reported replicated at once), so a single
//! node's offsets are what they were.
//!
//! A disk failure that loses non-durable appends (ENOSPC, EIO) cannot be expressed to
//! Raft as "forget these writes", so the replica rebuilds its Raft member from what is
//! durable (hard state and log), fails every waiting produce with
//! KAFKA_STORAGE_ERROR, and campaigns again after an election timeout (the back-off
//! while the disk stays full).

use super::control::{batch_to_entry, entry_to_batch, log_start_batch, log_start_record};
use super::producers::Producers;
use super::snapshot::PartitionSnapshot;
use crate::log::batch::{iter_batches, kafka_error, BatchError, BatchHeader, ValidatedBatch};
use crate::log::read::trim_fetched;
use crate::log::{
    DiskError, FileRange, Log, LogCompletion, LogEffect, LogEvent, OffsetError, ReadPlan, SyncTicket,
};
use crate::raft::{
    Effect as RaftEffect, Entry, EntryKind, HardState, Input as RaftInput, LogId, Membership, Message,
    NodeId, ProposeError, Raft, RaftConfig, ReadError, RecoveredState, Role, SnapshotChunkData, SnapshotMeta,
};
use crate::time::Instant;
use crate::txn::{BatchMeta, CheckOutcome, ProducerError, ProducerStateConfig};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};

/// How a producer wants its write acknowledged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Acks {
    /// No acknowledgement.
    None,
    /// When the leader has written it.
    Leader,
    /// When it is committed (durable on a majority).
    All,
}

impl Acks {
    /// From the Kafka `acks` field (0, 1, -1).
    pub fn from_kafka(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// Why a produce failed; each maps to a Kafka error code.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// This replica is not the leader (or lost leadership before the write committed).
    #[error("not the leader")]
    NotLeader,
    /// The batch is malformed or too large.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Too much is in flight (Raft's uncommitted bound).
    #[error("too many uncommitted bytes; try again")]
    Backpressure,
    /// The disk failed before the write was durable.
    #[error("storage error: {0}")]
    Storage(String),
    /// The producer state refused the batch (sequence gap, stale epoch, unknown
    /// producer).
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// Producer state is still being rebuilt from the log after a restart; retry.
    #[error("producer state is loading")]
    ProducerStateLoading,
}

impl ProduceError {
    /// The Kafka error code.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ProduceError::NotLeader => 6, // NOT_LEADER_OR_FOLLOWER
            ProduceError::Batch(e) => e.kafka_error_code(),
            // REQUEST_TIMED_OUT: retriable, and what Kafka answers when a write cannot be
            // taken in time.
            ProduceError::Backpressure => 7,
            ProduceError::Storage(_) => kafka_error::KAFKA_STORAGE_ERROR,
            ProduceError::Producer(e) => e.kafka_error_code(),
            // Retriable; Kafka answers the same while a partition is not yet online.
            ProduceError::ProducerStateLoading => 6,
        }
    }
}

/// Identifies a waiting produce in [`ReplicaEvent::ProduceDone`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct ProduceToken(pub u64);

/// Identifies a read in [`ReplicaEffect::ReadRanges`] / [`ReplicaInput::RangesRead`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct ReadToken(pub u64);

/// Something the runtime must do for this replica.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ReplicaEffect {
    /// A disk operation of the log; answer with [`ReplicaInput::Disk`].
    Disk(LogEffect),
    /// Send a Raft message to a peer.
    Send(Message),
    /// Persist Raft's term and vote; answer with [`ReplicaInput::HardStateDurable`].
    PersistHardState(HardState),
    /// Read these file ranges; answer with [`ReplicaInput::RangesRead`].
    ReadRanges {
        /// Quote in the answer.
        token: ReadToken,
        /// Ranges, in log order.
        ranges: Vec<FileRange>,
    },
}

/// Something that happened to this replica.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ReplicaInput {
    /// A Raft message from a peer.
    Message(Message),
    /// Completion of a [`ReplicaEffect::Disk`].
    Disk(LogCompletion),
    /// Completion of a [`ReplicaEffect::PersistHardState`].
    HardStateDurable(HardState),
    /// Completion of a [`ReplicaEffect::ReadRanges`].
    RangesRead {
        /// The read's token.
        token: ReadToken,
        /// The bytes of each range, or the disk error.
        result: Result<Vec<Bytes>, DiskError>,
    },
}

/// Something the broker must know.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ReplicaEvent {
    /// A produce finished: its base offset, or why it failed.
    ProduceDone {
        /// The produce's token.
        token: ProduceToken,
        /// Base offset of the batch, or the error.
        result: Result<i64, ProduceError>,
    },
    /// The high watermark moved (commit index + 1).
    HighWatermark {
        /// The new high watermark.
        high_watermark: i64,
    },
    /// Role, term or leader changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// Term (= leader epoch).
        term: u64,
        /// Leader, if known.
        leader: Option<NodeId>,
    },
    /// A DeleteRecords start offset is durable.
    StartOffsetDurable {
        /// The log start offset.
        start_offset: i64,
    },
    /// A log start offset the leader announced is committed (durable on the leader
    /// before it was announced; every replica moves its log start there as it applies
    /// the entry). DeleteRecords is answered with it.
    StartOffsetReplicated {
        /// The log start offset.
        start_offset: i64,
    },
    /// The replica's storage failed in a way it cannot recover from by itself.
    Failed {
        /// Why.
        reason: String,
    },
}

#[derive(Clone, Copy, Debug)]
struct Waiter {
    token: ProduceToken,
    base_offset: i64,
    acks: Acks,
}

#[derive(Clone, Debug)]
struct RaftRead {
    read_id: crate::raft::ReadId,
    from_index: i64,
    max_bytes: u64,
    up_to: i64,
}

/// What a replica is built from.
#[derive(Clone, Debug)]
pub struct ReplicaSetup {
    /// This node.
    pub node_id: NodeId,
    /// Raft settings.
    pub raft: RaftConfig,
    /// The group's initial membership (used when the log has no configuration).
    pub bootstrap: Membership,
    /// The durable hard state (term and vote).
    pub hard_state: HardState,
    /// Configuration entries in the log (oldest first), as found on disk.
    pub config_entries: Vec<Entry>,
    /// Seed of Raft's election jitter.
    pub seed: u64,
}

/// One replica of one partition.
#[derive(Debug)]
pub struct Replica {
    setup: ReplicaSetup,
    raft: Raft,
    log: Log,
    durable_hard_state: HardState,
    /// Raft writes waiting for the sync that covers them.
    writes: VecDeque<(crate::raft::WriteId, SyncTicket)>,
    config_entries: Vec<Entry>,
    reads: BTreeMap<ReadToken, RaftRead>,
    /// Reads of the log suffix for producer state, by their first offset.
    producer_reads: BTreeMap<ReadToken, i64>,
    producers: Producers,
    next_token: u64,
    /// Waiting produces by their batch's last offset.
    waiters: BTreeMap<i64, Vec<Waiter>>,
    commit: Option<i64>,
    effects: VecDeque<ReplicaEffect>,
    events: VecDeque<ReplicaEvent>,
    failed: Option<String>,
    /// Snapshot-chunk reads refused, answered at the time given (see
    /// [`SNAPSHOT_REFUSAL_DELAY`]).
    snapshot_refusals: Vec<crate::raft::ReadId>,
    snapshot_refusal_at: Option<Instant>,
    /// Chunks of the snapshot being received, in order.
    incoming_snapshot: BytesMut,
    /// The leader's log start from an installed snapshot, applied once the log
    /// reaches it.
    pending_start_offset: Option<i64>,
    /// Log start announcements in the log, by the offset of their entry, not yet
    /// committed.
    start_announcements: BTreeMap<i64, i64>,
    /// The highest log start this leader announced (0 on a new leadership: it
    /// announces its own start once).
    announced_start_offset: i64,
    /// The batch being proposed, already validated: while the proposal reaches the log
    /// (within [`Replica::produce`]), the log appends it without validating it again.
    proposing: Option<ValidatedBatch>,
}

/// How long a refused snapshot-chunk read waits before its answer. Raft starts a
/// snapshot send over at once when a read fails; answered at once, a follower behind
/// the leader's log start would spin the leader forever inside one call.
const SNAPSHOT_REFUSAL_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

fn to_offset(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

fn to_index(offset: i64) -> u64 {
    u64::try_from(offset).unwrap_or(0)
}

/// The hard state to start Raft from. Appends of a new term may survive a crash while
/// the (separately stored) hard state of that term did not; then the term is raised to
/// the log's last term with no vote. That is safe: Raft sends nothing of a term before
/// its hard state is durable, so a vote that was lost was never counted by anyone.
fn effective_hard_state(log: &Log, hard_state: HardState) -> HardState {
    let log_term = to_index(log.last_term());
    if log.last_term() >= 0 && log_term > hard_state.term {
        HardState {
            term: log_term,
            vote: None,
        }
    } else {
        hard_state
    }
}

/// What Raft recovers from the log. A log whose first segment starts past offset 0
/// (its prefix deleted by retention, DeleteRecords or tiered storage's local retention,
/// all only below the commit point) starts after a snapshot point just before that
/// segment, with the first segment's term and the bootstrap membership: the entries
/// below were committed, and the log's own records are the state.
/// Where Raft's log starts after a restart over a log whose first retained segment is
/// `segment`: at an indexed batch inside it at or below the log start `start` when
/// there is one, else at the segment's base. The term of every entry inside a segment
/// is the segment's (a term change rolls a segment), and everything below the log
/// start is committed, so the snapshot point just before such a batch is exact; the
/// entry before the segment's base is gone with its segment, and its term (which may
/// be older than the segment's) is not known after a restart. A snapshot point
/// guessed with the segment's term once made a restarted leader's appends conflict
/// with every follower's committed log (`scenarios/findings/transactions-v2-trimmed-restart.toml`).
fn first_entry_known(segment: &crate::log::segment::Segment, start: i64) -> i64 {
    let base = segment.id.base_offset;
    segment
        .index
        .lookup_offset(start)
        .map(|(entry, _)| base + i64::from(entry.relative_offset))
        .filter(|first| *first > base && *first <= start)
        .unwrap_or(base)
}

fn recovered_state(
    log: &Log,
    hard_state: HardState,
    config_entries: &[Entry],
    commit: Option<i64>,
    membership: &Membership,
) -> RecoveredState {
    // The term before the first known entry: exact inside the segment; at its base,
    // the term the log's checkpoint recorded for its start when the start is there;
    // else (a checkpoint of version 1) guessed as the segment's term.
    let first_segment = log.segments().first().map(|s| {
        let first = first_entry_known(s, log.start_offset());
        (first, log.term_before(first).unwrap_or(s.id.term))
    });
    // An empty log after a reset (a snapshot was installed), or whose only segment
    // ended before its checkpointed start, starts after an entry of the term the
    // reset or the checkpoint recorded.
    let reset = log.start_term().map(|term| (log.start_offset(), term));
    // Any other empty log past offset 0 (a partition recovered from the object store,
    // or a checkpoint of version 1): everything below its start is committed, in the
    // hard state's term.
    let recovered = (log.start_offset() > 0).then(|| (log.start_offset(), to_offset(hard_state.term)));
    let snapshot = first_segment
        .or(reset)
        .or(recovered)
        .filter(|(base, _)| *base > 0)
        .map(|(base, term)| SnapshotMeta {
            last: LogId::new(to_index(term), to_index(base - 1)),
            membership: membership.clone(),
        });
    RecoveredState {
        hard_state: effective_hard_state(log, hard_state),
        snapshot,
        term_boundaries: log
            .term_starts()
            .into_iter()
            .map(|(term, offset)| {
                // The first segment's term starts where Raft's log does.
                let offset = first_segment.map_or(offset, |(first, _)| offset.max(first));
                (to_index(term), to_index(offset))
            })
            .collect(),
        last_index: (log.next_offset() > 0 && !log.segments().is_empty())
            .then(|| to_index(log.next_offset() - 1)),
        config_entries: config_entries.to_vec(),
        commit_hint: commit.map(to_index),
    }
}

impl Replica {
    /// A replica over a recovered (or new) log. A sole voter campaigns at once.
    pub fn new(now: Instant, setup: ReplicaSetup, mut log: Log) -> Result<Replica, crate::raft::InitError> {
        let producers = Producers::recover(ProducerStateConfig::default(), &mut log);
        let recovered = recovered_state(
            &log,
            setup.hard_state,
            &setup.config_entries,
            None,
            &setup.bootstrap,
        );
        let raft = Raft::new(
            setup.node_id,
            setup.raft.clone(),
            setup.bootstrap.clone(),
            recovered,
            setup.seed,
            now,
        )?;
        let mut replica = Replica {
            durable_hard_state: setup.hard_state,
            config_entries: setup.config_entries.clone(),
            setup,
            raft,
            log,
            writes: VecDeque::new(),
            reads: BTreeMap::new(),
            producer_reads: BTreeMap::new(),
            producers,
            next_token: 1,
            waiters: BTreeMap::new(),
            commit: None,
            effects: VecDeque::new(),
            events: VecDeque::new(),
            failed: None,
            snapshot_refusals: Vec::new(),
            snapshot_refusal_at: None,
            incoming_snapshot: BytesMut::new(),
            pending_start_offset: None,
            start_announcements: BTreeMap::new(),
            announced_start_offset: 0,
            proposing: None,
        };
        replica.campaign_if_sole_voter(now);
        replica.pump(now);
        Ok(replica)
    }

    fn campaign_if_sole_voter(&mut self, now: Instant) {
        let membership = self.raft.membership();
        if membership.voters().len() == 1 && membership.is_voter(self.setup.node_id) {
            self.raft.campaign(now);
        }
    }

    /// The Raft member.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Mutable access to the log, for retention, DeleteRecords and config changes.
    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }

    /// The producer state.
    pub fn producers(&self) -> &Producers {
        &self.producers
    }

    /// Changes the producer-state settings.
    pub fn set_producer_config(&mut self, config: ProducerStateConfig) {
        self.producers.set_config(config);
    }

    /// Forgets producers idle longer than `producer.id.expiration.ms` at wall-clock
    /// time `now_wall_ms`; returns how many.
    pub fn expire_producers(&mut self, now_wall_ms: i64) -> usize {
        self.producers.trim_aborted_below(self.log.start_offset());
        self.producers.expire(now_wall_ms)
    }

    /// Whether this replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }

    /// The current term, which is the Kafka leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        i32::try_from(self.raft.term()).unwrap_or(i32::MAX)
    }

    /// The high watermark: one past the last committed offset (never above what this
    /// replica has written, so a fetch can read everything below it).
    pub fn high_watermark(&self) -> i64 {
        let committed = self.commit.map_or(self.log.start_offset(), |c| c + 1);
        committed
            .min(self.log.written_offset() + 1)
            .max(self.log.start_offset())
    }

    /// Whether this leader knows its high watermark: it has committed an entry of its
    /// own term. Until then the high watermark can be below offsets an earlier leader
    /// (or this node before a restart) acknowledged, so it must not be handed out as
    /// the partition's end (ListOffsets answers OFFSET_NOT_AVAILABLE meanwhile, as Kafka
    /// does since KIP-207).
    pub fn high_watermark_established(&self) -> bool {
        let term = i64::from(self.leader_epoch());
        let Some(commit) = self.commit else {
            return false;
        };
        self.is_leader()
            && self
                .log
                .term_starts()
                .iter()
                .rev()
                .find(|(t, _)| *t == term)
                .is_some_and(|(_, start)| commit >= *start)
    }

    /// The log end offset.
    pub fn log_end_offset(&self) -> i64 {
        self.log.next_offset()
    }

    /// Why the replica stopped serving, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Appends a producer's batch (leader only). The outcome comes as
    /// [`ReplicaEvent::ProduceDone`] unless `acks` is [`Acks::None`]; the returned
    /// value is the base offset the batch will get.
    pub fn produce(
        &mut self,
        now: Instant,
        batch: Bytes,
        acks: Acks,
        token: ProduceToken,
    ) -> Result<i64, ProduceError> {
        if let Some(reason) = &self.failed {
            return Err(ProduceError::Storage(reason.clone()));
        }
        if !self.is_leader() {
            return Err(ProduceError::NotLeader);
        }
        if batch.len() as u64 > self.log.config().max_batch_bytes {
            return Err(BatchError::TooLarge {
                size_bytes: batch.len(),
                max_bytes: self.log.config().max_batch_bytes as usize,
            }
            .into());
        }
        let batch = ValidatedBatch::new(batch)?;
        let meta = BatchMeta::from_header(batch.header());
        if meta.is_tracked() && self.producers.is_loading() {
            return Err(ProduceError::ProducerStateLoading);
        }
        if let CheckOutcome::Duplicate {
            base_offset,
            last_offset,
        } = self.producers.check(&meta)?
        {
            return Ok(self.acknowledge_duplicate(token, acks, base_offset, last_offset));
        }
        self.propose_batch(now, batch, acks, token)
    }

    /// Appends a transaction marker the coordinator decided (leader only), acknowledged
    /// like `acks=all` through [`ReplicaEvent::ProduceDone`]. Refused if the producer
    /// holds a newer epoch here (a fenced coordinator's late marker).
    pub fn append_marker(
        &mut self,
        now: Instant,
        marker: &crate::txn::marker::Marker,
        timestamp_ms: i64,
        token: ProduceToken,
    ) -> Result<i64, ProduceError> {
        if let Some(reason) = &self.failed {
            return Err(ProduceError::Storage(reason.clone()));
        }
        if !self.is_leader() {
            return Err(ProduceError::NotLeader);
        }
        if self.producers.is_loading() {
            return Err(ProduceError::ProducerStateLoading);
        }
        self.producers
            .tip()
            .check_marker(marker.producer_id, marker.producer_epoch)?;
        let batch = crate::txn::marker::build_marker(marker, timestamp_ms);
        let batch = ValidatedBatch::new(batch)?;
        self.propose_batch(now, batch, Acks::All, token)
    }

    /// The last stable offset: the high watermark, or the first offset of the oldest
    /// transaction still open in the committed log if that is lower (never above what
    /// the committed producer state covers).
    pub fn last_stable_offset(&self) -> i64 {
        let stable = self.producers.stable();
        let mut lso = self
            .high_watermark()
            .min(stable.next_offset().max(self.log.start_offset()));
        if let Some(first) = stable.first_unstable_offset() {
            lso = lso.min(first.max(self.log.start_offset()));
        }
        lso
    }

    /// Aborted transactions with data in `[from, to)` (committed markers only).
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<crate::txn::AbortedTxn> {
        self.producers.stable().aborted_overlapping(from, to)
    }

    /// Plans a fetch from `offset` that stops before `end` (the high watermark or, for
    /// `read_committed`, the last stable offset).
    pub fn fetch_plan_until(&self, offset: i64, max_bytes: u64, end: i64) -> Result<ReadPlan, OffsetError> {
        self.log
            .read_plan(offset, max_bytes, end.min(self.high_watermark()) - 1)
    }

    fn propose_batch(
        &mut self,
        now: Instant,
        batch: ValidatedBatch,
        acks: Acks,
        token: ProduceToken,
    ) -> Result<i64, ProduceError> {
        let header = *batch.header();
        let count = u64::try_from(header.record_count).unwrap_or(1);
        let log_id = self
            .raft
            .propose(now, batch.bytes().clone(), count)
            .map_err(|e| match e {
                ProposeError::NotLeader { .. } | ProposeError::TransferInProgress => ProduceError::NotLeader,
                ProposeError::Backpressure => ProduceError::Backpressure,
                other => ProduceError::Storage(other.to_string()),
            })?;
        let last_offset = to_offset(log_id.index);
        let base_offset = last_offset - i64::from(header.last_offset_delta);
        if acks != Acks::None {
            self.waiters.entry(last_offset).or_default().push(Waiter {
                token,
                base_offset,
                acks,
            });
        }
        self.proposing = Some(batch);
        self.pump(now);
        self.proposing = None;
        assert!(
            self.failed.is_some()
                || self.producers.tip().next_offset() > last_offset
                || self.producers.is_loading(),
            "a proposal reaches the log (and producer state) before produce returns"
        );
        Ok(base_offset)
    }

    /// A retry of a stored batch: answered with the original's offsets when the
    /// original is acknowledged (at once if it already is).
    fn acknowledge_duplicate(
        &mut self,
        token: ProduceToken,
        acks: Acks,
        base_offset: i64,
        last_offset: i64,
    ) -> i64 {
        if acks != Acks::None {
            self.waiters.entry(last_offset).or_default().push(Waiter {
                token,
                base_offset,
                acks,
            });
            if let Some(commit) = self.commit {
                self.resolve_waiters(commit, Acks::All);
            }
            self.resolve_waiters(self.log.written_offset(), Acks::Leader);
        }
        base_offset
    }

    /// Plans a fetch from `offset`: never past the high watermark.
    pub fn fetch_plan(&self, offset: i64, max_bytes: u64) -> Result<ReadPlan, OffsetError> {
        self.log.read_plan(offset, max_bytes, self.high_watermark() - 1)
    }

    /// For OffsetForLeaderEpoch: the largest epoch ≤ `epoch` this log has, and the offset
    /// where it ends (the start of the next epoch, or the log end).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let starts = self.log.term_starts();
        let position = starts.iter().rposition(|(term, _)| *term <= i64::from(epoch))?;
        let end = starts
            .get(position + 1)
            .map_or(self.log.next_offset(), |(_, start)| *start);
        Some((i32::try_from(starts[position].0).unwrap_or(i32::MAX), end))
    }

    /// The next thing the runtime must do.
    pub fn poll_effect(&mut self) -> Option<ReplicaEffect> {
        self.effects.pop_front()
    }

    /// The next event for the broker.
    pub fn poll_event(&mut self) -> Option<ReplicaEvent> {
        self.events.pop_front()
    }

    /// When [`Replica::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.raft.poll_timeout(),
            self.log.poll_timeout(),
            self.producers.poll_timeout(),
            self.snapshot_refusal_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs timers (elections, heartbeats, checkpoints).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.raft.handle_timeout(now);
        self.log.handle_timeout(now);
        if self.snapshot_refusal_at.is_some_and(|at| at <= now) {
            self.snapshot_refusal_at = None;
            for read_id in std::mem::take(&mut self.snapshot_refusals) {
                let result = Err(ReadError::SnapshotGone);
                self.raft
                    .handle(now, RaftInput::SnapshotChunkRead { read_id, result });
            }
        }
        self.pump(now);
    }

    /// One heartbeat interval of leader duties when heartbeats are coalesced
    /// (`RaftConfig::coalesced_heartbeats`): returns this group's heartbeats, for the
    /// broker to pack with every other group's into one frame per peer.
    pub fn take_heartbeats(&mut self, now: Instant) -> Vec<Message> {
        let heartbeats = self.raft.take_heartbeats(now);
        self.pump(now);
        heartbeats
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: ReplicaInput) {
        match input {
            ReplicaInput::Message(message) => self.raft.handle(now, RaftInput::Message(message)),
            ReplicaInput::Disk(completion) => self.log.handle_completion(now, completion),
            ReplicaInput::HardStateDurable(hard_state) => {
                self.durable_hard_state = hard_state;
                self.raft.handle(now, RaftInput::HardStateDurable(hard_state));
            }
            ReplicaInput::RangesRead { token, result } => self.on_ranges_read(now, token, result),
        }
        self.pump(now);
    }

    /// Moves work between Raft, the log and the runtime until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(effect) = self.raft.poll_effect() {
                progressed = true;
                self.on_raft_effect(now, effect);
            }
            while let Some(event) = self.log.poll_event() {
                progressed = true;
                self.on_log_event(now, event);
            }
            self.pump_producers(now);
            progressed |= self.apply_pending_start_offset(now);
            progressed |= self.announce_start_offset(now);
            self.advance_raft_snapshot(now);
            while let Some(effect) = self.log.poll_effect() {
                progressed = true;
                self.effects.push_back(ReplicaEffect::Disk(effect));
            }
            if !progressed {
                return;
            }
        }
    }

    /// Producer state: moves what is committed and durable into its stable table,
    /// writes a snapshot when one is due, and reads the log suffix while recovering.
    fn pump_producers(&mut self, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        let committed = self.commit.map_or(self.log.start_offset(), |c| c + 1);
        self.producers
            .on_stable(committed.min(self.log.durable_offset() + 1));
        self.producers.maybe_snapshot(now, &mut self.log);
        if let Some((from, ranges)) = self.producers.next_read(&self.log) {
            let token = ReadToken(self.next_token);
            self.next_token += 1;
            self.producer_reads.insert(token, from);
            self.effects
                .push_back(ReplicaEffect::ReadRanges { token, ranges });
        }
    }

    fn on_raft_effect(&mut self, now: Instant, effect: RaftEffect) {
        match effect {
            RaftEffect::Send(message) => self.effects.push_back(ReplicaEffect::Send(message)),
            RaftEffect::PersistHardState(hs) => self.effects.push_back(ReplicaEffect::PersistHardState(hs)),
            RaftEffect::Append { write_id, entries } => {
                for entry in entries {
                    self.append_entry(now, &entry);
                }
                let ticket = self.log.sync();
                self.writes.push_back((write_id, ticket));
            }
            RaftEffect::Truncate { write_id, from_index } => {
                let from = to_offset(from_index);
                self.start_announcements.retain(|at, _| *at < from);
                match self.log.truncate(now, from) {
                    Ok(()) => self.producers.on_truncate(from),
                    Err(error) => self.fail(format!("raft truncation at {from} refused by the log: {error}")),
                }
                self.config_entries.retain(|e| to_offset(e.index) < from);
                let ticket = self.log.sync();
                self.writes.push_back((write_id, ticket));
            }
            RaftEffect::ReadEntries {
                read_id,
                from_index,
                max_bytes,
                ..
            } => self.start_raft_read(now, read_id, to_offset(from_index), max_bytes as u64),
            RaftEffect::ReadSnapshotChunk {
                read_id,
                snapshot,
                offset,
                max_bytes,
                ..
            } => self.read_snapshot_chunk(now, read_id, snapshot, offset, max_bytes),
            RaftEffect::WriteSnapshotChunk {
                write_id,
                offset,
                data,
                ..
            } => {
                if offset == 0 {
                    self.incoming_snapshot.clear();
                }
                if offset == self.incoming_snapshot.len() as u64 {
                    self.incoming_snapshot.extend_from_slice(&data);
                }
                // Kept in memory: a crash before the install makes the leader send it
                // again, so the chunk is "durable" behind whatever the log has queued.
                let ticket = self.log.sync();
                self.writes.push_back((write_id, ticket));
            }
            RaftEffect::InstallSnapshot {
                write_id,
                meta,
                discard_log,
            } => self.install_snapshot(now, write_id, &meta, discard_log),
            // The state is the log (and what is rebuilt from it), installed above.
            RaftEffect::RestoreSnapshot { .. } => {}
            RaftEffect::CommitAdvanced { commit } => self.on_commit(now, to_offset(commit)),
            RaftEffect::RoleChanged { role, term, leader } => {
                if role != Role::Leader {
                    self.fail_waiters(|| ProduceError::NotLeader);
                }
                self.announced_start_offset = 0;
                self.events
                    .push_back(ReplicaEvent::RoleChanged { role, term, leader });
            }
            // Apply and CompactLog: the log is the state; nothing to apply yet
            // (producer state and coordinators hook in here).
            _ => {}
        }
    }

    /// Serves a chunk of the current snapshot, or refuses (after a delay, so Raft's
    /// start-over is not a spin) one that is no longer current.
    fn read_snapshot_chunk(
        &mut self,
        now: Instant,
        read_id: crate::raft::ReadId,
        snapshot: LogId,
        offset: u64,
        max_bytes: usize,
    ) {
        let current = self
            .raft
            .snapshot()
            .map(|m| m.last)
            .filter(|last| *last == snapshot);
        let Some(last) = current else {
            self.snapshot_refusals.push(read_id);
            self.snapshot_refusal_at
                .get_or_insert(now + SNAPSHOT_REFUSAL_DELAY);
            return;
        };
        let bytes = PartitionSnapshot {
            last,
            start_offset: self.log.start_offset().max(to_offset(last.index) + 1),
        }
        .encode();
        let from = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let to = from.saturating_add(max_bytes.max(1)).min(bytes.len());
        let result = Ok(SnapshotChunkData {
            data: bytes.slice(from..to),
            done: to == bytes.len(),
        });
        self.raft
            .handle(now, RaftInput::SnapshotChunkRead { read_id, result });
    }

    /// Makes a fully received snapshot this replica's state: the log restarts after
    /// its point unless it holds the point's entry (Raft keeps the suffix then), and
    /// the leader's log start is applied once the log reaches it.
    fn install_snapshot(
        &mut self,
        now: Instant,
        write_id: crate::raft::WriteId,
        meta: &SnapshotMeta,
        discard_log: bool,
    ) {
        let data = std::mem::take(&mut self.incoming_snapshot).freeze();
        let first_after = to_offset(meta.last.index) + 1;
        // A snapshot Raft accepted moves the log regardless; bad bytes only lose the
        // leader's start offset, which its next snapshot or trim brings again.
        let start_offset = PartitionSnapshot::decode(&data)
            .ok()
            .filter(|s| s.last == meta.last)
            .map_or(first_after, |s| s.start_offset);
        let ticket = if discard_log {
            let ticket = self.log.reset_to(first_after, to_offset(meta.last.term));
            let config = *self.producers.config();
            self.producers = Producers::recover(config, &mut self.log);
            self.producer_reads.clear();
            self.reads.clear();
            self.config_entries.clear();
            self.fail_waiters(|| ProduceError::NotLeader);
            ticket
        } else {
            self.log.sync()
        };
        self.writes.push_back((write_id, ticket));
        if start_offset > self.log.start_offset() {
            self.pending_start_offset = Some(start_offset);
        }
        self.apply_pending_start_offset(now);
    }

    /// Leader: announces a log start that moved past the last one announced, once it
    /// is durable here. Returns whether it proposed.
    fn announce_start_offset(&mut self, now: Instant) -> bool {
        let start = self.log.durable_start_offset().min(self.log.start_offset());
        if !self.is_leader() || self.failed.is_some() || start <= self.announced_start_offset {
            return false;
        }
        if self.is_sole_member() {
            // Nobody to tell (a replica added later gets the start with its snapshot or
            // from this announcement then); no entry, so offsets stay as they were.
            return false;
        }
        if self.raft.propose(now, log_start_batch(start), 1).is_err() {
            return false;
        }
        self.announced_start_offset = start;
        true
    }

    fn is_sole_member(&self) -> bool {
        let membership = self.raft.membership();
        membership.learners().is_empty() && membership.voters().len() <= 1
    }

    /// Applies the announcements committed through `commit`.
    fn apply_start_announcements(&mut self, now: Instant, commit: i64) {
        let keep = self.start_announcements.split_off(&(commit + 1));
        let due = std::mem::replace(&mut self.start_announcements, keep);
        for start in due.into_values() {
            if start > self.log.start_offset() && start <= self.log.next_offset() {
                let _ = self.log.delete_records(now, start);
            }
            self.events
                .push_back(ReplicaEvent::StartOffsetReplicated { start_offset: start });
        }
    }

    /// Moves the log start to the one an installed snapshot named, once the log
    /// reaches it. Returns whether it did.
    fn apply_pending_start_offset(&mut self, now: Instant) -> bool {
        let Some(start) = self.pending_start_offset else {
            return false;
        };
        if self.log.next_offset() < start || self.high_watermark() < start {
            return false;
        }
        self.pending_start_offset = None;
        self.log.delete_records(now, start).is_ok()
    }

    /// Raft's snapshot point follows the log's first retained segment once earlier
    /// ones are deleted (retention, DeleteRecords, trims): Raft then sends a snapshot
    /// instead of asking for entries the log no longer holds.
    fn advance_raft_snapshot(&mut self, now: Instant) {
        let retained = self.log.retained_offset();
        let covered = self.raft.snapshot().map_or(0, |m| to_offset(m.last.index) + 1);
        if retained > covered {
            // Not applied yet or not in Raft's log: tried again on a later pump.
            let _ = self.raft.snapshot_taken(now, to_index(retained - 1));
        }
    }

    fn append_entry(&mut self, now: Instant, entry: &Entry) {
        let expected = self.log.next_offset();
        assert_eq!(to_offset(entry.index), expected, "raft appends at the log's end");
        let batch = entry_to_batch(entry);
        let meta = BatchHeader::parse(&batch)
            .ok()
            .map(|h| BatchMeta::from_stored(&h, &batch));
        // The batch this leader just validated and proposed is appended as it is.
        let appended = match self.proposing.take_if(|proposed| proposed.is(&batch)) {
            Some(proposed) => self.log.append_validated(now, to_offset(entry.term), proposed),
            None => self.log.append(now, to_offset(entry.term), batch),
        };
        match appended {
            Ok(info) => {
                assert_eq!(
                    info.last_offset,
                    to_offset(entry.last_index),
                    "entry and batch agree"
                );
                if let Some(meta) = meta {
                    self.producers.on_append(meta.at_offset(info.base_offset));
                }
                if let Some(start) = BatchHeader::parse(&entry.payload)
                    .ok()
                    .and_then(|h| log_start_record(&h, &entry.payload))
                {
                    self.start_announcements.insert(info.last_offset, start);
                }
            }
            Err(error) => self.fail(format!(
                "entry at offset {} refused by the log: {error}",
                entry.index
            )),
        }
        if entry.kind == EntryKind::Config {
            self.config_entries.push(entry.clone());
        }
    }

    fn start_raft_read(
        &mut self,
        now: Instant,
        read_id: crate::raft::ReadId,
        from_index: i64,
        max_bytes: u64,
    ) {
        let up_to = self.log.written_offset();
        match self.log.replication_read_plan(from_index, max_bytes, up_to) {
            Ok(plan) if !plan.ranges.is_empty() => {
                let token = ReadToken(self.next_token);
                self.next_token += 1;
                self.reads.insert(
                    token,
                    RaftRead {
                        read_id,
                        from_index,
                        max_bytes,
                        up_to,
                    },
                );
                self.effects.push_back(ReplicaEffect::ReadRanges {
                    token,
                    ranges: plan.ranges,
                });
            }
            Ok(_) => self.answer_raft_read(now, read_id, Err(ReadError::Storage)),
            Err(_) => self.answer_raft_read(now, read_id, Err(ReadError::Compacted)),
        }
    }

    fn answer_raft_read(
        &mut self,
        now: Instant,
        read_id: crate::raft::ReadId,
        result: Result<Vec<Entry>, ReadError>,
    ) {
        self.raft.handle(now, RaftInput::EntriesRead { read_id, result });
    }

    fn on_ranges_read(&mut self, now: Instant, token: ReadToken, result: Result<Vec<Bytes>, DiskError>) {
        if let Some(from) = self.producer_reads.remove(&token) {
            let loaded = result
                .map_err(|e| format!("producer state: reading the log from offset {from}: {e}"))
                .and_then(|chunks| self.producers.on_read(from, &chunks));
            if let Err(reason) = loaded {
                self.fail(reason);
            }
            return;
        }
        let Some(read) = self.reads.remove(&token) else {
            return;
        };
        let entries = result
            .map_err(|_| ReadError::Storage)
            .and_then(|chunks| {
                trim_fetched(&chunks, read.from_index, read.up_to, read.max_bytes)
                    .map_err(|_| ReadError::Storage)
            })
            .and_then(|bytes| {
                let mut entries = Vec::new();
                for (at, header) in iter_batches(&bytes) {
                    let batch = bytes.slice(at..at + header.size_bytes());
                    entries.push(batch_to_entry(&header, batch).map_err(|_| ReadError::Storage)?);
                }
                if entries.is_empty() {
                    Err(ReadError::Storage)
                } else {
                    Ok(entries)
                }
            });
        self.raft.handle(
            now,
            RaftInput::EntriesRead {
                read_id: read.read_id,
                result: entries,
            },
        );
    }

    fn on_log_event(&mut self, now: Instant, event: LogEvent) {
        match event {
            LogEvent::SyncDone { ticket } => {
                let mut newest = None;
                while self.writes.front().is_some_and(|(_, t)| *t <= ticket) {
                    newest = self.writes.pop_front().map(|(id, _)| id);
                }
                if let Some(write_id) = newest {
                    self.raft.handle(now, RaftInput::WriteDurable { write_id });
                }
            }
            LogEvent::Written { last_offset } => self.resolve_waiters(last_offset, Acks::Leader),
            LogEvent::AppendsFailed { error, .. } => self.rebuild_after_disk_failure(now, error),
            LogEvent::StartOffsetDurable { start_offset } => {
                self.events
                    .push_back(ReplicaEvent::StartOffsetDurable { start_offset });
                if self.is_sole_member() {
                    // Durable on the only replica is replicated.
                    self.events
                        .push_back(ReplicaEvent::StartOffsetReplicated { start_offset });
                }
            }
            LogEvent::Corrupted { reason, .. } => self.fail(reason),
            _ => {}
        }
    }

    fn on_commit(&mut self, now: Instant, commit: i64) {
        if self.commit.is_some_and(|c| c >= commit) {
            return;
        }
        self.commit = Some(commit);
        self.apply_start_announcements(now, commit);
        self.resolve_waiters(commit, Acks::All);
        self.events.push_back(ReplicaEvent::HighWatermark {
            high_watermark: self.high_watermark(),
        });
    }

    /// Acknowledges waiters of kind `acks` whose batches end at or before `through`.
    fn resolve_waiters(&mut self, through: i64, acks: Acks) {
        let ready: Vec<i64> = self
            .waiters
            .range(..=through)
            .map(|(offset, _)| *offset)
            .collect();
        for offset in ready {
            let Some(list) = self.waiters.remove(&offset) else {
                continue;
            };
            let (done, keep): (Vec<Waiter>, Vec<Waiter>) = list.into_iter().partition(|w| w.acks == acks);
            for waiter in done {
                self.events.push_back(ReplicaEvent::ProduceDone {
                    token: waiter.token,
                    result: Ok(waiter.base_offset),
                });
            }
            if !keep.is_empty() {
                self.waiters.insert(offset, keep);
            }
        }
    }

    fn fail_waiters(&mut self, error: impl Fn() -> ProduceError) {
        for (_, list) in std::mem::take(&mut self.waiters) {
            for waiter in list {
                self.events.push_back(ReplicaEvent::ProduceDone {
                    token: waiter.token,
                    result: Err(error()),
                });
            }
        }
    }

    fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            self.failed = Some(reason.clone());
            self.fail_waiters(|| ProduceError::Storage(reason.clone()));
            self.events.push_back(ReplicaEvent::Failed { reason });
        }
    }

    /// Raft believed writes that the disk lost: rebuild the member from what is durable.
    fn rebuild_after_disk_failure(&mut self, now: Instant, error: DiskError) {
        let message = error.to_string();
        self.fail_waiters(|| ProduceError::Storage(message.clone()));
        self.writes.clear();
        self.reads.clear();
        self.producers.on_truncate(self.log.next_offset());
        let last = self.log.next_offset() - 1;
        self.config_entries.retain(|e| to_offset(e.index) <= last);
        self.commit = self.commit.map(|c| c.min(last));
        let commit_hint = self.raft.commit_hint().map(to_offset).min(self.commit);
        let recovered = recovered_state(
            &self.log,
            self.durable_hard_state,
            &self.config_entries,
            commit_hint,
            &self.setup.bootstrap,
        );
        match Raft::new(
            self.setup.node_id,
            self.setup.raft.clone(),
            self.setup.bootstrap.clone(),
            recovered,
            self.setup.seed.wrapping_add(1),
            now,
        ) {
            // No campaign at once: with the disk still full, the new leader's no-op would
            // fail again at once. The election timeout is the back-off.
            Ok(raft) => self.raft = raft,
            Err(error) => self.fail(format!("cannot rebuild raft after a disk failure: {error}")),
        }
    }
}
