//! Cluster messages: what brokers say to each other that is not a Raft message —
//! controller commands forwarded to the controller leader and their answers, and the
//! partition leaderships each broker knows first-hand (so every broker can answer
//! Metadata for partitions it does not host).
//!
//! They travel in frames of kind [`super::FrameKind::Cluster`]; each message is a tag
//! byte and its fields (big-endian, strings with a u16 length). Decoding is bounded by
//! the frame: every count is checked against the bytes that remain.

use bytes::Bytes;

use crate::controller::codec::{DecodeError, Put, Reader};

/// A partition's leadership as its leader knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaderNote {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The topic's revision (a re-created topic is another partition).
    pub revision: i64,
    /// The leader's broker id.
    pub leader: u64,
    /// Its term (= Kafka leader epoch).
    pub epoch: i32,
    /// The replicas in sync with the leader (the leader included).
    pub isr: Vec<u64>,
}

/// One cluster message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterMessage {
    /// To the controller leader: propose this encoded command
    /// ([`crate::controller::Command::encode`]) and answer with [`ClusterMessage::Proposed`].
    Propose {
        /// The sender's id for the answer.
        request: u64,
        /// The encoded command.
        command: Bytes,
    },
    /// The outcome of a forwarded proposal: applied at `index`, or refused.
    Proposed {
        /// The sender's request id.
        request: u64,
        /// Kafka error code (0: applied).
        code: i16,
        /// What went wrong, if anything.
        message: String,
        /// Controller log index where it was applied (on success).
        index: u64,
    },
    /// Partitions the sender leads, and at which epoch.
    Leaders {
        /// The leaderships.
        notes: Vec<LeaderNote>,
    },
}

const TAG_PROPOSE: u8 = 1;
const TAG_PROPOSED: u8 = 2;
const TAG_LEADERS: u8 = 3;
/// Smallest encoded leader note: empty topic, partition, revision, leader, epoch, an
/// empty ISR.
const MIN_NOTE_BYTES: usize = 2 + 4 + 8 + 8 + 4 + 4;
/// Smallest encoded message (a tag and a leaders count).
pub(super) const MIN_CLUSTER_MESSAGE_BYTES: usize = 1 + 4;

pub(super) fn put_cluster_message(out: &mut Vec<u8>, message: &ClusterMessage) {
    match message {
        ClusterMessage::Propose { request, command } => {
            out.put_u8v(TAG_PROPOSE);
            out.put_u64v(*request);
            out.put_bytes32(command);
        }
        ClusterMessage::Proposed {
            request,
            code,
            message,
            index,
        } => {
            out.put_u8v(TAG_PROPOSED);
            out.put_u64v(*request);
            out.put_u16v(*code as u16);
            let bounded: String = message.chars().take(1024).collect();
            out.put_str(&bounded);
            out.put_u64v(*index);
        }
        ClusterMessage::Leaders { notes } => {
            out.put_u8v(TAG_LEADERS);
            out.put_u32v(u32::try_from(notes.len()).unwrap_or(u32::MAX));
            for note in notes {
                out.put_str(&note.topic);
                out.put_i32v(note.partition);
                out.put_u64v(note.revision as u64);
                out.put_u64v(note.leader);
                out.put_i32v(note.epoch);
                out.put_u32v(u32::try_from(note.isr.len()).unwrap_or(u32::MAX));
                for id in &note.isr {
                    out.put_u64v(*id);
                }
            }
        }
    }
}

pub(super) fn read_cluster_message(r: &mut Reader<'_>) -> Result<ClusterMessage, DecodeError> {
    match r.u8()? {
        TAG_PROPOSE => Ok(ClusterMessage::Propose {
            request: r.u64()?,
            command: r.bytes32()?,
        }),
        TAG_PROPOSED => Ok(ClusterMessage::Proposed {
            request: r.u64()?,
            code: r.u16()? as i16,
            message: r.string()?,
            index: r.u64()?,
        }),
        TAG_LEADERS => {
            let count = r.count("leader notes", MIN_NOTE_BYTES)?;
            let mut notes = Vec::with_capacity(count);
            for _ in 0..count {
                let topic = r.string()?;
                let partition = r.i32()?;
                let revision = r.u64()? as i64;
                let leader = r.u64()?;
                let epoch = r.i32()?;
                let isr_count = r.count("in-sync replicas", 8)?;
                let mut isr = Vec::with_capacity(isr_count);
                for _ in 0..isr_count {
                    isr.push(r.u64()?);
                }
                notes.push(LeaderNote {
                    topic,
                    partition,
                    revision,
                    leader,
                    epoch,
                    isr,
                });
            }
            Ok(ClusterMessage::Leaders { notes })
        }
        other => Err(DecodeError::Invalid {
            what: "cluster message tag",
            value: i64::from(other),
        }),
    }
}
