//! The client load of `oxbow bench produce|consume|e2e`, driven by an existing
//! pure-Rust Kafka client, [`rskafka`] (no C library, no cmake: it builds wherever
//! `oxbow` builds).
//!
//! * **produce** — `producers × in_flight` tasks each send batches of `batch_messages`
//!   messages round-robin over their share of the partitions, one request at a time,
//!   unthrottled or paced to `rate_msgs_s` in total. A message's latency is its batch's
//!   request latency; under a rate it is measured from the batch's *scheduled* send time,
//!   so a stalled broker shows up as latency rather than as fewer samples (no
//!   coordinated omission).
//! * **consume** — catch-up readers: the run first writes `history_mb` of history
//!   (not measured), then `consumers` tasks read every partition from the start until
//!   they reach the end the history had; latency is per fetch request.
//! * **e2e** — producers as above while `consumers` tail the partitions from their end;
//!   a message's latency is from its send (stamped into its first 8 bytes) to its
//!   arrival at a consumer.
//!
//! What rskafka cannot do, and so this load does not: acks other than `all` (rskafka
//! always sends `acks=-1`), idempotent or transactional produce, consumer groups
//! (consumers are assigned partitions). The loads here need none of them except acks.

use super::broker_metrics::{self, FdatasyncWindow};
use super::latency::LatencyRecorder;
use super::proc_stats::{self, ProcSample};
use futures::stream::{FuturesUnordered, StreamExt};
use rskafka::chrono::{DateTime, Utc};
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};
use rskafka::BackoffConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Which load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Producers only; produce latency.
    Produce,
    /// Catch-up consumers reading history; fetch latency.
    Consume,
    /// Producers and tailing consumers; end-to-end latency.
    E2e,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Produce => "produce",
            Workload::Consume => "consume",
            Workload::E2e => "e2e",
        })
    }
}

/// The acks a producer asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// `acks=all` (-1): durable on every in-sync replica.
    All,
    /// `acks=1`: written by the leader.
    Leader,
    /// `acks=0`: no response.
    None,
}

impl FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Acks, String> {
        match s {
            "all" | "-1" => Ok(Acks::All),
            "1" => Ok(Acks::Leader),
            "0" => Ok(Acks::None),
            other => Err(format!("acks {other:?}: expected all, -1, 1 or 0")),
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        })
    }
}

/// Batch compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Codec, String> {
        match s {
            "none" => Ok(Codec::None),
            "gzip" => Ok(Codec::Gzip),
            "snappy" => Ok(Codec::Snappy),
            "lz4" => Ok(Codec::Lz4),
            "zstd" => Ok(Codec::Zstd),
            other => Err(format!(
                "compression {other:?}: expected none, gzip, snappy, lz4 or zstd"
            )),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        })
    }
}

