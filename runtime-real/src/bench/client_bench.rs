//! `oxbow bench produce|consume|e2e`: one client load ([`super::load`]) against a
//! broker — and with `--compare`, the identical load against a peer broker in the same
//! invocation — measured against the machine's limit taken in the same run
//! ([`super::limits`]), filed as markdown, CSV and an SVG plot, and summed up in one
//! final line:
//!
//! ```text
//! summary: throughput_mb_s=… p99_ms=… limit_mb_s=… ratio=… [more key=value pairs]
//! ```
//!
//! The limit is measured right after the loads. For produce and e2e it is `O_DIRECT`
//! write+`fdatasync` in the broker's data directory, with writes of one request's size
//! and one sync per *all requests in flight* (what a perfect group commit could do with
//! this load); for consume, the lesser of sequential direct-read and loopback TCP
//! bandwidth. Without `--data-dir`
//! only the loopback part of a consume limit can be measured; produce has none.

use super::limits::{measure_direct_read, measure_loopback, measure_write, WriteLimit};
use super::load::{run_load, LoadError, LoadOptions, LoadResult, Workload};
use super::log_append::BenchError;
use super::raw_disk::MB;
use super::report::{machine_description, today_utc, write_files};
use super::svg::{self, Panel, Series, XScale};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings of a client benchmark run.
#[derive(Clone, Debug)]
pub struct ClientBenchOptions {
    /// The load.
    pub load: LoadOptions,
    /// Bootstrap address of the broker under test.
    pub brokers: String,
    /// Its process id (found from the port when local and `None`).
    pub broker_pid: Option<u32>,
    /// Its admin HTTP address: its `/metrics` gives its own `fdatasync` latency over
    /// the window, the fsync p99 *at this load* the p99 goal is set against.
    pub broker_metrics: Option<String>,
    /// A peer broker to run the identical load against.
    pub compare: Option<String>,
    /// The peer's process id.
    pub compare_pid: Option<u32>,
    /// The broker's data directory, where the disk limit is measured.
    pub data_dir: Option<PathBuf>,
    /// Seconds per limit measurement.
    pub limit_duration_s: f64,
    /// Where to file the report; `None` files nothing.
    pub report_dir: Option<PathBuf>,
    /// Report name after the date (default from the load's settings).
    pub name: Option<String>,
    /// The reproducing command line.
    pub command: String,
}

/// Why a client benchmark failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientBenchError {
    /// The load failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A limit measurement or the report failed.
    #[error(transparent)]
    Bench(#[from] BenchError),
}

