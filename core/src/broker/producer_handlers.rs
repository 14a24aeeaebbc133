//! InitProducerId for idempotent producers (no `transactional.id`): producer ids handed
//! out from blocks.
//!
//! The node's metadata owner (shard 0, until the controller Raft group replaces it with
//! the cluster) allocates blocks of [`PRODUCER_ID_BLOCK_SIZE`] ids by advancing
//! [`super::Metadata::next_producer_id`] and answers only once that metadata write is
//! durable, so an id is never handed out twice, across restarts included: a crash
//! loses at most the unused rest of a block. Each shard holds its current block and
//! asks shard 0 for the next one ([`ProducerIdMessage`]) when it runs out; requests
//! arriving meanwhile wait (at most [`MAX_WAITING_REQUESTS`]; beyond that, and when the
//! metadata write fails, they get the retriable COORDINATOR_LOAD_IN_PROGRESS).
//!
//! Every new producer id starts at epoch 0. A request carrying the producer's current
//! id and epoch (v3+, KIP-360's epoch bump after UNKNOWN_PRODUCER_ID or a timed-out
//! batch) gets a fresh id, as Kafka answers idempotent producers. A request with a
//! `transactional.id` takes a fresh id from the block too and goes on to the
//! transaction coordinator (`super::txn_handlers`), which uses it for a new
//! transactional id (or one whose epochs are exhausted) and keeps the id it has
//! otherwise.
//!
//! Cluster note: with several nodes, block allocation moves to the controller group
//! (a replicated command), and this shard-0 path goes away.

use super::io::{BrokerEffect, ShardId};
use super::{Broker, ConnectionId, ShardMessage};
use crate::kafka::protocol::messages::{self as m, ProducerId};
use crate::kafka::{ErrorCode, RequestHeader, Response};
use crate::time::Instant;
use std::collections::VecDeque;

/// Producer ids per block.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Most InitProducerId requests a shard keeps waiting for a block.
pub const MAX_WAITING_REQUESTS: usize = 1024;

/// Producer-id blocks between shards.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ProducerIdMessage {
    /// To shard 0: allocate a block for `origin`.
    Allocate {
        /// The shard asking.
        origin: ShardId,
    },
    /// From shard 0: the ids `[first, first + count)`, durably reserved.
    Block {
        /// First id.
        first: i64,
        /// Number of ids.
        count: i64,
    },
    /// From shard 0: the block could not be made durable.
    Failed,
}

/// A request waiting for a block.
#[derive(Debug)]
struct Waiting {
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    /// The transactional part, for the coordinator.
    txn: Option<super::txn_handlers::TxnInit>,
}

/// One shard's producer-id state.
#[derive(Debug, Default)]
pub struct ProducerIds {
    /// The unused ids of the current block: `[next, end)`.
    next: i64,
    end: i64,
    /// Whether a block has been asked for and not yet received.
    asked: bool,
    waiting: VecDeque<Waiting>,
    /// Shard 0: blocks waiting for their metadata write: (metadata version, shard, first id).
    persisting: Vec<(u64, ShardId, i64)>,
}

fn response(code: ErrorCode, producer_id: i64, epoch: i16) -> Response {
    Response::InitProducerId(
        m::InitProducerIdResponse::default()
            .with_error_code(code.0)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
    )
}

