//! A deterministic in-memory cluster for the Raft engine: a simulated network (latency,
//! loss, duplication, reordering, partitions, per-node delay), simulated disks (writes in
//! order, fsync completions, crashes that lose unsynced writes or keep a random prefix of
//! them), a state machine per node, and safety checkers that panic on the first
//! violation (election safety, log matching, leader completeness, state-machine safety,
//! commit monotonicity).
//!
//! One clock and one seeded RNG drive everything, so a seed replays exactly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use oxbow_core::raft::*;
use oxbow_core::time::Instant;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Network behaviour.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Per-mille probability a message is lost.
    pub loss_per_mille: u32,
    /// Per-mille probability a message is delivered twice.
    pub dup_per_mille: u32,
}

impl NetConfig {
    pub fn fixed(latency: Duration) -> Self {
        NetConfig {
            latency_min: latency,
            latency_max: latency,
            loss_per_mille: 0,
            dup_per_mille: 0,
        }
    }
}

/// Disk behaviour.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    pub fsync_min: Duration,
    pub fsync_max: Duration,
    pub read: Duration,
}

impl DiskConfig {
    pub fn fixed(fsync: Duration) -> Self {
        DiskConfig {
            fsync_min: fsync,
            fsync_max: fsync,
            read: fsync,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub voters: Vec<(NodeId, Priority)>,
    pub learners: Vec<NodeId>,
    /// Nodes that exist (may include nodes outside the bootstrap membership).
    pub extra_nodes: Vec<NodeId>,
    pub raft: RaftConfig,
    pub net: NetConfig,
    pub disk: DiskConfig,
    pub seed: u64,
}

impl Options {
    pub fn new(n: u64, seed: u64) -> Self {
        Options {
            voters: (1..=n).map(|i| (i, DEFAULT_PRIORITY)).collect(),
            learners: Vec::new(),
            extra_nodes: Vec::new(),
            raft: RaftConfig::default(),
            net: NetConfig::fixed(Duration::from_millis(1)),
            disk: DiskConfig::fixed(Duration::from_micros(500)),
            seed,
        }
    }
}

/// What a write does to a disk.
#[derive(Clone, Debug)]
enum WriteOp {
    Append(Vec<Entry>),
    Truncate(Index),
    Chunk {
        snapshot: LogId,
        offset: u64,
        data: Bytes,
    },
    Install {
        meta: SnapshotMeta,
        discard: bool,
    },
}

/// One view of a disk (durable, or everything written).
#[derive(Clone, Debug, Default)]
pub struct DiskView {
    pub hard_state: HardState,
    pub log: Vec<Entry>,
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    pub partial: BTreeMap<(u64, u64), Vec<u8>>,
    pub commit_hint: Option<Index>,
}

impl DiskView {
    fn apply(&mut self, op: &WriteOp) {
        match op {
            WriteOp::Append(entries) => {
                // A snapshot taken after this write was issued already covers a prefix.
                let snap = self.snapshot.as_ref().map(|(m, _)| m.last.index);
                let fresh = entries.iter().filter(|e| Some(e.index) > snap);
                for e in fresh {
                    if let Some(last) = self.log.last() {
                        assert_eq!(last.last_index + 1, e.index, "disk append must follow the log");
                    }
                    self.log.push(e.clone());
                }
            }
            WriteOp::Truncate(from) => self.log.retain(|e| e.index < *from),
            WriteOp::Chunk {
                snapshot,
                offset,
                data,
            } => {
                let buf = self.partial.entry((snapshot.term, snapshot.index)).or_default();
                buf.truncate(*offset as usize);
                buf.extend_from_slice(data);
            }
            WriteOp::Install { meta, discard } => {
                let data = self
                    .partial
                    .remove(&(meta.last.term, meta.last.index))
                    .unwrap_or_default();
                self.partial.clear();
                self.snapshot = Some((meta.clone(), Bytes::from(data)));
                if *discard {
                    self.log.clear();
                } else {
                    self.log.retain(|e| e.index > meta.last.index);
                }
            }
        }
    }

    fn compact(&mut self, through: Index) {
        self.log.retain(|e| e.index > through);
    }

    pub fn entry_at(&self, index: Index) -> Option<&Entry> {
        let k = self.log.partition_point(|e| e.last_index < index);
        self.log.get(k).filter(|e| e.index <= index)
    }

    fn recovered(&self) -> RecoveredState {
        let mut bounds: Vec<(Term, Index)> = Vec::new();
        for e in &self.log {
            if bounds.last().is_none_or(|&(t, _)| t != e.term) {
                bounds.push((e.term, e.index));
            }
        }
        RecoveredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.as_ref().map(|(m, _)| m.clone()),
            term_boundaries: bounds,
            last_index: self.log.last().map(|e| e.last_index),
            config_entries: self
                .log
                .iter()
                .filter(|e| e.kind == EntryKind::Config)
                .cloned()
                .collect(),
            commit_hint: self.commit_hint,
        }
    }
}

/// The applied state of one node: every applied entry (index, last, term, payload).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub entries: Vec<(Index, Index, Term, Bytes)>,
    pub last: Option<Index>,
}