/// The machine's ceiling for the load.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadLimit {
    /// The ceiling, MB/s (`None` when nothing could be measured).
    pub limit_mb_s: Option<f64>,
    /// Write+fdatasync with one sync per write of a request's size.
    pub write_sync_each: Option<WriteLimit>,
    /// Write+fdatasync with one sync per all requests in flight.
    pub write_group: Option<WriteLimit>,
    /// Sequential direct reads, MB/s.
    pub direct_read_mb_s: Option<f64>,
    /// Loopback TCP, MB/s.
    pub loopback_mb_s: Option<f64>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct ClientBenchReport {
    /// The broker's result, then the peer's.
    pub results: Vec<LoadResult>,
    /// The limit measured.
    pub limit: LoadLimit,
    /// Headline throughput / limit.
    pub ratio: Option<f64>,
    /// The final line.
    pub summary: String,
    /// The report as markdown.
    pub markdown: String,
    /// Per-second figures, CSV.
    pub csv: String,
    /// Latency distribution, CSV.
    pub percentiles_csv: String,
    /// The plot.
    pub svg: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// Runs the limit measurement, the load (and the peer's), and files the report.
pub fn run_client_bench(options: &ClientBenchOptions) -> Result<ClientBenchReport, ClientBenchError> {
    let mut results = vec![run_load(
        &options.load,
        &options.brokers,
        options.broker_pid,
        options.broker_metrics.as_deref(),
    )?];
    if let Some(peer) = &options.compare {
        results.push(run_load(&options.load, peer, options.compare_pid, None)?);
    }
    // After the loads: the limit's scratch files are deleted when it ends, and on a
    // file system mounted with `discard` the trims that follow slow the disk's flushes
    // for seconds — a broker measured right after would pay for them.
    let limit = measure_limit(options)?;
    let ratio = limit
        .limit_mb_s
        .filter(|l| *l > 0.0)
        .map(|l| results[0].throughput_mb_s() / l);
    let stem = format!("{}-{}", today_utc(), name(options));
    let mut report = ClientBenchReport {
        summary: summary(&results, &limit, ratio),
        csv: per_second_csv(&results),
        percentiles_csv: percentiles_csv(&results),
        svg: plot(options, &results),
        markdown: String::new(),
        results,
        limit,
        ratio,
        files: Vec::new(),
    };
    report.markdown = markdown(options, &report, &stem);
    if let Some(dir) = &options.report_dir {
        report.files = write_files(
            dir,
            &stem,
            &[
                ("md", &report.markdown),
                ("csv", &report.csv),
                ("percentiles.csv", &report.percentiles_csv),
                ("svg", &report.svg),
            ],
        )?;
    }
    Ok(report)
}

fn name(options: &ClientBenchOptions) -> String {
    options.name.clone().unwrap_or_else(|| {
        let l = &options.load;
        format!(
            "{}-acks-{}-{}b-{}p{}",
            l.workload,
            l.acks,
            l.message_bytes,
            l.partitions,
            if options.compare.is_some() { "-vs-peer" } else { "" }
        )
    })
}

fn measure_limit(options: &ClientBenchOptions) -> Result<LoadLimit, BenchError> {
    let duration = Duration::from_secs_f64(options.limit_duration_s.clamp(0.01, 600.0));
    let load = &options.load;
    let mut limit = LoadLimit::default();
    match load.workload {
        Workload::Produce | Workload::E2e => {
            if let Some(dir) = &options.data_dir {
                let bytes = load.request_bytes().max(512);
                limit.write_sync_each = Some(measure_write(dir, bytes, 1, duration)?);
                let group = measure_write(dir, bytes, load.requests_in_flight(), duration)?;
                limit.limit_mb_s = Some(group.mb_s);
                limit.write_group = Some(group);
            }
        }
        Workload::Consume => {
            let loopback = measure_loopback(256 * 1024, duration)?;
            limit.loopback_mb_s = Some(loopback);
            let mut ceiling = loopback;
            if let Some(dir) = &options.data_dir {
                let read =
                    measure_direct_read(dir, 512 << 20, load.fetch_max_bytes.max(4096) as usize, duration)?;
                limit.direct_read_mb_s = Some(read);
                ceiling = ceiling.min(read);
            }
            limit.limit_mb_s = Some(ceiling);
        }
    }
    Ok(limit)
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "na".to_string(), |v| format!("{v:.decimals$}"))
}

fn summary(results: &[LoadResult], limit: &LoadLimit, ratio: Option<f64>) -> String {
    let main = &results[0];
    let s = main.headline().summary();
    let mut line = format!(
        "summary: throughput_mb_s={:.1} p99_ms={:.3} limit_mb_s={} ratio={} msgs_s={:.0} p50_ms={:.3} p999_ms={:.3} max_ms={:.3} broker_cpu_cores={} client_cpu_cores={:.2} errors={}",
        main.throughput_mb_s(),
        s.p99_ms,
        fmt_opt(limit.limit_mb_s, 1),
        fmt_opt(ratio, 3),
        main.throughput_msgs_s(),
        s.p50_ms,
        s.p999_ms,
        s.max_ms,
        fmt_opt(main.broker_cpu_cores, 2),
        main.client_cpu_cores,
        main.errors
    );
    if let Some(Ok(f)) = &main.broker_fdatasyncs {
        let _ = write!(
            line,
            " broker_fsync_p99_ms={:.3} p99_vs_broker_fsync_p99={:.2}",
            f.p99_ms,
            s.p99_ms / f.p99_ms.max(1e-9)
        );
    }
    if let Some(peer) = results.get(1) {
        let p = peer.headline().summary();
        let speedup = if peer.throughput_mb_s() > 0.0 {
            Some(main.throughput_mb_s() / peer.throughput_mb_s())
        } else {
            None
        };
        let _ = write!(
            line,
            " peer_throughput_mb_s={:.1} peer_p99_ms={:.3} peer_broker_cpu_cores={} speedup={}",
            peer.throughput_mb_s(),
            p.p99_ms,
            fmt_opt(peer.broker_cpu_cores, 2),
            fmt_opt(speedup, 2)
        );
    }
    line
}

