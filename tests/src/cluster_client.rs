//! What cluster tests do through real clients: an acks=all librdkafka producer that
//! records its delivery reports, topic creation while a cluster forms, leaders and
//! in-sync replicas from Metadata, reading partitions back (through librdkafka, or
//! batch by batch with control records through [`read_log`]) and the checks that every
//! acknowledged message is there, once, at its offset.

use oxbow_runtime_real::client::KafkaClient;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A producer context that records every delivery report.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// (partition, offset, value) of every acknowledged message.
    pub acked: Mutex<Vec<(i32, i64, String)>>,
    /// Why each failed message failed.
    pub failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.acked
                    .lock()
                    .unwrap()
                    .push((m.partition(), m.offset(), value));
            }
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

/// An idempotent acks=all producer whose messages time out after
/// `message_timeout_ms`.
pub fn producer(brokers: &str, message_timeout_ms: u32) -> BaseProducer<Deliveries> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", message_timeout_ms.to_string())
        .set("socket.timeout.ms", "3000")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create_with_context(Deliveries::default())
        .unwrap()
}

/// An admin client.
pub fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// Creates a topic, retrying while the cluster is still forming (no controller yet,
/// brokers not all registered). A fresh admin client per attempt: one that started
/// before the controller was known waits for its next metadata refresh.
pub fn create_topic(brokers: &str, name: &str, partitions: i32, replicas: i32) {
    create_new_topic(
        brokers,
        &NewTopic::new(name, partitions, TopicReplication::Fixed(replicas)),
    );
}

/// [`create_topic`] with the topic's configs.
pub fn create_new_topic(brokers: &str, topic: &NewTopic<'_>) {
    let name = topic.name;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let admin = admin(brokers);
        let result = futures_executor::block_on(admin.create_topics([topic], &options));
        match result.as_ref().map(|r| r.first().cloned()) {
            Ok(Some(Ok(_))) => return,
            other if Instant::now() < deadline => {
                eprintln!("create {name}: {other:?}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            other => panic!("create {name}: {other:?}"),
        }
    }
}

/// Waits until every broker is registered (all listed in Metadata).
pub fn wait_for_brokers(brokers: &str, count: usize) {
    wait_until("every broker registered", Duration::from_secs(60), || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok_and(|m| m.brokers().len() == count)
    });
}

/// Sends `count` messages tagged `tag` and serves delivery reports meanwhile.
pub fn send(producer: &BaseProducer<Deliveries>, topic: &str, tag: &str, from: usize, count: usize) {
    for i in from..from + count {
        let value = format!("{tag}-{i}");
        let key = format!("k{}", i % 17);
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
}

/// The leader of `topic`/`partition` as the cluster reports it.
pub fn leader_of(brokers: &str, topic: &str, partition: i32) -> Option<i32> {
    partition_state(brokers, topic, partition)
        .map(|(leader, ..)| leader)
        .filter(|leader| *leader >= 0)
}

/// How many partitions of all topics (internal ones too) have a leader, as the
/// cluster's metadata reports it; `None` if the metadata could not be fetched.
pub fn partitions_with_leader(brokers: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).ok()?;
    let led = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .filter(|p| p.leader() >= 0)
        .count();
    Some(led)
}

/// (leader, replicas, in-sync replicas) of a partition as the cluster reports it.
pub fn partition_state(brokers: &str, topic: &str, partition: i32) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    let p = t.partitions().iter().find(|p| p.id() == partition)?;
    Some((p.leader(), p.replicas().to_vec(), p.isr().to_vec()))
}

/// A partition's (low, high) watermarks, retried for a minute while a freshly
/// (re)started broker or cluster settles. Each retry asks with a new client:
/// librdkafka's watermark query answers from a metadata cache that, once it holds an
/// answer from before the partition was served, it does not refresh (seen as
/// "UnknownPartition" for a whole minute after a broker restart).
pub fn watermarks(brokers: &str, topic: &str, partition: i32) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok(marks) => return marks,
            Err(e) if Instant::now() < deadline => {
                eprintln!("watermarks {topic}/{partition}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("watermarks {topic}/{partition}: {e}"),
        }
    }
}

/// Reads every partition from the beginning to its high watermark: partition →
/// [(offset, value)].
pub fn read_all(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<(i64, String)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "oxbow-cluster-tests")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        let (low, high) = watermarks(brokers, topic, p);
        if high > low {
            remaining.insert(p, high);
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !remaining.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                out.entry(m.partition()).or_default().push((m.offset(), value));
            }
            // librdkafka reports transient fetch errors (a leader moving, a broker
            // coming back) and retries by itself; what was read is still checked.
            Some(Err(e)) => eprintln!("read {topic}: {e}; the consumer retries"),
            None => {}
        }
        let position = consumer.position().unwrap();
        remaining.retain(|p, high| {
            let at = position.find_partition(topic, *p).map(|e| e.offset());
            !matches!(at, Some(Offset::Offset(o)) if o >= *high)
        });
    }
    if !remaining.is_empty() {
        let position = consumer.position().ok();
        let now: Vec<_> = remaining
            .keys()
            .map(|p| (p, consumer.fetch_watermarks(topic, *p, Duration::from_secs(5))))
            .collect();
        panic!(
            "partitions not read to their end: {remaining:?} (position {position:?}, watermarks now {now:?}, read {:?})",
            out.iter().map(|(p, r)| (p, r.len(), r.last().map(|(o, _)| *o))).collect::<Vec<_>>()
        );
    }
    out
}

