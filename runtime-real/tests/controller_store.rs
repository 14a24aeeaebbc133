//! The controller's durable storage (`controller_store`) on real files: a single-voter
//! controller replica driven through it recovers its metadata after a restart (from
//! the snapshot file plus the log suffix), its log file shrinks to the suffix after a
//! snapshot; torn tails are cut, damaged synced records refused, truncation and
//! snapshot installs from a leader (also interrupted ones) land on disk; a 3-voter
//! group in memory catches a lagging follower up through an InstallSnapshot written
//! by the store. Deterministic: time is core's `Instant`, advanced by hand.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use oxbow_core::controller::{
    place, BrokerRegistration, Command, ControllerConfig, ControllerEffect, ControllerEvent, ControllerInput,
    ControllerReplica, ControllerState, SnapshotFile,
};
use oxbow_core::raft::{
    Effect as RaftEffect, Entry, HardState, Input as RaftInput, LogId, Membership, Message, ReadError,
    ReadId, ReadTarget, SnapshotMeta, WriteId,
};
use oxbow_core::time::Instant;
use oxbow_runtime_real::controller_store::{
    controller_dir, ControllerStore, ControllerStoreError, ControllerStoreLimits, Executed, Recovered,
    LOG_FILE, SNAPSHOT_FILE, STATE_FILE,
};

const TICK: Duration = Duration::from_millis(10);

// ----- a single node driven through the store -----------------------------------------

struct Node {
    id: u64,
    store: ControllerStore,
    replica: ControllerReplica,
    now: Instant,
    /// Messages for peers, in order.
    outbox: Vec<Message>,
    snapshots_taken: usize,
    restored: usize,
}

fn config(rapid_window: Duration, max_age: Duration) -> ControllerConfig {
    let mut config = ControllerConfig::default();
    config.snapshot.rapid_window = rapid_window;
    config.snapshot.max_age = max_age;
    config
}

fn boot(
    data_dir: &Path,
    id: u64,
    voters: &[u64],
    config: &ControllerConfig,
    now: Instant,
) -> (Node, Recovered) {
    let (store, recovered) =
        ControllerStore::open(data_dir, ControllerStoreLimits::from_config(config)).expect("store opens");
    let bootstrap = Membership::with_voters(voters.iter().copied()).unwrap();
    let setup = recovered
        .clone()
        .into_setup(id, config.clone(), bootstrap, id * 7919);
    let replica = ControllerReplica::new(now, setup).expect("replica starts");
    let mut node = Node {
        id,
        store,
        replica,
        now,
        outbox: Vec::new(),
        snapshots_taken: 0,
        restored: 0,
    };
    node.pump();
    (node, recovered)
}

impl Node {
    /// Carries out every effect through the store, feeding completions back at once.
    fn pump(&mut self) {
        while let Some(effect) = self.replica.poll_effect() {
            match self.store.execute(effect).expect("storage works") {
                Executed::Input(input) => self.replica.handle(self.now, input),
                Executed::Send(message) => self.outbox.push(message),
                Executed::Nothing => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        while let Some(event) = self.replica.poll_event() {
            match event {
                ControllerEvent::SnapshotTaken { .. } => self.snapshots_taken += 1,
                ControllerEvent::Restored { .. } => self.restored += 1,
                ControllerEvent::Failed { reason } => panic!("node {} failed: {reason}", self.id),
                _ => {}
            }
        }
        self.store
            .persist_commit_hint(self.replica.commit_hint())
            .expect("commit hint persisted");
    }

    fn tick(&mut self) {
        self.now += TICK;
        if self.replica.poll_timeout().is_some_and(|t| t <= self.now) {
            self.replica.handle_timeout(self.now);
        }
        self.pump();
    }

    fn run_until(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Node) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "not reached within {limit:?}: {what}");
            self.tick();
        }
    }

    /// Proposes `command` on this (single-voter) leader and waits until it is applied.
    fn commit(&mut self, command: &Command) {
        self.run_until("leader", Duration::from_secs(20), |n| n.replica.is_leader());
        let at = self.replica.propose(self.now, command).expect("proposal taken");
        self.pump();
        self.run_until("applied", Duration::from_secs(20), |n| {
            n.replica.last_applied().is_some_and(|a| a.index >= at.index)
        });
    }
}