fn label(results: &[LoadResult], i: usize) -> String {
    if i == 0 {
        format!("broker {}", results[0].brokers)
    } else {
        format!("peer {}", results[i].brokers)
    }
}

fn per_second_csv(results: &[LoadResult]) -> String {
    let mut out = String::from("broker,second,messages,mb_s,p50_ms,p99_ms,max_ms\n");
    for r in results {
        for row in r.headline().per_second() {
            let _ = writeln!(
                out,
                "{},{},{},{:.3},{:.3},{:.3},{:.3}",
                r.brokers,
                row.second,
                row.messages,
                row.bytes as f64 / MB,
                row.p50_ms,
                row.p99_ms,
                row.max_ms
            );
        }
    }
    out
}

fn percentiles_csv(results: &[LoadResult]) -> String {
    let mut out = String::from("broker,percentile,latency_ms\n");
    for r in results {
        for (p, ms) in r.headline().distribution() {
            let _ = writeln!(out, "{},{p:.4},{ms:.3}", r.brokers);
        }
    }
    out
}

fn latency_kind(workload: Workload) -> &'static str {
    match workload {
        Workload::Produce => "produce latency (acks, per message)",
        Workload::Consume => "fetch latency (per record read)",
        Workload::E2e => "end-to-end latency (send to receive)",
    }
}

fn plot(options: &ClientBenchOptions, results: &[LoadResult]) -> String {
    let kind = latency_kind(options.load.workload);
    let mut over_time = Vec::new();
    let mut distribution = Vec::new();
    let mut throughput = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let rows = r.headline().per_second();
        let who = label(results, i);
        let dashed = i > 0;
        let at = |f: fn(&super::latency::SecondRow) -> f64| {
            rows.iter().map(|row| (row.second as f64, f(row))).collect()
        };
        over_time.push(Series {
            name: format!("{who} p50"),
            points: at(|row| row.p50_ms),
            dashed,
        });
        over_time.push(Series {
            name: format!("{who} p99"),
            points: at(|row| row.p99_ms),
            dashed,
        });
        distribution.push(Series {
            name: who.clone(),
            points: r.headline().distribution(),
            dashed,
        });
        throughput.push(Series {
            name: who,
            points: at(|row| row.bytes as f64 / MB),
            dashed,
        });
    }
    svg::render(&[
        Panel {
            title: format!("{kind} over time"),
            x_label: "second of the measured window".to_string(),
            y_label: "ms".to_string(),
            x_scale: XScale::Linear,
            series: over_time,
        },
        Panel {
            title: format!("{kind} distribution"),
            x_label: "percentile".to_string(),
            y_label: "ms".to_string(),
            x_scale: XScale::Nines,
            series: distribution,
        },
        Panel {
            title: "throughput over time".to_string(),
            x_label: "second of the measured window".to_string(),
            y_label: "MB/s".to_string(),
            x_scale: XScale::Linear,
            series: throughput,
        },
    ])
}

