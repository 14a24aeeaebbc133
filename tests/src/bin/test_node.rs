//! `oxbow-test-node DATA_DIR KAFKA_ADDR ADMIN_ADDR [NODE_ID RPC_ADDR SEEDS [CONFIG]]`:
//! one Oxbow node as a separate process, for tests that kill it with signals. Same
//! start-up as `oxbow start`; with the next three, a member of a cluster (`--node-id`,
//! `--rpc-addr`, `--seeds`); with CONFIG, that configuration file (`--config`).

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
    let usage = "usage: oxbow-test-node DATA_DIR KAFKA_ADDR ADMIN_ADDR [NODE_ID RPC_ADDR SEEDS [CONFIG]]";
    let data_dir = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!(usage))?);
    let kafka_addr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let admin_addr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let node_id = args.next().map(|id| id.parse::<i32>()).transpose()?;
    let rpc_addr = args.next().unwrap_or_else(|| "127.0.0.1:0".to_string());
    let seeds = args
        .next()
        .map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>());
    let config_file = args.next().map(PathBuf::from);
    let overrides = Overrides {
        data_dir: Some(data_dir),
        kafka_addr: Some(kafka_addr),
        admin_addr: Some(admin_addr),
        rpc_addr: Some(rpc_addr),
        node_id,
        seeds,
        ..Overrides::default()
    };
    let node = start(NodeConfig::load(config_file.as_deref(), overrides)?)?;
    println!("ready {}", node.kafka_addr());
    wait_for_shutdown_signal();
    node.stop()?;
    Ok(())
}
