//! `oxbow txn list | describe ID | producers TOPIC | abort …`: transactions from the
//! command line, for operators. `list` and `describe` ask the transaction coordinators
//! (ListTransactions, DescribeTransactions); `producers` shows a partition's producer
//! state (DescribeProducers), where a hanging transaction — open on a partition although
//! its coordinator has ended or forgotten it, holding the last stable offset back —
//! shows as a producer with a transaction start offset; `abort` ends such a transaction
//! on that partition with an ABORT marker (WriteTxnMarkers), as Kafka's
//! `kafka-transactions.sh abort` does.
//!
//! Routing is [`ClusterClient`]'s: `list` asks every broker, `describe` the id's
//! coordinator, `producers` and `abort` the partition's leader.

use super::{check, on_every_broker, s, CliError, DEFAULT_BROKERS};
use crate::client::{Api, ClusterClient, Target, TopicPartition};
use clap::Subcommand;
use kafka_protocol::messages::{self as m, ApiKey, ProducerId, TopicName, TransactionalId};
use oxbow_core::kafka::ErrorCode;
use std::collections::BTreeMap;
use std::io::Write;

const DESCRIBE_PRODUCERS: Api = Api {
    key: ApiKey::DescribeProducers,
    version: 0,
};
const WRITE_TXN_MARKERS: Api = Api {
    key: ApiKey::WriteTxnMarkers,
    version: 1,
};

/// `oxbow txn …`.
#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// List transactional ids: producer id and state.
    List {
        /// Only these states (Ongoing, PrepareCommit, CompleteAbort, …).
        #[arg(long = "state")]
        states: Vec<String>,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Show a transactional id: producer, epoch, state, timeout, start, partitions.
    Describe {
        /// The transactional id.
        id: String,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Show the producers of a partition, with the start offset of each one's open
    /// transaction (a hanging transaction shows here).
    Producers {
        /// Topic.
        topic: String,
        /// Partition.
        #[arg(long, default_value_t = 0)]
        partition: i32,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// End a hanging transaction on one partition by writing an ABORT marker for its
    /// producer.
    Abort {
        /// Topic.
        topic: String,
        /// Partition.
        #[arg(long, default_value_t = 0)]
        partition: i32,
        /// The producer whose transaction hangs (see `oxbow txn producers`).
        #[arg(long)]
        producer_id: i64,
        /// Its epoch (default: the one the partition knows).
        #[arg(long)]
        producer_epoch: Option<i16>,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
}

/// Runs an `oxbow txn` command.
pub fn txn(command: TxnCommand, out: &mut impl Write) -> Result<(), CliError> {
    match command {
        TxnCommand::List { states, brokers } => list(&brokers, states, out),
        TxnCommand::Describe { id, brokers } => describe(&brokers, &id, out),
        TxnCommand::Producers {
            topic,
            partition,
            brokers,
        } => {
            let mut client = ClusterClient::connect(&brokers)?;
            let producers = producers(&mut client, &topic, partition)?;
            writeln!(
                out,
                "{:<12} {:>6} {:>14} {:>16} {:>18}",
                "PRODUCER-ID", "EPOCH", "LAST-SEQUENCE", "LAST-TIMESTAMP", "TXN-START-OFFSET"
            )?;
            for p in producers {
                let start = if p.current_txn_start_offset >= 0 {
                    p.current_txn_start_offset.to_string()
                } else {
                    "-".to_string()
                };
                writeln!(
                    out,
                    "{:<12} {:>6} {:>14} {:>16} {:>18}",
                    p.producer_id.0, p.producer_epoch, p.last_sequence, p.last_timestamp, start
                )?;
            }
            Ok(())
        }
        TxnCommand::Abort {
            topic,
            partition,
            producer_id,
            producer_epoch,
            brokers,
        } => abort(&brokers, &topic, partition, producer_id, producer_epoch, out),
    }
}

/// ListTransactions on every broker (each answers for the ids it coordinates), merged.
fn list(brokers: &str, states: Vec<String>, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = ClusterClient::connect(brokers)?;
    let request =
        m::ListTransactionsRequest::default().with_state_filters(states.iter().map(|t| s(t)).collect());
    let (answers, notes) = on_every_broker(&mut client, |c, id| {
        let response: m::ListTransactionsResponse = c.call(ApiKey::ListTransactions, 0, &request)?;
        check(
            format!("list transactions on broker {id}"),
            response.error_code,
            None,
        )?;
        Ok(response.transaction_states)
    })?;
    let mut rows: Vec<_> = answers.into_iter().flatten().collect();
    rows.sort_by(|a, b| a.transactional_id.0.cmp(&b.transactional_id.0));
    rows.dedup_by(|a, b| a.transactional_id.0 == b.transactional_id.0);
    writeln!(
        out,
        "{:<32} {:>12} {:<16}",
        "TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"
    )?;
    for t in rows {
        writeln!(
            out,
            "{:<32} {:>12} {:<16}",
            t.transactional_id.0.as_str(),
            t.producer_id.0,
            t.transaction_state.as_str()
        )?;
    }
    for note in notes {
        writeln!(out, "note: {note}")?;
    }
    Ok(())
}

/// DescribeTransactions on the id's coordinator (found again and retried while it is
/// being created, loaded or moved).
fn describe(brokers: &str, id: &str, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = ClusterClient::connect(brokers)?;
    let request =
        m::DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]);
    let t = client.with_target(&Target::TxnCoordinator(id.to_string()), |c| {
        let response: m::DescribeTransactionsResponse = c.call(ApiKey::DescribeTransactions, 0, &request)?;
        let Some(t) = response.transaction_states.into_iter().next() else {
            return Err(CliError::Usage(format!("no answer about `{id}`")));
        };
        check(format!("describe `{id}`"), t.error_code, None)?;
        Ok(t)
    })?;
    writeln!(out, "transactional id  {id}")?;
    writeln!(
        out,
        "producer          {} (epoch {})",
        t.producer_id.0, t.producer_epoch
    )?;
    writeln!(out, "state             {}", t.transaction_state.as_str())?;
    writeln!(out, "timeout           {} ms", t.transaction_timeout_ms)?;
    if t.transaction_start_time_ms >= 0 {
        writeln!(
            out,
            "started at        {} (ms since the epoch)",
            t.transaction_start_time_ms
        )?;
    }
    for topic in t.topics {
        let partitions: Vec<String> = topic.partitions.iter().map(|p| p.to_string()).collect();
        writeln!(
            out,
            "partitions        {} [{}]",
            topic.topic.0.as_str(),
            partitions.join(", ")
        )?;
    }
    Ok(())
}

/// DescribeProducers of one partition, asked of its leader.
fn producers(
    client: &mut ClusterClient,
    topic: &str,
    partition: i32,
) -> Result<Vec<m::describe_producers_response::ProducerState>, CliError> {
    let tp = TopicPartition::new(topic, partition);
    let build = |items: &BTreeMap<TopicPartition, ()>| {
        let topics = items
            .keys()
            .map(|tp| {
                m::describe_producers_request::TopicRequest::default()
                    .with_name(TopicName(s(&tp.topic)))
                    .with_partition_indexes(vec![tp.partition])
            })
            .collect();
        m::DescribeProducersRequest::default().with_topics(topics)
    };
    let read = |response: m::DescribeProducersResponse| {
        response
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.as_str().to_string();
                t.partitions
                    .into_iter()
                    .map(move |p| (TopicPartition::new(&name, p.partition_index), p.error_code, p))
            })
            .collect::<Vec<_>>()
    };
    let mut answers = client.call_partitioned(
        DESCRIBE_PRODUCERS,
        BTreeMap::from([(tp.clone(), ())]),
        build,
        read,
    )?;
    let Some(p) = answers.remove(&tp) else {
        return Err(CliError::Usage(format!("no answer about {tp}")));
    };
    check(
        format!("describe producers of {tp}"),
        p.error_code,
        p.error_message.as_ref(),
    )?;
    Ok(p.active_producers)
}

