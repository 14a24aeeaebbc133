//! `oxbow-log-writer DATA_DIR`: appends batches to partition `crash/0` through the real
//! runtime's direct-I/O storage, syncing with group commit, and prints
//! `durable <last offset>` each time more becomes durable — the acknowledgement a
//! producer with acks=all would get. It runs until killed.

use bytes::Bytes;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::{LogConfig, LogEvent};
use oxbow_runtime_real::clock::MonotonicClock;
use oxbow_runtime_real::storage::{open_partition_log, BufferPool, PoolConfig};
use oxbow_tests::{writer_value, WRITER_RECORDS_PER_BATCH};
use std::io::Write as _;

fn batch(number: u64) -> Bytes {
    let records: Vec<NewRecord> = (0..WRITER_RECORDS_PER_BATCH)
        .map(|i| NewRecord::value(writer_value(number, i), 1_700_000_000_000 + number as i64))
        .collect();
    build_batch(&records, BatchOptions::default())
}

fn main() -> anyhow::Result<()> {
    let data_dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: oxbow-log-writer DATA_DIR"))?;
    let clock = MonotonicClock::start();
    let pool = BufferPool::new(PoolConfig::default())?;
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        ..LogConfig::default()
    };
    let (mut log, _) = open_partition_log(data_dir.as_ref(), "crash", 0, 1, config, pool, clock.now())?;
    let mut next_batch = log.log().next_offset() as u64 / WRITER_RECORDS_PER_BATCH;
    let mut stdout = std::io::stdout().lock();
    loop {
        // Queue a few batches, ask for one sync covering them all, run the disk work.
        for _ in 0..3 {
            log.log_mut().append(clock.now(), 1, batch(next_batch))?;
            next_batch += 1;
        }
        log.log_mut().sync();
        log.pump(clock.now());
        while let Some(event) = log.log_mut().poll_event() {
            match event {
                LogEvent::Durable { last_offset } => writeln!(stdout, "durable {last_offset}")?,
                LogEvent::AppendsFailed { error, .. } => anyhow::bail!("append failed: {error}"),
                _ => {}
            }
        }
        stdout.flush()?;
    }
}
