//! The transaction APIs: FindCoordinator for transactional ids (creating
//! `__transaction_state` on first use), InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, DescribeTransactions and
//! ListTransactions go to the [`crate::txn::TxnCoordinator`] of the id's
//! `__transaction_state` partition; TxnOffsetCommit goes to the group coordinator of the
//! group's `__consumer_offsets` partition (held there until the producer's marker);
//! WriteTxnMarkers writes markers to the partitions it
//! names. The coordinators' own markers are routed here too: each becomes a
//! [`PartitionOp::WriteMarker`] to the shard owning the partition, and its result goes
//! back to the coordinator ([`route_markers`], [`on_marker_result`]).
//!
//! Transaction protocol v2 (KIP-890 part 2): EndTxn v5 bumps the producer's epoch at
//! the coordinator ([`TxnOp::EndTxnV2`]; a bump that exhausts the epochs first takes a
//! fresh producer id from the shard's block) and answers with the producer id and epoch
//! to use next; a transactional Produce v12 adds its partitions to the transaction
//! instead of only verifying them; TxnOffsetCommit v5 adds the group's offsets
//! partition (the implicit AddOffsetsToTxn) before committing; AddPartitionsToTxn v4-5
//! carries several transactions, each verified or added. Older versions are served as
//! before. TRANSACTION_ABORTABLE (KIP-890) goes only to request versions that know it
//! (Produce v11+, TxnOffsetCommit v4+, AddPartitionsToTxn v5); older ones get the code
//! Kafka gave them before it.

use super::coordinators::{self, CoordinatorTopic};
use super::handlers::{begin, PendingKind};
use super::partitions::TopicPartition;
use super::shard::{OpRef, OpResult, PartitionOp};
use super::{Broker, ConnectionId};
use crate::group::coordinator::txn_offsets::TxnCommit;
use crate::group::{partition_for_group, GroupResult, OFFSETS_TOPIC};
use crate::kafka::protocol::messages::{self as m, ProducerId, TopicName, TransactionalId};
use crate::kafka::protocol::protocol::StrBytes;
use crate::kafka::{ErrorCode, Request, RequestHeader, Response};
use crate::time::Instant;
use crate::txn::coordinator::{bump_exhausts_epochs, code, TxnDescription};
use crate::txn::marker::Marker;
use crate::txn::{partition_for_txn, TxnOp, TxnResult, TXN_STATE_TOPIC};
use std::collections::BTreeMap;

/// OPERATION_NOT_ATTEMPTED: the other partitions of an AddPartitionsToTxn with an
/// invalid one.
const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// What a transaction request needs to build its answer.
#[derive(Debug)]
pub struct TxnPending {
    api: TxnApi,
}

/// A topic's partitions in request order, each with a refusal decided before the
/// coordinator was asked (if any).
type PartitionOrder = Vec<(String, Vec<(i32, Option<i16>)>)>;

#[derive(Debug)]
enum TxnApi {
    InitProducerId,
    AddPartitions {
        /// Topics and partitions in request order, with a refusal decided here.
        order: PartitionOrder,
    },
    AddOffsets,
    EndTxn,
    /// AddPartitionsToTxn v4+: per transaction its partitions (with refusals decided
    /// here) and the index of its coordinator operation (none when refused here).
    AddPartitionsBatch {
        transactions: Vec<(String, PartitionOrder, Option<usize>)>,
    },
    /// TxnOffsetCommit v5 waiting for its implicit AddOffsetsToTxn.
    OffsetsAdded {
        request: Box<m::TxnOffsetCommitRequest>,
    },
    /// One slot per (producer id, topic, partition).
    WriteMarkers {
        slots: Vec<(i64, String, i32)>,
    },
    Describe,
    List,
    /// Topics and partitions in request order, with refusals decided here.
    OffsetCommit {
        order: PartitionOrder,
    },
    /// One slot per (topic, partition).
    DescribeProducers {
        slots: Vec<(String, i32)>,
    },
    /// A transactional produce waiting for its coordinator's verification.
    VerifyProduce {
        respond: bool,
        request: Box<m::ProduceRequest>,
    },
}

/// A transaction request waiting for a fresh producer id: a transactional
/// InitProducerId, or an EndTxn v5 whose epoch bump exhausts the epochs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnInit {
    /// InitProducerId with a transactional id.
    Init {
        /// The transactional id.
        transactional_id: String,
        /// Timeout asked for.
        timeout_ms: i32,
        /// The producer's current id (-1: none).
        producer_id: i64,
        /// The producer's current epoch (-1: none).
        producer_epoch: i16,
    },
    /// EndTxn v5 at the last epochs.
    EndTxn {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Commit (true) or abort.
        commit: bool,
    },
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The partition count of `__transaction_state`, if it exists.
fn state_partitions(broker: &Broker) -> Option<i32> {
    broker.metadata.topics.get(TXN_STATE_TOPIC).map(|t| t.partitions)
}

/// `__transaction_state`, where transaction coordinators live.
fn state_topic(broker: &Broker) -> CoordinatorTopic {
    CoordinatorTopic {
        name: TXN_STATE_TOPIC,
        partitions_when_created: broker.partitions.txn.config().state_partitions,
        partition_of: partition_for_txn,
        creating: "creating __transaction_state",
        no_leader: "the transaction coordinator has no leader yet",
        empty_key: "empty transactional id",
    }
}

