//! The client commands of `oxbow` (DESIGN.md §5): `topic create|list|describe|delete|
//! alter-config`, `produce` (lines from stdin), `consume`, `cluster info`, `group list|
//! describe|delete|reset-offsets` (in [`group`]), `txn list|describe|producers|abort`
//! (in [`txn`]). Each talks to a broker through [`crate::client::KafkaClient`] and
//! prints for people.

mod group;
mod txn;

pub use group::{group, GroupCommand, ResetArgs, ResetTarget};
pub use txn::{txn, TxnCommand};

use crate::client::{ClientError, KafkaClient};
use bytes::Bytes;
use clap::{Args, Subcommand};
use kafka_protocol::messages::{self as m, ApiKey, BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
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

/// `oxbow topic …`.
#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions.
        #[arg(short = 'p', long, default_value_t = 1)]
        partitions: i32,
        /// Replication factor.
        #[arg(short = 'r', long, default_value_t = 1)]
        replicas: i16,
        /// Topic configs, `key=value`.
        #[arg(short = 'c', long = "config")]
        configs: Vec<String>,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
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
    let name = oxbow_core::kafka::ErrorCode(code).to_string();
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

fn metadata(client: &mut KafkaClient, topic: Option<&str>) -> Result<m::MetadataResponse, CliError> {
    let mut request = m::MetadataRequest::default();
    request.topics = topic.map(|t| {
        let mut requested = m::metadata_request::MetadataRequestTopic::default();
        requested.name = Some(TopicName(s(t)));
        vec![requested]
    });
    Ok(client.call(ApiKey::Metadata, 12, &request)?)
}

fn partition_count(client: &mut KafkaClient, topic: &str) -> Result<i32, CliError> {
    let response = metadata(client, Some(topic))?;
    let t = response
        .topics
        .first()
        .ok_or_else(|| CliError::Usage(format!("no topic `{topic}`")))?;
    check(format!("topic {topic}"), t.error_code, None)?;
    Ok(t.partitions.len() as i32)
}

/// `ListOffsets` for every partition of `topic` at `timestamp` (-2 earliest, -1 latest).
fn list_offsets(
    client: &mut KafkaClient,
    topic: &str,
    partitions: i32,
    timestamp: i64,
) -> Result<Vec<i64>, CliError> {
    let mut t = m::list_offsets_request::ListOffsetsTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = (0..partitions)
        .map(|p| {
            let mut lp = m::list_offsets_request::ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = timestamp;
            lp
        })
        .collect();
    let mut request = m::ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![t];
    let response: m::ListOffsetsResponse = client.call(ApiKey::ListOffsets, 7, &request)?;
    let mut offsets = vec![-1; partitions as usize];
    for t in response.topics {
        for p in t.partitions {
            check(
                format!("offsets of {topic}/{}", p.partition_index),
                p.error_code,
                None,
            )?;
            if let Some(slot) = offsets.get_mut(p.partition_index as usize) {
                *slot = p.offset;
            }
        }
    }
    Ok(offsets)
}

/// Runs `oxbow topic …`.
pub fn topic(command: TopicCommand, out: &mut impl Write) -> Result<(), CliError> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replicas,
            configs,
            brokers,
        } => {
            let mut client = KafkaClient::connect(&brokers)?;
            let mut topic = m::create_topics_request::CreatableTopic::default();
            topic.name = TopicName(s(&name));
            topic.num_partitions = partitions;
            topic.replication_factor = replicas;
            for pair in &configs {
                let (key, value) = parse_pair(pair)?;
                let mut config = m::create_topics_request::CreatableTopicConfig::default();
                config.name = s(&key);
                config.value = Some(s(&value));
                topic.configs.push(config);
            }
            let mut request = m::CreateTopicsRequest::default();
            request.topics = vec![topic];
            request.timeout_ms = 30_000;
            let response: m::CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request)?;
            for t in &response.topics {
                check(format!("create {name}"), t.error_code, t.error_message.as_ref())?;
            }
            writeln!(out, "created topic {name} with {partitions} partitions")?;
        }
        TopicCommand::List { brokers } => {
            let mut client = KafkaClient::connect(&brokers)?;
            for t in metadata(&mut client, None)?.topics {
                let name = t.name.map(|n| n.0.as_str().to_string()).unwrap_or_default();
                writeln!(out, "{name}\t{} partitions", t.partitions.len())?;
            }
        }
        TopicCommand::Describe { name, brokers } => {
            let mut client = KafkaClient::connect(&brokers)?;
            let response = metadata(&mut client, Some(&name))?;
            let t = response
                .topics
                .first()
                .ok_or_else(|| CliError::Usage(format!("no topic `{name}`")))?;
            check(format!("describe {name}"), t.error_code, None)?;
            let partitions = t.partitions.len() as i32;
            let earliest = list_offsets(&mut client, &name, partitions, -2)?;
            let latest = list_offsets(&mut client, &name, partitions, -1)?;
            writeln!(out, "topic {name}: {partitions} partitions")?;
            writeln!(out, "partition\tleader\tepoch\tstart\tend")?;
            for p in &t.partitions {
                let i = p.partition_index as usize;
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    p.partition_index,
                    p.leader_id.0,
                    p.leader_epoch,
                    earliest.get(i).copied().unwrap_or(-1),
                    latest.get(i).copied().unwrap_or(-1)
                )?;
            }
            let mut resource = m::describe_configs_request::DescribeConfigsResource::default();
            resource.resource_type = 2;
            resource.resource_name = s(&name);
            let mut request = m::DescribeConfigsRequest::default();
            request.resources = vec![resource];
            let response: m::DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &request)?;
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
        }
        TopicCommand::Delete { name, brokers } => {
            let mut client = KafkaClient::connect(&brokers)?;
            let mut request = m::DeleteTopicsRequest::default();
            request.topic_names = vec![TopicName(s(&name))];
            request.timeout_ms = 30_000;
            let response: m::DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 5, &request)?;
            for r in &response.responses {
                check(format!("delete {name}"), r.error_code, r.error_message.as_ref())?;
            }
            writeln!(out, "deleted topic {name}")?;
        }
        TopicCommand::AlterConfig {
            name,
            configs,
            brokers,
        } => {
            let mut client = KafkaClient::connect(&brokers)?;
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
            let response: m::IncrementalAlterConfigsResponse =
                client.call(ApiKey::IncrementalAlterConfigs, 1, &request)?;
            for r in &response.responses {
                check(format!("alter {name}"), r.error_code, r.error_message.as_ref())?;
            }
            writeln!(out, "updated configs of {name}")?;
        }
    }
    Ok(())
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
    let mut client = KafkaClient::connect(&args.brokers)?;
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
    client: &mut KafkaClient,
    topic: &str,
    partition: i32,
    acks: i16,
    batch: Bytes,
) -> Result<(), CliError> {
    let mut p = m::produce_request::PartitionProduceData::default();
    p.index = partition;
    p.records = Some(batch);
    let mut t = m::produce_request::TopicProduceData::default();
    t.name = TopicName(s(topic));
    t.partition_data = vec![p];
    let mut request = m::ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 30_000;
    request.topic_data = vec![t];
    if acks == 0 {
        // No answer comes; a failure shows as a closed connection on the next call.
        return client
            .send_only(ApiKey::Produce, 9, &request)
            .map_err(CliError::from);
    }
    let response: m::ProduceResponse = client.call(ApiKey::Produce, 9, &request)?;
    for t in response.responses {
        for p in t.partition_responses {
            check(
                format!("produce to {topic}/{}", p.index),
                p.error_code,
                p.error_message.as_ref(),
            )?;
        }
    }
    Ok(())
}

