//! Snapshots: the state machine hands one in (`Raft::snapshot_taken`) and the log prefix
//! is dropped; a leader streams it in chunks to followers whose next offset was
//! compacted (chunks read through effects and throttled like entry reads, one chunk in
//! flight, resent after the retransmit timeout); a follower writes the chunks, installs
//! the snapshot (keeping its log suffix only if it contains the snapshot's last entry),
//! and then restores its state machine from it.

use crate::time::Instant;

use super::cache::EntryCache;
use super::io::{Effect, ReadError, SnapshotChunkData};
use super::membership::ConfigLog;
use super::message::{MessageBody, SnapshotChunk, SnapshotMeta, SnapshotResponse};
use super::node::{IncomingSnapshot, PendingWrite, Raft, WriteKind};
use super::progress::ProgressState;
use super::stats::DropReason;
use super::types::{next_after, Index, LogId, NodeId, ReadId};

/// Why a snapshot could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The offset has not been applied yet.
    #[error("offset {0} not applied yet")]
    NotApplied(Index),
    /// The current snapshot already covers the offset.
    #[error("offset {0} already covered by the snapshot")]
    AlreadyCovered(Index),
    /// The offset is not in the log.
    #[error("offset {0} not in the log")]
    NotInLog(Index),
}

impl Raft {
    /// The state machine has durably saved a snapshot covering every offset through
    /// `index` (the last offset of an applied entry). Returns the metadata the runtime
    /// must store with it; the engine then forgets the prefix and emits
    /// [`Effect::CompactLog`].
    pub fn snapshot_taken(&mut self, now: Instant, index: Index) -> Result<SnapshotMeta, SnapshotError> {
        self.now = self.now.max(now);
        if Some(index) > self.applied {
            return Err(SnapshotError::NotApplied(index));
        }
        if self.log.snapshot().is_some_and(|s| s.index >= index) {
            return Err(SnapshotError::AlreadyCovered(index));
        }
        let term = self.log.term_at(index).ok_or(SnapshotError::NotInLog(index))?;
        let meta = SnapshotMeta {
            last: LogId::new(term, index),
            membership: self.configs.at(index).clone(),
        };
        self.log.compact(meta.last);
        self.cache.compact(index);
        self.configs.compact(index);
        self.durable = self.durable.max(Some(index));
        self.snapshot_meta = Some(meta.clone());
        self.effects
            .push_back(Effect::CompactLog { through_index: index });
        Ok(meta)
    }

    // ----- leader: sending ----------------------------------------------------------------

    pub(crate) fn start_snapshot_send(&mut self, now: Instant, peer: NodeId) {
        let Some(snap) = self.snapshot_meta.as_ref().map(|m| m.last) else {
            return;
        };
        let Some(p) = self
            .leader_state
            .as_mut()
            .and_then(|ls| ls.progress.get_mut(&peer))
        else {
            return;
        };
        let same =
            p.state == ProgressState::Snapshot && p.snapshot.as_ref().is_some_and(|s| s.snapshot == snap);
        if !same {
            p.become_snapshot(snap);
        }
        self.request_snapshot_chunk(now, peer);
    }

    fn request_snapshot_chunk(&mut self, now: Instant, peer: NodeId) {
        let idle = self
            .leader_state
            .as_ref()
            .and_then(|ls| ls.progress.get(&peer))
            .and_then(|p| p.snapshot.as_ref())
            .is_some_and(|s| s.read_pending.is_none() && s.in_flight_since.is_none());
        if !idle || !self.recovery_allowed(now) {
            return;
        }
        let read_id = self.next_read_id();
        let max_bytes = self.cfg.snapshot_chunk_bytes;
        let Some(s) = self
            .leader_state
            .as_mut()
            .and_then(|ls| ls.progress.get_mut(&peer))
            .and_then(|p| p.snapshot.as_mut())
        else {
            return;
        };
        let (snapshot, offset) = (s.snapshot, s.acked_offset);
        s.read_pending = Some((read_id, offset));
        self.effects.push_back(Effect::ReadSnapshotChunk {
            read_id,
            peer,
            snapshot,
            offset,
            max_bytes,
        });
    }