/// FindCoordinator for a transactional id.
pub fn coordinator_for(broker: &mut Broker, now: Instant, key: &str) -> coordinators::Coordinator {
    let topic = state_topic(broker);
    coordinators::coordinator_on(broker, now, &topic, key)
}

/// Asks shard 0 to create `__transaction_state` (nobody waits: clients retry).
fn create_state_topic(broker: &mut Broker, now: Instant) {
    let topic = state_topic(broker);
    coordinators::create(broker, now, &topic);
}

/// The transactional part of an InitProducerId request, if it names a transactional
/// id; `Err(code)` when the coordinator cannot be reached.
pub fn txn_init(
    broker: &mut Broker,
    now: Instant,
    request: &m::InitProducerIdRequest,
) -> Option<Result<TxnInit, i16>> {
    let id = request
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str().to_string())
        .filter(|t| !t.is_empty())?;
    if state_partitions(broker).is_none() {
        create_state_topic(broker, now);
        return Some(Err(ErrorCode::COORDINATOR_NOT_AVAILABLE.0));
    }
    Some(Ok(TxnInit::Init {
        transactional_id: id,
        timeout_ms: request.transaction_timeout_ms,
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
    }))
}

/// A transactional InitProducerId has its fresh producer id: on to the coordinator.
pub fn init_with_producer_id(
    broker: &mut Broker,
    now: Instant,
    (id, connection, header): (u64, ConnectionId, RequestHeader),
    init: TxnInit,
    fresh_producer_id: i64,
) {
    let (api, transactional_id, op) = match init {
        TxnInit::Init {
            transactional_id,
            timeout_ms,
            producer_id,
            producer_epoch,
        } => {
            let op = TxnOp::InitProducerId {
                transactional_id: transactional_id.clone(),
                timeout_ms,
                producer_id,
                producer_epoch,
                fresh_producer_id,
            };
            (TxnApi::InitProducerId, transactional_id, op)
        }
        TxnInit::EndTxn {
            transactional_id,
            producer_id,
            producer_epoch,
            commit,
        } => {
            let op = TxnOp::EndTxnV2 {
                transactional_id: transactional_id.clone(),
                producer_id,
                producer_epoch,
                commit,
                fresh_producer_id,
            };
            (TxnApi::EndTxn, transactional_id, op)
        }
    };
    to_coordinator(
        broker,
        now,
        (id, connection, header),
        api,
        vec![(transactional_id, op)],
    );
}

/// The producer id and epoch of the first transactional data batch of a produce
/// request, if it has one.
fn transactional_producer(request: &m::ProduceRequest) -> Option<(i64, i16)> {
    request
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_ref())
        .filter_map(|records| crate::log::BatchHeader::parse(records).ok())
        .find(|h| h.is_transactional() && !h.is_control())
        .map(|h| (h.producer_id, h.producer_epoch))
}

/// Whether a produce request carries transactional batches to verify (KIP-890: a
/// partition must be part of the producer's ongoing transaction before a transactional
/// batch is written to it, so a late or stray batch cannot open a transaction the
/// coordinator knows nothing about, which would hold back the last stable offset
/// forever).
pub fn must_verify(broker: &Broker, request: &m::ProduceRequest) -> bool {
    request.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty())
        && state_partitions(broker).is_some()
        && transactional_producer(request).is_some()
}

/// Asks the coordinator whether every partition of a transactional produce is in the
/// producer's ongoing transaction (Produce v12, transaction protocol v2: adds them to
/// it); the produce runs once it says so ([`verified_produce`]), else every partition
/// is refused.
pub fn verify_produce(
    broker: &mut Broker,
    now: Instant,
    request_ref: (u64, ConnectionId, RequestHeader),
    respond: bool,
    request: m::ProduceRequest,
) {
    let txn_id = request
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str().to_string())
        .unwrap_or_default();
    let (producer_id, producer_epoch) = transactional_producer(&request).unwrap_or((-1, -1));
    let partitions = request
        .topic_data
        .iter()
        .flat_map(|t| {
            t.partition_data
                .iter()
                .map(move |p| (t.name.0.as_str().to_string(), p.index))
        })
        .collect();
    let op = TxnOp::AddPartitions {
        transactional_id: txn_id.clone(),
        producer_id,
        producer_epoch,
        partitions,
        verify_only: request_ref.2.api_version < 12,
    };
    let api = TxnApi::VerifyProduce {
        respond,
        request: Box::new(request),
    };
    to_coordinator(broker, now, request_ref, api, vec![(txn_id, op)]);
}

/// The produce to run if a verification succeeded.
pub fn verified_produce(
    pending: &TxnPending,
    results: &[Option<OpResult>],
) -> Option<(bool, m::ProduceRequest)> {
    match &pending.api {
        TxnApi::VerifyProduce { respond, request }
            if matches!(
                txn_result(results.first().and_then(|r| r.as_ref())),
                Ok(TxnResult::Done)
            ) =>
        {
            Some((*respond, (**request).clone()))
        }
        _ => None,
    }
}