fn abort(
    brokers: &str,
    topic: &str,
    partition: i32,
    producer_id: i64,
    producer_epoch: Option<i16>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = ClusterClient::connect(brokers)?;
    let epoch = match producer_epoch {
        Some(epoch) => epoch,
        None => {
            let known = producers(&mut client, topic, partition)?
                .into_iter()
                .find(|p| p.producer_id.0 == producer_id)
                .ok_or_else(|| {
                    CliError::Usage(format!("{topic}/{partition} knows no producer {producer_id}"))
                })?;
            i16::try_from(known.producer_epoch).map_err(|_| {
                CliError::Usage(format!("producer epoch {} out of range", known.producer_epoch))
            })?
        }
    };
    let tp = TopicPartition::new(topic, partition);
    let build = |items: &BTreeMap<TopicPartition, ()>| {
        let topics = items
            .keys()
            .map(|tp| {
                m::write_txn_markers_request::WritableTxnMarkerTopic::default()
                    .with_name(TopicName(s(&tp.topic)))
                    .with_partition_indexes(vec![tp.partition])
            })
            .collect();
        let marker = m::write_txn_markers_request::WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_transaction_result(false)
            .with_coordinator_epoch(-1)
            .with_topics(topics);
        m::WriteTxnMarkersRequest::default().with_markers(vec![marker])
    };
    let read = |response: m::WriteTxnMarkersResponse| {
        response
            .markers
            .into_iter()
            .flat_map(|m| m.topics)
            .flat_map(|t| {
                let name = t.name.0.as_str().to_string();
                t.partitions.into_iter().map(move |p| {
                    (
                        TopicPartition::new(&name, p.partition_index),
                        p.error_code,
                        p.error_code,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let answers =
        client.call_partitioned(WRITE_TXN_MARKERS, BTreeMap::from([(tp.clone(), ())]), build, read)?;
    let code = answers
        .get(&tp)
        .copied()
        .unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR.0);
    check(
        format!("abort producer {producer_id} on {topic}/{partition}"),
        code,
        None,
    )?;
    writeln!(
        out,
        "aborted producer {producer_id} (epoch {epoch}) on {topic}/{partition}"
    )?;
    Ok(())
}