impl Codec {
    fn compression(self) -> Compression {
        match self {
            Codec::None => Compression::NoCompression,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

/// Settings of one load (identical for the broker and its `--compare` peer).
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Which load.
    pub workload: Workload,
    /// Topic to use (created if missing); `None` creates a fresh `oxbow-bench-…` topic.
    pub topic: Option<String>,
    /// Keep the fresh topic after the run (a topic named with `topic` is always kept).
    pub keep_topic: bool,
    /// Acks (rskafka supports `all` only).
    pub acks: Acks,
    /// Value bytes per message.
    pub message_bytes: usize,
    /// Messages per produce request.
    pub batch_messages: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Producer count.
    pub producers: usize,
    /// Requests each producer keeps in flight.
    pub in_flight: usize,
    /// Consumer count (consume, e2e).
    pub consumers: usize,
    /// Fetches each consumer keeps in flight, for distinct partitions of its own.
    pub fetches_in_flight: usize,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Load before the measured window, seconds (not counted).
    pub warmup_s: f64,
    /// Total messages per second; `None` is unthrottled.
    pub rate_msgs_s: Option<f64>,
    /// Batch compression.
    pub compression: Codec,
    /// consume: MB of history written before the readers start.
    pub history_mb: u64,
    /// Most bytes a fetch asks for per partition.
    pub fetch_max_bytes: i32,
    /// Client runtime worker threads.
    pub client_threads: usize,
}

impl LoadOptions {
    /// Defaults: 1 KiB messages, 16 per request, 8 partitions, 4 producers with 4
    /// requests in flight each, 2 consumers, 30 s after 3 s of warm-up, unthrottled,
    /// uncompressed, acks=all, 1 GiB of history for catch-up reads.
    pub fn new(workload: Workload) -> LoadOptions {
        LoadOptions {
            workload,
            topic: None,
            keep_topic: false,
            acks: Acks::All,
            message_bytes: 1024,
            batch_messages: 16,
            partitions: 8,
            producers: 4,
            in_flight: 4,
            consumers: 2,
            fetches_in_flight: 1,
            duration_s: 30.0,
            warmup_s: 3.0,
            rate_msgs_s: None,
            compression: Codec::None,
            history_mb: 1024,
            fetch_max_bytes: 1 << 20,
            client_threads: 1,
        }
    }

    /// Bytes of one produce request's messages (values only).
    pub fn request_bytes(&self) -> usize {
        self.message_bytes * self.batch_messages
    }

    /// Produce requests in flight across all producers.
    pub fn requests_in_flight(&self) -> usize {
        self.producers * self.in_flight
    }

    fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Options(m));
        if self.acks != Acks::All {
            return bad(format!(
                "acks={}: the bench's client, rskafka, always sends acks=all (-1); loads with acks=1 or acks=0 need another client",
                self.acks
            ));
        }
        if self.message_bytes < 8 || self.message_bytes > 16 << 20 {
            return bad(format!(
                "message size {} bytes: must be 8 B ..= 16 MiB",
                self.message_bytes
            ));
        }
        if self.batch_messages == 0 || self.request_bytes() > 64 << 20 {
            return bad("messages per request: at least 1, at most 64 MiB per request".to_string());
        }
        if !(1..=100_000).contains(&self.partitions) {
            return bad(format!("{} partitions: must be 1 ..= 100000", self.partitions));
        }
        if self.producers == 0 && self.workload != Workload::Consume {
            return bad("at least one producer".to_string());
        }
        if self.consumers == 0 && self.workload != Workload::Produce {
            return bad("at least one consumer".to_string());
        }
        if self.fetches_in_flight == 0 {
            return bad("at least one fetch in flight per consumer".to_string());
        }
        if self.in_flight == 0 || self.requests_in_flight() > 4096 {
            return bad("requests in flight: 1 ..= 4096 in total".to_string());
        }
        let duration_ok = self.duration_s > 0.0 && self.duration_s <= 86_400.0;
        if !(duration_ok && (0.0..=3600.0).contains(&self.warmup_s)) {
            return bad("duration must be in (0, 86400] s and warm-up in [0, 3600] s".to_string());
        }
        if self.rate_msgs_s.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return bad("rate must be positive".to_string());
        }
        if self.client_threads == 0 || self.client_threads > 64 {
            return bad("client threads: 1 ..= 64".to_string());
        }
        Ok(())
    }
}

/// Why a load could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Settings that cannot work.
    #[error("invalid load options: {0}")]
    Options(String),
    /// The client runtime could not start.
    #[error("cannot start the client runtime: {0}")]
    Runtime(std::io::Error),
    /// The broker could not be reached or refused the set-up.
    #[error("{what} on {brokers}: {source}")]
    Client {
        /// What was being done.
        what: String,
        /// The brokers.
        brokers: String,
        /// The client's error.
        source: Box<ClientError>,
    },
    /// No bootstrap broker accepted a TCP connection.
    #[error("cannot reach {brokers}: {source}")]
    Unreachable {
        /// The brokers.
        brokers: String,
        /// The last connection error.
        source: std::io::Error,
    },
    /// Nothing completed during the measured window.
    #[error("no {workload} progress against {brokers} ({errors} request errors; first: {first_error})")]
    NoProgress {
        /// The load.
        workload: Workload,
        /// The brokers.
        brokers: String,
        /// Failed requests.
        errors: u64,
        /// The first failure.
        first_error: String,
    },
}

