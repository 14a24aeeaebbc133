//! Shared by the tests that drive a whole node with rskafka: a single node on loopback
//! in a temporary directory, and a client of a fresh one-partition topic on it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{start, NodeHandle};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::BackoffConfig;
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

/// A client of `brokers` whose retries of retriable errors stop after 20 s. rskafka's
/// default backs off up to 500 s between tries and never gives up, so a broker that
/// keeps answering NOT_LEADER_OR_FOLLOWER would hang a test instead of failing it.
pub async fn client(brokers: String) -> Client {
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        base: 2.0,
        deadline: Some(Duration::from_secs(20)),
    };
    let built = ClientBuilder::new(vec![brokers]).backoff_config(backoff).build();
    tokio::time::timeout(Duration::from_secs(30), built)
        .await
        .expect("the client connects within 30 s")
        .unwrap()
}

/// A client of `node`, and of partition 0 of `topic`, created with one partition.
pub async fn topic_client(node: &NodeHandle, topic: &str) -> (Client, PartitionClient) {
    let client = client(node.kafka_addr().to_string()).await;
    client
        .controller_client()
        .unwrap()
        .create_topic(topic, 1, 1, 5_000)
        .await
        .unwrap();
    let partition = partition_client(&client, topic, 0).await;
    (client, partition)
}

/// A client of partition `partition` of `topic`, once the partition has a leader.
///
/// Right after CreateTopics (or a restart) the partition may still elect its leader,
/// and rskafka keeps retrying against the metadata it cached — which says "no leader"
/// — without ever asking again. So each attempt is bounded and followed by a fresh
/// metadata request, which replaces that cache.
pub async fn partition_client(client: &Client, topic: &str, partition: i32) -> PartitionClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = client.partition_client(topic, partition, UnknownTopicHandling::Retry);
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(partition)) => return partition,
            failed => {
                assert!(
                    Instant::now() < deadline,
                    "no leader for {topic}/{partition} in 30 s: {failed:?}"
                );
                let _ = tokio::time::timeout(Duration::from_secs(5), client.list_topics()).await;
            }
        }
    }
}