impl StateMachine {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u64(self.last.map_or(u64::MAX, |l| l));
        for (i, l, t, p) in &self.entries {
            b.put_u64(*i);
            b.put_u64(*l);
            b.put_u64(*t);
            b.put_u32(p.len() as u32);
            b.put_slice(p);
        }
        // Pad so snapshots span several chunks in tests with small chunk sizes.
        b.freeze()
    }

    fn decode(data: &[u8]) -> StateMachine {
        let rd = |p: &mut usize, n: usize| {
            let s = &data[*p..*p + n];
            *p += n;
            s
        };
        let mut p = 0;
        let last = u64::from_be_bytes(rd(&mut p, 8).try_into().unwrap());
        let mut sm = StateMachine {
            entries: Vec::new(),
            last: (last != u64::MAX).then_some(last),
        };
        while p < data.len() {
            let i = u64::from_be_bytes(rd(&mut p, 8).try_into().unwrap());
            let l = u64::from_be_bytes(rd(&mut p, 8).try_into().unwrap());
            let t = u64::from_be_bytes(rd(&mut p, 8).try_into().unwrap());
            let n = u32::from_be_bytes(rd(&mut p, 4).try_into().unwrap()) as usize;
            sm.entries.push((i, l, t, Bytes::copy_from_slice(rd(&mut p, n))));
        }
        sm
    }
}

pub struct SimNode {
    pub raft: Option<Raft>,
    pub incarnation: u64,
    pub durable: DiskView,
    pub written: DiskView,
    unsynced: Vec<(WriteId, WriteOp)>,
    unsynced_hs: Vec<HardState>,
    last_write_done: Instant,
    last_hs_done: Instant,
    pub sm: StateMachine,
    pub commit_seen: Option<Index>,
}

#[derive(Debug)]
enum EventKind {
    Deliver(Message),
    WriteDone {
        node: NodeId,
        inc: u64,
        write_id: WriteId,
    },
    HsDone {
        node: NodeId,
        inc: u64,
        hs: HardState,
    },
    Read {
        node: NodeId,
        inc: u64,
        effect: Effect,
    },
}

