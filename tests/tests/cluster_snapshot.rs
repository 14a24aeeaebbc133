//! The controller's snapshot written and used, with real broker processes: after a
//! run of metadata commands (topic creations) a broker's
//! `oxbow/controller/0_0/snapshot` holds them; killed with SIGKILL and started again,
//! the broker says in its start-up log that it hydrated its controller from that
//! snapshot, and it serves the same metadata as the others.

use oxbow_core::controller::{ControllerConfig, SnapshotFile};
use oxbow_tests::cluster::TestCluster;
use oxbow_tests::cluster_client::{create_topic, wait_for_brokers, wait_until};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const PROGRAM: &str = env!("CARGO_BIN_EXE_oxbow-test-node");
/// Topics created before the restart (each one controller command).
const TOPICS: usize = 8;
/// The start-up log line's beginning.
const HYDRATED: &str = "controller: hydrated from snapshot at index ";

/// The topics the controller snapshot under `data_dir` holds, if there is one.
fn snapshot_topics(data_dir: &Path) -> Option<Vec<String>> {
    let path = data_dir.join("oxbow/controller/0_0/snapshot");
    let bytes = std::fs::read(path).ok()?;
    let file = SnapshotFile::decode(&bytes, ControllerConfig::default().max_snapshot_bytes).ok()?;
    Some(file.state.metadata.topics.keys().cloned().collect())
}

/// Topic → replicas of each partition, as the broker(s) at `brokers` report them.
fn placement(brokers: &str) -> Option<BTreeMap<String, Vec<Vec<i32>>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).ok()?;
    let topics = metadata
        .topics()
        .iter()
        .filter(|t| t.name().starts_with("meta-"))
        .map(|t| {
            let mut partitions: Vec<_> = t
                .partitions()
                .iter()
                .map(|p| (p.id(), p.replicas().to_vec()))
                .collect();
            partitions.sort();
            (
                t.name().to_string(),
                partitions.into_iter().map(|(_, r)| r).collect(),
            )
        })
        .collect();
    Some(topics)
}

/// The number after `key=` in `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn a_restarted_broker_hydrates_its_controller_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(Path::new(PROGRAM), dir.path(), 3);
    let brokers = cluster.bootstrap();
    wait_for_brokers(&brokers, 3);
    let names: Vec<String> = (0..TOPICS).map(|i| format!("meta-{i}")).collect();
    let (last, rapid) = names.split_last().expect("topics");
    for name in rapid {
        create_topic(&brokers, name, 2, 3);
    }
    // Rapid commands are snapshotted within 60 s; one more a while after the last
    // snapshot is snapshotted at once (the policy's one-second window).
    std::thread::sleep(Duration::from_millis(1_500));
    create_topic(&brokers, last, 2, 3);

    // The broker to restart: its snapshot comes to hold every topic.
    let restarted = 2u32;
    let data_dir = cluster.brokers[restarted as usize - 1].data_dir.clone();
    wait_until("a snapshot holding every topic", Duration::from_secs(90), || {
        snapshot_topics(&data_dir).is_some_and(|held| names.iter().all(|n| held.contains(n)))
    });
    // The broker answering Metadata may apply the last topic a moment after broker 2
    // snapshotted it (each broker applies the controller's log on its own).
    let mut expected = BTreeMap::new();
    wait_until("metadata listing every topic", Duration::from_secs(30), || {
        expected = placement(&brokers).unwrap_or_default();
        expected.len() == TOPICS
    });

    cluster.kill(restarted);
    cluster.restart(restarted);

    // Its start-up log (the log file starts afresh with each start).
    let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(HYDRATED))
        .unwrap_or_else(|| panic!("no hydration line in the start-up log:\n{log}"));
    eprintln!("start-up log: {line}");
    assert!(
        field(line, "index").is_some_and(|index| index > 0),
        "the snapshot's index in {line:?}"
    );
    assert!(
        field(line, "topics").is_some_and(|topics| topics >= TOPICS as u64),
        "every topic hydrated: {line:?}"
    );

    // Asked alone, the restarted broker lists the same topics with the same replicas.
    let only_restarted = cluster.brokers[restarted as usize - 1].kafka_addr.clone();
    wait_until(
        "the same metadata from the restarted broker",
        Duration::from_secs(60),
        || placement(&only_restarted).is_some_and(|seen| seen == expected),
    );
}
