//! Tests of the Raft engine: a deterministic multi-node harness, per-handler unit tests,
//! data-driven scenarios (insta snapshots), property tests over many seeds and the gray
//! failure (slow follower) latency test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

mod basic;
mod gray;
mod handlers;
mod harness;
mod props;
mod scenario;
