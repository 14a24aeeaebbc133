//! # oxbow-runtime-sim
//!
//! A deterministic discrete-event simulator that drives Oxbow's sans-IO `core` state
//! machines through seeded faults (after FoundationDB's simulator and TigerBeetle's VOPR).
//!
//! ## The determinism contract
//!
//! * One virtual clock ([`engine::EventQueue`]); nothing reads the wall clock except the
//!   speed report of a sweep.
//! * One seed per run; every subsystem draws from its own named stream
//!   ([`rng::Seeds::stream`]), so adding a fault kind does not reshuffle the others.
//! * No hash-map iteration reaches a decision or the trace: `BTreeMap` everywhere.
//! * Threads only across seeds in a sweep; a run is single-threaded.
//! * Same seed + same code ⇒ same trace hash ([`trace::Trace`]).
//!
//! ## Modules
//!
//! * [`engine`], [`rng`], [`trace`], [`dist`] — the event loop and its inputs.
//! * [`disk`] — simulated disks; [`net`] — simulated network; [`objstore`] — simulated
//!   object store; [`process`] — node clocks, pauses, crashes.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod checker;
pub mod cluster;
pub mod core_replica;
pub mod coverage;
pub mod disk;
pub mod dist;
pub mod engine;
pub mod history;
pub mod log_disk;
pub mod model_raft;
pub mod net;
pub mod objstore;
pub mod process;
pub mod replica;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod store;
pub mod sweep;
pub mod trace;
