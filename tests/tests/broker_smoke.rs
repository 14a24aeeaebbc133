//! Smoke tests of `oxbow start`'s broker over real sockets.
//!
//! The node runs in-process ([`oxbow_runtime_real::node::start`]) on its own threads,
//! exactly as `oxbow start` runs it (same shards, io_uring reactors, storage, admin
//! server) minus the signal handling: a test package cannot rely on another package's
//! binary being built, while the library is always there. Ports are 0 (the kernel
//! picks free ones; the node reports them) and the data directory is a temp dir.
//! Requests are encoded as a client would, with `kafka-protocol`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use oxbow_core::kafka::protocol::messages::{self as m, ApiKey, RequestHeader, ResponseHeader, TopicName};
use oxbow_core::kafka::protocol::protocol::{Decodable, Encodable, StrBytes};
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{self, NodeHandle};
use oxbow_tests::cluster_client::metric_sum;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

fn start_node(data_dir: &Path, shards: u32) -> NodeHandle {
    let mut config = NodeConfig::load(
        None,
        Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            kafka_addr: Some("127.0.0.1:0".to_string()),
            admin_addr: Some("127.0.0.1:0".to_string()),
            ..Overrides::default()
        },
    )
    .unwrap();
    config.node.shards = shards;
    node::start(config).unwrap()
}

struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            stream,
            correlation_id: 0,
        }
    }

    fn call<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, request: &Req) -> Resp {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("oxbow-smoke")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, key.request_header_version(version))
            .unwrap();
        request.encode(&mut payload, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(payload.len() as i32);
        frame.extend_from_slice(&payload);
        self.stream.write_all(&frame).unwrap();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).unwrap();
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        let response = Resp::decode(&mut body, version).unwrap();
        assert!(!body.has_remaining(), "{key:?}: trailing bytes");
        response
    }

    fn api_versions(&mut self) -> m::ApiVersionsResponse {
        let request = m::ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("oxbow-smoke"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        self.call(ApiKey::ApiVersions, 3, &request)
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

#[test]
fn api_versions_over_tcp_and_garbage_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), 2);
    let addr = node.kafka_addr();
    // Several connections: SO_REUSEPORT spreads them over both shards.
    let mut clients: Vec<Client> = (0..6).map(|_| Client::connect(addr)).collect();
    for client in &mut clients {
        let response = client.api_versions();
        assert_eq!(response.error_code, 0);
        let keys: Vec<i16> = response.api_keys.iter().map(|k| k.api_key).collect();
        assert!(keys.contains(&(ApiKey::Produce as i16)), "{keys:?}");
        assert!(keys.contains(&(ApiKey::Fetch as i16)), "{keys:?}");
    }
    // Garbage: an absurd frame size, then noise. That connection is closed…
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    garbage
        .write_all(b"\x7f\xff\xff\xffthis is not kafka at all")
        .unwrap();
    let mut rest = Vec::new();
    garbage
        .read_to_end(&mut rest)
        .expect("the broker closes a connection that sends an oversized frame");
    // …and everyone else is served as before.
    for client in &mut clients {
        assert_eq!(client.api_versions().error_code, 0);
    }
    // Admin: health and metrics from both shards.
    let (status, body) = http_get(node.admin_addr(), "/v1/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"shards_up\":2"), "{body}");
    let (status, body) = http_get(node.admin_addr(), "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("oxbow_shards_up 2"), "{body}");
    assert!(body.contains("api=\"ApiVersions\""), "{body}");
    assert!(body.contains("oxbow_protocol_errors_total"), "{body}");
    let (status, _) = http_get(node.admin_addr(), "/nope");
    assert_eq!(status, 404);
    node.stop().unwrap();
}

