//! The simulated Kafka clients of [`super::BrokerSim`], each with one connection and
//! one request in flight at a time, speaking real Kafka wire bytes ([`super::wire`]):
//!
//! * the **admin** creates the topic: CreateTopics to a random broker, again on any
//!   error (NOT_CONTROLLER, REQUEST_TIMED_OUT, …) or silence, until the answer is
//!   success or TOPIC_ALREADY_EXISTS; then it keeps the controller busy, changing the
//!   topic's `retention.ms` (IncrementalAlterConfigs to a random broker) now and then;
//! * **producers** (acks=all, one record per request, every value unique and never
//!   sent twice): Metadata to a random broker until the partition's leader is known,
//!   then Produce to it; an error or silence makes the write indeterminate and the
//!   leader unknown again;
//! * **consumers** do full reads: one partition at a time, Fetch from offset 0 to the
//!   high watermark from whichever broker Metadata names leader, recorded for the
//!   queue checks.
//!
//! A broker that is down refuses the connection at once; a request unanswered after
//! `request_timeout_ms` is given up and its connection closed. Client↔broker links
//! have a small delay and no faults (TCP: the faults are between brokers).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey};
use oxbow_core::broker::{BrokerInput, ConnectionId};
use oxbow_core::time::Instant;

use super::wire;
use super::{BrokerSim, BrokerSimConfig, Ev};
use crate::checker::Violation;
use crate::history::{value_payload, OpId, OpOutcome, ReadRecord};
use crate::net::NodeId;
use crate::rng::RngExt;
use crate::trace_event;

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Creates the topic.
    Admin,
    /// Writes to one partition.
    Producer {
        /// The partition.
        partition: i32,
    },
    /// Reads every partition in turn.
    Consumer,
}

/// A client's connection to a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conn {
    node: NodeId,
    inc: u64,
    connection: ConnectionId,
}

/// The request waiting for its answer.
#[derive(Debug, Clone, Copy)]
enum Pending {
    CreateTopics,
    AlterConfig,
    Metadata,
    Produce { op: OpId, partition: i32 },
    Fetch { partition: i32 },
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    correlation: i32,
    pending: Pending,
    deadline: Instant,
}

/// A full read of one partition in progress.
#[derive(Debug, Clone)]
struct FullRead {
    partition: i32,
    next_offset: i64,
    records: Vec<(u64, u64)>,
    started: Instant,
}

/// One client.
#[derive(Debug)]
pub struct Client {
    kind: Kind,
    conn: Option<Conn>,
    buffer: BytesMut,
    inflight: Option<InFlight>,
    next_correlation: i32,
    /// Partition → leader broker, from the last Metadata answer.
    leaders: BTreeMap<i32, i32>,
    /// Admin: the topic exists.
    done: bool,
    read: Option<FullRead>,
    next_read_partition: i32,
    next_read_at: Instant,
}

impl Client {
    fn new(kind: Kind) -> Client {
        Client {
            kind,
            conn: None,
            buffer: BytesMut::new(),
            inflight: None,
            next_correlation: 1,
            leaders: BTreeMap::new(),
            done: false,
            read: None,
            next_read_partition: 0,
            next_read_at: Instant::ZERO,
        }
    }

    /// Whether this client produces to `partition`.
    pub fn writes_to(&self, partition: i32) -> bool {
        self.kind == Kind::Producer { partition }
    }
}

/// The clients of a run: the admin, then producers, then consumers.
pub fn roster(config: &BrokerSimConfig) -> Vec<Client> {
    let partitions = config.partitions.max(1);
    let mut kinds = vec![Kind::Admin];
    kinds.extend((0..config.producers).map(|c| Kind::Producer {
        partition: i32::try_from(c).unwrap_or(0) % partitions,
    }));
    kinds.extend((0..config.consumers).map(|_| Kind::Consumer));
    kinds.into_iter().map(Client::new).collect()
}

impl BrokerSim {
    fn client_delay(&mut self) -> Duration {
        let c = &self.config;
        let (lo, hi) = (c.client_latency_min_ms * 1_000, c.client_latency_max_ms * 1_000);
        Duration::from_micros(self.work_rng.between(lo, hi.max(lo)))
    }

    /// A client's clock: give up on a late answer, then maybe send the next request.
    pub(super) fn on_client_tick(&mut self, now: Instant, client: u32) {
        let c = client as usize;
        if self.clients[c].inflight.is_some_and(|f| f.deadline <= now) {
            self.coverage.hit("client.request.timed_out");
            self.give_up(now, client);
        }
        if self.clients[c].inflight.is_none() {
            self.act(now, client);
        }
        let next = match self.clients[c].kind {
            Kind::Admin if self.clients[c].done => Duration::from_millis(self.config.alter_interval_ms),
            Kind::Admin => Duration::from_millis(200),
            Kind::Producer { .. } => Duration::from_millis(self.config.produce_interval_ms),
            Kind::Consumer => Duration::from_millis(20),
        };
        self.after(next, Ev::ClientTick { client });
    }

