//! [`TxnCoordinator`]: the transactions of one `__transaction_state` partition — each
//! transactional id's producer id, epoch, state and partitions — kept as records in
//! that partition's log, rebuilt by replaying it, and driven through KIP-98's two-phase
//! commit: the decision (PrepareCommit / PrepareAbort) is made durable in the log
//! before any marker is written, markers go to every partition of the transaction, and
//! only when all are written is CompleteCommit / CompleteAbort recorded.
//!
//! # Contract with the partition that hosts it
//!
//! * When the replica becomes leader: [`TxnCoordinator::begin_load`], then every batch
//!   of the log up to the high watermark through [`TxnCoordinator::load_batches`], then
//!   [`TxnCoordinator::finish_load`]; until then requests get
//!   COORDINATOR_LOAD_IN_PROGRESS. On losing leadership, [`TxnCoordinator::unload`].
//! * [`TxnOutput::Append`]: append the batch with acks=all, answer
//!   [`TxnCoordinator::on_append_done`]. Nothing that depends on a record — a reply, a
//!   marker — is emitted before its append is committed. A failed append asks for
//!   [`TxnOutput::Reload`] (the coordinator's view may be ahead of the log).
//! * [`TxnOutput::WriteMarker`]: write the marker to that partition through its normal
//!   append path, answer [`TxnCoordinator::on_marker_done`] with the error code (0 when
//!   committed there). Failures are retried after `marker_retry_ms`.
//! * EndTxn is answered once the decision (Prepare*) is durable, as Kafka does; the
//!   markers and Complete* follow. A request for an id whose transaction is still
//!   ending (or whose record is being appended) — InitProducerId, AddPartitionsToTxn,
//!   EndTxn, a v2 produce's implicit add — is *parked* and served, in arrival order,
//!   once the id is idle, instead of being answered CONCURRENT_TRANSACTIONS: a client
//!   would retry that after its back-off (100 ms per transaction with librdkafka's
//!   defaults). A parked request still waiting after [`TxnConfig::ending_wait_ms`], or
//!   beyond [`MAX_PARKED_PER_ID`] waiting for one id, gets CONCURRENT_TRANSACTIONS.
//!   KIP-890 produce verifications (`verify_only`) are never parked: they answer from
//!   the state as it is. Once every marker is written the id is idle again: the
//!   Complete* record settles nothing new, so it does not hold the id (a parked
//!   AddPartitionsToTxn's record follows it into the log at once, one sync for both).
//!   Every other record holds its id until it is committed.
//! * [`TxnOutput::TrimLog`]: everything below the offset is superseded by a committed
//!   checkpoint (a copy of every transaction's state), so the log start may move there.
//! * Time: `now` for timers, `wall_ms` (wall-clock milliseconds) for what is stored
//!   (transaction start, last update) and compared with transaction timeouts.
//!
//! # Transaction protocol v2 (KIP-890 part 2)
//!
//! [`TxnOp::EndTxnV2`] (EndTxn v5) bumps the producer's epoch with the decision: the
//! Prepare* record holds the bumped epoch, the markers carry it (so every partition of
//! the transaction fences the epoch its data was written with, and a late retry of that
//! data is refused there), and the answer names the producer id and epoch to use next.
//! The epoch the producer had is kept (`last_producer_epoch`), so a retried EndTxn
//! whose answer was lost is recognised and answered again. When the bump would exhaust
//! the epochs, the markers carry the last epoch and the producer continues with a fresh
//! producer id at epoch 0 (`next_producer_id`, taken at Complete*). A timeout's abort
//! keeps the old epoch the same way, so a v2 producer's own abort is answered with its
//! next epoch instead of being fenced. Clients of v1 (EndTxn v0-4) are unchanged.
//!
//! Each record is a transactional id's whole state (key: the id; value: the state, or
//! null when the id expired), so replay is last-write-wins and a checkpoint is simply
//! every state written again.

use crate::log::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::log::builder::{build_batch, BatchOptions, NewRecord};
use crate::log::records::parse_uncompressed_records;
use crate::time::Instant;
use crate::txn::marker::Marker;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The internal topic transactions live in.
pub const TXN_STATE_TOPIC: &str = "__transaction_state";

/// Largest checkpoint batch the coordinator writes (larger checkpoints are split).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Most requests parked for one transactional id (see the module docs); more are
/// answered CONCURRENT_TRANSACTIONS at once.
pub const MAX_PARKED_PER_ID: usize = 16;

/// The `__transaction_state` partition coordinating `transactional_id`.
pub fn partition_for_txn(transactional_id: &str, partitions: i32) -> i32 {
    let hash = crc32c::crc32c(transactional_id.as_bytes());
    i32::try_from(hash % u32::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Kafka error codes the coordinator answers with.
pub mod code {
    /// NONE.
    pub const NONE: i16 = 0;
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// COORDINATOR_LOAD_IN_PROGRESS.
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    /// NOT_COORDINATOR.
    pub const NOT_COORDINATOR: i16 = 16;
    /// INVALID_PRODUCER_EPOCH.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// INVALID_TXN_STATE.
    pub const INVALID_TXN_STATE: i16 = 48;
    /// INVALID_PRODUCER_ID_MAPPING.
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    /// INVALID_TRANSACTION_TIMEOUT.
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    /// CONCURRENT_TRANSACTIONS.
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    /// PRODUCER_FENCED.
    pub const PRODUCER_FENCED: i16 = 90;
    /// TRANSACTIONAL_ID_NOT_FOUND.
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    /// TRANSACTION_ABORTABLE (KIP-890): the transaction can only be aborted. The
    /// coordinator answers it to a produce verification whose partition is not in the
    /// ongoing transaction, and to an addition (transaction protocol v2) naming the
    /// epoch a coordinator-side abort bumped; the broker maps it to the older code for
    /// request versions that do not know it.
    pub const TRANSACTION_ABORTABLE: i16 = 120;
}

/// Settings of the transaction coordinators (Kafka's names in the docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state` when
    /// it is created.
    pub state_partitions: i32,
    /// `transaction.max.timeout.ms`: the largest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_check_interval_ms: u64,
    /// `transactional.id.expiration.ms`: an idle, finished id is forgotten after this.
    pub id_expiration_ms: i64,
    /// Wait before retrying a marker a partition refused.
    pub marker_retry_ms: u64,
    /// Records written since the last checkpoint that trigger the next one.
    pub checkpoint_records: u64,
    /// Longest a request waits parked for its id's ending transaction (markers being
    /// written) before it is answered CONCURRENT_TRANSACTIONS.
    pub ending_wait_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            state_partitions: 4,
            max_timeout_ms: 900_000,
            abort_check_interval_ms: 1_000,
            id_expiration_ms: 604_800_000,
            marker_retry_ms: 100,
            checkpoint_records: 1_000,
            ending_wait_ms: 1_000,
        }
    }
}

