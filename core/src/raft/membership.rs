//! Group membership: voters (with priorities) and learners, the single-change rules, the
//! versioned binary codec of configuration entries, and `ConfigLog`, which tracks the
//! configurations present in the log so a truncation can roll one back.
//!
//! Rules (Raft dissertation §4.1–4.3, one server at a time):
//! * A configuration takes effect on a node as soon as its entry is in the node's log,
//!   committed or not; a truncation that removes the entry reverts to the previous one.
//! * A leader proposes a change only when no configuration entry is uncommitted and it has
//!   committed an entry of its own term (the dissertation's fix for the single-server
//!   change bug).
//! * A change adds or removes at most one voter. New nodes join as learners, catch up, and
//!   are then promoted.
//! * Priority 0 voters vote but never lead.
//! * A node that is no voter of its active configuration but was a voter (priority above
//!   zero) of the one before, while that active entry is not known committed, still
//!   campaigns, under the active configuration and without counting its own vote
//!   (§4.2.2; see `Raft::campaign_priority` and the crate module docs, "Membership").

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use super::types::{Index, NodeId};

/// A voter's election priority. Higher wins when alive and caught up; 0 never leads.
pub type Priority = u32;

/// The default priority of a voter.
pub const DEFAULT_PRIORITY: Priority = 1;

/// The members of a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Membership {
    voters: BTreeMap<NodeId, Priority>,
    learners: BTreeSet<NodeId>,
}

/// Errors decoding a configuration payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload ended early.
    #[error("configuration payload truncated")]
    Truncated,
    /// An unknown codec version.
    #[error("unknown configuration codec version {0}")]
    UnknownVersion(u8),
    /// Bytes left after the configuration.
    #[error("{0} trailing bytes after configuration")]
    TrailingBytes(usize),
    /// The decoded configuration is not valid.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] MembershipError),
    /// The entry is not a configuration entry.
    #[error("entry is not a configuration entry")]
    NotAConfigEntry,
}

/// A membership that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// No voters at all.
    #[error("a membership needs at least one voter")]
    NoVoters,
    /// A node listed twice (or as voter and learner).
    #[error("node {0} listed twice")]
    Duplicate(NodeId),
}

/// A requested change of membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigChange {
    /// Add a learner (receives the log, does not vote).
    AddLearner(NodeId),
    /// Make a caught-up learner a voter with this priority.
    PromoteLearner(NodeId, Priority),
    /// Turn a voter into a learner.
    DemoteVoter(NodeId),
    /// Remove a voter or learner (may be the leader itself).
    RemoveNode(NodeId),
    /// Change a voter's priority.
    SetPriority(NodeId, Priority),
}

/// Why a configuration change cannot be applied to a membership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The node is already a member.
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// The node is not a learner.
    #[error("node {0} is not a learner")]
    NotALearner(NodeId),
    /// The node is not a voter.
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    /// The node is not a member.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// The change would leave no voter.
    #[error("the change would leave no voter")]
    LastVoter,
}

const CODEC_VERSION: u8 = 1;

impl Membership {
    /// A membership of `voters` (with their priorities) and `learners`.
    pub fn new(
        voters: impl IntoIterator<Item = (NodeId, Priority)>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Result<Self, MembershipError> {
        let mut m = Membership::default();
        for (id, p) in voters {
            if m.voters.insert(id, p).is_some() {
                return Err(MembershipError::Duplicate(id));
            }
        }
        for id in learners {
            if m.voters.contains_key(&id) || !m.learners.insert(id) {
                return Err(MembershipError::Duplicate(id));
            }
        }
        if m.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        Ok(m)
    }

    /// Voters with the default priority and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Result<Self, MembershipError> {
        Membership::new(voters.into_iter().map(|v| (v, DEFAULT_PRIORITY)), [])
    }

    /// The voters and their priorities.
    pub fn voters(&self) -> &BTreeMap<NodeId, Priority> {
        &self.voters
    }

