//! [`ControllerReplica`]: one broker's member of Raft group 0 with the controller state
//! machine on top — proposals are validated commands stored as Kafka record batches;
//! committed entries are applied to [`ControllerState`]; snapshots are taken by
//! [`SnapshotPolicy`], served to followers from memory and restored when one arrives.
//!
//! Storage stays with the runtime: Raft's storage effects (append, truncate, snapshot
//! chunks, install, compaction, reads, hard state) pass through unchanged as
//! [`ControllerEffect::Raft`] and are answered with [`ControllerInput::Raft`]. Entries
//! are stored as Kafka batches: `partition::control::entry_to_batch` gives the bytes
//! (a data entry's payload already is the command's batch). The controller's own
//! write is [`ControllerEffect::WriteSnapshot`] (replace the snapshot file, fsync),
//! answered by [`ControllerInput::SnapshotDurable`]; only then is Raft told the prefix
//! may go (durability first, DESIGN.md §2).
//!
//! Start-up: the runtime hands the snapshot file (if any) and the log suffix after it
//! ([`ControllerSetup`]); the state is hydrated from the file and Raft re-applies the
//! committed suffix — never the whole history.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::command::{Command, MAX_COMMAND_BYTES};
use super::snapshot::{SnapshotFile, SnapshotPolicy, SnapshotPolicyConfig};
use super::state::{CommandError, ControllerState, Outcome};
use crate::kafka::ErrorCode;
use crate::raft::{
    ConfigChange, ConfigChangeError, Effect as RaftEffect, Entry, EntryKind, Index, Input as RaftInput,
    LogId, Membership, Message, NodeId, ProposeError, Raft, RaftConfig, ReadError, RecoveredState, Role,
    SnapshotChunkData, SnapshotMeta, Term, TransferError,
};
use crate::time::Instant;

/// Settings of the controller replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Raft timings and limits of group 0.
    pub raft: RaftConfig,
    /// When to snapshot.
    pub snapshot: SnapshotPolicyConfig,
    /// Largest snapshot accepted from disk or from a leader.
    pub max_snapshot_bytes: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            raft: RaftConfig::default(),
            snapshot: SnapshotPolicyConfig::default(),
            max_snapshot_bytes: 256 << 20,
        }
    }
}

/// What the replica is built from.
#[derive(Clone, Debug)]
pub struct ControllerSetup {
    /// This broker.
    pub node_id: NodeId,
    /// Settings.
    pub config: ControllerConfig,
    /// Group 0's initial membership (used when there is no snapshot).
    pub bootstrap: Membership,
    /// What the runtime found of the log after the snapshot, hard state and commit hint
    /// (its `snapshot` field is ignored: the file below is the snapshot).
    pub recovered: RecoveredState,
    /// The snapshot file, if one exists.
    pub snapshot_file: Option<Bytes>,
    /// Seed of Raft's election jitter.
    pub seed: u64,
}

/// Why a replica could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerInitError {
    /// The snapshot file is damaged.
    #[error("controller snapshot: {0}")]
    Snapshot(#[from] super::codec::DecodeError),
    /// Raft refused the recovered state.
    #[error("controller raft: {0}")]
    Raft(#[from] crate::raft::InitError),
}

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// This broker does not lead group 0.
    #[error("not the controller (leader: {leader:?})")]
    NotController {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// The command is invalid against the current state.
    #[error(transparent)]
    Invalid(#[from] CommandError),
    /// Raft cannot take it now (transfer, back-pressure).
    #[error("controller busy: {0}")]
    Busy(String),
    /// The replica stopped after an unrecoverable error.
    #[error("controller failed: {0}")]
    Failed(String),
}

impl ControllerError {
    /// The Kafka error code.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ControllerError::NotController { .. } => ErrorCode::NOT_CONTROLLER.0,
            ControllerError::Invalid(e) => e.kafka_error_code(),
            ControllerError::Busy(_) => ErrorCode::REQUEST_TIMED_OUT.0,
            ControllerError::Failed(_) => ErrorCode::UNKNOWN_SERVER_ERROR.0,
        }
    }
}

