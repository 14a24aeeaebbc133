//! The table of a shard's hosted partitions and the index of their next deadlines, so
//! that finding the next wake-up and the partitions due at it costs a lookup instead
//! of a visit of every partition (10,000 idle partitions on a node).
//!
//! A partition's deadline (the earlier of its replica's and its group coordinator's
//! `poll_timeout`) can only change while someone holds it mutably, and mutable access
//! goes through [`HostedTable::get_mut`] (or [`HostedTable::insert`]), which marks it
//! touched. Touched partitions are re-indexed by [`HostedTable::refresh`]; until then
//! [`HostedTable::next_deadline`] asks them directly, so the answer is never late. An
//! indexed deadline that is stale and early only causes a wake-up that finds nothing
//! due. Everything is ordered (`BTreeMap`/`BTreeSet`): no order leaks from hashing.

use super::{Hosted, TopicPartition};
use crate::time::Instant;
use std::collections::{btree_map, BTreeMap, BTreeSet};

/// Hosted partitions by topic and partition, with their deadlines indexed.
#[derive(Default)]
pub(super) struct HostedTable {
    map: BTreeMap<TopicPartition, Hosted>,
    /// Partitions lent out mutably since their last re-indexing.
    touched: BTreeSet<TopicPartition>,
    /// Each indexed partition's deadline (absent: none).
    deadline_of: BTreeMap<TopicPartition, Instant>,
    /// The same deadlines, earliest first.
    by_deadline: BTreeSet<(Instant, TopicPartition)>,
}

/// When a hosted partition next wants its timers run: its replica's or its
/// coordinator's deadline, whichever is earlier.
pub(super) fn deadline(hosted: &Hosted) -> Option<Instant> {
    let coordinator = hosted.coordinator.as_ref().and_then(|c| c.poll_timeout());
    [hosted.replica.poll_timeout(), coordinator]
        .into_iter()
        .flatten()
        .min()
}

impl HostedTable {
    /// The partition, for reading.
    pub(super) fn get(&self, tp: &TopicPartition) -> Option<&Hosted> {
        self.map.get(tp)
    }

    /// The partition, for changing: its deadline is re-indexed at the next refresh.
    pub(super) fn get_mut(&mut self, tp: &TopicPartition) -> Option<&mut Hosted> {
        let hosted = self.map.get_mut(tp)?;
        if !self.touched.contains(tp) {
            self.touched.insert(tp.clone());
        }
        Some(hosted)
    }

    /// Hosts a partition (replacing one of the same name).
    pub(super) fn insert(&mut self, tp: TopicPartition, hosted: Hosted) {
        self.touched.insert(tp.clone());
        self.map.insert(tp, hosted);
    }

    /// Stops hosting a partition; its deadline leaves the index.
    pub(super) fn remove(&mut self, tp: &TopicPartition) -> Option<Hosted> {
        self.touched.remove(tp);
        self.unindex(tp);
        self.map.remove(tp)
    }

    /// Partitions in order.
    pub(super) fn iter(&self) -> btree_map::Iter<'_, TopicPartition, Hosted> {
        self.map.iter()
    }

    /// Partitions in order, without names.
    pub(super) fn values(&self) -> btree_map::Values<'_, TopicPartition, Hosted> {
        self.map.values()
    }

    /// Names in order.
    pub(super) fn keys(&self) -> btree_map::Keys<'_, TopicPartition, Hosted> {
        self.map.keys()
    }

    /// Number of partitions.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is hosted.
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Re-indexes the deadlines of the partitions touched since the last refresh.
    pub(super) fn refresh(&mut self) {
        for tp in std::mem::take(&mut self.touched) {
            let next = self.map.get(&tp).and_then(deadline);
            if self.deadline_of.get(&tp) == next.as_ref() {
                continue;
            }
            self.unindex(&tp);
            if let Some(at) = next {
                self.by_deadline.insert((at, tp.clone()));
                self.deadline_of.insert(tp, at);
            }
        }
    }

    fn unindex(&mut self, tp: &TopicPartition) {
        if let Some(at) = self.deadline_of.remove(tp) {
            self.by_deadline.remove(&(at, tp.clone()));
        }
    }

    /// The earliest deadline of any partition: from the index, and asked directly of
    /// partitions touched since the last refresh.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let indexed = self.by_deadline.first().map(|(at, _)| *at);
        let touched = self
            .touched
            .iter()
            .filter_map(|tp| self.map.get(tp).and_then(deadline));
        indexed.into_iter().chain(touched).min()
    }

    /// Partitions whose indexed deadline is at or before `now`, in deadline order
    /// (call [`HostedTable::refresh`] first).
    pub(super) fn due(&self, now: Instant) -> Vec<TopicPartition> {
        self.by_deadline
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, tp)| tp.clone())
            .collect()
    }

    /// Partitions touched and not yet re-indexed (tests of the index).
    #[cfg(test)]
    pub(super) fn touched_len(&self) -> usize {
        self.touched.len()
    }

    /// How many deadlines are indexed (tests of the index).
    #[cfg(test)]
    pub(super) fn indexed_len(&self) -> usize {
        self.by_deadline.len()
    }
}
