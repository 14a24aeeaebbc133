//! The records a group coordinator writes to its `__consumer_offsets` partition, and
//! their byte format.
//!
//! Every record is keyed: an offset commit by (group, topic, partition), a group's
//! state by its id. A null value is a tombstone. Replaying a partition's records in
//! offset order rebuilds the coordinator's state, because each record states the whole
//! current value of its key. That is also what makes the coordinator's checkpoint work
//! ([`super::coordinator`]): it re-writes every live key, after which every record
//! before the checkpoint is superseded and the prefix can be dropped.
//!
//! Format (big-endian, Oxbow's own; the first key byte is the record type, the first
//! value byte the value's version):
//!
//! ```text
//! key   = 1:u8 group:str topic:str partition:i32        offset commit
//!       | 2:u8 group:str                                group state
//! value = 1:u8 offset:i64 leader_epoch:i32 metadata:nstr commit_ms:i64
//!       | 1:u8 kind:u8 (0 classic | 1 consumer) …        group state, see the encoders
//! str   = len:u16 utf-8 bytes;  nstr = len:i16 (-1 null) bytes;  blob = len:u32 bytes
//! ```

use bytes::{BufMut, Bytes};

const OFFSET_KEY: u8 = 1;
const GROUP_KEY: u8 = 2;
const VALUE_V1: u8 = 1;
const KIND_CLASSIC: u8 = 0;
const KIND_CONSUMER: u8 = 1;

/// Why a stored record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The bytes ended inside a field.
    #[error("record truncated at byte {at}")]
    Truncated {
        /// Where.
        at: usize,
    },
    /// An unknown record type or value version.
    #[error("unknown {what} {value}")]
    Unknown {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u8,
    },
    /// A string that is not UTF-8.
    #[error("a string is not UTF-8 at byte {at}")]
    NotUtf8 {
        /// Where.
        at: usize,
    },
    /// A record without a key.
    #[error("record has no key")]
    NoKey,
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    /// The offset (the next record the group will read).
    pub offset: i64,
    /// Leader epoch of the record before it, -1 if unknown.
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: Option<String>,
    /// When it was committed (wall clock ms).
    pub commit_timestamp_ms: i64,
}

/// A member of a classic group, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassicMemberValue {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    /// The member's assignment.
    pub assignment: Bytes,
}

/// A classic group's state after a completed rebalance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassicGroupValue {
    /// Protocol type ("consumer", "connect", …; empty for a group used only for commits).
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Leader member.
    pub leader: Option<String>,
    /// When the group last changed state (wall clock ms).
    pub state_timestamp_ms: i64,
    /// Members with their assignments.
    pub members: Vec<ClassicMemberValue>,
}

/// Partitions by topic name.
pub type TopicPartitions = std::collections::BTreeMap<String, std::collections::BTreeSet<i32>>;

/// A member of a consumer (KIP-848) group, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerMemberValue {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscribed topics.
    pub subscribed_topics: Vec<String>,
    /// Assignor asked for.
    pub server_assignor: Option<String>,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Member epoch.
    pub member_epoch: i32,
    /// Partitions the member owns.
    pub assigned: TopicPartitions,
    /// Partitions the member must give up.
    pub revoking: TopicPartitions,
    /// The target assignment of the member.
    pub target: TopicPartitions,
}

/// A consumer group's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupValue {
    /// Group epoch.
    pub group_epoch: i32,
    /// Epoch of the target assignment.
    pub assignment_epoch: i32,
    /// Members.
    pub members: Vec<ConsumerMemberValue>,
}

/// A group's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupValue {
    /// Classic protocol.
    Classic(ClassicGroupValue),
    /// KIP-848 protocol.
    Consumer(ConsumerGroupValue),
}

/// One record of a coordinator partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRecord {
    /// An offset commit (`None`: deleted).
    Offset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Value.
        value: Option<OffsetValue>,
    },
    /// A group's state (`None`: deleted).
    Group {
        /// Group.
        group: String,
        /// Value.
        value: Option<GroupValue>,
    },
}

/// Writes the format's fields.
struct Writer(Vec<u8>);