fn register(id: u64) -> Command {
    Command::RegisterBroker(BrokerRegistration {
        id,
        rpc_addr: format!("10.0.0.{id}:33145"),
        kafka_addr: format!("10.0.0.{id}:9092"),
        rack: None,
        epoch: 1,
    })
}

fn create_topic(state: &ControllerState, name: &str, partitions: usize) -> Command {
    Command::CreateTopic {
        name: name.to_string(),
        configs: BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]),
        assignment: place(state, partitions, 1).expect("placeable"),
    }
}

fn commit_some_commands(node: &mut Node) {
    node.commit(&register(1));
    for (name, partitions) in [("orders", 3), ("payments", 2), ("audit", 1)] {
        let command = create_topic(node.replica.state(), name, partitions);
        node.commit(&command);
    }
    node.commit(&Command::DeleteTopic {
        name: "audit".to_string(),
    });
}

fn topics(state: &ControllerState) -> Vec<String> {
    state.assignments.keys().cloned().collect()
}

// ----- a real replica through the store -----------------------------------------------

#[test]
fn a_single_voter_controller_gets_its_metadata_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Only the first command is snapshotted at once; the rest stay in the log suffix.
    let config = config(Duration::from_secs(3600), Duration::from_secs(3600));
    let (mut node, recovered) = boot(dir.path(), 1, &[1], &config, Instant::from_millis(1_000));
    assert!(recovered.snapshot_file.is_none() && recovered.raft.last_index.is_none());
    commit_some_commands(&mut node);
    assert_eq!(topics(node.replica.state()), ["orders", "payments"]);
    let state = node.replica.state().encode();
    let applied = node.replica.last_applied().unwrap();
    let term = node.replica.raft().term();
    let hint = node.replica.commit_hint();
    assert!(
        node.store.log_range().is_some(),
        "commands after the snapshot are in the log"
    );
    let now = node.now;
    drop(node);

    let (mut node, recovered) = boot(dir.path(), 1, &[1], &config, now);
    assert_eq!(recovered.report.torn_bytes, 0);
    assert!(recovered.report.entries > 0);
    assert_eq!(recovered.raft.hard_state.term, term);
    assert_eq!(recovered.raft.hard_state.vote, Some(1));
    assert_eq!(recovered.raft.commit_hint, hint);
    assert_eq!(recovered.raft.last_index, Some(applied.index));
    assert!(recovered.snapshot_last.unwrap().index < applied.index);
    // Snapshot file + log suffix give the state at the crash before anything else runs.
    assert_eq!(node.replica.last_applied(), Some(applied));
    assert_eq!(node.replica.state().encode(), state);
    assert_eq!(topics(node.replica.state()), ["orders", "payments"]);

    // It goes on: a new term, a new command, and it all survives another restart.
    node.commit(&Command::DeleteTopic {
        name: "payments".to_string(),
    });
    assert!(node.replica.raft().term() > term);
    let (state, now) = (node.replica.state().encode(), node.now);
    drop(node);
    let (node, _) = boot(dir.path(), 1, &[1], &config, now);
    assert_eq!(node.replica.state().encode(), state);
    assert_eq!(topics(node.replica.state()), ["orders"]);
}

