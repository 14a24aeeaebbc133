//! `oxbow bench tier`: tiered storage against the object store's own rates, measured in
//! the same run, for each store asked for (the filesystem store by default; any
//! `[tiered_storage]` configuration file, such as an S3 store on moto):
//!
//! 1. **Raw store rates** — sequential puts of segment-sized objects, then sequential
//!    ranged gets of `chunk_bytes` over them, through the same `object_store` client the
//!    node builds. These are the ceilings.
//! 2. **Upload lag** — an in-process node (one shard, a scratch data directory, that
//!    store) gets a tiered topic with `segment.bytes` and a local target of one segment;
//!    `acks=all` batches are produced at `rate_mb_s`. A poller reads the partition
//!    manifest from the store every `POLL_INTERVAL`; a batch's lag is the time from its
//!    acknowledgement to the first manifest read that names its last offset (so it
//!    includes up to one poll interval plus one manifest get).
//! 3. **Remote-read throughput** — once local retention removed the uploaded segments,
//!    one consumer fetches from offset 0 up to the local start: every byte comes from
//!    the store through the remote reader's ranged gets (cold cache).

use super::log_append::BenchError;
use super::report::{machine_description, today_utc, write_files, Latencies};
use crate::cli::{create_topic, fetch_one, list_offsets, produce_one};
use crate::client::{ClusterClient, TopicPartition};
use crate::config::{NodeConfig, Overrides};
use crate::shard::store::build_store;
use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use oxbow_core::log::batch::iter_batches;
use oxbow_core::log::builder::{build_batch, BatchOptions, NewRecord};
use oxbow_core::tier::{PartitionManifest, PartitionPath};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the poller reads the manifest.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The bench topic's name before the run's start time (a fresh prefix in the store).
const TOPIC_PREFIX: &str = "bench-tier";
/// Longest wait for uploads and local retention to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(180);

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct TierBenchOptions {
    /// Scratch directory (node data, filesystem store); removed afterwards.
    pub data_dir: PathBuf,
    /// Configuration files whose `[tiered_storage]` names a store; `None` is the
    /// default filesystem store under the scratch directory.
    pub stores: Vec<Option<PathBuf>>,
    /// MiB produced per store.
    pub total_mb: u64,
    /// Value bytes per record.
    pub message_bytes: usize,
    /// Records per produce request.
    pub batch_messages: usize,
    /// Produce rate, MiB/s.
    pub rate_mb_s: f64,
    /// `segment.bytes` of the bench topic (and the raw objects' size), MiB.
    pub segment_mb: u64,
    /// The node's `upload_lag_ms` (the active segment's committed data goes this late).
    pub upload_lag_ms: u64,
    /// Where to write `<date>-<name>.md` and `.csv`.
    pub report_dir: Option<PathBuf>,
    /// Report name after the date.
    pub name: String,
    /// The command line that reproduces the run.
    pub command: String,
}

/// One store's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct TierRow {
    /// Which store.
    pub store: String,
    /// Raw sequential put rate, MiB/s.
    pub raw_put_mb_s: f64,
    /// Raw sequential ranged-get rate, MiB/s.
    pub raw_get_mb_s: f64,
    /// Produce rate reached, MiB/s.
    pub produce_mb_s: f64,
    /// Batches whose upload lag was measured.
    pub lag_samples: usize,
    /// Upload lag: median, ms.
    pub lag_p50_ms: f64,
    /// 99th percentile, ms.
    pub lag_p99_ms: f64,
    /// Maximum, ms.
    pub lag_max_ms: f64,
    /// Bytes read from offset 0 to the local start (all from the store).
    pub remote_bytes: u64,
    /// Remote-read throughput, MiB/s.
    pub remote_read_mb_s: f64,
}