    /// The learners.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id)
    }

    /// Whether `id` is a voter or learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member, voters and learners, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.voters.keys().chain(self.learners.iter()).copied().collect()
    }

    /// Votes needed for a majority of voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The priority of voter `id` (0 if not a voter).
    pub fn priority(&self, id: NodeId) -> Priority {
        self.voters.get(&id).copied().unwrap_or(0)
    }

    /// The highest voter priority.
    pub fn max_priority(&self) -> Priority {
        self.voters.values().copied().max().unwrap_or(0)
    }

    /// The membership after `change`.
    pub fn apply(&self, change: ConfigChange) -> Result<Membership, ChangeError> {
        let mut m = self.clone();
        match change {
            ConfigChange::AddLearner(id) => {
                if m.contains(id) {
                    return Err(ChangeError::AlreadyMember(id));
                }
                m.learners.insert(id);
            }
            ConfigChange::PromoteLearner(id, p) => {
                if !m.learners.remove(&id) {
                    return Err(ChangeError::NotALearner(id));
                }
                m.voters.insert(id, p);
            }
            ConfigChange::DemoteVoter(id) => {
                if m.voters.remove(&id).is_none() {
                    return Err(ChangeError::NotAVoter(id));
                }
                m.learners.insert(id);
            }
            ConfigChange::RemoveNode(id) => {
                if m.voters.remove(&id).is_none() && !m.learners.remove(&id) {
                    return Err(ChangeError::NotAMember(id));
                }
            }
            ConfigChange::SetPriority(id, p) => match m.voters.get_mut(&id) {
                Some(slot) => *slot = p,
                None => return Err(ChangeError::NotAVoter(id)),
            },
        }
        if m.voters.is_empty() {
            return Err(ChangeError::LastVoter);
        }
        Ok(m)
    }

    /// Number of voters added plus removed going from `self` to `other`.
    pub fn voter_changes(&self, other: &Membership) -> usize {
        let a: BTreeSet<_> = self.voters.keys().collect();
        let b: BTreeSet<_> = other.voters.keys().collect();
        a.symmetric_difference(&b).count()
    }

    /// Encodes: version u8, voter count u16, (id u64, priority u32)*, learner count u16,
    /// id u64*; all big-endian.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(5 + self.voters.len() * 12 + self.learners.len() * 8);
        b.put_u8(CODEC_VERSION);
        b.put_u16(u16::try_from(self.voters.len()).unwrap_or(u16::MAX));
        for (id, p) in &self.voters {
            b.put_u64(*id);
            b.put_u32(*p);
        }
        b.put_u16(u16::try_from(self.learners.len()).unwrap_or(u16::MAX));
        for id in &self.learners {
            b.put_u64(*id);
        }
        b.freeze()
    }

    /// Decodes what [`Membership::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Membership, CodecError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != CODEC_VERSION {
            return Err(CodecError::UnknownVersion(version));
        }
        let voter_count = r.u16()?;
        let mut voters = Vec::with_capacity(usize::from(voter_count));
        for _ in 0..voter_count {
            let id = r.u64()?;
            voters.push((id, r.u32()?));
        }
        let learner_count = r.u16()?;
        let mut learners = Vec::with_capacity(usize::from(learner_count));
        for _ in 0..learner_count {
            learners.push(r.u64()?);
        }
        if r.pos != bytes.len() {
            return Err(CodecError::TrailingBytes(bytes.len() - r.pos));
        }
        Ok(Membership::new(voters, learners)?)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let end = self.pos.checked_add(N).ok_or(CodecError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(CodecError::Truncated)?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
}

/// The configurations a node knows: the one in its snapshot (or the bootstrap one) and
/// every configuration entry in its log after the snapshot, oldest first. The active
/// configuration is the newest.
#[derive(Clone, Debug)]
pub(crate) struct ConfigLog {
    /// `(offset of the config entry, membership)`; the first element is the base (snapshot
    /// or bootstrap) configuration, whose offset is `None` for a bootstrap one.
    configs: Vec<(Option<Index>, Membership)>,
}

impl ConfigLog {
    pub(crate) fn new(base_index: Option<Index>, base: Membership) -> Self {
        ConfigLog {
            configs: vec![(base_index, base)],
        }
    }

    pub(crate) fn active(&self) -> &Membership {
        match self.configs.last() {
            Some((_, m)) => m,
            None => unreachable_base(),
        }
    }

    /// The configuration the active one replaced, if still known. Always known while the
    /// active entry is uncommitted: compaction only goes through committed offsets and
    /// keeps the configuration in force there.
    pub(crate) fn previous(&self) -> Option<&Membership> {
        self.configs
            .len()
            .checked_sub(2)
            .and_then(|i| self.configs.get(i))
            .map(|(_, m)| m)
    }

    /// Offset of the active configuration's entry (`None` for bootstrap).
    pub(crate) fn active_index(&self) -> Option<Index> {
        self.configs.last().and_then(|(i, _)| *i)
    }

