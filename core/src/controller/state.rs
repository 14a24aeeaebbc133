//! [`ControllerState`]: the cluster metadata as the controller log defines it — brokers,
//! topics (reusing the broker's [`Metadata`]/[`TopicMeta`]), partition placement and
//! moves, users' credentials and the producer-id counter — with per-command validation
//! (Kafka error codes), deterministic apply, and a versioned, checksummed encoding of
//! the whole state (the body of the controller snapshot).
//!
//! Apply never consults anything but the state and the command (no clock, no
//! placement policy): every broker applying the same log reaches byte-identical state
//! ([`ControllerState::encode`]). A command that fails validation at apply time changes
//! nothing, on every broker alike.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::codec::{seal, split_checked, DecodeError, Put, Reader};
use super::command::{
    put_credential, put_registration, put_replicas, read_credential, read_registration, read_replicas,
    BrokerId, BrokerRegistration, Command, ScramCredential, ScramMechanism,
};
use crate::broker::metadata::{
    topic_id, topic_log_config, validate_topic_name, Metadata, TopicMeta, TOPIC_CONFIG_KEYS,
};
use crate::kafka::ErrorCode;
use crate::log::config::LogConfig;

const MAGIC: &[u8; 4] = b"OXCS";
const STATE_VERSION: u16 = 1;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: usize = 100_000;
/// Most replicas one partition may have.
pub const MAX_REPLICATION_FACTOR: usize = 16;
/// Most producer ids handed out in one block.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1 << 20;
/// Fewest PBKDF2 iterations a stored SCRAM credential may use (RFC 7677).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;
/// Most bytes of a salt or key in a credential.
pub const MAX_CREDENTIAL_FIELD_BYTES: usize = 256;

// Kafka error codes without a named constant in `crate::kafka::ErrorCode`.
const REASSIGNMENT_IN_PROGRESS: ErrorCode = ErrorCode(60);
const STALE_BROKER_EPOCH: ErrorCode = ErrorCode(77);
const NO_REASSIGNMENT_IN_PROGRESS: ErrorCode = ErrorCode(85);
const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(91);
const UNACCEPTABLE_CREDENTIAL: ErrorCode = ErrorCode(93);
const BROKER_ID_NOT_REGISTERED: ErrorCode = ErrorCode(102);

/// A registered broker and whether the controller considers it alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    /// What it registered with.
    pub registration: BrokerRegistration,
    /// Alive (placement uses only live brokers).
    pub alive: bool,
}

/// Where one partition's replicas are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// The replicas; the first is the preferred leader (top Raft priority).
    pub replicas: Vec<BrokerId>,
    /// A move in progress: the replica set being moved to.
    pub target: Option<Vec<BrokerId>>,
}

/// A command refused by validation: a Kafka error code and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", code.name().unwrap_or("KAFKA_ERROR"), code.0)]
pub struct CommandError {
    /// The Kafka error code.
    pub code: ErrorCode,
    /// What is wrong.
    pub message: String,
}

impl CommandError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }

    /// The Kafka error code.
    pub fn kafka_error_code(&self) -> i16 {
        self.code.0
    }
}

/// What an applied command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Done; nothing to report.
    Done,
    /// A topic was created with this id and revision.
    TopicCreated {
        /// Kafka topic id.
        topic_id: [u8; 16],
        /// Revision (the command's controller offset).
        revision: i64,
    },
    /// A block of producer ids `first .. first + count`.
    ProducerIds {
        /// First id of the block.
        first: i64,
        /// Size of the block.
        count: u32,
    },
}

/// The cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ControllerState {
    /// Topics, revisions and the producer-id counter (the single-node format, reused).
    pub metadata: Metadata,
    /// Registered brokers.
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    /// Placement of every partition of every topic, by topic name.
    pub assignments: BTreeMap<String, Vec<PartitionAssignment>>,
    /// Credentials by user name and mechanism.
    pub users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

type Check = Result<(), CommandError>;

