//! The adapter that puts **core's Raft** (`oxbow_core::raft::Raft`) behind the driver's
//! [`Replica`] door.
//!
//! * Write effects (`Append`, `Truncate`) and `PersistHardState` become storage
//!   operations with sequence numbers; when the driver reports sequence `s` durable, the
//!   adapter hands Raft `WriteDurable` for the newest write id and `HardStateDurable` for
//!   the newest hard state at or below `s`.
//! * Raft keeps only metadata in memory, so the adapter keeps a *shadow* of the node's
//!   log — exactly the entries it told storage to write, minus truncations — to answer
//!   `ReadEntries` and to let the checkers see each node's log. After a restart the
//!   shadow is what core's log recovery kept on the simulated disk.
//! * Proposals cover one offset each (one record per batch), so an entry is one offset.
//! * Snapshots: the workload's state machine *is* the log, so a snapshot's bytes are the
//!   entries it covers ([`Replica::maybe_snapshot`] takes one over durable, applied
//!   entries). `CompactLog` is not acted on (the log keeps its prefix, so a restart
//!   recovers a full log and needs no snapshot file); a received snapshot is kept in
//!   memory chunk by chunk and installed by keeping the matching prefix of the log and
//!   appending the rest, so nothing this node acknowledged is ever removed.
//!   `Apply`, `CommitAdvanced` and `RoleChanged` are observed through
//!   [`Replica::status`] instead.
//! * A restart whose log holds entries of a term newer than the durable hard state (an
//!   unsynced append that survived the crash while its term's hard state had not yet
//!   been written) raises the term to the log's last term with no vote — safe because no
//!   message of that term left before its hard state was durable.

use crate::cluster::NodeFactory;
use crate::model_raft::Restored;
use crate::net::NodeId;
use crate::replica::{
    Churn, EntryKind, HardState, ProposeError, Replica, ReplicaEffect, ReplicaStatus, Role, SimEntry,
    StorageOp,
};
use crate::rng::SimRng;
use bytes::Bytes;
use oxbow_core::raft::{
    self, AppendResponse, ConfigChange, Effect, Entry, Input, Membership, Message, MessageBody, Raft,
    RaftConfig, ReadError, RecoveredState, WriteId,
};
use oxbow_core::time::Instant;
use rand::RngCore;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
enum Awaited {
    Write(WriteId),
    Hard(raft::HardState),
}

/// Core's Raft behind the [`Replica`] door.
#[derive(Debug)]
pub struct CoreReplica {
    raft: Raft,
    shadow: Vec<SimEntry>,
    next_seq: u64,
    awaited: VecDeque<(u64, Awaited)>,
    out: VecDeque<ReplicaEffect<Message>>,
    now: Instant,
    /// A contract problem seen in an effect (reported by the driver as a failure).
    violation: Option<String>,
    /// Reads sent to the disk: our id -> (Raft's id, first offset, size bound).
    reads: std::collections::BTreeMap<u64, (raft::ReadId, u64, usize)>,
    next_read: u64,
    reads_from_disk: u64,
    reads_from_memory: u64,
    reads_failed: u64,
    /// This node's snapshot: its position and its bytes (the entries it covers), encoded
    /// on the first chunk request (committed entries never change, so later is the same).
    snapshot: Option<(raft::LogId, Option<Bytes>)>,
    snapshot_chunks_served: u64,
    snapshots_installed: u64,
    duplicate_installs: u64,
    /// Snapshots being received: position -> bytes so far.
    incoming: std::collections::BTreeMap<(u64, u64), Vec<u8>>,
}

/// A snapshot's bytes: the entries it covers, in order (the state machine of the
/// simulator's workload *is* the log).
fn encode_snapshot(entries: &[SimEntry]) -> Bytes {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.term.to_be_bytes());
        out.extend_from_slice(&e.index.to_be_bytes());
        out.push(match e.kind {
            EntryKind::Data => 0,
            EntryKind::Noop => 1,
            EntryKind::Config => 2,
        });
        out.extend_from_slice(&u32::try_from(e.payload.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&e.payload);
    }
    Bytes::from(out)
}

