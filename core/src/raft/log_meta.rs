//! [`LogMeta`]: what the engine knows about its log without holding it — the snapshot
//! point, the last offset, and the term boundaries `(term, first offset of that term)`
//! (exactly Kafka's leader-epoch checkpoint). Enough to answer `term_at(offset)`, to check
//! log matching and to find backtracking points, in memory proportional to the number of
//! terms, not entries.
//!
//! Positions covered: `[base, last]` where `base` is the snapshot offset (whose term is the
//! snapshot's) or 0 without a snapshot. Entries live at `first_index() ..= last`.

use super::types::{Entry, Index, LogId, Term};

/// Log metadata. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogMeta {
    snapshot: Option<LogId>,
    last: Option<Index>,
    /// `(term, first position of that term)`, strictly increasing in both.
    terms: Vec<(Term, Index)>,
}

/// Inconsistent recovered log metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogMetaError {
    /// Term boundaries not strictly increasing, or outside the log.
    #[error("term boundaries are not increasing within the log")]
    BadBoundaries,
    /// Entries exist but no boundary covers the first one.
    #[error("no term boundary covers the first entry")]
    MissingBoundary,
    /// The last offset lies before the snapshot.
    #[error("last offset lies before the snapshot")]
    LastBeforeSnapshot,
}

impl LogMeta {
    /// An empty log with no snapshot.
    pub fn empty() -> Self {
        LogMeta {
            snapshot: None,
            last: None,
            terms: Vec::new(),
        }
    }

    /// Rebuilds metadata from recovery: the snapshot point, the term boundaries of the
    /// entries after it, and the last offset of the log (`None` if there are no entries).
    pub fn recover(
        snapshot: Option<LogId>,
        boundaries: &[(Term, Index)],
        last_entry: Option<Index>,
    ) -> Result<Self, LogMetaError> {
        let mut meta = LogMeta::empty();
        if let Some(s) = snapshot {
            meta.snapshot = Some(s);
            meta.last = Some(s.index);
            meta.terms.push((s.term, s.index));
        }
        let Some(last) = last_entry else {
            return Ok(meta);
        };
        if meta.last.is_some_and(|l| last < l) {
            return Err(LogMetaError::LastBeforeSnapshot);
        }
        let first = meta.first_index();
        if last < first {
            return Ok(meta);
        }
        for &(term, start) in boundaries {
            if start < first || start > last {
                return Err(LogMetaError::BadBoundaries);
            }
            match meta.terms.last() {
                Some(&(t, s)) if t >= term || s >= start => {
                    if t == term && start > s {
                        continue; // same term listed twice: keep the earlier start
                    }
                    return Err(LogMetaError::BadBoundaries);
                }
                None if start != first => return Err(LogMetaError::MissingBoundary),
                _ => meta.terms.push((term, start)),
            }
        }
        if meta.terms.last().is_none_or(|&(_, s)| s > last) || meta.terms.is_empty() {
            return Err(LogMetaError::MissingBoundary);
        }
        meta.last = Some(last);
        Ok(meta)
    }

    /// The snapshot point, if any.
    pub fn snapshot(&self) -> Option<LogId> {
        self.snapshot
    }

    /// The first offset that can hold an entry (right after the snapshot).
    pub fn first_index(&self) -> Index {
        self.snapshot.map_or(0, |s| s.index + 1)
    }

    /// The last offset (of the last entry, or the snapshot point).
    pub fn last_index(&self) -> Option<Index> {
        self.last
    }

    /// The offset after the last one: where the next entry starts.
    pub fn next_index(&self) -> Index {
        super::types::next_after(self.last)
    }

    /// The last position with its term.
    pub fn last_log_id(&self) -> Option<LogId> {
        let last = self.last?;
        self.terms.last().map(|&(t, _)| LogId::new(t, last))
    }

    /// The term of the last position (0 for an empty log).
    pub fn last_term(&self) -> Term {
        self.terms.last().map_or(0, |&(t, _)| t)
    }

    /// The term of the entry containing `offset`, if `offset` is the snapshot point or in
    /// the log.
    pub fn term_at(&self, offset: Index) -> Option<Term> {
        if self.last.is_none_or(|l| offset > l) {
            return None;
        }
        let k = self.terms.partition_point(|&(_, s)| s <= offset);
        if k == 0 {
            return None;
        }
        Some(self.terms[k - 1].0)
    }

    /// The first offset of `term` in the log, if the term is present.
    pub fn term_start(&self, term: Term) -> Option<Index> {
        self.terms.iter().find(|&&(t, _)| t == term).map(|&(_, s)| s)
    }