    pub(crate) fn on_snapshot_chunk_read(
        &mut self,
        now: Instant,
        read_id: ReadId,
        result: Result<SnapshotChunkData, ReadError>,
    ) {
        let found = self.leader_state.as_ref().and_then(|ls| {
            ls.progress.iter().find_map(|(id, p)| {
                p.snapshot
                    .as_ref()
                    .filter(|s| s.read_pending.is_some_and(|(r, _)| r == read_id))
                    .map(|s| (*id, s.snapshot, s.read_pending, s.acked_offset))
            })
        });
        let Some((peer, snapshot, Some((_, offset)), acked)) = found else {
            return self.drop_input(DropReason::StaleCompletion);
        };
        if let Some(s) = self.snapshot_send_mut(peer) {
            s.read_pending = None;
        }
        if offset != acked {
            // The follower acknowledged more while this read was out: read again from
            // where it now is (the bytes read belong to `offset`, not `acked`).
            self.drop_input(DropReason::StaleCompletion);
            return self.request_snapshot_chunk(now, peer);
        }
        let current = self.snapshot_meta.clone();
        let data = match (result, current) {
            (Ok(d), Some(meta)) if meta.last == snapshot => (d, meta),
            _ => {
                // The snapshot changed or is gone: start over with the current one.
                if let Some(p) = self
                    .leader_state
                    .as_mut()
                    .and_then(|ls| ls.progress.get_mut(&peer))
                {
                    p.snapshot = None;
                    p.state = ProgressState::Probe;
                    p.next_index = 0;
                }
                return self.start_snapshot_send(now, peer);
            }
        };
        let (chunk, meta) = data;
        self.charge_recovery(now, chunk.data.len());
        if let Some(s) = self.snapshot_send_mut(peer) {
            s.in_flight_since = Some(now);
        }
        let msg = SnapshotChunk {
            meta,
            offset,
            data: chunk.data,
            done: chunk.done,
        };
        self.send(peer, MessageBody::InstallSnapshot(msg));
    }

    fn snapshot_send_mut(&mut self, peer: NodeId) -> Option<&mut super::progress::SnapshotSend> {
        self.leader_state
            .as_mut()?
            .progress
            .get_mut(&peer)?
            .snapshot
            .as_mut()
    }

    pub(crate) fn on_snapshot_response(&mut self, now: Instant, from: NodeId, r: SnapshotResponse) {
        let Some(p) = self
            .leader_state
            .as_mut()
            .and_then(|ls| ls.progress.get_mut(&from))
        else {
            return self.drop_input(DropReason::UnexpectedMessage);
        };
        p.last_heard = now;
        let current = p.snapshot.as_ref().filter(|s| s.snapshot == r.snapshot).is_some();
        if r.installed {
            let moved = p.ack(Some(r.snapshot.index));
            if p.state == ProgressState::Snapshot && current {
                self.stats.snapshots_sent += 1;
            }
            if p.state == ProgressState::Snapshot || moved {
                let next = next_after(p.match_index);
                p.become_probe(next);
                self.maybe_commit();
                self.send_appends_to(now, from);
            }
            return;
        }
        if !current {
            return self.drop_input(DropReason::StaleResponse);
        }
        if let Some(s) = p.snapshot.as_mut() {
            s.acked_offset = r.next_offset;
            s.in_flight_since = None;
        }
        self.request_snapshot_chunk(now, from);
    }

    // ----- follower: receiving --------------------------------------------------------------