fn decode_snapshot(mut b: &[u8]) -> Option<Vec<SimEntry>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 21 {
            return None;
        }
        let term = u64::from_be_bytes(b[0..8].try_into().ok()?);
        let index = u64::from_be_bytes(b[8..16].try_into().ok()?);
        let kind = match b[16] {
            0 => EntryKind::Data,
            1 => EntryKind::Noop,
            2 => EntryKind::Config,
            _ => return None,
        };
        let len = usize::try_from(u32::from_be_bytes(b[17..21].try_into().ok()?)).ok()?;
        let payload = Bytes::copy_from_slice(b.get(21..21 + len)?);
        out.push(SimEntry {
            term,
            index,
            kind,
            payload,
        });
        b = &b[21 + len..];
    }
    Some(out)
}

fn to_sim_entry(e: &Entry) -> Result<SimEntry, String> {
    if e.last_index != e.index {
        return Err(format!(
            "entry {}..={} covers several offsets",
            e.index, e.last_index
        ));
    }
    let kind = match e.kind {
        raft::EntryKind::Data => EntryKind::Data,
        raft::EntryKind::Noop => EntryKind::Noop,
        raft::EntryKind::Config => EntryKind::Config,
        other => return Err(format!("unknown entry kind {other:?}")),
    };
    Ok(SimEntry {
        term: e.term,
        index: e.index,
        kind,
        payload: e.payload.clone(),
    })
}

fn to_core_entry(e: &SimEntry) -> Entry {
    match e.kind {
        EntryKind::Data => Entry::data(e.term, e.index, 1, e.payload.clone()),
        EntryKind::Noop => Entry::noop(e.term, e.index),
        EntryKind::Config => Entry {
            term: e.term,
            index: e.index,
            last_index: e.index,
            kind: raft::EntryKind::Config,
            payload: e.payload.clone(),
        },
    }
}

impl CoreReplica {
    /// Starts node `id` of the group `peers` from what its disk held.
    pub fn start(
        id: NodeId,
        peers: &[NodeId],
        config: RaftConfig,
        mut rng: SimRng,
        now: Instant,
        restored: Restored,
    ) -> Result<(CoreReplica, bool), String> {
        let bootstrap =
            Membership::with_voters(peers.iter().map(|p| u64::from(*p))).map_err(|e| e.to_string())?;
        let mut term_boundaries: Vec<(u64, u64)> = Vec::new();
        for e in &restored.log {
            if term_boundaries.last().is_none_or(|(t, _)| *t != e.term) {
                term_boundaries.push((e.term, e.index));
            }
        }
        let last_term = restored.log.last().map_or(0, |e| e.term);
        let mut hard_state = raft::HardState {
            term: restored.hs.term,
            vote: restored.hs.vote.map(u64::from),
        };
        let raised = hard_state.term < last_term;
        if raised {
            hard_state = raft::HardState {
                term: last_term,
                vote: None,
            };
        }
        let recovered = RecoveredState {
            hard_state,
            snapshot: None,
            term_boundaries,
            last_index: restored.log.last().map(|e| e.index),
            config_entries: restored
                .log
                .iter()
                .filter(|e| e.kind == EntryKind::Config)
                .map(to_core_entry)
                .collect(),
            commit_hint: None,
        };
        let raft = Raft::new(u64::from(id), config, bootstrap, recovered, rng.next_u64(), now)
            .map_err(|e| format!("node {id}: {e}"))?;
        Ok((
            CoreReplica {
                raft,
                shadow: restored.log,
                next_seq: 0,
                awaited: VecDeque::new(),
                out: VecDeque::new(),
                now,
                violation: None,
                reads: std::collections::BTreeMap::new(),
                next_read: 0,
                reads_from_disk: 0,
                reads_from_memory: 0,
                reads_failed: 0,
                snapshot: None,
                snapshot_chunks_served: 0,
                snapshots_installed: 0,
                duplicate_installs: 0,
                incoming: std::collections::BTreeMap::new(),
            },
            raised,
        ))
    }