/// Where a transaction is in its life (Kafka's states and numbering).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// Partitions added, not yet ended.
    Ongoing,
    /// Commit decided; markers being written.
    PrepareCommit,
    /// Abort decided; markers being written.
    PrepareAbort,
    /// Committed; every marker written.
    CompleteCommit,
    /// Aborted; every marker written.
    CompleteAbort,
}

impl TxnState {
    fn to_byte(self) -> u8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    fn from_byte(byte: u8) -> Option<TxnState> {
        Some(match byte {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// Kafka's name of the state (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// The stored state of one transactional id.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TxnMeta {
    /// Producer id.
    pub producer_id: i64,
    /// Current producer epoch.
    pub producer_epoch: i16,
    /// Transaction timeout the producer asked for.
    pub timeout_ms: i32,
    /// State.
    pub state: TxnState,
    /// Partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Wall-clock ms the open transaction started (-1: none).
    pub start_ms: i64,
    /// Wall-clock ms of the last change.
    pub last_update_ms: i64,
    /// The producer id before the last server-side epoch bump (-1: none).
    pub prev_producer_id: i64,
    /// The epoch before the last server-side epoch bump (EndTxn v5 or a timeout; -1:
    /// none): a retried EndTxn naming it is answered again instead of fenced.
    pub last_producer_epoch: i16,
    /// The producer id taken when the ending transaction completes, if its bump
    /// exhausted the epochs (-1: none).
    pub next_producer_id: i64,
}

impl TxnMeta {
    /// Forgets the server-side bump (a new InitProducerId fences instead).
    fn clear_bump(&mut self) {
        self.prev_producer_id = -1;
        self.last_producer_epoch = -1;
        self.next_producer_id = -1;
    }

    /// Bumps the epoch server-side, remembering the one the producer had; `fresh` is
    /// taken at Complete* when the bump exhausts the epochs.
    fn bump(&mut self, fresh: i64) {
        self.prev_producer_id = self.producer_id;
        self.last_producer_epoch = self.producer_epoch;
        self.next_producer_id = if bump_exhausts_epochs(self.producer_epoch) {
            fresh
        } else {
            -1
        };
        self.producer_epoch = self.producer_epoch.saturating_add(1);
    }
}

/// Whether bumping `epoch` at the end of a transaction reaches the last epoch, so the
/// producer must continue with a fresh producer id (KIP-890).
pub fn bump_exhausts_epochs(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

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

/// A request for the coordinator.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TxnOp {
    /// InitProducerId with a transactional id.
    InitProducerId {
        /// The transactional id.
        transactional_id: String,
        /// Timeout asked for.
        timeout_ms: i32,
        /// The producer's current id and epoch (KIP-360; -1 when not sent).
        producer_id: i64,
        /// The producer's current epoch (-1 when not sent).
        producer_epoch: i16,
        /// A fresh producer id the coordinator may use (a new id, or an exhausted epoch).
        fresh_producer_id: i64,
    },
    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition).
    AddPartitions {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Partitions to add.
        partitions: Vec<(String, i32)>,
        /// KIP-890 verification: only check that they are all in the transaction.
        verify_only: bool,
    },
    /// EndTxn.
    EndTxn {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Commit (true) or abort.
        commit: bool,
    },
    /// EndTxn v5 (KIP-890 part 2): the decision bumps the producer's epoch.
    EndTxnV2 {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Commit (true) or abort.
        commit: bool,
        /// A fresh producer id for when the bump exhausts the epochs (-1: none given;
        /// see [`bump_exhausts_epochs`]).
        fresh_producer_id: i64,
    },
    /// DescribeTransactions of these ids.
    Describe {
        /// The ids.
        transactional_ids: Vec<String>,
    },
    /// ListTransactions (empty filters match everything).
    List {
        /// States wanted (Kafka's names).
        states: Vec<String>,
        /// Producer ids wanted.
        producer_ids: Vec<i64>,
    },
}

/// One transaction as DescribeTransactions and ListTransactions show it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TxnDescription {
    /// The transactional id.
    pub transactional_id: String,
    /// Error code (TRANSACTIONAL_ID_NOT_FOUND for an unknown id).
    pub error_code: i16,
    /// Its state, if known.
    pub meta: Option<TxnMeta>,
}

/// The coordinator's answer.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TxnResult {
    /// InitProducerId: the producer's id and epoch.
    ProducerId {
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
    },
    /// Done (AddPartitions, EndTxn).
    Done,
    /// DescribeTransactions / ListTransactions.
    Transactions(Vec<TxnDescription>),
    /// A Kafka error code.
    Error(i16),
}

/// Identifies a request waiting at the coordinator.
pub type TxnReplyId = u64;

/// Something the hosting partition must do.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TxnOutput {
    /// Answer a request.
    Reply {
        /// The request.
        reply: TxnReplyId,
        /// The answer.
        result: TxnResult,
    },
    /// Append `batch` with acks=all; answer with [`TxnCoordinator::on_append_done`].
    Append {
        /// Quote in the answer.
        token: u64,
        /// An uncompressed batch of transaction records.
        batch: Bytes,
    },
    /// Write `marker` to `topic`/`partition`; answer [`TxnCoordinator::on_marker_done`].
    WriteMarker {
        /// Quote in the answer.
        token: u64,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The marker.
        marker: Marker,
    },
    /// Records below `offset` are superseded by a committed checkpoint.
    TrimLog {
        /// The new log start.
        offset: i64,
    },
    /// The coordinator's state may be ahead of the log: unload and load again.
    Reload,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Inactive,
    Loading,
    Active,
}

/// What to do once an append is committed.
#[derive(Clone, Debug)]
struct AppendWait {
    /// The transactional ids the batch wrote (one, or a checkpoint's many).
    ids: Vec<String>,
    reply: Option<(TxnReplyId, TxnResult)>,
    start_markers: bool,
    checkpoint: bool,
}

/// A request waiting for its transactional id to be idle.
#[derive(Clone, Debug)]
struct Parked {
    reply: TxnReplyId,
    op: TxnOp,
    /// When it is answered CONCURRENT_TRANSACTIONS if still waiting.
    deadline: Instant,
}

/// Markers of one ending transaction.
#[derive(Clone, Debug, Default)]
struct MarkerRun {
    remaining: BTreeSet<(String, i32)>,
    in_flight: BTreeSet<(String, i32)>,
    retry_at: Option<Instant>,
}

