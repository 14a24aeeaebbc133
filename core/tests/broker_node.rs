//! The per-shard broker driven end to end with real Kafka request bytes (encoded as a
//! client would, with kafka-protocol): two shards exchanging messages, partitions on
//! in-memory disks, a metadata file — create a topic, produce to every partition
//! (half of them owned by the other shard), fetch back, long-poll, list offsets,
//! delete records, change configs, survive a restart, and shrug off garbage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kafka_support;

use bytes::{Bytes, BytesMut};
use kafka_support::{client_decode_response, client_frame};
use oxbow_core::broker::io::StoreOwner;
use oxbow_core::broker::{Broker, BrokerEffect, BrokerInput, ConnectionId, PartitionKey, ShardId};
use oxbow_core::broker::{BrokerSetup, RecoveredPartition};
use oxbow_core::kafka::protocol::messages::{self as m, ApiKey, TopicName};
use oxbow_core::kafka::protocol::protocol::{Decodable, StrBytes};
use oxbow_core::kafka::Request;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::log::mem_disk::MemDisk;
use oxbow_core::log::{LogConfig, LogRecovery, RecoveryStep};
use oxbow_core::partition::{ReplicaEffect, ReplicaInput};
use oxbow_core::raft::{HardState, RaftConfig};
use oxbow_core::tier::{ObjectBody, StoreCompletion, StoreError, StoreReply, TierEffect};
use oxbow_core::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

const SHARDS: u32 = 2;

fn log_defaults() -> LogConfig {
    LogConfig {
        segment_bytes: 1024 * 1024,
        max_batch_bytes: 512 * 1024,
        preallocate_bytes: 0,
        recovery_read_bytes: 4 * 1024 * 1024,
        ..LogConfig::default()
    }
}

/// One node: its shards' brokers and everything the runtime would own.
struct Node {
    shards: Vec<Broker>,
    disks: BTreeMap<PartitionKey, MemDisk>,
    hard_states: BTreeMap<PartitionKey, HardState>,
    metadata_file: Option<Bytes>,
    now: Instant,
    received: BTreeMap<ConnectionId, BytesMut>,
    closed: Vec<ConnectionId>,
    /// The object store of tiered topics.
    bucket: BTreeMap<String, Bytes>,
    /// While set, every store operation is answered `Throttled`.
    store_throttling: bool,
    /// While set, object-store operations wait in `held_store` instead of being
    /// answered (operations in flight across an archiver's restart).
    hold_store: bool,
    held_store: Vec<(usize, BrokerEffect)>,
    /// Disk effects executed, by kind (`Write`, `Sync`, `WriteCheckpoint`, ...).
    disk_effects: BTreeMap<&'static str, u64>,
    /// Shard wake-ups: `handle_timeout` calls made by [`Node::advance`].
    wakeups: u64,
}

/// The name of a disk effect's kind, for counting.
fn disk_effect_kind(effect: &oxbow_core::log::LogEffect) -> &'static str {
    use oxbow_core::log::LogEffect as E;
    match effect {
        E::CreateSegment { .. } => "CreateSegment",
        E::Write { .. } => "Write",
        E::Sync { .. } => "Sync",
        E::TruncateSegment { .. } => "TruncateSegment",
        E::DeleteSegment { .. } => "DeleteSegment",
        E::WriteIndex { .. } => "WriteIndex",
        E::WriteCheckpoint { .. } => "WriteCheckpoint",
        E::WriteStateFile { .. } => "WriteStateFile",
        _ => "other",
    }
}

fn recover(disk: &MemDisk) -> oxbow_core::log::Log {
    let mut recovery = LogRecovery::new(log_defaults(), disk.recovery_input());
    while let RecoveryStep::Read(range) = recovery.poll() {
        recovery.feed(range, disk.read(range.segment, range.position, range.len_bytes));
    }
    recovery.finish().unwrap().0
}

impl Node {
    fn start(
        disks: BTreeMap<PartitionKey, MemDisk>,
        hard_states: BTreeMap<PartitionKey, HardState>,
        metadata_file: Option<Bytes>,
    ) -> Node {
        Node::start_tiered(
            disks,
            hard_states,
            metadata_file,
            (Default::default(), BTreeMap::new()),
        )
    }

    fn start_tiered(
        disks: BTreeMap<PartitionKey, MemDisk>,
        hard_states: BTreeMap<PartitionKey, HardState>,
        metadata_file: Option<Bytes>,
        (tier, bucket): (
            oxbow_core::broker::partitions::TierSettings,
            BTreeMap<String, Bytes>,
        ),
    ) -> Node {
        let now = Instant::from_millis(1);
        let shards = (0..SHARDS)
            .map(|shard| {
                let partitions = disks
                    .iter()
                    .filter(|(key, _)| {
                        oxbow_core::broker::shard_for(&key.topic, key.partition, SHARDS) == ShardId(shard)
                    })
                    .map(|(key, disk)| RecoveredPartition {
                        key: key.clone(),
                        log: recover(disk),
                        hard_state: hard_states.get(key).copied().unwrap_or_default(),
                    })
                    .collect();
                let setup = BrokerSetup {
                    node_id: 1,
                    shard: ShardId(shard),
                    shard_count: SHARDS,
                    advertised_host: "127.0.0.1".to_string(),
                    advertised_port: 9092,
                    log_defaults: log_defaults(),
                    raft: RaftConfig::default(),
                    metadata: if shard == 0 { metadata_file.clone() } else { None },
                    partitions,
                    wall_clock_origin_ms: 1_700_000_000_000,
                    max_frame_bytes: 1024 * 1024,
                    group: oxbow_core::group::GroupConfig::default(),
                    tier: tier.clone(),
                    txn: Default::default(),
                    cluster: None,
                };
                Broker::new(setup, now).unwrap()
            })
            .collect();
        let mut node = Node {
            shards,
            disks,
            hard_states,
            metadata_file,
            now,
            received: BTreeMap::new(),
            closed: Vec::new(),
            bucket,
            store_throttling: false,
            hold_store: false,
            held_store: Vec::new(),
            disk_effects: BTreeMap::new(),
            wakeups: 0,
        };
        node.run();
        node
    }

