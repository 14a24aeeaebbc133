//! rskafka (the bench's pure-Rust client) against a real node: the requests it sends
//! that the bench used to work around — ListOffsets (v3) for earliest and latest
//! offsets, and a fetch that may not wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rskafka::client::partition::{Compression, OffsetAt};
use rskafka::record::Record;
use std::collections::BTreeMap;

#[test]
fn list_offsets_and_fetch_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let node = support::start_node(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_client, partition) = support::topic_client(&node, "compat").await;
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
