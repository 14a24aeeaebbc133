//! A shard under a producer load far larger than its memory budget: twelve
//! connections pipeline ~110 MiB of `acks=all` produce requests at one shard with a
//! 16 MiB budget. The shard must make the producers wait (its request window fills and
//! it stops reading them — counted in `/metrics`), never hold more request bytes than
//! its window, stay inside its budget (peak RSS of the real `oxbow start` process over
//! its idle RSS), and every acknowledged record must be read back at its acknowledged
//! offset.
//!
//! # What the RSS bound covers, and its tolerance
//!
//! The idle RSS (taken once the node serves and the topic exists) holds the fixed
//! costs: code, thread stacks, the io_uring rings and the shard's pre-allocated,
//! `mlock`ed direct-I/O pool (2 MiB here; the start-up line says it is locked — if it
//! were not, its pages would be faulted in under load and counted here instead). What
//! grows with load is bounded by the rest of the budget, 14 MiB: connections (an
//! eighth: receive buffer plus at most one held receive each), the request window
//! (half: the produce frames, which the log writes from without copying), the Raft entry
//! cache (a sixteenth) and queued responses (the rest). The check allows the whole
//! 16 MiB budget, i.e. 2 MiB over those shares: one `kafka.max_frame_bytes` (2 MiB
//! here) for the one transient copy outside the window — core copies a produce's
//! records once while validating them, one batch at a time — plus allocator rounding.
//! Measured: +8 to +10 MiB, also since produces are charged once (2026-12-03: the log
//! no longer copies their batches, so the window holds twice the produce bytes it did).
//! It was ~+30 MiB before frames were assembled in exact-size buffers, paused
//! connections really stopped reading and the frame decoder stopped keeping a buffer
//! per connection.
//! The test asserts no timing: the load is pipelined as fast as the node takes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUDGET_BYTES: u64 = 16 << 20;
const CONNECTIONS: usize = 12;
const REQUESTS_PER_CONNECTION: usize = 10;
const RECORDS_PER_REQUEST: usize = 60;
const VALUE_BYTES: usize = 16 * 1024;
const TOPIC: &str = "load";

struct Node {
    child: Child,
    kafka: String,
    admin: String,
    shard_lines: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path) -> Node {
    let config = dir.join("oxbow.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = \"{}\"\nkafka_addr = \"127.0.0.1:0\"\nadmin_addr = \"127.0.0.1:0\"\nrpc_addr = \"127.0.0.1:0\"\nshards = 1\nmemory_bytes = {BUDGET_BYTES}\n\n[kafka]\nmax_frame_bytes = 2097152\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let stderr = std::fs::File::create(dir.join("node.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["start", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut kafka = None;
    let mut admin = None;
    let mut shard_lines = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("oxbow: serving Kafka on ") {
            kafka = rest.split_whitespace().next().map(str::to_string);
            admin = rest.rsplit_once("http://").map(|(_, a)| a.trim().to_string());
        } else if line.starts_with("oxbow: shard ") {
            shard_lines.push(line);
        } else if line.starts_with("oxbow: running") {
            break;
        }
    }
    // Keep draining stdout so the node never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Node {
        child,
        kafka: kafka.expect("kafka address"),
        admin: admin.expect("admin address"),
        shard_lines,
    }
}

/// The pre-allocated bytes a shard's start-up line reports ("…, N MiB pre-allocated …").
fn preallocated_bytes(shard_line: &str) -> u64 {
    let before = shard_line.split(" MiB pre-allocated").next().unwrap();
    let mib: u64 = before.rsplit(' ').next().unwrap().parse().unwrap();
    mib << 20
}