/// What one load against one broker measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Bootstrap address.
    pub brokers: String,
    /// Topic used.
    pub topic: String,
    /// The load.
    pub workload: Workload,
    /// Measured window, seconds (catch-up: until the history was read).
    pub elapsed_s: f64,
    /// Produce latency (produce, e2e) — empty for consume.
    pub produced: LatencyRecorder,
    /// Fetch latency (consume) or end-to-end latency (e2e) — empty for produce.
    pub consumed: LatencyRecorder,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Broker CPU over the window, cores (`None` without a broker pid).
    pub broker_cpu_cores: Option<f64>,
    /// Broker resident memory at the end, bytes.
    pub broker_rss_bytes: Option<u64>,
    /// The broker's own `fdatasync`s over the window, from its `/metrics` (`None`
    /// when no metrics address was given; the error when a scrape failed).
    pub broker_fdatasyncs: Option<Result<FdatasyncWindow, String>>,
    /// This client's CPU over the window, cores.
    pub client_cpu_cores: f64,
    /// consume: MB of history written, and at what rate (MB/s) it was written.
    pub history: Option<(f64, f64)>,
    /// Offsets the readers stepped over because the client cannot decode the control
    /// batch there (see [`is_unreadable_control_batch`]).
    pub skipped_control_batches: u64,
}

impl LoadResult {
    /// The recorder whose figures are the run's headline: produce latency for
    /// produce, fetch latency for consume, end-to-end latency for e2e.
    pub fn headline(&self) -> &LatencyRecorder {
        match self.workload {
            Workload::Produce => &self.produced,
            Workload::Consume | Workload::E2e => &self.consumed,
        }
    }

    /// Throughput of the headline figure, MB/s (2^20 bytes).
    pub fn throughput_mb_s(&self) -> f64 {
        let bytes = match self.workload {
            Workload::Produce | Workload::E2e => self.produced.bytes(),
            Workload::Consume => self.consumed.bytes(),
        };
        rate(bytes as f64 / super::raw_disk::MB, self.elapsed_s)
    }

    /// Messages per second of the headline figure.
    pub fn throughput_msgs_s(&self) -> f64 {
        let messages = match self.workload {
            Workload::Produce | Workload::E2e => self.produced.messages(),
            Workload::Consume => self.consumed.messages(),
        };
        rate(messages as f64, self.elapsed_s)
    }
}

fn rate(amount: f64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        amount / elapsed_s
    } else {
        0.0
    }
}

/// Failures seen by the tasks.
#[derive(Debug, Default)]
struct Errors {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Errors {
    fn note(&self, error: &ClientError) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            if let Ok(mut first) = self.first.lock() {
                *first = Some(error.to_string());
            }
        }
    }

    fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

/// Runs `options`' load against `brokers`; `broker_pid` names the broker process for
/// its CPU and memory (found from the port when `None` and the broker is local).
///
/// With `metrics_addr` (the broker's admin HTTP address) the broker's `/metrics` is
/// scraped at both ends of the window for its own `fdatasync` latency.
pub fn run_load(
    options: &LoadOptions,
    brokers: &str,
    broker_pid: Option<u32>,
    metrics_addr: Option<&str>,
) -> Result<LoadResult, LoadError> {
    options.validate()?;
    probe(brokers)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .thread_name("bench-client")
        .enable_time()
        .enable_io()
        .build()
        .map_err(LoadError::Runtime)?;
    let broker_pid = broker_pid.or_else(|| port_of(brokers).and_then(proc_stats::pid_listening_on));
    runtime.block_on(run(
        options.clone(),
        brokers.to_string(),
        broker_pid,
        metrics_addr.map(str::to_string),
    ))
}

/// Fails fast when no bootstrap broker accepts a connection (the client itself would
/// retry for its whole back-off deadline).
fn probe(brokers: &str) -> Result<(), LoadError> {
    use std::net::{TcpStream, ToSocketAddrs};
    let mut last = std::io::Error::other("no address given");
    for broker in brokers.split(',') {
        let addrs = match broker.to_socket_addrs() {
            Ok(addrs) => addrs,
            Err(e) => {
                last = e;
                continue;
            }
        };
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
        }
    }
    Err(LoadError::Unreachable {
        brokers: brokers.to_string(),
        source: last,
    })
}