    /// Whether `id` is the snapshot point or inside the log with that term.
    pub fn matches(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// Records an appended entry; it must start right after the last offset.
    pub fn append(&mut self, entry: &Entry) {
        assert!(entry.is_well_formed(), "entry offsets reversed: {entry:?}");
        assert_eq!(
            entry.index,
            self.next_index(),
            "appended entry must follow the log"
        );
        assert!(entry.term >= self.last_term(), "terms never decrease in a log");
        if self.terms.last().is_none_or(|&(t, _)| t != entry.term) {
            self.terms.push((entry.term, entry.index));
        }
        self.last = Some(entry.last_index);
    }

    /// Removes every offset `>= from` (must be after the snapshot point).
    pub fn truncate_from(&mut self, from: Index) {
        assert!(from >= self.first_index(), "cannot truncate the snapshot");
        if self.last.is_none_or(|l| from > l) {
            return;
        }
        self.terms.retain(|&(_, s)| s < from);
        self.last = from.checked_sub(1);
        if self.terms.is_empty() {
            self.last = None;
        }
    }

    /// Moves the snapshot point to `snapshot`, which must be in the log with that term;
    /// positions before it are forgotten.
    pub fn compact(&mut self, snapshot: LogId) {
        assert!(
            self.matches(snapshot),
            "compaction point {snapshot:?} not in the log"
        );
        let k = self.terms.partition_point(|&(_, s)| s <= snapshot.index);
        self.terms.drain(..k - 1);
        self.terms[0].1 = snapshot.index;
        self.snapshot = Some(snapshot);
    }

    /// Replaces the whole log by the snapshot point `snapshot`.
    pub fn reset_to_snapshot(&mut self, snapshot: LogId) {
        self.snapshot = Some(snapshot);
        self.last = Some(snapshot.index);
        self.terms = vec![(snapshot.term, snapshot.index)];
    }

    /// The largest position `<= at_most` (and in the log) whose term is `<= term`.
    pub fn last_with_term_at_most(&self, at_most: Index, term: Term) -> Option<Index> {
        let last = self.last?;
        let at_most = at_most.min(last);
        let containing = self.terms.partition_point(|&(_, s)| s <= at_most);
        let mut k = containing;
        while k > 0 {
            k -= 1;
            if self.terms[k].0 <= term {
                if k + 1 == containing {
                    return Some(at_most);
                }
                return Some(self.terms[k + 1].1 - 1);
            }
        }
        None
    }

    /// The term boundaries, for inspection.
    pub fn term_boundaries(&self) -> &[(Term, Index)] {
        &self.terms
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(term: Term, index: Index, count: u64) -> Entry {
        Entry::data(term, index, count, Bytes::new())
    }

    fn sample() -> LogMeta {
        let mut m = LogMeta::empty();
        m.append(&e(1, 0, 1));
        m.append(&e(1, 1, 3)); // 1..=3
        m.append(&e(3, 4, 2)); // 4..=5
        m.append(&e(5, 6, 1)); // 6
        m
    }

    #[test]
    fn term_at_and_boundaries() {
        let m = sample();
        assert_eq!(m.term_at(0), Some(1));
        assert_eq!(m.term_at(3), Some(1));
        assert_eq!(m.term_at(4), Some(3));
        assert_eq!(m.term_at(6), Some(5));
        assert_eq!(m.term_at(7), None);
        assert_eq!(m.last_log_id(), Some(LogId::new(5, 6)));
        assert_eq!(m.term_boundaries(), &[(1, 0), (3, 4), (5, 6)]);
    }

    #[test]
    fn backtracking_search() {
        let m = sample();
        assert_eq!(m.last_with_term_at_most(6, 5), Some(6));
        assert_eq!(m.last_with_term_at_most(6, 4), Some(5));
        assert_eq!(m.last_with_term_at_most(6, 2), Some(3));
        assert_eq!(m.last_with_term_at_most(2, 2), Some(2));
        assert_eq!(m.last_with_term_at_most(6, 0), None);
        assert_eq!(m.last_with_term_at_most(100, 9), Some(6));
    }

    #[test]
    fn truncate_compact_reset() {
        let mut m = sample();
        m.truncate_from(4);
        assert_eq!(m.last_log_id(), Some(LogId::new(1, 3)));
        m.append(&e(4, 4, 1));
        m.compact(LogId::new(1, 2));
        assert_eq!(m.first_index(), 3);
        assert_eq!(m.term_at(2), Some(1));
        assert_eq!(m.term_at(1), None);
        assert_eq!(m.term_at(4), Some(4));
        m.reset_to_snapshot(LogId::new(7, 20));
        assert_eq!(m.next_index(), 21);
        assert_eq!(m.term_at(20), Some(7));
        let mut m = sample();
        m.truncate_from(0);
        assert_eq!(m.last_index(), None);
    }

    #[test]
    fn recovery_validates() {
        let m = LogMeta::recover(None, &[(1, 0), (3, 4), (5, 6)], Some(6)).unwrap();
        assert_eq!(m, sample());
        let s = LogMeta::recover(Some(LogId::new(3, 4)), &[(3, 5), (5, 6)], Some(6)).unwrap();
        assert_eq!(s.term_at(4), Some(3));
        assert_eq!(s.term_at(5), Some(3));
        assert_eq!(s.term_at(6), Some(5));
        assert_eq!(
            LogMeta::recover(None, &[(3, 0), (1, 4)], Some(6)),
            Err(LogMetaError::BadBoundaries)
        );
        assert_eq!(
            LogMeta::recover(None, &[(1, 2)], Some(6)),
            Err(LogMetaError::MissingBoundary)
        );
        assert_eq!(
            LogMeta::recover(Some(LogId::new(1, 9)), &[], Some(6)),
            Err(LogMetaError::LastBeforeSnapshot)
        );
    }
}