/// The TxnOffsetCommit v5 to run if its implicit AddOffsetsToTxn succeeded.
pub fn offsets_added(
    pending: &TxnPending,
    results: &[Option<OpResult>],
) -> Option<m::TxnOffsetCommitRequest> {
    match &pending.api {
        TxnApi::OffsetsAdded { request } if txn_result(results.first().and_then(|r| r.as_ref())).is_ok() => {
            Some((**request).clone())
        }
        _ => None,
    }
}

/// Runs a TxnOffsetCommit whose offsets partition is in the transaction.
pub fn commit_added_offsets(
    broker: &mut Broker,
    now: Instant,
    request_ref: (u64, ConnectionId, RequestHeader),
    request: m::TxnOffsetCommitRequest,
) {
    txn_offset_commit(broker, now, request_ref, request);
}

/// Every partition of a produce refused with `code`.
fn refused_produce(request: &m::ProduceRequest, code: i16) -> Response {
    use m::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    let topics = request
        .topic_data
        .iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(code)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(partitions)
        })
        .collect();
    Response::Produce(m::ProduceResponse::default().with_responses(topics))
}

/// Sends one coordinator operation per `(transactional id, op)` and answers once all
/// are done.
fn to_coordinator(
    broker: &mut Broker,
    now: Instant,
    (id, connection, header): (u64, ConnectionId, RequestHeader),
    api: TxnApi,
    ops: Vec<(String, TxnOp)>,
) {
    let count = state_partitions(broker);
    let ops = ops
        .into_iter()
        .map(|(txn_id, op)| {
            // Without the state topic the partition does not exist: the operation
            // fails UNKNOWN_TOPIC_OR_PARTITION, answered as NOT_COORDINATOR.
            let partition = count.map_or(0, |c| partition_for_txn(&txn_id, c));
            (
                TXN_STATE_TOPIC.to_string(),
                partition,
                PartitionOp::Txn(Box::new(op)),
            )
        })
        .collect();
    begin_txn(broker, now, (id, connection, header), TxnPending { api }, ops);
}

/// Starts the operations of a transaction request; it is answered once all are done.
fn begin_txn(
    broker: &mut Broker,
    now: Instant,
    (id, connection, header): (u64, ConnectionId, RequestHeader),
    pending: TxnPending,
    ops: Vec<(String, i32, PartitionOp)>,
) {
    begin(
        broker,
        now,
        id,
        connection,
        header,
        None,
        PendingKind::Txn(pending),
        ops,
    );
}

