//! A partition replica: a Raft group member whose log is the partition's Kafka log,
//! plus (as they land) the state machines that read it — producer state, group and
//! transaction coordinators (DESIGN.md §7).
//!
//! * [`replica`] — [`Replica`]: Raft ⇄ log glue, produce acknowledgements, high
//!   watermark, reads for followers.
//! * [`control`] — Raft's no-op and configuration entries as Kafka control batches.
//! * [`producers`] — the replica's producer state, fed by its log (idempotence).
//! * [`snapshot`] — the snapshot a leader sends a follower behind its retained log.

pub mod control;
pub mod producers;
pub mod replica;
pub mod snapshot;

pub use replica::{
    Acks, ProduceError, ProduceToken, ReadToken, Replica, ReplicaEffect, ReplicaEvent, ReplicaInput,
    ReplicaSetup,
};
