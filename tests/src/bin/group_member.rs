//! `oxbow-group-member BROKERS TOPIC GROUP PROTOCOL`: one member of a consumer group as
//! a separate process (librdkafka), for tests that kill a member with SIGKILL and watch
//! the group move its partitions. `PROTOCOL` is `classic` or `consumer` (KIP-848).
//! Prints `assigned P,P,…` each time its assignment changes. With
//! `OXBOW_TEST_RDKAFKA_DEBUG=cgrp,…` set, librdkafka's debug log goes to stderr.

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::ClientContext;
use std::io::Write;
use std::time::Duration;

/// Sends librdkafka's log to stderr.
struct StderrLog;

impl ClientContext for StderrLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("rdkafka {level:?} {fac}: {log_message}");
    }
}

impl ConsumerContext for StderrLog {}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, group, protocol] = args.as_slice() else {
        anyhow::bail!("usage: oxbow-group-member BROKERS TOPIC GROUP classic|consumer");
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if protocol == "classic" {
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    if let Ok(debug) = std::env::var("OXBOW_TEST_RDKAFKA_DEBUG") {
        config.set("debug", debug).set_log_level(RDKafkaLogLevel::Debug);
    }
    let consumer: BaseConsumer<StderrLog> = config.create_with_context(StderrLog)?;
    consumer.subscribe(&[topic.as_str()])?;
    let mut last = String::new();
    loop {
        let _ = consumer.poll(Duration::from_millis(100));
        let assigned: Vec<String> = consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| e.partition().to_string())
            .collect();
        let line = assigned.join(",");
        if line != last {
            println!("assigned {line}");
            std::io::stdout().flush()?;
            last = line;
        }
    }
}