/// Bugs the simulator plants to prove its checkers (feature `sim-bugs`; set with
/// [`TxnCoordinator::plant`]). Every switch is off by default.
#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnBugs {
    /// An abort's markers are written as COMMIT markers.
    pub abort_writes_commit_markers: bool,
    /// A request naming an older epoch of the id's producer is accepted.
    pub accept_stale_epoch: bool,
    /// The last partition of a transaction with several never gets its marker (and
    /// the transaction completes anyway).
    pub drop_last_marker: bool,
    /// EndTxn (v1) is answered as it arrives, before its decision is durable.
    pub answer_end_before_durable: bool,
}

/// Counters for `/metrics` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnMetrics {
    /// Transactions committed (CompleteCommit written).
    pub commits: u64,
    /// Transactions aborted (CompleteAbort written).
    pub aborts: u64,
    /// Of the aborts, those started by a timeout.
    pub timeouts: u64,
    /// Markers written.
    pub markers: u64,
    /// Records that could not be decoded while loading.
    pub corrupt_records: u64,
    /// Requests refused because they named a fenced producer epoch or id
    /// (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED, INVALID_PRODUCER_ID_MAPPING).
    pub fenced: u64,
    /// KIP-890 produce verifications refused (a partition not in the transaction).
    pub verification_failures: u64,
    /// Server-side epoch bumps of transaction protocol v2 (EndTxn v5).
    pub epoch_bumps: u64,
    /// Requests that waited (parked) for their id's ending transaction.
    pub parked: u64,
    /// Of those, the ones answered CONCURRENT_TRANSACTIONS after waiting too long.
    pub park_timeouts: u64,
    /// Fresh producer ids taken because a bump exhausted the epochs.
    pub epochs_exhausted: u64,
}

/// How a server-side epoch bump treats the epoch the producer had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bump {
    /// Kept: a retried (or v2) EndTxn naming it is answered with the new epoch.
    Remember,
    /// Forgotten: the old producer is fenced.
    Fence,
}

impl TxnMetrics {
    /// Adds `other`'s counters to these.
    pub fn add(&mut self, other: &TxnMetrics) {
        self.commits += other.commits;
        self.aborts += other.aborts;
        self.timeouts += other.timeouts;
        self.markers += other.markers;
        self.corrupt_records += other.corrupt_records;
        self.fenced += other.fenced;
        self.verification_failures += other.verification_failures;
        self.epoch_bumps += other.epoch_bumps;
        self.parked += other.parked;
        self.park_timeouts += other.park_timeouts;
        self.epochs_exhausted += other.epochs_exhausted;
    }
}

/// The transaction coordinator of one `__transaction_state` partition.
#[derive(Debug)]
pub struct TxnCoordinator {
    partition: i32,
    config: TxnConfig,
    status: Status,
    /// The partition's leader epoch (written into markers).
    epoch: i32,
    /// State as of the last record appended (committed or not).
    txns: BTreeMap<String, TxnMeta>,
    /// Ids with an append in flight: no other change until it is committed.
    busy: BTreeSet<String>,
    appends: BTreeMap<u64, AppendWait>,
    markers: BTreeMap<String, MarkerRun>,
    marker_tokens: BTreeMap<u64, (String, (String, i32))>,
    /// Requests waiting for their transactional id to be idle, in arrival order.
    parked: BTreeMap<String, VecDeque<Parked>>,
    checkpoint: Option<(BTreeSet<u64>, Option<i64>)>,
    records_since_checkpoint: u64,
    next_token: u64,
    next_abort_check: Option<Instant>,
    outputs: VecDeque<TxnOutput>,
    metrics: TxnMetrics,
    #[cfg(feature = "sim-bugs")]
    bugs: TxnBugs,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// The key of `transactional_id`'s record.
pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + transactional_id.len());
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(transactional_id.as_bytes());
    key
}

/// The value of a transaction record.
pub fn encode_value(meta: &TxnMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&meta.producer_id.to_be_bytes());
    out.extend_from_slice(&meta.producer_epoch.to_be_bytes());
    out.extend_from_slice(&meta.timeout_ms.to_be_bytes());
    out.push(meta.state.to_byte());
    out.extend_from_slice(&meta.start_ms.to_be_bytes());
    out.extend_from_slice(&meta.last_update_ms.to_be_bytes());
    out.extend_from_slice(&(meta.partitions.len() as u32).to_be_bytes());
    for (topic, partition) in &meta.partitions {
        put_str(&mut out, topic);
        out.extend_from_slice(&partition.to_be_bytes());
    }
    out.extend_from_slice(&meta.prev_producer_id.to_be_bytes());
    out.extend_from_slice(&meta.last_producer_epoch.to_be_bytes());
    out.extend_from_slice(&meta.next_producer_id.to_be_bytes());
    out
}

/// Version of the values written: 1 adds the server-side bump fields (KIP-890) to 0.
const VALUE_VERSION: i16 = 1;

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(N)?)?;
        self.at += N;
        slice.try_into().ok()
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::from(u16::from_be_bytes(self.take()?));
        let slice = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        String::from_utf8(slice.to_vec()).ok()
    }
}

/// Decodes a record: `(transactional id, state or None for a tombstone)`.
pub fn decode_record(key: &[u8], value: Option<&[u8]>) -> Option<(String, Option<TxnMeta>)> {
    if key.len() < 2 || key[..2] != [0, 0] {
        return None;
    }
    let id = String::from_utf8(key[2..].to_vec()).ok()?;
    let Some(value) = value else {
        return Some((id, None));
    };
    let mut c = Cursor { bytes: value, at: 0 };
    let version = i16::from_be_bytes(c.take()?);
    if !(0..=VALUE_VERSION).contains(&version) {
        return None;
    }
    let producer_id = i64::from_be_bytes(c.take()?);
    let producer_epoch = i16::from_be_bytes(c.take()?);
    let timeout_ms = i32::from_be_bytes(c.take()?);
    let state = TxnState::from_byte(c.take::<1>()?[0])?;
    let start_ms = i64::from_be_bytes(c.take()?);
    let last_update_ms = i64::from_be_bytes(c.take()?);
    let count = u32::from_be_bytes(c.take()?);
    let mut partitions = BTreeSet::new();
    for _ in 0..count {
        let topic = c.string()?;
        let partition = i32::from_be_bytes(c.take()?);
        partitions.insert((topic, partition));
    }
    let (prev_producer_id, last_producer_epoch, next_producer_id) = if version >= 1 {
        (
            i64::from_be_bytes(c.take()?),
            i16::from_be_bytes(c.take()?),
            i64::from_be_bytes(c.take()?),
        )
    } else {
        (-1, -1, -1)
    };
    let meta = TxnMeta {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
        prev_producer_id,
        last_producer_epoch,
        next_producer_id,
    };
    Some((id, Some(meta)))
}