struct Event {
    at: Instant,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The global safety checker.
#[derive(Default, Debug)]
pub struct Checker {
    pub leaders: BTreeMap<Term, NodeId>,
    /// Committed entries by first offset: (last offset, term, payload).
    pub committed: BTreeMap<Index, (Index, Term, Bytes)>,
    pub elections: u64,
}

impl Checker {
    fn record_committed(&mut self, who: NodeId, e: &Entry) {
        match self.committed.get(&e.index) {
            Some((l, t, p)) => assert!(
                *l == e.last_index && *t == e.term && *p == e.payload,
                "STATE MACHINE SAFETY: node {who} has {e:?} where ({l}, t{t}) was committed"
            ),
            None => {
                self.committed
                    .insert(e.index, (e.last_index, e.term, e.payload.clone()));
            }
        }
    }
}

pub struct Cluster {
    pub now: Instant,
    pub nodes: BTreeMap<NodeId, SimNode>,
    queue: BinaryHeap<Reverse<Event>>,
    seq: u64,
    pub net: NetConfig,
    pub disk: DiskConfig,
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Extra delay of every message sent to a node.
    pub slow: BTreeMap<NodeId, Duration>,
    pub rng: ChaCha8Rng,
    pub checker: Checker,
    pub bootstrap: Membership,
    pub raft_cfg: RaftConfig,
    /// Human-readable notable events (role changes), for scenarios.
    pub trace: Vec<String>,
    pub trace_messages: bool,
    pub steps: u64,
    /// Per-node commit times of offsets (node, offset) -> time (leader only).
    pub commit_times: BTreeMap<Index, Instant>,
    pub messages_sent: u64,
    pub tear_on_crash: bool,
}

impl Cluster {
    pub fn new(opts: Options) -> Cluster {
        let bootstrap = Membership::new(opts.voters.iter().copied(), opts.learners.iter().copied()).unwrap();
        let mut c = Cluster {
            now: Instant::ZERO,
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            net: opts.net,
            disk: opts.disk,
            blocked: BTreeSet::new(),
            slow: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            checker: Checker::default(),
            bootstrap,
            raft_cfg: opts.raft,
            trace: Vec::new(),
            trace_messages: false,
            steps: 0,
            commit_times: BTreeMap::new(),
            messages_sent: 0,
            tear_on_crash: true,
        };
        let ids: Vec<NodeId> = opts
            .voters
            .iter()
            .map(|v| v.0)
            .chain(opts.learners.iter().copied())
            .chain(opts.extra_nodes.iter().copied())
            .collect();
        for id in ids {
            c.nodes.insert(
                id,
                SimNode {
                    raft: None,
                    incarnation: 0,
                    durable: DiskView::default(),
                    written: DiskView::default(),
                    unsynced: Vec::new(),
                    unsynced_hs: Vec::new(),
                    last_write_done: Instant::ZERO,
                    last_hs_done: Instant::ZERO,
                    sm: StateMachine::default(),
                    commit_seen: None,
                },
            );
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        let node = self.nodes.get_mut(&id).unwrap();
        node.incarnation += 1;
        node.written = node.durable.clone();
        node.unsynced.clear();
        node.unsynced_hs.clear();
        node.commit_seen = None;
        node.sm = match &node.durable.snapshot {
            Some((_, data)) => StateMachine::decode(data),
            None => StateMachine::default(),
        };
        let rec = node.durable.recovered();
        let raft = Raft::new(
            id,
            self.raft_cfg.clone(),
            self.bootstrap.clone(),
            rec,
            seed,
            self.now,
        )
        .expect("recovery must succeed");
        node.raft = Some(raft);
        self.drain(id);
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        self.nodes[&id].raft.as_ref().expect("node is up")
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[&id].raft.is_some()
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Runs `f` on a live node's engine and processes its effects.
    pub fn with<R>(&mut self, id: NodeId, f: impl FnOnce(&mut Raft, Instant) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.nodes.get_mut(&id)?.raft.as_mut()?, now);
        self.drain(id);
        Some(r)
    }

    fn schedule(&mut self, at: Instant, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Reverse(Event {
            at,
            seq: self.seq,
            kind,
        }));
    }

