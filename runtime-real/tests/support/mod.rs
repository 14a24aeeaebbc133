//! Shared by the tests that drive a whole node with rskafka: a single node on loopback
//! in a temporary directory, and a client of a fresh one-partition topic on it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{start, NodeHandle};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use std::path::Path;
use std::time::{Duration, Instant};

/// A single node with its data in `data_dir`, every listener on a free loopback port.
pub fn start_node(data_dir: &Path) -> NodeHandle {
    let overrides = Overrides {
        data_dir: Some(data_dir.to_path_buf()),
        kafka_addr: Some("127.0.0.1:0".to_string()),
        admin_addr: Some("127.0.0.1:0".to_string()),
        rpc_addr: Some("127.0.0.1:0".to_string()),
        ..Overrides::default()
    };
    start(NodeConfig::load(None, overrides).unwrap()).unwrap()
}

/// A client of `node`, and of partition 0 of `topic`, created with one partition.
pub async fn topic_client(node: &NodeHandle, topic: &str) -> (Client, PartitionClient) {
    let client = ClientBuilder::new(vec![node.kafka_addr().to_string()])
        .build()
        .await
        .unwrap();
    client
        .controller_client()
        .unwrap()
        .create_topic(topic, 1, 1, 5_000)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Right after CreateTopics the partition may still elect its leader; rskafka
    // retries against its cached metadata, so each attempt is bounded and followed
    // by a fresh metadata request.
    loop {
        let attempt = client.partition_client(topic, 0, UnknownTopicHandling::Retry);
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(partition)) => return (client, partition),
            _ => {
                assert!(Instant::now() < deadline, "no leader for {topic}/0");
                let _ = client.list_topics().await;
            }
        }
    }
}
