//! The shard's segment writes, `fdatasync`s and fetch reads on its io_uring: takes the
//! storage executors' [`DataOp`]s and the fetch path's [`ReadOp`]s, submits them through
//! the reactor's ring ([`Reactor::push_external`]) and turns their completions back into
//! outcomes for whoever asked ([`Finished`]).
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
//!
//! Reads wait in a queue of their own behind the data operations (a fetch never delays
//! a write or a sync), and at most `max_read_bytes` of read windows are on the ring at
//! once (each read owns a buffer of its window's size until its bytes leave in a
//! response); one read larger than that bound still runs alone. A read that stops
//! short on a block boundary continues from there; one that returns nothing or stops
//! inside a block has reached the end of the file and finishes with what it has.

use super::net::Reactor;
use crate::storage::data_op::{DataOp, DataOpKind, OpFailure, OpResult};
use crate::storage::read_op::ReadOp;
use crate::storage::vfs::RealFile;
use bytes::Bytes;
use io_uring::{opcode, types};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;

/// Default bound on operations on the ring at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Default bound on the bytes of read windows on the ring at once (per shard).
pub const DEFAULT_MAX_READ_BYTES: u64 = 64 << 20;

/// The caller's name for a read: quoted back in [`Finished::Read`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadTag {
    /// The request the read belongs to.
    pub request: u64,
    /// The read's place in its request.
    pub index: usize,
}

/// A finished operation: a data op's owner, token and outcome, or a read's tag and
/// bytes (exactly the asked range as far as the file holds it).
#[derive(Debug)]
pub enum Finished {
    /// A write or `fdatasync` of a storage executor.
    Data(OpDone, OpResult),
    /// A fetch read.
    Read(ReadTag, io::Result<Bytes>),
}

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
    /// Reads submitted.
    pub reads: u64,
    /// Bytes of read windows submitted.
    pub read_bytes: u64,
    /// Reads continued after a short transfer.
    pub short_reads: u64,
}

#[derive(Debug)]
enum InFlight {
    Data {
        owner: u64,
        op: DataOp<RealFile>,
        /// Bytes of a write already written.
        done_bytes: usize,
    },
    Read {
        tag: ReadTag,
        op: ReadOp<RealFile>,
    },
}

/// The shard's disk operations on its ring.
#[derive(Debug)]
pub struct DiskRing {
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    on_ring: usize,
    max_in_flight: usize,
    waiting: VecDeque<(u64, DataOp<RealFile>)>,
    waiting_reads: VecDeque<(ReadTag, ReadOp<RealFile>)>,
    read_bytes_on_ring: u64,
    max_read_bytes: u64,
    stats: DiskRingStats,
}

impl DiskRing {
    /// An empty ring user allowing `max_in_flight` operations and `max_read_bytes` of
    /// read windows on the ring at once.
    pub fn new(max_in_flight: usize, max_read_bytes: u64) -> DiskRing {
        assert!(max_in_flight > 0, "disk ring: max_in_flight must be positive");
        assert!(max_read_bytes > 0, "disk ring: max_read_bytes must be positive");
        DiskRing {
            slots: Vec::new(),
            free_slots: Vec::new(),
            on_ring: 0,
            max_in_flight,
            waiting: VecDeque::new(),
            waiting_reads: VecDeque::new(),
            read_bytes_on_ring: 0,
            max_read_bytes,
            stats: DiskRingStats::default(),
        }
    }

    /// Operations submitted or waiting, not yet completed.
    pub fn in_flight(&self) -> usize {
        self.on_ring + self.waiting.len() + self.waiting_reads.len()
    }

    /// Submits the fetch read `op`, named `tag` in its [`Finished::Read`] (or queues it
    /// behind the bounds).
    pub fn submit_read(
        &mut self,
        reactor: &mut Reactor,
        tag: ReadTag,
        op: ReadOp<RealFile>,
    ) -> io::Result<()> {
        self.stats.reads += 1;
        self.stats.read_bytes += op.window().len_bytes;
        self.waiting_reads.push_back((tag, op));
        self.submit_waiting(reactor)
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
        !self.waiting.is_empty() || !self.waiting_reads.is_empty()
    }