/// The retriable COORDINATOR_LOAD_IN_PROGRESS answer to a request that got no id.
fn not_now(txn: Option<&super::txn_handlers::TxnInit>) -> Response {
    match txn {
        Some(super::txn_handlers::TxnInit::EndTxn { .. }) => Response::EndTxn(
            m::EndTxnResponse::default()
                .with_error_code(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS.0)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        _ => response(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS, -1, -1),
    }
}

/// Serves an InitProducerId request.
pub fn start(
    broker: &mut Broker,
    now: Instant,
    id: u64,
    connection: ConnectionId,
    header: RequestHeader,
    request: m::InitProducerIdRequest,
) {
    let txn = match super::txn_handlers::txn_init(broker, now, &request) {
        None => None,
        Some(Ok(txn)) => Some(txn),
        Some(Err(code)) => {
            let answer = response(ErrorCode(code), -1, -1);
            broker.respond(connection, id, &header, Some(answer));
            return;
        }
    };
    wait_for_id(broker, now, (id, connection, header), txn);
}

/// A transaction request that needs a fresh producer id first (an EndTxn v5 whose
/// epoch bump exhausts the epochs): served from the block like InitProducerId, then
/// handed to the coordinator.
pub fn start_with_fresh_id(
    broker: &mut Broker,
    now: Instant,
    request: (u64, ConnectionId, RequestHeader),
    txn: super::txn_handlers::TxnInit,
) {
    wait_for_id(broker, now, request, Some(txn));
}

/// Queues a request for the next id of the block (refused with the retriable
/// COORDINATOR_LOAD_IN_PROGRESS when too many wait).
fn wait_for_id(
    broker: &mut Broker,
    now: Instant,
    (id, connection, header): (u64, ConnectionId, RequestHeader),
    txn: Option<super::txn_handlers::TxnInit>,
) {
    if broker.producer_ids.waiting.len() >= MAX_WAITING_REQUESTS {
        broker.respond(connection, id, &header, Some(not_now(txn.as_ref())));
        return;
    }
    broker.producer_ids.waiting.push_back(Waiting {
        id,
        connection,
        header,
        txn,
    });
    serve_waiting(broker, now);
}

/// Answers waiting requests from the current block; asks for a new block when it runs
/// out and requests still wait.
fn serve_waiting(broker: &mut Broker, now: Instant) {
    loop {
        let ids = &mut broker.producer_ids;
        if ids.waiting.is_empty() {
            return;
        }
        if ids.next >= ids.end {
            if !ids.asked {
                ids.asked = true;
                let origin = broker.shard;
                ask_for_block(broker, now, origin);
            }
            return;
        }
        let producer_id = ids.next;
        ids.next += 1;
        let Some(waiting) = ids.waiting.pop_front() else {
            return;
        };
        if let Some(txn) = waiting.txn {
            let request = (waiting.id, waiting.connection, waiting.header);
            super::txn_handlers::init_with_producer_id(broker, now, request, txn, producer_id);
            continue;
        }
        let answer = response(ErrorCode::NONE, producer_id, 0);
        broker.respond(waiting.connection, waiting.id, &waiting.header, Some(answer));
    }
}

fn ask_for_block(broker: &mut Broker, now: Instant, origin: ShardId) {
    if broker.shard == ShardId(0) {
        allocate(broker, now, origin);
    } else {
        broker.effects.push_back(BrokerEffect::ToShard {
            to: ShardId(0),
            message: ShardMessage::ProducerIds(ProducerIdMessage::Allocate { origin }),
        });
    }
}

/// Shard 0: reserves the next block in the metadata and writes it; the block goes to
/// `origin` once durable ([`on_metadata_persisted`]).
fn allocate(broker: &mut Broker, now: Instant, origin: ShardId) {
    if broker.cluster.is_some() {
        super::cluster::allocate_producer_ids(broker, now, origin);
        return;
    }
    let first = broker.metadata.next_producer_id;
    broker.metadata.next_producer_id = first.saturating_add(PRODUCER_ID_BLOCK_SIZE);
    broker.metadata.version += 1;
    let version = broker.metadata.version;
    broker.producer_ids.persisting.push((version, origin, first));
    broker.effects.push_back(BrokerEffect::PersistMetadata {
        version,
        data: broker.metadata.encode(),
    });
}

/// Shard 0: the metadata write of `version` finished. Blocks it covers go out; if it
/// failed, the metadata owner rolled back to the durable state, so every block not yet
/// durable is refused.
pub fn on_metadata_persisted(broker: &mut Broker, now: Instant, version: u64, durable: bool) {
    let persisting = std::mem::take(&mut broker.producer_ids.persisting);
    let (done, still): (Vec<_>, Vec<_>) = persisting
        .into_iter()
        .partition(|(v, ..)| !durable || *v <= version);
    broker.producer_ids.persisting = still;
    for (_, origin, first) in done {
        let message = if durable {
            ProducerIdMessage::Block {
                first,
                count: PRODUCER_ID_BLOCK_SIZE,
            }
        } else {
            ProducerIdMessage::Failed
        };
        deliver(broker, now, origin, message);
    }
}

pub(super) fn deliver(broker: &mut Broker, now: Instant, to: ShardId, message: ProducerIdMessage) {
    if to == broker.shard {
        on_message(broker, now, message);
    } else {
        broker.effects.push_back(BrokerEffect::ToShard {
            to,
            message: ShardMessage::ProducerIds(message),
        });
    }
}

/// A producer-id message from another shard (or from this one).
pub fn on_message(broker: &mut Broker, now: Instant, message: ProducerIdMessage) {
    match message {
        ProducerIdMessage::Allocate { origin } => {
            if broker.shard == ShardId(0) {
                allocate(broker, now, origin);
            }
        }
        ProducerIdMessage::Block { first, count } => {
            assert!(count > 0 && first >= 0, "a producer-id block is not empty");
            let ids = &mut broker.producer_ids;
            ids.asked = false;
            ids.next = first;
            ids.end = first.saturating_add(count);
            serve_waiting(broker, now);
        }
        ProducerIdMessage::Failed => {
            broker.producer_ids.asked = false;
            let waiting = std::mem::take(&mut broker.producer_ids.waiting);
            for w in waiting {
                broker.respond(w.connection, w.id, &w.header, Some(not_now(w.txn.as_ref())));
            }
        }
    }
}
