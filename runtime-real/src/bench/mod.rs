//! Benchmarks of the real runtime, each a plain function returning a report that the
//! `oxbow bench …` command (or a `cargo bench` target) prints and files under
//! `bench-reports/`.
//!
//! * [`log_append`] — raw `O_DIRECT` write+`fdatasync` bandwidth of the disk against the
//!   log's own append bandwidth with the same batch size and sync policy.
//! * [`limits`] — the machine's ceilings: write+`fdatasync`, direct reads, loopback TCP.
//! * [`client_bench`] — a Kafka client load ([`load`], over the rskafka client) against
//!   a broker and optionally a peer, measured against [`limits`] in the same run, with
//!   HDR latency ([`latency`]), CSV and an SVG plot ([`svg`]), and the broker's CPU and
//!   memory ([`proc_stats`]) and its own `fdatasync` latency over the window
//!   ([`broker_metrics`]); [`nodelay`] works around the client's Nagle stalls.
//! * [`scale`] — many partitions on one node: memory per partition and idle CPU.
//! * [`tier_bench`] — tiered storage: upload lag and remote-read throughput against the
//!   object store's raw put and ranged-get rates.
//! * [`command`] — the `oxbow bench …` subcommands and their flags.

pub mod broker_metrics;
pub mod client_bench;
pub mod command;
pub mod latency;
pub mod limits;
pub mod load;
pub mod log_append;
pub mod nodelay;
pub mod proc_stats;
mod raw_disk;
mod report;
pub mod scale;
pub mod svg;
pub mod tier_bench;

pub use log_append::{run_log_bench, BenchError, BenchReport, BenchRow, LogBenchOptions};
