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
    /// To a partition's leader: run this operation (a transaction coordinator's marker
    /// or produce verification whose partition is led by another broker) and answer
    /// with [`ClusterMessage::RemoteOpDone`].
    RemoteOp {
        /// The sender's reference, echoed.
        reference: OpReference,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The operation.
        op: RemoteOp,
    },
    /// The outcome of a [`ClusterMessage::RemoteOp`]: a Kafka error code (0: done).
    RemoteOpDone {
        /// The sender's reference.
        reference: OpReference,
        /// Which operation it was.
        kind: u8,
        /// Kafka error code.
        code: i16,
    },
}

/// Where a remote operation's answer goes on the asking broker: its shard, request
/// and slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpReference {
    /// The asking shard.
    pub shard: u32,
    /// The request on that shard.
    pub request: u64,
    /// The slot in the request.
    pub slot: u32,
}

/// An operation one broker asks another to run on a partition it leads.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteOp {
    /// Write a transaction marker.
    Marker {
        /// The marker.
        marker: crate::txn::marker::Marker,
        /// Wall-clock timestamp to stamp it with.
        timestamp_ms: i64,
    },
    /// KIP-890: check that `partitions` are in the producer's ongoing transaction (run
    /// on the transaction coordinator's `__transaction_state` partition).
    VerifyTxn {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Partitions of the produce.
        partitions: Vec<(String, i32)>,
    },
    /// Transaction protocol v2 (Produce v12, TxnOffsetCommit v5): add `partitions` to
    /// the producer's transaction (run on the transaction coordinator's partition).
    AddToTxn {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Partitions to add.
        partitions: Vec<(String, i32)>,
    },
}

impl RemoteOp {
    /// The tag of this kind of operation (echoed in the answer).
    pub fn kind(&self) -> u8 {
        match self {
            RemoteOp::Marker { .. } => REMOTE_MARKER,
            RemoteOp::VerifyTxn { .. } => REMOTE_VERIFY,
            RemoteOp::AddToTxn { .. } => REMOTE_ADD,
        }
    }
}

/// [`RemoteOp::Marker`]'s kind.
pub const REMOTE_MARKER: u8 = 1;
/// [`RemoteOp::VerifyTxn`]'s kind.
pub const REMOTE_VERIFY: u8 = 2;
/// [`RemoteOp::AddToTxn`]'s kind.
pub const REMOTE_ADD: u8 = 3;

const TAG_PROPOSE: u8 = 1;
const TAG_PROPOSED: u8 = 2;
const TAG_LEADERS: u8 = 3;
const TAG_REMOTE_OP: u8 = 4;
const TAG_REMOTE_OP_DONE: u8 = 5;
/// Smallest encoded partition name in a verification: empty topic, partition.
const MIN_PARTITION_BYTES: usize = 2 + 4;

fn put_reference(out: &mut Vec<u8>, r: &OpReference) {
    out.put_u32v(r.shard);
    out.put_u64v(r.request);
    out.put_u32v(r.slot);
}

fn read_reference(r: &mut Reader<'_>) -> Result<OpReference, DecodeError> {
    Ok(OpReference {
        shard: r.u32()?,
        request: r.u64()?,
        slot: r.u32()?,
    })
}

fn put_remote_op(out: &mut Vec<u8>, op: &RemoteOp) {
    out.put_u8v(op.kind());
    match op {
        RemoteOp::Marker { marker, timestamp_ms } => {
            out.put_u64v(marker.producer_id as u64);
            out.put_u16v(marker.producer_epoch as u16);
            out.put_u8v(u8::from(marker.commit));
            out.put_i32v(marker.coordinator_epoch);
            out.put_u64v(*timestamp_ms as u64);
        }
        RemoteOp::VerifyTxn {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
        }
        | RemoteOp::AddToTxn {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
        } => {
            out.put_str(transactional_id);
            out.put_u64v(*producer_id as u64);
            out.put_u16v(*producer_epoch as u16);
            out.put_u32v(u32::try_from(partitions.len()).unwrap_or(u32::MAX));
            for (topic, partition) in partitions {
                out.put_str(topic);
                out.put_i32v(*partition);
            }
        }
    }
}

fn read_remote_op(r: &mut Reader<'_>) -> Result<RemoteOp, DecodeError> {
    match r.u8()? {
        REMOTE_MARKER => Ok(RemoteOp::Marker {
            marker: crate::txn::marker::Marker {
                producer_id: r.u64()? as i64,
                producer_epoch: r.u16()? as i16,
                commit: r.bool()?,
                coordinator_epoch: r.i32()?,
            },
            timestamp_ms: r.u64()? as i64,
        }),
        kind @ (REMOTE_VERIFY | REMOTE_ADD) => {
            let transactional_id = r.string()?;
            let producer_id = r.u64()? as i64;
            let producer_epoch = r.u16()? as i16;
            let count = r.count("partitions", MIN_PARTITION_BYTES)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                partitions.push((r.string()?, r.i32()?));
            }
            Ok(if kind == REMOTE_ADD {
                RemoteOp::AddToTxn {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions,
                }
            } else {
                RemoteOp::VerifyTxn {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions,
                }
            })
        }
        other => Err(DecodeError::Invalid {
            what: "remote operation kind",
            value: i64::from(other),
        }),
    }
}
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
        ClusterMessage::RemoteOp {
            reference,
            topic,
            partition,
            op,
        } => {
            out.put_u8v(TAG_REMOTE_OP);
            put_reference(out, reference);
            out.put_str(topic);
            out.put_i32v(*partition);
            put_remote_op(out, op);
        }
        ClusterMessage::RemoteOpDone {
            reference,
            kind,
            code,
        } => {
            out.put_u8v(TAG_REMOTE_OP_DONE);
            put_reference(out, reference);
            out.put_u8v(*kind);
            out.put_u16v(*code as u16);
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
        TAG_REMOTE_OP => Ok(ClusterMessage::RemoteOp {
            reference: read_reference(r)?,
            topic: r.string()?,
            partition: r.i32()?,
            op: read_remote_op(r)?,
        }),
        TAG_REMOTE_OP_DONE => Ok(ClusterMessage::RemoteOpDone {
            reference: read_reference(r)?,
            kind: r.u8()?,
            code: r.u16()? as i16,
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
