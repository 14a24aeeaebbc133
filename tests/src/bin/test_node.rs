//! `oxbow-test-node DATA_DIR KAFKA_ADDR ADMIN_ADDR`: one Oxbow node as a separate
//! process, for tests that kill it with signals. Same start-up as `oxbow start`.

use oxbow_runtime_real::config::{NodeConfig, Overrides};
use oxbow_runtime_real::node::{block_shutdown_signals, start, wait_for_shutdown_signal};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    block_shutdown_signals();
    // Log to stderr like `oxbow start`, so a failing test shows what the node saw.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut args = std::env::args().skip(1);
    let usage = "usage: oxbow-test-node DATA_DIR KAFKA_ADDR ADMIN_ADDR";
    let data_dir = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!(usage))?);
    let kafka_addr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let admin_addr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let overrides = Overrides {
        data_dir: Some(data_dir),
        kafka_addr: Some(kafka_addr),
        admin_addr: Some(admin_addr),
        rpc_addr: Some("127.0.0.1:0".to_string()),
        ..Overrides::default()
    };
    let node = start(NodeConfig::load(None, overrides)?)?;
    println!("ready {}", node.kafka_addr());
    wait_for_shutdown_signal();
    node.stop()?;
    Ok(())
}