    /// The client's next request.
    fn act(&mut self, now: Instant, client: u32) {
        let c = client as usize;
        match self.clients[c].kind {
            Kind::Admin if !self.clients[c].done => {
                let target = self.random_broker();
                let p = self.config.partitions;
                let request = wire::create_topics(p, self.config.replication_factor);
                self.request(
                    now,
                    client,
                    target,
                    ApiKey::CreateTopics,
                    &request,
                    Pending::CreateTopics,
                );
            }
            Kind::Admin => {
                let target = self.random_broker();
                let value = format!("{}", 86_400_000 + self.work_rng.between(0, 1_000_000));
                let request = wire::alter_config("retention.ms", value);
                self.request(
                    now,
                    client,
                    target,
                    ApiKey::IncrementalAlterConfigs,
                    &request,
                    Pending::AlterConfig,
                );
            }
            Kind::Producer { partition } => match self.clients[c].leaders.get(&partition).copied() {
                None => self.ask_metadata(now, client),
                Some(leader) => self.produce(now, client, partition, leader),
            },
            Kind::Consumer => {
                if self.clients[c].read.is_none() {
                    if now < self.clients[c].next_read_at {
                        return;
                    }
                    let partition = self.clients[c].next_read_partition;
                    self.clients[c].next_read_partition = (partition + 1) % self.config.partitions.max(1);
                    self.clients[c].read = Some(FullRead {
                        partition,
                        next_offset: 0,
                        records: Vec::new(),
                        started: now,
                    });
                }
                let Some((partition, offset)) = self.clients[c]
                    .read
                    .as_ref()
                    .map(|r| (r.partition, r.next_offset))
                else {
                    return;
                };
                match self.clients[c].leaders.get(&partition).copied() {
                    None => self.ask_metadata(now, client),
                    Some(leader) => {
                        let request = wire::fetch(partition, offset, 50);
                        let target = NodeId::try_from(leader).unwrap_or(0);
                        self.request(
                            now,
                            client,
                            target,
                            ApiKey::Fetch,
                            &request,
                            Pending::Fetch { partition },
                        );
                    }
                }
            }
        }
    }

    fn random_broker(&mut self) -> NodeId {
        NodeId::try_from(self.work_rng.index(self.nodes.len())).unwrap_or(0)
    }

    fn ask_metadata(&mut self, now: Instant, client: u32) {
        let target = self.random_broker();
        self.request(
            now,
            client,
            target,
            ApiKey::Metadata,
            &wire::metadata(),
            Pending::Metadata,
        );
    }

    fn produce(&mut self, now: Instant, client: u32, partition: i32, leader: i32) {
        let Ok(target) = NodeId::try_from(leader) else {
            self.clients[client as usize].leaders.remove(&partition);
            return;
        };
        if !self.connect(client, target) {
            self.clients[client as usize].leaders.remove(&partition);
            return;
        }
        let value = self.next_value;
        self.next_value += 1;
        let op = self.reads.begin_write(partition, client, target, now, value);
        let timeout_ms = i32::try_from(self.config.request_timeout_ms / 2).unwrap_or(i32::MAX);
        let request = wire::produce(partition, value_payload(value), timeout_ms);
        self.coverage.hit("client.write.sent");
        self.request(
            now,
            client,
            target,
            ApiKey::Produce,
            &request,
            Pending::Produce { op, partition },
        );
    }

    /// Makes sure `client` has a connection to `target`; false if it refused.
    fn connect(&mut self, client: u32, target: NodeId) -> bool {
        let c = client as usize;
        if !self.is_up(target) {
            return false;
        }
        let inc = self.nodes[target as usize].process.incarnation;
        if let Some(conn) = self.clients[c].conn {
            if conn.node == target && conn.inc == inc {
                return true;
            }
            self.disconnect(client);
        }
        let node = &mut self.nodes[target as usize];
        let connection = ConnectionId(node.next_connection);
        node.next_connection += 1;
        node.connections.insert(connection, client);
        self.clients[c].conn = Some(Conn {
            node: target,
            inc,
            connection,
        });
        self.clients[c].buffer.clear();
        let now = self.queue.now();
        self.feed(now, target, inc, BrokerInput::Connected { connection });
        true
    }

    /// Closes the client's connection (the broker hears of it if it is still there).
    fn disconnect(&mut self, client: u32) {
        let Some(conn) = self.clients[client as usize].conn.take() else {
            return;
        };
        self.clients[client as usize].buffer.clear();
        let node = &mut self.nodes[conn.node as usize];
        if node.process.is_current(conn.inc) && node.connections.remove(&conn.connection).is_some() {
            let now = self.queue.now();
            let input = BrokerInput::Disconnected {
                connection: conn.connection,
            };
            self.feed(now, conn.node, conn.inc, input);
        }
    }

