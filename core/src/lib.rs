//! # oxbow-core
//!
//! Every piece of Oxbow that decides something — the storage log, Raft, the broker,
//! the cluster controller and its RPC frames, consumer groups, transactions, tiering —
//! lives here as a deterministic, sans-IO state machine.
//!
//! ## The determinism contract
//!
//! * Core never reads a clock: time arrives as [`time::Instant`] arguments.
//! * Core never draws global randomness: a seeded RNG is handed in at construction.
//! * Core never spawns threads, never touches files or sockets: it emits *effects*
//!   (write these bytes, fsync, send this message) and is told of their *completions*.
//! * Core never iterates a hash map where the order could leak into an output: it uses
//!   `BTreeMap`/`BTreeSet` or sorts.
//! * Anything that depends on durability (a vote, an acknowledgement) is emitted only
//!   after the runtime has reported the write durable.
//!
//! `core/clippy.toml` forbids the offending APIs and `tests/determinism.rs` scans the
//! sources, so a violation fails the build's checks rather than a seed, months later.
//! Invariants are `assert!`s that stay on in release builds; input from outside (a
//! client frame, a peer message, a file on disk) is never a panic, always an error value.

#![deny(clippy::unwrap_used)]
#![deny(clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod broker;
pub mod controller;
pub mod group;
pub mod kafka;
pub mod log;
pub mod partition;
pub mod raft;
pub mod rpc;
pub mod tier;
pub mod time;
pub mod txn;
