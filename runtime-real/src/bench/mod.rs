//! Benchmarks of the real runtime, each a plain function returning a report that the
//! `oxbow bench …` command (or a `cargo bench` target) prints and files under
//! `bench-reports/`.
//!
//! * [`log_append`] — raw `O_DIRECT` write+`fdatasync` bandwidth of the disk against the
//!   log's own append bandwidth with the same batch size and sync policy.

pub mod log_append;
mod report;

pub use log_append::{run_log_bench, BenchError, BenchReport, BenchRow, LogBenchOptions};
