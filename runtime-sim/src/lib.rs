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
//! ## What a run is
//!
//! [`run::run_seed`] turns a seed and a [`scenario::Scenario`] into one run of a
//! [`cluster::Cluster`]: N nodes running **core's Raft** ([`core_replica`]) — or the
//! simulator's small reference Raft ([`model_raft`]), which hosts Raft-level planted
//! bugs — with each node's log stored by **core's `Log`** on its own simulated disk
//! ([`store`], [`log_disk`]), and Raft's reads of old entries served by core's log read
//! path from that disk. Clients write and read ([`history`]); a nemesis injects the
//! scenario's faults; the [`checker`]s watch every step; a safety phase is followed by a
//! liveness phase. The result carries the first broken invariant, the trace hash and the
//! "sometimes" [`coverage`] counters; [`sweep`] runs many seeds on threads.
//!
//! ## Modules
//!
//! * [`engine`], [`rng`], [`trace`], [`dist`] — the event loop and its inputs.
//! * [`disk`] — simulated disks (synced vs unsynced data, crashes that tear writes, bit
//!   rot, ENOSPC, slow fsync); [`log_disk`] — core's `LogEffect`s executed on them.
//! * [`net`] — the network (latency, loss, duplication, reordering, partitions, held and
//!   slow links); [`objstore`] — an object store for tiering (errors, timeouts, partial
//!   uploads); [`process`] — node clocks (drift, jumps), pauses, crashes.
//! * [`replica`] — the door between driver and Raft; [`core_replica`], [`model_raft`].
//! * [`store`] — a node's durable storage; [`cluster`] — the driver; [`checker`],
//!   [`history`], [`coverage`] — what is checked and counted.
//! * [`scenario`] — scenario files and swarm testing; [`run`], [`sweep`] — running seeds.
//! * [`tier_sim`] — tiered storage: core's `tier::Archiver` and `RemoteReader` over a
//!   partition log (core's `Log`) and the faulty [`objstore`], with its own checkers.
//! * [`broker_sim`] — whole core brokers in cluster mode (controller, partitions as
//!   Raft groups, RPC frames) with Kafka-wire clients and the metadata, queue and Raft
//!   checkers; [`controller_store`] — the controller's storage model it shares with
//!   [`controller_sim`].
//! * [`group_sim`] — consumer groups: core's group `Coordinator` hosted on the leader of
//!   the cluster's last Raft group, simulated consumers of both protocols, four checkers.
//! * [`txn_sim`] — transactions: core's `TxnCoordinator` on a replicated state partition
//!   and data partitions of core's `partition::Replica`, transactional producers (with
//!   zombies and timeouts) and `read_committed` consumers, checked for Jepsen's anomalies.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod broker_sim;
pub mod checker;
pub mod cluster;
pub mod controller_sim;
pub mod controller_store;
pub mod core_replica;
pub mod coverage;
pub mod disk;
pub mod dist;
pub mod engine;
pub mod group_sim;
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
pub mod tier_sim;
pub mod trace;
pub mod txn_sim;