/// Starts a transaction request (any other request is answered UNSUPPORTED_VERSION).
pub fn start(
    broker: &mut Broker,
    now: Instant,
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    request: Request,
) {
    let version = header.api_version;
    let request_ref = (id, connection, header.clone());
    match request {
        Request::AddPartitionsToTxn(request) if version <= 3 => {
            let txn_id = request.v3_and_below_transactional_id.0.as_str().to_string();
            let (order, partitions, invalid) = partition_order(broker, &request.v3_and_below_topics);
            if invalid {
                let api = TxnApi::AddPartitions { order };
                let response = build(&api, &header, &[]);
                broker.respond(connection, id, &header, Some(response));
                return;
            }
            let op = TxnOp::AddPartitions {
                transactional_id: txn_id.clone(),
                producer_id: request.v3_and_below_producer_id.0,
                producer_epoch: request.v3_and_below_producer_epoch,
                partitions,
                verify_only: false,
            };
            to_coordinator(
                broker,
                now,
                request_ref,
                TxnApi::AddPartitions { order },
                vec![(txn_id, op)],
            );
        }
        Request::AddOffsetsToTxn(request) => {
            let txn_id = request.transactional_id.0.as_str().to_string();
            let Some(count) = broker.metadata.topics.get(OFFSETS_TOPIC).map(|t| t.partitions) else {
                // The group's coordinator partition does not exist yet: FindCoordinator
                // creates it; the client retries.
                let response = m::AddOffsetsToTxnResponse::default()
                    .with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.0);
                broker.respond(connection, id, &header, Some(Response::AddOffsetsToTxn(response)));
                return;
            };
            let producer = (request.producer_id.0, request.producer_epoch);
            let op = add_offsets_op(&txn_id, producer, request.group_id.0.as_str(), count);
            to_coordinator(broker, now, request_ref, TxnApi::AddOffsets, vec![(txn_id, op)]);
        }
        Request::AddPartitionsToTxn(request) => add_partitions_batch(broker, now, request_ref, request),
        Request::EndTxn(request) if version >= 5 => {
            let transactional_id = request.transactional_id.0.as_str().to_string();
            let (producer_id, producer_epoch) = (request.producer_id.0, request.producer_epoch);
            let commit = request.committed;
            if bump_exhausts_epochs(producer_epoch) {
                // The bump needs a fresh producer id: from the shard's block first.
                let init = TxnInit::EndTxn {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    commit,
                };
                super::producer_handlers::start_with_fresh_id(broker, now, request_ref, init);
                return;
            }
            let op = TxnOp::EndTxnV2 {
                transactional_id: transactional_id.clone(),
                producer_id,
                producer_epoch,
                commit,
                fresh_producer_id: -1,
            };
            to_coordinator(
                broker,
                now,
                request_ref,
                TxnApi::EndTxn,
                vec![(transactional_id, op)],
            );
        }
        Request::EndTxn(request) => {
            let txn_id = request.transactional_id.0.as_str().to_string();
            let op = TxnOp::EndTxn {
                transactional_id: txn_id.clone(),
                producer_id: request.producer_id.0,
                producer_epoch: request.producer_epoch,
                commit: request.committed,
            };
            to_coordinator(broker, now, request_ref, TxnApi::EndTxn, vec![(txn_id, op)]);
        }
        Request::TxnOffsetCommit(request) if version >= 5 => {
            add_offsets_then_commit(broker, now, request_ref, request)
        }
        Request::DescribeTransactions(request) => {
            let ops = request
                .transactional_ids
                .iter()
                .map(|t| {
                    let txn_id = t.0.as_str().to_string();
                    let op = TxnOp::Describe {
                        transactional_ids: vec![txn_id.clone()],
                    };
                    (txn_id, op)
                })
                .collect();
            to_coordinator(broker, now, request_ref, TxnApi::Describe, ops);
        }
        Request::ListTransactions(request) => {
            let states: Vec<String> = request
                .state_filters
                .iter()
                .map(|s| s.as_str().to_string())
                .collect();
            let producer_ids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
            let count = state_partitions(broker).unwrap_or(0);
            let ops = (0..count)
                .map(|p| {
                    let op = TxnOp::List {
                        states: states.clone(),
                        producer_ids: producer_ids.clone(),
                    };
                    (TXN_STATE_TOPIC.to_string(), p, PartitionOp::Txn(Box::new(op)))
                })
                .collect();
            let pending = TxnPending { api: TxnApi::List };
            begin_txn(broker, now, (id, connection, header), pending, ops);
        }
        Request::TxnOffsetCommit(request) => txn_offset_commit(broker, now, request_ref, request),
        Request::DescribeProducers(request) => {
            let slots: Vec<(String, i32)> = request
                .topics
                .iter()
                .flat_map(|t| {
                    let name = t.name.0.as_str().to_string();
                    t.partition_indexes.iter().map(move |p| (name.clone(), *p))
                })
                .collect();
            let ops = slots
                .iter()
                .map(|(t, p)| (t.clone(), *p, PartitionOp::DescribeProducers))
                .collect();
            let pending = TxnPending {
                api: TxnApi::DescribeProducers { slots },
            };
            begin_txn(broker, now, (id, connection, header), pending, ops);
        }
        Request::WriteTxnMarkers(request) => {
            let wall_ms = broker.wall_clock_origin_ms + i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
            let mut slots = Vec::new();
            let mut ops = Vec::new();
            for marker in &request.markers {
                let m = Marker {
                    producer_id: marker.producer_id.0,
                    producer_epoch: marker.producer_epoch,
                    commit: marker.transaction_result,
                    coordinator_epoch: marker.coordinator_epoch,
                };
                for topic in &marker.topics {
                    let name = topic.name.0.as_str().to_string();
                    for &p in &topic.partition_indexes {
                        slots.push((m.producer_id, name.clone(), p));
                        let op = PartitionOp::WriteMarker {
                            marker: m,
                            timestamp_ms: wall_ms,
                        };
                        ops.push((name.clone(), p, op));
                    }
                }
            }
            let pending = TxnPending {
                api: TxnApi::WriteMarkers { slots },
            };
            begin_txn(broker, now, (id, connection, header), pending, ops);
        }
        other => {
            let response = crate::kafka::error_response(&other, version, ErrorCode::UNSUPPORTED_VERSION);
            broker.respond(connection, id, &header, Some(response));
        }
    }
}

