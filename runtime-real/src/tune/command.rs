//! The `oxbow tune` command line: its flags, and running it against the roots they
//! name, printing the report. Only a bad configuration or a damaged journal fail the
//! command; whatever the machine refuses is in the report.

use super::fs::{Host, RealFs, Roots};
use super::report::{render_revert, render_tune};
use super::{run_revert, run_tune, TuneOptions};
use crate::config::{NodeConfig, Overrides};
use std::io::Write;
use std::path::PathBuf;

/// `oxbow tune` flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TuneArgs {
    /// TOML configuration file (the node's; `[tune]` switches items off).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (its disk is tuned, the change journal is kept there).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Restore every change recorded in the journal.
    #[arg(long, conflicts_with = "dry_run")]
    pub revert: bool,
    /// Shard cores (as `oxbow start --cores`): IRQs go to the other cores.
    #[arg(long)]
    pub cores: Option<String>,
    /// A directory holding `sys/` and `proc/` to use instead of `/sys` and `/proc`.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// sysfs root (default /sys).
    #[arg(long)]
    pub root_sys: Option<PathBuf>,
    /// procfs root (default /proc).
    #[arg(long)]
    pub root_proc: Option<PathBuf>,
}

impl TuneArgs {
    /// The roots the flags name.
    pub fn roots(&self) -> Roots {
        let mut roots = self.root.as_deref().map_or_else(Roots::default, Roots::under);
        if let Some(sys) = &self.root_sys {
            roots.sys = sys.clone();
        }
        if let Some(proc) = &self.root_proc {
            roots.proc = proc.clone();
        }
        roots
    }
}

/// Runs `oxbow tune` with `args`, writing the report to `out`.
pub fn run(args: &TuneArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = NodeConfig::load(
        args.config.as_deref(),
        Overrides {
            data_dir: args.data_dir.clone(),
            cores: args.cores.clone(),
            ..Overrides::default()
        },
    )?;
    let host = Host {
        roots: args.roots(),
        fs: &RealFs,
    };
    if args.revert {
        let report = run_revert(&host, &config.node.data_dir)?;
        write!(out, "{}", render_revert(&report))?;
        return Ok(());
    }
    let options = TuneOptions {
        data_dir: config.node.data_dir.clone(),
        settings: config.tune.clone(),
        shard_cores: config.cores()?,
        memory_bytes: config.node.memory_bytes,
        dry_run: args.dry_run,
    };
    let report = run_tune(&host, &options)?;
    write!(out, "{}", render_tune(&report))?;
    Ok(())
}