impl Writer {
    fn str(&mut self, s: &str) {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        self.0.put_u16(len);
        self.0.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
    }
    fn nstr(&mut self, s: Option<&str>) {
        match s {
            None => self.0.put_i16(-1),
            Some(s) => {
                let len = s.len().min(i16::MAX as usize);
                self.0.put_i16(len as i16);
                self.0.extend_from_slice(&s.as_bytes()[..len]);
            }
        }
    }
    fn blob(&mut self, b: &[u8]) {
        self.0.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn strs(&mut self, list: &[String]) {
        self.0.put_u32(list.len() as u32);
        for s in list {
            self.str(s);
        }
    }
    fn partitions(&mut self, tps: &TopicPartitions) {
        self.0.put_u32(tps.len() as u32);
        for (topic, partitions) in tps {
            self.str(topic);
            self.0.put_u32(partitions.len() as u32);
            for p in partitions {
                self.0.put_i32(*p);
            }
        }
    }
}

/// Reads the format's fields, failing on truncation.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(RecordError::Truncated { at: self.at })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        let b = self.take(8)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        Ok(i64::from_be_bytes(raw))
    }
    fn utf8(&mut self, len: usize) -> Result<String, RecordError> {
        let at = self.at;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::NotUtf8 { at })
    }
    fn str(&mut self) -> Result<String, RecordError> {
        let len = self.u16()?;
        self.utf8(usize::from(len))
    }
    fn nstr(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.utf8(len as usize).map(Some)
    }
    fn blob(&mut self) -> Result<Bytes, RecordError> {
        let len = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
    /// A count of elements, each at least `min_bytes` long (bounds allocation).
    fn count(&mut self, min_bytes: usize) -> Result<usize, RecordError> {
        let at = self.at;
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.bytes.len() - self.at {
            return Err(RecordError::Truncated { at });
        }
        Ok(n)
    }
    fn strs(&mut self) -> Result<Vec<String>, RecordError> {
        let n = self.count(2)?;
        (0..n).map(|_| self.str()).collect()
    }
    fn partitions(&mut self) -> Result<TopicPartitions, RecordError> {
        let mut out = TopicPartitions::new();
        for _ in 0..self.count(6)? {
            let topic = self.str()?;
            let n = self.count(4)?;
            let set = (0..n).map(|_| self.i32()).collect::<Result<_, _>>()?;
            out.insert(topic, set);
        }
        Ok(out)
    }
}