/// Adding `group`'s `__consumer_offsets` partition to the transaction (AddOffsetsToTxn).
fn add_offsets_op(
    transactional_id: &str,
    producer: (i64, i16),
    group: &str,
    offsets_partitions: i32,
) -> TxnOp {
    TxnOp::AddPartitions {
        transactional_id: transactional_id.to_string(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        partitions: vec![(
            OFFSETS_TOPIC.to_string(),
            partition_for_group(group, offsets_partitions),
        )],
        verify_only: false,
    }
}

/// TxnOffsetCommit v5 (transaction protocol v2): the group's offsets partition joins
/// the transaction first (the implicit AddOffsetsToTxn), then the commit runs
/// ([`offsets_added`], [`commit_added_offsets`]). Without `__consumer_offsets` the
/// commit is answered as v4 would (COORDINATOR_NOT_AVAILABLE).
fn add_offsets_then_commit(
    broker: &mut Broker,
    now: Instant,
    request_ref: (u64, ConnectionId, RequestHeader),
    request: m::TxnOffsetCommitRequest,
) {
    let Some(count) = broker.metadata.topics.get(OFFSETS_TOPIC).map(|t| t.partitions) else {
        return txn_offset_commit(broker, now, request_ref, request);
    };
    let txn_id = request.transactional_id.0.as_str().to_string();
    let producer = (request.producer_id.0, request.producer_epoch);
    let op = add_offsets_op(&txn_id, producer, request.group_id.0.as_str(), count);
    let api = TxnApi::OffsetsAdded {
        request: Box::new(request),
    };
    to_coordinator(broker, now, request_ref, api, vec![(txn_id, op)]);
}

/// AddPartitionsToTxn v4+ (Kafka's broker-to-coordinator form): several transactions,
/// each verified (`verify_only`) or added; a transaction naming an unknown partition is
/// refused here without asking its coordinator.
fn add_partitions_batch(
    broker: &mut Broker,
    now: Instant,
    (id, connection, header): (u64, ConnectionId, RequestHeader),
    request: m::AddPartitionsToTxnRequest,
) {
    let count = state_partitions(broker);
    let mut transactions = Vec::new();
    let mut ops = Vec::new();
    for txn in &request.transactions {
        let txn_id = txn.transactional_id.0.as_str().to_string();
        let (order, partitions, invalid) = partition_order(broker, &txn.topics);
        let slot = if invalid {
            None
        } else {
            let op = TxnOp::AddPartitions {
                transactional_id: txn_id.clone(),
                producer_id: txn.producer_id.0,
                producer_epoch: txn.producer_epoch,
                partitions,
                verify_only: txn.verify_only,
            };
            let partition = count.map_or(0, |c| partition_for_txn(&txn_id, c));
            ops.push((
                TXN_STATE_TOPIC.to_string(),
                partition,
                PartitionOp::Txn(Box::new(op)),
            ));
            Some(ops.len() - 1)
        };
        transactions.push((txn_id, order, slot));
    }
    let pending = TxnPending {
        api: TxnApi::AddPartitionsBatch { transactions },
    };
    begin_txn(broker, now, (id, connection, header), pending, ops);
}

/// The partitions of an AddPartitionsToTxn in request order, each refused here if
/// unknown; the partitions as a list; whether any was refused.
fn partition_order(
    broker: &Broker,
    topics: &[m::add_partitions_to_txn_request::AddPartitionsToTxnTopic],
) -> (PartitionOrder, Vec<(String, i32)>, bool) {
    let mut order = Vec::new();
    let mut partitions = Vec::new();
    let mut invalid = false;
    for topic in topics {
        let name = topic.name.0.as_str().to_string();
        let meta = broker.metadata.topics.get(&name);
        let mut slots = Vec::new();
        for &p in &topic.partitions {
            let known = meta.is_some_and(|t| p >= 0 && p < t.partitions);
            invalid |= !known;
            slots.push((p, (!known).then_some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0)));
            partitions.push((name.clone(), p));
        }
        order.push((name, slots));
    }
    (order, partitions, invalid)
}

/// TxnOffsetCommit: to the group coordinator of the group's `__consumer_offsets`
/// partition, which holds the offsets until the producer's marker lands there.
fn txn_offset_commit(
    broker: &mut Broker,
    now: Instant,
    (id, connection, header): (u64, ConnectionId, RequestHeader),
    request: m::TxnOffsetCommitRequest,
) {
    let group = request.group_id.0.as_str().to_string();
    let count = broker.metadata.topics.get(OFFSETS_TOPIC).map(|t| t.partitions);
    let mut order = Vec::new();
    let mut entries = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.as_str().to_string();
        let meta = broker.metadata.topics.get(&name);
        let mut slots = Vec::new();
        for p in &topic.partitions {
            let index = p.partition_index;
            let known = meta.is_some_and(|t| index >= 0 && index < t.partitions);
            let refused = match (count, known) {
                (None, _) => Some(ErrorCode::COORDINATOR_NOT_AVAILABLE.0),
                (_, false) => Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0),
                _ => None,
            };
            if refused.is_none() {
                entries.push(crate::group::CommitEntry {
                    topic: name.clone(),
                    partition: index,
                    offset: p.committed_offset,
                    leader_epoch: if header.api_version >= 2 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.as_str().to_string()),
                });
            }
            slots.push((index, refused));
        }
        order.push((name, slots));
    }
    let api = TxnApi::OffsetCommit { order };
    let Some(count) = count.filter(|_| !entries.is_empty()) else {
        let response = build(&api, &header, &[]);
        broker.respond(connection, id, &header, Some(response));
        return;
    };
    let member = header.api_version >= 3;
    let commit = TxnCommit {
        group: group.clone(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        generation: if member { request.generation_id } else { -1 },
        member_id: if member {
            request.member_id.as_str().to_string()
        } else {
            String::new()
        },
        instance_id: request
            .group_instance_id
            .as_ref()
            .filter(|_| member)
            .map(|i| i.as_str().to_string()),
        entries,
    };
    let op = PartitionOp::TxnOffsetCommit(Box::new(commit));
    let partition = partition_for_group(&group, count);
    let ops = vec![(OFFSETS_TOPIC.to_string(), partition, op)];
    let pending = TxnPending { api };
    begin_txn(broker, now, (id, connection, header), pending, ops);
}