fn markdown(options: &ClientBenchOptions, report: &ClientBenchReport, stem: &str) -> String {
    let load = &options.load;
    let mut md = String::new();
    let _ = writeln!(md, "# `oxbow bench {}` — {}\n", load.workload, today_utc());
    let _ = writeln!(md, "- Reproduce: `{}`", options.command);
    let dir = options.data_dir.as_deref().unwrap_or(Path::new("."));
    let _ = writeln!(md, "- Machine: {}", machine_description(dir));
    let rate = load.rate_msgs_s.map_or_else(
        || "unthrottled".to_string(),
        |r| format!("{r:.0} msgs/s in total"),
    );
    // A produce load starts no consumers, whatever `--consumers` says.
    let consumers = if load.workload == Workload::Produce {
        "no consumers".to_string()
    } else {
        format!(
            "{} consumers × {} fetches in flight (each for another partition)",
            load.consumers, load.fetches_in_flight
        )
    };
    let _ = writeln!(
        md,
        "- Load ([rskafka](https://crates.io/crates/rskafka) client): {} messages of {} B, {} per request, acks={}, compression {}, {} partitions, {} producers × {} requests in flight, {consumers}, {rate}; {} s measured after {} s of warm-up{}.",
        load.workload,
        load.message_bytes,
        load.batch_messages,
        load.acks,
        load.compression,
        load.partitions,
        load.producers,
        load.in_flight,
        load.duration_s,
        load.warmup_s,
        if load.workload == Workload::Consume {
            format!(" (catch-up: {} MB of history written first, then read from offset 0)", load.history_mb)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        md,
        "- Latency: {}. MB = 2^20 bytes.\n",
        latency_kind(load.workload)
    );
    let _ = writeln!(
        md,
        "| broker | MB/s | msgs/s | p50 ms | p99 ms | p99.9 ms | max ms | broker CPU (cores) | client CPU (cores) | broker RSS MB | errors |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in report.results.iter().enumerate() {
        let s = r.headline().summary();
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.2} | {} | {} |",
            label(&report.results, i),
            r.throughput_mb_s(),
            r.throughput_msgs_s(),
            s.p50_ms,
            s.p99_ms,
            s.p999_ms,
            s.max_ms,
            fmt_opt(r.broker_cpu_cores, 2),
            r.client_cpu_cores,
            fmt_opt(r.broker_rss_bytes.map(|b| b as f64 / MB), 1),
            r.errors
        );
    }
    for r in &report.results {
        if let Some((mb, mb_s)) = r.history {
            let _ = writeln!(
                md,
                "\nHistory on {}: {mb:.0} MB written at {mb_s:.1} MB/s before the readers started.",
                r.brokers
            );
        }
        if r.skipped_control_batches > 0 {
            let _ = writeln!(
                md,
                "\nOn {} the readers stepped over {} control batches the rskafka client cannot decode (Oxbow's Raft entries; no data).",
                r.brokers, r.skipped_control_batches
            );
        }
        if let Some(e) = &r.first_error {
            let _ = writeln!(md, "\nFirst error on {}: `{e}`", r.brokers);
        }
        match &r.broker_fdatasyncs {
            Some(Ok(f)) => {
                let _ = writeln!(
                    md,
                    "\nThe broker's own fdatasyncs over the window (its `/metrics`, from each group-commit round's start, ring queueing included): {} ({:.0}/s), mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms.",
                    f.count,
                    f.count as f64 / r.elapsed_s.max(1e-9),
                    f.mean_ms,
                    f.p50_ms,
                    f.p99_ms
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(md, "\nThe broker's /metrics could not be read: {e}");
            }
            None => {}
        }
        if load.workload == Workload::E2e {
            let p = r.produced.summary();
            let _ = writeln!(
                md,
                "\nProduce latency on {} during the e2e run: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {} messages read back.",
                r.brokers,
                p.p50_ms,
                p.p99_ms,
                p.max_ms,
                r.consumed.messages()
            );
        }
    }
    let _ = writeln!(md, "\n## Against the machine's limits (measured in this run)\n");
    write_limits(&mut md, &report.limit);
    let _ = writeln!(
        md,
        "\n**Throughput / limit: {}**",
        fmt_opt(report.ratio.map(|r| r * 100.0), 1) + "%"
    );
    write_goals(&mut md, options, report);
    let _ = writeln!(md, "\n![latency and throughput]({stem}.svg)\n");
    let _ = writeln!(md, "Per-second figures: [`{stem}.csv`]({stem}.csv); latency distribution: [`{stem}.percentiles.csv`]({stem}.percentiles.csv).\n");
    let _ = writeln!(md, "`{}`", report.summary);
    md
}

