//! `oxbow txn list | describe ID | producers TOPIC | abort …`: transactions from the
//! command line, for operators. `list` and `describe` ask the transaction coordinators
//! (ListTransactions, DescribeTransactions); `producers` shows a partition's producer
//! state (DescribeProducers), where a hanging transaction — open on a partition although
//! its coordinator has ended or forgotten it, holding the last stable offset back —
//! shows as a producer with a transaction start offset; `abort` ends such a transaction
//! on that partition with an ABORT marker (WriteTxnMarkers), as Kafka's
//! `kafka-transactions.sh abort` does.

use super::{check, s, CliError, DEFAULT_BROKERS};
use crate::client::KafkaClient;
use clap::Subcommand;
use kafka_protocol::messages::{self as m, ApiKey, ProducerId, TopicName, TransactionalId};
use oxbow_core::kafka::ErrorCode;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long `describe` keeps asking while the coordinator is being created or loaded.
const COORDINATOR_WAIT: Duration = Duration::from_secs(8);

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
            let mut client = KafkaClient::connect(&brokers)?;
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

fn list(brokers: &str, states: Vec<String>, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = KafkaClient::connect(brokers)?;
    let request =
        m::ListTransactionsRequest::default().with_state_filters(states.iter().map(|t| s(t)).collect());
    let response: m::ListTransactionsResponse = client.call(ApiKey::ListTransactions, 0, &request)?;
    check("list transactions", response.error_code, None)?;
    let mut rows: Vec<_> = response.transaction_states;
    rows.sort_by(|a, b| a.transactional_id.0.cmp(&b.transactional_id.0));
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
    Ok(())
}

/// FindCoordinator for a transactional id, retried while the coordinator is being
/// created or loaded; a client connected to it.
fn coordinator(brokers: &str, id: &str) -> Result<KafkaClient, CliError> {
    let deadline = Instant::now() + COORDINATOR_WAIT;
    let mut client = KafkaClient::connect(brokers)?;
    loop {
        let request = m::FindCoordinatorRequest::default()
            .with_key(s(id))
            .with_key_type(1);
        let response: m::FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 3, &request)?;
        let retriable = [
            ErrorCode::COORDINATOR_NOT_AVAILABLE.0,
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS.0,
            ErrorCode::NOT_COORDINATOR.0,
        ];
        if retriable.contains(&response.error_code) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        check(
            format!("find the coordinator of `{id}`"),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let addr = format!("{}:{}", response.host.as_str(), response.port);
        return Ok(KafkaClient::connect(&addr)?);
    }
}

fn describe(brokers: &str, id: &str, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = coordinator(brokers, id)?;
    let request =
        m::DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]);
    let response: m::DescribeTransactionsResponse = client.call(ApiKey::DescribeTransactions, 0, &request)?;
    let Some(t) = response.transaction_states.into_iter().next() else {
        return Err(CliError::Usage(format!("no answer about `{id}`")));
    };
    check(format!("describe `{id}`"), t.error_code, None)?;
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

fn producers(
    client: &mut KafkaClient,
    topic: &str,
    partition: i32,
) -> Result<Vec<m::describe_producers_response::ProducerState>, CliError> {
    let request = m::DescribeProducersRequest::default().with_topics(vec![
        m::describe_producers_request::TopicRequest::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(vec![partition]),
    ]);
    let response: m::DescribeProducersResponse = client.call(ApiKey::DescribeProducers, 0, &request)?;
    let found = response
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == partition);
    let Some(p) = found else {
        return Err(CliError::Usage(format!("no answer about {topic}/{partition}")));
    };
    check(
        format!("describe producers of {topic}/{partition}"),
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
    let mut client = KafkaClient::connect(brokers)?;
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
    let marker = m::write_txn_markers_request::WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_transaction_result(false)
        .with_coordinator_epoch(-1)
        .with_topics(vec![
            m::write_txn_markers_request::WritableTxnMarkerTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(vec![partition]),
        ]);
    let request = m::WriteTxnMarkersRequest::default().with_markers(vec![marker]);
    let response: m::WriteTxnMarkersResponse = client.call(ApiKey::WriteTxnMarkers, 1, &request)?;
    let code = response
        .markers
        .iter()
        .flat_map(|m| m.topics.iter())
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.error_code)
        .next()
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
