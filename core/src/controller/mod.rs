//! # The controller: cluster metadata replicated by Raft group 0
//!
//! Every broker is a member of group 0, whose log (a Kafka-format log, like every
//! partition's) holds the metadata commands: broker registration and liveness, topic
//! creation and deletion with placement, partition count increases, topic configs,
//! partition moves, users' SCRAM credentials and producer-id blocks. Applying the
//! committed log gives every broker the same [`ControllerState`], byte for byte; a
//! snapshot of it is taken after each command (or, under rapid updates, at most
//! `max_age` later) and is the Raft snapshot of group 0, so a broker that restarts or
//! joins hydrates from it plus the log suffix.
//!
//! * [`command`] — the commands and their versioned, checksummed encoding in a batch.
//! * [`state`] — the state, validation with Kafka error codes, deterministic apply.
//! * [`placement`] — replica placement, leader priorities, the rebalance plan.
//! * [`liveness`] — the leader's broker liveness tracker (heartbeats in, liveness
//!   commands out).
//! * [`snapshot`] — the snapshot file and the policy deciding when to take one.
//! * [`replica`] — [`ControllerReplica`]: Raft ⇄ state machine glue (sans-IO).
//! * `codec` — the bounded byte reader/writer shared with [`crate::rpc`].
//!
//! ## Hosting it (what a runtime does)
//!
//! * Shard 0 of every broker hosts one [`ControllerReplica`] (group 0, all brokers
//!   voters at bootstrap; a new broker joins as a learner and is promoted).
//! * Storage effects pass through as [`ControllerEffect::Raft`]: store entries as
//!   Kafka batches (`partition::control::entry_to_batch`, base offset = entry index,
//!   leader epoch = term), answer `ReadEntries` from them, drop the prefix on
//!   `CompactLog`, write received chunks to a per-snapshot temporary file and rename
//!   it on `InstallSnapshot`. [`ControllerEffect::WriteSnapshot`] replaces
//!   `<data-dir>/oxbow/controller/0_0/snapshot` (write temporary, fsync, rename, fsync
//!   the directory), then [`ControllerInput::SnapshotDurable`].
//! * Persist [`ControllerReplica::commit_hint`] (never the log end) with the hard
//!   state; at start hand in the snapshot file and the log suffix after it.
//! * Proposals: only the leader proposes ([`ControllerError::NotController`] names the
//!   leader to forward to); the answer is the [`ControllerEvent::Applied`] at the
//!   returned position — a different term at that offset means the proposal was lost.
//! * Every applied change is in [`ControllerReplica::state`]: the broker reconciles its
//!   partitions (create, delete, move replicas; Raft priorities from
//!   [`placement::voter_priorities`]) against it.

pub(crate) mod codec;
pub mod command;
pub mod liveness;
pub mod placement;
pub mod replica;
pub mod snapshot;
pub mod state;

pub use codec::DecodeError;
pub use command::{
    BrokerId, BrokerRegistration, Command, CommandDecodeError, ScramCredential, ScramMechanism,
};
pub use liveness::LivenessTracker;
pub use placement::{place, rebalance_plan, voter_priorities, PlacementError, Transfer};
pub use replica::{
    ControllerConfig, ControllerEffect, ControllerError, ControllerEvent, ControllerInitError,
    ControllerInput, ControllerReplica, ControllerSetup,
};
pub use snapshot::{SnapshotFile, SnapshotPolicy, SnapshotPolicyConfig};
pub use state::{BrokerInfo, CommandError, ControllerState, Outcome, PartitionAssignment};
