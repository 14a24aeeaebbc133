//! Shard snapshots rendered in the Prometheus text exposition format (0.0.4).

use crate::shard::runtime::ShardSnapshot;
use crate::storage::latency_histogram::{LatencyHistogram, BUCKET_BOUNDS_US};
use std::fmt::Write as _;

/// One metric family: name, type, help, and its value in a snapshot.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardSnapshot) -> f64,
);

const FAMILIES: &[Family] = &[
    (
        "oxbow_cluster_frames_sent_total",
        "counter",
        "Broker-to-broker frames handed to the transport.",
        |s| s.cluster.frames_sent as f64,
    ),
    (
        "oxbow_cluster_frames_dropped_total",
        "counter",
        "Broker-to-broker frames the transport refused (queue full, unknown peer); Raft sends again.",
        |s| s.cluster.frames_dropped as f64,
    ),
    (
        "oxbow_cluster_raft_messages_dropped_total",
        "counter",
        "Raft messages dropped before framing (too large, outbox full).",
        |s| s.cluster.raft_messages_dropped as f64,
    ),
    (
        "oxbow_cluster_frames_received_total",
        "counter",
        "Broker-to-broker frames received (shard 0).",
        |s| s.cluster.frames_received as f64,
    ),
    (
        "oxbow_cluster_connect_failures_total",
        "counter",
        "Failed connects to peer brokers (shard 0).",
        |s| s.cluster.connect_failures as f64,
    ),
    (
        "oxbow_cluster_connected_peers",
        "gauge",
        "Peer brokers connected now (shard 0).",
        |s| s.cluster.connected_peers as f64,
    ),
    (
        "oxbow_cluster_partitions_led",
        "gauge",
        "Partitions this shard leads.",
        |s| s.cluster.partitions_led as f64,
    ),
    (
        "oxbow_cluster_controller_leader",
        "gauge",
        "1 while this broker leads the controller group (shard 0).",
        |s| s.cluster.controller_leader as f64,
    ),
    (
        "oxbow_cluster_controller_store_errors_total",
        "counter",
        "Controller storage failures (shard 0); the controller waits until restarted.",
        |s| s.cluster.controller_store_errors as f64,
    ),
    (
        "oxbow_bytes_received_total",
        "counter",
        "Bytes received from Kafka clients.",
        |s| s.broker.bytes_in as f64,
    ),
    (
        "oxbow_bytes_sent_total",
        "counter",
        "Bytes sent to Kafka clients.",
        |s| s.broker.bytes_out as f64,
    ),
    (
        "oxbow_connections",
        "gauge",
        "Open Kafka client connections.",
        |s| s.broker.connections as f64,
    ),
    (
        "oxbow_connections_accepted_total",
        "counter",
        "Kafka client connections accepted.",
        |s| s.net.accepted as f64,
    ),
    (
        "oxbow_connections_refused_total",
        "counter",
        "Connections refused at the per-shard limit.",
        |s| s.net.refused as f64,
    ),
    (
        "oxbow_protocol_errors_total",
        "counter",
        "Connections closed for bad input.",
        |s| s.broker.protocol_errors as f64,
    ),
    ("oxbow_partitions", "gauge", "Partition replicas hosted.", |s| {
        s.broker.partitions as f64
    }),
    (
        "oxbow_partition_errors",
        "gauge",
        "Partitions that could not be started.",
        |s| s.broker.partition_errors as f64,
    ),
    (
        "oxbow_produce_latency_seconds_sum",
        "counter",
        "Sum of produce request latencies.",
        |s| s.broker.produce_latency_ns as f64 / 1e9,
    ),
    (
        "oxbow_produce_latency_seconds_count",
        "counter",
        "Produce requests answered.",
        |s| s.broker.produce_count as f64,
    ),
    (
        "oxbow_fetch_latency_seconds_sum",
        "counter",
        "Sum of fetch request latencies (long polls included).",
        |s| s.broker.fetch_latency_ns as f64 / 1e9,
    ),
    (
        "oxbow_fetch_latency_seconds_count",
        "counter",
        "Fetch requests answered.",
        |s| s.broker.fetch_count as f64,
    ),
    (
        "oxbow_disk_written_bytes_total",
        "counter",
        "Bytes appended to log segments.",
        |s| s.disk.written_bytes as f64,
    ),
    (
        "oxbow_disk_fdatasyncs_total",
        "counter",
        "fdatasync calls on log segments.",
        |s| s.disk.fdatasyncs as f64,
    ),
    (
        "oxbow_disk_appends_total",
        "counter",
        "Appends to log segments (a batch or several written together).",
        |s| s.disk.appends as f64,
    ),
    (
        "oxbow_disk_transfers_total",
        "counter",
        "Aligned segment writes submitted to the disk (an append may take several).",
        |s| s.disk.transfers as f64,
    ),
    (
        "oxbow_disk_syncs_completed_total",
        "counter",
        "Log syncs reported durable; each fdatasync (group commit) answers one or more.",
        |s| s.disk.syncs_completed as f64,
    ),
    (
        "oxbow_disk_dir_syncs_total",
        "counter",
        "Directory fsyncs.",
        |s| s.disk.dir_syncs as f64,
    ),
    (
        "oxbow_disk_failures_total",
        "counter",
        "Failed disk operations.",
        |s| s.disk.failures as f64,
    ),
    (
        "oxbow_kv_flushes_total",
        "counter",
        "Per-shard key-value log flushes (one fdatasync each).",
        |s| s.disk.kv_flushes as f64,
    ),
    (
        "oxbow_metadata_writes_total",
        "counter",
        "Node metadata files written.",
        |s| s.disk.metadata_writes as f64,
    ),
    (
        "oxbow_raft_messages_dropped_total",
        "counter",
        "Raft messages dropped (no peers on a single node).",
        |s| s.raft_messages_dropped as f64,
    ),
    (
        "oxbow_raft_elections_total",
        "counter",
        "Elections the shard's partition replicas started.",
        |s| s.raft.elections_started as f64,
    ),
    (
        "oxbow_raft_leaderships_total",
        "counter",
        "Times a partition replica of the shard became leader.",
        |s| s.raft.became_leader as f64,
    ),
    (
        "oxbow_raft_check_quorum_step_downs_total",
        "counter",
        "Leaders that stepped down for lack of a quorum heard from.",
        |s| s.raft.check_quorum_step_downs as f64,
    ),
    (
        "oxbow_raft_truncations_total",
        "counter",
        "Log suffixes a partition replica removed to follow its leader.",
        |s| s.raft.truncations as f64,
    ),
    (
        "oxbow_raft_snapshots_sent_total",
        "counter",
        "Partition snapshots streamed to followers behind the retained log.",
        |s| s.raft.snapshots_sent as f64,
    ),
    (
        "oxbow_raft_snapshots_installed_total",
        "counter",
        "Partition snapshots installed from a leader.",
        |s| s.raft.snapshots_installed as f64,
    ),
    (
        "oxbow_raft_retransmits_total",
        "counter",
        "Appends re-sent after the retransmit timeout.",
        |s| s.raft.retransmits as f64,
    ),
    (
        "oxbow_raft_acknowledged_entries_lost_total",
        "counter",
        "Followers found to have lost entries they had acknowledged as durable (a disk that lies, or a bug): alert on any.",
        |s| s.raft.acknowledged_entries_lost as f64,
    ),
    (
        "oxbow_smp_messages_sent_total",
        "counter",
        "Messages sent to other shards.",
        |s| s.smp_sent as f64,
    ),
    (
        "oxbow_smp_overflow",
        "gauge",
        "Messages held back by full queues to other shards.",
        |s| s.smp_overflow as f64,
    ),
    (
        "oxbow_memory_request_window_bytes",
        "gauge",
        "The shard's request window (half its memory budget).",
        |s| s.admission.window_bytes as f64,
    ),
    (
        "oxbow_memory_request_bytes",
        "gauge",
        "Request bytes the shard holds now (reserved from its window).",
        |s| s.admission.used_bytes as f64,
    ),
    (
        "oxbow_memory_request_peak_bytes",
        "gauge",
        "Most request bytes the shard has held.",
        |s| s.admission.peak_used_bytes as f64,
    ),
    (
        "oxbow_memory_waits_total",
        "counter",
        "Times a connection stopped being read because the request window was full.",
        |s| s.admission.waits as f64,
    ),
    (
        "oxbow_memory_send_queued_bytes",
        "gauge",
        "Response bytes queued on sockets.",
        |s| s.queued_send_bytes as f64,
    ),
    (
        "oxbow_group_rebalances_total",
        "counter",
        "Consumer-group rebalances completed by this shard's coordinators.",
        |s| s.groups.rebalances as f64,
    ),
    (
        "oxbow_group_offset_commits_total",
        "counter",
        "Offsets committed to this shard's group coordinators.",
        |s| s.groups.offset_commits as f64,
    ),
    (
        "oxbow_txn_ongoing",
        "gauge",
        "Transactions open or ending at this shard's transaction coordinators.",
        |s| s.txns.ongoing as f64,
    ),
    (
        "oxbow_txn_commits_total",
        "counter",
        "Transactions committed by this shard's coordinators (every marker written).",
        |s| s.txns.coordinators.commits as f64,
    ),
    (
        "oxbow_txn_aborts_total",
        "counter",
        "Transactions aborted by this shard's coordinators (timeouts included).",
        |s| s.txns.coordinators.aborts as f64,
    ),
    (
        "oxbow_txn_timeouts_aborted_total",
        "counter",
        "Transactions this shard's coordinators aborted because they outlived their timeout.",
        |s| s.txns.coordinators.timeouts as f64,
    ),
    (
        "oxbow_txn_fenced_total",
        "counter",
        "Coordinator requests refused for naming a fenced producer epoch or id.",
        |s| s.txns.coordinators.fenced as f64,
    ),
    (
        "oxbow_txn_verification_failures_total",
        "counter",
        "Transactional produces refused by KIP-890 verification (partition not in the transaction).",
        |s| s.txns.coordinators.verification_failures as f64,
    ),
    (
        "oxbow_txn_parked_total",
        "counter",
        "Coordinator requests that waited for their transactional id's ending transaction.",
        |s| s.txns.coordinators.parked as f64,
    ),
    (
        "oxbow_txn_park_timeouts_total",
        "counter",
        "Parked coordinator requests answered CONCURRENT_TRANSACTIONS after txn.ending_wait_ms.",
        |s| s.txns.coordinators.park_timeouts as f64,
    ),
    (
        "oxbow_txn_epoch_bumps_total",
        "counter",
        "Server-side producer epoch bumps at EndTxn (transaction protocol v2).",
        |s| s.txns.coordinators.epoch_bumps as f64,
    ),
    (
        "oxbow_txn_markers_total",
        "counter",
        "Transaction markers this shard's coordinators had written.",
        |s| s.txns.coordinators.markers as f64,
    ),
    (
        "oxbow_producers_tracked",
        "gauge",
        "Producers tracked by the producer state of this shard's partitions.",
        |s| s.txns.producers as f64,
    ),
    (
        "oxbow_memory_send_window_pauses_total",
        "counter",
        "Times reading stopped because queued responses exceeded the send window.",
        |s| s.send_window_pauses as f64,
    ),
    (
        "oxbow_tier_archivers",
        "gauge",
        "Tiered partitions led by this shard (archivers running).",
        |s| s.tier.archivers as f64,
    ),
    (
        "oxbow_tier_uploads_total",
        "counter",
        "Segment uploads completed.",
        |s| s.tier.archiver.uploads_completed as f64,
    ),
    (
        "oxbow_tier_uploaded_bytes_total",
        "counter",
        "Segment bytes uploaded.",
        |s| s.tier.archiver.uploaded_bytes as f64,
    ),
    (
        "oxbow_tier_upload_failures_total",
        "counter",
        "Segment uploads that failed (retried with backoff).",
        |s| s.tier.archiver.upload_failures as f64,
    ),
    (
        "oxbow_tier_manifest_puts_total",
        "counter",
        "Partition manifests written.",
        |s| s.tier.archiver.manifest_puts as f64,
    ),
    (
        "oxbow_tier_store_errors_total",
        "counter",
        "Object-store errors the archivers saw (retried with backoff).",
        |s| s.tier.archiver.store_errors as f64,
    ),
    (
        "oxbow_tier_store_timeouts_total",
        "counter",
        "Object-store timeouts the archivers saw.",
        |s| s.tier.archiver.timeouts as f64,
    ),
    (
        "oxbow_tier_store_throttled_total",
        "counter",
        "Object-store throttling the archivers saw.",
        |s| s.tier.archiver.throttled as f64,
    ),
    (
        "oxbow_tier_spills_total",
        "counter",
        "Manifest entries spilled into archived manifests (archives written).",
        |s| s.tier.archiver.spills as f64,
    ),
    (
        "oxbow_tier_objects_deleted_total",
        "counter",
        "Remote objects deleted (total retention, orphans).",
        |s| s.tier.archiver.objects_deleted as f64,
    ),
    (
        "oxbow_tier_manifest_lost_total",
        "counter",
        "Archivers that found a lineage marker but no manifest (the manifest was lost): they upload and delete nothing until it is restored.",
        |s| s.tier.archiver.manifest_lost as f64,
    ),
    (
        "oxbow_tier_lineage_marks_total",
        "counter",
        "Lineage markers written (once a partition's first manifest is durable).",
        |s| s.tier.archiver.lineage_marks as f64,
    ),
    (
        "oxbow_tier_backlog_offsets",
        "gauge",
        "Committed offsets not yet uploaded (upload lag).",
        |s| s.tier.backlog.not_uploaded_offsets as f64,
    ),
    (
        "oxbow_tier_backlog_bytes",
        "gauge",
        "Committed bytes not yet uploaded (upload lag).",
        |s| s.tier.backlog.not_uploaded_bytes as f64,
    ),
    (
        "oxbow_tier_not_durable_offsets",
        "gauge",
        "Committed offsets not yet named by a durable manifest.",
        |s| s.tier.backlog.not_durable_offsets as f64,
    ),
    (
        "oxbow_tier_partitions_recovered_total",
        "counter",
        "Partitions hosted from a manifest found in the object store (topic recovery).",
        |s| s.tier.partitions_recovered as f64,
    ),
    (
        "oxbow_tier_recovery_errors_total",
        "counter",
        "Store errors and unreadable manifests met by topic recovery (retried).",
        |s| s.tier.recovery_errors as f64,
    ),
    (
        "oxbow_tier_remote_reads_total",
        "counter",
        "Fetch and ListOffsets requests answered from the object store.",
        |s| s.tier.remote_reads as f64,
    ),
    (
        "oxbow_tier_remote_read_errors_total",
        "counter",
        "Remote reads that failed.",
        |s| s.tier.remote_read_errors as f64,
    ),
    (
        "oxbow_tier_remote_read_bytes_total",
        "counter",
        "Bytes downloaded for remote reads.",
        |s| s.tier.remote_read_bytes as f64,
    ),
    (
        "oxbow_tier_read_chunk_hits_total",
        "counter",
        "Remote-read chunks served from the cache.",
        |s| s.tier.read.chunk_hits as f64,
    ),
    (
        "oxbow_tier_read_chunk_misses_total",
        "counter",
        "Remote-read chunks downloaded.",
        |s| s.tier.read.chunk_misses as f64,
    ),
    (
        "oxbow_store_ops_ok_total",
        "counter",
        "Object-store operations that succeeded (node-wide).",
        |s| s.store[0] as f64,
    ),
    (
        "oxbow_store_errors_total",
        "counter",
        "Object-store operations that failed (node-wide).",
        |s| s.store[1] as f64,
    ),
    (
        "oxbow_store_timeouts_total",
        "counter",
        "Object-store operations that timed out (node-wide).",
        |s| s.store[2] as f64,
    ),
    (
        "oxbow_store_throttled_total",
        "counter",
        "Object-store operations throttled by the store (node-wide).",
        |s| s.store[3] as f64,
    ),
    (
        "oxbow_store_queue_full_total",
        "counter",
        "Object-store operations refused by a full queue (node-wide).",
        |s| s.store[4] as f64,
    ),
    (
        "oxbow_store_put_bytes_total",
        "counter",
        "Bytes uploaded to the object store (node-wide).",
        |s| s.store[5] as f64,
    ),
    (
        "oxbow_store_get_bytes_total",
        "counter",
        "Bytes downloaded from the object store (node-wide).",
        |s| s.store[6] as f64,
    ),
    (
        "oxbow_store_local_read_failures_total",
        "counter",
        "Local segment reads for uploads that failed.",
        |s| s.store_local_read_failures as f64,
    ),
];

