//! # Raft: one consensus group as a deterministic, sans-IO state machine
//!
//! Every partition and the controller is a Raft group; [`Raft`] is one member of one
//! group. It never does I/O, never reads a clock and draws randomness only from the seed
//! it is built with: the runtime (real or simulated) feeds it [`Input`]s and carries out
//! the [`Effect`]s it emits (DESIGN.md §2).
//!
//! ## Driving it
//!
//! ```text
//! let mut raft = Raft::new(id, RaftConfig::default(), bootstrap, recovered, seed, now)?;
//! loop {
//!     // something happened: a message arrived, a write or read completed
//!     raft.handle(now, input);
//!     // or a timer fired
//!     if raft.poll_timeout() <= Some(now) { raft.handle_timeout(now) }
//!     // commands: propose, propose_config_change, transfer_leadership, step_down,
//!     //           snapshot_taken, campaign
//!     while let Some(effect) = raft.poll_effect() { execute(effect) }
//! }
//! ```
//!
//! Always drain `poll_effect` after any call: proposals are batched until the queue is
//! drained (one `Append` write and one message per follower for many proposals).
//!
//! ## Index space
//!
//! Offsets are Kafka offsets. An [`Entry`] is one record batch covering
//! `index ..= last_index`; the next entry starts at `last_index + 1`. Log matching uses
//! the *last* offset of an entry and its term ([`LogId`]); `AppendRequest::prev` is such
//! a position, `None` meaning "before offset 0". `commit_index()` is the last offset of a
//! committed entry (Kafka high watermark = commit + 1). Term = Kafka leader epoch.
//!
//! ## Storage contract
//!
//! * The engine keeps only metadata in memory ([`LogMeta`]: snapshot point, last offset,
//!   `(term, first offset)` boundaries) and a byte-bounded cache of recent entries.
//!   Anything else it needs it asks for with [`Effect::ReadEntries`] /
//!   [`Effect::ReadSnapshotChunk`], answered by [`Input::EntriesRead`] /
//!   [`Input::SnapshotChunkRead`] quoting the [`ReadId`]; unknown, stale or duplicate
//!   answers are dropped (counted in [`RaftStats`]).
//! * Writes ([`Effect::Append`], [`Effect::Truncate`], [`Effect::WriteSnapshotChunk`],
//!   [`Effect::InstallSnapshot`]) carry increasing [`WriteId`]s, must be executed **in
//!   emission order**, and are acknowledged with [`Input::WriteDurable`] (one completion
//!   covers every earlier write). A truncation emitted after an append lowers what that
//!   append's completion can make durable, so a completion racing a truncation is safe.
//! * The hard state ([`Effect::PersistHardState`]) is acknowledged with
//!   [`Input::HardStateDurable`]. Until the current hard state is durable, **every
//!   outgoing message is held** — a vote is never granted, and no message of a new term
//!   leaves, before term and vote are on disk. A candidate counts its own vote only once
//!   durable; a follower acknowledges appends only up to its durable offset; a leader
//!   counts itself toward commit only up to its own durable offset.
//! * [`Effect::CompactLog`] allows deleting the prefix covered by a snapshot;
//!   [`Effect::Apply`] hands committed entries in order; [`Effect::RestoreSnapshot`]
//!   asks the state machine to load an installed snapshot.
//!
//! ## Recovery
//!
//! [`RecoveredState`] holds what the runtime found on disk: hard state, snapshot
//! metadata (position + membership), term boundaries and last offset of the log after
//! the snapshot, the configuration entries in that suffix (decoded by Raft itself, see
//! [`Membership::encode`]), and a commit hint, which must be a value of
//! [`Raft::commit_hint`] persisted earlier (never the raw commit offset). Writes that were not durable are simply
//! absent; the engine never assumed them.
//!
//! ## Heartbeat coalescing (many groups per node)
//!
//! With `RaftConfig::coalesced_heartbeats`, a leader's own timer no longer produces
//! heartbeats. Instead the runtime, once per heartbeat interval, calls
//! [`Raft::take_heartbeats`] on every group it leads, groups the returned small
//! [`Message`]s ([`HeartbeatRequest`]: commit offset and heartbeat round) by destination
//! node and sends
//! **one frame per peer node** holding `(group, heartbeat)` pairs. The receiving runtime
//! hands each to its group with `handle(now, Input::Message(..))`; each group answers at
//! once with a `HeartbeatResp` `Send` effect (unless its hard state is not yet durable,
//! in which case the answer follows the durability completion), which the runtime packs
//! into one reply frame per peer in the same way. So 10,000 idle groups shared by two
//! nodes cost one frame each way per interval. `take_heartbeats` also runs the leader's
//! periodic duties (retransmits, priority transfers, transfer timeouts); check-quorum and
//! recovery wake-ups still come from `poll_timeout`. The answer ([`HeartbeatResponse`])
//! echoes the round and says how far the follower has received, so an append lost on the
//! way is resent one heartbeat later instead of after `retransmit_timeout`.
//!
//! ## Snapshots
//!
//! The state machine saves a snapshot covering offsets through an applied entry's last
//! offset and calls [`Raft::snapshot_taken`]; the returned [`SnapshotMeta`] (position +
//! membership) must be stored with the snapshot, since recovery needs it. A leader streams
//! snapshots to followers whose next offset was compacted; the follower side writes chunks
//! ([`Effect::WriteSnapshotChunk`]), switches its log ([`Effect::InstallSnapshot`]) and,
//! once that is durable, restores the state machine ([`Effect::RestoreSnapshot`]).
//!
//! ## Safety and input checking
//!
//! Internal invariants are `assert!`s (on in release). External input — a message to
//! another node, from a node in no known configuration, of a stale term, malformed,
//! contradicting committed entries, or a completion nobody waits for — is dropped or
//! answered, and counted by [`DropReason`] in [`Raft::stats`]. Exceptions, following the
//! dissertation (§4.1, servers process requests without consulting their configuration):
//! a leader's append/heartbeat/snapshot from an unknown node at a current term is
//! processed, so a lagging follower can learn the configuration that added that leader;
//! and (pre-)vote requests from unknown nodes are answered, since a voter that has not
//! yet seen the configuration adding a candidate may be needed for its quorum (answers
//! from unknown nodes still count for nothing).
//!
//! ## Membership
//!
//! One voter at a time ([`membership`]); a configuration is in force on a node as soon as
//! its entry is in the node's log. A node that is no voter of its latest configuration
//! does not campaign, with one exception (dissertation §4.2.2): while the entry that
//! removed or demoted it is not known to be committed, it campaigns with the priority it
//! had before, under that latest configuration, never counting its own vote. It may hold
//! the only copy of its removal (a leader that appended it and lost its quorum), so the
//! voters still using the older configuration need its vote, and it refuses them because
//! their logs are shorter: with voters {1, 2}, leader 1 appending "remove 1" while 2 is
//! cut off would otherwise wedge the group forever. Safe because vote counting and
//! granting do not change (a quorum of the candidate's latest configuration, granted only
//! to an up-to-date log once per term), and the proofs never assume the candidate is a
//! member; elected, it commits the removal and hands over
//! (`Raft::campaign_priority`).
//!
//! ## Behaviour
//!
//! Elections with pre-vote, check-quorum and leases ([`election`]); voter priority with
//! step-wise relaxation; leadership transfer (catch up, then TimeoutNow) and forced
//! step-down ([`leader`]); pipelined appends with a per-follower window, fast
//! backtracking and throttled recovery ([`replication`]); snapshots ([`snapshot`]);
//! one-voter-at-a-time membership changes with learners ([`membership`]).

