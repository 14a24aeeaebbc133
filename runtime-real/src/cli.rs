//! The client commands of `oxbow` (DESIGN.md §5): `topic create|list|describe|delete|
//! alter-config`, `produce` (lines from stdin), `consume`, `cluster info`, `group list|
//! describe|delete|reset-offsets` (in [`group`]), `txn list|describe|producers|abort`
//! (in [`txn`]). Each talks to the cluster through [`crate::client::ClusterClient`],
//! which sends every request to the broker it belongs to (partition leader,
//! coordinator, controller), and prints for people. This module owns the commands'
//! arguments, the requests they build and their output; routing and retries are the
//! client's.

mod group;
mod txn;

pub use group::{group, GroupCommand, ResetArgs, ResetTarget};
pub use txn::{txn, TxnCommand};

use crate::client::{
    code_name, Api, ClientError, ClusterClient, ClusterError, KafkaClient, PartitionInfo, Retriable, Retry,
    RetryPolicy, Target, TopicPartition,
};
use bytes::Bytes;
use clap::{Args, Subcommand};
use kafka_protocol::messages::{self as m, ApiKey, BrokerId, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// Default broker list of every client command.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Talking to the broker failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Routing a request in the cluster failed (no leader or coordinator in time, …).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The broker refused (Kafka error code and message).
    #[error("{what}: {message} (Kafka error {code})")]
    Refused {
        /// What was asked.
        what: String,
        /// The error code.
        code: i16,
        /// The broker's message, or the code's name.
        message: String,
    },
    /// Bad input on the command line or stdin.
    #[error("{0}")]
    Usage(String),
    /// Writing the output failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

impl Retriable for CliError {
    fn retry(&self) -> Retry {
        match self {
            CliError::Client(e) => e.retry(),
            CliError::Cluster(e) => e.retry(),
            CliError::Refused { code, .. } => crate::client::retry_for_code(*code),
            CliError::Usage(_) | CliError::Output(_) => Retry::No,
        }
    }
}

/// Whether `error` says a broker could not be reached (in the retry budget), rather
/// than that it refused.
fn unreachable(error: &CliError) -> bool {
    matches!(
        error,
        CliError::Client(ClientError::Io { .. })
            | CliError::Cluster(ClusterError::Client(ClientError::Io { .. }) | ClusterError::GaveUp { .. })
    )
}

/// How long `on_every_broker` keeps asking one broker.
const PER_BROKER_BUDGET_MS: u64 = 2_000;

/// Runs `op` on every broker Metadata lists (a list merged from all brokers: groups,
/// transactions). A broker that cannot be reached in [`PER_BROKER_BUDGET_MS`] is left
/// out with a note (a dead broker coordinates nothing once its partitions have new
/// leaders); any other failure fails the command.
fn on_every_broker<T>(
    client: &mut ClusterClient,
    mut op: impl FnMut(&mut KafkaClient, i32) -> Result<T, CliError>,
) -> Result<(Vec<T>, Vec<String>), CliError> {
    let mut answers = Vec::new();
    let mut notes = Vec::new();
    let policy = client.policy();
    client.set_policy(RetryPolicy {
        budget_ms: PER_BROKER_BUDGET_MS,
        ..policy
    });
    let result = ask_every_broker(client, &mut op, &mut answers, &mut notes);
    client.set_policy(policy);
    result.map(|()| (answers, notes))
}

fn ask_every_broker<T>(
    client: &mut ClusterClient,
    op: &mut impl FnMut(&mut KafkaClient, i32) -> Result<T, CliError>,
    answers: &mut Vec<T>,
    notes: &mut Vec<String>,
) -> Result<(), CliError> {
    for broker in client.brokers() {
        match client.with_target(&Target::Broker(broker.id), |c| op(c, broker.id)) {
            Ok(answer) => answers.push(answer),
            Err(error) if unreachable(&error) => {
                notes.push(format!(
                    "broker {} at {} did not answer: {error}",
                    broker.id,
                    broker.addr()
                ));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// What `oxbow topic create` and `recover` create.
#[derive(clap::Args, Debug)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions.
    #[arg(short = 'p', long, default_value_t = 1)]
    pub partitions: i32,
    /// Replication factor.
    #[arg(short = 'r', long, default_value_t = 1)]
    pub replicas: i16,
    /// Topic configs, `key=value`.
    #[arg(short = 'c', long = "config")]
    pub configs: Vec<String>,
    /// Broker addresses.
    #[arg(long, default_value = DEFAULT_BROKERS)]
    pub brokers: String,
}

/// `oxbow topic …`.
#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create(TopicSpec),
    /// Recover a topic from the object store (disaster recovery): create it with
    /// `oxbow.remote.recovery=true` (and remote write and read), so each partition
    /// starts from the manifest its prefix holds in the bucket (partition ids 0..N of
    /// the bucket; further configs are added to those three).
    Recover(TopicSpec),
    /// List topics.
    List {
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Show a topic's partitions, offsets and configs.
    Describe {
        /// Topic name.
        name: String,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Set topic configs (`key=value`; `key=` removes an override).
    AlterConfig {
        /// Topic name.
        name: String,
        /// `key=value` pairs.
        #[arg(required = true)]
        configs: Vec<String>,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
}

/// `oxbow produce TOPIC`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic.
    pub topic: String,
    /// Key of every record (its partition follows from it).
    #[arg(long)]
    pub key: Option<String>,
    /// Acknowledgement: all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Broker addresses.
    #[arg(long, default_value = DEFAULT_BROKERS)]
    pub brokers: String,
}

/// `oxbow consume TOPIC`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic.
    pub topic: String,
    /// Start at the earliest offset (default: the latest).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset in every partition.
    #[arg(long)]
    pub offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    pub num: Option<u64>,
    /// Print partition, offset and key before each value.
    #[arg(long)]
    pub verbose: bool,
    /// Broker addresses.
    #[arg(long, default_value = DEFAULT_BROKERS)]
    pub brokers: String,
}

/// `oxbow cluster …`.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Brokers, controller and partition leaders.
    Info {
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn check(what: impl Into<String>, code: i16, message: Option<&StrBytes>) -> Result<(), CliError> {
    if code == 0 {
        return Ok(());
    }
    let name = code_name(code);
    Err(CliError::Refused {
        what: what.into(),
        code,
        message: message.map_or(name, |m| m.as_str().to_string()),
    })
}

fn parse_pair(pair: &str) -> Result<(String, String), CliError> {
    pair.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| CliError::Usage(format!("`{pair}` is not key=value")))
}

fn metadata(client: &mut ClusterClient, topic: Option<&str>) -> Result<m::MetadataResponse, CliError> {
    let names: Option<Vec<&str>> = topic.map(|t| vec![t]);
    Ok(client.metadata(names.as_deref())?)
}

fn partition_count(client: &mut ClusterClient, topic: &str) -> Result<i32, CliError> {
    let response = metadata(client, Some(topic))?;
    let t = response
        .topics
        .first()
        .ok_or_else(|| CliError::Usage(format!("no topic `{topic}`")))?;
    check(format!("topic {topic}"), t.error_code, None)?;
    Ok(t.partitions.len() as i32)
}

const LIST_OFFSETS: Api = Api {
    key: ApiKey::ListOffsets,
    version: 7,
};
const FETCH: Api = Api {
    key: ApiKey::Fetch,
    version: 12,
};
const PRODUCE: Api = Api {
    key: ApiKey::Produce,
    version: 9,
};

/// `ListOffsets` for every partition of `topic` at `timestamp` (-2 earliest, -1 latest),
/// asked of each partition's leader.
pub(crate) fn list_offsets(
    client: &mut ClusterClient,
    topic: &str,
    partitions: i32,
    timestamp: i64,
) -> Result<Vec<i64>, CliError> {
    match list_offsets_partial(client, topic, partitions, timestamp)? {
        (_, Some(gave_up)) => Err(gave_up.into()),
        (offsets, None) => Ok(offsets.into_iter().map(|o| o.unwrap_or(-1)).collect()),
    }
}

/// [`list_offsets`], with `None` for partitions whose leader did not answer in the
/// retry budget, and why.
fn list_offsets_partial(
    client: &mut ClusterClient,
    topic: &str,
    partitions: i32,
    timestamp: i64,
) -> Result<(Vec<Option<i64>>, Option<ClusterError>), CliError> {
    let items: BTreeMap<TopicPartition, i64> = (0..partitions)
        .map(|p| (TopicPartition::new(topic, p), timestamp))
        .collect();
    let partial =
        client.call_partitioned_partial(LIST_OFFSETS, items, list_offsets_request, list_offsets_answers)?;
    let mut offsets = vec![None; usize::try_from(partitions).unwrap_or(0)];
    for (tp, (code, offset)) in partial.answers {
        check(format!("offsets of {tp}"), code, None)?;
        if let Some(slot) = offsets.get_mut(tp.partition as usize) {
            *slot = Some(offset);
        }
    }
    Ok((offsets, partial.gave_up))
}

/// A ListOffsets request for one leader's partitions (each with its timestamp).
fn list_offsets_request(items: &BTreeMap<TopicPartition, i64>) -> m::ListOffsetsRequest {
    let mut topics: BTreeMap<&str, m::list_offsets_request::ListOffsetsTopic> = BTreeMap::new();
    for (tp, timestamp) in items {
        let t = topics.entry(&tp.topic).or_insert_with(|| {
            let mut t = m::list_offsets_request::ListOffsetsTopic::default();
            t.name = TopicName(s(&tp.topic));
            t
        });
        let mut lp = m::list_offsets_request::ListOffsetsPartition::default();
        lp.partition_index = tp.partition;
        lp.timestamp = *timestamp;
        t.partitions.push(lp);
    }
    let mut request = m::ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = topics.into_values().collect();
    request
}

fn list_offsets_answers(response: m::ListOffsetsResponse) -> Vec<(TopicPartition, i16, (i16, i64))> {
    response
        .topics
        .into_iter()
        .flat_map(|t| {
            let topic = t.name.0.as_str().to_string();
            t.partitions.into_iter().map(move |p| {
                let tp = TopicPartition::new(&topic, p.partition_index);
                (tp, p.error_code, (p.error_code, p.offset))
            })
        })
        .collect()
}

const CREATE_TOPICS: Api = Api {
    key: ApiKey::CreateTopics,
    version: 7,
};
const DELETE_TOPICS: Api = Api {
    key: ApiKey::DeleteTopics,
    version: 5,
};
const DESCRIBE_CONFIGS: Api = Api {
    key: ApiKey::DescribeConfigs,
    version: 4,
};
const INCREMENTAL_ALTER_CONFIGS: Api = Api {
    key: ApiKey::IncrementalAlterConfigs,
    version: 1,
};

/// Sends a topic admin request to the controller (any broker while Metadata names
/// none) and `checks` its answer; asked again, after a metadata refresh, while the
/// controller moves (NOT_CONTROLLER) or its connection dies.
fn admin_call<Req: Encodable, Resp: Decodable>(
    client: &mut ClusterClient,
    api: Api,
    request: &Req,
    checks: impl Fn(&Resp) -> Result<(), CliError>,
) -> Result<Resp, CliError> {
    client.with_target(&Target::Controller, |c| {
        let response: Resp = c.call(api.key, api.version, request)?;
        checks(&response)?;
        Ok(response)
    })
}

/// Creates topic `name` with `(partitions, replicas)` and `key=value` configs; waits
/// for its leaders.
pub(crate) fn create_topic(
    name: &str,
    (partitions, replicas): (i32, i16),
    configs: &[String],
    brokers: &str,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = ClusterClient::connect(brokers)?;
    let mut topic = m::create_topics_request::CreatableTopic::default();
    topic.name = TopicName(s(name));
    topic.num_partitions = partitions;
    topic.replication_factor = replicas;
    for pair in configs {
        let (key, value) = parse_pair(pair)?;
        let mut config = m::create_topics_request::CreatableTopicConfig::default();
        config.name = s(&key);
        config.value = Some(s(&value));
        topic.configs.push(config);
    }
    let mut request = m::CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 30_000;
    let what = format!("create {name}");
    admin_call(
        &mut client,
        CREATE_TOPICS,
        &request,
        |r: &m::CreateTopicsResponse| {
            r.topics
                .iter()
                .try_for_each(|t| check(what.clone(), t.error_code, t.error_message.as_ref()))
        },
    )?;
    writeln!(out, "created topic {name} with {partitions} partitions")?;
    if !wait_for_leaders(&mut client, name)? {
        writeln!(
            out,
            "note: not every partition of {name} had a leader after {} ms",
            LEADERS_WAIT.as_millis()
        )?;
    }
    Ok(())
}

/// Runs `oxbow topic …`.
pub fn topic(command: TopicCommand, out: &mut impl Write) -> Result<(), CliError> {
    match command {
        TopicCommand::Create(TopicSpec {
            name,
            partitions,
            replicas,
            configs,
            brokers,
        }) => create_topic(&name, (partitions, replicas), &configs, &brokers, out)?,
        TopicCommand::Recover(TopicSpec {
            name,
            partitions,
            replicas,
            configs,
            brokers,
        }) => {
            let mut all: Vec<String> = [
                "oxbow.remote.recovery=true",
                "oxbow.remote.write=true",
                "oxbow.remote.read=true",
            ]
            .into_iter()
            .map(String::from)
            .filter(|c| !configs.iter().any(|o| o.split('=').next() == c.split('=').next()))
            .collect();
            all.extend(configs);
            create_topic(&name, (partitions, replicas), &all, &brokers, out)?;
            writeln!(out, "its partitions start from the manifests in the object store")?;
        }
        TopicCommand::List { brokers } => {
            let mut client = ClusterClient::connect(&brokers)?;
            for t in metadata(&mut client, None)?.topics {
                let name = t.name.map(|n| n.0.as_str().to_string()).unwrap_or_default();
                writeln!(out, "{name}\t{} partitions", t.partitions.len())?;
            }
        }
        TopicCommand::Describe { name, brokers } => {
            let mut client = ClusterClient::connect(&brokers)?;
            describe_topic(&mut client, &name, out)?;
        }
        TopicCommand::Delete { name, brokers } => {
            let mut client = ClusterClient::connect(&brokers)?;
            let mut request = m::DeleteTopicsRequest::default();
            request.topic_names = vec![TopicName(s(&name))];
            request.timeout_ms = 30_000;
            let what = format!("delete {name}");
            admin_call(
                &mut client,
                DELETE_TOPICS,
                &request,
                |r: &m::DeleteTopicsResponse| {
                    r.responses
                        .iter()
                        .try_for_each(|r| check(what.clone(), r.error_code, r.error_message.as_ref()))
                },
            )?;
            writeln!(out, "deleted topic {name}")?;
        }
        TopicCommand::AlterConfig {
            name,
            configs,
            brokers,
        } => {
            let mut client = ClusterClient::connect(&brokers)?;
            let mut resource = m::incremental_alter_configs_request::AlterConfigsResource::default();
            resource.resource_type = 2;
            resource.resource_name = s(&name);
            for pair in &configs {
                let (key, value) = parse_pair(pair)?;
                let mut config = m::incremental_alter_configs_request::AlterableConfig::default();
                config.name = s(&key);
                // 0 SET, 1 DELETE (an empty value removes the override).
                config.config_operation = if value.is_empty() { 1 } else { 0 };
                config.value = (!value.is_empty()).then(|| s(&value));
                resource.configs.push(config);
            }
            let mut request = m::IncrementalAlterConfigsRequest::default();
            request.resources = vec![resource];
            let what = format!("alter {name}");
            admin_call(
                &mut client,
                INCREMENTAL_ALTER_CONFIGS,
                &request,
                |r: &m::IncrementalAlterConfigsResponse| {
                    r.responses
                        .iter()
                        .try_for_each(|r| check(what.clone(), r.error_code, r.error_message.as_ref()))
                },
            )?;
            writeln!(out, "updated configs of {name}")?;
        }
    }
    Ok(())
}

/// `topic describe`: partitions (leader, epoch, start and end offsets from each leader,
/// replicas, ISR), then configs. A partition whose leader does not answer in the retry
/// budget shows `-` offsets and a note at the end.
fn describe_topic(client: &mut ClusterClient, name: &str, out: &mut impl Write) -> Result<(), CliError> {
    let partitions = partition_count(client, name)?;
    let (earliest, earliest_gap) = list_offsets_partial(client, name, partitions, -2)?;
    let (latest, latest_gap) = list_offsets_partial(client, name, partitions, -1)?;
    // Leaders as last seen (the offsets' retries may have refreshed them).
    let topic = client.snapshot().topics.get(name).cloned().unwrap_or_default();
    writeln!(out, "topic {name}: {partitions} partitions")?;
    writeln!(out, "partition\tleader\tepoch\tstart\tend\treplicas\tisr")?;
    for p in topic.partitions.values() {
        let i = p.partition as usize;
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            p.partition,
            p.leader_id,
            p.leader_epoch,
            opt_offset(earliest.get(i)),
            opt_offset(latest.get(i)),
            id_list(&p.replicas),
            id_list(&p.isr)
        )?;
    }
    let mut resource = m::describe_configs_request::DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = s(name);
    let mut request = m::DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let response: m::DescribeConfigsResponse = admin_call(client, DESCRIBE_CONFIGS, &request, |_| Ok(()))?;
    writeln!(out, "configs:")?;
    for result in response.results {
        check(
            format!("configs of {name}"),
            result.error_code,
            result.error_message.as_ref(),
        )?;
        for config in result.configs {
            let value = config.value.map(|v| v.as_str().to_string()).unwrap_or_default();
            let source = if config.config_source == 5 {
                "default"
            } else {
                "topic"
            };
            writeln!(out, "  {}={value}\t({source})", config.name.as_str())?;
        }
    }
    for gap in [earliest_gap, latest_gap].into_iter().flatten() {
        writeln!(out, "note: {gap}")?;
    }
    Ok(())
}

fn opt_offset(offset: Option<&Option<i64>>) -> String {
    offset
        .copied()
        .flatten()
        .map_or_else(|| "-".to_string(), |o| o.to_string())
}

/// How long `topic create` waits for the new partitions' leaders.
const LEADERS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits (up to [`LEADERS_WAIT`]) until Metadata shows `topic` with a leader for every
/// partition, so that a command run right after `topic create` finds them; `false` if
/// some still have none.
fn wait_for_leaders(client: &mut ClusterClient, topic: &str) -> Result<bool, CliError> {
    let deadline = std::time::Instant::now() + LEADERS_WAIT;
    loop {
        let response = metadata(client, Some(topic))?;
        let ready = response.topics.first().is_some_and(|t| {
            t.error_code == 0 && !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
        });
        if ready {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Records per produce request.
const PRODUCE_BATCH_RECORDS: usize = 500;

/// Runs `oxbow produce`: every line of `input` becomes a record; returns how many.
pub fn produce(args: ProduceArgs, input: impl BufRead, out: &mut impl Write) -> Result<u64, CliError> {
    let acks: i16 = match args.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => return Err(CliError::Usage(format!("--acks {other}: use all, 1 or 0"))),
    };
    let mut client = ClusterClient::connect(&args.brokers)?;
    let partitions = partition_count(&mut client, &args.topic)?;
    let keyed_partition = args
        .key
        .as_ref()
        .map(|k| (crc32c::crc32c(k.as_bytes()) % partitions.max(1) as u32) as i32);
    let mut round_robin = 0i32;
    let mut pending: Vec<NewRecord> = Vec::new();
    let mut sent = 0u64;
    let mut lines = input.lines();
    loop {
        let line = lines.next().transpose()?;
        if let Some(line) = &line {
            let timestamp_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            pending.push(NewRecord {
                key: args.key.as_ref().map(|k| k.as_bytes().to_vec()),
                value: Some(line.as_bytes().to_vec()),
                timestamp_ms,
                headers: Vec::new(),
            });
        }
        if pending.len() < PRODUCE_BATCH_RECORDS && line.is_some() {
            continue;
        }
        if !pending.is_empty() {
            let partition = keyed_partition.unwrap_or_else(|| {
                round_robin = (round_robin + 1) % partitions.max(1);
                round_robin
            });
            send_batch(
                &mut client,
                &args.topic,
                partition,
                acks,
                build_batch(&pending, BatchOptions::default()),
            )?;
            sent += pending.len() as u64;
            pending.clear();
        }
        if line.is_none() {
            break;
        }
    }
    writeln!(out, "produced {sent} records to {}", args.topic)?;
    Ok(sent)
}

fn send_batch(
    client: &mut ClusterClient,
    topic: &str,
    partition: i32,
    acks: i16,
    batch: Bytes,
) -> Result<(), CliError> {
    let tp = TopicPartition::new(topic, partition);
    let build = |items: &BTreeMap<TopicPartition, Bytes>| produce_request(acks, items);
    if acks == 0 {
        // No answer comes; a failure shows as a closed connection on the next call.
        let request = build(&BTreeMap::from([(tp.clone(), batch)]));
        return Ok(client.send_only_to_leader(&tp, PRODUCE, &request)?);
    }
    let items = BTreeMap::from([(tp, batch)]);
    let answers = client.call_partitioned(PRODUCE, items, build, produce_answers)?;
    for (tp, (code, message)) in answers {
        check(format!("produce to {tp}"), code, message.as_ref())?;
    }
    Ok(())
}

/// Produces one batch to `tp` with `acks=all` (for benchmarks): its base offset.
pub(crate) fn produce_one(
    client: &mut ClusterClient,
    tp: &TopicPartition,
    batch: Bytes,
) -> Result<i64, CliError> {
    let build = |items: &BTreeMap<TopicPartition, Bytes>| produce_request(-1, items);
    let read = |response: m::ProduceResponse| {
        let mut out = Vec::new();
        for t in response.responses {
            let topic = t.name.0.as_str().to_string();
            for p in t.partition_responses {
                out.push((
                    TopicPartition::new(&topic, p.index),
                    p.error_code,
                    (p.error_code, p.base_offset),
                ));
            }
        }
        out
    };
    let answers = client.call_partitioned(PRODUCE, BTreeMap::from([(tp.clone(), batch)]), build, read)?;
    let (code, base_offset) = answers
        .get(tp)
        .copied()
        .ok_or_else(|| CliError::Usage(format!("no produce answer for {tp}")))?;
    check(format!("produce to {tp}"), code, None)?;
    Ok(base_offset)
}

/// One Fetch of `tp` from `offset` (for benchmarks): the partition's answer.
pub(crate) fn fetch_one(
    client: &mut ClusterClient,
    tp: &TopicPartition,
    offset: i64,
    max_wait_ms: i32,
) -> Result<m::fetch_response::PartitionData, CliError> {
    let build = |items: &BTreeMap<TopicPartition, i64>| fetch_request(max_wait_ms, items);
    let mut answers = client.call_partitioned(
        FETCH,
        BTreeMap::from([(tp.clone(), offset)]),
        build,
        fetch_answers,
    )?;
    let data = answers
        .remove(tp)
        .ok_or_else(|| CliError::Usage(format!("no fetch answer for {tp}")))?;
    check(format!("fetch {tp}"), data.error_code, None)?;
    Ok(data)
}

/// A Produce request of one batch per partition.
fn produce_request(acks: i16, items: &BTreeMap<TopicPartition, Bytes>) -> m::ProduceRequest {
    let mut topics: BTreeMap<&str, m::produce_request::TopicProduceData> = BTreeMap::new();
    for (tp, batch) in items {
        let t = topics.entry(&tp.topic).or_insert_with(|| {
            let mut t = m::produce_request::TopicProduceData::default();
            t.name = TopicName(s(&tp.topic));
            t
        });
        let mut p = m::produce_request::PartitionProduceData::default();
        p.index = tp.partition;
        p.records = Some(batch.clone());
        t.partition_data.push(p);
    }
    let mut request = m::ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 30_000;
    request.topic_data = topics.into_values().collect();
    request
}

type CodeAndMessage = (i16, Option<StrBytes>);

fn produce_answers(response: m::ProduceResponse) -> Vec<(TopicPartition, i16, CodeAndMessage)> {
    response
        .responses
        .into_iter()
        .flat_map(|t| {
            let topic = t.name.0.as_str().to_string();
            t.partition_responses.into_iter().map(move |p| {
                let tp = TopicPartition::new(&topic, p.index);
                (tp, p.error_code, (p.error_code, p.error_message))
            })
        })
        .collect()
}

/// Longest wait of one fetch round for new records, shared among the leaders asked
/// one after another.
const FETCH_ROUND_WAIT_MS: i32 = 500;

/// Runs `oxbow consume`: prints values (one per line) until `--num` records or, without
/// it, until interrupted. Each round fetches every partition from its leader.
pub fn consume(args: ConsumeArgs, out: &mut impl Write) -> Result<u64, CliError> {
    let mut client = ClusterClient::connect(&args.brokers)?;
    let partitions = partition_count(&mut client, &args.topic)?;
    let mut positions = match (args.offset, args.from_beginning) {
        (Some(offset), _) => vec![offset; partitions as usize],
        (None, true) => list_offsets(&mut client, &args.topic, partitions, -2)?,
        (None, false) => list_offsets(&mut client, &args.topic, partitions, -1)?,
    };
    let mut printed = 0u64;
    while args.num.is_none_or(|n| printed < n) {
        let items: BTreeMap<TopicPartition, i64> = positions
            .iter()
            .enumerate()
            .map(|(p, offset)| (TopicPartition::new(&args.topic, p as i32), *offset))
            .collect();
        let leaders = leader_count(&client, &args.topic);
        let max_wait_ms = (FETCH_ROUND_WAIT_MS / leaders.max(1)).max(50);
        let build = |items: &BTreeMap<TopicPartition, i64>| fetch_request(max_wait_ms, items);
        let answers = client.call_partitioned(FETCH, items, build, fetch_answers)?;
        for (tp, data) in answers {
            check(format!("fetch {tp}"), data.error_code, None)?;
            let Some(position) = positions.get_mut(tp.partition as usize) else {
                continue; // a partition not asked for
            };
            let Some(records) = data.records else { continue };
            printed += print_records(&args, &tp, records, position, printed, out)?;
        }
        out.flush()?;
    }
    Ok(printed)
}

/// How many brokers lead `topic`'s partitions.
fn leader_count(client: &ClusterClient, topic: &str) -> i32 {
    let leaders: std::collections::BTreeSet<i32> = client
        .snapshot()
        .topics
        .get(topic)
        .map(|t| t.partitions.values().filter_map(PartitionInfo::leader).collect())
        .unwrap_or_default();
    i32::try_from(leaders.len()).unwrap_or(i32::MAX)
}

/// A Fetch request (full, no session) for one leader's partitions from their positions.
fn fetch_request(max_wait_ms: i32, items: &BTreeMap<TopicPartition, i64>) -> m::FetchRequest {
    let mut topics: BTreeMap<&str, m::fetch_request::FetchTopic> = BTreeMap::new();
    for (tp, offset) in items {
        let t = topics.entry(&tp.topic).or_insert_with(|| {
            let mut t = m::fetch_request::FetchTopic::default();
            t.topic = TopicName(s(&tp.topic));
            t
        });
        let mut fp = m::fetch_request::FetchPartition::default();
        fp.partition = tp.partition;
        fp.fetch_offset = *offset;
        fp.partition_max_bytes = 1024 * 1024;
        fp.current_leader_epoch = -1;
        fp.last_fetched_epoch = -1;
        fp.log_start_offset = -1;
        t.partitions.push(fp);
    }
    let mut request = m::FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 16 * 1024 * 1024;
    request.topics = topics.into_values().collect();
    request
}

fn fetch_answers(response: m::FetchResponse) -> Vec<(TopicPartition, i16, m::fetch_response::PartitionData)> {
    response
        .responses
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic.0.as_str().to_string();
            t.partitions.into_iter().map(move |p| {
                let tp = TopicPartition::new(&topic, p.partition_index);
                (tp, p.error_code, p)
            })
        })
        .collect()
}

/// Prints the records of `tp` at or after `position` (moving it on), up to `--num`
/// in all (`printed` so far); returns how many it printed.
fn print_records(
    args: &ConsumeArgs,
    tp: &TopicPartition,
    mut records: Bytes,
    position: &mut i64,
    printed: u64,
    out: &mut impl Write,
) -> Result<u64, CliError> {
    let mut now_printed = 0u64;
    while !records.is_empty() {
        let set = RecordBatchDecoder::decode(&mut records).map_err(|e| CliError::Refused {
            what: format!("records of {tp}"),
            code: 2,
            message: e.to_string(),
        })?;
        for record in set.records {
            if record.offset < *position {
                continue; // a batch that starts before the asked offset
            }
            *position = record.offset + 1;
            if record.control || args.num.is_some_and(|n| printed + now_printed >= n) {
                continue;
            }
            let value = record
                .value
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            if args.verbose {
                let key = record
                    .key
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                writeln!(out, "{}\t{}\t{key}\t{value}", tp.partition, record.offset)?;
            } else {
                writeln!(out, "{value}")?;
            }
            now_printed += 1;
        }
    }
    Ok(now_printed)
}

/// Runs `oxbow cluster info`: the cluster id and controller, every broker (the
/// controller marked), then per topic its partitions without a leader and a table of
/// each partition's leader, epoch, replicas, in-sync replicas and lagging replicas
/// (replicas not in the ISR).
pub fn cluster(command: ClusterCommand, out: &mut impl Write) -> Result<(), CliError> {
    let ClusterCommand::Info { brokers } = command;
    let mut client = ClusterClient::connect(&brokers)?;
    metadata(&mut client, None)?;
    let snapshot = client.snapshot();
    let controller = snapshot.controller_id;
    writeln!(
        out,
        "cluster {}, controller {}",
        snapshot.cluster_id.as_deref().unwrap_or(""),
        controller.map_or_else(|| "unknown".to_string(), |c| c.to_string())
    )?;
    for b in snapshot.brokers.values() {
        let role = if controller == Some(b.id) {
            " (controller)"
        } else {
            ""
        };
        writeln!(out, "broker {} at {}{role}", b.id, b.addr())?;
    }
    for (name, t) in &snapshot.topics {
        let leaderless = t.partitions.values().filter(|p| p.leader().is_none()).count();
        writeln!(
            out,
            "topic {name}: {} partitions, {leaderless} without a leader",
            t.partitions.len()
        )?;
        let rows = t.partitions.values().map(partition_row).collect();
        write_table(
            out,
            &["  partition", "leader", "epoch", "replicas", "isr", "lagging"],
            rows,
        )?;
    }
    Ok(())
}

fn partition_row(p: &PartitionInfo) -> Vec<String> {
    let leader = p.leader().map_or_else(|| "none".to_string(), |l| l.to_string());
    vec![
        format!("  {}", p.partition),
        leader,
        p.leader_epoch.to_string(),
        id_list(&p.replicas),
        id_list(&p.isr),
        id_list(&p.lagging()),
    ]
}

/// `1,2,3`, or `-` for none.
fn id_list(ids: &[i32]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Writes `rows` under `header`, each column padded to its widest cell.
fn write_table(out: &mut impl Write, header: &[&str], rows: Vec<Vec<String>>) -> Result<(), CliError> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::kafka::ErrorCode;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    #[test]
    fn a_leaders_share_becomes_one_request_with_a_topic_entry_per_topic() {
        let items = BTreeMap::from([(tp("a", 0), -2), (tp("a", 2), -2), (tp("b", 1), -1)]);
        let request = list_offsets_request(&items);
        let asked: Vec<(String, Vec<(i32, i64)>)> = request
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.timestamp))
                    .collect();
                (t.name.0.as_str().to_string(), partitions)
            })
            .collect();
        assert_eq!(
            asked,
            vec![
                ("a".to_string(), vec![(0, -2), (2, -2)]),
                ("b".to_string(), vec![(1, -1)])
            ]
        );
        let fetch = fetch_request(100, &BTreeMap::from([(tp("a", 1), 7), (tp("a", 3), 9)]));
        assert_eq!(fetch.max_wait_ms, 100);
        let offsets: Vec<(i32, i64)> = fetch.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.fetch_offset))
            .collect();
        assert_eq!(offsets, vec![(1, 7), (3, 9)]);
        let produce = produce_request(-1, &BTreeMap::from([(tp("a", 4), Bytes::from_static(b"x"))]));
        assert_eq!(produce.acks, -1);
        assert_eq!(produce.topic_data[0].partition_data[0].index, 4);
    }

    #[test]
    fn answers_carry_each_partitions_error_code() {
        let mut p = m::list_offsets_response::ListOffsetsPartitionResponse::default();
        p.partition_index = 3;
        p.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER.0;
        p.offset = -1;
        let mut t = m::list_offsets_response::ListOffsetsTopicResponse::default();
        t.name = TopicName(s("a"));
        t.partitions = vec![p];
        let mut response = m::ListOffsetsResponse::default();
        response.topics = vec![t];
        let answers = list_offsets_answers(response);
        assert_eq!(answers, vec![(tp("a", 3), 6, (6, -1))]);
    }

    #[test]
    fn refusals_that_mean_moved_are_retried_and_others_are_not() {
        let refused = |code: ErrorCode| CliError::Refused {
            what: "x".to_string(),
            code: code.0,
            message: String::new(),
        };
        assert_eq!(refused(ErrorCode::NOT_COORDINATOR).retry(), Retry::Refresh);
        assert_eq!(refused(ErrorCode::NOT_CONTROLLER).retry(), Retry::Refresh);
        assert_eq!(refused(ErrorCode::NOT_LEADER_OR_FOLLOWER).retry(), Retry::Refresh);
        assert_eq!(refused(ErrorCode::NON_EMPTY_GROUP).retry(), Retry::No);
        assert_eq!(CliError::Usage("no".to_string()).retry(), Retry::No);
        let dead = CliError::Client(ClientError::Io {
            addr: "h:1".to_string(),
            source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone"),
        });
        assert_eq!(dead.retry(), Retry::Reconnect);
        assert!(unreachable(&dead));
        assert!(!unreachable(&refused(ErrorCode::NOT_COORDINATOR)));
    }

    #[test]
    fn cluster_info_rows_show_replicas_isr_and_lagging() {
        let mut p = PartitionInfo {
            partition: 2,
            leader_id: 1,
            leader_epoch: 4,
            replicas: vec![1, 2, 3],
            isr: vec![1, 3],
            ..PartitionInfo::default()
        };
        assert_eq!(partition_row(&p), vec!["  2", "1", "4", "1,2,3", "1,3", "2"]);
        p.leader_id = -1;
        p.isr = vec![1, 2, 3];
        assert_eq!(partition_row(&p)[1], "none");
        assert_eq!(partition_row(&p)[5], "-");
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["a", "bb"],
            vec![vec!["xyz".to_string(), "1".to_string()]],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a    bb\nxyz  1\n");
    }
}
