//! rskafka (the bench's pure-Rust client) against a real node: the requests it sends
//! that the bench used to work around — ListOffsets (v3) for earliest and latest
//! offsets, and a fetch that may not wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::start;
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn list_offsets_and_fetch_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        kafka_addr: Some("127.0.0.1:0".to_string()),
        admin_addr: Some("127.0.0.1:0".to_string()),
        rpc_addr: Some("127.0.0.1:0".to_string()),
        ..Overrides::default()
    };
    let node = start(NodeConfig::load(None, overrides).unwrap()).unwrap();
    let brokers = node.kafka_addr().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = ClientBuilder::new(vec![brokers]).build().await.unwrap();
        client
            .controller_client()
            .unwrap()
            .create_topic("compat", 1, 1, 5_000)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Right after CreateTopics the partition may still elect its leader; rskafka
        // retries against its cached metadata, so each attempt is bounded and followed
        // by a fresh metadata request.
        let partition = loop {
            let attempt = client.partition_client("compat", 0, UnknownTopicHandling::Retry);
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(p)) => break p,
                _ => {
                    assert!(Instant::now() < deadline, "no leader for compat/0");
                    let _ = client.list_topics().await;
                }
            }
        };
        let record = Record {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: BTreeMap::new(),
            timestamp: rskafka::chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        };
        let offsets = partition
            .produce(vec![record.clone(), record], Compression::NoCompression)
            .await
            .unwrap();
        let earliest = partition.get_offset(OffsetAt::Earliest).await.unwrap();
        let latest = partition.get_offset(OffsetAt::Latest).await.unwrap();
        assert_eq!(earliest, 0);
        assert_eq!(latest, offsets[1] + 1);
        let (_, high_watermark) = partition.fetch_records(latest, 1..1024, 0).await.unwrap();
        assert_eq!(high_watermark, latest);
    });
    node.stop().unwrap();
}