    /// Executes every effect of every shard until all are quiet.
    fn run(&mut self) {
        loop {
            let mut progressed = false;
            for shard in 0..self.shards.len() {
                while let Some(effect) = self.shards[shard].poll_effect() {
                    progressed = true;
                    self.execute(shard, effect);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn execute(&mut self, shard: usize, effect: BrokerEffect) {
        let now = self.now;
        match effect {
            BrokerEffect::Send { connection, frame } => {
                let received = self.received.entry(connection).or_default();
                for chunk in frame.chunks() {
                    received.extend_from_slice(chunk);
                }
            }
            BrokerEffect::Close { connection, .. } => self.closed.push(connection),
            BrokerEffect::OpenPartition { key } => {
                self.disks.entry(key).or_default();
            }
            BrokerEffect::RemovePartition { key } => {
                self.disks.remove(&key);
            }
            BrokerEffect::Partition { key, effect } => {
                let inputs: Vec<ReplicaInput> = match effect {
                    ReplicaEffect::Disk(disk_effect) => {
                        *self
                            .disk_effects
                            .entry(disk_effect_kind(&disk_effect))
                            .or_default() += 1;
                        let disk = self.disks.get_mut(&key).expect("opened");
                        disk.execute(disk_effect)
                            .into_iter()
                            .map(ReplicaInput::Disk)
                            .collect()
                    }
                    ReplicaEffect::PersistHardState(hs) => {
                        self.hard_states.insert(key.clone(), hs);
                        vec![ReplicaInput::HardStateDurable(hs)]
                    }
                    ReplicaEffect::ReadRanges { token, ranges } => {
                        let disk = &self.disks[&key];
                        let chunks = ranges
                            .iter()
                            .map(|r| disk.read(r.segment, r.position, r.len_bytes))
                            .collect();
                        vec![ReplicaInput::RangesRead {
                            token,
                            result: Ok(chunks),
                        }]
                    }
                    other => panic!("single node sends nothing: {other:?}"),
                };
                for input in inputs {
                    self.shards[shard].handle(
                        now,
                        BrokerInput::Partition {
                            key: key.clone(),
                            input,
                        },
                    );
                }
            }
            BrokerEffect::ReadRanges { key, token, ranges } => {
                let disk = &self.disks[&key];
                let chunks = ranges
                    .iter()
                    .map(|r| disk.read(r.segment, r.position, r.len_bytes))
                    .collect();
                self.shards[shard].handle(
                    now,
                    BrokerInput::RangesRead {
                        token,
                        result: Ok(chunks),
                    },
                );
            }
            BrokerEffect::PersistMetadata { version, data } => {
                self.metadata_file = Some(data);
                self.shards[shard].handle(
                    now,
                    BrokerInput::MetadataPersisted {
                        version,
                        result: Ok(()),
                    },
                );
            }
            BrokerEffect::ToShard { to, message } => {
                let from = ShardId(shard as u32);
                self.shards[to.0 as usize].handle(now, BrokerInput::FromShard { from, message });
            }
            effect @ BrokerEffect::Store { .. } if self.hold_store => {
                self.held_store.push((shard, effect));
            }
            BrokerEffect::Store { key, owner, effect } => {
                let op = effect.op();
                let result = match effect {
                    _ if self.store_throttling => Err(StoreError::Throttled),
                    TierEffect::Put {
                        key: object, body, ..
                    } => {
                        let bytes = match body {
                            ObjectBody::Bytes(b) => b,
                            ObjectBody::LocalSegment {
                                segment,
                                position_bytes,
                                len_bytes,
                            } => self.disks[&key].read(segment, position_bytes, len_bytes),
                            other => panic!("unknown body {other:?}"),
                        };
                        self.bucket.insert(object, bytes);
                        Ok(StoreReply::Put)
                    }
                    TierEffect::Get {
                        key: object, range, ..
                    } => match self.bucket.get(&object) {
                        None => Err(StoreError::NotFound),
                        Some(b) => Ok(StoreReply::Got(match range {
                            Some((at, len)) => b.slice(at as usize..(at + len) as usize),
                            None => b.clone(),
                        })),
                    },
                    TierEffect::Delete { key: object, .. } => {
                        self.bucket.remove(&object);
                        Ok(StoreReply::Deleted)
                    }
                    TierEffect::List { prefix, .. } => Ok(StoreReply::Listed(
                        self.bucket
                            .keys()
                            .filter(|k| k.starts_with(&prefix))
                            .cloned()
                            .collect(),
                    )),
                    other => panic!("unknown store effect {other:?}"),
                };
                self.shards[shard].handle(
                    now,
                    BrokerInput::Store {
                        key,
                        owner,
                        completion: StoreCompletion { op, result },
                    },
                );
            }
            other => panic!("unexpected effect {other:?}"),
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            let next = self.shards.iter().filter_map(|s| s.poll_timeout()).min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    for shard in &mut self.shards {
                        if shard.poll_timeout().is_some_and(|t| t <= self.now) {
                            self.wakeups += 1;
                            shard.handle_timeout(self.now);
                        }
                    }
                    self.run();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn connect(&mut self, shard: usize, id: u64) -> ConnectionId {
        let connection = ConnectionId(id);
        self.shards[shard].handle(self.now, BrokerInput::Connected { connection });
        connection
    }

    fn send(&mut self, shard: usize, connection: ConnectionId, bytes: Bytes) {
        self.shards[shard].handle(self.now, BrokerInput::Received { connection, bytes });
        self.run();
    }

    /// The next whole response frame on `connection`, if one arrived.
    fn take_frame(&mut self, connection: ConnectionId) -> Option<Bytes> {
        let buffer = self.received.get_mut(&connection)?;
        if buffer.len() < 4 {
            return None;
        }
        let len = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
        (buffer.len() >= 4 + len).then(|| buffer.split_to(4 + len).freeze())
    }

    /// Sends `request` and waits (in simulated time, up to 5 s) for its response.
    fn call<R: Decodable>(
        &mut self,
        shard: usize,
        connection: ConnectionId,
        request: Request,
        version: i16,
    ) -> R {
        let key = request.api_key();
        self.send(shard, connection, client_frame(&request, version, 7));
        for _ in 0..100 {
            if let Some(frame) = self.take_frame(connection) {
                let (correlation_id, body) = client_decode_response::<R>(&frame, key, version);
                assert_eq!(correlation_id, 7);
                return body;
            }
            self.advance(Duration::from_millis(50));
        }
        panic!("no response to {key:?}");
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic(text: &str) -> TopicName {
    TopicName(s(text))
}

fn create_topic(node: &mut Node, conn: ConnectionId, name: &str, partitions: i32) -> m::CreateTopicsResponse {
    let mut creatable = m::create_topics_request::CreatableTopic::default();
    creatable.name = topic(name);
    creatable.num_partitions = partitions;
    creatable.replication_factor = -1;
    let mut request = m::CreateTopicsRequest::default();
    request.topics = vec![creatable];
    request.timeout_ms = 5000;
    node.call(0, conn, Request::CreateTopics(request), 7)
}

fn produce(
    node: &mut Node,
    shard: usize,
    conn: ConnectionId,
    name: &str,
    partition: i32,
    values: &[&str],
    acks: i16,
) -> Option<m::ProduceResponse> {
    let records: Vec<NewRecord> = values
        .iter()
        .map(|v| NewRecord::value(*v, 1_700_000_000_000))
        .collect();
    let mut p = m::produce_request::PartitionProduceData::default();
    p.index = partition;
    p.records = Some(build_batch(&records, BatchOptions::default()));
    let mut t = m::produce_request::TopicProduceData::default();
    t.name = topic(name);
    t.partition_data = vec![p];
    let mut request = m::ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 5000;
    request.topic_data = vec![t];
    if acks == 0 {
        node.send(shard, conn, client_frame(&Request::Produce(request), 9, 7));
        return None;
    }
    Some(node.call(shard, conn, Request::Produce(request), 9))
}

fn fetch_request(name: &str, partition: i32, offset: i64, max_wait_ms: i32) -> Request {
    let mut p = m::fetch_request::FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1024 * 1024;
    p.current_leader_epoch = -1;
    p.last_fetched_epoch = -1;
    p.log_start_offset = -1;
    let mut t = m::fetch_request::FetchTopic::default();
    t.topic = topic(name);
    t.partitions = vec![p];
    let mut request = m::FetchRequest::default();
    request.replica_id = m::BrokerId(-1);
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 50 * 1024 * 1024;
    request.topics = vec![t];
    Request::Fetch(request)
}

/// Values of the data records in a fetch response's partition (control batches skipped).
fn values(response: &m::FetchResponse) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for t in &response.responses {
        for p in &t.partitions {
            let Some(records) = &p.records else { continue };
            for (at, header) in oxbow_core::log::batch::iter_batches(records) {
                if header.is_control() {
                    continue;
                }
                let body = records.slice(at + 61..at + header.size_bytes());
                for r in
                    oxbow_core::log::records::parse_uncompressed_records(&body, header.record_count).unwrap()
                {
                    out.push((
                        header.base_offset + r.offset_delta,
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
        }
    }
    out
}

fn metadata(node: &mut Node, conn: ConnectionId) -> m::MetadataResponse {
    let mut request = m::MetadataRequest::default();
    request.topics = None;
    node.call(0, conn, Request::Metadata(request), 12)
}

#[test]
fn a_two_shard_node_serves_a_topic_end_to_end() {
    let mut node = Node::start(BTreeMap::new(), BTreeMap::new(), None);
    let c0 = node.connect(0, 1);
    let c1 = node.connect(1, 2);

    let created = create_topic(&mut node, c0, "orders", 8);
    assert_eq!(
        created.topics[0].error_code, 0,
        "{:?}",
        created.topics[0].error_message
    );
    assert!(node.metadata_file.is_some(), "metadata durable before the answer");
    let again = create_topic(&mut node, c0, "orders", 8);
    assert_eq!(again.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
    node.advance(Duration::from_millis(100));

    let meta = metadata(&mut node, c0);
    assert_eq!(meta.topics[0].partitions.len(), 8);
    assert!(meta.topics[0]
        .partitions
        .iter()
        .all(|p| p.error_code == 0 && p.leader_id.0 == 1 && p.leader_epoch >= 1));
    let owners: std::collections::BTreeSet<_> = (0..8)
        .map(|p| oxbow_core::broker::shard_for("orders", p, SHARDS))
        .collect();
    assert_eq!(owners.len(), 2, "partitions spread over both shards");

    // Produce through shard 1's connection to every partition: some cross shards.
    for partition in 0..8 {
        let response = produce(
            &mut node,
            1,
            c1,
            "orders",
            partition,
            &[&format!("p{partition}-a"), &format!("p{partition}-b")],
            -1,
        )
        .unwrap();
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.base_offset, 1, "after the leader's no-op");
    }
    for partition in 0..8 {
        let response: m::FetchResponse = node.call(0, c0, fetch_request("orders", partition, 0, 0), 12);
        let got = values(&response);
        assert_eq!(
            got,
            vec![(1, format!("p{partition}-a")), (2, format!("p{partition}-b"))]
        );
        assert_eq!(response.responses[0].partitions[0].high_watermark, 3);
        // A read starting mid-batch returns the whole batch; the client skips.
        let mid: m::FetchResponse = node.call(0, c0, fetch_request("orders", partition, 2, 0), 12);
        assert_eq!(values(&mid).last().unwrap().0, 2);
    }

    // Long poll: nothing new, so the fetch waits until a produce arrives.
    node.send(0, c0, client_frame(&fetch_request("orders", 3, 3, 2000), 12, 9));
    node.advance(Duration::from_millis(200));
    assert!(node.take_frame(c0).is_none(), "a long poll waits");
    produce(&mut node, 1, c1, "orders", 3, &["late"], 1).unwrap();
    let frame = node.take_frame(c0).expect("the produce wakes the long poll");
    let (_, woke): (i32, m::FetchResponse) = client_decode_response(&frame, ApiKey::Fetch, 12);
    assert_eq!(values(&woke), vec![(3, "late".to_string())]);
    // And a long poll with nothing arriving answers empty at max wait.
    node.send(0, c0, client_frame(&fetch_request("orders", 4, 3, 300), 12, 9));
    node.advance(Duration::from_millis(400));
    let (_, empty): (i32, m::FetchResponse) =
        client_decode_response(&node.take_frame(c0).unwrap(), ApiKey::Fetch, 12);
    assert!(values(&empty).is_empty());

    // A fetch between the high watermark and the log end, or past the end, neither
    // spins nor hangs: it waits out its max wait, or is out of range.
    node.send(0, c0, client_frame(&fetch_request("orders", 4, 3, 300), 12, 9));
    node.advance(Duration::from_millis(400));
    assert!(node.take_frame(c0).is_some());
    let past_end: m::FetchResponse = node.call(0, c0, fetch_request("orders", 4, 99, 300), 12);
    assert_eq!(
        past_end.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );

    // ListOffsets: earliest, latest; an unknown partition is an error, not a crash.
    let list = |timestamp: i64, partition: i32| {
        let mut p = m::list_offsets_request::ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = timestamp;
        let mut t = m::list_offsets_request::ListOffsetsTopic::default();
        t.name = topic("orders");
        t.partitions = vec![p];
        let mut request = m::ListOffsetsRequest::default();
        request.replica_id = m::BrokerId(-1);
        request.topics = vec![t];
        Request::ListOffsets(request)
    };
    let earliest: m::ListOffsetsResponse = node.call(0, c0, list(-2, 5), 7);
    assert_eq!(earliest.topics[0].partitions[0].offset, 0);
    let latest: m::ListOffsetsResponse = node.call(0, c0, list(-1, 5), 7);
    assert_eq!(latest.topics[0].partitions[0].offset, 3);
    let by_time: m::ListOffsetsResponse = node.call(0, c0, list(1_700_000_000_000, 5), 7);
    assert_eq!(by_time.topics[0].partitions[0].offset, 1);
    let unknown: m::ListOffsetsResponse = node.call(0, c0, list(-1, 99), 7);
    assert_eq!(unknown.topics[0].partitions[0].error_code, 3);

    // DeleteRecords moves the start offset; reading below it is out of range.
    let mut dp = m::delete_records_request::DeleteRecordsPartition::default();
    dp.partition_index = 6;
    dp.offset = 2;
    let mut dt = m::delete_records_request::DeleteRecordsTopic::default();
    dt.name = topic("orders");
    dt.partitions = vec![dp];
    let mut delete = m::DeleteRecordsRequest::default();
    delete.topics = vec![dt];
    delete.timeout_ms = 5000;
    let deleted: m::DeleteRecordsResponse = node.call(0, c0, Request::DeleteRecords(delete), 2);
    assert_eq!(deleted.topics[0].partitions[0].low_watermark, 2);
    let below: m::FetchResponse = node.call(0, c0, fetch_request("orders", 6, 1, 0), 12);
    assert_eq!(
        below.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );

    // Configs: set retention.ms live, read it back; a bad value is refused by name.
    let alter = |value: &str| {
        let mut c = m::incremental_alter_configs_request::AlterableConfig::default();
        c.name = s("retention.ms");
        c.config_operation = 0;
        c.value = Some(s(value));
        let mut r = m::incremental_alter_configs_request::AlterConfigsResource::default();
        r.resource_type = 2;
        r.resource_name = s("orders");
        r.configs = vec![c];
        let mut request = m::IncrementalAlterConfigsRequest::default();
        request.resources = vec![r];
        Request::IncrementalAlterConfigs(request)
    };
    let ok: m::IncrementalAlterConfigsResponse = node.call(1, c1, alter("3600000"), 1);
    assert_eq!(ok.responses[0].error_code, 0);
    let bad: m::IncrementalAlterConfigsResponse = node.call(1, c1, alter("soon"), 1);
    assert_eq!(bad.responses[0].error_code, 40, "INVALID_CONFIG");
    assert!(bad.responses[0]
        .error_message
        .as_ref()
        .unwrap()
        .as_str()
        .contains("retention.ms"));
    let mut describe = m::DescribeConfigsRequest::default();
    let mut resource = m::describe_configs_request::DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = s("orders");
    describe.resources = vec![resource];
    let described: m::DescribeConfigsResponse = node.call(0, c0, Request::DescribeConfigs(describe), 4);
    let retention = described.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(retention.value.as_ref().unwrap().as_str(), "3600000");

    // Garbage closes that connection only.
    node.send(1, c1, Bytes::from_static(b"\x00\x00\x00\x08garbage!"));
    assert!(node.closed.contains(&c1));
    assert_eq!(
        metadata(&mut node, c0).topics.len(),
        1,
        "the other connection is served as before"
    );

    // Restart from what the disks hold: every acknowledged record is back.
    let disks: BTreeMap<PartitionKey, MemDisk> = node
        .disks
        .iter()
        .map(|(k, d)| {
            let mut d = d.clone();
            d.crash(0);
            (k.clone(), d)
        })
        .collect();
    let mut restarted = Node::start(disks, node.hard_states.clone(), node.metadata_file.clone());
    let c = restarted.connect(0, 3);
    restarted.advance(Duration::from_millis(100));
    for partition in 0..8 {
        let response: m::FetchResponse = restarted.call(0, c, fetch_request("orders", partition, 0, 0), 12);
        let got = values(&response);
        if partition == 6 {
            assert_eq!(
                response.responses[0].partitions[0].error_code, 1,
                "the start offset survived"
            );
            continue;
        }
        assert!(
            got.contains(&(1, format!("p{partition}-a"))),
            "partition {partition}: {got:?}"
        );
        assert!(got.contains(&(2, format!("p{partition}-b"))));
    }
    let meta = metadata(&mut restarted, c);
    assert!(
        meta.topics[0].partitions.iter().all(|p| p.leader_epoch >= 2),
        "a new term after restart"
    );
}

/// Transactional requests and their shapes, for the transactions test.
mod txn {
    use super::*;
    use oxbow_core::kafka::protocol::messages::{ProducerId, TransactionalId};

    pub const ID: &str = "tx-1";

    pub fn find_coordinator(node: &mut Node, conn: ConnectionId) -> i16 {
        let mut request = m::FindCoordinatorRequest::default();
        request.key = s(ID);
        request.key_type = 1;
        let response: m::FindCoordinatorResponse = node.call(0, conn, Request::FindCoordinator(request), 3);
        response.error_code
    }

    pub fn init(node: &mut Node, conn: ConnectionId) -> m::InitProducerIdResponse {
        init_with_timeout(node, conn, 60_000)
    }

    /// InitProducerId asking for a transaction timeout of `timeout_ms`.
    pub fn init_with_timeout(
        node: &mut Node,
        conn: ConnectionId,
        timeout_ms: i32,
    ) -> m::InitProducerIdResponse {
        let mut request = m::InitProducerIdRequest::default();
        request.transactional_id = Some(TransactionalId(s(ID)));
        request.transaction_timeout_ms = timeout_ms;
        request.producer_id = ProducerId(-1);
        request.producer_epoch = -1;
        node.call(0, conn, Request::InitProducerId(request), 4)
    }

    pub fn add(node: &mut Node, conn: ConnectionId, producer: (i64, i16), partitions: &[i32]) -> Vec<i16> {
        add_at(node, conn, 3, producer, partitions)
    }

    /// AddPartitionsToTxn at `version` (0-3: a client's).
    pub fn add_at(
        node: &mut Node,
        conn: ConnectionId,
        version: i16,
        producer: (i64, i16),
        partitions: &[i32],
    ) -> Vec<i16> {
        let mut t = m::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
        t.name = topic("t");
        t.partitions = partitions.to_vec();
        let mut request = m::AddPartitionsToTxnRequest::default();
        request.v3_and_below_transactional_id = TransactionalId(s(ID));
        request.v3_and_below_producer_id = ProducerId(producer.0);
        request.v3_and_below_producer_epoch = producer.1;
        request.v3_and_below_topics = vec![t];
        let response: m::AddPartitionsToTxnResponse =
            node.call(0, conn, Request::AddPartitionsToTxn(request), version);
        response.results_by_topic_v3_and_below[0]
            .results_by_partition
            .iter()
            .map(|p| p.partition_error_code)
            .collect()
    }

    pub fn end(node: &mut Node, conn: ConnectionId, producer: (i64, i16), commit: bool) -> i16 {
        end_at(node, conn, 3, producer, commit).error_code
    }

    /// EndTxn at `version` (v5: transaction protocol v2, answered with the next
    /// producer id and epoch).
    pub fn end_at(
        node: &mut Node,
        conn: ConnectionId,
        version: i16,
        producer: (i64, i16),
        commit: bool,
    ) -> m::EndTxnResponse {
        let mut request = m::EndTxnRequest::default();
        request.transactional_id = TransactionalId(s(ID));
        request.producer_id = ProducerId(producer.0);
        request.producer_epoch = producer.1;
        request.committed = commit;
        node.call(0, conn, Request::EndTxn(request), version)
    }

    /// A transactional batch of `values` (sequence `first_seq`) to partition `partition`.
    pub fn produce(
        node: &mut Node,
        conn: ConnectionId,
        producer: (i64, i16),
        partition: i32,
        first_seq: i32,
        values: &[&str],
    ) -> i16 {
        produce_at(node, conn, 9, (producer, partition, first_seq), values)
    }

    /// [`produce`] at Produce `version` (v12: transaction protocol v2).
    pub fn produce_at(
        node: &mut Node,
        conn: ConnectionId,
        version: i16,
        (producer, partition, first_seq): ((i64, i16), i32, i32),
        values: &[&str],
    ) -> i16 {
        let records: Vec<NewRecord> = values
            .iter()
            .map(|v| NewRecord::value(*v, 1_700_000_000_000))
            .collect();
        let options = BatchOptions {
            producer: oxbow_core::log::builder::ProducerFields {
                producer_id: producer.0,
                producer_epoch: producer.1,
                base_sequence: first_seq,
            },
            transactional: true,
            ..BatchOptions::default()
        };
        let mut p = m::produce_request::PartitionProduceData::default();
        p.index = partition;
        p.records = Some(build_batch(&records, options));
        let mut t = m::produce_request::TopicProduceData::default();
        t.name = topic("t");
        t.partition_data = vec![p];
        let mut request = m::ProduceRequest::default();
        request.transactional_id = Some(TransactionalId(s(ID)));
        request.acks = -1;
        request.timeout_ms = 5000;
        request.topic_data = vec![t];
        let response: m::ProduceResponse = node.call(0, conn, Request::Produce(request), version);
        response.responses[0].partition_responses[0].error_code
    }

    /// TxnOffsetCommit v5 of offset 1 of `t`/0 for group `g`, without AddOffsetsToTxn
    /// (once FindCoordinator created `__consumer_offsets`): the partitions' codes.
    pub fn commit_offsets_v5(node: &mut Node, conn: ConnectionId, producer: (i64, i16)) -> Vec<i16> {
        let mut find = m::FindCoordinatorRequest::default();
        find.key = s("g");
        for _ in 0..20 {
            let found: m::FindCoordinatorResponse =
                node.call(0, conn, Request::FindCoordinator(find.clone()), 3);
            if found.error_code == 0 {
                break;
            }
            node.advance(Duration::from_millis(200));
        }
        use m::txn_offset_commit_request::{TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic};
        let mut p = TxnOffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = 1;
        let mut t = TxnOffsetCommitRequestTopic::default();
        t.name = topic("t");
        t.partitions = vec![p];
        let mut request = m::TxnOffsetCommitRequest::default();
        request.transactional_id = TransactionalId(s(ID));
        request.group_id = m::GroupId(s("g"));
        request.producer_id = ProducerId(producer.0);
        request.producer_epoch = producer.1;
        request.generation_id = -1;
        request.topics = vec![t];
        let response: m::TxnOffsetCommitResponse = node.call(0, conn, Request::TxnOffsetCommit(request), 5);
        response.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect()
    }

    /// The topics of [`ID`]'s transaction, from DescribeTransactions.
    pub fn describe(node: &mut Node, conn: ConnectionId) -> Vec<String> {
        let mut request = m::DescribeTransactionsRequest::default();
        request.transactional_ids = vec![TransactionalId(s(ID))];
        let response: m::DescribeTransactionsResponse =
            node.call(0, conn, Request::DescribeTransactions(request), 0);
        response.transaction_states[0]
            .topics
            .iter()
            .map(|t| t.topic.0.as_str().to_string())
            .collect()
    }

    /// A read_committed (or not) fetch of partition `partition` from offset 0.
    pub fn fetch(
        node: &mut Node,
        conn: ConnectionId,
        partition: i32,
        read_committed: bool,
    ) -> m::FetchResponse {
        let mut request = fetch_request("t", partition, 0, 0);
        if let Request::Fetch(f) = &mut request {
            f.isolation_level = i8::from(read_committed);
        }
        node.call(0, conn, request, 12)
    }

    /// (last stable offset, high watermark, aborted (producer, first offset)).
    pub fn stable(response: &m::FetchResponse) -> (i64, i64, Vec<(i64, i64)>) {
        let p = &response.responses[0].partitions[0];
        let aborted = p
            .aborted_transactions
            .iter()
            .flatten()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect();
        (p.last_stable_offset, p.high_watermark, aborted)
    }
}

/// A node with topic `t` (4 partitions) and a transaction coordinator for
/// [`txn::ID`], and a connection to shard 0.
fn txn_node() -> (Node, ConnectionId) {
    let mut node = Node::start(BTreeMap::new(), BTreeMap::new(), None);
    let c = node.connect(0, 1);
    node.advance(Duration::from_millis(100));
    assert_eq!(create_topic(&mut node, c, "t", 4).topics[0].error_code, 0);
    node.advance(Duration::from_millis(500));
    // The first FindCoordinator creates __transaction_state; then its leaders come up.
    let mut found = txn::find_coordinator(&mut node, c);
    for _ in 0..20 {
        if found == 0 {
            break;
        }
        node.advance(Duration::from_millis(200));
        found = txn::find_coordinator(&mut node, c);
    }
    assert_eq!(found, 0, "a transaction coordinator");
    (node, c)
}

#[test]
fn transactions_commit_and_abort_across_shards_and_survive_a_restart() {
    let (mut node, c) = txn_node();
    let init = txn::init(&mut node, c);
    assert_eq!(init.error_code, 0);
    let producer = (init.producer_id.0, init.producer_epoch);

    // KIP-890: a partition not added to the transaction refuses transactional data.
    assert_eq!(
        txn::produce(&mut node, c, producer, 0, 0, &["stray"]),
        48,
        "INVALID_TXN_STATE"
    );
    assert_eq!(txn::add(&mut node, c, producer, &[0, 1, 2, 3]), vec![0, 0, 0, 0]);
    for partition in 0..4 {
        assert_eq!(
            txn::produce(&mut node, c, producer, partition, 0, &["a1", "a2"]),
            0
        );
    }
    // Open: read_committed sees nothing, read_uncommitted everything.
    for partition in 0..4 {
        let committed = txn::fetch(&mut node, c, partition, true);
        assert_eq!(values(&committed), vec![], "partition {partition} while open");
        let (lso, hwm, _) = txn::stable(&committed);
        assert!(
            lso < hwm,
            "the open transaction holds the LSO back: {lso} < {hwm}"
        );
        assert_eq!(values(&txn::fetch(&mut node, c, partition, false)).len(), 2);
    }
    assert_eq!(txn::end(&mut node, c, producer, false), 0);
    node.advance(Duration::from_millis(200));
    let mut aborted_first = BTreeMap::new();
    for partition in 0..4 {
        let response = txn::fetch(&mut node, c, partition, true);
        let (lso, hwm, aborted) = txn::stable(&response);
        assert_eq!(lso, hwm, "the ABORT marker is in: partition {partition}");
        assert_eq!(
            aborted.len(),
            1,
            "partition {partition} lists its aborted transaction"
        );
        assert_eq!(aborted[0].0, producer.0);
        aborted_first.insert(partition, aborted[0].1);
    }
    // The next transaction commits on two partitions.
    assert_eq!(txn::add(&mut node, c, producer, &[0, 3]), vec![0, 0]);
    assert_eq!(txn::produce(&mut node, c, producer, 0, 2, &["c1"]), 0);
    assert_eq!(txn::produce(&mut node, c, producer, 3, 2, &["c1"]), 0);
    assert_eq!(txn::end(&mut node, c, producer, true), 0);
    node.advance(Duration::from_millis(200));
    let after_commit = txn::fetch(&mut node, c, 0, true);
    let (lso, hwm, _) = txn::stable(&after_commit);
    assert_eq!(lso, hwm);
    assert_eq!(values(&after_commit).last().map(|(_, v)| v.as_str()), Some("c1"));

    // A restart: the coordinator replays its log, producer state and the aborted
    // index come back from the partitions' logs.
    let mut restarted = Node::start(
        node.disks.clone(),
        node.hard_states.clone(),
        node.metadata_file.clone(),
    );
    let c = restarted.connect(0, 2);
    restarted.advance(Duration::from_millis(500));
    for partition in 0..4 {
        let response = txn::fetch(&mut restarted, c, partition, true);
        let (lso, hwm, aborted) = txn::stable(&response);
        assert_eq!(lso, hwm, "partition {partition} after restart");
        assert_eq!(aborted, vec![(producer.0, aborted_first[&partition])]);
    }
    // The old epoch is fenced by a new InitProducerId; the id's state survived.
    let again = txn::init(&mut restarted, c);
    assert_eq!((again.error_code, again.producer_id.0), (0, producer.0));
    assert_eq!(again.producer_epoch, producer.1 + 1);
    assert_eq!(
        txn::end(&mut restarted, c, producer, true),
        47,
        "INVALID_PRODUCER_EPOCH"
    );
}

/// Transaction protocol v2 (KIP-890 part 2) with wire requests: ApiVersions finalizes
/// `transaction.version` 2; Produce v12 adds its partitions itself; EndTxn v5 bumps the
/// epoch with every decision and names it; a late retry of a committed transaction's
/// produce is refused (its epoch is fenced); a retried EndTxn is answered again;
/// TxnOffsetCommit v5 adds the offsets partition itself. The v1 flow next to it is
/// unchanged (Produce v9 to a partition never added is refused).
#[test]
fn transaction_protocol_v2_bumps_the_epoch_per_transaction_and_fences_late_retries() {
    let (mut node, c) = txn_node();
    let versions: m::ApiVersionsResponse =
        node.call(0, c, Request::ApiVersions(m::ApiVersionsRequest::default()), 3);
    let max = |key: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| k.max_version)
    };
    assert_eq!(
        (
            max(ApiKey::Produce),
            max(ApiKey::EndTxn),
            max(ApiKey::TxnOffsetCommit)
        ),
        (Some(12), Some(5), Some(5))
    );
    let feature = versions
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == "transaction.version")
        .expect("transaction.version is finalized");
    assert_eq!(feature.max_version_level, 2);

    let init = txn::init(&mut node, c);
    let (pid, epoch0) = (init.producer_id.0, init.producer_epoch);
    // v1 next to it: a partition never added refuses a v9 transactional produce.
    assert_eq!(txn::produce(&mut node, c, (pid, epoch0), 2, 0, &["stray"]), 48);
    // v2: Produce v12 adds partitions 0 and 1 to the transaction itself.
    for partition in 0..2 {
        let batch = ((pid, epoch0), partition, 0);
        assert_eq!(txn::produce_at(&mut node, c, 12, batch, &["a1", "a2"]), 0);
    }
    let ended = txn::end_at(&mut node, c, 5, (pid, epoch0), true);
    assert_eq!(ended.error_code, 0);
    let epoch1 = ended.producer_epoch;
    assert_eq!(
        (ended.producer_id.0, epoch1),
        (pid, epoch0 + 1),
        "bumped by EndTxn"
    );
    node.advance(Duration::from_millis(200));
    let committed = txn::fetch(&mut node, c, 0, true);
    assert_eq!(values(&committed).len(), 2);

    // The committed transaction's produce, retried late (v12 and v9): refused as a
    // fenced epoch, never written into the next transaction.
    for version in [12, 9] {
        let retry = ((pid, epoch0), 0, 0);
        assert_eq!(
            txn::produce_at(&mut node, c, version, retry, &["a1", "a2"]),
            47,
            "INVALID_PRODUCER_EPOCH (Produce v{version})"
        );
    }
    // The EndTxn retried (its answer lost): answered again with the same epoch.
    let again = txn::end_at(&mut node, c, 5, (pid, epoch0), true);
    assert_eq!((again.error_code, again.producer_epoch), (0, epoch1));

    // The next transaction (epoch1, sequences from 0) aborts: the epoch moves again.
    assert_eq!(
        txn::produce_at(&mut node, c, 12, ((pid, epoch1), 0, 0), &["b1"]),
        0
    );
    // Its offsets join without AddOffsetsToTxn (TxnOffsetCommit v5).
    assert_eq!(txn::commit_offsets_v5(&mut node, c, (pid, epoch1)), vec![0]);
    let described = txn::describe(&mut node, c);
    assert!(
        described.contains(&"__consumer_offsets".to_string()) && described.contains(&"t".to_string()),
        "{described:?}"
    );
    let ended = txn::end_at(&mut node, c, 5, (pid, epoch1), false);
    assert_eq!((ended.error_code, ended.producer_epoch), (0, epoch1 + 1));
    node.advance(Duration::from_millis(200));
    let response = txn::fetch(&mut node, c, 0, true);
    let (lso, hwm, aborted) = txn::stable(&response);
    assert_eq!(lso, hwm);
    let got = values(&response);
    let b1 = got.iter().find(|(_, v)| v == "b1").map(|(offset, _)| *offset);
    assert_eq!(
        aborted,
        vec![(pid, b1.unwrap())],
        "the aborted transaction is listed (the client drops its records)"
    );
    assert_eq!(got.len(), 3, "the two committed records and the aborted one");
    assert!(node.closed.is_empty(), "connections closed: {:?}", node.closed);
}

/// TRANSACTION_ABORTABLE (KIP-890, error 120) goes to the request versions that know
/// it, where the transaction can only be aborted: a produce verification of a
/// partition not in the transaction (Produce v11; v10 and older get INVALID_TXN_STATE),
/// and a transaction protocol v2 produce naming the epoch a timeout's abort bumped
/// (Produce v12; the EndTxn v5 abort with that epoch then gives the next epoch). A v1
/// client in that spot is fenced as before (Produce v11 and AddPartitionsToTxn v3 get
/// INVALID_PRODUCER_EPOCH).
#[test]
fn transaction_abortable_goes_to_the_versions_that_know_it() {
    const TRANSACTION_ABORTABLE: i16 = 120;
    let (mut node, c) = txn_node();
    let init = txn::init(&mut node, c);
    let producer = (init.producer_id.0, init.producer_epoch);
    for (version, code) in [(9, 48), (10, 48), (11, TRANSACTION_ABORTABLE)] {
        assert_eq!(
            txn::produce_at(&mut node, c, version, (producer, 1, 0), &["stray"]),
            code,
            "a partition never added, Produce v{version}"
        );
    }

    // A v2 producer stalls past its timeout: the coordinator aborts the transaction.
    let init = txn::init_with_timeout(&mut node, c, 1_000);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert_eq!(init.error_code, 0);
    assert_eq!(txn::produce_at(&mut node, c, 12, ((pid, epoch), 0, 0), &["a"]), 0);
    node.advance(Duration::from_millis(3_000));
    assert_eq!(
        txn::produce_at(&mut node, c, 12, ((pid, epoch), 0, 1), &["b"]),
        TRANSACTION_ABORTABLE,
        "Produce v12 after the timeout's abort"
    );
    assert_eq!(
        txn::produce_at(&mut node, c, 11, ((pid, epoch), 0, 1), &["b"]),
        47,
        "Produce v11 (a v1 client) is fenced"
    );
    assert_eq!(
        txn::add_at(&mut node, c, 3, (pid, epoch), &[2]),
        vec![47],
        "AddPartitionsToTxn v3 (a v1 client) is fenced"
    );
    // The producer aborts with the epoch it has and goes on with the next one.
    let ended = txn::end_at(&mut node, c, 5, (pid, epoch), false);
    assert_eq!(
        (ended.error_code, ended.producer_id.0, ended.producer_epoch),
        (0, pid, epoch + 1)
    );
    assert_eq!(
        txn::produce_at(&mut node, c, 12, ((pid, epoch + 1), 0, 0), &["c"]),
        0
    );
    assert_eq!(txn::end_at(&mut node, c, 5, (pid, epoch + 1), true).error_code, 0);
    node.advance(Duration::from_millis(200));
    let committed = txn::fetch(&mut node, c, 0, true);
    let got = values(&committed);
    let texts: Vec<&str> = got.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(texts, vec!["a", "c"], "b was never written");
    let (lso, hwm, aborted) = txn::stable(&committed);
    assert_eq!(lso, hwm);
    assert_eq!(
        aborted,
        vec![(pid, got[0].0)],
        "the timed-out transaction (a) is listed aborted; the client drops it"
    );
    assert!(node.closed.is_empty(), "connections closed: {:?}", node.closed);
}

/// Every advertised version of the partition APIs is answered with a frame the client
/// decodes — never a closed connection. (A ListOffsets v1-3 answer once carried the v4+
/// leader epoch, which made it unencodable, and the broker closed the connection.)
#[test]
fn every_version_of_the_partition_apis_is_answered() {
    let mut node = Node::start(BTreeMap::new(), BTreeMap::new(), None);
    let conn = node.connect(0, 1);
    assert_eq!(
        create_topic(&mut node, conn, "versions", 2).topics[0].error_code,
        0
    );
    node.advance(Duration::from_millis(500));

    for version in 3..=12 {
        let records = vec![NewRecord::value("v", 1_700_000_000_000)];
        let mut p = m::produce_request::PartitionProduceData::default();
        p.index = (version % 2) as i32;
        p.records = Some(build_batch(&records, BatchOptions::default()));
        let mut t = m::produce_request::TopicProduceData::default();
        t.name = topic("versions");
        t.partition_data = vec![p];
        let mut request = m::ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = 5000;
        request.topic_data = vec![t];
        let r: m::ProduceResponse = node.call(0, conn, Request::Produce(request), version);
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, 0,
            "Produce v{version}"
        );
    }
    for version in 1..=7 {
        let mut request = m::ListOffsetsRequest::default();
        request.replica_id = m::BrokerId(-1);
        let mut t = m::list_offsets_request::ListOffsetsTopic::default();
        t.name = topic("versions");
        t.partitions = (0..2)
            .map(|index| {
                let mut p = m::list_offsets_request::ListOffsetsPartition::default();
                p.partition_index = index;
                p.timestamp = -1;
                p
            })
            .collect();
        request.topics = vec![t];
        let r: m::ListOffsetsResponse = node.call(0, conn, Request::ListOffsets(request), version);
        for p in &r.topics[0].partitions {
            assert_eq!(p.error_code, 0, "ListOffsets v{version}");
            assert!(p.offset > 0, "ListOffsets v{version}: {p:?}");
        }
    }
    for version in 4..=12 {
        let r: m::FetchResponse = node.call(0, conn, fetch_request("versions", 1, 0, 0), version);
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "Fetch v{version}");
        assert!(p.high_watermark > 0, "Fetch v{version}: {p:?}");
    }
    for version in 0..=12 {
        let mut request = m::MetadataRequest::default();
        let mut t = m::metadata_request::MetadataRequestTopic::default();
        t.name = Some(topic("versions"));
        request.topics = Some(vec![t]);
        let r: m::MetadataResponse = node.call(0, conn, Request::Metadata(request), version);
        assert_eq!(r.topics[0].error_code, 0, "Metadata v{version}");
        assert_eq!(r.topics[0].partitions.len(), 2, "Metadata v{version}");
    }
    for version in 2..=4 {
        let mut request = m::OffsetForLeaderEpochRequest::default();
        let mut t = m::offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
        t.topic = topic("versions");
        let mut p = m::offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
        p.partition = 0;
        p.leader_epoch = 1;
        t.partitions = vec![p];
        request.topics = vec![t];
        let r: m::OffsetForLeaderEpochResponse =
            node.call(0, conn, Request::OffsetForLeaderEpoch(request), version);
        assert_eq!(
            r.topics[0].partitions[0].error_code, 0,
            "OffsetForLeaderEpoch v{version}"
        );
    }
    assert!(node.closed.is_empty(), "connections closed: {:?}", node.closed);
}

/// A node with tiered storage on (short lags) and the topic `tiered` (1 partition,
/// remote write and read, 1 MiB segments and local target).
fn tiered_node() -> Node {
    tiered_node_over(BTreeMap::new(), &[])
}

/// [`tiered_node`] over `bucket`, with more configs for the tiered topic; another topic
/// is created first, so the tiered one's revision differs from a fresh node's.
fn tiered_node_over(bucket: BTreeMap<String, Bytes>, extra: &[(&str, &str)]) -> Node {
    tiered_node_with(Duration::from_millis(200), bucket, extra)
}

/// [`tiered_node_over`] with the archivers' `store_request_lifetime`.
fn tiered_node_with(
    store_request_lifetime: Duration,
    bucket: BTreeMap<String, Bytes>,
    extra: &[(&str, &str)],
) -> Node {
    let tier = oxbow_core::broker::partitions::TierSettings {
        enabled: true,
        base: oxbow_core::tier::TierConfig {
            upload_lag: Duration::from_millis(100),
            store_request_lifetime,
            housekeeping_interval: Duration::from_millis(500),
            ..oxbow_core::tier::TierConfig::default()
        },
        read_cache: oxbow_core::tier::read::ReadCacheConfig {
            chunk_size_bytes: 64 * 1024,
            max_chunk_bytes: 4 * 1024 * 1024,
            ..oxbow_core::tier::read::ReadCacheConfig::default()
        },
    };
    let mut node = Node::start_tiered(BTreeMap::new(), BTreeMap::new(), None, (tier, bucket));
    let conn = node.connect(0, 1);
    if !extra.is_empty() {
        let created = create_topic(&mut node, conn, "other", 1);
        assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    }
    let mut creatable = m::create_topics_request::CreatableTopic::default();
    creatable.name = topic("tiered");
    creatable.num_partitions = 1;
    creatable.replication_factor = -1;
    for (key, value) in [
        ("oxbow.remote.write", "true"),
        ("oxbow.remote.read", "true"),
        ("retention.local.target.bytes", "1048576"),
        ("segment.bytes", "1048576"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        let mut config = m::create_topics_request::CreatableTopicConfig::default();
        config.name = s(key);
        config.value = Some(s(value));
        creatable.configs.push(config);
    }
    let mut request = m::CreateTopicsRequest::default();
    request.topics = vec![creatable];
    request.timeout_ms = 5000;
    let created: m::CreateTopicsResponse = node.call(0, conn, Request::CreateTopics(request), 7);
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    node.advance(Duration::from_millis(500));
    node
}

/// A tiered topic on the in-memory node: produce past the local target, the archiver
/// uploads through the broker's store effects, local segments go once the manifest is
/// in the bucket, and Fetch from offset 0 (below the local start) and ListOffsets by
/// timestamp and for the earliest offset are answered from the bucket.
#[test]
fn a_tiered_topic_is_offloaded_and_read_back_from_offset_zero() {
    let mut node = tiered_node();
    let shard = oxbow_core::broker::shard_for("tiered", 0, SHARDS).0 as usize;
    let pconn = node.connect(shard, 2);
    let expected = produce_rounds(&mut node, shard, pconn, 0..40);
    node.advance(Duration::from_secs(3));
    assert!(
        node.bucket.keys().any(|k| k.ends_with("/manifest")),
        "manifest uploaded"
    );
    let local_start = node
        .disks
        .iter()
        .find(|(k, _)| k.topic == "tiered")
        .map(|(_, disk)| recover(disk).start_offset())
        .unwrap();
    assert!(local_start > 0, "local segments went (local start {local_start})");

    // ListOffsets: the earliest offset is the bucket's, 0.
    let mut p = m::list_offsets_request::ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -2;
    let mut t = m::list_offsets_request::ListOffsetsTopic::default();
    t.name = topic("tiered");
    t.partitions = vec![p];
    let mut request = m::ListOffsetsRequest::default();
    request.replica_id = m::BrokerId(-1);
    request.topics = vec![t];
    let listed: m::ListOffsetsResponse = node.call(shard, pconn, Request::ListOffsets(request.clone()), 7);
    assert_eq!(listed.topics[0].partitions[0].offset, 0);
    // By timestamp: every record carries the same one; the first batch reaching it is
    // in the bucket (offset 0 is the leader's control batch, stamped later).
    let reads_before = node.shards[shard].tier_stats().remote_reads;
    request.topics[0].partitions[0].timestamp = 1_700_000_000_000;
    let listed: m::ListOffsetsResponse = node.call(shard, pconn, Request::ListOffsets(request), 7);
    let found = listed.topics[0].partitions[0].offset;
    assert!(
        (0..=1).contains(&found) && found < local_start,
        "timestamp lookup: {found}"
    );
    assert_eq!(node.shards[shard].tier_stats().remote_reads, reads_before + 1);

    // Fetch everything from offset 0, through the bucket below the local start.
    let got = fetch_all(&mut node, shard, pconn, expected.len());
    assert!(got == expected, "every record back, in order");

    // A restart (local log starting past 0, the bucket kept): the new leader's archiver
    // loads the manifest and the same reads work.
    let mut restarted = restart_tiered(&node);
    let conn = restarted.connect(shard, 3);
    let stats = restarted.shards[shard].tier_stats();
    assert_eq!(
        (stats.archivers, stats.archiver.objects_deleted),
        (1, 0),
        "{stats:?}"
    );
    let got = fetch_all(&mut restarted, shard, conn, expected.len());
    assert!(got == expected, "every record back after a restart");
}

/// The manifest in the bucket of `tiered`/0: its next offset.
fn bucket_manifest_next(node: &Node) -> Option<i64> {
    let (key, bytes) = node
        .bucket
        .iter()
        .find(|(k, _)| k.starts_with("tiered/") && k.ends_with("/manifest"))?;
    let dir = key.strip_prefix("tiered/")?.strip_suffix("/manifest")?;
    let path = oxbow_core::tier::PartitionPath {
        topic: "tiered".to_string(),
        partition: 0,
        revision: dir.strip_prefix("0_")?.parse().ok()?,
    };
    oxbow_core::tier::PartitionManifest::decode(&path, bytes)
        .ok()?
        .next_offset()
}

/// The first leader of a new tiered partition is the first writer of its prefix: its
/// first manifest is put at once, not after `store_request_lifetime` (a minute here).
/// After a restart the new leader (a new term) finds that manifest, so a put of the
/// old leader's may still land: its own first manifest put waits the lifetime out.
#[test]
fn only_the_first_leader_of_a_new_partition_puts_its_manifest_without_waiting() {
    let lifetime = Duration::from_secs(60);
    let mut node = tiered_node_with(lifetime, BTreeMap::new(), &[]);
    let shard = oxbow_core::broker::shard_for("tiered", 0, SHARDS).0 as usize;
    let conn = node.connect(shard, 2);
    produce_rounds(&mut node, shard, conn, 0..20);
    node.advance(Duration::from_secs(3));
    let first = bucket_manifest_next(&node).expect("the first leader's manifest, at once");
    assert!(first > 1_000, "manifest next offset {first}");

    let mut restarted = restart_tiered(&node);
    let conn = restarted.connect(shard, 3);
    produce_rounds(&mut restarted, shard, conn, 20..40);
    restarted.advance(Duration::from_secs(3));
    assert_eq!(
        bucket_manifest_next(&restarted),
        Some(first),
        "a later leader's first put waits"
    );
    restarted.advance(lifetime);
    assert!(
        bucket_manifest_next(&restarted).is_some_and(|next| next > first + 1_000),
        "and is put after the lifetime"
    );
}

/// A topic config change restarts the partition's archiver within the same term; the
/// new archiver numbers its store operations from 0 again. An answer to the old
/// archiver's operation arriving late must not be taken for the new one's: here a
/// stale "not found" under the number of the new archiver's manifest load would make it
/// believe the prefix empty and put a manifest that forgets the offloaded segments —
/// whose local copies are gone.
#[test]
fn a_late_answer_to_a_replaced_archiver_is_not_credited_to_its_successor() {
    let mut node = tiered_node();
    let shard = oxbow_core::broker::shard_for("tiered", 0, SHARDS).0 as usize;
    let conn = node.connect(shard, 2);
    let mut expected = produce_rounds(&mut node, shard, conn, 0..30);
    node.advance(Duration::from_secs(3));
    assert!(tiered_log_start(&node).0 > 0, "local segments offloaded and gone");

    // The archiver's next operations stay in flight.
    node.hold_store = true;
    expected.extend(produce_rounds(&mut node, shard, conn, 30..32));
    node.advance(Duration::from_secs(1));
    let stale_owner = node
        .held_store
        .iter()
        .find_map(|(_, e)| match e {
            BrokerEffect::Store {
                owner: owner @ StoreOwner::Archiver { .. },
                ..
            } => Some(*owner),
            _ => None,
        })
        .expect("an operation of the first archiver in flight");

    // A config change restarts the archiver in the same term.
    let mut c = m::incremental_alter_configs_request::AlterableConfig::default();
    c.name = s("retention.local.target.bytes");
    c.config_operation = 0;
    c.value = Some(s("2097152"));
    let mut r = m::incremental_alter_configs_request::AlterConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = s("tiered");
    r.configs = vec![c];
    let mut request = m::IncrementalAlterConfigsRequest::default();
    request.resources = vec![r];
    let altered: m::IncrementalAlterConfigsResponse =
        node.call(shard, conn, Request::IncrementalAlterConfigs(request), 1);
    assert_eq!(altered.responses[0].error_code, 0);
    node.advance(Duration::from_millis(200));
    let (key, new_owner, load_op) = node
        .held_store
        .iter()
        .find_map(|(_, e)| match e {
            BrokerEffect::Store {
                key,
                owner: owner @ StoreOwner::Archiver { .. },
                effect,
            } if *owner != stale_owner => Some((key.clone(), *owner, effect.op())),
            _ => None,
        })
        .expect("the new archiver's first operation (its manifest load)");
    assert_ne!(new_owner, stale_owner);

    // A late "not found" for the old archiver's operation of the same number.
    let now = node.now;
    node.shards[shard].handle(
        now,
        BrokerInput::Store {
            key,
            owner: stale_owner,
            completion: StoreCompletion {
                op: load_op,
                result: Err(StoreError::NotFound),
            },
        },
    );
    node.run();

    // Everything held is answered now (the old archiver's answers are dropped).
    node.hold_store = false;
    for (shard, effect) in std::mem::take(&mut node.held_store) {
        node.execute(shard, effect);
    }
    node.run();
    expected.extend(produce_rounds(&mut node, shard, conn, 32..40));
    node.advance(Duration::from_secs(5));
    let got = fetch_all(&mut node, shard, conn, expected.len());
    assert!(got == expected, "every record back from offset 0, in order");
}

/// Values of partition 0 of `tiered` from offset 0 until `count` are read.
/// Produces rounds of 100 records of about 1 KB to `tiered`/0; returns the values.
fn produce_rounds(
    node: &mut Node,
    shard: usize,
    conn: ConnectionId,
    rounds: std::ops::Range<usize>,
) -> Vec<String> {
    let value = |i: usize| format!("{i:06}-{}", "v".repeat(1_000));
    let mut produced = Vec::new();
    for round in rounds {
        let values: Vec<String> = (round * 100..(round + 1) * 100).map(value).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let response = produce(node, shard, conn, "tiered", 0, &refs, -1).unwrap();
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        produced.extend(values);
        node.advance(Duration::from_millis(50));
    }
    produced
}

/// Topic recovery: a new node with no data over the bucket of a tiered topic creates it
/// with `oxbow.remote.recovery=true` (under another revision than the bucket's): the
/// partition starts from the manifest, Fetch from offset 0 returns every record,
/// produce continues after them, and a restart keeps all of it.
#[test]
fn a_topic_is_recovered_from_the_bucket_into_an_empty_node() {
    let mut node = tiered_node();
    let shard = oxbow_core::broker::shard_for("tiered", 0, SHARDS).0 as usize;
    let conn = node.connect(shard, 2);
    let mut expected = produce_rounds(&mut node, shard, conn, 0..20);
    node.advance(Duration::from_secs(3));
    let bucket = node.bucket.clone();

    let mut fresh = tiered_node_over(bucket, &[("oxbow.remote.recovery", "true")]);
    fresh.advance(Duration::from_secs(1));
    let stats = fresh.shards[shard].tier_stats();
    assert_eq!((stats.partitions_recovered, stats.recovery_errors), (1, 0));
    let conn = fresh.connect(shard, 3);
    let got = fetch_all(&mut fresh, shard, conn, expected.len());
    assert!(got == expected, "every record of the bucket back, in order");
    expected.extend(produce_rounds(&mut fresh, shard, conn, 20..25));
    let got = fetch_all(&mut fresh, shard, conn, expected.len());
    assert!(got == expected, "records produced after the recovery follow");

    // A restart keeps the recovered prefix (tier state file) and the log start.
    fresh.advance(Duration::from_secs(3));
    let mut restarted = restart_tiered(&fresh);
    let conn = restarted.connect(shard, 4);
    let got = fetch_all(&mut restarted, shard, conn, expected.len());
    assert!(
        got == expected,
        "every record back after the recovered node restarts"
    );
}

/// The local log start and revision of `tiered`/0 on `node`.
fn tiered_log_start(node: &Node) -> (i64, i64) {
    node.disks
        .iter()
        .find(|(k, _)| k.topic == "tiered")
        .map(|(k, disk)| (recover(disk).start_offset(), k.revision))
        .unwrap()
}

/// Every replica of a recovered partition starts at the same offset, even one that
/// reads the manifest only after the incarnation's first leader uploaded more and
/// rewrote it: that leader records where it started in the manifest. (A second fresh
/// node over the bucket plays the late replica: same topic, same revision.)
#[test]
fn a_late_replica_of_a_recovered_partition_starts_where_the_first_one_did() {
    let mut node = tiered_node();
    let shard = oxbow_core::broker::shard_for("tiered", 0, SHARDS).0 as usize;
    let conn = node.connect(shard, 2);
    produce_rounds(&mut node, shard, conn, 0..20);
    node.advance(Duration::from_secs(3));

    let mut first = tiered_node_over(node.bucket.clone(), &[("oxbow.remote.recovery", "true")]);
    first.advance(Duration::from_secs(1));
    let (start, revision) = tiered_log_start(&first);
    assert!(start > 1_000, "recovered at {start}");
    let conn = first.connect(shard, 3);
    produce_rounds(&mut first, shard, conn, 20..30);
    first.advance(Duration::from_secs(3));
    let rewritten = bucket_manifest_next(&first).unwrap();
    assert!(
        rewritten > start + 500,
        "the first leader uploaded more: {rewritten}"
    );

    let mut late = tiered_node_over(first.bucket.clone(), &[("oxbow.remote.recovery", "true")]);
    late.advance(Duration::from_secs(1));
    assert_eq!(
        tiered_log_start(&late),
        (start, revision),
        "the late replica starts where the first did"
    );
}

/// A tiered node restarted after a crash of its disks (unsynced data lost), over the
/// same bucket; run for a second.
fn restart_tiered(node: &Node) -> Node {
    let disks: BTreeMap<PartitionKey, MemDisk> = node
        .disks
        .iter()
        .map(|(k, d)| {
            let mut d = d.clone();
            d.crash(0);
            (k.clone(), d)
        })
        .collect();
    let tier = node.shards[0].tier_settings();
    let mut restarted = Node::start_tiered(
        disks,
        node.hard_states.clone(),
        node.metadata_file.clone(),
        (tier, node.bucket.clone()),
    );
    restarted.advance(Duration::from_secs(1));
    restarted
}

fn fetch_all(node: &mut Node, shard: usize, conn: ConnectionId, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut offset = 0;
    while got.len() < count {
        let response: m::FetchResponse = node.call(shard, conn, fetch_request("tiered", 0, offset, 0), 12);
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0, "fetch at {offset}");
        assert_eq!(partition.log_start_offset, 0);
        let records = partition.records.clone().unwrap_or_default();
        let next = oxbow_core::log::batch::iter_batches(&records)
            .map(|(_, h)| h.base_offset + i64::from(h.last_offset_delta) + 1)
            .max();
        assert!(
            next.is_some_and(|n| n > offset),
            "fetch at {offset} made no progress"
        );
        for (at, value) in values(&response) {
            if at >= offset {
                got.push(value);
            }
        }
        offset = next.unwrap_or(offset);
    }
    got
}

/// The store throttles everything for a while: produce is still acknowledged, nothing
/// is deleted locally, the archiver retries with backoff (counted); once the store
/// answers again, the data is offloaded and read back from offset 0.
#[test]
fn a_throttling_store_delays_offload_but_never_produce() {
    let mut node = tiered_node();
    node.store_throttling = true;
    let shard = oxbow_core::broker::shard_for("tiered", 0, SHARDS).0 as usize;
    let pconn = node.connect(shard, 2);
    let value = |i: usize| format!("{i:06}-{}", "v".repeat(1_000));
    let mut expected = Vec::new();
    for round in 0..30 {
        let values: Vec<String> = (round * 100..(round + 1) * 100).map(value).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let response = produce(&mut node, shard, pconn, "tiered", 0, &refs, -1).unwrap();
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        expected.extend(values);
        node.advance(Duration::from_millis(50));
    }
    node.advance(Duration::from_secs(3));
    let local_start = |node: &Node| {
        node.disks
            .iter()
            .find(|(k, _)| k.topic == "tiered")
            .map(|(_, disk)| recover(disk).start_offset())
            .unwrap()
    };
    assert_eq!(local_start(&node), 0, "nothing deleted while the store throttles");
    let stats = node.shards[shard].tier_stats();
    assert!(stats.archiver.throttled > 0, "{stats:?}");
    assert!(stats.backlog.not_durable_offsets > 0, "{stats:?}");

    node.store_throttling = false;
    node.advance(Duration::from_secs(15));
    assert!(local_start(&node) > 0, "offloaded once the store answers");
    let got = fetch_all(&mut node, shard, pconn, expected.len());
    assert!(got == expected, "every record back, in order");
}

#[test]
fn idle_partitions_write_nothing_and_wake_rarely() {
    const PARTITIONS: i32 = 16;
    let mut node = Node::start(BTreeMap::new(), BTreeMap::new(), None);
    let c0 = node.connect(0, 1);
    let created = create_topic(&mut node, c0, "idle", PARTITIONS);
    assert_eq!(created.topics[0].error_code, 0);
    // Settle: leaders elected, their no-ops durable, first checkpoints and snapshots.
    node.advance(Duration::from_secs(120));
    let before = node.disk_effects.clone();
    let wakeups_before = node.wakeups;
    node.advance(Duration::from_secs(600));
    let after = node.disk_effects.clone();
    let wakeups = node.wakeups - wakeups_before;
    assert_eq!(before, after, "an idle partition touches no file");
    assert!(
        before.contains_key("WriteCheckpoint"),
        "the no-ops were recorded: {before:?}"
    );
    // Lone leaders wake once per election timeout (1.5 s), retention every 10 s:
    // fewer than one wake-up per partition and second (a 150 ms heartbeat tick would
    // be ten times that).
    assert!(
        wakeups < 600 * PARTITIONS as u64,
        "{wakeups} wake-ups in 600 idle seconds"
    );
}