/// Something that happened outside the replica.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControllerInput {
    /// A message or a storage completion for Raft.
    Raft(RaftInput),
    /// The snapshot file written for `last` is durable.
    SnapshotDurable {
        /// The position it covers.
        last: LogId,
    },
    /// Writing the snapshot file for `last` failed (the old one is intact).
    SnapshotFailed {
        /// The position it would have covered.
        last: LogId,
    },
}

/// Something the runtime must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControllerEffect {
    /// A Raft effect: send, persist hard state, or a storage operation of group 0's log.
    Raft(RaftEffect),
    /// Replace the snapshot file with `data` (write to a temporary, fsync, rename), then
    /// answer [`ControllerInput::SnapshotDurable`].
    WriteSnapshot {
        /// The position it covers.
        last: LogId,
        /// The file's bytes ([`SnapshotFile`]).
        data: Bytes,
    },
}

/// Something the broker must know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControllerEvent {
    /// A committed command was applied (on every broker; the proposer answers its
    /// client from it).
    Applied {
        /// Position of the command's entry.
        at: LogId,
        /// Which command.
        command: String,
        /// What it produced, or why it changed nothing.
        result: Result<Outcome, CommandError>,
    },
    /// The state was replaced by a snapshot received from the leader.
    Restored {
        /// Its position.
        last: LogId,
    },
    /// A snapshot is durable and the log prefix it covers may go.
    SnapshotTaken {
        /// Its position.
        last: LogId,
    },
    /// Role, term or leader of group 0 changed.
    RoleChanged {
        /// Role.
        role: Role,
        /// Term.
        term: Term,
        /// Leader, if known.
        leader: Option<NodeId>,
    },
    /// The replica stopped: its state can no longer be trusted to follow the log.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A snapshot being received from the leader.
#[derive(Debug)]
struct Incoming {
    last: LogId,
    data: Vec<u8>,
}

/// Received snapshots waiting for their restore: Raft may finish receiving a newer
/// snapshot while an older one's install is still being made durable.
const MAX_RECEIVED_SNAPSHOTS: usize = 4;

/// One broker's controller. See the module docs.
#[derive(Debug)]
pub struct ControllerReplica {
    node_id: NodeId,
    config: ControllerConfig,
    raft: Raft,
    state: ControllerState,
    /// Membership in force at the last applied entry (goes into snapshots).
    membership: Membership,
    last_applied: Option<LogId>,
    policy: SnapshotPolicy,
    /// The current snapshot file, served to followers.
    snapshot: Option<(LogId, Bytes)>,
    /// A snapshot file being written: its position and bytes.
    writing: Option<(LogId, Bytes)>,
    incoming: Option<Incoming>,
    /// Fully received snapshots by position, until restored (at most
    /// [`MAX_RECEIVED_SNAPSHOTS`]).
    received: BTreeMap<(Term, Index), Bytes>,
    /// A snapshot from the leader is being installed (its install effect was emitted,
    /// its restore has not come yet): no snapshot of our own may be written meanwhile,
    /// or an older file would replace the installed one.
    installing: Option<LogId>,
    effects: VecDeque<ControllerEffect>,
    events: VecDeque<ControllerEvent>,
    failed: Option<String>,
}

impl ControllerReplica {
    /// Hydrates from the snapshot file (if any) and the recovered log suffix.
    pub fn new(now: Instant, setup: ControllerSetup) -> Result<Self, ControllerInitError> {
        let ControllerSetup {
            node_id,
            config,
            bootstrap,
            mut recovered,
            snapshot_file,
            seed,
        } = setup;
        let file = snapshot_file
            .as_ref()
            .map(|bytes| SnapshotFile::decode(bytes, config.max_snapshot_bytes))
            .transpose()?;
        recovered.snapshot = file.as_ref().map(|f| f.meta.clone());
        let raft = Raft::new(
            node_id,
            config.raft.clone(),
            bootstrap.clone(),
            recovered,
            seed,
            now,
        )?;
        let mut policy = SnapshotPolicy::new(config.snapshot);
        if file.is_some() {
            policy.on_restored(now);
        }
        let (state, membership, last_applied) = match file {
            Some(f) => (f.state, f.meta.membership, Some(f.meta.last)),
            None => (ControllerState::new(), bootstrap, None),
        };
        let mut replica = ControllerReplica {
            node_id,
            raft,
            state,
            membership,
            last_applied,
            policy,
            snapshot: last_applied.zip(snapshot_file),
            writing: None,
            incoming: None,
            received: BTreeMap::new(),
            installing: None,
            effects: VecDeque::new(),
            events: VecDeque::new(),
            failed: None,
            config,
        };
        replica.pump(now);
        Ok(replica)
    }