    /// Sends one request to `target` (connecting first); a refused connection fails it
    /// at once.
    fn request<T: kafka_protocol::protocol::Encodable>(
        &mut self,
        now: Instant,
        client: u32,
        target: NodeId,
        key: ApiKey,
        body: &T,
        pending: Pending,
    ) {
        let c = client as usize;
        if !self.connect(client, target) {
            self.coverage.hit("client.connection.refused");
            self.fail_pending(now, client, pending);
            return;
        }
        let version = version_of(key);
        let correlation = self.clients[c].next_correlation;
        self.clients[c].next_correlation = correlation.wrapping_add(1);
        let bytes = match wire::frame(key, version, correlation, body) {
            Ok(b) => b,
            Err(detail) => {
                return self.fail(Violation {
                    invariant: "kafka-response",
                    detail: format!("client {client} cannot encode its request: {detail}"),
                })
            }
        };
        let deadline = now + Duration::from_millis(self.config.request_timeout_ms);
        self.clients[c].inflight = Some(InFlight {
            correlation,
            pending,
            deadline,
        });
        let Some(conn) = self.clients[c].conn else { return };
        let delay = self.client_delay();
        self.after(
            delay,
            Ev::ToBroker {
                node: conn.node,
                inc: conn.inc,
                connection: conn.connection,
                bytes,
            },
        );
    }

    /// No answer (timeout, closed connection): the request's outcome is unknown.
    fn give_up(&mut self, now: Instant, client: u32) {
        let c = client as usize;
        if let Some(f) = self.clients[c].inflight.take() {
            self.fail_pending(now, client, f.pending);
        }
        self.disconnect(client);
    }

    /// A request failed or went unanswered: forget the leaders; a write is
    /// indeterminate.
    fn fail_pending(&mut self, now: Instant, client: u32, pending: Pending) {
        let c = client as usize;
        self.clients[c].inflight = None;
        self.clients[c].leaders.clear();
        if let Pending::Produce { op, partition } = pending {
            self.reads
                .finish_write(partition, op, now, OpOutcome::WriteTimedOut);
        }
    }

    /// A broker sends bytes (or closes, `None`) on one of its connections.
    pub(super) fn send_to_client(&mut self, node: NodeId, connection: ConnectionId, bytes: Option<Bytes>) {
        let Some(&client) = self.nodes[node as usize].connections.get(&connection) else {
            return;
        };
        let delay = self.client_delay();
        self.after(
            delay,
            Ev::ToClient {
                client,
                node,
                connection,
                bytes,
            },
        );
    }

    pub(super) fn on_client_bytes(
        &mut self,
        now: Instant,
        client: u32,
        node: NodeId,
        connection: ConnectionId,
        bytes: Option<Bytes>,
    ) {
        let c = client as usize;
        let current = self.clients[c]
            .conn
            .is_some_and(|conn| conn.node == node && conn.connection == connection);
        if !current {
            return;
        }
        let Some(bytes) = bytes else {
            self.coverage.hit("client.connection.closed_by_broker");
            return self.give_up(now, client);
        };
        self.clients[c].buffer.extend_from_slice(&bytes);
        while let Some(payload) = wire::take_frame(&mut self.clients[c].buffer) {
            let Some(f) = self.clients[c].inflight else {
                return self.fail(Violation {
                    invariant: "kafka-response",
                    detail: format!("broker {node} answered client {client}, which asked nothing"),
                });
            };
            if wire::correlation_id(&payload) != Some(f.correlation) {
                return self.fail(Violation {
                    invariant: "kafka-response",
                    detail: format!("broker {node} answered client {client} with a wrong correlation id"),
                });
            }
            self.clients[c].inflight = None;
            if let Err(detail) = self.on_response(now, client, node, f.pending, &payload) {
                return self.fail(Violation {
                    invariant: "kafka-response",
                    detail: format!("broker {node} to client {client}: {detail}"),
                });
            }
            if self.violation.is_some() {
                return;
            }
        }
    }