    pub(crate) fn push(&mut self, index: Index, membership: Membership) {
        assert!(
            self.active_index().is_none_or(|i| i < index),
            "config entries in order"
        );
        self.configs.push((Some(index), membership));
    }

    /// Forgets configuration entries at offsets `>= from` (a log truncation).
    pub(crate) fn truncate_from(&mut self, from: Index) {
        while self.configs.len() > 1
            && self
                .configs
                .last()
                .is_some_and(|(i, _)| i.is_some_and(|i| i >= from))
        {
            self.configs.pop();
        }
    }

    /// The configuration in force at offset `index` (newest entry at or before it).
    pub(crate) fn at(&self, index: Index) -> &Membership {
        let mut found = &self.configs[0].1;
        for (i, m) in &self.configs {
            if i.is_none_or(|i| i <= index) {
                found = m;
            }
        }
        found
    }

    /// Drops configurations no longer needed once the log is compacted through `index`.
    pub(crate) fn compact(&mut self, index: Index) {
        while self.configs.len() > 1 && self.configs[1].0.is_some_and(|i| i <= index) {
            self.configs.remove(0);
        }
    }

    /// Whether a configuration entry after `commit` exists.
    pub(crate) fn has_uncommitted(&self, commit: Option<Index>) -> bool {
        self.active_index().is_some_and(|i| Some(i) > commit)
    }

    /// Every member of every known configuration (used to recognise senders).
    pub(crate) fn knows(&self, id: NodeId) -> bool {
        self.configs.iter().any(|(_, m)| m.contains(id))
    }
}

fn unreachable_base() -> ! {
    panic!("ConfigLog always holds its base configuration")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trip() {
        let m = Membership::new([(1, 3), (2, 1), (3, 0)], [7, 9]).unwrap();
        let bytes = m.encode();
        assert_eq!(Membership::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn codec_errors_are_explicit() {
        let m = Membership::with_voters([1, 2]).unwrap();
        let bytes = m.encode();
        assert_eq!(Membership::decode(&[]), Err(CodecError::Truncated));
        assert_eq!(
            Membership::decode(&bytes[..bytes.len() - 1]),
            Err(CodecError::Truncated)
        );
        let mut v = bytes.to_vec();
        v[0] = 9;
        assert_eq!(Membership::decode(&v), Err(CodecError::UnknownVersion(9)));
        let mut v = bytes.to_vec();
        v.push(0);
        assert_eq!(Membership::decode(&v), Err(CodecError::TrailingBytes(1)));
        let empty = [1u8, 0, 0, 0, 0];
        assert_eq!(
            Membership::decode(&empty),
            Err(CodecError::Invalid(MembershipError::NoVoters))
        );
        let dup = [
            1u8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        assert_eq!(
            Membership::decode(&dup),
            Err(CodecError::Invalid(MembershipError::Duplicate(1)))
        );
    }

    #[test]
    fn changes() {
        let m = Membership::with_voters([1, 2, 3]).unwrap();
        let m2 = m.apply(ConfigChange::AddLearner(4)).unwrap();
        assert_eq!(m.voter_changes(&m2), 0);
        let m3 = m2.apply(ConfigChange::PromoteLearner(4, 2)).unwrap();
        assert_eq!(m2.voter_changes(&m3), 1);
        assert_eq!(m3.quorum(), 3);
        assert_eq!(m3.priority(4), 2);
        assert_eq!(
            m.apply(ConfigChange::AddLearner(1)),
            Err(ChangeError::AlreadyMember(1))
        );
        let single = Membership::with_voters([1]).unwrap();
        assert_eq!(
            single.apply(ConfigChange::RemoveNode(1)),
            Err(ChangeError::LastVoter)
        );
    }

    #[test]
    fn config_log_truncates_and_compacts() {
        let base = Membership::with_voters([1, 2, 3]).unwrap();
        let mut log = ConfigLog::new(None, base.clone());
        let m2 = base.apply(ConfigChange::AddLearner(4)).unwrap();
        log.push(5, m2.clone());
        assert_eq!(log.active(), &m2);
        assert_eq!(log.at(4), &base);
        assert!(log.has_uncommitted(Some(4)));
        assert!(!log.has_uncommitted(Some(5)));
        log.truncate_from(5);
        assert_eq!(log.active(), &base);
        log.push(6, m2.clone());
        assert_eq!(log.previous(), Some(&base));
        log.compact(6);
        assert_eq!(log.previous(), None);
        assert_eq!(log.at(0), &m2);
        assert!(log.knows(4));
    }
}