/// Group states always exported (zero when no group is in them), classic then
/// consumer (KIP-848); any other state a coordinator reports is added to these.
const GROUP_STATES: &[&str] = &[
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Assigning",
    "Reconciling",
];

/// Writes `oxbow_groups{shard,state}`: the groups each shard coordinates, by state.
fn render_group_states(out: &mut String, snapshots: &[ShardSnapshot]) {
    let _ = writeln!(
        out,
        "# HELP oxbow_groups Consumer groups coordinated, by state.\n# TYPE oxbow_groups gauge"
    );
    for s in snapshots {
        let extra = s
            .groups
            .groups_by_state
            .keys()
            .map(String::as_str)
            .filter(|state| !GROUP_STATES.contains(state));
        for state in GROUP_STATES.iter().copied().chain(extra) {
            let count = s.groups.groups_by_state.get(state).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "oxbow_groups{{shard=\"{}\",state=\"{state}\"}} {count}",
                s.shard
            );
        }
    }
}

/// Writes one histogram family, a series per shard: cumulative `_bucket{le}` counts,
/// `_sum` in seconds and `_count`.
fn render_histogram(out: &mut String, name: &str, help: &str, by_shard: &[(u32, &LatencyHistogram)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (shard, histogram) in by_shard {
        let mut cumulative = 0;
        for (bound_us, count) in BUCKET_BOUNDS_US.iter().zip(histogram.counts) {
            cumulative += count;
            let le = *bound_us as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {}",
            histogram.count()
        );
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{shard}\"}} {}",
            histogram.sum_ns as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {}", histogram.count());
    }
}

/// Renders the snapshots (one label `shard` per series) plus `oxbow_shards` and
/// `oxbow_shards_up`.
pub fn render(snapshots: &[ShardSnapshot], shard_count: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP oxbow_shards Shards configured.\n# TYPE oxbow_shards gauge\noxbow_shards {shard_count}"
    );
    let _ = writeln!(
        out,
        "# HELP oxbow_shards_up Shards that answered this scrape.\n# TYPE oxbow_shards_up gauge\noxbow_shards_up {}",
        snapshots.len()
    );
    let _ = writeln!(
        out,
        "# HELP oxbow_requests_total Kafka requests handled, by API.\n# TYPE oxbow_requests_total counter"
    );
    for s in snapshots {
        for (api, count) in &s.broker.requests {
            let _ = writeln!(
                out,
                "oxbow_requests_total{{shard=\"{}\",api=\"{api}\"}} {count}",
                s.shard
            );
        }
    }
    render_group_states(&mut out, snapshots);
    let fdatasyncs: Vec<_> = snapshots
        .iter()
        .map(|s| (s.shard, &s.disk.fdatasync_latency))
        .collect();
    render_histogram(
        &mut out,
        "oxbow_disk_fdatasync_seconds",
        "Segment fdatasync latency, from the start of its group-commit round to its completion.",
        &fdatasyncs,
    );
    for (name, kind, help, value) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, value(s));
        }
    }
    out
}