/// The record holding `meta` as `id`'s state.
fn state_record(id: &str, meta: &TxnMeta) -> NewRecord {
    NewRecord {
        key: Some(encode_key(id)),
        value: Some(encode_value(meta)),
        timestamp_ms: meta.last_update_ms,
        headers: Vec::new(),
    }
}

impl TxnCoordinator {
    /// The coordinator of `__transaction_state` partition `partition`, inactive until
    /// loaded.
    pub fn new(partition: i32, config: TxnConfig) -> TxnCoordinator {
        TxnCoordinator {
            partition,
            config,
            status: Status::Inactive,
            epoch: -1,
            txns: BTreeMap::new(),
            busy: BTreeSet::new(),
            appends: BTreeMap::new(),
            markers: BTreeMap::new(),
            marker_tokens: BTreeMap::new(),
            parked: BTreeMap::new(),
            checkpoint: None,
            records_since_checkpoint: 0,
            next_token: 1,
            next_abort_check: None,
            outputs: VecDeque::new(),
            metrics: TxnMetrics::default(),
            #[cfg(feature = "sim-bugs")]
            bugs: TxnBugs::default(),
        }
    }

    /// Plants bugs (the simulator's checker tests only).
    #[cfg(feature = "sim-bugs")]
    pub fn plant(&mut self, bugs: TxnBugs) {
        self.bugs = bugs;
    }

    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Whether it serves requests.
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }

    /// Counters.
    pub fn metrics(&self) -> &TxnMetrics {
        &self.metrics
    }

    /// Transactions open or ending (Ongoing, PrepareCommit, PrepareAbort).
    pub fn ongoing(&self) -> u64 {
        let open = |m: &&TxnMeta| matches!(m.state, TxnState::Ongoing) || m.state.is_prepare();
        self.txns.values().filter(open).count() as u64
    }

    /// Every transactional id's state as of the last record appended.
    pub fn transactions(&self) -> &BTreeMap<String, TxnMeta> {
        &self.txns
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<TxnOutput> {
        self.outputs.pop_front()
    }

    /// The replica leads (term `epoch`): forget everything and start a replay.
    pub fn begin_load(&mut self, epoch: i32) {
        self.unload();
        self.status = Status::Loading;
        self.epoch = epoch;
    }

    /// Replays whole batches (control batches and compressed ones are skipped; an
    /// undecodable record is counted and skipped). Returns the offset after the last
    /// whole batch.
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
            let compressed = header.attributes & 0x07 != 0;
            if !header.is_control() && !compressed {
                let records = bytes.slice(at + BATCH_HEADER_BYTES..end);
                match parse_uncompressed_records(&records, header.record_count) {
                    Ok(records) => {
                        for record in records {
                            let decoded = record
                                .key
                                .as_deref()
                                .and_then(|key| decode_record(key, record.value.as_deref()));
                            match decoded {
                                Some((id, Some(meta))) => {
                                    self.txns.insert(id, meta);
                                }
                                Some((id, None)) => {
                                    self.txns.remove(&id);
                                }
                                None => self.metrics.corrupt_records += 1,
                            }
                        }
                    }
                    Err(_) => self.metrics.corrupt_records += 1,
                }
                self.records_since_checkpoint += u64::try_from(header.record_count).unwrap_or(0);
            }
            at = end;
        }
        Ok(next)
    }

    /// The replay reached the high watermark: serve, and finish what the log says was
    /// decided but not completed (markers of Prepare* transactions are written again).
    pub fn finish_load(&mut self, now: Instant, wall_ms: i64) {
        self.status = Status::Active;
        self.next_abort_check = Some(now + Duration::from_millis(self.config.abort_check_interval_ms));
        let preparing: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| m.state.is_prepare())
            .map(|(id, _)| id.clone())
            .collect();
        for id in preparing {
            self.start_markers(now, wall_ms, &id);
        }
    }

    /// The replica stopped leading: waiting requests get NOT_COORDINATOR, live state
    /// is dropped.
    pub fn unload(&mut self) {
        for (_, wait) in std::mem::take(&mut self.appends) {
            if let Some((reply, _)) = wait.reply {
                self.reply(reply, TxnResult::Error(code::NOT_COORDINATOR));
            }
        }
        for parked in std::mem::take(&mut self.parked).into_values().flatten() {
            self.reply(parked.reply, TxnResult::Error(code::NOT_COORDINATOR));
        }
        self.status = Status::Inactive;
        self.txns.clear();
        self.busy.clear();
        self.markers.clear();
        self.marker_tokens.clear();
        self.checkpoint = None;
        self.records_since_checkpoint = 0;
        self.next_abort_check = None;
    }

    fn reply(&mut self, reply: TxnReplyId, result: TxnResult) {
        self.outputs.push_back(TxnOutput::Reply { reply, result });
    }

    fn token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Writes `meta` as `id`'s new state; `wait` says what follows its commit.
    fn write(
        &mut self,
        id: &str,
        meta: TxnMeta,
        reply: Option<(TxnReplyId, TxnResult)>,
        start_markers: bool,
    ) {
        let record = state_record(id, &meta);
        self.txns.insert(id.to_string(), meta);
        self.append(vec![record], vec![id.to_string()], reply, start_markers, false);
    }

    /// Writes `meta` as `id`'s new state without holding the id until it is committed:
    /// for a Complete* record, which tells nothing not already settled — the decision
    /// is durable in the Prepare* record and every marker is written, so a coordinator
    /// that loses this record finishes the same transaction the same way. The next
    /// request for the id is served at once; its own record follows this one in the
    /// log, and its answer waits for that record's commit, which implies this one's.
    /// A transaction's ending and the next one's AddPartitionsToTxn thus share a sync
    /// instead of taking one each, in turn.
    fn write_settled(&mut self, id: &str, meta: TxnMeta) {
        let record = state_record(id, &meta);
        self.txns.insert(id.to_string(), meta);
        // No ids: the append neither holds the id nor, when committed, frees it (a
        // later record of the id may be in flight by then and holding it).
        self.append(vec![record], Vec::new(), None, false, false);
    }

    fn append(
        &mut self,
        records: Vec<NewRecord>,
        ids: Vec<String>,
        reply: Option<(TxnReplyId, TxnResult)>,
        start_markers: bool,
        checkpoint: bool,
    ) -> u64 {
        let token = self.token();
        self.records_since_checkpoint += records.len() as u64;
        let batch = build_batch(&records, BatchOptions::default());
        if !checkpoint {
            self.busy.extend(ids.iter().cloned());
        }
        self.appends.insert(
            token,
            AppendWait {
                ids,
                reply,
                start_markers,
                checkpoint,
            },
        );
        self.outputs.push_back(TxnOutput::Append { token, batch });
        token
    }

    /// An append finished: `Ok(base offset)` once committed, or the error.
    pub fn on_append_done(&mut self, now: Instant, wall_ms: i64, token: u64, result: Result<i64, i16>) {
        let Some(wait) = self.appends.remove(&token) else {
            return;
        };
        let base_offset = match result {
            Ok(offset) => offset,
            Err(error) => {
                if let Some((reply, _)) = wait.reply {
                    let code = if error == code::NOT_COORDINATOR || error == 6 {
                        code::NOT_COORDINATOR
                    } else {
                        code::COORDINATOR_LOAD_IN_PROGRESS
                    };
                    self.reply(reply, TxnResult::Error(code));
                }
                self.unload();
                self.outputs.push_back(TxnOutput::Reload);
                return;
            }
        };
        if wait.checkpoint {
            self.on_checkpoint_part_done(token, base_offset);
            return;
        }
        for id in &wait.ids {
            self.busy.remove(id);
        }
        if let Some((reply, result)) = wait.reply {
            self.reply(reply, result);
        }
        if wait.start_markers {
            for id in &wait.ids {
                self.start_markers(now, wall_ms, id);
            }
        }
        for id in &wait.ids {
            self.unpark(now, wall_ms, id);
        }
        self.maybe_checkpoint(now, wall_ms);
    }

    /// Whether requests for `id` must wait: its record is being appended, or its
    /// transaction is ending (decided, markers not all written).
    fn must_wait(&self, id: &str) -> bool {
        self.busy.contains(id) || self.txns.get(id).is_some_and(|m| m.state.is_prepare())
    }

    /// Serves `id`'s parked requests in arrival order while it is idle.
    fn unpark(&mut self, now: Instant, wall_ms: i64, id: &str) {
        while !self.must_wait(id) {
            let Some(queue) = self.parked.get_mut(id) else {
                return;
            };
            let Some(parked) = queue.pop_front() else {
                self.parked.remove(id);
                return;
            };
            if queue.is_empty() {
                self.parked.remove(id);
            }
            self.serve(now, wall_ms, parked.reply, parked.op);
        }
    }

    /// Parked requests past their deadline get CONCURRENT_TRANSACTIONS.
    fn expire_parked(&mut self, now: Instant) {
        let mut expired = Vec::new();
        self.parked.retain(|_, queue| {
            queue.retain(|p| {
                let late = p.deadline <= now;
                if late {
                    expired.push(p.reply);
                }
                !late
            });
            !queue.is_empty()
        });
        for reply in expired {
            self.metrics.park_timeouts += 1;
            self.reply(reply, TxnResult::Error(code::CONCURRENT_TRANSACTIONS));
        }
    }

    fn on_checkpoint_part_done(&mut self, token: u64, base_offset: i64) {
        let Some((tokens, first)) = self.checkpoint.as_mut() else {
            return;
        };
        tokens.remove(&token);
        let first = *first.get_or_insert(base_offset);
        let first = first.min(base_offset);
        if tokens.is_empty() {
            self.checkpoint = None;
            self.outputs.push_back(TxnOutput::TrimLog { offset: first });
        } else if let Some((_, f)) = self.checkpoint.as_mut() {
            *f = Some(first);
        }
    }

    /// After `checkpoint_records` records — and at least as many as there are ids, so
    /// a checkpoint never writes more than the records since the last one (the log
    /// stays within twice the live state, however many ids there are) — writes every
    /// state again so the prefix before the copy can be trimmed.
    fn maybe_checkpoint(&mut self, _now: Instant, wall_ms: i64) {
        let due = self.config.checkpoint_records.max(self.txns.len() as u64);
        if self.checkpoint.is_some() || self.records_since_checkpoint < due {
            return;
        }
        self.records_since_checkpoint = 0;
        let mut tokens = BTreeSet::new();
        let mut records = Vec::new();
        let mut size = 0usize;
        let all: Vec<(String, TxnMeta)> = self.txns.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, meta) in all {
            let key = encode_key(&id);
            let value = encode_value(&meta);
            size += key.len() + value.len() + 32;
            records.push(NewRecord {
                key: Some(key),
                value: Some(value),
                timestamp_ms: wall_ms,
                headers: Vec::new(),
            });
            if size >= MAX_BATCH_BYTES {
                tokens.insert(self.append(std::mem::take(&mut records), Vec::new(), None, false, true));
                size = 0;
            }
        }
        if !records.is_empty() {
            tokens.insert(self.append(records, Vec::new(), None, false, true));
        }
        // Checkpoint records do not count towards the next checkpoint.
        self.records_since_checkpoint = 0;
        if !tokens.is_empty() {
            self.checkpoint = Some((tokens, None));
        }
    }

    fn start_markers(&mut self, now: Instant, wall_ms: i64, id: &str) {
        let Some(meta) = self.txns.get(id) else {
            return;
        };
        #[allow(unused_mut)]
        let mut remaining = meta.partitions.clone();
        // PLANTED BUG (sim-bugs): the last partition never gets its marker.
        #[cfg(feature = "sim-bugs")]
        if self.bugs.drop_last_marker && remaining.len() > 1 {
            remaining.pop_last();
        }
        let run = MarkerRun {
            remaining,
            ..MarkerRun::default()
        };
        self.markers.insert(id.to_string(), run);
        self.send_markers(now, wall_ms, id);
    }

    /// Sends the markers of `id` that are neither written nor in flight.
    fn send_markers(&mut self, now: Instant, wall_ms: i64, id: &str) {
        let Some(meta) = self.txns.get(id).cloned() else {
            return;
        };
        #[allow(unused_mut)]
        let mut commit = meta.state == TxnState::PrepareCommit;
        // PLANTED BUG (sim-bugs): aborts are written as commits.
        #[cfg(feature = "sim-bugs")]
        if self.bugs.abort_writes_commit_markers {
            commit = true;
        }
        let marker = Marker {
            producer_id: meta.producer_id,
            producer_epoch: meta.producer_epoch,
            commit,
            coordinator_epoch: self.epoch,
        };
        let Some(run) = self.markers.get_mut(id) else {
            return;
        };
        run.retry_at = None;
        let due: Vec<(String, i32)> = run.remaining.difference(&run.in_flight).cloned().collect();
        run.in_flight.extend(due.iter().cloned());
        for (topic, partition) in due {
            let token = self.token();
            self.marker_tokens
                .insert(token, (id.to_string(), (topic.clone(), partition)));
            self.outputs.push_back(TxnOutput::WriteMarker {
                token,
                topic,
                partition,
                marker,
            });
        }
        self.complete_if_marked(now, wall_ms, id);
    }

    /// A marker finished with `error_code` (0: committed on its partition).
    pub fn on_marker_done(&mut self, now: Instant, wall_ms: i64, token: u64, error_code: i16) {
        let Some((id, tp)) = self.marker_tokens.remove(&token) else {
            return;
        };
        let retry_ms = self.config.marker_retry_ms;
        let Some(run) = self.markers.get_mut(&id) else {
            return;
        };
        run.in_flight.remove(&tp);
        // Written; or the partition is gone; or it holds a newer epoch of the producer
        // (a later decision already reached it): nothing left to do there.
        let settled = matches!(
            error_code,
            code::NONE | code::UNKNOWN_TOPIC_OR_PARTITION | code::INVALID_PRODUCER_EPOCH
        );
        if settled {
            run.remaining.remove(&tp);
            if error_code == code::NONE {
                self.metrics.markers += 1;
            }
        } else if run.retry_at.is_none() {
            run.retry_at = Some(now + Duration::from_millis(retry_ms));
        }
        self.complete_if_marked(now, wall_ms, &id);
    }

    /// Every marker of `id` is written: record the Complete state, and serve the
    /// requests parked for the ending transaction at once (see [`Self::write_settled`]).
    fn complete_if_marked(&mut self, now: Instant, wall_ms: i64, id: &str) {
        let done = self
            .markers
            .get(id)
            .is_some_and(|r| r.remaining.is_empty() && r.in_flight.is_empty());
        if !done || self.busy.contains(id) {
            return;
        }
        self.markers.remove(id);
        let Some(mut meta) = self.txns.get(id).cloned() else {
            return;
        };
        meta.state = match meta.state {
            TxnState::PrepareCommit => {
                self.metrics.commits += 1;
                TxnState::CompleteCommit
            }
            TxnState::PrepareAbort => {
                self.metrics.aborts += 1;
                TxnState::CompleteAbort
            }
            _ => return,
        };
        meta.partitions.clear();
        meta.start_ms = -1;
        if meta.next_producer_id >= 0 {
            // The bump exhausted the epochs: the producer goes on with a fresh id.
            self.metrics.epochs_exhausted += 1;
            meta.producer_id = meta.next_producer_id;
            meta.producer_epoch = 0;
            meta.next_producer_id = -1;
        }
        self.write_settled(id, meta);
        self.unpark(now, wall_ms, id);
    }

    /// When [`TxnCoordinator::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retries = self.markers.values().filter_map(|r| r.retry_at);
        let parked = self.parked.values().filter_map(|q| q.front().map(|p| p.deadline));
        retries.chain(parked).chain(self.next_abort_check).min()
    }

    /// Timers: marker retries, timed-out transactions (aborted, with the producer's
    /// epoch bumped so the late producer is fenced), expired idle ids.
    pub fn handle_timeout(&mut self, now: Instant, wall_ms: i64) {
        if self.status != Status::Active {
            return;
        }
        let retry: Vec<String> = self
            .markers
            .iter()
            .filter(|(_, r)| r.retry_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in retry {
            self.send_markers(now, wall_ms, &id);
        }
        self.expire_parked(now);
        if self.next_abort_check.is_some_and(|t| t <= now) {
            self.next_abort_check = Some(now + Duration::from_millis(self.config.abort_check_interval_ms));
            self.abort_timed_out(wall_ms);
            self.expire_ids(wall_ms);
        }
    }

    fn abort_timed_out(&mut self, wall_ms: i64) {
        let timed_out: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                m.state == TxnState::Ongoing
                    && !self.busy.contains(*id)
                    && m.start_ms.saturating_add(i64::from(m.timeout_ms)) < wall_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in timed_out {
            self.metrics.timeouts += 1;
            self.begin_abort(&id, wall_ms, Bump::Remember, None);
        }
    }

    fn expire_ids(&mut self, wall_ms: i64) {
        let expired: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && !self.busy.contains(*id)
                    && m.last_update_ms.saturating_add(self.config.id_expiration_ms) < wall_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.txns.remove(&id);
            let record = NewRecord {
                key: Some(encode_key(&id)),
                value: None,
                timestamp_ms: wall_ms,
                headers: Vec::new(),
            };
            self.append(vec![record], vec![id], None, false, false);
        }
    }

    /// Ongoing → PrepareAbort, bumping the epoch to fence the producer: a timeout
    /// (`Bump::Remember`) keeps the old epoch so a v2 producer's own EndTxn is answered
    /// with the new one; a new InitProducerId (`Bump::Fence`) does not.
    fn begin_abort(&mut self, id: &str, wall_ms: i64, bump: Bump, reply: Option<(TxnReplyId, TxnResult)>) {
        let Some(mut meta) = self.txns.get(id).cloned() else {
            return;
        };
        if meta.producer_epoch < i16::MAX - 1 {
            match bump {
                Bump::Remember => meta.bump(-1),
                Bump::Fence => {
                    meta.clear_bump();
                    meta.producer_epoch += 1;
                }
            }
        }
        meta.state = TxnState::PrepareAbort;
        meta.last_update_ms = wall_ms;
        self.write(id, meta, reply, true);
    }

    /// Serves a request, or parks it while its id is busy or its transaction ending
    /// (see the module docs).
    pub fn handle(&mut self, now: Instant, wall_ms: i64, reply: TxnReplyId, op: TxnOp) {
        match self.status {
            Status::Active => {}
            Status::Loading => {
                return self.reply(reply, TxnResult::Error(code::COORDINATOR_LOAD_IN_PROGRESS))
            }
            Status::Inactive => return self.reply(reply, TxnResult::Error(code::NOT_COORDINATOR)),
        }
        let parks = match &op {
            TxnOp::InitProducerId { transactional_id, .. }
            | TxnOp::EndTxn { transactional_id, .. }
            | TxnOp::EndTxnV2 { transactional_id, .. } => Some(transactional_id),
            TxnOp::AddPartitions {
                transactional_id,
                verify_only: false,
                ..
            } => Some(transactional_id),
            _ => None,
        };
        if let Some(id) = parks.filter(|id| self.must_wait(id) || self.parked.contains_key(*id)) {
            if self
                .parked
                .get(id.as_str())
                .is_some_and(|q| q.len() >= MAX_PARKED_PER_ID)
            {
                return self.reply(reply, TxnResult::Error(code::CONCURRENT_TRANSACTIONS));
            }
            let id = id.clone();
            return self.park(now, id, reply, op, false);
        }
        self.serve(now, wall_ms, reply, op);
    }

    /// Parks a request for `id` until it is idle (at the head of the line when `first`:
    /// a request served once already that must wait again).
    fn park(&mut self, now: Instant, id: String, reply: TxnReplyId, op: TxnOp, first: bool) {
        let deadline = now + Duration::from_millis(self.config.ending_wait_ms);
        let queue = self.parked.entry(id).or_default();
        let parked = Parked { reply, op, deadline };
        if first {
            queue.push_front(parked);
        } else {
            queue.push_back(parked);
        }
        self.metrics.parked += 1;
    }

    /// Serves a request now.
    fn serve(&mut self, now: Instant, wall_ms: i64, reply: TxnReplyId, op: TxnOp) {
        let result = match op {
            op @ TxnOp::InitProducerId { .. } => self.init_producer_id(now, wall_ms, reply, op),
            TxnOp::AddPartitions {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                verify_only,
            } => self.add_partitions(
                wall_ms,
                reply,
                &transactional_id,
                (producer_id, producer_epoch),
                partitions,
                verify_only,
            ),
            TxnOp::EndTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
            } => self.end_txn(
                wall_ms,
                reply,
                &transactional_id,
                (producer_id, producer_epoch),
                commit,
            ),
            TxnOp::EndTxnV2 {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                fresh_producer_id,
            } => self.end_txn_v2(
                wall_ms,
                reply,
                &transactional_id,
                (producer_id, producer_epoch),
                commit,
                fresh_producer_id,
            ),
            TxnOp::Describe { transactional_ids } => Some(TxnResult::Transactions(
                transactional_ids
                    .into_iter()
                    .map(|id| {
                        let meta = self.txns.get(&id).cloned();
                        TxnDescription {
                            error_code: if meta.is_some() {
                                code::NONE
                            } else {
                                code::TRANSACTIONAL_ID_NOT_FOUND
                            },
                            transactional_id: id,
                            meta,
                        }
                    })
                    .collect(),
            )),
            TxnOp::List { states, producer_ids } => Some(TxnResult::Transactions(
                self.txns
                    .iter()
                    .filter(|(_, m)| states.is_empty() || states.iter().any(|s| s == m.state.name()))
                    .filter(|(_, m)| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
                    .map(|(id, m)| TxnDescription {
                        transactional_id: id.clone(),
                        error_code: code::NONE,
                        meta: Some(m.clone()),
                    })
                    .collect(),
            )),
        };
        if let Some(result) = result {
            self.reply(reply, result);
        }
    }

    /// InitProducerId (`op`): a new id, a new epoch of a known one, or — when the id
    /// has a transaction open — its abort, the request waiting for it (parked).
    fn init_producer_id(
        &mut self,
        now: Instant,
        wall_ms: i64,
        reply: TxnReplyId,
        op: TxnOp,
    ) -> Option<TxnResult> {
        let TxnOp::InitProducerId {
            transactional_id,
            timeout_ms,
            producer_id,
            producer_epoch,
            fresh_producer_id,
        } = &op
        else {
            // Only InitProducerId is routed here.
            return Some(TxnResult::Error(code::INVALID_TXN_STATE));
        };
        let (id, timeout_ms, current, fresh_producer_id) = (
            transactional_id.as_str(),
            *timeout_ms,
            (*producer_id, *producer_epoch),
            *fresh_producer_id,
        );
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Some(TxnResult::Error(code::INVALID_TRANSACTION_TIMEOUT));
        }
        if self.busy.contains(id) {
            return Some(TxnResult::Error(code::CONCURRENT_TRANSACTIONS));
        }
        let Some(old) = self.txns.get(id).cloned() else {
            let meta = TxnMeta {
                producer_id: fresh_producer_id,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: wall_ms,
                prev_producer_id: -1,
                last_producer_epoch: -1,
                next_producer_id: -1,
            };
            let result = TxnResult::ProducerId {
                producer_id: fresh_producer_id,
                producer_epoch: 0,
            };
            self.write(id, meta, Some((reply, result)), false);
            return None;
        };
        // KIP-360: a producer naming its current id must name this id's producer (its
        // epoch may be behind, after a timeout bumped it).
        if current.0 >= 0 && (current.0 != old.producer_id || current.1 > old.producer_epoch) {
            self.metrics.fenced += 1;
            return Some(TxnResult::Error(code::PRODUCER_FENCED));
        }
        match old.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Some(TxnResult::Error(code::CONCURRENT_TRANSACTIONS))
            }
            TxnState::Ongoing => {
                // Fence the previous producer and abort its transaction; the request
                // waits for the abort to complete and is served again then.
                self.begin_abort(id, wall_ms, Bump::Fence, None);
                let id = id.to_string();
                self.park(now, id, reply, op, true);
                None
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut meta = old;
                meta.clear_bump();
                if meta.producer_epoch >= i16::MAX - 1 {
                    meta.producer_id = fresh_producer_id;
                    meta.producer_epoch = 0;
                } else {
                    meta.producer_epoch += 1;
                }
                meta.timeout_ms = timeout_ms;
                meta.state = TxnState::Empty;
                meta.partitions.clear();
                meta.start_ms = -1;
                meta.last_update_ms = wall_ms;
                let result = TxnResult::ProducerId {
                    producer_id: meta.producer_id,
                    producer_epoch: meta.producer_epoch,
                };
                self.write(id, meta, Some((reply, result)), false);
                None
            }
        }
    }

    /// The id's state if `producer` is its current producer, else the error.
    fn check_producer(&self, id: &str, producer: (i64, i16)) -> Result<TxnMeta, i16> {
        let meta = self.txns.get(id).ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        if meta.producer_id != producer.0 {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        }
        // PLANTED BUG (sim-bugs): an older epoch of the producer is accepted.
        #[cfg(feature = "sim-bugs")]
        if self.bugs.accept_stale_epoch && producer.1 <= meta.producer_epoch {
            return Ok(meta.clone());
        }
        if meta.producer_epoch != producer.1 {
            return Err(code::INVALID_PRODUCER_EPOCH);
        }
        Ok(meta.clone())
    }

    fn add_partitions(
        &mut self,
        wall_ms: i64,
        reply: TxnReplyId,
        id: &str,
        producer: (i64, i16),
        partitions: Vec<(String, i32)>,
        verify_only: bool,
    ) -> Option<TxnResult> {
        let meta = match self.checked(id, producer) {
            Ok(meta) => meta,
            Err(_) if !verify_only && self.aborted_under(id, producer) => {
                return Some(TxnResult::Error(code::TRANSACTION_ABORTABLE));
            }
            Err(code) => {
                self.metrics.verification_failures += u64::from(verify_only);
                return Some(TxnResult::Error(code));
            }
        };
        let known = meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p));
        if verify_only {
            if known {
                return Some(TxnResult::Done);
            }
            self.metrics.verification_failures += 1;
            return Some(TxnResult::Error(code::TRANSACTION_ABORTABLE));
        }
        if self.busy.contains(id) || meta.state.is_prepare() {
            return Some(TxnResult::Error(code::CONCURRENT_TRANSACTIONS));
        }
        if known {
            return Some(TxnResult::Done);
        }
        let mut meta = meta;
        if meta.state != TxnState::Ongoing {
            meta.start_ms = wall_ms;
            meta.partitions.clear();
        }
        meta.state = TxnState::Ongoing;
        meta.partitions.extend(partitions);
        meta.last_update_ms = wall_ms;
        self.write(id, meta, Some((reply, TxnResult::Done)), false);
        None
    }

    fn end_txn(
        &mut self,
        wall_ms: i64,
        reply: TxnReplyId,
        id: &str,
        producer: (i64, i16),
        commit: bool,
    ) -> Option<TxnResult> {
        let meta = match self.checked(id, producer) {
            Ok(meta) => meta,
            Err(code) => return Some(TxnResult::Error(code)),
        };
        if self.busy.contains(id) {
            return Some(TxnResult::Error(code::CONCURRENT_TRANSACTIONS));
        }
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut meta = meta;
                meta.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                meta.last_update_ms = wall_ms;
                // Answered once the decision is durable; the producer's next requests
                // wait (parked) until the markers are written.
                #[allow(unused_mut)]
                let mut answer = Some((reply, TxnResult::Done));
                // PLANTED BUG (sim-bugs): answered before the decision is durable.
                #[cfg(feature = "sim-bugs")]
                if self.bugs.answer_end_before_durable {
                    self.reply(reply, TxnResult::Done);
                    answer = None;
                }
                self.write(id, meta, answer, true);
                None
            }
            // A retry of the same decision.
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Some(TxnResult::Error(code::CONCURRENT_TRANSACTIONS))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Some(TxnResult::Done),
            _ => Some(TxnResult::Error(code::INVALID_TXN_STATE)),
        }
    }

    /// Whether `producer` names the epoch an abort bumped server-side (a timeout, or
    /// the producer's own EndTxn v5 abort): its transaction is over and an EndTxn v5
    /// abort naming that epoch is answered with the next one, so the producer can
    /// abort and go on (TRANSACTION_ABORTABLE) instead of being fenced.
    fn aborted_under(&self, id: &str, producer: (i64, i16)) -> bool {
        self.txns.get(id).is_some_and(|m| {
            m.last_producer_epoch >= 0
                && (m.prev_producer_id, m.last_producer_epoch) == producer
                && matches!(m.state, TxnState::PrepareAbort | TxnState::CompleteAbort)
        })
    }

    /// [`Self::check_producer`], counting the refusals in `fenced`.
    fn checked(&mut self, id: &str, producer: (i64, i16)) -> Result<TxnMeta, i16> {
        let checked = self.check_producer(id, producer);
        if checked.is_err() {
            self.metrics.fenced += 1;
        }
        checked
    }

    /// EndTxn v5: the decision bumps the epoch (see the module docs); answered with
    /// the producer id and epoch to use next once the transaction is complete.
    fn end_txn_v2(
        &mut self,
        wall_ms: i64,
        reply: TxnReplyId,
        id: &str,
        producer: (i64, i16),
        commit: bool,
        fresh_producer_id: i64,
    ) -> Option<TxnResult> {
        if let Some(answer) = self.retried_end(id, producer, commit) {
            return Some(answer);
        }
        let meta = match self.checked(id, producer) {
            Ok(meta) => meta,
            Err(code) => return Some(TxnResult::Error(code)),
        };
        if self.busy.contains(id) {
            return Some(TxnResult::Error(code::CONCURRENT_TRANSACTIONS));
        }
        if meta.state != TxnState::Ongoing {
            // Nothing to end: the v1 answers, with the ids to go on with.
            return match self.end_txn(wall_ms, reply, id, producer, commit) {
                Some(TxnResult::Done) => Some(TxnResult::ProducerId {
                    producer_id: meta.producer_id,
                    producer_epoch: meta.producer_epoch,
                }),
                other => other,
            };
        }
        if bump_exhausts_epochs(meta.producer_epoch) && fresh_producer_id < 0 {
            // The broker hands a fresh id whenever the bump needs one; without it the
            // epoch cannot move.
            return Some(TxnResult::Error(code::INVALID_PRODUCER_EPOCH));
        }
        let mut meta = meta;
        meta.bump(fresh_producer_id);
        meta.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        meta.last_update_ms = wall_ms;
        self.metrics.epoch_bumps += 1;
        // The ids to go on with: a fresh producer id when the bump exhausted the epochs
        // (taken at Complete*, before any parked request of the producer is served).
        let next = if meta.next_producer_id >= 0 {
            (meta.next_producer_id, 0)
        } else {
            (meta.producer_id, meta.producer_epoch)
        };
        let result = TxnResult::ProducerId {
            producer_id: next.0,
            producer_epoch: next.1,
        };
        self.write(id, meta, Some((reply, result)), true);
        None
    }

    /// The answer to an EndTxn v5 naming the epoch the producer had before the last
    /// server-side bump: a retry whose first answer was lost (or a v2 producer ending a
    /// transaction a timeout already aborted). `None` when it is not one.
    fn retried_end(&self, id: &str, producer: (i64, i16), commit: bool) -> Option<TxnResult> {
        let meta = self.txns.get(id)?;
        if meta.last_producer_epoch < 0 || (meta.prev_producer_id, meta.last_producer_epoch) != producer {
            return None;
        }
        let answer = match (meta.state, commit) {
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                TxnResult::Error(code::CONCURRENT_TRANSACTIONS)
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => TxnResult::ProducerId {
                producer_id: meta.producer_id,
                producer_epoch: meta.producer_epoch,
            },
            // The other decision was made: this producer's view is stale.
            _ => TxnResult::Error(code::PRODUCER_FENCED),
        };
        Some(answer)
    }
}
