//! The shard's segment writes and `fdatasync`s on its io_uring: takes the storage
//! executors' [`DataOp`]s, submits them through the reactor's ring
//! ([`Reactor::push_external`]) and turns their completions back into outcomes for the
//! executor that owns them.
//!
//! # Buffers and safety
//!
//! An operation in flight is owned here, in a slot, until its completion arrives: its
//! aligned buffer (which the kernel reads from) and its `Rc` of the open file (so the
//! descriptor is neither closed nor reused while the kernel may still use it). A
//! partition removed meanwhile leaves its operations here; their outcomes are dropped.
//! At shutdown the shard waits for [`DiskRing::in_flight`] to reach zero, or leaks the
//! ring together with the reactor's.
//!
//! # Limits and partial transfers
//!
//! At most `max_in_flight` operations are on the ring at once (writes are bounded by
//! the buffer pool already; this bounds `fdatasync`s of many partitions); the others wait
//! here in order. A write that completes short is resubmitted for the rest from where
//! it stopped (`EINTR`/`EAGAIN` likewise); one that writes nothing fails. Nothing is
//! reported before the whole transfer is done or has failed.

use super::net::Reactor;
use crate::storage::data_op::{DataOp, DataOpKind, OpFailure, OpResult};
use crate::storage::vfs::RealFile;
use io_uring::{opcode, types};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;

/// Default bound on operations on the ring at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Who an operation's outcome goes to: the storage (`owner`, the shard's number for
/// a partition's executor) and the executor's token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OpDone {
    /// The executor's owner id.
    pub owner: u64,
    /// The executor's token for the operation.
    pub token: u64,
}

/// Counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DiskRingStats {
    /// Writes submitted (resubmissions of short writes not counted).
    pub writes: u64,
    /// `fdatasync`s submitted.
    pub fdatasyncs: u64,
    /// Short writes continued.
    pub short_writes: u64,
    /// Operations that failed.
    pub failures: u64,
    /// Most operations on the ring at once.
    pub max_in_flight: u64,
}

#[derive(Debug)]
struct InFlight {
    owner: u64,
    op: DataOp<RealFile>,
    /// Bytes of a write already written.
    done_bytes: usize,
}

/// The shard's disk operations on its ring.
#[derive(Debug)]
pub struct DiskRing {
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    on_ring: usize,
    max_in_flight: usize,
    waiting: VecDeque<(u64, DataOp<RealFile>)>,
    stats: DiskRingStats,
}

impl DiskRing {
    /// An empty ring user allowing `max_in_flight` operations on the ring at once.
    pub fn new(max_in_flight: usize) -> DiskRing {
        assert!(max_in_flight > 0, "disk ring: max_in_flight must be positive");
        DiskRing {
            slots: Vec::new(),
            free_slots: Vec::new(),
            on_ring: 0,
            max_in_flight,
            waiting: VecDeque::new(),
            stats: DiskRingStats::default(),
        }
    }

    /// Operations submitted or waiting, not yet completed.
    pub fn in_flight(&self) -> usize {
        self.on_ring + self.waiting.len()
    }

    /// Counters.
    pub fn stats(&self) -> DiskRingStats {
        self.stats
    }

    /// Submits `op` of storage `owner` (or queues it behind the in-flight bound).
    pub fn submit(&mut self, reactor: &mut Reactor, owner: u64, op: DataOp<RealFile>) -> io::Result<()> {
        match &op.kind {
            DataOpKind::Write { .. } => self.stats.writes += 1,
            DataOpKind::SyncData => self.stats.fdatasyncs += 1,
        }
        self.waiting.push_back((owner, op));
        self.submit_waiting(reactor)
    }