fn port_of(brokers: &str) -> Option<u16> {
    brokers.split(',').next()?.rsplit(':').next()?.parse().ok()
}

fn client_error(what: &str, brokers: &str) -> impl FnOnce(ClientError) -> LoadError {
    let (what, brokers) = (what.to_string(), brokers.to_string());
    move |source| LoadError::Client {
        what,
        brokers,
        source: Box::new(source),
    }
}

async fn connect(
    options: &LoadOptions,
    brokers: &str,
) -> Result<(Client, String, Vec<Arc<PartitionClient>>), LoadError> {
    let client = ClientBuilder::new(brokers.split(',').map(str::to_string).collect())
        .client_id("oxbow-bench")
        .max_message_size(256 << 20)
        .backoff_config(BackoffConfig {
            deadline: Some(Duration::from_secs(30)),
            ..BackoffConfig::default()
        })
        .build()
        .await
        .map_err(client_error("connecting", brokers))?;
    let topic = options.topic.clone().unwrap_or_else(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("oxbow-bench-{}-{ms}", options.workload)
    });
    let controller = client
        .controller_client()
        .map_err(client_error("admin client", brokers))?;
    match controller
        .create_topic(topic.clone(), options.partitions, 1, 30_000)
        .await
    {
        Ok(()) => {}
        Err(ClientError::ServerError {
            protocol_error: ProtocolError::TopicAlreadyExists,
            ..
        }) => {}
        Err(e) => return Err(client_error(&format!("creating topic {topic}"), brokers)(e)),
    }
    let mut partitions = Vec::with_capacity(options.partitions as usize);
    for p in 0..options.partitions {
        partitions.push(Arc::new(partition_client(&client, &topic, p, brokers).await?));
    }
    // The connections exist now (bootstrap and every partition leader's).
    super::nodelay::set_on_own_tcp_connections();
    Ok((client, topic, partitions))
}

/// A client of one partition's leader. Right after CreateTopics a partition may still
/// be electing its leader; rskafka caches the metadata that says so and retries against
/// that cache, so each attempt here is bounded and followed by a fresh metadata request
/// (`list_topics` refreshes the cache), for up to 30 s.
async fn partition_client(
    client: &Client,
    topic: &str,
    partition: i32,
    brokers: &str,
) -> Result<PartitionClient, LoadError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = client.partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry);
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(e)) if Instant::now() >= deadline => {
                return Err(client_error(
                    &format!("finding the leader of {topic}/{partition}"),
                    brokers,
                )(e))
            }
            Err(_) if Instant::now() >= deadline => {
                let timeout = ClientError::Timeout;
                return Err(client_error(
                    &format!("finding the leader of {topic}/{partition}"),
                    brokers,
                )(timeout));
            }
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = client.list_topics().await;
            }
        }
    }
}

async fn run(
    options: LoadOptions,
    brokers: String,
    broker_pid: Option<u32>,
    metrics_addr: Option<String>,
) -> Result<LoadResult, LoadError> {
    let (client, topic, partitions) = connect(&options, &brokers).await?;
    let result = measure(
        options.clone(),
        brokers.clone(),
        (broker_pid, metrics_addr),
        topic.clone(),
        partitions,
    )
    .await;
    if options.topic.is_none() && !options.keep_topic {
        delete_topic(&client, &topic).await;
    }
    result
}

/// Deletes the run's fresh topic, so runs do not pile up data on the broker (an
/// unthrottled run writes gigabytes); a failure is reported, not fatal.
async fn delete_topic(client: &Client, topic: &str) {
    let deleted = match client.controller_client() {
        Ok(controller) => controller.delete_topic(topic.to_string(), 30_000).await,
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        eprintln!("bench: could not delete the bench topic {topic} (delete it by hand): {e}");
    }
}