fn fail(code: ErrorCode, message: impl Into<String>) -> Check {
    Err(CommandError::new(code, message))
}

fn check_str(what: &str, s: &str) -> Check {
    if s.is_empty() || s.len() > usize::from(u16::MAX) {
        return fail(ErrorCode::INVALID_REQUEST, format!("{what} is empty or too long"));
    }
    Ok(())
}

impl ControllerState {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| b.alive)
    }

    /// Checks `command` against the state without changing it.
    pub fn validate(&self, command: &Command) -> Check {
        match command {
            Command::RegisterBroker(b) => self.check_registration(b),
            Command::SetBrokerLiveness { broker, epoch, .. } => self.check_broker_epoch(*broker, *epoch),
            Command::CreateTopic {
                name,
                configs,
                assignment,
            } => self.check_create_topic(name, configs, assignment),
            Command::DeleteTopic { name } => self.topic(name).map(|_| ()),
            Command::CreatePartitions { name, assignment } => self.check_create_partitions(name, assignment),
            Command::AlterTopicConfigs { name, set, delete } => {
                let topic = self.topic(name)?;
                if let Some(unknown) = delete.iter().find(|k| !TOPIC_CONFIG_KEYS.contains(&k.as_str())) {
                    return fail(
                        ErrorCode::INVALID_CONFIG,
                        format!("unknown topic config `{unknown}`"),
                    );
                }
                let mut configs = topic.configs.clone();
                configs.extend(set.clone());
                configs.retain(|k, _| !delete.contains(k));
                check_configs(&configs)
            }
            Command::ReassignPartition {
                topic,
                partition,
                replicas,
            } => self.check_reassign(topic, *partition, replicas),
            Command::FinishReassignment { topic, partition }
            | Command::CancelReassignment { topic, partition } => {
                match self.partition(topic, *partition)?.target {
                    Some(_) => Ok(()),
                    None => fail(
                        NO_REASSIGNMENT_IN_PROGRESS,
                        format!("{topic}-{partition} is not moving"),
                    ),
                }
            }
            Command::UpsertUser { name, credential } => check_credential(name, credential),
            Command::DeleteUser { name, mechanism } => {
                match self.users.get(name).is_some_and(|m| m.contains_key(mechanism)) {
                    true => Ok(()),
                    false => fail(
                        RESOURCE_NOT_FOUND,
                        format!("no {mechanism:?} credential for user {name}"),
                    ),
                }
            }
            Command::AllocateProducerIds { broker, count } => {
                if !self.brokers.contains_key(broker) {
                    return fail(
                        BROKER_ID_NOT_REGISTERED,
                        format!("broker {broker} is not registered"),
                    );
                }
                if *count == 0 || *count > MAX_PRODUCER_ID_BLOCK {
                    return fail(
                        ErrorCode::INVALID_REQUEST,
                        format!("producer id block of {count}"),
                    );
                }
                Ok(())
            }
        }
    }

    /// Validates and applies `command`, stored at controller offset `offset`. On error
    /// the state is unchanged.
    pub fn apply(&mut self, offset: u64, command: &Command) -> Result<Outcome, CommandError> {
        self.validate(command)?;
        let outcome = self.apply_valid(offset, command);
        self.metadata.version += 1;
        Ok(outcome)
    }

    fn apply_valid(&mut self, offset: u64, command: &Command) -> Outcome {
        match command {
            Command::RegisterBroker(b) => {
                self.brokers.insert(
                    b.id,
                    BrokerInfo {
                        registration: b.clone(),
                        alive: true,
                    },
                );
            }
            Command::SetBrokerLiveness { broker, alive, .. } => {
                if let Some(info) = self.brokers.get_mut(broker) {
                    info.alive = *alive;
                }
            }
            Command::CreateTopic {
                name,
                configs,
                assignment,
            } => return self.create_topic(offset, name, configs, assignment),
            Command::DeleteTopic { name } => {
                self.metadata.topics.remove(name);
                self.assignments.remove(name);
            }
            Command::CreatePartitions { name, assignment } => self.add_partitions(name, assignment),
            Command::AlterTopicConfigs { name, set, delete } => {
                if let Some(topic) = self.metadata.topics.get_mut(name) {
                    topic.configs.extend(set.clone());
                    topic.configs.retain(|k, _| !delete.contains(k));
                }
            }
            Command::ReassignPartition {
                topic,
                partition,
                replicas,
            } => {
                if let Some(p) = self.partition_mut(topic, *partition) {
                    p.target = Some(replicas.clone());
                }
            }
            Command::FinishReassignment { topic, partition } => {
                if let Some(p) = self.partition_mut(topic, *partition) {
                    if let Some(target) = p.target.take() {
                        p.replicas = target;
                    }
                }
            }
            Command::CancelReassignment { topic, partition } => {
                if let Some(p) = self.partition_mut(topic, *partition) {
                    p.target = None;
                }
            }
            Command::UpsertUser { name, credential } => {
                self.users
                    .entry(name.clone())
                    .or_default()
                    .insert(credential.mechanism, credential.clone());
            }
            Command::DeleteUser { name, mechanism } => {
                if let Some(m) = self.users.get_mut(name) {
                    m.remove(mechanism);
                    if m.is_empty() {
                        self.users.remove(name);
                    }
                }
            }
            Command::AllocateProducerIds { count, .. } => {
                let first = self.metadata.next_producer_id;
                self.metadata.next_producer_id = first.saturating_add(i64::from(*count));
                return Outcome::ProducerIds { first, count: *count };
            }
        }
        Outcome::Done
    }

    fn create_topic(
        &mut self,
        offset: u64,
        name: &str,
        configs: &BTreeMap<String, String>,
        assignment: &[Vec<BrokerId>],
    ) -> Outcome {
        let revision = i64::try_from(offset).unwrap_or(i64::MAX);
        let id = topic_id(name, revision);
        self.metadata.topics.insert(
            name.to_string(),
            TopicMeta {
                topic_id: id,
                partitions: i32::try_from(assignment.len()).unwrap_or(i32::MAX),
                revision,
                configs: configs.clone(),
            },
        );
        self.metadata.next_revision = self.metadata.next_revision.max(revision.saturating_add(1));
        self.assignments.insert(
            name.to_string(),
            assignment
                .iter()
                .map(|replicas| PartitionAssignment {
                    replicas: replicas.clone(),
                    target: None,
                })
                .collect(),
        );
        Outcome::TopicCreated {
            topic_id: id,
            revision,
        }
    }

    fn add_partitions(&mut self, name: &str, assignment: &[Vec<BrokerId>]) {
        let Some(list) = self.assignments.get_mut(name) else {
            return;
        };
        list.extend(assignment.iter().map(|replicas| PartitionAssignment {
            replicas: replicas.clone(),
            target: None,
        }));
        if let Some(topic) = self.metadata.topics.get_mut(name) {
            topic.partitions = i32::try_from(list.len()).unwrap_or(i32::MAX);
        }
    }

    /// The topic named `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn topic(&self, name: &str) -> Result<&TopicMeta, CommandError> {
        self.metadata.topics.get(name).ok_or_else(|| {
            CommandError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, format!("no topic {name}"))
        })
    }

    /// The assignment of one partition, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<&PartitionAssignment, CommandError> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.assignments.get(topic)?.get(p))
            .ok_or_else(|| {
                CommandError::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no partition {topic}-{partition}"),
                )
            })
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionAssignment> {
        let p = usize::try_from(partition).ok()?;
        self.assignments.get_mut(topic)?.get_mut(p)
    }

    fn check_registration(&self, b: &BrokerRegistration) -> Check {
        check_str("rpc address", &b.rpc_addr)?;
        check_str("kafka address", &b.kafka_addr)?;
        if let Some(rack) = &b.rack {
            check_str("rack", rack)?;
        }
        match self.brokers.get(&b.id) {
            Some(known) if known.registration.epoch >= b.epoch => fail(
                STALE_BROKER_EPOCH,
                format!(
                    "broker {} registered with epoch {}, not above {}",
                    b.id, b.epoch, known.registration.epoch
                ),
            ),
            _ => Ok(()),
        }
    }

    fn check_broker_epoch(&self, broker: BrokerId, epoch: u64) -> Check {
        match self.brokers.get(&broker) {
            None => fail(
                BROKER_ID_NOT_REGISTERED,
                format!("broker {broker} is not registered"),
            ),
            Some(b) if b.registration.epoch != epoch => fail(
                STALE_BROKER_EPOCH,
                format!(
                    "broker {broker} is at epoch {}, not {epoch}",
                    b.registration.epoch
                ),
            ),
            Some(_) => Ok(()),
        }
    }

    fn check_replicas(&self, replicas: &[BrokerId], replication_factor: usize) -> Check {
        if replicas.len() != replication_factor {
            return fail(
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "{} replicas where the topic has {replication_factor}",
                    replicas.len()
                ),
            );
        }
        for (i, r) in replicas.iter().enumerate() {
            if !self.brokers.contains_key(r) {
                return fail(
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!("broker {r} is not registered"),
                );
            }
            if replicas[..i].contains(r) {
                return fail(
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!("broker {r} listed twice"),
                );
            }
        }
        Ok(())
    }

    fn check_create_topic(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
        assignment: &[Vec<BrokerId>],
    ) -> Check {
        if let Err(reason) = validate_topic_name(name) {
            return fail(ErrorCode::INVALID_TOPIC_EXCEPTION, reason);
        }
        if self.metadata.topics.contains_key(name) {
            return fail(ErrorCode::TOPIC_ALREADY_EXISTS, format!("topic {name} exists"));
        }
        if assignment.is_empty() || assignment.len() > MAX_PARTITIONS_PER_TOPIC {
            return fail(
                ErrorCode::INVALID_PARTITIONS,
                format!("{} partitions (1..={MAX_PARTITIONS_PER_TOPIC})", assignment.len()),
            );
        }
        let rf = assignment[0].len();
        if rf == 0 || rf > MAX_REPLICATION_FACTOR {
            return fail(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!("replication factor {rf} (1..={MAX_REPLICATION_FACTOR})"),
            );
        }
        for replicas in assignment {
            self.check_replicas(replicas, rf)?;
        }
        check_configs(configs)
    }

    fn check_create_partitions(&self, name: &str, assignment: &[Vec<BrokerId>]) -> Check {
        self.topic(name)?;
        let current = self.assignments.get(name).map_or(&[][..], Vec::as_slice);
        if assignment.is_empty() || current.len() + assignment.len() > MAX_PARTITIONS_PER_TOPIC {
            return fail(
                ErrorCode::INVALID_PARTITIONS,
                format!("cannot add {} partitions to {}", assignment.len(), current.len()),
            );
        }
        let rf = current.first().map_or(0, |p| p.replicas.len());
        for replicas in assignment {
            self.check_replicas(replicas, rf)?;
        }
        Ok(())
    }

    fn check_reassign(&self, topic: &str, partition: i32, replicas: &[BrokerId]) -> Check {
        let current = self.partition(topic, partition)?;
        if current.target.is_some() {
            return fail(
                REASSIGNMENT_IN_PROGRESS,
                format!("{topic}-{partition} is already moving"),
            );
        }
        if replicas.is_empty() || replicas.len() > MAX_REPLICATION_FACTOR {
            return fail(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!("{} target replicas", replicas.len()),
            );
        }
        self.check_replicas(replicas, replicas.len())
    }

    // ----- encoding -------------------------------------------------------------------

    /// The whole state, versioned and checksummed. Deterministic: equal states encode
    /// to equal bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.put_u16v(STATE_VERSION);
        out.put_bytes32(&self.metadata.encode());
        out.put_u32v(u32::try_from(self.brokers.len()).unwrap_or(u32::MAX));
        for info in self.brokers.values() {
            put_registration(&mut out, &info.registration);
            out.put_u8v(u8::from(info.alive));
        }
        out.put_u32v(u32::try_from(self.assignments.len()).unwrap_or(u32::MAX));
        for (topic, partitions) in &self.assignments {
            out.put_str(topic);
            out.put_u32v(u32::try_from(partitions.len()).unwrap_or(u32::MAX));
            for p in partitions {
                put_replicas(&mut out, &p.replicas);
                match &p.target {
                    None => out.put_u8v(0),
                    Some(target) => {
                        out.put_u8v(1);
                        put_replicas(&mut out, target);
                    }
                }
            }
        }
        out.put_u32v(u32::try_from(self.users.len()).unwrap_or(u32::MAX));
        for (name, credentials) in &self.users {
            out.put_str(name);
            out.put_u32v(u32::try_from(credentials.len()).unwrap_or(u32::MAX));
            for c in credentials.values() {
                put_credential(&mut out, c);
            }
        }
        seal(&mut out);
        Bytes::from(out)
    }

    /// Decodes what [`ControllerState::encode`] wrote; damage is an error.
    pub fn decode(bytes: &[u8]) -> Result<ControllerState, DecodeError> {
        let body = split_checked(bytes)?;
        let mut r = Reader::new(body);
        if r.take(4)? != MAGIC {
            return Err(DecodeError::BadMagic("controller state"));
        }
        let version = r.u16()?;
        if version != STATE_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "controller state",
                version,
            });
        }
        let metadata = Metadata::decode(&r.bytes32()?).map_err(|_| DecodeError::Invalid {
            what: "embedded topic metadata",
            value: 0,
        })?;
        let mut state = ControllerState {
            metadata,
            ..ControllerState::default()
        };
        for _ in 0..r.count("brokers", 8)? {
            let registration = read_registration(&mut r)?;
            let alive = r.bool()?;
            state
                .brokers
                .insert(registration.id, BrokerInfo { registration, alive });
        }
        for _ in 0..r.count("topics", 6)? {
            let topic = r.string()?;
            let mut partitions = Vec::new();
            for _ in 0..r.count("partitions", 5)? {
                let replicas = read_replicas(&mut r)?;
                let target = if r.bool()? {
                    Some(read_replicas(&mut r)?)
                } else {
                    None
                };
                partitions.push(PartitionAssignment { replicas, target });
            }
            state.assignments.insert(topic, partitions);
        }
        for _ in 0..r.count("users", 6)? {
            let name = r.string()?;
            let mut credentials = BTreeMap::new();
            for _ in 0..r.count("credentials", 17)? {
                let c = read_credential(&mut r)?;
                credentials.insert(c.mechanism, c);
            }
            state.users.insert(name, credentials);
        }
        r.finish()?;
        Ok(state)
    }
}