    /// Whether operations wait for room on the ring.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Moves waiting operations onto the ring up to the bound (after a failed push,
    /// call again later).
    pub fn submit_waiting(&mut self, reactor: &mut Reactor) -> io::Result<()> {
        while self.on_ring < self.max_in_flight {
            let Some((owner, op)) = self.waiting.pop_front() else {
                break;
            };
            let slot = match self.free_slots.pop() {
                Some(slot) => slot,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            self.slots[slot] = Some(InFlight {
                owner,
                op,
                done_bytes: 0,
            });
            if let Err(error) = self.push(reactor, slot) {
                // Not on the ring: back at the head of the queue, the slot free again.
                if let Some(entry) = self.slots[slot].take() {
                    self.waiting.push_front((entry.owner, entry.op));
                }
                self.free_slots.push(slot);
                return Err(error);
            }
            self.on_ring += 1;
            self.stats.max_in_flight = self.stats.max_in_flight.max(self.on_ring as u64);
        }
        Ok(())
    }

    /// Puts the slot's operation (the rest of a write) on the ring.
    fn push(&mut self, reactor: &mut Reactor, slot: usize) -> io::Result<()> {
        let Some(entry) = self.slots[slot].as_ref() else {
            return Ok(());
        };
        let fd = types::Fd(entry.op.file.as_raw_fd());
        let sqe = match &entry.op.kind {
            DataOpKind::Write {
                buf,
                len_bytes,
                position,
            } => {
                let rest = &buf.as_slice()[entry.done_bytes..*len_bytes];
                // A buffer is far smaller than 4 GiB.
                let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                opcode::Write::new(fd, rest.as_ptr(), len)
                    .offset(position + entry.done_bytes as u64)
                    .build()
            }
            DataOpKind::SyncData => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
        };
        // SAFETY: the buffer and the file belong to the op, which stays in its slot
        // until this operation's completion is handled in `complete` (or the whole ring
        // is leaked at shutdown).
        unsafe { reactor.push_external(sqe, slot as u64) }
    }

    /// Handles the completion of slot `id` with `result`: the finished operation's
    /// owner, token and outcome, or `None` if a short write was resubmitted (or the id
    /// is unknown).
    pub fn complete(&mut self, reactor: &mut Reactor, id: u64, result: i32) -> Option<(OpDone, OpResult)> {
        let slot = usize::try_from(id).ok()?;
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            tracing::error!(slot, "disk ring: completion for a free slot");
            return None;
        };
        let outcome = match (&entry.op.kind, result) {
            (_, r) if r == -libc::EINTR || r == -libc::EAGAIN => None,
            (_, r) if r < 0 => Some(Err(OpFailure::Os(io::Error::from_raw_os_error(-r)))),
            (DataOpKind::SyncData, _) => Some(Ok(())),
            (DataOpKind::Write { len_bytes, .. }, written) => {
                // `written` is non-negative here.
                let written = written as usize;
                entry.done_bytes += written;
                if entry.done_bytes >= *len_bytes {
                    Some(Ok(()))
                } else if written == 0 {
                    Some(Err(OpFailure::NoProgress {
                        written_bytes: entry.done_bytes,
                        asked_bytes: *len_bytes,
                    }))
                } else {
                    self.stats.short_writes += 1;
                    None
                }
            }
        };
        let Some(outcome) = outcome else {
            // Continue the same operation from where it stopped.
            self.on_ring -= 1;
            if let Err(error) = self.push(reactor, slot) {
                return self.finish(reactor, slot, Err(OpFailure::Os(error)));
            }
            self.on_ring += 1;
            return None;
        };
        self.on_ring -= 1;
        self.finish(reactor, slot, outcome)
    }

    /// Frees the slot (dropping the op: its buffer returns to the pool) and refills.
    fn finish(
        &mut self,
        reactor: &mut Reactor,
        slot: usize,
        outcome: OpResult,
    ) -> Option<(OpDone, OpResult)> {
        let entry = self.slots[slot].take()?;
        self.free_slots.push(slot);
        if outcome.is_err() {
            self.stats.failures += 1;
        }
        if let Err(error) = self.submit_waiting(reactor) {
            tracing::error!(%error, "disk ring: cannot submit; retried with the next completion");
        }
        Some((
            OpDone {
                owner: entry.owner,
                token: entry.op.token,
            },
            outcome,
        ))
    }
}