    // ----- queries --------------------------------------------------------------------

    /// This broker's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The applied metadata.
    pub fn state(&self) -> &ControllerState {
        &self.state
    }

    /// The Raft member of group 0.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Whether this broker is the controller (leads group 0).
    pub fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }

    /// The last applied entry (or snapshot point).
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    /// The current snapshot's position.
    pub fn snapshot_point(&self) -> Option<LogId> {
        self.snapshot.as_ref().map(|(id, _)| *id)
    }

    /// The commit offset the runtime may persist as the next start's commit hint.
    pub fn commit_hint(&self) -> Option<Index> {
        self.raft.commit_hint()
    }

    /// Why the replica stopped, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    // ----- commands -------------------------------------------------------------------

    /// Proposes `command` (controller leader only). It is validated against the
    /// applied state now, and again when applied (an earlier uncommitted command may
    /// change the answer); the outcome arrives as [`ControllerEvent::Applied`] at the
    /// returned position.
    pub fn propose(&mut self, now: Instant, command: &Command) -> Result<LogId, ControllerError> {
        if let Some(reason) = &self.failed {
            return Err(ControllerError::Failed(reason.clone()));
        }
        if !self.is_leader() {
            return Err(ControllerError::NotController {
                leader: self.raft.leader(),
            });
        }
        self.state.validate(command)?;
        let batch = command.to_batch();
        if batch.len() > MAX_COMMAND_BYTES {
            return Err(ControllerError::Invalid(CommandError {
                code: ErrorCode::INVALID_REQUEST,
                message: format!(
                    "{} encodes to {} bytes, above the {MAX_COMMAND_BYTES}-byte limit",
                    command.name(),
                    batch.len()
                ),
            }));
        }
        let result = self.raft.propose(now, batch, 1);
        self.pump(now);
        result.map_err(|e| match e {
            ProposeError::NotLeader { leader } => ControllerError::NotController { leader },
            other => ControllerError::Busy(other.to_string()),
        })
    }

    /// Proposes a change of group 0's membership (a broker joining as learner, its
    /// promotion, a removal).
    pub fn change_membership(
        &mut self,
        now: Instant,
        change: ConfigChange,
    ) -> Result<LogId, ConfigChangeError> {
        let result = self.raft.propose_config_change(now, change);
        self.pump(now);
        result
    }

    /// Hands controller leadership to `target`.
    pub fn transfer_leadership(&mut self, now: Instant, target: NodeId) -> Result<(), TransferError> {
        let result = self.raft.transfer_leadership(now, target);
        self.pump(now);
        result
    }

    /// Coalesced heartbeats of group 0 (see `raft` module docs), to be packed with the
    /// other groups' into one frame per peer (`crate::rpc`).
    pub fn take_heartbeats(&mut self, now: Instant) -> Vec<Message> {
        let heartbeats = self.raft.take_heartbeats(now);
        self.pump(now);
        heartbeats
    }

    // ----- the door -------------------------------------------------------------------

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: ControllerInput) {
        match input {
            ControllerInput::Raft(input) => self.raft.handle(now, input),
            ControllerInput::SnapshotDurable { last } => self.on_snapshot_durable(now, last),
            ControllerInput::SnapshotFailed { last } => {
                if self.writing.as_ref().is_some_and(|(id, _)| *id == last) {
                    self.writing = None;
                    self.policy.on_finished(now, false);
                }
            }
        }
        self.pump(now);
    }

    /// Runs timers (Raft's and the snapshot policy's).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.raft.poll_timeout().is_some_and(|t| t <= now) {
            self.raft.handle_timeout(now);
        }
        self.pump(now);
    }

    /// When [`ControllerReplica::handle_timeout`] wants to run. The snapshot policy's
    /// deadline counts only while a snapshot could start then (otherwise a deadline
    /// in the past would make the runtime spin).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let snapshot_deadline = self
            .snapshot_possible()
            .then(|| self.policy.poll_timeout())
            .flatten();
        [self.raft.poll_timeout(), snapshot_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a snapshot could be written now: not failed, no leader snapshot being
    /// installed, and something applied beyond the current snapshot.
    fn snapshot_possible(&self) -> bool {
        let Some(last) = self.last_applied else {
            return false;
        };
        self.failed.is_none()
            && self.installing.is_none()
            && self.snapshot_point().is_none_or(|s| s.index < last.index)
    }

    /// The next thing the runtime must do.
    pub fn poll_effect(&mut self) -> Option<ControllerEffect> {
        self.effects.pop_front()
    }

    /// The next event for the broker.
    pub fn poll_event(&mut self) -> Option<ControllerEvent> {
        self.events.pop_front()
    }

    // ----- internals ------------------------------------------------------------------

    fn pump(&mut self, now: Instant) {
        while let Some(effect) = self.raft.poll_effect() {
            self.on_raft_effect(now, effect);
        }
        self.maybe_snapshot(now);
    }

    fn on_raft_effect(&mut self, now: Instant, effect: RaftEffect) {
        match effect {
            RaftEffect::Apply { entries } => self.apply_entries(now, &entries),
            RaftEffect::ReadSnapshotChunk {
                read_id,
                snapshot,
                offset,
                max_bytes,
                ..
            } => {
                let result = self.snapshot_chunk(snapshot, offset, max_bytes);
                self.raft
                    .handle(now, RaftInput::SnapshotChunkRead { read_id, result });
            }
            RaftEffect::WriteSnapshotChunk {
                ref meta,
                offset,
                ref data,
                done,
                ..
            } => {
                self.receive_chunk(meta.last, offset, data, done);
                self.effects.push_back(ControllerEffect::Raft(effect));
            }
            RaftEffect::RestoreSnapshot { meta } => self.restore(now, &meta),
            RaftEffect::RoleChanged { role, term, leader } => {
                self.events
                    .push_back(ControllerEvent::RoleChanged { role, term, leader });
            }
            RaftEffect::CommitAdvanced { .. } => {}
            RaftEffect::InstallSnapshot { ref meta, .. } => {
                self.installing = Some(meta.last);
                self.effects.push_back(ControllerEffect::Raft(effect));
            }
            other => self.effects.push_back(ControllerEffect::Raft(other)),
        }
    }

    fn apply_entries(&mut self, now: Instant, entries: &[Entry]) {
        for entry in entries {
            if self.failed.is_some() {
                return;
            }
            assert!(
                self.last_applied.is_none_or(|a| a.index < entry.index),
                "raft applies each entry once, in order"
            );
            match entry.kind {
                EntryKind::Data => self.apply_command(now, entry),
                EntryKind::Config => match entry.membership() {
                    Ok(m) => self.membership = m,
                    Err(e) => self.fail(format!("configuration entry at {}: {e}", entry.index)),
                },
                _ => {}
            }
            self.last_applied = Some(entry.log_id());
        }
    }

    fn apply_command(&mut self, now: Instant, entry: &Entry) {
        let (command, result) = match Command::from_batch(&entry.payload) {
            Ok(command) => {
                let result = self.state.apply(entry.index, &command);
                (command.name().to_string(), result)
            }
            // The same bytes are in every broker's log, so every broker skips it alike.
            Err(e) => (
                "undecodable".to_string(),
                Err(CommandError {
                    code: ErrorCode::CORRUPT_MESSAGE,
                    message: e.to_string(),
                }),
            ),
        };
        self.policy.on_applied(now);
        self.events.push_back(ControllerEvent::Applied {
            at: entry.log_id(),
            command,
            result,
        });
    }

    fn maybe_snapshot(&mut self, now: Instant) {
        let Some(last) = self.last_applied else {
            return;
        };
        if !self.snapshot_possible() {
            return;
        }
        if !self.policy.due(now) {
            return;
        }
        let meta = SnapshotMeta {
            last,
            membership: self.membership.clone(),
        };
        let data = SnapshotFile::encode(&meta, &self.state);
        self.policy.on_started(now);
        self.writing = Some((last, data.clone()));
        self.effects
            .push_back(ControllerEffect::WriteSnapshot { last, data });
    }

    fn on_snapshot_durable(&mut self, now: Instant, last: LogId) {
        let Some((id, data)) = self.writing.take_if(|(id, _)| *id == last) else {
            return;
        };
        self.policy.on_finished(now, true);
        // An error means a newer snapshot arrived from the leader meanwhile: this one
        // is moot.
        if let Ok(meta) = self.raft.snapshot_taken(now, id.index) {
            assert_eq!(meta.last, id, "the snapshot covers an applied entry of the log");
            assert_eq!(meta.membership, self.membership, "membership tracked at apply");
            self.snapshot = Some((id, data));
            self.events.push_back(ControllerEvent::SnapshotTaken { last: id });
        }
    }

    fn snapshot_chunk(
        &self,
        snapshot: LogId,
        offset: u64,
        max_bytes: usize,
    ) -> Result<SnapshotChunkData, ReadError> {
        let Some((_, data)) = self.snapshot.as_ref().filter(|(id, _)| *id == snapshot) else {
            return Err(ReadError::SnapshotGone);
        };
        let start = usize::try_from(offset).map_err(|_| ReadError::Storage)?;
        if start > data.len() {
            return Err(ReadError::Storage);
        }
        let end = start.saturating_add(max_bytes.max(1)).min(data.len());
        Ok(SnapshotChunkData {
            data: data.slice(start..end),
            done: end == data.len(),
        })
    }

    fn receive_chunk(&mut self, last: LogId, offset: u64, data: &Bytes, done: bool) {
        if offset == 0 {
            self.incoming = Some(Incoming {
                last,
                data: Vec::new(),
            });
        }
        let max = self.config.max_snapshot_bytes;
        let Some(incoming) = self.incoming.as_mut().filter(|i| i.last == last) else {
            return;
        };
        if incoming.data.len() + data.len() > max {
            self.incoming = None;
            return;
        }
        if incoming.data.len() as u64 == offset {
            incoming.data.extend_from_slice(data);
        }
        if done {
            if let Some(whole) = self.incoming.take() {
                self.received
                    .insert((whole.last.term, whole.last.index), Bytes::from(whole.data));
            }
            while self.received.len() > MAX_RECEIVED_SNAPSHOTS {
                self.received.pop_first();
            }
        }
    }

    fn restore(&mut self, now: Instant, meta: &SnapshotMeta) {
        let key = (meta.last.term, meta.last.index);
        let Some(bytes) = self.received.remove(&key) else {
            self.fail(format!(
                "asked to restore snapshot {:?} that was not received whole",
                meta.last
            ));
            return;
        };
        // Older received snapshots will never be restored now.
        self.received.retain(|k, _| *k > key);
        if self.installing.is_some_and(|i| (i.term, i.index) <= key) {
            self.installing = None;
        }
        match SnapshotFile::decode(&bytes, self.config.max_snapshot_bytes) {
            Ok(file) if file.meta == *meta => {
                self.state = file.state;
                self.membership = file.meta.membership;
                self.last_applied = Some(meta.last);
                self.snapshot = Some((meta.last, bytes));
                self.policy.on_restored(now);
                self.events
                    .push_back(ControllerEvent::Restored { last: meta.last });
            }
            Ok(_) => self.fail(format!("snapshot {:?} names another position", meta.last)),
            Err(e) => self.fail(format!("snapshot {:?} from the leader: {e}", meta.last)),
        }
    }

    fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            self.failed = Some(reason.clone());
            self.events.push_back(ControllerEvent::Failed { reason });
        }
    }
}