/// Runs `oxbow consume`: prints values (one per line) until `--num` records or, without
/// it, until interrupted.
pub fn consume(args: ConsumeArgs, out: &mut impl Write) -> Result<u64, CliError> {
    let mut client = KafkaClient::connect(&args.brokers)?;
    let partitions = partition_count(&mut client, &args.topic)?;
    let mut positions = match (args.offset, args.from_beginning) {
        (Some(offset), _) => vec![offset; partitions as usize],
        (None, true) => list_offsets(&mut client, &args.topic, partitions, -2)?,
        (None, false) => list_offsets(&mut client, &args.topic, partitions, -1)?,
    };
    let mut printed = 0u64;
    while args.num.is_none_or(|n| printed < n) {
        let mut t = m::fetch_request::FetchTopic::default();
        t.topic = TopicName(s(&args.topic));
        t.partitions = positions
            .iter()
            .enumerate()
            .map(|(p, offset)| {
                let mut fp = m::fetch_request::FetchPartition::default();
                fp.partition = p as i32;
                fp.fetch_offset = *offset;
                fp.partition_max_bytes = 1024 * 1024;
                fp.current_leader_epoch = -1;
                fp.last_fetched_epoch = -1;
                fp.log_start_offset = -1;
                fp
            })
            .collect();
        let mut request = m::FetchRequest::default();
        request.replica_id = BrokerId(-1);
        request.max_wait_ms = 500;
        request.min_bytes = 1;
        request.max_bytes = 16 * 1024 * 1024;
        request.topics = vec![t];
        let response: m::FetchResponse = client.call(ApiKey::Fetch, 12, &request)?;
        for t in response.responses {
            for p in t.partitions {
                check(
                    format!("fetch {}/{}", args.topic, p.partition_index),
                    p.error_code,
                    None,
                )?;
                let Some(mut records) = p.records else { continue };
                while !records.is_empty() {
                    let set = RecordBatchDecoder::decode(&mut records).map_err(|e| CliError::Refused {
                        what: format!("records of {}/{}", args.topic, p.partition_index),
                        code: 2,
                        message: e.to_string(),
                    })?;
                    for record in set.records {
                        let position = &mut positions[p.partition_index as usize];
                        if record.offset < *position {
                            continue; // a batch that starts before the asked offset
                        }
                        *position = record.offset + 1;
                        if record.control || args.num.is_some_and(|n| printed >= n) {
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
                            writeln!(out, "{}\t{}\t{key}\t{value}", p.partition_index, record.offset)?;
                        } else {
                            writeln!(out, "{value}")?;
                        }
                        printed += 1;
                    }
                }
            }
        }
        out.flush()?;
    }
    Ok(printed)
}

/// Runs `oxbow cluster info`.
pub fn cluster(command: ClusterCommand, out: &mut impl Write) -> Result<(), CliError> {
    let ClusterCommand::Info { brokers } = command;
    let mut client = KafkaClient::connect(&brokers)?;
    let response = metadata(&mut client, None)?;
    let cluster_id = response
        .cluster_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    writeln!(
        out,
        "cluster {cluster_id}, controller {}",
        response.controller_id.0
    )?;
    for b in &response.brokers {
        writeln!(out, "broker {} at {}:{}", b.node_id.0, b.host.as_str(), b.port)?;
    }
    for t in &response.topics {
        let name = t
            .name
            .as_ref()
            .map(|n| n.0.as_str().to_string())
            .unwrap_or_default();
        let leaderless = t.partitions.iter().filter(|p| p.leader_id.0 < 0).count();
        writeln!(
            out,
            "topic {name}: {} partitions, {leaderless} without a leader",
            t.partitions.len()
        )?;
    }
    Ok(())
}