/// Runs the load on the connected topic and measures it.
/// `broker`: the broker's process id and admin address, when known.
async fn measure(
    options: LoadOptions,
    brokers: String,
    broker: (Option<u32>, Option<String>),
    topic: String,
    partitions: Vec<Arc<PartitionClient>>,
) -> Result<LoadResult, LoadError> {
    let (broker_pid, metrics_addr) = broker;
    let errors = Arc::new(Errors::default());
    let base = Instant::now();
    let mut history = None;
    let mut end_offsets = Vec::new();
    if options.workload == Workload::Consume {
        let started = Instant::now();
        let written = write_history(&options, &partitions, &errors).await;
        let mb = written as f64 / super::raw_disk::MB;
        history = Some((mb, rate(mb, started.elapsed().as_secs_f64())));
        for p in &partitions {
            end_offsets.push(
                high_watermark(p)
                    .await
                    .map_err(client_error("reading end offsets", &brokers))?,
            );
        }
    }
    let start_offsets = if options.workload == Workload::E2e {
        let mut offsets = Vec::new();
        for p in &partitions {
            offsets.push(
                high_watermark(p)
                    .await
                    .map_err(client_error("reading end offsets", &brokers))?,
            );
        }
        offsets
    } else {
        vec![0; partitions.len()]
    };
    let warmup = if options.workload == Workload::Consume {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(options.warmup_s)
    };
    let origin = Instant::now() + warmup;
    let end = origin + Duration::from_secs_f64(options.duration_s);

    let mut producers = Vec::new();
    if options.workload != Workload::Consume {
        let tasks = options.requests_in_flight();
        for task in 0..tasks {
            let mine = share(partitions.len(), tasks, task);
            let task_rate = options.rate_msgs_s.map(|r| r / tasks as f64);
            let ctx = ProducerTask {
                partitions: mine.iter().map(|&i| Arc::clone(&partitions[i])).collect(),
                options: options.clone(),
                base,
                origin,
                end,
                rate_msgs_s: task_rate,
                seed: task as u64 + 1,
                errors: Arc::clone(&errors),
            };
            producers.push(tokio::spawn(ctx.run()));
        }
    }
    let skipped = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    if options.workload != Workload::Produce {
        for c in 0..options.consumers {
            let mine = share(partitions.len(), options.consumers, c);
            let ctx = ConsumerTask {
                partitions: mine
                    .iter()
                    .map(|&i| {
                        (
                            Arc::clone(&partitions[i]),
                            start_offsets[i],
                            end_offsets.get(i).copied(),
                        )
                    })
                    .collect(),
                options: options.clone(),
                base,
                origin,
                end,
                errors: Arc::clone(&errors),
                skipped: Arc::clone(&skipped),
            };
            consumers.push(tokio::spawn(ctx.run()));
        }
    }

    tokio::time::sleep_until(origin.into()).await;
    let metrics_before = match &metrics_addr {
        Some(addr) => Some(broker_metrics::scrape(addr).await),
        None => None,
    };
    let broker_before = broker_pid.and_then(proc_stats::sample);
    let client_before = proc_stats::sample(std::process::id());
    let mut produced = LatencyRecorder::new(origin);
    for handle in producers {
        if let Ok(recorder) = handle.await {
            produced.merge(&recorder);
        }
    }
    let mut consumed = LatencyRecorder::new(origin);
    let mut last_read = origin;
    for handle in consumers {
        if let Ok((recorder, finished)) = handle.await {
            consumed.merge(&recorder);
            last_read = last_read.max(finished);
        }
    }
    let window_end = match options.workload {
        Workload::Consume => last_read.min(end),
        Workload::Produce | Workload::E2e => end,
    };
    let broker_after = broker_pid.and_then(proc_stats::sample);
    let client_after = proc_stats::sample(std::process::id());
    let broker_fdatasyncs = match (&metrics_addr, metrics_before) {
        (Some(addr), Some(before)) => Some(fdatasyncs_between(addr, before).await),
        _ => None,
    };
    let cores = |before: Option<ProcSample>, after: Option<ProcSample>| match (before, after) {
        (Some(b), Some(a)) => Some(proc_stats::cores_used(&b, &a)),
        _ => None,
    };
    let elapsed_s = window_end.saturating_duration_since(origin).as_secs_f64();
    let result = LoadResult {
        brokers: brokers.clone(),
        topic,
        workload: options.workload,
        elapsed_s,
        produced,
        consumed,
        errors: errors.count.load(Ordering::Relaxed),
        first_error: errors.first(),
        broker_cpu_cores: cores(broker_before, broker_after),
        broker_rss_bytes: broker_after.map(|s| s.rss_bytes),
        broker_fdatasyncs,
        client_cpu_cores: cores(client_before, client_after).unwrap_or(0.0),
        history,
        skipped_control_batches: skipped.load(Ordering::Relaxed),
    };
    if result.headline().messages() == 0 {
        return Err(LoadError::NoProgress {
            workload: options.workload,
            brokers,
            errors: result.errors,
            first_error: result.first_error.unwrap_or_else(|| "none".to_string()),
        });
    }
    Ok(result)
}