#[test]
fn a_snapshot_compacts_the_log_file_to_the_suffix_and_the_state_still_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(Duration::from_secs(3600), Duration::from_secs(5));
    let (mut node, _) = boot(dir.path(), 1, &[1], &config, Instant::from_millis(1_000));
    commit_some_commands(&mut node);
    let before = node.snapshots_taken;
    let last = node.replica.last_applied().unwrap();
    // `max_age` runs out: a snapshot of everything, and Raft compacts the log.
    node.run_until("a snapshot of every command", Duration::from_secs(10), |n| {
        n.replica.snapshot_point() == Some(last)
    });
    assert!(node.snapshots_taken > before);
    assert_eq!(node.store.snapshot_last(), Some(last));
    assert_eq!(
        node.store.log_range(),
        None,
        "the log holds nothing the snapshot covers"
    );
    assert_eq!(
        std::fs::metadata(controller_dir(dir.path()).join(LOG_FILE))
            .unwrap()
            .len(),
        0
    );
    assert!(node.store.stats().compactions > 0);
    // A read below the snapshot is answered "compacted".
    let read = node.store.execute_raft(RaftEffect::ReadEntries {
        read_id: ReadId(1),
        target: ReadTarget::Apply,
        from_index: last.index,
        max_bytes: 1 << 20,
    });
    assert!(matches!(
        read,
        Ok(Executed::Input(ControllerInput::Raft(RaftInput::EntriesRead {
            result: Err(ReadError::Compacted),
            ..
        })))
    ));

    // One more command lives only in the log suffix.
    node.commit(&Command::DeleteTopic {
        name: "orders".to_string(),
    });
    let (first, end) = node.store.log_range().unwrap();
    assert!(first > last.index, "only the suffix is stored: {first}..={end}");
    let log_len = std::fs::metadata(controller_dir(dir.path()).join(LOG_FILE))
        .unwrap()
        .len();
    assert_eq!(log_len, node.store.log_bytes());
    let (state, now) = (node.replica.state().encode(), node.now);
    drop(node);

    let (node, recovered) = boot(dir.path(), 1, &[1], &config, now);
    assert_eq!(recovered.snapshot_last, Some(last));
    assert_eq!(
        recovered.raft.term_boundaries.first().map(|(_, i)| *i),
        Some(first)
    );
    assert_eq!(recovered.report.entries as u64, end - first + 1);
    assert_eq!(node.replica.state().encode(), state);
    assert_eq!(topics(node.replica.state()), ["payments"]);
}

// ----- the log file ---------------------------------------------------------------------

fn open(data_dir: &Path) -> Result<(ControllerStore, Recovered), ControllerStoreError> {
    ControllerStore::open(data_dir, ControllerStoreLimits::default())
}

fn append(store: &mut ControllerStore, write_id: u64, entries: Vec<Entry>) {
    let done = store.execute_raft(RaftEffect::Append {
        write_id: WriteId(write_id),
        entries,
    });
    assert_eq!(
        done.unwrap(),
        Executed::Input(ControllerInput::Raft(RaftInput::WriteDurable {
            write_id: WriteId(write_id)
        }))
    );
}

/// Entries `from..=to` of `term`: commands (Kafka batches) and a no-op every third.
fn entries(term: u64, from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|index| {
            if index % 3 == 0 {
                Entry::noop(term, index)
            } else {
                Entry::data(term, index, 1, register(index).to_batch())
            }
        })
        .collect()
}

/// Byte positions of the log file's records (from their length fields).
fn record_positions(bytes: &[u8]) -> Vec<usize> {
    let mut positions = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        positions.push(at);
        at += 8 + u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    positions
}

