//! Plain value types shared by every part of the engine: ids, log positions, entries and
//! the hard state.
//!
//! Index space = Kafka offsets. An [`Entry`] is one Kafka record batch and may cover
//! several offsets (`index ..= last_index`). Log matching is done on the *last* offset of
//! an entry: a [`LogId`] names an entry (or the snapshot point) by that offset and its
//! term. Positions that may lie "before the log" are `Option<Index>` (`None` sorts first).

use bytes::Bytes;

use super::membership::{CodecError, Membership};

/// A node (broker) id.
pub type NodeId = u64;
/// A Raft term, which is also the Kafka leader epoch.
pub type Term = u64;
/// A Kafka offset. The Raft log is indexed by offsets.
pub type Index = u64;

/// A log position: an offset that is the last offset of an entry (or the snapshot point),
/// with the term of that entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogId {
    /// The term of the entry.
    pub term: Term,
    /// The offset (the entry's last offset).
    pub index: Index,
}

impl LogId {
    /// A log id.
    pub const fn new(term: Term, index: Index) -> Self {
        LogId { term, index }
    }
}

/// Whether a log ending at `candidate` is at least as up to date as one ending at `mine`
/// (Raft §5.4.1: compare last terms, then last offsets). `None` is the empty log.
pub fn log_up_to_date(candidate: Option<LogId>, mine: Option<LogId>) -> bool {
    let key = |l: Option<LogId>| l.map(|l| (l.term, l.index));
    key(candidate) >= key(mine)
}

/// The offset right after `position` (`None` = before the first offset 0).
pub fn next_after(position: Option<Index>) -> Index {
    position.map_or(0, |i| i + 1)
}

/// What an entry is, as far as Raft cares. The partition layer stores `Noop` and
/// `Config` entries as Kafka control batches, which consumers skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EntryKind {
    /// Application data (a Kafka record batch). Opaque to Raft.
    Data,
    /// The empty entry a new leader appends to commit entries of earlier terms.
    Noop,
    /// A membership change; the payload is [`Membership::encode`]d.
    Config,
}

/// One log entry: one Kafka record batch covering `index ..= last_index`.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The term (leader epoch) in which a leader created this entry.
    pub term: Term,
    /// The first offset of the entry (Kafka base offset).
    pub index: Index,
    /// The last offset of the entry (`index + record count - 1`).
    pub last_index: Index,
    /// Data, noop or configuration.
    pub kind: EntryKind,
    /// The bytes. Opaque to Raft except for `Config` entries.
    pub payload: Bytes,
}

impl Entry {
    /// A data entry of `count >= 1` offsets starting at `index`.
    pub fn data(term: Term, index: Index, count: u64, payload: Bytes) -> Self {
        assert!(count >= 1, "an entry covers at least one offset");
        Entry {
            term,
            index,
            last_index: index + count - 1,
            kind: EntryKind::Data,
            payload,
        }
    }

    /// A noop entry (one offset).
    pub fn noop(term: Term, index: Index) -> Self {
        Entry {
            term,
            index,
            last_index: index,
            kind: EntryKind::Noop,
            payload: Bytes::new(),
        }
    }

    /// A configuration entry (one offset) carrying `membership`.
    pub fn config(term: Term, index: Index, membership: &Membership) -> Self {
        Entry {
            term,
            index,
            last_index: index,
            kind: EntryKind::Config,
            payload: membership.encode(),
        }
    }

    /// The number of offsets the entry covers.
    pub fn count(&self) -> u64 {
        self.last_index - self.index + 1
    }

    /// The entry's position for log matching: its last offset and its term.
    pub fn log_id(&self) -> LogId {
        LogId::new(self.term, self.last_index)
    }

    /// Bytes the entry accounts for in caches and message limits.
    pub fn size_bytes(&self) -> usize {
        self.payload.len() + ENTRY_OVERHEAD_BYTES
    }

    /// Decodes the membership of a `Config` entry.
    pub fn membership(&self) -> Result<Membership, CodecError> {
        if self.kind != EntryKind::Config {
            return Err(CodecError::NotAConfigEntry);
        }
        Membership::decode(&self.payload)
    }

    /// Whether the entry is well formed on its own (offsets ordered).
    pub fn is_well_formed(&self) -> bool {
        self.last_index >= self.index
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Entry(t{} {}..={} {:?} {}B)",
            self.term,
            self.index,
            self.last_index,
            self.kind,
            self.payload.len()
        )
    }
}

/// Fixed per-entry overhead counted against byte limits (a record batch header).
pub const ENTRY_OVERHEAD_BYTES: usize = 61;

/// The state that must survive a crash before the node answers anyone: current term and
/// the vote cast in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct HardState {
    /// The current term.
    pub term: Term,
    /// The candidate voted for in `term`, if any.
    pub vote: Option<NodeId>,
}

/// Identifies one write effect ([`super::Effect::Append`], `Truncate`, snapshot writes).
/// Ids increase by one per write; a completion for id `w` covers every write `<= w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u64);

/// Identifies one read effect (`ReadEntries`, `ReadSnapshotChunk`), so a stale or
/// duplicate completion is recognised and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// The role of a node in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes (no term change yet).
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads the group.
    Leader,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn up_to_date_compares_term_then_index() {
        assert!(log_up_to_date(None, None));
        assert!(!log_up_to_date(None, Some(LogId::new(1, 0))));
        assert!(log_up_to_date(Some(LogId::new(2, 0)), Some(LogId::new(1, 9))));
        assert!(!log_up_to_date(Some(LogId::new(1, 8)), Some(LogId::new(1, 9))));
        assert!(log_up_to_date(Some(LogId::new(1, 9)), Some(LogId::new(1, 9))));
    }

    #[test]
    fn entry_ranges() {
        let e = Entry::data(3, 10, 5, Bytes::from_static(b"x"));
        assert_eq!(e.last_index, 14);
        assert_eq!(e.count(), 5);
        assert_eq!(e.log_id(), LogId::new(3, 14));
        assert_eq!(next_after(None), 0);
        assert_eq!(next_after(Some(14)), 15);
    }
}
