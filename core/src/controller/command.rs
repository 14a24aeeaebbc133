//! Controller commands: the entries of the controller log (Raft group 0), their
//! versioned, checksummed encoding, and how one sits in a Kafka record batch.
//!
//! A command is encoded as `version u16, tag u16, body, crc32c u32` (big-endian) and
//! stored as the value of the single record of an uncompressed Kafka v2 batch, so the
//! controller log is a Kafka-format log like every partition's (DESIGN.md §7). Decoding
//! is bounded (the `codec` reader checks every length): garbage is an error, never a
//! panic.
//!
//! Commands carry every decision the leader made (placement, revision inputs), so
//! applying one depends only on the state and the command: the same log gives the same
//! state on every broker.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::codec::{seal, split_checked, DecodeError, Put, Reader};
use crate::log::batch::{validate_batch, BATCH_HEADER_BYTES};
use crate::log::builder::{build_batch, BatchOptions, NewRecord};
use crate::log::records::parse_uncompressed_records;

/// A broker id; the same number is the broker's Raft node id.
pub type BrokerId = u64;

/// Version of the command encoding written by this build.
pub const COMMAND_VERSION: u16 = 1;

/// Upper bound of one encoded command (a topic of many partitions fits easily).
pub const MAX_COMMAND_BYTES: usize = 4 << 20;

/// What a broker announces when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    /// Broker (and Raft node) id.
    pub id: BrokerId,
    /// Address of its broker-to-broker RPC listener.
    pub rpc_addr: String,
    /// Address of its Kafka listener.
    pub kafka_addr: String,
    /// Rack, if configured (placement spreads replicas over racks).
    pub rack: Option<String>,
    /// Incarnation: strictly higher on every start, so a stale registration or liveness
    /// report of an earlier run is refused.
    pub epoch: u64,
}

/// The SCRAM hash a credential is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    fn tag(self) -> u8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    fn from_tag(tag: u8) -> Result<Self, DecodeError> {
        match tag {
            1 => Ok(ScramMechanism::Sha256),
            2 => Ok(ScramMechanism::Sha512),
            other => Err(DecodeError::Invalid {
                what: "SCRAM mechanism",
                value: i64::from(other),
            }),
        }
    }
}

/// A salted SCRAM credential (RFC 5802): only derived keys, never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    /// Which hash.
    pub mechanism: ScramMechanism,
    /// The salt.
    pub salt: Bytes,
    /// `H(ClientKey)`.
    pub stored_key: Bytes,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Bytes,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