    /// Moves waiting operations onto the ring up to the bounds, data operations first
    /// (after a failed push, call again later).
    pub fn submit_waiting(&mut self, reactor: &mut Reactor) -> io::Result<()> {
        while self.on_ring < self.max_in_flight {
            let entry = if let Some((owner, op)) = self.waiting.pop_front() {
                InFlight::Data {
                    owner,
                    op,
                    done_bytes: 0,
                }
            } else if self.read_fits() {
                match self.waiting_reads.pop_front() {
                    Some((tag, op)) => InFlight::Read { tag, op },
                    None => break,
                }
            } else {
                break;
            };
            let read_bytes = entry.read_bytes();
            let slot = match self.free_slots.pop() {
                Some(slot) => slot,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            self.slots[slot] = Some(entry);
            if let Err(error) = self.push(reactor, slot) {
                // Not on the ring: back at the head of its queue, the slot free again.
                match self.slots[slot].take() {
                    Some(InFlight::Data { owner, op, .. }) => self.waiting.push_front((owner, op)),
                    Some(InFlight::Read { tag, op }) => self.waiting_reads.push_front((tag, op)),
                    None => {}
                }
                self.free_slots.push(slot);
                return Err(error);
            }
            self.on_ring += 1;
            self.read_bytes_on_ring += read_bytes;
            self.stats.max_in_flight = self.stats.max_in_flight.max(self.on_ring as u64);
        }
        Ok(())
    }

    /// Whether the next waiting read may go on the ring: within the read-bytes bound,
    /// or alone (a read larger than the bound must still run).
    fn read_fits(&self) -> bool {
        let Some((_, op)) = self.waiting_reads.front() else {
            return false;
        };
        self.read_bytes_on_ring == 0 || self.read_bytes_on_ring + op.window().len_bytes <= self.max_read_bytes
    }

    /// Puts the slot's operation (the rest of a write or read) on the ring.
    fn push(&mut self, reactor: &mut Reactor, slot: usize) -> io::Result<()> {
        let Some(entry) = self.slots[slot].as_mut() else {
            return Ok(());
        };
        let sqe = match entry {
            InFlight::Data { op, done_bytes, .. } => {
                let fd = types::Fd(op.file.as_raw_fd());
                match &op.kind {
                    DataOpKind::Write {
                        buf,
                        len_bytes,
                        position,
                    } => {
                        let rest = &buf.as_slice()[*done_bytes..*len_bytes];
                        // A buffer is far smaller than 4 GiB.
                        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                        opcode::Write::new(fd, rest.as_ptr(), len)
                            .offset(position + *done_bytes as u64)
                            .build()
                    }
                    DataOpKind::SyncData => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
                }
            }
            InFlight::Read { op, .. } => {
                let fd = types::Fd(op.file.as_raw_fd());
                let (position, spare) = op.next_transfer();
                // Read at most 1 GiB per transfer (a window is far smaller); a longer
                // window continues after a short transfer.
                let len = u32::try_from(spare.len()).unwrap_or(1 << 30).min(1 << 30);
                opcode::Read::new(fd, spare.as_mut_ptr(), len)
                    .offset(position)
                    .build()
            }
        };
        // SAFETY: the buffer and the file belong to the op, which stays in its slot
        // until this operation's completion is handled in `complete` (or the whole ring
        // is leaked at shutdown); a read buffer's heap allocation does not move when
        // the op does.
        unsafe { reactor.push_external(sqe, slot as u64) }
    }

    /// Handles the completion of slot `id` with `result`: the finished operation, or
    /// `None` if a short transfer was resubmitted (or the id is unknown).
    pub fn complete(&mut self, reactor: &mut Reactor, id: u64, result: i32) -> Option<Finished> {
        let slot = usize::try_from(id).ok()?;
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            tracing::error!(slot, "disk ring: completion for a free slot");
            return None;
        };
        let retry = result == -libc::EINTR || result == -libc::EAGAIN;
        let failure = (result < 0 && !retry).then(|| io::Error::from_raw_os_error(-result));
        // `result` is a byte count when it is not negative.
        let transferred = usize::try_from(result).unwrap_or(0);
        let done = match entry {
            _ if retry => false,
            _ if failure.is_some() => true,
            InFlight::Data { op, done_bytes, .. } => match &op.kind {
                DataOpKind::SyncData => true,
                DataOpKind::Write { len_bytes, .. } => {
                    *done_bytes += transferred;
                    let finished = *done_bytes >= *len_bytes || transferred == 0;
                    if !finished {
                        self.stats.short_writes += 1;
                    }
                    finished
                }
            },
            InFlight::Read { op, .. } => {
                op.advance(transferred);
                if !op.is_done() {
                    self.stats.short_reads += 1;
                }
                op.is_done()
            }
        };
        if !done {
            // Continue the same operation from where it stopped.
            self.on_ring -= 1;
            if let Err(error) = self.push(reactor, slot) {
                return self.finish(reactor, slot, Some(error));
            }
            self.on_ring += 1;
            return None;
        }
        self.on_ring -= 1;
        self.finish(reactor, slot, failure)
    }

    /// Frees the slot (dropping a data op returns its buffer to the pool), refills the
    /// ring, and turns the op into its outcome.
    fn finish(&mut self, reactor: &mut Reactor, slot: usize, failure: Option<io::Error>) -> Option<Finished> {
        let entry = self.slots[slot].take()?;
        self.free_slots.push(slot);
        self.read_bytes_on_ring -= entry.read_bytes();
        if failure.is_some() {
            self.stats.failures += 1;
        }
        let finished = match entry {
            InFlight::Data {
                owner,
                op,
                done_bytes,
            } => {
                let outcome = match (failure, &op.kind) {
                    (Some(error), _) => Err(OpFailure::Os(error)),
                    (None, DataOpKind::Write { len_bytes, .. }) if done_bytes < *len_bytes => {
                        self.stats.failures += 1;
                        Err(OpFailure::NoProgress {
                            written_bytes: done_bytes,
                            asked_bytes: *len_bytes,
                        })
                    }
                    (None, _) => Ok(()),
                };
                Finished::Data(
                    OpDone {
                        owner,
                        token: op.token,
                    },
                    outcome,
                )
            }
            InFlight::Read { tag, op } => match failure {
                Some(error) => Finished::Read(tag, Err(error)),
                None => Finished::Read(tag, Ok(op.finish())),
            },
        };
        if let Err(error) = self.submit_waiting(reactor) {
            tracing::error!(%error, "disk ring: cannot submit; retried with the next completion");
        }
        Some(finished)
    }
}

impl InFlight {
    /// Bytes of read window this op holds.
    fn read_bytes(&self) -> u64 {
        match self {
            InFlight::Data { .. } => 0,
            InFlight::Read { op, .. } => op.window().len_bytes,
        }
    }
}