/// The broker's `fdatasync`s from the `before` scrape to one taken now.
async fn fdatasyncs_between(addr: &str, before: std::io::Result<String>) -> Result<FdatasyncWindow, String> {
    let before = before.map_err(|e| e.to_string())?;
    let after = broker_metrics::scrape(addr).await.map_err(|e| e.to_string())?;
    broker_metrics::fdatasync_window(&before, &after)
        .ok_or_else(|| format!("no fdatasync in the window at {addr}/metrics"))
}

/// Whether a fetch failed only because rskafka cannot decode a control batch there:
/// Oxbow stores Raft's own entries (a new leader's no-op, at offset 0 of a fresh
/// partition) as control batches whose record key is not Kafka's `(version 0, type)`,
/// and rskafka refuses any control key version but 0. The reader steps over that one
/// offset (a control batch holds no data) and counts it.
fn is_unreadable_control_batch(error: &ClientError) -> bool {
    error.to_string().contains("Unknown control batch record version")
}

/// A partition's high watermark (ListOffsets, latest).
async fn high_watermark(partition: &PartitionClient) -> Result<i64, ClientError> {
    partition.get_offset(OffsetAt::Latest).await
}

/// Indexes `0..count` that worker `worker` of `workers` takes: every `workers`-th one,
/// or, with fewer items than workers, one shared item.
fn share(count: usize, workers: usize, worker: usize) -> Vec<usize> {
    if count == 0 {
        return Vec::new();
    }
    if count < workers {
        return vec![worker % count];
    }
    (worker..count).step_by(workers.max(1)).collect()
}

/// A message value: 8 bytes of send time (ns since the run's base, little endian),
/// then filler that compresses like text (a fixed pseudo-random stream over 64
/// letters, about 75% of its size under a byte-oriented codec).
fn payload_template(message_bytes: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..message_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state >> 58) as usize]
        })
        .collect()
}

fn stamp(value: &mut [u8], base: Instant, now: Instant) {
    let ns = u64::try_from(now.duration_since(base).as_nanos()).unwrap_or(u64::MAX);
    value[..8].copy_from_slice(&ns.to_le_bytes());
}

fn stamped_at(value: &[u8], base: Instant) -> Option<Instant> {
    let ns = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    base.checked_add(Duration::from_nanos(ns))
}

fn records(
    template: &[u8],
    count: usize,
    base: Instant,
    now: Instant,
    timestamp: DateTime<Utc>,
) -> Vec<Record> {
    let mut value = template.to_vec();
    stamp(&mut value, base, now);
    (0..count)
        .map(|_| Record {
            key: None,
            value: Some(value.clone()),
            headers: BTreeMap::new(),
            timestamp,
        })
        .collect()
}

fn wall_timestamp() -> DateTime<Utc> {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0)).unwrap_or_default()
}