fn create_topic(client: &mut Client, name: &str, partitions: i32) {
    let mut creatable = m::create_topics_request::CreatableTopic::default();
    creatable.name = topic(name);
    creatable.num_partitions = partitions;
    creatable.replication_factor = -1;
    let request = m::CreateTopicsRequest::default()
        .with_topics(vec![creatable])
        .with_timeout_ms(5000);
    let response: m::CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

/// Produces `values` with acks=all, retrying while the partition elects its leader.
fn produce(client: &mut Client, name: &str, partition: i32, values: &[String]) -> i64 {
    let records: Vec<NewRecord> = values
        .iter()
        .map(|v| NewRecord::value(v.clone(), 1_700_000_000_000))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut p = m::produce_request::PartitionProduceData::default();
        p.index = partition;
        p.records = Some(build_batch(&records, BatchOptions::default()));
        let mut t = m::produce_request::TopicProduceData::default();
        t.name = topic(name);
        t.partition_data = vec![p];
        let request = m::ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![t]);
        let response: m::ProduceResponse = client.call(ApiKey::Produce, 9, &request);
        let p = &response.responses[0].partition_responses[0];
        if p.error_code == 0 {
            return p.base_offset;
        }
        assert!(
            Instant::now() < deadline,
            "produce to {name}/{partition} kept failing: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fetch_values(client: &mut Client, name: &str, partition: i32) -> Vec<(i64, String)> {
    let mut p = m::fetch_request::FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = 0;
    p.partition_max_bytes = 1024 * 1024;
    p.current_leader_epoch = -1;
    p.last_fetched_epoch = -1;
    p.log_start_offset = -1;
    let mut t = m::fetch_request::FetchTopic::default();
    t.topic = topic(name);
    t.partitions = vec![p];
    let request = m::FetchRequest::default()
        .with_replica_id(m::BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 * 1024 * 1024)
        .with_topics(vec![t]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response: m::FetchResponse = client.call(ApiKey::Fetch, 11, &request);
        let p = &response.responses[0].partitions[0];
        if p.error_code == 0 {
            let mut out = Vec::new();
            if let Some(records) = &p.records {
                for (at, header) in oxbow_core::log::batch::iter_batches(records) {
                    if header.is_control() {
                        continue;
                    }
                    let body = records.slice(at + 61..at + header.size_bytes());
                    for r in oxbow_core::log::records::parse_uncompressed_records(&body, header.record_count)
                        .unwrap()
                    {
                        out.push((
                            header.base_offset + r.offset_delta,
                            String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                        ));
                    }
                }
            }
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "fetch from {name}/{partition} kept failing: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn acknowledged_records_survive_a_restart() {
    const PARTITIONS: i32 = 4;
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), 2);
    let mut client = Client::connect(node.kafka_addr());
    create_topic(&mut client, "smoke", PARTITIONS);
    let mut expected = Vec::new();
    for partition in 0..PARTITIONS {
        let values: Vec<String> = (0..5).map(|i| format!("p{partition}-v{i}")).collect();
        let base = produce(&mut client, "smoke", partition, &values);
        assert!(base >= 0);
        expected.push(values);
    }
    // Served before the restart (some partitions live on the other shard).
    for partition in 0..PARTITIONS {
        let got: Vec<String> = fetch_values(&mut client, "smoke", partition)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(got, expected[partition as usize]);
    }
    let (_, metrics) = http_get(node.admin_addr(), "/metrics");
    assert!(metrics.contains("oxbow_partitions{shard=\"0\"}"), "{metrics}");
    // Each partition's replica became leader once; no follower ever lost anything.
    let sum = |name: &str| metric_sum(&metrics, name);
    assert!(
        sum("oxbow_raft_leaderships_total") >= f64::from(PARTITIONS),
        "{metrics}"
    );
    assert_eq!(
        sum("oxbow_raft_acknowledged_entries_lost_total"),
        0.0,
        "{metrics}"
    );
    drop(client);
    node.stop().unwrap();
    // Restart on the same directory: topic metadata, hard states and logs come back.
    let node = start_node(dir.path(), 2);
    assert_eq!(node.partitions_found(), PARTITIONS as usize);
    let mut client = Client::connect(node.kafka_addr());
    for partition in 0..PARTITIONS {
        let got: Vec<String> = fetch_values(&mut client, "smoke", partition)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            got, expected[partition as usize],
            "partition {partition} after restart"
        );
    }
    // And it keeps accepting writes after the acknowledged ones.
    produce(&mut client, "smoke", 0, &["after-restart".to_string()]);
    let got = fetch_values(&mut client, "smoke", 0);
    assert_eq!(got.last().unwrap().1, "after-restart");
    drop(client);
    node.stop().unwrap();
    assert!(dir.path().join("oxbow").join("metadata").exists());
    assert!(dir.path().join("oxbow").join("shard-0.kv").exists());
}

#[test]
fn a_stream_of_acks_all_produces_over_many_connections() {
    const PARTITIONS: i32 = 4;
    const ROUNDS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), 2);
    let mut admin = Client::connect(node.kafka_addr());
    create_topic(&mut admin, "stream", PARTITIONS);
    let addr = node.kafka_addr();
    let started = Instant::now();
    let producers: Vec<_> = (0..PARTITIONS)
        .map(|partition| {
            std::thread::spawn(move || {
                // Two connections per partition: both shards see produces for
                // partitions they do not own.
                let mut clients = [Client::connect(addr), Client::connect(addr)];
                for round in 0..ROUNDS {
                    let values: Vec<String> = (0..10).map(|i| format!("p{partition}-r{round}-{i}")).collect();
                    produce(&mut clients[round % 2], "stream", partition, &values);
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    let elapsed = started.elapsed();
    for partition in 0..PARTITIONS {
        let got = fetch_values(&mut admin, "stream", partition);
        assert_eq!(got.len(), ROUNDS * 10, "partition {partition}");
        let expected: Vec<String> = (0..ROUNDS)
            .flat_map(|round| (0..10).map(move |i| format!("p{partition}-r{round}-{i}")))
            .collect();
        let values: Vec<String> = got.into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, expected, "partition {partition}: in order, none lost");
    }
    let (_, metrics) = http_get(node.admin_addr(), "/metrics");
    eprintln!(
        "{} acks=all produces in {elapsed:?}",
        PARTITIONS as usize * ROUNDS
    );
    // The disk counters tell how well syncs and writes were grouped: every sync
    // reported durable was answered by an fdatasync, one fdatasync may answer several.
    let sum = |name: &str| metric_sum(&metrics, name);
    let fdatasyncs = sum("oxbow_disk_fdatasyncs_total");
    let appends = sum("oxbow_disk_appends_total");
    assert!(fdatasyncs >= 1.0, "{metrics}");
    assert!(sum("oxbow_disk_syncs_completed_total") >= fdatasyncs, "{metrics}");
    assert!(appends >= 1.0, "{metrics}");
    assert!(sum("oxbow_disk_transfers_total") >= appends, "{metrics}");
    // Every fdatasync's latency is in the histogram, whose +Inf bucket counts them all.
    assert_eq!(sum("oxbow_disk_fdatasync_seconds_count"), fdatasyncs, "{metrics}");
    let all_buckets: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("oxbow_disk_fdatasync_seconds_bucket{") && l.contains("le=\"+Inf\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(all_buckets, fdatasyncs, "{metrics}");
    assert!(sum("oxbow_disk_fdatasync_seconds_sum") > 0.0, "{metrics}");
    drop(admin);
    node.stop().unwrap();
}
