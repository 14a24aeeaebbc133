//! A real process appending through the direct-I/O storage is killed with SIGKILL in
//! the middle of its stream; recovery must return every batch it reported durable,
//! with contiguous offsets, and the log must accept appends afterwards. Repeated over
//! several kills so the crash lands at different points.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_core::log::batch::iter_batches;
use oxbow_core::log::records::parse_uncompressed_records;
use oxbow_core::log::LogConfig;
use oxbow_runtime_real::clock::MonotonicClock;
use oxbow_runtime_real::storage::{open_partition_log, BufferPool, PoolConfig};
use oxbow_tests::{writer_value, WRITER_RECORDS_PER_BATCH};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs the writer until it has acknowledged past `at_least`, kills it, and returns
/// the highest durable offset it reported.
fn run_writer_and_kill(data_dir: &std::path::Path, at_least: i64) -> i64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow-log-writer"))
        .arg(data_dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acknowledged = -1;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(offset) = line.strip_prefix("durable ") {
            acknowledged = offset.parse().unwrap();
            if acknowledged >= at_least {
                break;
            }
        }
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    acknowledged
}

#[test]
fn every_acknowledged_batch_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = -1;
    for round in 1..=4 {
        acknowledged = run_writer_and_kill(dir.path(), acknowledged + 400 * round);
        assert!(acknowledged > 0, "the writer acknowledged something");

        let clock = MonotonicClock::start();
        let pool = BufferPool::new(PoolConfig::default()).unwrap();
        let config = LogConfig {
            segment_bytes: 1024 * 1024,
            ..LogConfig::default()
        };
        let (mut log, report) =
            open_partition_log(dir.path(), "crash", 0, 1, config, pool, clock.now()).unwrap();
        assert!(
            log.log().next_offset() > acknowledged,
            "round {round}: log ends at {} but {acknowledged} was acknowledged ({report:?})",
            log.log().next_offset()
        );
        // Read everything back: contiguous offsets, the values the writer wrote.
        let mut expected = 0i64;
        let bytes = log.read(0, u64::MAX / 4, i64::MAX).unwrap();
        for (at, header) in iter_batches(&bytes) {
            assert_eq!(header.base_offset, expected, "round {round}: offsets contiguous");
            let records = bytes.slice(at + 61..at + header.size_bytes());
            for record in parse_uncompressed_records(&records, header.record_count).unwrap() {
                let offset = header.base_offset + record.offset_delta;
                let batch = offset as u64 / WRITER_RECORDS_PER_BATCH;
                let index = offset as u64 % WRITER_RECORDS_PER_BATCH;
                assert_eq!(record.value.unwrap(), writer_value(batch, index).as_bytes());
            }
            expected = header.next_offset();
        }
        assert_eq!(expected, log.log().next_offset());
        log.close(clock.now()).unwrap();
    }
}
