//! # oxbow-runtime-real
//!
//! The real runtime: it executes what core's state machines ask for on real hardware.
//!
//! * [`storage`] — direct-I/O segment files, the aligned buffer pool and the executor of
//!   the log's disk effects.
//! * [`config`] — the node's TOML configuration and command-line overrides.
//! * [`node`] — a node: its locked data directory, recovered partition logs, shutdown.
//! * [`shard`] — shard threads: the io_uring reactor, SMP queues, the per-shard
//!   key-value log.
//! * [`admin`] — the admin HTTP listener: health and Prometheus metrics.
//! * [`clock`] — real clocks converted into core's time inputs.
//! * [`cli`], [`client`] — the client commands (`topic`, `produce`, `consume`,
//!   `cluster`) over a small synchronous Kafka client.
//! * [`tune`] — `oxbow tune`: inspects and tunes the machine, journaled and revertible.
//! * [`bench`] — benchmarks behind `oxbow bench …` ([`bench::run_log_bench`]).

// Library code never unwraps; unit tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod admin;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod controller_store;
pub mod node;
pub mod shard;
pub mod storage;
pub mod tune;
