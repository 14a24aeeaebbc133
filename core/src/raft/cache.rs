//! [`EntryCache`]: a byte-bounded window of the most recent entries, contiguous and
//! ending at the end of the log. It serves followers that keep up and local apply; older
//! entries are read back through [`super::Effect::ReadEntries`].

use std::collections::VecDeque;

use super::types::{Entry, Index};

/// Recent entries; see the module docs.
#[derive(Debug)]
pub(crate) struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
}

impl EntryCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        EntryCache {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Adds the entry that now ends the log, evicting the oldest to stay within bounds.
    pub(crate) fn push(&mut self, entry: Entry) {
        if self
            .entries
            .back()
            .is_some_and(|b| b.last_index + 1 != entry.index)
        {
            self.clear();
        }
        self.bytes += entry.size_bytes();
        self.entries.push_back(entry);
        while self.bytes > self.max_bytes {
            match self.entries.pop_front() {
                Some(e) => self.bytes -= e.size_bytes(),
                None => break,
            }
        }
    }

    /// Forgets entries at offsets `>= from`.
    pub(crate) fn truncate_from(&mut self, from: Index) {
        while self.entries.back().is_some_and(|b| b.last_index >= from) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= e.size_bytes();
            }
        }
    }

    /// Forgets entries ending at or before `through`.
    pub(crate) fn compact(&mut self, through: Index) {
        while self.entries.front().is_some_and(|f| f.last_index <= through) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.size_bytes();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries starting with the one containing `from`, ending at or before `up_to`, about
    /// `max_bytes` (at least one), or `None` if `from` is not cached.
    pub(crate) fn get_from(&self, from: Index, up_to: Index, max_bytes: usize) -> Option<Vec<Entry>> {
        let front = self.entries.front()?;
        if from < front.index {
            return None;
        }
        let k = self.entries.partition_point(|e| e.last_index < from);
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self.entries.iter().skip(k) {
            if e.last_index > up_to || (!out.is_empty() && bytes + e.size_bytes() > max_bytes) {
                break;
            }
            bytes += e.size_bytes();
            out.push(e.clone());
        }
        if out.is_empty() {
            return None;
        }
        Some(out)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(index: Index, count: u64, size: usize) -> Entry {
        Entry::data(1, index, count, Bytes::from(vec![0u8; size]))
    }

    #[test]
    fn bounded_and_contiguous() {
        let per = e(0, 1, 100).size_bytes();
        let mut c = EntryCache::new(per * 3);
        for i in 0..5 {
            c.push(e(i * 2, 2, 100));
        }
        assert!(c.bytes() <= per * 3);
        assert!(c.get_from(0, 100, 1 << 20).is_none());
        let got = c.get_from(5, 100, 1 << 20).unwrap();
        assert_eq!(got[0].index, 4);
        assert_eq!(got.len(), 3);
        assert_eq!(c.get_from(5, 7, 1).unwrap().len(), 1);
        c.truncate_from(6);
        assert_eq!(c.get_from(4, 100, 1 << 20).unwrap().len(), 1);
        c.push(e(8, 1, 1)); // gap: cache restarts
        assert!(c.get_from(4, 100, 1 << 20).is_none());
        c.compact(8);
        assert_eq!(c.bytes(), 0);
    }
}