/// The per-partition codes of a group coordinator's commit answer, or its error.
fn committed_codes(result: Option<&OpResult>) -> Result<&crate::group::PartitionErrors, i16> {
    match result {
        None => Err(ErrorCode::REQUEST_TIMED_OUT.0),
        Some(OpResult::Group(r)) => {
            let r: &GroupResult = r;
            match r {
                GroupResult::Committed(errors) => Ok(errors),
                GroupResult::Error(code) => Err(*code),
                _ => Err(ErrorCode::UNKNOWN_SERVER_ERROR.0),
            }
        }
        Some(other) => Err(match other.error_code() {
            3 | 6 => code::NOT_COORDINATOR,
            code => code,
        }),
    }
}

fn txn_offset_commit_response(order: &PartitionOrder, results: &[Option<OpResult>]) -> Response {
    use m::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
    let answer = results.first().map(|r| committed_codes(r.as_ref()));
    let topics = order
        .iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .iter()
                .map(|(p, refused)| {
                    let code = refused.unwrap_or_else(|| match &answer {
                        Some(Ok(errors)) => errors
                            .get(name)
                            .and_then(|codes| codes.iter().find(|(i, _)| i == p))
                            .map_or(ErrorCode::UNKNOWN_SERVER_ERROR.0, |(_, code)| *code),
                        Some(Err(code)) => *code,
                        None => ErrorCode::UNKNOWN_SERVER_ERROR.0,
                    });
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(*p)
                        .with_error_code(code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(partitions)
        })
        .collect();
    Response::TxnOffsetCommit(m::TxnOffsetCommitResponse::default().with_topics(topics))
}

fn txn_result(result: Option<&OpResult>) -> Result<&TxnResult, i16> {
    match result {
        None => Err(ErrorCode::REQUEST_TIMED_OUT.0),
        Some(OpResult::Txn(r)) => match **r {
            TxnResult::Error(code) => Err(code),
            ref other => Ok(other),
        },
        // The state partition is missing or not led here.
        Some(other) => Err(match other.error_code() {
            3 | 6 => code::NOT_COORDINATOR,
            code => code,
        }),
    }
}

fn result_code(result: Option<&OpResult>) -> i16 {
    txn_result(result).err().unwrap_or(0)
}

/// Kafka's aborted-transaction entries from `(producer id, first offset)` pairs
/// (`None`, not an empty list, when there are none, as Kafka answers
/// read_uncommitted fetches).
pub fn aborted_transactions(aborted: &[(i64, i64)]) -> Option<Vec<m::fetch_response::AbortedTransaction>> {
    if aborted.is_empty() {
        return None;
    }
    Some(
        aborted
            .iter()
            .map(|(producer_id, first_offset)| {
                m::fetch_response::AbortedTransaction::default()
                    .with_producer_id(ProducerId(*producer_id))
                    .with_first_offset(*first_offset)
            })
            .collect(),
    )
}

/// The response of a finished transaction request (none for a refused acks=0
/// produce, as Kafka sends nothing back for those).
pub fn response(
    pending: &TxnPending,
    header: &RequestHeader,
    results: &[Option<OpResult>],
) -> Option<Response> {
    match &pending.api {
        TxnApi::VerifyProduce { respond: false, .. } => None,
        api => Some(build(api, header, results)),
    }
}

fn build(api: &TxnApi, header: &RequestHeader, results: &[Option<OpResult>]) -> Response {
    let first = results.first().and_then(|r| r.as_ref());
    match api {
        TxnApi::InitProducerId => {
            let mut response = m::InitProducerIdResponse::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            match txn_result(first) {
                Ok(TxnResult::ProducerId {
                    producer_id,
                    producer_epoch,
                }) => {
                    response.producer_id = ProducerId(*producer_id);
                    response.producer_epoch = *producer_epoch;
                }
                Ok(_) => response.error_code = ErrorCode::UNKNOWN_SERVER_ERROR.0,
                Err(code) => response.error_code = fenced_for(header, code),
            }
            Response::InitProducerId(response)
        }
        TxnApi::AddPartitions { order } => {
            let coordinator_code = if results.is_empty() {
                None
            } else {
                Some(fenced_for(header, result_code(first)))
            };
            Response::AddPartitionsToTxn(
                m::AddPartitionsToTxnResponse::default()
                    .with_results_by_topic_v3_and_below(topic_results(order, coordinator_code)),
            )
        }
        TxnApi::AddPartitionsBatch { transactions } => {
            let results_by_transaction = transactions
                .iter()
                .map(|(txn_id, order, slot)| {
                    let code = slot
                        .map(|i| abortable_for(header, result_code(results.get(i).and_then(|r| r.as_ref()))));
                    m::add_partitions_to_txn_response::AddPartitionsToTxnResult::default()
                        .with_transactional_id(TransactionalId(str_bytes(txn_id)))
                        .with_topic_results(topic_results(order, code))
                })
                .collect();
            Response::AddPartitionsToTxn(
                m::AddPartitionsToTxnResponse::default().with_results_by_transaction(results_by_transaction),
            )
        }
        TxnApi::OffsetsAdded { request } => {
            // The implicit AddOffsetsToTxn failed: every partition gets its error.
            let code = fenced_for(header, result_code(first));
            let order = request
                .topics
                .iter()
                .map(|t| {
                    let slots = t
                        .partitions
                        .iter()
                        .map(|p| (p.partition_index, Some(code)))
                        .collect();
                    (t.name.0.as_str().to_string(), slots)
                })
                .collect();
            txn_offset_commit_response(&order, &[])
        }
        TxnApi::AddOffsets => Response::AddOffsetsToTxn(
            m::AddOffsetsToTxnResponse::default().with_error_code(fenced_for(header, result_code(first))),
        ),
        TxnApi::EndTxn => {
            // v5: the producer id and epoch to go on with (after the server's bump).
            let (producer_id, producer_epoch) = match txn_result(first) {
                Ok(TxnResult::ProducerId {
                    producer_id,
                    producer_epoch,
                }) => (*producer_id, *producer_epoch),
                _ => (-1, -1),
            };
            Response::EndTxn(
                m::EndTxnResponse::default()
                    .with_error_code(fenced_for(header, result_code(first)))
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(producer_epoch),
            )
        }
        TxnApi::WriteMarkers { slots } => write_markers_response(slots, results),
        TxnApi::Describe => describe_response(results),
        TxnApi::List => list_response(results),
        TxnApi::OffsetCommit { order } => txn_offset_commit_response(order, results),
        TxnApi::DescribeProducers { slots } => describe_producers_response(slots, results),
        TxnApi::VerifyProduce { request, .. } => {
            // The coordinator could not be asked: retriable, as Kafka answers.
            let code = match result_code(first) {
                code::NOT_COORDINATOR
                | code::COORDINATOR_LOAD_IN_PROGRESS
                | code::CONCURRENT_TRANSACTIONS
                | 7
                | 15 => ErrorCode::NOT_ENOUGH_REPLICAS.0,
                0 => ErrorCode::UNKNOWN_SERVER_ERROR.0,
                code => abortable_for(header, code),
            };
            refused_produce(request, code)
        }
    }
}

/// AddPartitionsToTxn results by topic: a partition's refusal decided before asking
/// the coordinator, else the coordinator's code, else OPERATION_NOT_ATTEMPTED.
fn topic_results(
    order: &PartitionOrder,
    coordinator_code: Option<i16>,
) -> Vec<m::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
    use m::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    };
    order
        .iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .iter()
                .map(|(p, refused)| {
                    let code = refused.or(coordinator_code).unwrap_or(OPERATION_NOT_ATTEMPTED);
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(str_bytes(name)))
                .with_results_by_partition(partitions)
        })
        .collect()
}