fn read_all(store: &mut ControllerStore, from_index: u64) -> Vec<Entry> {
    match store
        .execute_raft(RaftEffect::ReadEntries {
            read_id: ReadId(9),
            target: ReadTarget::Apply,
            from_index,
            max_bytes: usize::MAX,
        })
        .unwrap()
    {
        Executed::Input(ControllerInput::Raft(RaftInput::EntriesRead { result, .. })) => result.unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_torn_tail_record_is_cut_and_appends_go_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path()).unwrap();
    append(&mut store, 1, entries(1, 1, 4));
    append(&mut store, 2, entries(1, 5, 6));
    let log = controller_dir(dir.path()).join(LOG_FILE);
    let synced = std::fs::read(&log).unwrap();
    drop(store);

    // A crash in the middle of an append: half of a new record reached the disk.
    let mut torn = synced.clone();
    let last_record = *record_positions(&synced).last().unwrap();
    torn.extend_from_slice(&synced[last_record..synced.len() - 10]);
    std::fs::write(&log, &torn).unwrap();
    let (mut store, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.report.torn_bytes, (torn.len() - synced.len()) as u64);
    assert_eq!(recovered.raft.last_index, Some(6));
    assert_eq!(
        std::fs::read(&log).unwrap(),
        synced,
        "cut back to the synced records"
    );
    append(&mut store, 3, entries(1, 7, 7));
    assert_eq!(read_all(&mut store, 1).len(), 7);
    drop(store);

    // A tail of zeros (the file grew, its data never came) is torn too.
    let mut zeros = std::fs::read(&log).unwrap();
    let len = zeros.len();
    zeros.resize(len + 100, 0);
    std::fs::write(&log, &zeros).unwrap();
    let (mut store, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.report.torn_bytes, 100);
    assert_eq!(recovered.raft.last_index, Some(7));
    let read = read_all(&mut store, 1);
    assert_eq!(
        read.iter().map(|e| e.index).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(read[1].payload.len(), register(2).to_batch().len());
    assert_eq!(Command::from_batch(&read[1].payload).unwrap(), register(2));
}

#[test]
fn a_damaged_record_before_valid_ones_is_refused_naming_the_file_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path()).unwrap();
    append(&mut store, 1, entries(1, 1, 5));
    drop(store);
    let log = controller_dir(dir.path()).join(LOG_FILE);
    let mut bytes = std::fs::read(&log).unwrap();
    let damaged_at = record_positions(&bytes)[2];
    bytes[damaged_at + 20] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    match open(dir.path()) {
        Err(ControllerStoreError::Corrupt {
            path, position_bytes, ..
        }) => {
            assert_eq!(path, log);
            assert_eq!(position_bytes, damaged_at as u64);
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // Nothing was cut: the synced records are all still there.
    assert_eq!(std::fs::read(&log).unwrap(), bytes);

    // A damaged last record is indistinguishable from a torn one: it is cut.
    let positions = record_positions(&bytes);
    bytes[damaged_at + 20] ^= 0x10;
    let last = *positions.last().unwrap();
    bytes[last + 20] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    let (_, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.raft.last_index, Some(4));
}

#[test]
fn truncation_cuts_the_file_and_conflicting_entries_replace_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path()).unwrap();
    append(&mut store, 1, entries(1, 1, 5));
    let positions = record_positions(&std::fs::read(controller_dir(dir.path()).join(LOG_FILE)).unwrap());
    assert_eq!(
        store
            .execute_raft(RaftEffect::Truncate {
                write_id: WriteId(2),
                from_index: 3
            })
            .unwrap(),
        Executed::Input(ControllerInput::Raft(RaftInput::WriteDurable {
            write_id: WriteId(2)
        }))
    );
    assert_eq!(store.log_range(), Some((1, 2)));
    assert_eq!(store.log_bytes(), positions[2] as u64);
    assert_eq!(
        std::fs::metadata(controller_dir(dir.path()).join(LOG_FILE))
            .unwrap()
            .len(),
        positions[2] as u64
    );
    append(&mut store, 3, entries(2, 3, 4));
    drop(store);

    let (mut store, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.raft.term_boundaries, vec![(1, 1), (2, 3)]);
    assert_eq!(recovered.raft.last_index, Some(4));
    // The term-2 append survived without its hard state: the term is raised, no vote.
    assert_eq!(recovered.raft.hard_state, HardState { term: 2, vote: None });
    let terms: Vec<u64> = read_all(&mut store, 1).iter().map(|e| e.term).collect();
    assert_eq!(terms, [1, 1, 2, 2]);

    // An append that does not follow the log breaks the contract: refused, and the store
    // acknowledges nothing after it.
    let gap = store.execute_raft(RaftEffect::Append {
        write_id: WriteId(4),
        entries: entries(2, 9, 9),
    });
    assert!(
        matches!(gap, Err(ControllerStoreError::Contract { .. })),
        "{gap:?}"
    );
    let next = store.execute_raft(RaftEffect::Append {
        write_id: WriteId(5),
        entries: entries(2, 5, 5),
    });
    assert!(matches!(next, Err(ControllerStoreError::Failed(_))), "{next:?}");
    assert!(store.failure().is_some());
}

#[test]
fn hard_state_and_commit_hint_survive_and_a_damaged_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.raft.hard_state, HardState::default());
    let hard_state = HardState {
        term: 7,
        vote: Some(3),
    };
    assert_eq!(
        store
            .execute_raft(RaftEffect::PersistHardState(hard_state))
            .unwrap(),
        Executed::Input(ControllerInput::Raft(RaftInput::HardStateDurable(hard_state)))
    );
    append(&mut store, 1, entries(7, 1, 3));
    store.persist_commit_hint(Some(2)).unwrap();
    let syncs = store.stats().syncs;
    store.persist_commit_hint(Some(2)).unwrap();
    assert_eq!(store.stats().syncs, syncs, "an unchanged hint is not rewritten");
    drop(store);

    let (_, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.raft.hard_state, hard_state);
    assert_eq!(recovered.raft.commit_hint, Some(2));
    assert_eq!(recovered.raft.term_boundaries, vec![(7, 1)]);

    let state = controller_dir(dir.path()).join(STATE_FILE);
    let mut bytes = std::fs::read(&state).unwrap();
    bytes[12] ^= 1;
    std::fs::write(&state, &bytes).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(ControllerStoreError::Corrupt { path, .. }) if path == state
    ));
}