/// Writes the catch-up history: `history_mb` spread over the partitions, as fast as
/// the producers go. Returns the bytes written.
async fn write_history(
    options: &LoadOptions,
    partitions: &[Arc<PartitionClient>],
    errors: &Arc<Errors>,
) -> u64 {
    let target = options.history_mb.saturating_mul(1 << 20);
    let request_bytes = options.request_bytes().max(1) as u64;
    let requests = target.div_ceil(request_bytes);
    let tasks = options.requests_in_flight().max(1) as u64;
    let written = Arc::new(AtomicU64::new(0));
    let base = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let mine: Vec<Arc<PartitionClient>> = share(partitions.len(), tasks as usize, task as usize)
            .into_iter()
            .map(|i| Arc::clone(&partitions[i]))
            .collect();
        let count = requests / tasks + u64::from(task < requests % tasks);
        let (written, errors) = (Arc::clone(&written), Arc::clone(errors));
        let template = payload_template(options.message_bytes, task + 1);
        let (batch, codec) = (options.batch_messages, options.compression.compression());
        handles.push(tokio::spawn(async move {
            for i in 0..count {
                let partition = &mine[(i as usize) % mine.len()];
                let batch = records(&template, batch, base, Instant::now(), wall_timestamp());
                match partition.produce(batch, codec).await {
                    Ok(_) => {
                        written.fetch_add(request_bytes, Ordering::Relaxed);
                    }
                    Err(e) => errors.note(&e),
                }
            }
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    written.load(Ordering::Relaxed)
}

/// One producer slot: one request in flight at a time, round-robin over its partitions.
struct ProducerTask {
    partitions: Vec<Arc<PartitionClient>>,
    options: LoadOptions,
    base: Instant,
    origin: Instant,
    end: Instant,
    rate_msgs_s: Option<f64>,
    seed: u64,
    errors: Arc<Errors>,
}

impl ProducerTask {
    async fn run(self) -> LatencyRecorder {
        let mut recorder = LatencyRecorder::new(self.origin);
        let template = payload_template(self.options.message_bytes, self.seed);
        let codec = self.options.compression.compression();
        let batch = self.options.batch_messages;
        let bytes = self.options.request_bytes() as u64;
        let started = Instant::now();
        let mut sent_messages = 0u64;
        let mut next = 0usize;
        loop {
            let scheduled = match self.rate_msgs_s {
                Some(rate) => started + Duration::from_secs_f64(sent_messages as f64 / rate),
                None => Instant::now(),
            };
            if scheduled >= self.end {
                break;
            }
            // Only a paced load waits, and only for a send time still ahead: tokio's
            // timer rounds every deadline up to its next millisecond tick, so even a
            // sleep until "now" parks the task for up to a millisecond, which once
            // stood in every unthrottled request's latency and between its requests.
            if self.rate_msgs_s.is_some() && scheduled > Instant::now() {
                tokio::time::sleep_until(scheduled.into()).await;
            }
            let partition = &self.partitions[next % self.partitions.len()];
            next += 1;
            let now = Instant::now();
            let records = records(&template, batch, self.base, now, wall_timestamp());
            let outcome = partition.produce(records, codec).await;
            let done = Instant::now();
            sent_messages += batch as u64;
            match outcome {
                // Completions after the window (requests still in flight at its end)
                // would skew its last second; they are not counted.
                Ok(_) if done <= self.end => {
                    recorder.record(done, done.duration_since(scheduled.min(now)), batch as u64, bytes);
                }
                Ok(_) => {}
                Err(e) => {
                    self.errors.note(&e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        recorder
    }
}

/// One consumer: fetches its partitions round-robin, with up to `fetches_in_flight`
/// fetches in flight, each for a different partition.
struct ConsumerTask {
    /// Partition, first offset to read, end offset to stop at (catch-up).
    partitions: Vec<(Arc<PartitionClient>, i64, Option<i64>)>,
    options: LoadOptions,
    base: Instant,
    origin: Instant,
    end: Instant,
    errors: Arc<Errors>,
    skipped: Arc<AtomicU64>,
}

/// One fetch's outcome: the partition's index, when it was asked, the answer.
type FetchOutcome = (usize, Instant, Result<(Vec<RecordAndOffset>, i64), ClientError>);

impl ConsumerTask {
    /// Returns the recorder and when the task finished reading.
    async fn run(mut self) -> (LatencyRecorder, Instant) {
        let mut recorder = LatencyRecorder::new(self.origin);
        let tailing = self.options.workload == Workload::E2e;
        // e2e consumers keep reading a little after the producers stop, to drain.
        let stop = if tailing {
            self.end + Duration::from_secs(2)
        } else {
            self.end
        };
        let max_wait_ms = if tailing { 100 } else { 500 };
        tokio::time::sleep_until(self.origin.into()).await;
        let mut finished = Instant::now();
        let mut next = 0usize;
        let mut busy = vec![false; self.partitions.len()];
        let mut fetches = FuturesUnordered::new();
        loop {
            // Start fetches for idle partitions with something left, up to the bound.
            while fetches.len() < self.options.fetches_in_flight && Instant::now() < stop {
                let open: Vec<usize> = (0..self.partitions.len())
                    .filter(|&i| {
                        !busy[i] && self.partitions[i].2.is_none_or(|end| self.partitions[i].1 < end)
                    })
                    .collect();
                if open.is_empty() {
                    break;
                }
                let i = open[next % open.len()];
                next += 1;
                busy[i] = true;
                let (partition, offset, _) = &self.partitions[i];
                let (partition, offset) = (Arc::clone(partition), *offset);
                let max_bytes = self.options.fetch_max_bytes;
                fetches.push(async move {
                    let asked = Instant::now();
                    let result = partition.fetch_records(offset, 1..max_bytes, max_wait_ms).await;
                    (i, asked, result)
                });
            }
            let Some(outcome) = fetches.next().await else {
                break;
            };
            let (i, _, _) = &outcome;
            busy[*i] = false;
            if let Some(at) = self.take_outcome(outcome, tailing, &mut recorder).await {
                finished = at;
            }
        }
        (recorder, finished)
    }

    /// Records one fetch and moves its partition's offset on; returns when data came.
    async fn take_outcome(
        &mut self,
        (i, asked, result): FetchOutcome,
        tailing: bool,
        recorder: &mut LatencyRecorder,
    ) -> Option<Instant> {
        match result {
            Ok((records, _high_watermark)) => {
                let now = Instant::now();
                let Some(last) = records.last().map(|r| r.offset) else {
                    return Some(now);
                };
                let bytes: u64 = records
                    .iter()
                    .map(|r| r.record.value.as_ref().map_or(0, |v| v.len() as u64))
                    .sum();
                if tailing {
                    for r in &records {
                        let value = r.record.value.as_deref().unwrap_or(&[]);
                        if let Some(sent) = stamped_at(value, self.base) {
                            recorder.record(now, now.saturating_duration_since(sent), 1, value.len() as u64);
                        }
                    }
                } else {
                    recorder.record(now, now.duration_since(asked), records.len() as u64, bytes);
                }
                self.partitions[i].1 = last + 1;
                Some(now)
            }
            Err(e) if is_unreadable_control_batch(&e) => {
                self.partitions[i].1 += 1;
                self.skipped.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                self.errors.note(&e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_shared_out() {
        assert_eq!(share(8, 3, 0), vec![0, 3, 6]);
        assert_eq!(share(8, 3, 2), vec![2, 5]);
        assert_eq!(share(2, 4, 3), vec![1]);
        assert!(share(0, 4, 1).is_empty());
    }

    #[test]
    fn payloads_carry_their_send_time() {
        let base = Instant::now();
        let template = payload_template(64, 7);
        assert_eq!(template.len(), 64);
        let later = base + Duration::from_millis(1234);
        let batch = records(&template, 3, base, later, wall_timestamp());
        assert_eq!(batch.len(), 3);
        let value = batch[0].value.as_deref().unwrap();
        assert_eq!(stamped_at(value, base), Some(later));
        assert_eq!(&value[8..], &template[8..]);
    }

    #[test]
    fn options_are_checked() {
        let mut o = LoadOptions::new(Workload::Produce);
        assert!(o.validate().is_ok());
        o.acks = Acks::Leader;
        assert!(matches!(o.validate(), Err(LoadError::Options(m)) if m.contains("rskafka")));
        let mut o = LoadOptions::new(Workload::E2e);
        o.consumers = 0;
        assert!(o.validate().is_err());
        assert_eq!("zstd".parse::<Codec>(), Ok(Codec::Zstd));
        assert!("brotli".parse::<Codec>().is_err());
        assert_eq!("-1".parse::<Acks>(), Ok(Acks::All));
    }
}