/// Every acknowledged message is read back at its offset, once; offsets only grow.
pub fn check_read_back(acked: &[(i32, i64, String)], read: &BTreeMap<i32, Vec<(i64, String)>>) {
    let mut by_offset: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    let mut seen_values: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
    for (partition, records) in read {
        let mut last = -1;
        for (offset, value) in records {
            assert!(*offset > last, "offsets grow in partition {partition}");
            last = *offset;
            by_offset.insert((*partition, *offset), value);
            if let Some(before) = seen_values.insert(value, (*partition, *offset)) {
                panic!("{value} stored twice: at {before:?} and {partition}/{offset}");
            }
        }
    }
    for (partition, offset, value) in acked {
        assert_eq!(
            by_offset.get(&(*partition, *offset)).copied(),
            Some(value.as_str()),
            "acknowledged {value} at {partition}/{offset}"
        );
    }
}

/// The admin listener's `/metrics` page.
pub fn metrics_page(admin_addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(admin_addr) else {
        return String::new();
    };
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {admin_addr}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let mut page = String::new();
    let _ = stream.read_to_string(&mut page);
    page
}

/// The sum of a metric's samples on a page.
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `done` every 200 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many of `producer`'s messages were acknowledged so far.
pub fn acked_count(producer: &BaseProducer<Deliveries>) -> usize {
    producer.context().acked.lock().unwrap().len()
}

/// One record of a partition's log as stored: data or control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its offset.
    pub offset: i64,
    /// A control record (a Raft no-op or configuration, a transaction marker).
    pub control: bool,
    /// Its value, as text.
    pub value: String,
}

/// Reads `topic`/`partition` from offset 0 to its high watermark from the broker at
/// `leader_addr` (its leader), control records included, with raw Fetch requests.
/// Fails if the broker cannot be reached or answers with an error (it is not the
/// leader any more); panics on records that do not decode.
pub fn read_log(leader_addr: &str, topic: &str, partition: i32) -> Result<Vec<LogRecord>, String> {
    use kafka_protocol::messages::{self as m, ApiKey, BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::RecordBatchDecoder;

    let mut client = KafkaClient::connect(leader_addr).map_err(|e| e.to_string())?;
    let mut out: Vec<LogRecord> = Vec::new();
    let mut position = 0i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut wanted = m::fetch_request::FetchPartition::default();
        wanted.partition = partition;
        wanted.fetch_offset = position;
        wanted.partition_max_bytes = 1024 * 1024;
        wanted.current_leader_epoch = -1;
        wanted.last_fetched_epoch = -1;
        wanted.log_start_offset = -1;
        let mut wanted_topic = m::fetch_request::FetchTopic::default();
        wanted_topic.topic = TopicName(StrBytes::from_string(topic.to_string()));
        wanted_topic.partitions.push(wanted);
        let mut request = m::FetchRequest::default();
        request.replica_id = BrokerId(-1);
        request.max_wait_ms = 100;
        request.min_bytes = 1;
        request.max_bytes = 16 * 1024 * 1024;
        request.topics.push(wanted_topic);
        let response: m::FetchResponse = client
            .call(ApiKey::Fetch, 12, &request)
            .map_err(|e| e.to_string())?;
        let data = response
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| format!("no {topic}/{partition} in the fetch response"))?;
        if data.error_code != 0 {
            return Err(format!(
                "fetch {topic}/{partition} at {position}: error {}",
                data.error_code
            ));
        }
        let mut records = data.records.unwrap_or_default();
        while !records.is_empty() {
            let set = RecordBatchDecoder::decode(&mut records).expect("stored batches decode");
            let from = position; // a batch may start before the offset asked for
            for record in set.records.into_iter().filter(|r| r.offset >= from) {
                position = record.offset + 1;
                let value = record.value.as_deref().map(String::from_utf8_lossy);
                out.push(LogRecord {
                    offset: record.offset,
                    control: record.control,
                    value: value.unwrap_or_default().into_owned(),
                });
            }
        }
        if position >= data.high_watermark {
            return Ok(out);
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition} not read to its high watermark {} (at {position})",
            data.high_watermark
        );
    }
}

/// A partition's log against what was acknowledged for it: offsets contiguous from 0
/// (every offset a data or a control record), every acknowledged value at its offset,
/// no value stored twice. Returns the data values in offset order.
pub fn check_log(acked: &[(i64, String)], log: &[LogRecord]) -> Vec<String> {
    for (expected, record) in (0i64..).zip(log) {
        assert_eq!(record.offset, expected, "offsets contiguous: {record:?}");
    }
    let data: BTreeMap<i64, &str> = log
        .iter()
        .filter(|r| !r.control)
        .map(|r| (r.offset, r.value.as_str()))
        .collect();
    let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
    for (offset, value) in &data {
        if let Some(before) = seen.insert(value, *offset) {
            panic!("{value} stored twice: at {before} and {offset}");
        }
    }
    for (offset, value) in acked {
        assert_eq!(
            data.get(offset).copied(),
            Some(value.as_str()),
            "acknowledged {value} at offset {offset}"
        );
    }
    data.into_values().map(str::to_string).collect()
}