#[test]
fn leftover_temporary_files_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = controller_dir(dir.path());
    std::fs::create_dir_all(&cdir).unwrap();
    for name in ["snapshot.tmp", "log.tmp", "state.tmp", "snapshot.incoming.3-9"] {
        std::fs::write(cdir.join(name), b"half written").unwrap();
    }
    let (_, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.report.removed_files.len(), 4);
    let mut left: Vec<String> = std::fs::read_dir(&cdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [LOG_FILE]);
}

// ----- snapshots from a leader ------------------------------------------------------------

fn snapshot_bytes(last: LogId) -> (SnapshotMeta, Bytes) {
    let meta = SnapshotMeta {
        last,
        membership: Membership::with_voters([1, 2, 3]).unwrap(),
    };
    let mut state = ControllerState::new();
    state.apply(last.index, &register(2)).unwrap();
    let data = SnapshotFile::encode(&meta, &state);
    (meta, data)
}

fn receive(
    store: &mut ControllerStore,
    first_write: u64,
    meta: &SnapshotMeta,
    data: &Bytes,
    discard_log: bool,
) {
    let half = data.len() / 2;
    for (i, (offset, chunk)) in [(0, data.slice(..half)), (half, data.slice(half..))]
        .into_iter()
        .enumerate()
    {
        let write_id = WriteId(first_write + i as u64);
        let done = store
            .execute_raft(RaftEffect::WriteSnapshotChunk {
                write_id,
                meta: meta.clone(),
                offset: offset as u64,
                data: chunk,
                done: i == 1,
            })
            .unwrap();
        assert_eq!(
            done,
            Executed::Input(ControllerInput::Raft(RaftInput::WriteDurable { write_id }))
        );
    }
    let write_id = WriteId(first_write + 2);
    let done = store
        .execute_raft(RaftEffect::InstallSnapshot {
            write_id,
            meta: meta.clone(),
            discard_log,
        })
        .unwrap();
    assert_eq!(
        done,
        Executed::Input(ControllerInput::Raft(RaftInput::WriteDurable { write_id }))
    );
}

#[test]
fn an_installed_snapshot_replaces_the_file_and_drops_the_log_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = controller_dir(dir.path());
    let (mut store, _) = open(dir.path()).unwrap();
    append(&mut store, 1, entries(1, 1, 6));
    let (meta, data) = snapshot_bytes(LogId::new(1, 4));
    receive(&mut store, 2, &meta, &data, false);
    assert_eq!(std::fs::read(cdir.join(SNAPSHOT_FILE)).unwrap(), data);
    assert_eq!(store.log_range(), Some((5, 6)));
    assert_eq!(store.stats().snapshots_installed, 1);
    drop(store);
    let (mut store, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot_file, Some(data));
    assert_eq!(recovered.snapshot_last, Some(LogId::new(1, 4)));
    assert_eq!(recovered.raft.last_index, Some(6));
    assert!(recovered.report.removed_files.is_empty());

    // A snapshot past a conflicting log: the whole log goes.
    let (meta, data) = snapshot_bytes(LogId::new(3, 9));
    receive(&mut store, 10, &meta, &data, true);
    assert_eq!(store.log_range(), None);
    append(&mut store, 13, entries(3, 10, 10));
    drop(store);
    let (_, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot_last, Some(LogId::new(3, 9)));
    assert_eq!(recovered.raft.term_boundaries, vec![(3, 10)]);
}