/// PRODUCER_FENCED exists from InitProducerId v4 / AddPartitionsToTxn v2 / EndTxn v2
/// (KIP-588); older clients get INVALID_PRODUCER_EPOCH for it.
fn fenced_for(header: &RequestHeader, code: i16) -> i16 {
    use crate::kafka::protocol::messages::ApiKey;
    let new_enough = match header.api_key {
        ApiKey::InitProducerId => header.api_version >= 4,
        _ => header.api_version >= 2,
    };
    if code == code::PRODUCER_FENCED && !new_enough {
        code::INVALID_PRODUCER_EPOCH
    } else {
        abortable_for(header, code)
    }
}

/// TRANSACTION_ABORTABLE (KIP-890) exists from Produce v11, TxnOffsetCommit v4 and
/// AddPartitionsToTxn v5; older requests get what they got before it, as Kafka does: a
/// produce verification (and AddPartitionsToTxn v4, whose verifications come from
/// brokers) INVALID_TXN_STATE, and an addition naming an epoch an abort bumped
/// (AddPartitionsToTxn v0-3, AddOffsetsToTxn: transaction protocol v1 clients, whose
/// EndTxn cannot name that epoch) INVALID_PRODUCER_EPOCH.
fn abortable_for(header: &RequestHeader, code: i16) -> i16 {
    use crate::kafka::protocol::messages::ApiKey;
    if code != code::TRANSACTION_ABORTABLE {
        return code;
    }
    let version = header.api_version;
    match header.api_key {
        ApiKey::Produce if version >= 11 => code,
        ApiKey::TxnOffsetCommit if version >= 4 => code,
        ApiKey::AddPartitionsToTxn if version >= 5 => code,
        ApiKey::Produce | ApiKey::TxnOffsetCommit => code::INVALID_TXN_STATE,
        ApiKey::AddPartitionsToTxn if version == 4 => code::INVALID_TXN_STATE,
        _ => code::INVALID_PRODUCER_EPOCH,
    }
}

fn write_markers_response(slots: &[(i64, String, i32)], results: &[Option<OpResult>]) -> Response {
    use m::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    let mut by_producer: BTreeMap<i64, BTreeMap<String, Vec<WritableTxnMarkerPartitionResult>>> =
        BTreeMap::new();
    for ((producer_id, topic, partition), result) in slots.iter().zip(results) {
        let code = match result {
            None => ErrorCode::REQUEST_TIMED_OUT.0,
            Some(r) => r.error_code(),
        };
        by_producer
            .entry(*producer_id)
            .or_default()
            .entry(topic.clone())
            .or_default()
            .push(
                WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(*partition)
                    .with_error_code(code),
            );
    }
    let markers = by_producer
        .into_iter()
        .map(|(producer_id, topics)| {
            let topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    WritableTxnMarkerTopicResult::default()
                        .with_name(TopicName(str_bytes(&name)))
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(ProducerId(producer_id))
                .with_topics(topics)
        })
        .collect();
    Response::WriteTxnMarkers(m::WriteTxnMarkersResponse::default().with_markers(markers))
}

