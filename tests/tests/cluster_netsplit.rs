//! A network partition between real broker processes: three brokers, each in its own
//! network namespace (`oxbow_tests::netns`), a topic with three replicas; the leader
//! of its partition is cut off from the other two brokers by `iptables` DROP rules in
//! its namespace while the test still reaches every broker. The minority side stops
//! acknowledging writes (check-quorum makes the isolated leader step down), the
//! majority elects a leader and acknowledged writes go on; once healed, every
//! acknowledged message is stored once, at its offset, offsets contiguous.
//!
//! Skipped, with the reason on stderr, where namespaces cannot be made: not root, no
//! `ip` or `iptables`, a kernel or container that refuses.

use oxbow_tests::cluster::{BrokerSite, TestCluster};
use oxbow_tests::cluster_client::{
    acked_count, check_log, create_topic, leader_of, metric_sum, metrics_page, partition_state, producer,
    read_log, send, wait_for_brokers, wait_until, Deliveries,
};
use oxbow_tests::netns::NetLab;
use rdkafka::producer::{BaseProducer, Producer};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

const PROGRAM: &str = env!("CARGO_BIN_EXE_oxbow-test-node");
const TOPIC: &str = "split";
/// Every broker has its own namespace, so all use the default ports.
const KAFKA_PORT: u16 = 9092;
const RPC_PORT: u16 = 33145;
const ADMIN_PORT: u16 = 9644;
/// How long a connection attempt across the cut may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// (offset, value) of every message `producer` had acknowledged.
fn acked_offsets(producer: &BaseProducer<Deliveries>) -> Vec<(i64, String)> {
    let acked = producer.context().acked.lock().unwrap();
    acked
        .iter()
        .map(|(_, offset, value)| (*offset, value.clone()))
        .collect()
}

fn socket(addr: &str) -> SocketAddr {
    addr.parse().expect("an IP:port address")
}

