//! Property test of the log: random appends, term changes, syncs, partially executed
//! effects, truncations, retention, DeleteRecords and crashes with torn writes. After
//! every recovery the log must be a prefix of what was written, hold every batch that
//! was durable before the crash, keep offsets contiguous, and agree with a full scan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_support;

use log_support::{batch, small_config, Harness};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Append {
        new_term: bool,
        count: usize,
        pad_bytes: usize,
    },
    Sync,
    /// Hold effects (they are executed only by `RunHeld` or lost in a crash).
    Hold,
    RunHeld(usize),
    /// Truncate at the start of one of the last few batches.
    Truncate(usize),
    Retention,
    DeleteRecords(usize),
    Crash(usize),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1..5usize, 0..6000usize).prop_map(|(count, pad_bytes)| Op::Append { new_term: false, count, pad_bytes }),
        1 => (1..5usize, 0..6000usize).prop_map(|(count, pad_bytes)| Op::Append { new_term: true, count, pad_bytes }),
        4 => Just(Op::Sync),
        2 => Just(Op::Hold),
        3 => (0..8usize).prop_map(Op::RunHeld),
        1 => (0..6usize).prop_map(Op::Truncate),
        1 => Just(Op::Retention),
        1 => (0..10usize).prop_map(Op::DeleteRecords),
        2 => (0..400usize).prop_map(Op::Crash),
        2 => Just(Op::Tick),
    ]
}

/// What the log logically holds, per offset.
#[derive(Default, Debug)]
struct Model {
    values: BTreeMap<i64, String>,
    next_tag: usize,
    /// Every value ever appended at each offset (a crash may bring back a batch whose
    /// truncation had not reached the disk — never one that was not written there).
    ever: BTreeMap<i64, BTreeSet<String>>,
    /// Base offsets of appended batches, for choosing truncation points.
    bases: Vec<i64>,
}

impl Model {
    fn value_at(&self, offset: i64) -> Option<&String> {
        self.values.get(&offset)
    }
    fn truncate(&mut self, offset: i64) {
        self.values.split_off(&offset);
        self.bases.retain(|b| *b < offset);
    }
}

/// Base offsets of every batch in the log's files.
fn batch_bases(h: &Harness) -> BTreeMap<i64, ()> {
    let mut bases = BTreeMap::new();
    for segment in h.log.segments() {
        let bytes = h.disk.read(segment.id, 0, segment.size_bytes);
        for (_, header) in oxbow_core::log::batch::iter_batches(&bytes) {
            bases.insert(header.base_offset, ());
        }
    }
    bases
}

fn run(ops: Vec<Op>) {
    let mut config = small_config();
    config.retention_bytes = Some(1024 * 1024);
    config.checkpoint_interval_ms = 50;
    let mut h = Harness::new(config);
    let mut model = Model::default();
    let mut term = 1;
    for op in ops {
        match op {
            Op::Append {
                new_term,
                count,
                pad_bytes,
            } => {
                if new_term {
                    term += 1;
                }
                model.next_tag += 1;
                let tag = format!("{}-{}", model.next_tag, "p".repeat(pad_bytes));
                let expected_base = h.log.next_offset();
                let info = h.log.append(h.now, term, batch(&tag, count, 5)).unwrap();
                let values: Vec<String> = (0..count).map(|i| format!("{tag}-{i}")).collect();
                assert_eq!(info.base_offset, expected_base);
                for (i, value) in values.iter().enumerate() {
                    model
                        .ever
                        .entry(info.base_offset + i as i64)
                        .or_default()
                        .insert(value.clone());
                }
                for (i, value) in values.into_iter().enumerate() {
                    model.values.insert(info.base_offset + i as i64, value);
                }
                model.bases.push(info.base_offset);
            }
            Op::Sync => {
                h.log.sync();
            }
            Op::Hold => h.hold = true,
            Op::RunHeld(n) => {
                for _ in 0..n {
                    let Some(effect) = h.held.pop_front() else { break };
                    for completion in h.disk.execute(effect) {
                        h.log.handle_completion(h.now, completion);
                    }
                }
                if h.held.is_empty() {
                    h.hold = false;
                }
            }
            Op::Truncate(back) => {
                let candidates: Vec<i64> = model.bases.iter().rev().take(6).copied().collect();
                if let Some(&offset) = candidates.get(back) {
                    if offset >= h.log.start_offset() {
                        h.log.truncate(h.now, offset).unwrap();
                        model.truncate(offset);
                    }
                }
            }
            Op::Retention => {
                h.log.enforce_retention(h.now, 0, i64::MAX);
            }
            Op::DeleteRecords(k) => {
                let target = (h.log.start_offset() + k as i64).min(h.log.next_offset());
                h.log.delete_records(h.now, target).unwrap();
            }
            Op::Tick => {
                h.now += Duration::from_millis(60);
                h.log.handle_timeout(h.now);
            }
            Op::Crash(torn) => {
                let durable = h.log.durable_offset();
                let start_before = h.log.start_offset();
                h.crash(torn);
                h.recover().unwrap();
                let start = h.log.start_offset().max(start_before);
                // Every durable offset is back with the value it had; everything else
                // recovered was written at that offset at some point.
                let recovered = h.fetch_all(h.log.start_offset());
                for (offset, value) in &recovered {
                    let written = model.ever.get(offset).is_some_and(|v| v.contains(value));
                    assert!(written, "offset {offset} holds {value:.20}, never written there");
                    if *offset <= durable {
                        assert_eq!(
                            model.value_at(*offset),
                            Some(value),
                            "durable offset {offset} changed"
                        );
                    }
                }
                let end = h.log.next_offset();
                assert!(
                    end > durable,
                    "durable offset {durable} lost; log ends before {end}"
                );
                for offset in start..=durable {
                    assert!(
                        recovered.iter().any(|(o, _)| *o == offset),
                        "durable offset {offset} missing"
                    );
                }
                // The model becomes what recovery found.
                model.values = recovered.into_iter().collect();
                model.bases = batch_bases(&h).into_keys().collect();
                h.check_against_scan();
                continue;
            }
        }
        h.pump();
    }
    h.release();
    h.check_against_scan();
    let all = h.fetch_all(h.log.start_offset());
    for (offset, value) in &all {
        assert_eq!(model.value_at(*offset), Some(value));
    }
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=20000 for a long run.
    #[test]
    fn recovered_log_is_a_prefix_holding_every_durable_batch(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops);
    }
}