fn describe_producers_response(slots: &[(String, i32)], results: &[Option<OpResult>]) -> Response {
    use m::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
    let mut topics: BTreeMap<String, Vec<PartitionResponse>> = BTreeMap::new();
    for ((topic, partition), result) in slots.iter().zip(results) {
        let mut p = PartitionResponse::default().with_partition_index(*partition);
        match result {
            Some(OpResult::Producers(producers)) => {
                p.active_producers = producers
                    .iter()
                    .map(|s| {
                        ProducerState::default()
                            .with_producer_id(ProducerId(s.producer_id))
                            .with_producer_epoch(i32::from(s.epoch))
                            .with_last_sequence(s.last_sequence)
                            .with_last_timestamp(s.last_timestamp_ms)
                            .with_coordinator_epoch(-1)
                            .with_current_txn_start_offset(s.txn_start_offset)
                    })
                    .collect();
            }
            Some(other) => p.error_code = other.error_code(),
            None => p.error_code = ErrorCode::REQUEST_TIMED_OUT.0,
        }
        topics.entry(topic.clone()).or_default().push(p);
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            TopicResponse::default()
                .with_name(TopicName(str_bytes(&name)))
                .with_partitions(partitions)
        })
        .collect();
    Response::DescribeProducers(m::DescribeProducersResponse::default().with_topics(topics))
}

fn descriptions(results: &[Option<OpResult>]) -> (Vec<TxnDescription>, i16) {
    let mut all = Vec::new();
    let mut error = 0;
    for result in results {
        match txn_result(result.as_ref()) {
            Ok(TxnResult::Transactions(list)) => all.extend(list.iter().cloned()),
            Ok(_) => {}
            Err(code) => error = code,
        }
    }
    (all, error)
}

fn describe_response(results: &[Option<OpResult>]) -> Response {
    use m::describe_transactions_response::{TopicData, TransactionState};
    let states = results
        .iter()
        .flat_map(|r| match txn_result(r.as_ref()) {
            Ok(TxnResult::Transactions(list)) => list.clone(),
            Ok(_) => Vec::new(),
            Err(code) => vec![TxnDescription {
                transactional_id: String::new(),
                error_code: code,
                meta: None,
            }],
        })
        .map(|d| {
            let mut state = TransactionState::default()
                .with_error_code(d.error_code)
                .with_transactional_id(TransactionalId(str_bytes(&d.transactional_id)))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            if let Some(meta) = d.meta {
                let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &meta.partitions {
                    topics.entry(topic.clone()).or_default().push(*partition);
                }
                state = state
                    .with_transaction_state(str_bytes(meta.state.name()))
                    .with_transaction_timeout_ms(meta.timeout_ms)
                    .with_transaction_start_time_ms(meta.start_ms)
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_producer_epoch(meta.producer_epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicData::default()
                                    .with_topic(TopicName(str_bytes(&t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    );
            }
            state
        })
        .collect();
    Response::DescribeTransactions(m::DescribeTransactionsResponse::default().with_transaction_states(states))
}

fn list_response(results: &[Option<OpResult>]) -> Response {
    use m::list_transactions_response::TransactionState;
    let (all, error) = descriptions(results);
    let states = all
        .into_iter()
        .filter_map(|d| {
            let meta = d.meta?;
            Some(
                TransactionState::default()
                    .with_transactional_id(TransactionalId(str_bytes(&d.transactional_id)))
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_transaction_state(str_bytes(meta.state.name())),
            )
        })
        .collect();
    Response::ListTransactions(
        m::ListTransactionsResponse::default()
            .with_error_code(error)
            .with_transaction_states(states),
    )
}

/// Routes the markers the shard's coordinators asked for to the partitions' shards.
pub fn route_markers(broker: &mut Broker, now: Instant) -> bool {
    let mut routed = false;
    while let Some(send) = broker.partitions.txn.sends.pop_front() {
        routed = true;
        let request = broker.take_request_id();
        broker
            .txn_marker_ops
            .insert(request, (send.coordinator.clone(), send.token));
        let op_ref = OpRef {
            origin: broker.shard,
            request,
            slot: 0,
        };
        let op = PartitionOp::WriteMarker {
            marker: send.marker,
            timestamp_ms: send.timestamp_ms,
        };
        broker.run_op(now, op_ref, &send.topic, send.partition, op);
    }
    routed
}

/// If `op_ref` is a coordinator's marker, hands its result to the coordinator and
/// returns `None`; any other result comes back.
pub fn on_marker_result(
    broker: &mut Broker,
    now: Instant,
    op_ref: OpRef,
    result: OpResult,
) -> Option<OpResult> {
    let Some((coordinator, token)): Option<(TopicPartition, u64)> =
        broker.txn_marker_ops.remove(&op_ref.request)
    else {
        return Some(result);
    };
    broker
        .partitions
        .txn_marker_done(now, &coordinator, token, result.error_code());
    None
}