impl GroupRecord {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. } | GroupRecord::Group { group, .. } => group,
        }
    }

    /// The record's key bytes.
    pub fn key(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        match self {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                ..
            } => {
                w.0.put_u8(OFFSET_KEY);
                w.str(group);
                w.str(topic);
                w.0.put_i32(*partition);
            }
            GroupRecord::Group { group, .. } => {
                w.0.put_u8(GROUP_KEY);
                w.str(group);
            }
        }
        w.0
    }

    /// The record's value bytes (`None` for a tombstone).
    pub fn value(&self) -> Option<Vec<u8>> {
        let mut w = Writer(vec![VALUE_V1]);
        match self {
            GroupRecord::Offset { value, .. } => {
                let v = value.as_ref()?;
                w.0.put_i64(v.offset);
                w.0.put_i32(v.leader_epoch);
                w.nstr(v.metadata.as_deref());
                w.0.put_i64(v.commit_timestamp_ms);
            }
            GroupRecord::Group { value, .. } => match value.as_ref()? {
                GroupValue::Classic(g) => {
                    w.0.put_u8(KIND_CLASSIC);
                    w.str(&g.protocol_type);
                    w.0.put_i32(g.generation);
                    w.nstr(g.protocol.as_deref());
                    w.nstr(g.leader.as_deref());
                    w.0.put_i64(g.state_timestamp_ms);
                    w.0.put_u32(g.members.len() as u32);
                    for m in &g.members {
                        w.str(&m.member_id);
                        w.nstr(m.instance_id.as_deref());
                        w.str(&m.client_id);
                        w.str(&m.client_host);
                        w.0.put_i32(m.rebalance_timeout_ms);
                        w.0.put_i32(m.session_timeout_ms);
                        w.blob(&m.subscription);
                        w.blob(&m.assignment);
                    }
                }
                GroupValue::Consumer(g) => {
                    w.0.put_u8(KIND_CONSUMER);
                    w.0.put_i32(g.group_epoch);
                    w.0.put_i32(g.assignment_epoch);
                    w.0.put_u32(g.members.len() as u32);
                    for m in &g.members {
                        w.str(&m.member_id);
                        w.nstr(m.instance_id.as_deref());
                        w.nstr(m.rack_id.as_deref());
                        w.str(&m.client_id);
                        w.str(&m.client_host);
                        w.strs(&m.subscribed_topics);
                        w.nstr(m.server_assignor.as_deref());
                        w.0.put_i32(m.rebalance_timeout_ms);
                        w.0.put_i32(m.member_epoch);
                        w.partitions(&m.assigned);
                        w.partitions(&m.revoking);
                        w.partitions(&m.target);
                    }
                }
            },
        }
        Some(w.0)
    }

    /// Decodes a record from its key and value.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<GroupRecord, RecordError> {
        let key = key.ok_or(RecordError::NoKey)?;
        let mut k = Reader { bytes: key, at: 0 };
        let kind = k.u8()?;
        let mut v = value.map(|bytes| Reader { bytes, at: 0 });
        if let Some(v) = v.as_mut() {
            let version = v.u8()?;
            if version != VALUE_V1 {
                return Err(RecordError::Unknown {
                    what: "value version",
                    value: version,
                });
            }
        }
        match kind {
            OFFSET_KEY => {
                let group = k.str()?;
                let topic = k.str()?;
                let partition = k.i32()?;
                let value = match v.as_mut() {
                    None => None,
                    Some(v) => Some(OffsetValue {
                        offset: v.i64()?,
                        leader_epoch: v.i32()?,
                        metadata: v.nstr()?,
                        commit_timestamp_ms: v.i64()?,
                    }),
                };
                Ok(GroupRecord::Offset {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            GROUP_KEY => {
                let group = k.str()?;
                let value = match v.as_mut() {
                    None => None,
                    Some(v) => Some(decode_group_value(v)?),
                };
                Ok(GroupRecord::Group { group, value })
            }
            other => Err(RecordError::Unknown {
                what: "record type",
                value: other,
            }),
        }
    }
}

fn decode_group_value(v: &mut Reader<'_>) -> Result<GroupValue, RecordError> {
    match v.u8()? {
        KIND_CLASSIC => {
            let protocol_type = v.str()?;
            let generation = v.i32()?;
            let protocol = v.nstr()?;
            let leader = v.nstr()?;
            let state_timestamp_ms = v.i64()?;
            let mut members = Vec::new();
            for _ in 0..v.count(24)? {
                members.push(ClassicMemberValue {
                    member_id: v.str()?,
                    instance_id: v.nstr()?,
                    client_id: v.str()?,
                    client_host: v.str()?,
                    rebalance_timeout_ms: v.i32()?,
                    session_timeout_ms: v.i32()?,
                    subscription: v.blob()?,
                    assignment: v.blob()?,
                });
            }
            Ok(GroupValue::Classic(ClassicGroupValue {
                protocol_type,
                generation,
                protocol,
                leader,
                state_timestamp_ms,
                members,
            }))
        }
        KIND_CONSUMER => {
            let group_epoch = v.i32()?;
            let assignment_epoch = v.i32()?;
            let mut members = Vec::new();
            for _ in 0..v.count(30)? {
                members.push(ConsumerMemberValue {
                    member_id: v.str()?,
                    instance_id: v.nstr()?,
                    rack_id: v.nstr()?,
                    client_id: v.str()?,
                    client_host: v.str()?,
                    subscribed_topics: v.strs()?,
                    server_assignor: v.nstr()?,
                    rebalance_timeout_ms: v.i32()?,
                    member_epoch: v.i32()?,
                    assigned: v.partitions()?,
                    revoking: v.partitions()?,
                    target: v.partitions()?,
                });
            }
            Ok(GroupValue::Consumer(ConsumerGroupValue {
                group_epoch,
                assignment_epoch,
                members,
            }))
        }
        other => Err(RecordError::Unknown {
            what: "group kind",
            value: other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(record: GroupRecord) {
        let key = record.key();
        let value = record.value();
        let decoded = GroupRecord::decode(Some(&key), value.as_deref()).expect("decodes");
        assert_eq!(decoded, record);
        // Every truncation of the value fails cleanly.
        if let Some(value) = value {
            for cut in 0..value.len() {
                assert!(GroupRecord::decode(Some(&key), Some(&value[..cut])).is_err());
            }
        }
    }

    #[test]
    fn every_kind_of_record_roundtrips_and_truncation_is_an_error() {
        roundtrip(GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(OffsetValue {
                offset: 42,
                leader_epoch: 7,
                metadata: Some("meta".into()),
                commit_timestamp_ms: 1_700_000_000_000,
            }),
        });
        roundtrip(GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: None,
        });
        roundtrip(GroupRecord::Group {
            group: "g".into(),
            value: Some(GroupValue::Classic(ClassicGroupValue {
                protocol_type: "consumer".into(),
                generation: 4,
                protocol: Some("range".into()),
                leader: Some("m1".into()),
                state_timestamp_ms: 5,
                members: vec![ClassicMemberValue {
                    member_id: "m1".into(),
                    instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                }],
            })),
        });
        let tps: TopicPartitions = [("t".to_string(), [0, 1].into_iter().collect())]
            .into_iter()
            .collect();
        roundtrip(GroupRecord::Group {
            group: "g2".into(),
            value: Some(GroupValue::Consumer(ConsumerGroupValue {
                group_epoch: 9,
                assignment_epoch: 9,
                members: vec![ConsumerMemberValue {
                    member_id: "m".into(),
                    instance_id: Some("i".into()),
                    rack_id: None,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    subscribed_topics: vec!["t".into()],
                    server_assignor: Some("uniform".into()),
                    rebalance_timeout_ms: 1000,
                    member_epoch: 9,
                    assigned: tps.clone(),
                    revoking: TopicPartitions::new(),
                    target: tps,
                }],
            })),
        });
        roundtrip(GroupRecord::Group {
            group: "g".into(),
            value: None,
        });
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(GroupRecord::decode(None, None).is_err());
        assert!(GroupRecord::decode(Some(&[9]), None).is_err());
        assert!(GroupRecord::decode(Some(&[2, 0, 1, b'g']), Some(&[2])).is_err());
        // A huge member count with few bytes is refused before allocating.
        let key = GroupRecord::Group {
            group: "g".into(),
            value: None,
        }
        .key();
        let mut value = vec![VALUE_V1, KIND_CONSUMER, 0, 0, 0, 1, 0, 0, 0, 1];
        value.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(GroupRecord::decode(Some(&key), Some(&value)).is_err());
    }
}