fn oxbow(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oxbow {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `VmHWM` (peak) and `VmRSS` (now) of a process, in bytes.
fn rss_bytes(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn metric(admin: &str, name: &str) -> f64 {
    let mut stream = TcpStream::connect(admin).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn value(conn: usize, request: usize, index: usize) -> String {
    let mut v = format!("{conn:02}-{request:03}-{index:03}-");
    v.extend(std::iter::repeat_n('x', VALUE_BYTES - v.len()));
    v
}

fn produce_frame(conn: usize, request: usize) -> Vec<u8> {
    let records: Vec<NewRecord> = (0..RECORDS_PER_REQUEST)
        .map(|i| NewRecord {
            key: None,
            value: Some(value(conn, request, i).into_bytes()),
            timestamp_ms: 0,
            headers: Vec::new(),
        })
        .collect();
    let mut p = m::produce_request::PartitionProduceData::default();
    p.index = 0;
    p.records = Some(build_batch(&records, BatchOptions::default()));
    let mut t = m::produce_request::TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str(TOPIC));
    t.partition_data = vec![p];
    let mut produce = m::ProduceRequest::default();
    produce.acks = -1;
    produce.timeout_ms = 60_000;
    produce.topic_data = vec![t];
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(request as i32)
        .with_client_id(Some(StrBytes::from_static_str("budget-test")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, ApiKey::Produce.request_header_version(9))
        .unwrap();
    produce.encode(&mut payload, 9).unwrap();
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.put_i32(payload.len() as i32);
    frame.extend_from_slice(&payload);
    frame
}

/// One producer connection: a writer pipelining every request, this thread reading the
/// answers. Returns (request, base offset) of each acknowledged request.
fn producer(kafka: &str, conn: usize) -> Vec<(usize, i64)> {
    let stream = TcpStream::connect(kafka).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let frames: Vec<Vec<u8>> = (0..REQUESTS_PER_CONNECTION)
        .map(|r| produce_frame(conn, r))
        .collect();
    let write = std::thread::spawn(move || {
        for frame in frames {
            writer.write_all(&frame).unwrap();
        }
    });
    let mut reader = stream;
    let mut acked = Vec::new();
    for _ in 0..REQUESTS_PER_CONNECTION {
        let mut size = [0u8; 4];
        reader.read_exact(&mut size).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        reader.read_exact(&mut body).unwrap();
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(9)).unwrap();
        let response = m::ProduceResponse::decode(&mut body, 9).unwrap();
        let p = &response.responses[0].partition_responses[0];
        if p.error_code == 0 {
            acked.push((header.correlation_id as usize, p.base_offset));
        }
    }
    write.join().unwrap();
    acked
}

#[test]
fn a_shard_over_its_budget_slows_producers_stays_inside_it_and_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    assert_eq!(node.shard_lines.len(), 1, "{:?}", node.shard_lines);
    assert!(
        node.shard_lines[0].contains("16 MiB budget") && node.shard_lines[0].contains("on core"),
        "{:?}",
        node.shard_lines
    );
    let brokers = format!("--brokers={}", node.kafka);
    oxbow(&["topic", "create", TOPIC, "-p", "1", &brokers]);
    let pid = node.child.id();
    let (_, idle_rss_bytes) = rss_bytes(pid);

    let started = Instant::now();
    let producers: Vec<_> = (0..CONNECTIONS)
        .map(|conn| {
            let kafka = node.kafka.clone();
            std::thread::spawn(move || (conn, producer(&kafka, conn)))
        })
        .collect();
    let acked: BTreeMap<usize, Vec<(usize, i64)>> =
        producers.into_iter().map(|p| p.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let (peak_rss_bytes, _) = rss_bytes(pid);

    let offered_bytes = (CONNECTIONS * REQUESTS_PER_CONNECTION * RECORDS_PER_REQUEST * VALUE_BYTES) as u64;
    let window_bytes = metric(&node.admin, "oxbow_memory_request_window_bytes") as u64;
    let peak_request_bytes = metric(&node.admin, "oxbow_memory_request_peak_bytes") as u64;
    let waits = metric(&node.admin, "oxbow_memory_waits_total");
    let grown_bytes = peak_rss_bytes.saturating_sub(idle_rss_bytes);
    eprintln!(
        "offered {} MiB in {elapsed:?}; window {} MiB, peak held {} MiB, {waits} waits; RSS idle {} MiB, peak {} MiB (+{} MiB)",
        offered_bytes >> 20,
        window_bytes >> 20,
        peak_request_bytes >> 20,
        idle_rss_bytes >> 20,
        peak_rss_bytes >> 20,
        grown_bytes >> 20
    );
    assert!(
        offered_bytes > 6 * BUDGET_BYTES,
        "the load is much larger than the budget"
    );
    assert_eq!(window_bytes, BUDGET_BYTES / 2);
    assert!(
        peak_request_bytes <= window_bytes,
        "{peak_request_bytes} held > window {window_bytes}"
    );
    assert!(waits > 0.0, "the producers were never made to wait");
    // The load-dependent shares (14 MiB) plus one max frame of transient copy: the
    // budget itself (see the module docs). An unlocked pool is faulted in under load.
    let unlocked_pool_bytes = if node.shard_lines[0].contains("(locked)") {
        0
    } else {
        preallocated_bytes(&node.shard_lines[0])
    };
    assert!(
        grown_bytes <= BUDGET_BYTES + unlocked_pool_bytes,
        "the process grew by {grown_bytes} bytes under load, over its {BUDGET_BYTES}-byte budget"
    );

    // Every acknowledged record is there, at its acknowledged offset.
    let total_acked: usize = acked.values().map(Vec::len).sum();
    assert_eq!(
        total_acked,
        CONNECTIONS * REQUESTS_PER_CONNECTION,
        "every request was acknowledged"
    );
    let records = total_acked * RECORDS_PER_REQUEST;
    let consumed = oxbow(&[
        "consume",
        TOPIC,
        "--from-beginning",
        "--verbose",
        "--num",
        &records.to_string(),
        &brokers,
    ]);
    let mut by_offset = BTreeMap::new();
    for line in consumed.lines() {
        let mut fields = line.splitn(4, '\t');
        let (_, offset, _, value) = (fields.next(), fields.next(), fields.next(), fields.next());
        let offset: i64 = offset.unwrap().parse().unwrap();
        by_offset.insert(offset, value.unwrap().get(..11).unwrap().to_string());
    }
    for (conn, requests) in &acked {
        for (request, base_offset) in requests {
            for i in 0..RECORDS_PER_REQUEST {
                let offset = base_offset + i as i64;
                let expected = &value(*conn, *request, i)[..11];
                assert_eq!(
                    by_offset.get(&offset).map(String::as_str),
                    Some(expected),
                    "offset {offset}"
                );
            }
        }
    }
}