#[test]
fn an_install_interrupted_between_the_rename_and_the_log_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = controller_dir(dir.path());
    let (mut store, _) = open(dir.path()).unwrap();
    append(&mut store, 1, entries(1, 1, 6));
    drop(store);

    // The snapshot covers offset 4 in the same term: only 1..=4 go.
    let (_, data) = snapshot_bytes(LogId::new(1, 4));
    std::fs::write(cdir.join(SNAPSHOT_FILE), &data).unwrap();
    let (_, recovered) = open(dir.path()).unwrap();
    assert!(!recovered.report.interrupted_install);
    assert_eq!(recovered.report.covered_entries_dropped, 4);
    assert_eq!(recovered.raft.term_boundaries, vec![(1, 5)]);
    let positions = record_positions(&std::fs::read(cdir.join(LOG_FILE)).unwrap());
    assert_eq!(positions.len(), 2, "the log file was rewritten to the suffix");

    // A leader's snapshot at offset 5 of term 2 while the log has offset 5 of term 1:
    // the install (discard_log) was cut short after the rename; it is finished.
    let (_, data) = snapshot_bytes(LogId::new(2, 5));
    std::fs::write(cdir.join(SNAPSHOT_FILE), &data).unwrap();
    let (store, recovered) = open(dir.path()).unwrap();
    assert!(recovered.report.interrupted_install);
    assert_eq!(recovered.raft.last_index, None);
    assert_eq!(store.log_bytes(), 0);
}

#[test]
fn a_failed_snapshot_write_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ControllerStoreLimits {
        max_snapshot_bytes: 1 << 10,
        ..ControllerStoreLimits::default()
    };
    let (mut store, _) = ControllerStore::open(dir.path(), limits).unwrap();
    let (_, data) = snapshot_bytes(LogId::new(1, 4));
    let last = LogId::new(1, 4);
    assert_eq!(
        store.write_snapshot(last, &data),
        ControllerInput::SnapshotDurable { last }
    );
    let too_big = vec![0u8; 2 << 10];
    let later = LogId::new(1, 8);
    assert_eq!(
        store
            .execute(ControllerEffect::WriteSnapshot {
                last: later,
                data: Bytes::from(too_big)
            })
            .unwrap(),
        Executed::Input(ControllerInput::SnapshotFailed { last: later })
    );
    let cdir = controller_dir(dir.path());
    assert_eq!(std::fs::read(cdir.join(SNAPSHOT_FILE)).unwrap(), data);
    assert_eq!(store.snapshot_last(), Some(last));
    assert!(
        store.failure().is_none(),
        "a failed snapshot does not stop the store"
    );
}

// ----- three voters, one lagging ----------------------------------------------------------