    /// A contract problem the adapter saw, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Core's Raft itself (for statistics).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    fn persist(&mut self, op: StorageOp, awaited: Awaited) {
        self.next_seq += 1;
        self.awaited.push_back((self.next_seq, awaited));
        self.out.push_back(ReplicaEffect::Persist {
            seq: self.next_seq,
            op,
        });
    }

    fn read(&self, from_index: u64, max_bytes: usize) -> Result<Vec<Entry>, ReadError> {
        let start = usize::try_from(from_index).map_err(|_| ReadError::Storage)?;
        if start >= self.shadow.len() {
            return Err(ReadError::Storage);
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.shadow[start..] {
            let entry = to_core_entry(e);
            bytes += entry.size_bytes();
            out.push(entry);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Makes a fully received snapshot this node's log: entries that already match stay
    /// (so nothing this node acknowledged is ever removed), the first conflicting one
    /// and everything after it go, the snapshot's remaining entries are appended.
    fn install_snapshot(&mut self, write_id: WriteId, last: raft::LogId, discard_log: bool) {
        let bytes = self.incoming.remove(&(last.term, last.index)).unwrap_or_default();
        let has_last = usize::try_from(last.index)
            .ok()
            .and_then(|i| self.shadow.get(i))
            .is_some_and(|e| e.term == last.term);
        if bytes.is_empty() && has_last && !discard_log {
            // Installed already (a retransmitted final chunk): the log holds it.
            self.duplicate_installs += 1;
            self.persist(StorageOp::Barrier, Awaited::Write(write_id));
            return;
        }
        if bytes.is_empty() {
            self.violation
                .get_or_insert(format!("install of snapshot {last:?} that was never received"));
            return;
        }
        self.incoming.clear();
        let Some(entries) = decode_snapshot(&bytes) else {
            self.violation
                .get_or_insert(format!("snapshot {last:?} does not decode"));
            return;
        };
        if entries.last().map(|e| (e.term, e.index)) != Some((last.term, last.index))
            || entries.iter().enumerate().any(|(i, e)| e.index != i as u64)
        {
            self.violation.get_or_insert(format!(
                "snapshot {last:?} does not end at its own position: {} entries, last {:?}",
                entries.len(),
                entries.last().map(|e| (e.term, e.index))
            ));
            return;
        }
        let first_diff = entries
            .iter()
            .zip(&self.shadow)
            .position(|(a, b)| a != b)
            .unwrap_or(entries.len().min(self.shadow.len()));
        if !discard_log && first_diff < entries.len() {
            self.violation.get_or_insert(format!(
                "snapshot {last:?} installed over a log that differs at offset {first_diff}"
            ));
            return;
        }
        let mut ops = Vec::new();
        if first_diff < self.shadow.len() && first_diff < entries.len() {
            self.shadow.truncate(first_diff);
            ops.push(StorageOp::Truncate {
                from_index: first_diff as u64,
            });
        }
        if first_diff < entries.len() {
            let rest = entries[first_diff..].to_vec();
            self.shadow.extend(rest.iter().cloned());
            ops.push(StorageOp::Append(rest));
        }
        self.snapshots_installed += 1;
        // The installed snapshot is now this node's: it serves it if it leads.
        self.snapshot = Some((last, Some(Bytes::from(bytes))));
        if ops.is_empty() {
            ops.push(StorageOp::Barrier);
        }
        let last_op = ops.len() - 1;
        for (i, op) in ops.into_iter().enumerate() {
            if i == last_op {
                self.persist(op, Awaited::Write(write_id));
            } else {
                self.next_seq += 1;
                self.out.push_back(ReplicaEffect::Persist {
                    seq: self.next_seq,
                    op,
                });
            }
        }
    }

    /// Translates core effects until one for the driver is ready.
    fn pump(&mut self) {
        while self.out.is_empty() {
            let Some(effect) = self.raft.poll_effect() else {
                return;
            };
            match effect {
                Effect::Send(m) => {
                    let to = u32::try_from(m.to).unwrap_or(u32::MAX);
                    self.out.push_back(ReplicaEffect::Send { to, msg: m });
                }
                Effect::PersistHardState(hs) => {
                    let sim = HardState {
                        term: hs.term,
                        vote: hs.vote.and_then(|v| u32::try_from(v).ok()),
                    };
                    self.persist(StorageOp::HardState(sim), Awaited::Hard(hs));
                }
                Effect::Append { write_id, entries } => {
                    let converted: Result<Vec<SimEntry>, String> = entries.iter().map(to_sim_entry).collect();
                    match converted {
                        Ok(list) if !list.is_empty() => {
                            let first = usize::try_from(list[0].index).unwrap_or(usize::MAX);
                            if first != self.shadow.len() {
                                self.violation.get_or_insert(format!(
                                    "append at offset {first} but the log ends at {}",
                                    self.shadow.len()
                                ));
                                return;
                            }
                            self.shadow.extend(list.iter().cloned());
                            self.persist(StorageOp::Append(list), Awaited::Write(write_id));
                        }
                        Ok(_) => {
                            self.violation.get_or_insert("empty append".to_string());
                        }
                        Err(e) => {
                            self.violation.get_or_insert(e);
                        }
                    }
                }
                Effect::Truncate { write_id, from_index } => {
                    self.shadow
                        .truncate(usize::try_from(from_index).unwrap_or(usize::MAX));
                    self.persist(StorageOp::Truncate { from_index }, Awaited::Write(write_id));
                }
                Effect::ReadEntries {
                    read_id,
                    from_index,
                    max_bytes,
                    ..
                } => {
                    // Through the disk: core's log read path, checked against what was
                    // written (see `handle_read`).
                    self.next_read += 1;
                    self.reads
                        .insert(self.next_read, (read_id, from_index, max_bytes));
                    self.out.push_back(ReplicaEffect::Read {
                        read_id: self.next_read,
                        from_index,
                        max_bytes,
                    });
                }
                Effect::WriteSnapshotChunk {
                    write_id,
                    meta,
                    offset,
                    data,
                    ..
                } => {
                    // Chunks live in memory until the install (a crash restarts the
                    // transfer); the write still completes in order with the others.
                    let buf = self
                        .incoming
                        .entry((meta.last.term, meta.last.index))
                        .or_default();
                    let at = usize::try_from(offset).unwrap_or(usize::MAX).min(buf.len());
                    buf.truncate(at);
                    buf.extend_from_slice(&data);
                    self.persist(StorageOp::Barrier, Awaited::Write(write_id));
                }
                Effect::InstallSnapshot {
                    write_id,
                    meta,
                    discard_log,
                } => self.install_snapshot(write_id, meta.last, discard_log),
                Effect::ReadSnapshotChunk {
                    read_id,
                    snapshot,
                    offset,
                    max_bytes,
                    ..
                } => {
                    if let Some((id, cached @ None)) = &mut self.snapshot {
                        let end = usize::try_from(id.index).unwrap_or(usize::MAX).saturating_add(1);
                        *cached = self.shadow.get(..end).map(encode_snapshot);
                    }
                    let result = match &self.snapshot {
                        Some((id, Some(bytes))) if *id == snapshot => {
                            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                            let end = start.saturating_add(max_bytes).min(bytes.len());
                            self.snapshot_chunks_served += 1;
                            Ok(raft::SnapshotChunkData {
                                data: bytes.slice(start..end),
                                done: end == bytes.len(),
                            })
                        }
                        Some((held, _)) if self.raft.snapshot().map(|m| m.last) == Some(*held) => {
                            // An older snapshot of a transfer in progress: gone; Raft
                            // starts over with its current one, which is held.
                            Err(ReadError::SnapshotGone)
                        }
                        _ => {
                            // Raft's current snapshot must be held: answering "gone" for
                            // it would make Raft ask again at once, for ever.
                            self.violation.get_or_insert(format!(
                                "asked for snapshot {snapshot:?}, but the runtime holds {:?}",
                                self.snapshot.as_ref().map(|(id, _)| *id)
                            ));
                            return;
                        }
                    };
                    self.raft
                        .handle(self.now, Input::SnapshotChunkRead { read_id, result });
                }
                _ => {} // Apply, CommitAdvanced, RoleChanged, CompactLog: observed via status.
            }
        }
    }
}

impl Replica for CoreReplica {
    type Msg = Message;

    fn handle_message(&mut self, now: Instant, _from: NodeId, msg: Message) {
        self.now = self.now.max(now);
        self.raft.handle(now, Input::Message(msg));
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.raft.handle_timeout(now);
    }

    fn handle_durable(&mut self, now: Instant, seq: u64) {
        self.now = self.now.max(now);
        let mut write = None;
        let mut hard = None;
        while let Some(&(s, a)) = self.awaited.front() {
            if s > seq {
                break;
            }
            self.awaited.pop_front();
            match a {
                Awaited::Write(w) => write = Some(w),
                Awaited::Hard(h) => hard = Some(h),
            }
        }
        if let Some(h) = hard {
            self.raft.handle(now, Input::HardStateDurable(h));
        }
        if let Some(write_id) = write {
            self.raft.handle(now, Input::WriteDurable { write_id });
        }
    }

    fn handle_read(&mut self, now: Instant, read_id: u64, result: Result<Vec<SimEntry>, String>) {
        self.now = self.now.max(now);
        let Some((raft_read, from_index, max_bytes)) = self.reads.remove(&read_id) else {
            return;
        };
        let answer = match result {
            Ok(entries) if !entries.is_empty() => {
                for e in &entries {
                    let written = usize::try_from(e.index).ok().and_then(|i| self.shadow.get(i));
                    if written != Some(e) {
                        self.violation.get_or_insert(format!(
                            "the log read back {e:?} at offset {}, but {written:?} was written there",
                            e.index
                        ));
                        return;
                    }
                }
                if entries[0].index != from_index {
                    self.violation.get_or_insert(format!(
                        "a read from offset {from_index} started at {}",
                        entries[0].index
                    ));
                    return;
                }
                self.reads_from_disk += 1;
                Ok(entries.iter().map(to_core_entry).collect())
            }
            // Not written to the file yet (the write completion is in flight): the
            // entries are still in memory, as they would be in the runtime's cache.
            Ok(_) => {
                self.reads_from_memory += 1;
                self.read(from_index, max_bytes)
            }
            Err(_) => {
                self.reads_failed += 1;
                Err(ReadError::Storage)
            }
        };
        self.raft.handle(
            now,
            Input::EntriesRead {
                read_id: raft_read,
                result: answer,
            },
        );
    }

    fn propose(&mut self, now: Instant, payload: Bytes) -> Result<u64, ProposeError> {
        self.now = self.now.max(now);
        match self.raft.propose(now, payload, 1) {
            Ok(log_id) => Ok(log_id.index),
            Err(raft::ProposeError::NotLeader { leader }) => Err(ProposeError::NotLeader(
                leader.and_then(|l| u32::try_from(l).ok()),
            )),
            Err(_) => Err(ProposeError::Busy),
        }
    }

    fn churn(&mut self, now: Instant, churn: Churn) -> bool {
        if self.raft.role() != raft::Role::Leader {
            return false;
        }
        match churn {
            Churn::StepDown => {
                self.raft.step_down(now);
                true
            }
            Churn::TransferTo(to) => self.raft.transfer_leadership(now, u64::from(to)).is_ok(),
            Churn::SetPriority(node, priority) => self
                .raft
                .propose_config_change(now, ConfigChange::SetPriority(u64::from(node), priority))
                .is_ok(),
            Churn::Demote(node) => self
                .raft
                .propose_config_change(now, ConfigChange::DemoteVoter(u64::from(node)))
                .is_ok(),
            Churn::Promote(node) => self
                .raft
                .propose_config_change(now, ConfigChange::PromoteLearner(u64::from(node), 1))
                .is_ok(),
        }
    }

    fn poll_effect(&mut self) -> Option<ReplicaEffect<Message>> {
        self.pump();
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.raft.poll_timeout()
    }

    fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            term: self.raft.term(),
            role: match self.raft.role() {
                raft::Role::Leader => Role::Leader,
                raft::Role::Candidate | raft::Role::PreCandidate => Role::Candidate,
                _ => Role::Follower,
            },
            leader: self.raft.leader().and_then(|l| u32::try_from(l).ok()),
            commit_index: self.raft.commit_index(),
            last_index: self.shadow.last().map(|e| e.index),
        }
    }

    fn entry(&self, index: u64) -> Option<&SimEntry> {
        self.shadow.get(usize::try_from(index).ok()?)
    }

    fn msg_term(msg: &Message) -> u64 {
        msg.term
    }

    fn set_msg_term(msg: &mut Message, term: u64) {
        msg.term = term;
    }

    fn maybe_snapshot(&mut self, now: Instant, durable_index: Option<u64>, every: u64) -> bool {
        let Some(index) = self.raft.applied_index().min(durable_index) else {
            return false;
        };
        let last = self.raft.snapshot().map(|s| s.last.index);
        if last.is_some_and(|l| index < l.saturating_add(every)) || (last.is_none() && index + 1 < every) {
            return false;
        }
        let Ok(meta) = self.raft.snapshot_taken(now, index) else {
            return false;
        };
        if usize::try_from(index).map_or(true, |i| i >= self.shadow.len()) {
            self.violation.get_or_insert(format!(
                "snapshot at {index} beyond the log ({})",
                self.shadow.len()
            ));
            return false;
        }
        self.snapshot = Some((meta.last, None));
        true
    }

    fn learners(&self) -> Vec<NodeId> {
        self.raft
            .membership()
            .learners()
            .iter()
            .filter_map(|l| u32::try_from(*l).ok())
            .collect()
    }

    fn harvest_coverage(&self, coverage: &mut crate::coverage::Coverage) {
        let st = self.raft.stats();
        coverage.add("raft.core.pre_votes_started", st.pre_votes_started);
        coverage.add("raft.core.elections_started", st.elections_started);
        coverage.add("raft.core.became_leader", st.became_leader);
        coverage.add("raft.core.check_quorum_step_downs", st.check_quorum_step_downs);
        coverage.add("raft.core.priority_waits", st.priority_waits);
        coverage.add("raft.core.truncations", st.truncations);
        coverage.add("raft.core.transfers_started", st.transfers_started);
        coverage.add("raft.core.transfers_aborted", st.transfers_aborted);
        coverage.add("raft.core.retransmits", st.retransmits);
        coverage.add(
            "raft.core.acknowledged_entries_lost",
            st.acknowledged_entries_lost,
        );
        coverage.add("raft.core.messages_dropped", st.dropped.values().sum());
        coverage.add("raft.core.snapshots_installed", st.snapshots_installed);
        coverage.add("raft.core.snapshots_sent", st.snapshots_sent);
        coverage.add("raft.snapshot.chunks_served", self.snapshot_chunks_served);
        coverage.add("raft.snapshot.installed", self.snapshots_installed);
        coverage.add("raft.snapshot.duplicate_install", self.duplicate_installs);
        coverage.add("log.read.from_disk", self.reads_from_disk);
        coverage.add("log.read.from_memory", self.reads_from_memory);
        coverage.add("log.read.failed", self.reads_failed);
    }

    fn contract_violation(&self) -> Option<String> {
        self.violation.clone()
    }

    fn fmt_msg(msg: &Message, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = msg.term;
        match &msg.body {
            MessageBody::PreVote(v) => {
                write!(f, "PreVote t{t} last={:?}", v.last_log.map(|l| (l.term, l.index)))
            }
            MessageBody::PreVoteResp(r) => write!(f, "PreVoteResp t{t} granted={}", r.granted),
            MessageBody::Vote(v) => write!(
                f,
                "Vote t{t} last={:?}{}",
                v.last_log.map(|l| (l.term, l.index)),
                if v.transfer { " transfer" } else { "" }
            ),
            MessageBody::VoteResp(r) => write!(f, "VoteResp t{t} granted={}", r.granted),
            MessageBody::Append(a) => write!(
                f,
                "Append t{t} prev={:?} n={} commit={:?}",
                a.prev.map(|l| (l.term, l.index)),
                a.entries.len(),
                a.commit
            ),
            MessageBody::AppendResp(AppendResponse::Accepted { match_index }) => {
                write!(f, "AppendResp t{t} accepted match={match_index:?}")
            }
            MessageBody::AppendResp(AppendResponse::Rejected { rejected_prev, hint }) => write!(
                f,
                "AppendResp t{t} rejected prev={rejected_prev} hint={:?}",
                hint.map(|l| (l.term, l.index))
            ),
            MessageBody::Heartbeat(h) => write!(f, "Heartbeat t{t} commit={:?}", h.commit),
            MessageBody::TimeoutNow => write!(f, "TimeoutNow t{t}"),
            MessageBody::InstallSnapshot(c) => write!(
                f,
                "InstallSnapshot t{t} snap=({}, {}) offset={} {}B done={}",
                c.meta.last.term,
                c.meta.last.index,
                c.offset,
                c.data.len(),
                c.done
            ),
            MessageBody::InstallSnapshotResp(r) => write!(
                f,
                "InstallSnapshotResp t{t} snap=({}, {}) next={} installed={}",
                r.snapshot.term, r.snapshot.index, r.next_offset, r.installed
            ),
            other => write!(f, "{other:?} t{t}"),
        }
    }
}

/// Builds core Raft replicas with the seed's timings.
#[derive(Debug, Clone, Default)]
pub struct CoreFactory {
    /// Raft timings and limits.
    pub config: RaftConfig,
}

impl NodeFactory for CoreFactory {
    type R = CoreReplica;

    fn start(
        &mut self,
        id: NodeId,
        peers: &[NodeId],
        rng: SimRng,
        now: Instant,
        restored: Restored,
    ) -> Result<(CoreReplica, bool), String> {
        CoreReplica::start(id, peers, self.config.clone(), rng, now, restored)
    }
}