#[test]
fn a_partitioned_leader_stops_acknowledging_and_the_majority_goes_on() {
    let mut lab = match NetLab::create(3) {
        Ok(lab) => lab,
        Err(reason) => {
            eprintln!("skipped: the network-partition test needs network namespaces: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let sites = lab
        .members()
        .iter()
        .enumerate()
        .map(|(index, member)| BrokerSite {
            kafka_addr: format!("{}:{KAFKA_PORT}", member.addr),
            admin_addr: format!("{}:{ADMIN_PORT}", member.addr),
            rpc_addr: format!("{}:{RPC_PORT}", member.addr),
            command_prefix: lab.exec_prefix(index),
        })
        .collect();
    // Declared after the lab: dropped first, so the brokers stop before their
    // namespaces go.
    let cluster = TestCluster::start_at(Path::new(PROGRAM), dir.path(), sites);
    let brokers = cluster.bootstrap();
    wait_for_brokers(&brokers, 3);
    create_topic(&brokers, TOPIC, 1, 3);
    wait_until("every replica in sync", Duration::from_secs(60), || {
        partition_state(&brokers, TOPIC, 0).is_some_and(|(leader, _, isr)| leader >= 0 && isr.len() == 3)
    });
    let everyone = producer(&brokers, 120_000);
    send(&everyone, TOPIC, "before", 0, 300);
    everyone.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(acked_count(&everyone), 300, "acknowledged before the partition");

    // Cut the partition's leader off from its peers.
    let leader = leader_of(&brokers, TOPIC, 0).expect("a leader");
    let isolated = usize::try_from(leader - 1).expect("a broker id");
    let peers: Vec<usize> = (0..3).filter(|i| *i != isolated).collect();
    let led_before = metric_sum(
        &metrics_page(&cluster.brokers[isolated].admin_addr),
        "oxbow_cluster_partitions_led",
    );
    assert!(led_before >= 1.0, "broker {leader} leads {TOPIC}/0");
    eprintln!("broker {leader} leads {TOPIC}/0: cutting it off from its peers");
    lab.isolate(isolated).unwrap();

    // The cut is real: no connection across it either way, while the peers still
    // reach each other and the test reaches the isolated broker.
    for &peer in &peers {
        let peer_rpc = socket(&cluster.brokers[peer].rpc_addr);
        let isolated_rpc = socket(&cluster.brokers[isolated].rpc_addr);
        assert!(
            !lab.connects_from(isolated, peer_rpc, CONNECT_TIMEOUT).unwrap(),
            "isolated broker {leader} still reaches {peer_rpc}"
        );
        assert!(
            !lab.connects_from(peer, isolated_rpc, CONNECT_TIMEOUT).unwrap(),
            "{peer_rpc}'s broker still reaches the isolated {isolated_rpc}"
        );
    }
    let other_rpc = socket(&cluster.brokers[peers[1]].rpc_addr);
    assert!(
        lab.connects_from(peers[0], other_rpc, CONNECT_TIMEOUT).unwrap(),
        "the majority's brokers reach each other"
    );
    let isolated_kafka = cluster.brokers[isolated].kafka_addr.clone();
    assert!(
        TcpStream::connect_timeout(&socket(&isolated_kafka), CONNECT_TIMEOUT).is_ok(),
        "the test reaches the isolated broker"
    );

    // The minority side: a producer inside the isolated broker's namespace (it can
    // reach no other broker) gets no acknowledgement.
    let (minority_acked, minority_failed) = lab
        .run_in(isolated, || {
            let minority = producer(&isolated_kafka, 10_000);
            send(&minority, TOPIC, "minority", 0, 50);
            let _ = minority.flush(Duration::from_secs(60));
            let failed = minority.context().failed.lock().unwrap().len();
            (acked_count(&minority), failed)
        })
        .unwrap();
    eprintln!("minority side: {minority_acked} acknowledged, {minority_failed} refused");
    assert_eq!(minority_acked, 0, "no write acknowledged on the minority side");
    assert_eq!(minority_failed, 50, "every minority write refused");
    let admin_addr = cluster.brokers[isolated].admin_addr.clone();
    wait_until(
        "the isolated leader to step down",
        Duration::from_secs(60),
        || metric_sum(&metrics_page(&admin_addr), "oxbow_cluster_partitions_led") < led_before,
    );

    // The majority side elects a leader and acknowledges writes.
    let majority = peers
        .iter()
        .map(|&i| cluster.brokers[i].kafka_addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    wait_until("a leader on the majority side", Duration::from_secs(60), || {
        leader_of(&majority, TOPIC, 0).is_some_and(|l| l != leader)
    });
    eprintln!(
        "majority side: broker {} leads {TOPIC}/0",
        leader_of(&majority, TOPIC, 0).unwrap_or(-1)
    );
    let majority_producer = producer(&majority, 90_000);
    send(&majority_producer, TOPIC, "majority", 0, 300);
    majority_producer.flush(Duration::from_secs(90)).unwrap();
    assert_eq!(
        acked_count(&majority_producer),
        300,
        "writes acknowledged by the majority; failed: {:?}",
        majority_producer.context().failed.lock().unwrap().first()
    );

    // Heal: the isolated broker catches up and the first producer goes on.
    lab.heal().unwrap();
    let peer_rpc = socket(&cluster.brokers[peers[0]].rpc_addr);
    wait_until("the cut healed", Duration::from_secs(30), || {
        lab.connects_from(isolated, peer_rpc, CONNECT_TIMEOUT).unwrap()
    });
    // Back in sync, and led by its preferred replica again.
    wait_until(
        "the preferred leader back, every replica in sync",
        Duration::from_secs(90),
        || {
            partition_state(&brokers, TOPIC, 0)
                .is_some_and(|(leader, replicas, isr)| replicas.first() == Some(&leader) && isr.len() == 3)
        },
    );
    send(&everyone, TOPIC, "after", 300, 300);
    everyone.flush(Duration::from_secs(120)).unwrap();
    assert_eq!(
        acked_count(&everyone),
        600,
        "writes acknowledged after healing; failed: {:?}",
        everyone.context().failed.lock().unwrap().first()
    );

    // Every acknowledged message once, at its offset; offsets contiguous (the only
    // records between them are new leaders' control records); nothing else, so none
    // of the minority's refused writes survived the heal.
    let mut log = Vec::new();
    let mut leader_now = -1;
    wait_until(
        "the whole log read from the leader",
        Duration::from_secs(60),
        || {
            let Some(leader) = leader_of(&brokers, TOPIC, 0) else {
                return false;
            };
            leader_now = leader;
            let addr = &cluster.brokers[usize::try_from(leader - 1).expect("a broker id")].kafka_addr;
            match read_log(addr, TOPIC, 0) {
                Ok(read) => log = read,
                Err(e) => eprintln!("reading {TOPIC}/0 from broker {leader}: {e}; retrying"),
            }
            !log.is_empty()
        },
    );
    let mut acked = acked_offsets(&everyone);
    acked.extend(acked_offsets(&majority_producer));
    let stored = check_log(&acked, &log);
    eprintln!(
        "healed: broker {leader_now} leads; {} records stored, {} control records between them",
        stored.len(),
        log.len() - stored.len()
    );
    assert_eq!(
        stored.len(),
        acked.len(),
        "nothing stored but what was acknowledged"
    );
    assert!(
        !stored.iter().any(|v| v.starts_with("minority-")),
        "a write refused on the minority side was kept"
    );
}