    pub(crate) fn on_snapshot_chunk(&mut self, now: Instant, from: NodeId, chunk: SnapshotChunk) {
        if !self.accept_leader(now, from) {
            return;
        }
        let snap = chunk.meta.last;
        if Some(snap.index) <= self.commit {
            let r = SnapshotResponse {
                snapshot: snap,
                next_offset: 0,
                installed: true,
            };
            return self.send(from, MessageBody::InstallSnapshotResp(r));
        }
        // A delayed chunk of an older snapshot must not reset the log behind the one
        // already installed (or being installed): its state is contained in it.
        if self
            .snapshot_meta
            .as_ref()
            .is_some_and(|have| snap.index <= have.last.index)
        {
            return self.drop_input(DropReason::StaleSnapshot);
        }
        let matching = self.follower.incoming.as_ref().filter(|i| i.meta.last == snap);
        let expected = match matching {
            Some(inc) if inc.write_pending => return, // answered when the write completes
            Some(inc) => inc.next_offset,
            None => 0,
        };
        if chunk.offset != expected {
            let r = SnapshotResponse {
                snapshot: snap,
                next_offset: expected,
                installed: false,
            };
            return self.send(from, MessageBody::InstallSnapshotResp(r));
        }
        if chunk.offset == 0 {
            self.follower.incoming = Some(IncomingSnapshot {
                meta: chunk.meta.clone(),
                next_offset: 0,
                write_pending: false,
            });
        }
        let next_offset = chunk.offset + chunk.data.len() as u64;
        if let Some(inc) = self.follower.incoming.as_mut() {
            inc.next_offset = next_offset;
            inc.write_pending = true;
        }
        let write_id = self.next_write_id();
        self.pending_writes.push_back(PendingWrite {
            id: write_id,
            kind: WriteKind::SnapshotChunk {
                snapshot: snap,
                next_offset,
                leader: from,
            },
        });
        self.effects.push_back(Effect::WriteSnapshotChunk {
            write_id,
            meta: chunk.meta.clone(),
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        });
        if chunk.done {
            self.install_snapshot(chunk.meta, from);
        }
    }

    /// Switches the log to the fully received snapshot (ordered after its chunks).
    fn install_snapshot(&mut self, meta: SnapshotMeta, leader: NodeId) {
        let snap = meta.last;
        let discard_log = !self.log.matches(snap);
        if discard_log {
            self.log.reset_to_snapshot(snap);
            self.cache = EntryCache::new(self.cfg.entry_cache_bytes);
            self.configs = ConfigLog::new(Some(snap.index), meta.membership.clone());
            for w in &mut self.pending_writes {
                if let WriteKind::Append { last } = &mut w.kind {
                    *last = None;
                }
            }
            self.durable = None;
        } else {
            self.log.compact(snap);
            self.cache.compact(snap.index);
            self.configs.compact(snap.index);
        }
        self.snapshot_meta = Some(meta.clone());
        self.follower.verified = self.follower.verified.max(Some(snap.index));
        self.restore_pending = true;
        let write_id = self.next_write_id();
        self.pending_writes.push_back(PendingWrite {
            id: write_id,
            kind: WriteKind::Install {
                meta: meta.clone(),
                leader,
            },
        });
        self.effects.push_back(Effect::InstallSnapshot {
            write_id,
            meta,
            discard_log,
        });
        self.on_config_changed();
    }

    pub(crate) fn on_snapshot_chunk_durable(&mut self, snapshot: LogId, next_offset: u64, leader: NodeId) {
        let Some(inc) = self
            .follower
            .incoming
            .as_mut()
            .filter(|i| i.meta.last == snapshot)
        else {
            return;
        };
        inc.write_pending = false;
        if inc.next_offset != next_offset {
            return;
        }
        let r = SnapshotResponse {
            snapshot,
            next_offset,
            installed: false,
        };
        if self.leader == Some(leader) {
            self.send(leader, MessageBody::InstallSnapshotResp(r));
        }
    }

    pub(crate) fn on_snapshot_installed(&mut self, _now: Instant, meta: SnapshotMeta, leader: NodeId) {
        let snap = meta.last;
        self.follower.incoming = None;
        self.restore_pending = false;
        self.durable = self.durable.max(Some(snap.index));
        self.stats.snapshots_installed += 1;
        if Some(snap.index) > self.commit {
            self.commit = Some(snap.index);
            self.effects
                .push_back(Effect::CommitAdvanced { commit: snap.index });
        }
        if Some(snap.index) > self.applied {
            self.applied = Some(snap.index);
            self.effects.push_back(Effect::RestoreSnapshot { meta });
        }
        let next_offset = 0;
        let r = SnapshotResponse {
            snapshot: snap,
            next_offset,
            installed: true,
        };
        if self.leader == Some(leader) {
            self.send(leader, MessageBody::InstallSnapshotResp(r));
        }
        self.apply_committed();
    }
}