fn write_limits(md: &mut String, limit: &LoadLimit) {
    for (what, w) in [
        ("one fdatasync per write", &limit.write_sync_each),
        (
            "one fdatasync per all requests in flight (the limit)",
            &limit.write_group,
        ),
    ] {
        if let Some(w) = w {
            let _ = writeln!(
                md,
                "- O_DIRECT write+fdatasync, {} B writes, {what} ({} writes per sync): {:.1} MB/s, fdatasync p50 {:.3} ms, p99 {:.3} ms",
                w.batch_bytes, w.depth, w.mb_s, w.fsync_p50_ms, w.fsync_p99_ms
            );
        }
    }
    if let Some(r) = limit.direct_read_mb_s {
        let _ = writeln!(md, "- Sequential O_DIRECT read: {r:.1} MB/s");
    }
    if let Some(l) = limit.loopback_mb_s {
        let _ = writeln!(md, "- One loopback TCP stream: {l:.1} MB/s");
    }
    if limit.limit_mb_s.is_none() {
        let _ = writeln!(
            md,
            "- No limit measured (run with `--data-dir` set to the broker's data directory)."
        );
    }
}

fn write_goals(md: &mut String, options: &ClientBenchOptions, report: &ClientBenchReport) {
    let met = |ok: bool| if ok { "met" } else { "**missed**" };
    let main = &report.results[0];
    let p99 = main.headline().summary().p99_ms;
    match options.load.workload {
        Workload::Produce | Workload::E2e => {
            if let Some(ratio) = report.ratio {
                let _ = writeln!(
                    md,
                    "\n- Goal throughput ≥ 70% of the write+fsync limit: {}.",
                    met(ratio >= 0.7)
                );
            }
            match &main.broker_fdatasyncs {
                Some(Ok(f)) => {
                    let _ = writeln!(
                        md,
                        "- Goal p99 ≤ 2 × fdatasync p99 at this load ({:.3} ms, the broker's own): {} (p99 {:.3} ms = {:.2}×).",
                        2.0 * f.p99_ms,
                        met(p99 <= 2.0 * f.p99_ms),
                        p99,
                        p99 / f.p99_ms.max(1e-9)
                    );
                }
                _ => {
                    let _ = writeln!(
                        md,
                        "- Goal p99 ≤ 2 × fdatasync p99 at this load: not measured (give `--broker-metrics` the broker's admin address)."
                    );
                }
            }
            if let Some(group) = &report.limit.write_group {
                let _ = writeln!(
                    md,
                    "- For reference, p99 against 2 × fdatasync p99 on the otherwise idle disk ({:.3} ms, the limit measurement): {:.2}×.",
                    2.0 * group.fsync_p99_ms,
                    p99 / group.fsync_p99_ms.max(1e-9)
                );
            }
        }
        Workload::Consume => {
            if let Some(ratio) = report.ratio {
                let _ = writeln!(
                    md,
                    "\n- Goal throughput ≥ 50% of min(direct read, loopback): {}.",
                    met(ratio >= 0.5)
                );
            }
        }
    }
    if let Some(peer) = report.results.get(1) {
        let speedup = if peer.throughput_mb_s() > 0.0 {
            main.throughput_mb_s() / peer.throughput_mb_s()
        } else {
            f64::INFINITY
        };
        let peer_p99 = peer.headline().summary().p99_ms;
        let _ = writeln!(
            md,
            "- Goal ≥ 3× the peer's throughput at a lower p99: {} ({speedup:.2}×, p99 {p99:.3} ms vs {peer_p99:.3} ms).",
            met(speedup >= 3.0 && p99 < peer_p99)
        );
    }
}