fn check_configs(configs: &BTreeMap<String, String>) -> Check {
    topic_log_config(&LogConfig::default(), configs)
        .map(|_| ())
        .map_err(|e| CommandError::new(ErrorCode::INVALID_CONFIG, e.to_string()))
}

fn check_credential(name: &str, c: &ScramCredential) -> Check {
    check_str("user name", name)?;
    if c.iterations < MIN_SCRAM_ITERATIONS {
        return fail(
            UNACCEPTABLE_CREDENTIAL,
            format!("{} iterations, below {MIN_SCRAM_ITERATIONS}", c.iterations),
        );
    }
    for (what, field) in [
        ("salt", &c.salt),
        ("stored key", &c.stored_key),
        ("server key", &c.server_key),
    ] {
        if field.is_empty() || field.len() > MAX_CREDENTIAL_FIELD_BYTES {
            return fail(
                UNACCEPTABLE_CREDENTIAL,
                format!("{what} of {} bytes", field.len()),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: BrokerId, epoch: u64) -> Command {
        Command::RegisterBroker(BrokerRegistration {
            id,
            rpc_addr: format!("n{id}:33145"),
            kafka_addr: format!("n{id}:9092"),
            rack: None,
            epoch,
        })
    }

    fn code(result: Result<Outcome, CommandError>) -> i16 {
        result.map_or_else(|e| e.kafka_error_code(), |_| 0)
    }

    #[test]
    fn validation_answers_with_kafka_error_codes() {
        let mut s = ControllerState::new();
        for id in 1..=3 {
            assert_eq!(code(s.apply(id, &broker(id, 1))), 0);
        }
        assert_eq!(code(s.apply(4, &broker(2, 1))), 77, "stale epoch");
        let create = |name: &str, assignment: Vec<Vec<u64>>| Command::CreateTopic {
            name: name.into(),
            configs: BTreeMap::new(),
            assignment,
        };
        assert_eq!(code(s.apply(5, &create("bad name", vec![vec![1]]))), 17);
        assert_eq!(code(s.apply(5, &create("t", vec![]))), 37);
        assert_eq!(code(s.apply(5, &create("t", vec![vec![1, 1]]))), 39);
        assert_eq!(code(s.apply(5, &create("t", vec![vec![1, 9]]))), 39);
        assert_eq!(code(s.apply(5, &create("t", vec![vec![1, 2], vec![3]]))), 39);
        let before = s.encode();
        let bad_config = Command::CreateTopic {
            name: "t".into(),
            configs: BTreeMap::from([("retention.ms".into(), "soon".into())]),
            assignment: vec![vec![1]],
        };
        assert_eq!(code(s.apply(5, &bad_config)), 40);
        assert_eq!(s.encode(), before, "a refused command changes nothing");
        assert_eq!(code(s.apply(6, &create("t", vec![vec![1, 2], vec![2, 3]]))), 0);
        assert_eq!(code(s.apply(7, &create("t", vec![vec![1, 2]]))), 36);
        assert_eq!(code(s.apply(8, &Command::DeleteTopic { name: "u".into() })), 3);
        let delete_unknown = Command::AlterTopicConfigs {
            name: "t".into(),
            set: BTreeMap::new(),
            delete: std::collections::BTreeSet::from(["x".repeat(70_000)]),
        };
        assert_eq!(
            code(s.apply(8, &delete_unknown)),
            40,
            "unknown (and unencodable) key refused"
        );
        let finish = Command::FinishReassignment {
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(code(s.apply(9, &finish)), 85);
        let reassign = Command::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            replicas: vec![3, 1],
        };
        assert_eq!(code(s.apply(10, &reassign)), 0);
        assert_eq!(code(s.apply(11, &reassign)), 60);
        assert_eq!(code(s.apply(12, &finish)), 0);
        assert_eq!(s.partition("t", 0).unwrap().replicas, vec![3, 1]);
        assert_eq!(
            code(s.apply(13, &Command::AllocateProducerIds { broker: 9, count: 10 })),
            102
        );
        assert_eq!(
            s.apply(14, &Command::AllocateProducerIds { broker: 1, count: 10 }),
            Ok(Outcome::ProducerIds { first: 0, count: 10 })
        );
    }

    #[test]
    fn state_round_trips_and_detects_damage() {
        let mut s = ControllerState::new();
        s.apply(1, &broker(1, 1)).unwrap();
        s.apply(
            2,
            &Command::CreateTopic {
                name: "t".into(),
                configs: BTreeMap::from([("retention.ms".into(), "5".into())]),
                assignment: vec![vec![1]],
            },
        )
        .unwrap();
        s.apply(
            3,
            &Command::UpsertUser {
                name: "u".into(),
                credential: ScramCredential {
                    mechanism: ScramMechanism::Sha256,
                    salt: Bytes::from_static(b"s"),
                    stored_key: Bytes::from_static(b"k"),
                    server_key: Bytes::from_static(b"v"),
                    iterations: 4096,
                },
            },
        )
        .unwrap();
        let bytes = s.encode();
        assert_eq!(ControllerState::decode(&bytes).unwrap(), s);
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0x10;
            assert!(ControllerState::decode(&damaged).is_err(), "byte {i}");
        }
        assert!(ControllerState::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