#[test]
fn a_lagging_follower_catches_up_through_a_snapshot_installed_by_its_store() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = config(Duration::from_secs(1), Duration::from_secs(2));
    let mut now = Instant::from_millis(1_000);
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| boot(dirs[id as usize - 1].path(), id, &[1, 2, 3], &config, now).0)
        .collect();
    // Node 3 is cut off while the others commit and compact.
    let mut isolated = Some(3u64);
    let step = |nodes: &mut Vec<Node>, now: &mut Instant, isolated: Option<u64>| {
        *now += TICK;
        for node in nodes.iter_mut() {
            node.now = *now;
            if node.replica.poll_timeout().is_some_and(|t| t <= *now) {
                node.replica.handle_timeout(*now);
            }
            node.pump();
        }
        // Deliver until quiet.
        for _ in 0..50 {
            let mut messages = Vec::new();
            for node in nodes.iter_mut() {
                messages.extend(node.outbox.drain(..).map(|m| (node.id, m)));
            }
            if messages.is_empty() {
                break;
            }
            for (from, message) in messages {
                let to = message.to;
                if isolated.is_some_and(|i| i == from || i == to) {
                    continue;
                }
                let node = &mut nodes[to as usize - 1];
                node.replica
                    .handle(*now, ControllerInput::Raft(RaftInput::Message(message)));
                node.pump();
            }
        }
    };
    let leader_of = |nodes: &Vec<Node>, isolated: Option<u64>| {
        nodes
            .iter()
            .filter(|n| Some(n.id) != isolated && n.replica.is_leader())
            .max_by_key(|n| n.replica.raft().term())
            .map(|n| n.id)
    };
    let commit = |nodes: &mut Vec<Node>, now: &mut Instant, isolated: Option<u64>, command: &Command| {
        for _ in 0..10_000 {
            if let Some(l) = leader_of(nodes, isolated) {
                let leader = &mut nodes[l as usize - 1];
                if let Ok(at) = leader.replica.propose(*now, command) {
                    leader.pump();
                    for _ in 0..10_000 {
                        step(nodes, now, isolated);
                        if nodes[l as usize - 1]
                            .replica
                            .last_applied()
                            .is_some_and(|a| a.index >= at.index)
                        {
                            return;
                        }
                    }
                }
            }
            step(nodes, now, isolated);
        }
        panic!("{command:?} not committed");
    };
    for id in 1..=3 {
        commit(&mut nodes, &mut now, isolated, &register(id));
    }
    for name in ["t1", "t2", "t3"] {
        let leader = leader_of(&nodes, isolated).unwrap();
        let command = create_topic(nodes[leader as usize - 1].replica.state(), name, 2);
        commit(&mut nodes, &mut now, isolated, &command);
    }
    // Let the snapshot timers run out: the connected nodes compact their logs.
    for _ in 0..400 {
        step(&mut nodes, &mut now, isolated);
    }
    let leader = leader_of(&nodes, isolated).unwrap();
    let point = nodes[leader as usize - 1].replica.snapshot_point().unwrap();
    assert!(nodes[leader as usize - 1]
        .store
        .log_range()
        .is_none_or(|(first, _)| first > point.index));
    assert!(nodes[2].replica.state().assignments.is_empty(), "node 3 lags");

    // Heal: node 3 can only catch up through the snapshot, written by its store.
    isolated = None;
    for _ in 0..2_000 {
        if nodes[2].restored > 0
            && nodes[2].replica.state().encode() == nodes[leader as usize - 1].replica.state().encode()
        {
            break;
        }
        step(&mut nodes, &mut now, isolated);
    }
    assert!(
        nodes[2].restored > 0,
        "node 3 restored a snapshot from the leader"
    );
    assert_eq!(nodes[2].store.stats().snapshots_installed, 1);
    let state = nodes[leader as usize - 1].replica.state().encode();
    assert_eq!(nodes[2].replica.state().encode(), state);
    let installed = nodes[2].store.snapshot_last().unwrap();

    // And it restarts from what its store holds.
    let lagger_now = nodes[2].now;
    let lagger = nodes.remove(2);
    drop(lagger);
    let (restarted, recovered) = boot(dirs[2].path(), 3, &[1, 2, 3], &config, lagger_now);
    assert!(recovered.snapshot_last.unwrap().index >= installed.index);
    assert_eq!(restarted.replica.state().assignments.len(), 3);
}

#[test]
fn a_new_receipt_removes_an_abandoned_one_and_a_chunk_past_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = controller_dir(dir.path());
    let (mut store, _) = open(dir.path()).unwrap();
    let chunk =
        |store: &mut ControllerStore, write_id: u64, meta: &SnapshotMeta, offset: u64, data: &[u8]| {
            store.execute_raft(RaftEffect::WriteSnapshotChunk {
                write_id: WriteId(write_id),
                meta: meta.clone(),
                offset,
                data: Bytes::copy_from_slice(data),
                done: false,
            })
        };
    let (first, _) = snapshot_bytes(LogId::new(1, 4));
    let (second, _) = snapshot_bytes(LogId::new(2, 8));
    chunk(&mut store, 1, &first, 0, b"abandoned").unwrap();
    assert!(cdir.join("snapshot.incoming.1-4").exists());
    chunk(&mut store, 2, &second, 0, b"0123").unwrap();
    assert!(
        !cdir.join("snapshot.incoming.1-4").exists(),
        "Raft receives one snapshot at a time"
    );
    // The same chunk again (the leader resent it) rewrites from its offset.
    chunk(&mut store, 3, &second, 2, b"xy").unwrap();
    chunk(&mut store, 4, &second, 2, b"23").unwrap();
    assert_eq!(
        std::fs::read(cdir.join("snapshot.incoming.2-8")).unwrap(),
        b"0123"
    );
    // A chunk that leaves a hole is a broken contract.
    let hole = chunk(&mut store, 5, &second, 10, b"zz");
    assert!(
        matches!(hole, Err(ControllerStoreError::Contract { .. })),
        "{hole:?}"
    );
}