#[test]
fn regression_truncate_while_held_then_crash() {
    run(vec![
        Op::Append {
            new_term: false,
            count: 1,
            pad_bytes: 0,
        },
        Op::Sync,
        Op::Append {
            new_term: false,
            count: 1,
            pad_bytes: 0,
        },
        Op::Hold,
        Op::Append {
            new_term: false,
            count: 1,
            pad_bytes: 0,
        },
        Op::Append {
            new_term: false,
            count: 1,
            pad_bytes: 0,
        },
        Op::Append {
            new_term: false,
            count: 1,
            pad_bytes: 0,
        },
        Op::Truncate(3),
        Op::Crash(72),
    ]);
}

#[test]
fn regression_delete_records_past_unsynced_data_then_crash() {
    let a = |count| Op::Append {
        new_term: false,
        count,
        pad_bytes: 0,
    };
    run(vec![
        a(1),
        Op::Sync,
        a(1),
        a(1),
        a(2),
        a(1),
        a(1),
        Op::DeleteRecords(3),
        a(1),
        Op::Tick,
        a(1),
        Op::Crash(0),
        a(1),
        a(1),
    ]);
}

#[test]
fn regression_truncate_across_a_term_then_torn_crash() {
    let a = |count| Op::Append {
        new_term: false,
        count,
        pad_bytes: 0,
    };
    run(vec![
        a(1),
        a(1),
        a(1),
        a(1),
        a(1),
        Op::Append {
            new_term: true,
            count: 1,
            pad_bytes: 0,
        },
        a(1),
        Op::Sync,
        Op::Crash(0),
        Op::Truncate(2),
        Op::Append {
            new_term: false,
            count: 1,
            pad_bytes: 69,
        },
        Op::Crash(1),
    ]);
}

#[test]
fn regression_delete_records_removes_the_durable_segment() {
    let a = |count, pad_bytes| Op::Append {
        new_term: false,
        count,
        pad_bytes,
    };
    run(vec![
        a(1, 0),
        Op::Append {
            new_term: true,
            count: 1,
            pad_bytes: 0,
        },
        Op::Sync,
        Op::Truncate(0),
        a(1, 124),
        Op::Hold,
        a(1, 0),
        a(1, 0),
        a(1, 0),
        Op::DeleteRecords(1),
        Op::RunHeld(1),
        Op::RunHeld(2),
        Op::RunHeld(1),
        Op::Crash(0),
    ]);
}

#[test]
fn regression_delete_records_on_unsynced_data_then_torn_crash() {
    run(vec![
        Op::Append {
            new_term: false,
            count: 4,
            pad_bytes: 0,
        },
        Op::DeleteRecords(1),
        Op::Hold,
        Op::Crash(105),
    ]);
}
