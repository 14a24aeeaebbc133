//! The per-shard key-value log: durability across reopen, torn tails cut, damage to
//! synced records refused, compaction bounded and crash-safe.

use oxbow_core::raft::HardState;
use oxbow_runtime_real::shard::kv::{
    decode_hard_state, encode_hard_state, kv_path, KvConfig, KvError, KvLog,
};
use std::io::Write as _;

fn open(dir: &std::path::Path) -> (KvLog, oxbow_runtime_real::shard::kv::KvRecovery) {
    KvLog::open(dir, 0, KvConfig::default()).unwrap()
}

#[test]
fn flushed_records_survive_reopen_and_the_last_write_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (mut kv, recovery) = open(dir.path());
    assert_eq!(recovery.records, 0);
    kv.put("kafka/a/0_1", b"one").unwrap().unwrap();
    kv.put("kafka/a/1_1", b"two").unwrap().unwrap();
    kv.put("kafka/a/0_1", b"three").unwrap().unwrap();
    kv.delete("kafka/a/1_1").unwrap().unwrap();
    assert!(kv.has_pending());
    kv.flush().unwrap();
    assert_eq!(kv.stats().flushes, 1, "one fdatasync for all four changes");
    kv.put("kafka/b/0_1", b"unflushed").unwrap().unwrap();
    drop(kv); // a crash: the unflushed change is lost, nothing else
    let (kv, recovery) = open(dir.path());
    assert_eq!(recovery.records, 4);
    assert_eq!(recovery.torn_bytes, 0);
    assert_eq!(kv.get("kafka/a/0_1").unwrap().as_ref(), b"three");
    assert!(kv.get("kafka/a/1_1").is_none());
    assert!(kv.get("kafka/b/0_1").is_none());
}

#[test]
fn a_torn_tail_is_cut_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let (mut kv, _) = open(dir.path());
    kv.put("p0", b"durable").unwrap().unwrap();
    kv.flush().unwrap();
    let durable_len = kv.file_bytes();
    kv.put("p1", b"the torn one").unwrap().unwrap();
    kv.flush().unwrap();
    let full = std::fs::read(kv_path(dir.path(), 0)).unwrap();
    drop(kv);
    for cut in durable_len as usize..full.len() {
        std::fs::write(kv_path(dir.path(), 0), &full[..cut]).unwrap();
        let (kv, recovery) = open(dir.path());
        assert_eq!(recovery.torn_bytes, (cut - durable_len as usize) as u64);
        assert_eq!(kv.get("p0").unwrap().as_ref(), b"durable");
        assert!(kv.get("p1").is_none());
        assert_eq!(
            std::fs::metadata(kv_path(dir.path(), 0)).unwrap().len(),
            durable_len
        );
    }
    // Garbage appended after a clean end is a torn tail too.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(kv_path(dir.path(), 0))
        .unwrap();
    file.write_all(&[0xAB; 37]).unwrap();
    let (_, recovery) = open(dir.path());
    assert_eq!(recovery.torn_bytes, 37);
}

#[test]
fn damage_before_valid_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut kv, _) = open(dir.path());
    kv.put("p0", b"first").unwrap().unwrap();
    kv.put("p1", b"second").unwrap().unwrap();
    kv.flush().unwrap();
    drop(kv);
    let path = kv_path(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x40; // inside the first record's body
    std::fs::write(&path, &bytes).unwrap();
    match KvLog::open(dir.path(), 0, KvConfig::default()) {
        Err(KvError::Corrupt { position, .. }) => assert_eq!(position, 0),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn compaction_bounds_the_file_and_keeps_every_live_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = KvConfig {
        compact_min_bytes: 4096,
        compact_ratio: 2,
        ..KvConfig::default()
    };
    let (mut kv, _) = KvLog::open(dir.path(), 3, config).unwrap();
    for round in 0u64..2000 {
        let key = format!("kafka/t/{}_0", round % 10);
        let hs = HardState {
            term: round,
            vote: (round % 3 != 0).then_some(round % 5),
        };
        kv.put(&key, &encode_hard_state(&hs)).unwrap().unwrap();
        kv.flush().unwrap();
        assert!(
            kv.file_bytes() <= 4096 + 64,
            "file stays bounded: {}",
            kv.file_bytes()
        );
    }
    assert!(kv.stats().compactions > 10);
    // A leftover temporary file of an interrupted compaction is ignored and removed.
    std::fs::write(dir.path().join("shard-3.kv.tmp"), b"half a compaction").unwrap();
    drop(kv);
    let (kv, recovery) = KvLog::open(dir.path(), 3, config).unwrap();
    assert!(recovery.removed_tmp);
    assert_eq!(kv.entries().count(), 10);
    for slot in 0..10u64 {
        let round = 1990 + slot;
        let hs = decode_hard_state(kv.get(&format!("kafka/t/{slot}_0")).unwrap()).unwrap();
        assert_eq!(hs.term, round);
        assert_eq!(hs.vote, (round % 3 != 0).then_some(round % 5));
    }
}

#[test]
fn limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let config = KvConfig {
        max_pending_bytes: 100,
        ..KvConfig::default()
    };
    let (mut kv, _) = KvLog::open(dir.path(), 0, config).unwrap();
    assert!(matches!(
        kv.put(&"k".repeat(2000), b""),
        Err(KvError::TooLarge { .. })
    ));
    kv.put("a", &[0; 60]).unwrap().unwrap();
    assert!(
        kv.put("b", &[0; 60]).unwrap().is_err(),
        "buffer full: flush first"
    );
    kv.flush().unwrap();
    kv.put("b", &[0; 60]).unwrap().unwrap();
    assert!(decode_hard_state(b"short").is_none());
}
