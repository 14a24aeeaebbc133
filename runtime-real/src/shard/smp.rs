//! SMP message passing between shards: one bounded, lock-free single-producer /
//! single-consumer queue for every ordered pair of shards (including a shard to itself),
//! and one `eventfd` per shard that wakes its event loop.
//!
//! Each shard owns an [`SmpEndpoint`]: the producing ends of the queues *to* every shard
//! and the consuming ends of the queues *from* every shard. Queues are
//! [`rtrb`] ring buffers (wait-free push and pop, no lock anywhere). Sending never
//! blocks: a full queue hands the message back ([`SmpEndpoint::try_send`] returns
//! `Err`), and the caller keeps it and retries later (back-pressure). After a round of
//! sends, [`SmpEndpoint::flush_wakeups`] writes each recipient's `eventfd` once, so a
//! sleeping recipient wakes; a recipient drains every inbox each time it wakes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// An `eventfd` counter used as a wake-up doorbell. Any thread may ring it.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Rings the doorbell (adds one to the counter). Never blocks: if the counter is
    /// saturated the owner is awake-able anyway, so the error is ignored.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local u64 to a descriptor we own.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter (non-blocking read); returns how often it was rung.
    pub fn drain(&self) -> u64 {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a local u64 from a descriptor we own.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        if n == 8 {
            count
        } else {
            0
        }
    }

    /// The descriptor, for registering a read in an io_uring.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// One shard's ends of the SMP mesh.
#[derive(Debug)]
pub struct SmpEndpoint<T> {
    shard: usize,
    /// Producing ends, indexed by recipient shard.
    outboxes: Vec<rtrb::Producer<T>>,
    /// Consuming ends, indexed by sending shard.
    inboxes: Vec<rtrb::Consumer<T>>,
    /// Every shard's doorbell, indexed by shard.
    doorbells: Vec<Arc<EventFd>>,
    /// Recipients sent to since the last [`SmpEndpoint::flush_wakeups`].
    to_wake: Vec<bool>,
    /// Where draining resumes, so no sender is starved by another.
    next_inbox: usize,
}

/// Builds the mesh for `shard_count` shards, each queue holding at most
/// `capacity_per_queue` messages. Returns one endpoint per shard, in shard order.
pub fn mesh<T: Send>(shard_count: usize, capacity_per_queue: usize) -> io::Result<Vec<SmpEndpoint<T>>> {
    assert!(shard_count > 0, "a mesh needs at least one shard");
    assert!(capacity_per_queue > 0, "SMP queues need room for one message");
    let doorbells = (0..shard_count)
        .map(|_| EventFd::new().map(Arc::new))
        .collect::<io::Result<Vec<_>>>()?;
    // producers[from][to], consumers[to][from]
    let mut producers: Vec<Vec<rtrb::Producer<T>>> = (0..shard_count).map(|_| Vec::new()).collect();
    let mut consumers: Vec<Vec<Option<rtrb::Consumer<T>>>> = (0..shard_count)
        .map(|_| (0..shard_count).map(|_| None).collect())
        .collect();
    for (from, outboxes) in producers.iter_mut().enumerate() {
        for inboxes in consumers.iter_mut() {
            let (producer, consumer) = rtrb::RingBuffer::new(capacity_per_queue);
            outboxes.push(producer);
            inboxes[from] = Some(consumer);
        }
    }
    let endpoints = producers
        .into_iter()
        .zip(consumers)
        .enumerate()
        .map(|(shard, (outboxes, inboxes))| SmpEndpoint {
            shard,
            outboxes,
            inboxes: inboxes.into_iter().flatten().collect(),
            doorbells: doorbells.clone(),
            to_wake: vec![false; shard_count],
            next_inbox: 0,
        })
        .collect::<Vec<_>>();
    for endpoint in &endpoints {
        assert_eq!(endpoint.inboxes.len(), shard_count);
        assert_eq!(endpoint.outboxes.len(), shard_count);
    }
    Ok(endpoints)
}

impl<T> SmpEndpoint<T> {
    /// This endpoint's shard.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Number of shards in the mesh.
    pub fn shard_count(&self) -> usize {
        self.outboxes.len()
    }

    /// This shard's doorbell (register a read of it in the event loop; hand clones to
    /// other threads that must wake this shard).
    pub fn doorbell(&self) -> &Arc<EventFd> {
        &self.doorbells[self.shard]
    }

    /// Queues `message` for shard `to`. A full queue (or an unknown shard) hands the
    /// message back: keep it and retry after the recipient drained some.
    pub fn try_send(&mut self, to: usize, message: T) -> Result<(), T> {
        let Some(outbox) = self.outboxes.get_mut(to) else {
            return Err(message);
        };
        match outbox.push(message) {
            Ok(()) => {
                self.to_wake[to] = true;
                Ok(())
            }
            Err(rtrb::PushError::Full(message)) => Err(message),
        }
    }

    /// Free slots in the queue to shard `to`.
    pub fn free_slots(&self, to: usize) -> usize {
        self.outboxes.get(to).map_or(0, |outbox| outbox.slots())
    }

    /// Rings the doorbell of every shard sent to since the last call, once each.
    pub fn flush_wakeups(&mut self) {
        for (shard, wake) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.doorbells[shard].signal();
            }
        }
    }

    /// Takes up to `max` messages from the inboxes, round-robin across senders so a
    /// busy sender cannot starve the others; calls `deliver(from, message)` for each.
    /// Returns how many were delivered.
    pub fn drain(&mut self, max: usize, mut deliver: impl FnMut(usize, T)) -> usize {
        let count = self.inboxes.len();
        let mut delivered = 0;
        let mut idle_in_a_row = 0;
        while delivered < max && idle_in_a_row < count {
            let from = self.next_inbox;
            self.next_inbox = (self.next_inbox + 1) % count;
            match self.inboxes[from].pop() {
                Ok(message) => {
                    idle_in_a_row = 0;
                    delivered += 1;
                    deliver(from, message);
                }
                Err(rtrb::PopError::Empty) => idle_in_a_row += 1,
            }
        }
        delivered
    }

    /// Whether any inbox holds a message.
    pub fn has_incoming(&self) -> bool {
        self.inboxes.iter().any(|inbox| !inbox.is_empty())
    }
}