    fn random_duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi.saturating_sub(lo)).as_nanos() as u64;
        if span == 0 {
            return lo;
        }
        lo + Duration::from_nanos(self.rng.next_u64() % span)
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && (self.rng.next_u64() % 1000) < u64::from(per_mille)
    }

    fn send(&mut self, m: Message) {
        self.messages_sent += 1;
        if self.trace_messages {
            self.trace.push(format!(
                "{:?} {} -> {} t{} {:?}",
                self.now, m.from, m.to, m.term, m.body
            ));
        }
        if self.blocked.contains(&(m.from, m.to)) || self.chance(self.net.loss_per_mille) {
            return;
        }
        let extra = self.slow.get(&m.to).copied().unwrap_or_default();
        let copies = if self.chance(self.net.dup_per_mille) { 2 } else { 1 };
        for _ in 0..copies {
            let d = self.random_duration(self.net.latency_min, self.net.latency_max) + extra;
            self.schedule(self.now + d, EventKind::Deliver(m.clone()));
        }
    }

    /// Processes every effect a node has queued.
    pub fn drain(&mut self, id: NodeId) {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(raft) = node.raft.as_mut() else { return };
            let Some(effect) = raft.poll_effect() else { break };
            self.apply_effect(id, effect);
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(r) = node.raft.as_ref() {
                node.written.commit_hint = r.commit_hint();
            }
        }
    }

    fn apply_effect(&mut self, id: NodeId, effect: Effect) {
        let inc = self.nodes[&id].incarnation;
        match effect {
            Effect::Send(m) => {
                assert_eq!(m.from, id);
                self.send(m);
            }
            Effect::PersistHardState(hs) => {
                // The per-shard key-value log completes writes in order.
                let d = self.random_duration(self.disk.fsync_min, self.disk.fsync_max);
                let n = self.nodes.get_mut(&id).unwrap();
                n.unsynced_hs.push(hs);
                let at = (self.now + d).max(n.last_hs_done);
                n.last_hs_done = at;
                self.schedule(at, EventKind::HsDone { node: id, inc, hs });
            }
            Effect::Append { write_id, entries } => self.write(id, write_id, WriteOp::Append(entries)),
            Effect::Truncate { write_id, from_index } => {
                self.write(id, write_id, WriteOp::Truncate(from_index))
            }
            Effect::WriteSnapshotChunk {
                write_id,
                meta,
                offset,
                data,
                ..
            } => self.write(
                id,
                write_id,
                WriteOp::Chunk {
                    snapshot: meta.last,
                    offset,
                    data,
                },
            ),
            Effect::InstallSnapshot {
                write_id,
                meta,
                discard_log,
            } => self.write(
                id,
                write_id,
                WriteOp::Install {
                    meta,
                    discard: discard_log,
                },
            ),
            Effect::CompactLog { through_index } => {
                let n = self.nodes.get_mut(&id).unwrap();
                n.written.compact(through_index);
                n.durable.compact(through_index);
            }
            e @ (Effect::ReadEntries { .. } | Effect::ReadSnapshotChunk { .. }) => {
                let at = self.now + self.disk.read;
                self.schedule(
                    at,
                    EventKind::Read {
                        node: id,
                        inc,
                        effect: e,
                    },
                );
            }
            Effect::Apply { entries } => self.apply_entries(id, entries),
            Effect::RestoreSnapshot { meta } => {
                let n = self.nodes.get_mut(&id).unwrap();
                let (m, data) = n.written.snapshot.clone().expect("restore needs a snapshot");
                assert_eq!(m, meta, "restoring the installed snapshot");
                n.sm = StateMachine::decode(&data);
                assert_eq!(
                    n.sm.last,
                    Some(meta.last.index),
                    "snapshot state ends at its index"
                );
                let sm = n.sm.clone();
                for (i, l, t, p) in sm.entries {
                    let e = Entry {
                        term: t,
                        index: i,
                        last_index: l,
                        kind: EntryKind::Data,
                        payload: p,
                    };
                    self.checker.record_committed(id, &e);
                }
            }
            Effect::CommitAdvanced { commit } => self.on_commit(id, commit),
            Effect::RoleChanged { role, term, leader } => self.on_role(id, role, term, leader),
            other => panic!("unexpected effect {other:?}"),
        }
    }

    fn write(&mut self, id: NodeId, write_id: WriteId, op: WriteOp) {
        let d = self.random_duration(self.disk.fsync_min, self.disk.fsync_max);
        let n = self.nodes.get_mut(&id).unwrap();
        n.written.apply(&op);
        n.unsynced.push((write_id, op));
        let at = (self.now + d).max(n.last_write_done);
        n.last_write_done = at;
        let inc = n.incarnation;
        self.schedule(
            at,
            EventKind::WriteDone {
                node: id,
                inc,
                write_id,
            },
        );
    }

    fn apply_entries(&mut self, id: NodeId, entries: Vec<Entry>) {
        for e in &entries {
            let n = &self.nodes[&id];
            assert_eq!(
                e.index,
                next_after(n.sm.last),
                "node {id} applies in order: {e:?} after {:?}",
                n.sm.last
            );
            self.checker.record_committed(id, e);
            let n = self.nodes.get_mut(&id).unwrap();
            n.sm.last = Some(e.last_index);
            if e.kind == EntryKind::Data {
                n.sm.entries
                    .push((e.index, e.last_index, e.term, e.payload.clone()));
            }
        }
    }

    fn on_commit(&mut self, id: NodeId, commit: Index) {
        let n = self.nodes.get_mut(&id).unwrap();
        assert!(
            Some(commit) > n.commit_seen,
            "COMMIT WENT BACK on {id}: {commit} after {:?}",
            n.commit_seen
        );
        n.commit_seen = Some(commit);
        let is_leader = n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader);
        if is_leader {
            let entries: Vec<Entry> = n
                .written
                .log
                .iter()
                .filter(|e| e.last_index <= commit)
                .cloned()
                .collect();
            for e in entries {
                self.checker.record_committed(id, &e);
            }
            let now = self.now;
            self.commit_times.entry(commit).or_insert(now);
        }
    }

    fn on_role(&mut self, id: NodeId, role: Role, term: Term, leader: Option<NodeId>) {
        self.trace.push(format!(
            "{:?} n{id} {role:?} term {term} leader {leader:?}",
            self.now
        ));
        if role != Role::Leader {
            return;
        }
        self.checker.elections += 1;
        if let Some(prev) = self.checker.leaders.insert(term, id) {
            assert_eq!(prev, id, "ELECTION SAFETY: two leaders in term {term}");
        }
        // Leader completeness: every committed entry is in the new leader's log.
        let n = &self.nodes[&id];
        let snap = n.written.snapshot.as_ref().map(|(m, _)| m.last.index);
        for (&index, (last, t, p)) in &self.checker.committed {
            if Some(*last) <= snap {
                continue;
            }
            let e = n.written.entry_at(index);
            assert!(
                e.is_some_and(|e| e.term == *t && e.last_index == *last && e.payload == *p),
                "LEADER COMPLETENESS: leader {id} of term {term} lacks committed entry at {index} (t{t})"
            );
        }
    }

    /// Checks log matching across all pairs of live nodes (written logs).
    pub fn check_log_matching(&self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for (k, &a) in ids.iter().enumerate() {
            for &b in &ids[k + 1..] {
                let (la, lb) = (&self.nodes[&a].written.log, &self.nodes[&b].written.log);
                let mb: BTreeMap<Index, &Entry> = lb.iter().map(|e| (e.index, e)).collect();
                let mut matched = false;
                for e in la.iter().rev() {
                    match mb.get(&e.index) {
                        Some(o) if matched || o.term == e.term => {
                            matched = true;
                            assert!(**o == *e, "LOG MATCHING: n{a} {e:?} vs n{b} {o:?}");
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn process(&mut self, ev: Event) {
        match ev.kind {
            EventKind::Deliver(m) => {
                let to = m.to;
                if self.nodes.get(&to).is_none_or(|n| n.raft.is_none()) {
                    return;
                }
                if self.blocked.contains(&(m.from, m.to)) {
                    return;
                }
                self.with(to, |r, now| r.handle(now, Input::Message(m)));
            }
            EventKind::WriteDone { node, inc, write_id } => {
                let n = self.nodes.get_mut(&node).unwrap();
                if n.incarnation != inc || n.raft.is_none() {
                    return;
                }
                let k = n.unsynced.iter().take_while(|(w, _)| *w <= write_id).count();
                let done: Vec<(WriteId, WriteOp)> = n.unsynced.drain(..k).collect();
                for (_, op) in &done {
                    n.durable.apply(op);
                }
                n.durable.commit_hint = n
                    .written
                    .commit_hint
                    .min(n.durable.log.last().map(|e| e.last_index));
                self.with(node, |r, now| r.handle(now, Input::WriteDurable { write_id }));
            }
            EventKind::HsDone { node, inc, hs } => {
                let n = self.nodes.get_mut(&node).unwrap();
                if n.incarnation != inc || n.raft.is_none() {
                    return;
                }
                if let Some(k) = n.unsynced_hs.iter().position(|h| *h == hs) {
                    n.unsynced_hs.drain(..=k);
                }
                n.durable.hard_state = hs;
                self.with(node, |r, now| r.handle(now, Input::HardStateDurable(hs)));
            }
            EventKind::Read { node, inc, effect } => {
                let n = &self.nodes[&node];
                if n.incarnation != inc || n.raft.is_none() {
                    return;
                }
                let input = read(&n.written, effect);
                self.with(node, |r, now| r.handle(now, input));
            }
        }
    }

    fn next_timer(&self) -> Option<(Instant, NodeId)> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().and_then(|r| r.poll_timeout()).map(|t| (t, *id)))
            .min()
    }

    /// Processes the next event or timer if it is due by `limit`; otherwise moves the
    /// clock to `limit` and returns false.
    pub fn step(&mut self, limit: Instant) -> bool {
        let ev_at = self.queue.peek().map(|Reverse(e)| e.at);
        let timer = self.next_timer();
        let next = match (ev_at, timer) {
            (Some(e), Some((t, _))) => e.min(t),
            (Some(e), None) => e,
            (None, Some((t, _))) => t,
            (None, None) => {
                self.now = self.now.max(limit);
                return false;
            }
        };
        if next > limit {
            self.now = self.now.max(limit);
            return false;
        }
        self.now = self.now.max(next);
        self.steps += 1;
        if ev_at == Some(next) {
            let Reverse(ev) = self.queue.pop().unwrap();
            self.process(ev);
        } else if let Some((_, id)) = timer {
            self.with(id, |r, now| r.handle_timeout(now));
        }
        if self.steps % 4096 == 0 {
            self.check_log_matching();
        }
        true
    }

    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        let mut guard = 0u64;
        while self.step(limit) {
            guard += 1;
            assert!(guard < 50_000_000, "livelock");
        }
    }

    /// Runs until `pred` holds (checked after each step) or `d` passes; returns whether it
    /// held.
    pub fn run_until(&mut self, d: Duration, mut pred: impl FnMut(&Cluster) -> bool) -> bool {
        let limit = self.now + d;
        loop {
            if pred(self) {
                return true;
            }
            if !self.step(limit) {
                return pred(self);
            }
        }
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| {
                n.raft
                    .as_ref()
                    .filter(|r| r.role() == Role::Leader)
                    .map(|r| (r.term(), *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    pub fn propose(&mut self, id: NodeId, payload: &str, count: u64) -> Result<LogId, ProposeError> {
        let p = Bytes::copy_from_slice(payload.as_bytes());
        self.with(id, |r, now| r.propose(now, p, count))
            .unwrap_or(Err(ProposeError::NotLeader { leader: None }))
    }

    /// Crashes a node: unsynced writes are lost, except (with tearing on) a random prefix
    /// of them that happened to reach the disk.
    pub fn crash(&mut self, id: NodeId) {
        let tear = self.tear_on_crash;
        let keep_w = {
            let n = &self.nodes[&id];
            if tear && !n.unsynced.is_empty() {
                (self.rng.next_u64() as usize) % (n.unsynced.len() + 1)
            } else {
                0
            }
        };
        let keep_h = {
            let n = &self.nodes[&id];
            if tear && !n.unsynced_hs.is_empty() {
                (self.rng.next_u64() as usize) % (n.unsynced_hs.len() + 1)
            } else {
                0
            }
        };
        let n = self.nodes.get_mut(&id).unwrap();
        for (_, op) in n.unsynced.drain(..).take(keep_w) {
            n.durable.apply(&op);
        }
        if keep_h > 0 {
            n.durable.hard_state = n.unsynced_hs[keep_h - 1];
        }
        n.raft = None;
        n.durable.commit_hint = n
            .durable
            .commit_hint
            .min(n.durable.log.last().map(|e| e.last_index));
        self.trace.push(format!("{:?} n{id} crashed", self.now));
    }

    pub fn restart(&mut self, id: NodeId) {
        assert!(self.nodes[&id].raft.is_none(), "restart a crashed node");
        self.trace.push(format!("{:?} n{id} restarted", self.now));
        self.start(id);
    }

    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.blocked.clear();
        for (i, g) in groups.iter().enumerate() {
            for (j, h) in groups.iter().enumerate() {
                if i != j {
                    for &a in g {
                        for &b in h {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Takes a snapshot on `id` at its applied offset.
    pub fn take_snapshot(&mut self, id: NodeId) -> Option<SnapshotMeta> {
        let n = self.nodes.get_mut(&id)?;
        let raft = n.raft.as_mut()?;
        let applied = raft.applied_index()?;
        if n.sm.last != Some(applied) {
            return None;
        }
        let data = n.sm.encode();
        let meta = raft.snapshot_taken(self.now, applied).ok()?;
        n.written.snapshot = Some((meta.clone(), data.clone()));
        n.durable.snapshot = Some((meta.clone(), data));
        self.drain(id);
        Some(meta)
    }

    /// Whether every live node applied through `index`.
    pub fn all_applied(&self, index: Index) -> bool {
        self.nodes
            .values()
            .all(|n| n.raft.is_none() || n.sm.last >= Some(index))
    }
}

fn read(disk: &DiskView, effect: Effect) -> Input {
    match effect {
        Effect::ReadEntries {
            read_id,
            from_index,
            max_bytes,
            ..
        } => {
            let snap = disk.snapshot.as_ref().map(|(m, _)| m.last.index);
            if Some(from_index) <= snap || disk.entry_at(from_index).is_none() {
                return Input::EntriesRead {
                    read_id,
                    result: Err(ReadError::Compacted),
                };
            }
            let k = disk.log.partition_point(|e| e.last_index < from_index);
            let mut out = Vec::new();
            let mut bytes = 0;
            for e in &disk.log[k..] {
                if !out.is_empty() && bytes + e.size_bytes() > max_bytes {
                    break;
                }
                bytes += e.size_bytes();
                out.push(e.clone());
            }
            Input::EntriesRead {
                read_id,
                result: Ok(out),
            }
        }
        Effect::ReadSnapshotChunk {
            read_id,
            snapshot,
            offset,
            max_bytes,
            ..
        } => match &disk.snapshot {
            Some((m, data)) if m.last == snapshot => {
                let start = (offset as usize).min(data.len());
                let end = (start + max_bytes).min(data.len());
                Input::SnapshotChunkRead {
                    read_id,
                    result: Ok(SnapshotChunkData {
                        data: data.slice(start..end),
                        done: end == data.len(),
                    }),
                }
            }
            _ => Input::SnapshotChunkRead {
                read_id,
                result: Err(ReadError::SnapshotGone),
            },
        },
        other => panic!("not a read: {other:?}"),
    }
}