/// One change to the cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// A broker joined or restarted.
    RegisterBroker(BrokerRegistration),
    /// The controller leader saw a broker go quiet or come back.
    SetBrokerLiveness {
        /// The broker.
        broker: BrokerId,
        /// The registration epoch this is about.
        epoch: u64,
        /// Alive or not.
        alive: bool,
    },
    /// Create a topic with this placement (one replica list per partition; the first
    /// replica is the preferred leader).
    CreateTopic {
        /// Name.
        name: String,
        /// Settings that differ from the defaults.
        configs: BTreeMap<String, String>,
        /// Replicas of each partition.
        assignment: Vec<Vec<BrokerId>>,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// Add partitions to a topic (their placement, in partition order).
    CreatePartitions {
        /// Name.
        name: String,
        /// Replicas of each new partition.
        assignment: Vec<Vec<BrokerId>>,
    },
    /// Set and remove topic settings.
    AlterTopicConfigs {
        /// Name.
        name: String,
        /// Keys to set.
        set: BTreeMap<String, String>,
        /// Keys to remove (back to the default).
        delete: BTreeSet<String>,
    },
    /// Start moving a partition to a new replica set.
    ReassignPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The target replicas (first: preferred leader).
        replicas: Vec<BrokerId>,
    },
    /// The target replicas of a move caught up: make them the replica set.
    FinishReassignment {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// Abandon a move and keep the current replicas.
    CancelReassignment {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// Store (or replace) a user's credential for one mechanism.
    UpsertUser {
        /// User name.
        name: String,
        /// The credential.
        credential: ScramCredential,
    },
    /// Remove a user's credential for one mechanism.
    DeleteUser {
        /// User name.
        name: String,
        /// Which mechanism.
        mechanism: ScramMechanism,
    },
    /// Hand a block of producer ids to a broker (InitProducerId).
    AllocateProducerIds {
        /// The broker.
        broker: BrokerId,
        /// How many ids.
        count: u32,
    },
}

/// Why stored bytes are not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandDecodeError {
    /// The command bytes are damaged or of an unknown format.
    #[error("controller command: {0}")]
    Codec(#[from] DecodeError),
    /// The Kafka batch around it is not a controller command batch.
    #[error("controller batch: {0}")]
    Batch(String),
}

const TAG_REGISTER_BROKER: u16 = 1;
const TAG_SET_LIVENESS: u16 = 2;
const TAG_CREATE_TOPIC: u16 = 3;
const TAG_DELETE_TOPIC: u16 = 4;
const TAG_CREATE_PARTITIONS: u16 = 5;
const TAG_ALTER_CONFIGS: u16 = 6;
const TAG_REASSIGN: u16 = 7;
const TAG_FINISH_REASSIGN: u16 = 8;
const TAG_CANCEL_REASSIGN: u16 = 9;
const TAG_UPSERT_USER: u16 = 10;
const TAG_DELETE_USER: u16 = 11;
const TAG_ALLOCATE_PIDS: u16 = 12;

pub(crate) fn put_replicas(out: &mut Vec<u8>, replicas: &[BrokerId]) {
    out.put_u32v(u32::try_from(replicas.len()).unwrap_or(u32::MAX));
    for r in replicas {
        out.put_u64v(*r);
    }
}

pub(crate) fn read_replicas(r: &mut Reader<'_>) -> Result<Vec<BrokerId>, DecodeError> {
    let count = r.count("replicas", 8)?;
    (0..count).map(|_| r.u64()).collect()
}

fn put_assignment(out: &mut Vec<u8>, assignment: &[Vec<BrokerId>]) {
    out.put_u32v(u32::try_from(assignment.len()).unwrap_or(u32::MAX));
    for replicas in assignment {
        put_replicas(out, replicas);
    }
}

fn read_assignment(r: &mut Reader<'_>) -> Result<Vec<Vec<BrokerId>>, DecodeError> {
    let count = r.count("partitions", 4)?;
    (0..count).map(|_| read_replicas(r)).collect()
}

pub(crate) fn put_string_map(out: &mut Vec<u8>, map: &BTreeMap<String, String>) {
    out.put_u32v(u32::try_from(map.len()).unwrap_or(u32::MAX));
    for (k, v) in map {
        out.put_str(k);
        out.put_str(v);
    }
}

pub(crate) fn read_string_map(r: &mut Reader<'_>) -> Result<BTreeMap<String, String>, DecodeError> {
    let count = r.count("configs", 4)?;
    let mut map = BTreeMap::new();
    for _ in 0..count {
        let key = r.string()?;
        map.insert(key, r.string()?);
    }
    Ok(map)
}

pub(crate) fn put_credential(out: &mut Vec<u8>, c: &ScramCredential) {
    out.put_u8v(c.mechanism.tag());
    out.put_bytes32(&c.salt);
    out.put_bytes32(&c.stored_key);
    out.put_bytes32(&c.server_key);
    out.put_u32v(c.iterations);
}

pub(crate) fn read_credential(r: &mut Reader<'_>) -> Result<ScramCredential, DecodeError> {
    Ok(ScramCredential {
        mechanism: ScramMechanism::from_tag(r.u8()?)?,
        salt: r.bytes32()?,
        stored_key: r.bytes32()?,
        server_key: r.bytes32()?,
        iterations: r.u32()?,
    })
}

pub(crate) fn put_registration(out: &mut Vec<u8>, b: &BrokerRegistration) {
    out.put_u64v(b.id);
    out.put_str(&b.rpc_addr);
    out.put_str(&b.kafka_addr);
    match &b.rack {
        None => out.put_u8v(0),
        Some(rack) => {
            out.put_u8v(1);
            out.put_str(rack);
        }
    }
    out.put_u64v(b.epoch);
}

pub(crate) fn read_registration(r: &mut Reader<'_>) -> Result<BrokerRegistration, DecodeError> {
    let id = r.u64()?;
    let rpc_addr = r.string()?;
    let kafka_addr = r.string()?;
    let rack = if r.bool()? { Some(r.string()?) } else { None };
    Ok(BrokerRegistration {
        id,
        rpc_addr,
        kafka_addr,
        rack,
        epoch: r.u64()?,
    })
}

impl Command {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::RegisterBroker(_) => "RegisterBroker",
            Command::SetBrokerLiveness { .. } => "SetBrokerLiveness",
            Command::CreateTopic { .. } => "CreateTopic",
            Command::DeleteTopic { .. } => "DeleteTopic",
            Command::CreatePartitions { .. } => "CreatePartitions",
            Command::AlterTopicConfigs { .. } => "AlterTopicConfigs",
            Command::ReassignPartition { .. } => "ReassignPartition",
            Command::FinishReassignment { .. } => "FinishReassignment",
            Command::CancelReassignment { .. } => "CancelReassignment",
            Command::UpsertUser { .. } => "UpsertUser",
            Command::DeleteUser { .. } => "DeleteUser",
            Command::AllocateProducerIds { .. } => "AllocateProducerIds",
        }
    }

    fn tag(&self) -> u16 {
        match self {
            Command::RegisterBroker(_) => TAG_REGISTER_BROKER,
            Command::SetBrokerLiveness { .. } => TAG_SET_LIVENESS,
            Command::CreateTopic { .. } => TAG_CREATE_TOPIC,
            Command::DeleteTopic { .. } => TAG_DELETE_TOPIC,
            Command::CreatePartitions { .. } => TAG_CREATE_PARTITIONS,
            Command::AlterTopicConfigs { .. } => TAG_ALTER_CONFIGS,
            Command::ReassignPartition { .. } => TAG_REASSIGN,
            Command::FinishReassignment { .. } => TAG_FINISH_REASSIGN,
            Command::CancelReassignment { .. } => TAG_CANCEL_REASSIGN,
            Command::UpsertUser { .. } => TAG_UPSERT_USER,
            Command::DeleteUser { .. } => TAG_DELETE_USER,
            Command::AllocateProducerIds { .. } => TAG_ALLOCATE_PIDS,
        }
    }

    /// The versioned, checksummed encoding. Strings must fit a `u16` length; the
    /// state's validation ([`super::ControllerState::validate`]) refuses longer ones
    /// before a leader proposes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.put_u16v(COMMAND_VERSION);
        out.put_u16v(self.tag());
        self.encode_body(&mut out);
        seal(&mut out);
        Bytes::from(out)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Command::RegisterBroker(b) => put_registration(out, b),
            Command::SetBrokerLiveness { broker, epoch, alive } => {
                out.put_u64v(*broker);
                out.put_u64v(*epoch);
                out.put_u8v(u8::from(*alive));
            }
            Command::CreateTopic {
                name,
                configs,
                assignment,
            } => {
                out.put_str(name);
                put_string_map(out, configs);
                put_assignment(out, assignment);
            }
            Command::DeleteTopic { name } => out.put_str(name),
            Command::CreatePartitions { name, assignment } => {
                out.put_str(name);
                put_assignment(out, assignment);
            }
            Command::AlterTopicConfigs { name, set, delete } => {
                out.put_str(name);
                put_string_map(out, set);
                out.put_u32v(u32::try_from(delete.len()).unwrap_or(u32::MAX));
                for key in delete {
                    out.put_str(key);
                }
            }
            Command::ReassignPartition {
                topic,
                partition,
                replicas,
            } => {
                out.put_str(topic);
                out.put_i32v(*partition);
                put_replicas(out, replicas);
            }
            Command::FinishReassignment { topic, partition }
            | Command::CancelReassignment { topic, partition } => {
                out.put_str(topic);
                out.put_i32v(*partition);
            }
            Command::UpsertUser { name, credential } => {
                out.put_str(name);
                put_credential(out, credential);
            }
            Command::DeleteUser { name, mechanism } => {
                out.put_str(name);
                out.put_u8v(mechanism.tag());
            }
            Command::AllocateProducerIds { broker, count } => {
                out.put_u64v(*broker);
                out.put_u32v(*count);
            }
        }
    }

    /// Decodes what [`Command::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(DecodeError::TooLarge {
                what: "command",
                value: bytes.len() as u64,
                limit: MAX_COMMAND_BYTES as u64,
            });
        }
        let body = split_checked(bytes)?;
        let mut r = Reader::new(body);
        let version = r.u16()?;
        if version != COMMAND_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "controller command",
                version,
            });
        }
        let tag = r.u16()?;
        let command = Self::decode_body(tag, &mut r)?;
        r.finish()?;
        Ok(command)
    }

    fn decode_body(tag: u16, r: &mut Reader<'_>) -> Result<Command, DecodeError> {
        Ok(match tag {
            TAG_REGISTER_BROKER => Command::RegisterBroker(read_registration(r)?),
            TAG_SET_LIVENESS => Command::SetBrokerLiveness {
                broker: r.u64()?,
                epoch: r.u64()?,
                alive: r.bool()?,
            },
            TAG_CREATE_TOPIC => Command::CreateTopic {
                name: r.string()?,
                configs: read_string_map(r)?,
                assignment: read_assignment(r)?,
            },
            TAG_DELETE_TOPIC => Command::DeleteTopic { name: r.string()? },
            TAG_CREATE_PARTITIONS => Command::CreatePartitions {
                name: r.string()?,
                assignment: read_assignment(r)?,
            },
            TAG_ALTER_CONFIGS => {
                let name = r.string()?;
                let set = read_string_map(r)?;
                let count = r.count("deleted configs", 2)?;
                let delete = (0..count).map(|_| r.string()).collect::<Result<_, _>>()?;
                Command::AlterTopicConfigs { name, set, delete }
            }
            TAG_REASSIGN => Command::ReassignPartition {
                topic: r.string()?,
                partition: r.i32()?,
                replicas: read_replicas(r)?,
            },
            TAG_FINISH_REASSIGN => Command::FinishReassignment {
                topic: r.string()?,
                partition: r.i32()?,
            },
            TAG_CANCEL_REASSIGN => Command::CancelReassignment {
                topic: r.string()?,
                partition: r.i32()?,
            },
            TAG_UPSERT_USER => Command::UpsertUser {
                name: r.string()?,
                credential: read_credential(r)?,
            },
            TAG_DELETE_USER => Command::DeleteUser {
                name: r.string()?,
                mechanism: ScramMechanism::from_tag(r.u8()?)?,
            },
            TAG_ALLOCATE_PIDS => Command::AllocateProducerIds {
                broker: r.u64()?,
                count: r.u32()?,
            },
            other => {
                return Err(DecodeError::Invalid {
                    what: "command tag",
                    value: i64::from(other),
                })
            }
        })
    }

    /// The Kafka record batch the controller log stores for this command: one record,
    /// no key, the encoded command as its value. Deterministic.
    pub fn to_batch(&self) -> Bytes {
        let record = NewRecord {
            key: None,
            value: Some(self.encode().to_vec()),
            timestamp_ms: 0,
            headers: Vec::new(),
        };
        build_batch(&[record], BatchOptions::default())
    }

    /// The command stored in a controller log batch (CRC-checked).
    pub fn from_batch(batch: &Bytes) -> Result<Command, CommandDecodeError> {
        let header = validate_batch(batch).map_err(|e| CommandDecodeError::Batch(e.to_string()))?;
        if header.record_count != 1 || header.is_control() {
            return Err(CommandDecodeError::Batch(
                "not a single-record data batch".to_string(),
            ));
        }
        let end = header.size_bytes().min(batch.len());
        let records = batch.slice(BATCH_HEADER_BYTES.min(end)..end);
        let parsed =
            parse_uncompressed_records(&records, 1).map_err(|e| CommandDecodeError::Batch(e.to_string()))?;
        let value = parsed
            .first()
            .and_then(|r| r.value.clone())
            .ok_or_else(|| CommandDecodeError::Batch("record without a value".to_string()))?;
        Ok(Command::decode(&value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Command> {
        vec![
            Command::RegisterBroker(BrokerRegistration {
                id: 3,
                rpc_addr: "10.0.0.3:33145".into(),
                kafka_addr: "10.0.0.3:9092".into(),
                rack: Some("a".into()),
                epoch: 7,
            }),
            Command::CreateTopic {
                name: "orders".into(),
                configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
                assignment: vec![vec![1, 2, 3], vec![2, 3, 1]],
            },
            Command::AlterTopicConfigs {
                name: "orders".into(),
                set: BTreeMap::new(),
                delete: BTreeSet::from(["retention.ms".to_string()]),
            },
            Command::UpsertUser {
                name: "alice".into(),
                credential: ScramCredential {
                    mechanism: ScramMechanism::Sha512,
                    salt: Bytes::from_static(b"salt"),
                    stored_key: Bytes::from_static(b"stored"),
                    server_key: Bytes::from_static(b"server"),
                    iterations: 4096,
                },
            },
            Command::AllocateProducerIds {
                broker: 1,
                count: 1000,
            },
        ]
    }

    #[test]
    fn commands_round_trip_through_kafka_batches() {
        for command in sample() {
            assert_eq!(Command::decode(&command.encode()).unwrap(), command);
            assert_eq!(Command::from_batch(&command.to_batch()).unwrap(), command);
            assert_eq!(command.to_batch(), command.to_batch(), "deterministic");
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = sample()[1].encode();
        for i in 0..bytes.len() * 8 {
            let mut damaged = bytes.to_vec();
            damaged[i / 8] ^= 1 << (i % 8);
            assert!(Command::decode(&damaged).is_err(), "bit {i}");
        }
    }
}
