//! Shards: one pinned thread per core, each running its own single-threaded event loop
//! on io_uring around core's per-shard broker.
//!
//! * [`net`] — the io_uring reactor: the shard's Kafka listener (`SO_REUSEPORT`), its
//!   connections, the doorbell, timed waits.
//! * [`disk_ring`] — the shard's segment writes, `fdatasync`s and fetch reads on the
//!   reactor's ring.
//! * [`file_worker`] — the shard's helper thread for checkpoint, state-file and index
//!   writes (their `fdatasync`, `rename` and directory `fsync` off the event loop).
//! * [`frame_pool`] — the shard's reused buffers for large request frames.
//! * [`fetch_reads`] — the broker's range reads in flight on the ring, until each
//!   request has all its ranges back.
//! * [`smp`] — bounded lock-free SPSC queues between every pair of shards, and the
//!   `eventfd` doorbells that wake them.
//! * [`kv`] — the per-shard key-value log holding each partition's Raft hard state.
//! * `hard_states` — hard states on their way to that log, queued in order while its
//!   buffer is full.
//! * [`affinity`] — pinning a thread to a core.
//! * [`budget`] — the shard's memory budget and the admission of request bytes.
//! * [`cluster_link`] — the shard's side of the cluster: peer frames, the controller's
//!   storage.
//! * [`store`] — the node's object-store helper thread (tiered storage) and each
//!   shard's bounded queues to it.

pub mod affinity;
pub mod budget;
pub mod cluster_link;
pub mod disk_ring;
pub mod fetch_reads;
pub mod file_worker;
pub mod frame_pool;
mod hard_states;
pub mod kv;
pub mod net;
pub mod runtime;
pub mod smp;
pub mod store;