    fn on_response(
        &mut self,
        now: Instant,
        client: u32,
        node: NodeId,
        pending: Pending,
        payload: &Bytes,
    ) -> Result<(), String> {
        let c = client as usize;
        match pending {
            Pending::CreateTopics => {
                let r: m::CreateTopicsResponse =
                    wire::decode(payload, ApiKey::CreateTopics, wire::CREATE_TOPICS_VERSION)?;
                let (code, message) = wire::create_topics_error(&r).ok_or("no result for the topic")?;
                trace_event!(
                    self.trace,
                    now,
                    Some(node),
                    "create topic: error {code} {message}"
                );
                if code == 0 || code == 36 {
                    self.coverage.hit("brokers.topic.created");
                    self.clients[c].done = true;
                } else {
                    self.coverage.hit("brokers.topic.create_retried");
                }
            }
            Pending::AlterConfig => {
                let r: m::IncrementalAlterConfigsResponse = wire::decode(
                    payload,
                    ApiKey::IncrementalAlterConfigs,
                    wire::ALTER_CONFIGS_VERSION,
                )?;
                let code = wire::alter_config_error(&r).ok_or("no result for the topic")?;
                self.coverage.hit(if code == 0 {
                    "brokers.config.altered"
                } else {
                    "brokers.config.alter_failed"
                });
            }
            Pending::Metadata => {
                let r: m::MetadataResponse = wire::decode(payload, ApiKey::Metadata, wire::METADATA_VERSION)?;
                self.clients[c].leaders = wire::leaders(&r).into_iter().collect();
            }
            Pending::Produce { op, partition } => {
                let r: m::ProduceResponse = wire::decode(payload, ApiKey::Produce, wire::PRODUCE_VERSION)?;
                let (code, base_offset) =
                    wire::produce_result(&r, partition).ok_or("no result for the partition")?;
                self.on_produced(now, client, op, partition, code, base_offset)?;
            }
            Pending::Fetch { partition } => {
                let r: m::FetchResponse = wire::decode(payload, ApiKey::Fetch, wire::FETCH_VERSION)?;
                let fetched = wire::fetched(&r, partition)?.ok_or("no result for the partition")?;
                self.on_fetched(now, client, partition, fetched)?;
            }
        }
        Ok(())
    }

    fn on_produced(
        &mut self,
        now: Instant,
        client: u32,
        op: OpId,
        partition: i32,
        code: i16,
        base_offset: i64,
    ) -> Result<(), String> {
        if code != 0 {
            self.coverage.hit(match code {
                6 => "client.write.not_leader",
                7 => "client.write.timed_out",
                _ => "client.write.other_error",
            });
            self.fail_pending(now, client, Pending::Produce { op, partition });
            return Ok(());
        }
        let offset =
            u64::try_from(base_offset).map_err(|_| format!("acknowledged at offset {base_offset}"))?;
        self.coverage.hit("client.write.acked");
        self.reads
            .finish_write(partition, op, now, OpOutcome::WriteAcked { offset });
        self.live_acked(now, partition);
        Ok(())
    }

    fn on_fetched(
        &mut self,
        now: Instant,
        client: u32,
        partition: i32,
        fetched: wire::Fetched,
    ) -> Result<(), String> {
        let c = client as usize;
        if fetched.error_code != 0 {
            self.coverage.hit("client.fetch.error");
            self.clients[c].leaders.clear();
            return Ok(());
        }
        let Some(read) = self.clients[c].read.as_mut().filter(|r| r.partition == partition) else {
            return Ok(());
        };
        let mut batch = Vec::new();
        for (offset, value) in fetched.records {
            if offset < read.next_offset {
                continue;
            }
            let value =
                value.ok_or_else(|| format!("a record at offset {offset} is not a workload value"))?;
            let offset = u64::try_from(offset).map_err(|_| "negative offset".to_string())?;
            batch.push((offset, value));
        }
        if let Some(next) = fetched.next_offset {
            read.next_offset = read.next_offset.max(next);
        }
        read.records.extend_from_slice(&batch);
        let done = read.next_offset >= fetched.high_watermark;
        if let Err(v) = self.reads.observe(partition, &batch) {
            self.fail(v);
            return Ok(());
        }
        if !batch.is_empty() {
            self.coverage.hit("client.read.records");
        }
        if done {
            self.finish_read(now, client);
        }
        Ok(())
    }

    fn finish_read(&mut self, now: Instant, client: u32) {
        let c = client as usize;
        let Some(read) = self.clients[c].read.take() else {
            return;
        };
        self.clients[c].next_read_at = now + Duration::from_millis(self.config.read_interval_ms);
        let Some(upto) = u64::try_from(read.next_offset - 1).ok() else {
            return;
        };
        self.coverage.hit("client.read.full");
        self.reads.record_full_read(
            read.partition,
            ReadRecord {
                client,
                at: now,
                records: read.records,
                complete: true,
                upto_offset: upto,
            },
        );
        self.live_read(now, read.partition, read.started, upto);
    }
}

fn version_of(key: ApiKey) -> i16 {
    match key {
        ApiKey::CreateTopics => wire::CREATE_TOPICS_VERSION,
        ApiKey::Produce => wire::PRODUCE_VERSION,
        ApiKey::Fetch => wire::FETCH_VERSION,
        ApiKey::IncrementalAlterConfigs => wire::ALTER_CONFIGS_VERSION,
        _ => wire::METADATA_VERSION,
    }
}
