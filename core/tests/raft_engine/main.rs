//! Tests of the Raft engine: a deterministic multi-node harness, per-handler unit tests,
//! data-driven scenarios (insta snapshots), property tests over many seeds and the gray
//! failure (slow follower) latency test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

mod harness;
#[path = "basic.rs"]
mod raft_basic;
#[path = "gray.rs"]
mod raft_gray;
#[path = "handlers.rs"]
mod raft_handlers;
#[path = "props.rs"]
mod raft_props;
#[path = "scenario.rs"]
mod raft_scenario;