mod cache;
pub mod config;
pub mod election;
pub mod io;
pub mod leader;
pub mod log_meta;
pub mod membership;
pub mod message;
pub mod node;
mod progress;
pub mod replication;
pub mod snapshot;
pub mod stats;
pub mod types;

pub use config::{ConfigError, RaftConfig};
pub use io::{Effect, Input, ReadError, ReadTarget, SnapshotChunkData};
pub use leader::{ConfigChangeError, ProposeError, TransferError};
pub use log_meta::{LogMeta, LogMetaError};
pub use membership::{
    ChangeError, CodecError, ConfigChange, Membership, MembershipError, Priority, DEFAULT_PRIORITY,
};
pub use message::{
    AppendRequest, AppendResponse, HeartbeatRequest, HeartbeatResponse, Message, MessageBody, SnapshotChunk,
    SnapshotMeta, SnapshotResponse, VoteRequest, VoteResponse,
};
pub use node::{InitError, Raft, RecoveredState};
pub use progress::ProgressState;
pub use snapshot::SnapshotError;
pub use stats::{DropReason, RaftStats, RaftTotals};
pub use types::{
    log_up_to_date, next_after, Entry, EntryKind, HardState, Index, LogId, NodeId, ReadId, Role, Term,
    WriteId,
};