impl TierRow {
    /// Remote-read throughput / raw ranged-get rate.
    pub fn read_ratio(&self) -> f64 {
        if self.raw_get_mb_s > 0.0 {
            self.remote_read_mb_s / self.raw_get_mb_s
        } else {
            0.0
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct TierReport {
    /// One row per store.
    pub rows: Vec<TierRow>,
    /// The report as markdown.
    pub markdown: String,
    /// The figures as CSV.
    pub csv: String,
    /// The closing `summary:` line (the store with the lowest read ratio).
    pub summary: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn io_error(what: &str, error: impl std::fmt::Display) -> BenchError {
    BenchError::Io {
        what: what.to_string(),
        source: std::io::Error::other(error.to_string()),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    bytes as f64 / MIB / elapsed.as_secs_f64()
}

/// Runs the benchmark (see the module doc) and, with `report_dir`, files the report.
pub fn run_tier_bench(options: &TierBenchOptions) -> Result<TierReport, BenchError> {
    if options.stores.is_empty()
        || options.total_mb == 0
        || options.segment_mb == 0
        || options.batch_messages == 0
    {
        return Err(BenchError::Options(
            "need a store, a positive size, segment size and batch".into(),
        ));
    }
    if options.rate_mb_s.is_nan() || options.rate_mb_s <= 0.0 {
        return Err(BenchError::Options("--rate-mb-s must be positive".into()));
    }
    let mut rows = Vec::new();
    for (i, store) in options.stores.iter().enumerate() {
        let scratch = options.data_dir.join(format!("bench-tier-{i}"));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(|e| io_error("scratch directory", e))?;
        let row = run_store(options, store.as_deref(), &scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        rows.push(row?);
    }
    let worst = rows
        .iter()
        .min_by(|a, b| a.read_ratio().total_cmp(&b.read_ratio()))
        .cloned()
        .ok_or_else(|| BenchError::Options("no store measured".into()))?;
    let summary = format!(
        "summary: throughput_mb_s={:.1} p99_ms={:.0} limit_mb_s={:.1} ratio={:.2}",
        worst.remote_read_mb_s,
        worst.lag_p99_ms,
        worst.raw_get_mb_s,
        worst.read_ratio()
    );
    let mut report = TierReport {
        markdown: markdown(options, &rows),
        csv: csv(&rows),
        rows,
        summary,
        files: Vec::new(),
    };
    if let Some(dir) = &options.report_dir {
        let stem = format!("{}-{}", today_utc(), options.name);
        report.files = write_files(dir, &stem, &[("md", &report.markdown), ("csv", &report.csv)])?;
    }
    Ok(report)
}

fn run_store(
    options: &TierBenchOptions,
    config_file: Option<&Path>,
    scratch: &Path,
) -> Result<TierRow, BenchError> {
    let node_dir = scratch.join("node");
    let overrides = Overrides {
        data_dir: Some(node_dir.clone()),
        kafka_addr: Some("127.0.0.1:0".into()),
        admin_addr: Some("127.0.0.1:0".into()),
        rpc_addr: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let mut config = NodeConfig::load(config_file, overrides).map_err(|e| io_error("configuration", e))?;
    config.node.shards = 1;
    config.tiered_storage.upload_lag_ms = options.upload_lag_ms;
    let store_name = match config_file {
        Some(file) => format!("{:?} ({})", config.tiered_storage.store, file.display()),
        None => "filesystem (default)".to_string(),
    };
    let store = build_store(&config.tiered_storage, &node_dir)
        .map_err(|e| io_error("object store", e))?
        .ok_or_else(|| BenchError::Options("the configuration has store = \"none\"".into()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("tokio runtime", e))?;
    let segment_bytes = options.segment_mb * 1024 * 1024;
    let chunk_bytes = config.tiered_storage.chunk_bytes.max(1);
    let (raw_put_mb_s, raw_get_mb_s) = runtime.block_on(raw_rates(
        store.as_ref(),
        segment_bytes,
        options.total_mb.div_ceil(options.segment_mb).max(4),
        chunk_bytes,
    ))?;

    let node = crate::node::start(config).map_err(|e| io_error("start the node", e))?;
    let brokers = node.kafka_addr().to_string();
    let started_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let topic = format!("{TOPIC_PREFIX}-{started_s}");
    let result = measure_node(options, (&brokers, &topic), &store, &node_dir, segment_bytes);
    let _ = node.stop();
    let NodeFigures {
        produce_mb_s,
        mut lags,
        lag_samples,
        remote_bytes,
        remote_read_mb_s,
    } = result?;
    Ok(TierRow {
        store: store_name,
        raw_put_mb_s,
        raw_get_mb_s,
        produce_mb_s,
        lag_samples,
        lag_p50_ms: f64::from(lags.percentile_us(50.0)) / 1000.0,
        lag_p99_ms: f64::from(lags.percentile_us(99.0)) / 1000.0,
        lag_max_ms: f64::from(lags.percentile_us(100.0)) / 1000.0,
        remote_bytes,
        remote_read_mb_s,
    })
}

/// Sequential puts of `count` objects of `object_bytes`, then sequential ranged gets of
/// `chunk_bytes` over them; the objects are deleted after. (MiB/s put, MiB/s get.)
async fn raw_rates(
    store: &dyn ObjectStore,
    object_bytes: u64,
    count: u64,
    chunk_bytes: u64,
) -> Result<(f64, f64), BenchError> {
    let body: Vec<u8> = (0..object_bytes).map(|i| (i % 251) as u8).collect();
    let body = Bytes::from(body);
    let keys: Vec<StorePath> = (0..count)
        .map(|i| StorePath::from(format!("bench-raw/{i:06}.bin")))
        .collect();
    let started = Instant::now();
    for key in &keys {
        store
            .put(key, PutPayload::from_bytes(body.clone()))
            .await
            .map_err(|e| io_error("raw put", e))?;
    }
    let put = mib_per_s(object_bytes * count, started.elapsed());
    let started = Instant::now();
    let mut read = 0u64;
    for key in &keys {
        let mut position = 0;
        while position < object_bytes {
            let end = (position + chunk_bytes).min(object_bytes);
            let bytes = store
                .get_range(key, position..end)
                .await
                .map_err(|e| io_error("raw ranged get", e))?;
            read += bytes.len() as u64;
            position = end;
        }
    }
    let get = mib_per_s(read, started.elapsed());
    for key in &keys {
        let _ = store.delete(key).await;
    }
    Ok((put, get))
}

/// Observations of the manifest: (when read, next offset it names).
type Seen = Arc<Mutex<Vec<(Instant, i64)>>>;

/// Reads the bench partition's manifest from the store every [`POLL_INTERVAL`] until
/// `stop`, noting each new next offset.
fn poll_manifest(
    store: Arc<dyn ObjectStore>,
    topic: String,
    stop: Arc<AtomicBool>,
    seen: Seen,
) -> Result<(), BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("tokio runtime", e))?;
    runtime.block_on(async move {
        let mut path: Option<PartitionPath> = None;
        let mut last = -1;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(POLL_INTERVAL).await;
            let Some(partition) = &path else {
                path = find_partition(store.as_ref(), &topic).await;
                continue;
            };
            let key = StorePath::from(partition.manifest_key());
            let Ok(got) = store.get(&key).await else { continue };
            let Ok(bytes) = got.bytes().await else { continue };
            let read_at = Instant::now();
            let Ok(manifest) = PartitionManifest::decode(partition, &bytes) else {
                continue;
            };
            let next = manifest.next_offset().unwrap_or(-1);
            if next > last {
                last = next;
                if let Ok(mut seen) = seen.lock() {
                    seen.push((read_at, next));
                }
            }
        }
        Ok(())
    })
}

/// The bench partition's prefix, once its manifest exists.
async fn find_partition(store: &dyn ObjectStore, topic: &str) -> Option<PartitionPath> {
    use futures::TryStreamExt;
    let prefix = StorePath::from(topic);
    let keys: Vec<_> = store.list(Some(&prefix)).try_collect().await.ok()?;
    keys.iter().find_map(|meta| {
        let key = meta.location.as_ref();
        let dir = key
            .strip_prefix(&format!("{topic}/"))?
            .strip_suffix("/manifest")?;
        let revision = dir.strip_prefix("0_")?.parse().ok()?;
        Some(PartitionPath {
            topic: topic.to_string(),
            partition: 0,
            revision,
        })
    })
}

/// What the node phase measured.
struct NodeFigures {
    produce_mb_s: f64,
    lags: Latencies,
    lag_samples: usize,
    remote_bytes: u64,
    remote_read_mb_s: f64,
}

/// Produces, measures the upload lag, waits for local retention, reads from offset 0.
fn measure_node(
    options: &TierBenchOptions,
    (brokers, topic): (&str, &str),
    store: &Arc<dyn ObjectStore>,
    node_dir: &Path,
    segment_bytes: u64,
) -> Result<NodeFigures, BenchError> {
    let segment = segment_bytes.to_string();
    let configs = [
        "oxbow.remote.write=true".to_string(),
        "oxbow.remote.read=true".to_string(),
        format!("segment.bytes={segment}"),
        format!("retention.local.target.bytes={segment}"),
    ];
    create_topic(topic, (1, 1), &configs, brokers, &mut std::io::sink())
        .map_err(|e| io_error("create topic", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let poller = {
        let (store, stop, seen) = (Arc::clone(store), Arc::clone(&stop), Arc::clone(&seen));
        let topic = topic.to_string();
        std::thread::spawn(move || poll_manifest(store, topic, stop, seen))
    };
    // Warm up until the partition's first manifest is in the store (the archiver has
    // loaded, found a fresh prefix and put it), then measure.
    let warm_up = || -> Result<(), BenchError> {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while seen.lock().map(|s| s.is_empty()).unwrap_or(true) {
            if Instant::now() > deadline {
                return Err(io_error("warm-up", "no manifest in the store"));
            }
            produce(options, (brokers, topic), 1)?;
        }
        Ok(())
    };
    let produced = warm_up().and_then(|()| produce(options, (brokers, topic), options.total_mb));
    let acked = match produced {
        Ok(acked) => acked,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            let _ = poller.join();
            return Err(e);
        }
    };
    let (produce_mb_s, acks) = acked;
    let last_offset = acks.last().map_or(0, |a| a.1);
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let covered = |seen: &Seen| {
        seen.lock()
            .map(|s| s.last().is_some_and(|(_, next)| *next > last_offset))
            .unwrap_or(false)
    };
    while !covered(&seen) && Instant::now() < deadline {
        std::thread::sleep(POLL_INTERVAL);
    }
    stop.store(true, Ordering::Relaxed);
    poller
        .join()
        .map_err(|_| io_error("manifest poller", "panicked"))??;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut lags = Latencies::default();
    let mut lag_samples = 0;
    for (acked_at, last) in &acks {
        if let Some((read_at, _)) = seen.iter().find(|(_, next)| next > last) {
            lags.record(read_at.saturating_duration_since(*acked_at));
            lag_samples += 1;
        }
    }
    if seen.is_empty() {
        return Err(io_error(
            "upload lag",
            "the manifest never named the produced data",
        ));
    }
    let local_start = wait_local_start(&node_dir.join("kafka").join(topic), last_offset / 2)?;
    let (remote_bytes, remote_read_mb_s) = read_remote((brokers, topic), local_start)?;
    Ok(NodeFigures {
        produce_mb_s,
        lags,
        lag_samples,
        remote_bytes,
        remote_read_mb_s,
    })
}

/// Produces `total_mb` at `rate_mb_s`: (MiB/s reached, [(acknowledged at, last offset)]).
fn produce(
    options: &TierBenchOptions,
    (brokers, topic): (&str, &str),
    total_mb: u64,
) -> Result<(f64, Vec<(Instant, i64)>), BenchError> {
    let mut client = ClusterClient::connect(brokers).map_err(|e| io_error("connect", e))?;
    let tp = TopicPartition::new(topic, 0);
    let total_bytes = total_mb * 1024 * 1024;
    let batch_bytes = (options.message_bytes * options.batch_messages) as u64;
    let interval = Duration::from_secs_f64(batch_bytes as f64 / MIB / options.rate_mb_s);
    let started = Instant::now();
    let mut acks = Vec::new();
    let mut sent = 0u64;
    let mut index = 0u64;
    while sent < total_bytes {
        let due = started + interval.mul_f64(acks.len() as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let batch = bench_batch(&mut index, options, wall_clock_ms());
        let base = produce_one(&mut client, &tp, batch).map_err(|e| io_error("produce", e))?;
        acks.push((Instant::now(), base + options.batch_messages as i64 - 1));
        sent += batch_bytes;
    }
    Ok((mib_per_s(sent, started.elapsed()), acks))
}

/// Milliseconds since the Unix epoch now (the records' CreateTime, as a client sets it).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One produce request's batch: `batch_messages` records of `message_bytes`, numbered
/// on from `index`, stamped `timestamp_ms`. The stamp must be the wall clock's: the
/// topic's total retention (`retention.ms`, 7 days by default) judges remote segments by
/// their largest timestamp, so records stamped in the past are expired from the store
/// at the archiver's first housekeeping round (30 s after it starts) — a read from
/// offset 0 then answers `OFFSET_OUT_OF_RANGE`.
fn bench_batch(index: &mut u64, options: &TierBenchOptions, timestamp_ms: i64) -> Bytes {
    let records: Vec<NewRecord> = (0..options.batch_messages)
        .map(|_| {
            *index += 1;
            let mut value = format!("{index:012}-").into_bytes();
            value.resize(options.message_bytes, b'x');
            NewRecord::value(value, timestamp_ms)
        })
        .collect();
    build_batch(&records, BatchOptions::default())
}

/// Waits until the local log of the bench partition starts at or past `offset` (local
/// retention removed what the store holds); returns the local start.
fn wait_local_start(topic_dir: &Path, offset: i64) -> Result<i64, BenchError> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let start = local_start(topic_dir);
        if start.is_some_and(|s| s >= offset) {
            return Ok(start.unwrap_or(0));
        }
        if Instant::now() > deadline {
            return Err(io_error(
                "local retention",
                format!("the local log still starts at {start:?}, before {offset}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lowest base offset of the segment files under a topic directory.
fn local_start(topic_dir: &Path) -> Option<i64> {
    let partitions = std::fs::read_dir(topic_dir).ok()?;
    partitions
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path()).ok())
        .flat_map(|files| files.flatten())
        .filter_map(|f| {
            let name = f.file_name().to_string_lossy().into_owned();
            name.strip_suffix("-v1.log")?.split('-').next()?.parse().ok()
        })
        .min()
}

/// Fetches from offset 0 up to `end` (all below the local start): (bytes, MiB/s).
fn read_remote((brokers, topic): (&str, &str), end: i64) -> Result<(u64, f64), BenchError> {
    let mut client = ClusterClient::connect(brokers).map_err(|e| io_error("connect", e))?;
    // The store must still hold offset 0 (a read from there is what is measured).
    let earliest = list_offsets(&mut client, topic, 1, -2).map_err(|e| io_error("earliest offset", e))?;
    if let Some(start) = earliest.first().filter(|start| **start != 0) {
        return Err(io_error(
            "remote read",
            format!("the partition's log starts at {start}, not 0: the store no longer holds offset 0"),
        ));
    }
    let tp = TopicPartition::new(topic, 0);
    let started = Instant::now();
    let (mut offset, mut bytes) = (0i64, 0u64);
    while offset < end {
        let data = fetch_one(&mut client, &tp, offset, 0).map_err(|e| io_error("fetch", e))?;
        let records = data.records.unwrap_or_default();
        let next = iter_batches(&records)
            .map(|(_, h)| h.base_offset + i64::from(h.last_offset_delta) + 1)
            .max()
            .filter(|next| *next > offset)
            .ok_or_else(|| io_error("fetch", format!("no progress at offset {offset}")))?;
        bytes += records.len() as u64;
        offset = next;
    }
    Ok((bytes, mib_per_s(bytes, started.elapsed())))
}

fn markdown(options: &TierBenchOptions, rows: &[TierRow]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Tiered storage: upload lag and remote reads ({})\n",
        today_utc()
    );
    let _ = writeln!(md, "Reproduce: `{}`\n", options.command);
    let _ = writeln!(md, "Machine: {}\n", machine_description(&options.data_dir));
    let _ = writeln!(
        md,
        "Per store: {} MiB produced (`acks=all`, {} records of {} B per request) at {:.1} MiB/s \
         to one partition with `segment.bytes` = local target = {} MiB and `upload_lag_ms` = {}, \
         after a warm-up until the partition's first manifest is in the store; \
         the raw rates are sequential puts of {} MiB objects and sequential ranged gets of \
         `chunk_bytes` through the same client, measured in the same run. Upload lag: \
         acknowledgement → first manifest read (every {} ms) naming the batch. Remote read: one \
         consumer from offset 0 to the local start, every byte from the store (cold cache).\n",
        options.total_mb,
        options.batch_messages,
        options.message_bytes,
        options.rate_mb_s,
        options.segment_mb,
        options.upload_lag_ms,
        options.segment_mb,
        POLL_INTERVAL.as_millis(),
    );
    let _ = writeln!(
        md,
        "| store | raw put MiB/s | raw get MiB/s | produce MiB/s | upload lag p50 / p99 / max ms (batches) | remote read MiB/s (MiB) | remote / raw get |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} / {:.0} ({}) | {:.1} ({:.1}) | {:.2} |",
            r.store,
            r.raw_put_mb_s,
            r.raw_get_mb_s,
            r.produce_mb_s,
            r.lag_p50_ms,
            r.lag_p99_ms,
            r.lag_max_ms,
            r.lag_samples,
            r.remote_read_mb_s,
            r.remote_bytes as f64 / MIB,
            r.read_ratio()
        );
    }
    md
}

fn csv(rows: &[TierRow]) -> String {
    let mut out = String::from(
        "store,raw_put_mb_s,raw_get_mb_s,produce_mb_s,lag_samples,lag_p50_ms,lag_p99_ms,lag_max_ms,remote_bytes,remote_read_mb_s,read_ratio\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "\"{}\",{:.2},{:.2},{:.2},{},{:.1},{:.1},{:.1},{},{:.2},{:.3}",
            r.store.replace('"', "'"),
            r.raw_put_mb_s,
            r.raw_get_mb_s,
            r.produce_mb_s,
            r.lag_samples,
            r.lag_p50_ms,
            r.lag_p99_ms,
            r.lag_max_ms,
            r.remote_bytes,
            r.remote_read_mb_s,
            r.read_ratio()
        );
    }
    out
}
