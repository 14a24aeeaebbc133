//! `oxbow tune`: the platform tuner. It inspects the machine for Oxbow (the data
//! directory's file system and disk, CPUs, IRQs, memory and kernel limits), applies
//! what it is allowed to — one switchable item per concern — and journals every
//! change with its old value so `oxbow tune --revert` restores it. Whatever the
//! machine refuses (no permission, read-only sysfs, a VM without the knob) is reported,
//! never a failure. All reads and writes go through [`Roots`] (`/sys`, `/proc` by
//! default), so tests run the tuner against fixture trees.
//!
//! * [`fs`] — the roots and the file operations on them (injectable for tests).
//! * [`inspect`] — detection into one [`Inspection`]; [`storage`] (mount, disk,
//!   file-system probes) and [`interrupts`] (IRQs of disks and NICs) feed it.
//! * [`plan`] — changes, their dry run, application and revert; [`journal`] — the
//!   change journal under the data directory.
//! * The items: [`irq`] (`irq_spread`), [`cpu`] (`cpu_governor`, `cpu_idle`),
//!   [`scheduler`] (`disk_scheduler`), [`sysctl`] (`aio_max_nr`, `thp_defrag`),
//!   [`cgroup`] (`cgroup`).
//! * [`report`] — the text `oxbow tune` prints; [`command`] — its flags.

pub mod cgroup;
pub mod command;
pub mod cpu;
pub mod cpulist;
pub mod fs;
pub mod inspect;
pub mod interrupts;
pub mod irq;
pub mod journal;
pub mod plan;
pub mod report;
pub mod scheduler;
pub mod storage;
pub mod sysctl;

pub use fs::{Host, RealFs, RootKind, Roots, TuneFs};
pub use inspect::{inspect, InspectOptions, Inspection};
pub use plan::{Action, Change, ChangeOp, Note, Outcome, Plan, Reverted, TunerItem};

use journal::{journal_path, Journal, JournalError};
use serde::Deserialize;
use std::path::PathBuf;

/// `[tune]`: which items `oxbow tune` applies, and their settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TuneSettings {
    /// Spread disk and NIC IRQs over cores.
    pub irq_spread: bool,
    /// Set the `performance` frequency governor.
    pub cpu_governor: bool,
    /// Disable deep CPU idle states.
    pub cpu_idle: bool,
    /// Idle states with an exit latency above this are disabled.
    pub idle_max_latency_us: u64,
    /// Set the data disk's I/O scheduler.
    pub disk_scheduler: bool,
    /// Raise `fs.aio-max-nr`.
    pub aio_max_nr: bool,
    /// The least `fs.aio-max-nr` wanted.
    pub aio_max_nr_min: u64,
    /// Disable transparent huge page defragmentation.
    pub thp_defrag: bool,
    /// Write a cgroup v2 group for Oxbow.
    pub cgroup: bool,
    /// The group's name under `/sys/fs/cgroup`.
    pub cgroup_name: String,
    /// The group's `memory.max` (0: `node.memory_bytes` plus a quarter and 256 MiB
    /// for the process itself; no limit when that is 0 too).
    pub cgroup_memory_bytes: u64,
    /// Probe the data directory's file system (a scratch file).
    pub probe_fs: bool,
}

impl Default for TuneSettings {
    fn default() -> Self {
        TuneSettings {
            irq_spread: true,
            cpu_governor: true,
            cpu_idle: true,
            idle_max_latency_us: 10,
            disk_scheduler: true,
            aio_max_nr: true,
            aio_max_nr_min: 1_048_576,
            thp_defrag: true,
            cgroup: true,
            cgroup_name: "oxbow".to_string(),
            cgroup_memory_bytes: 0,
            probe_fs: true,
        }
    }
}

impl TuneSettings {
    /// Whether an item is switched on.
    pub fn enabled(&self, item: TunerItem) -> bool {
        match item {
            TunerItem::IrqSpread => self.irq_spread,
            TunerItem::CpuGovernor => self.cpu_governor,
            TunerItem::CpuIdle => self.cpu_idle,
            TunerItem::DiskScheduler => self.disk_scheduler,
            TunerItem::AioMaxNr => self.aio_max_nr,
            TunerItem::ThpDefrag => self.thp_defrag,
            TunerItem::Cgroup => self.cgroup,
        }
    }
}

/// What one `oxbow tune` run works with.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// The node's data directory (its disk is tuned; the journal lives there).
    pub data_dir: PathBuf,
    /// Item switches and settings.
    pub settings: TuneSettings,
    /// The shards' cores (`node.cores`; empty: every core).
    pub shard_cores: Vec<usize>,
    /// The node's memory budget (`node.memory_bytes`; 0: not set).
    pub memory_bytes: u64,
    /// Print the changes instead of making them.
    pub dry_run: bool,
}

/// Why `oxbow tune` could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuneError {
    /// The journal exists but cannot be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What `oxbow tune` found and did.
#[derive(Clone, Debug)]
pub struct TuneReport {
    /// What was detected.
    pub inspection: Inspection,
    /// The plan.
    pub plan: Plan,
    /// Each change and its outcome.
    pub actions: Vec<Action>,
    /// Items switched off in the configuration.
    pub disabled: Vec<TunerItem>,
    /// The journal file.
    pub journal: PathBuf,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Plans every enabled item from an inspection.
pub fn make_plan(host: &Host<'_>, inspection: &Inspection, options: &TuneOptions) -> Plan {
    let settings = &options.settings;
    let mut plan = Plan::default();
    for item in TunerItem::ALL {
        if !settings.enabled(item) {
            continue;
        }
        match item {
            TunerItem::IrqSpread => irq::plan_irq_spread(inspection, &options.shard_cores, &mut plan),
            TunerItem::CpuGovernor => cpu::plan_governor(inspection, &mut plan),
            TunerItem::CpuIdle => cpu::plan_idle(inspection, settings.idle_max_latency_us, &mut plan),
            TunerItem::DiskScheduler => scheduler::plan_scheduler(inspection, &mut plan),
            TunerItem::AioMaxNr => sysctl::plan_aio_max_nr(inspection, settings.aio_max_nr_min, &mut plan),
            TunerItem::ThpDefrag => sysctl::plan_thp_defrag(inspection, &mut plan),
            TunerItem::Cgroup => {
                let memory_max_bytes = match (settings.cgroup_memory_bytes, options.memory_bytes) {
                    (0, 0) => None,
                    (0, node) => Some(node.saturating_add(node / 4).saturating_add(256 << 20)),
                    (explicit, _) => Some(explicit),
                };
                let target = cgroup::CgroupTarget {
                    name: settings.cgroup_name.clone(),
                    cores: options.shard_cores.clone(),
                    memory_max_bytes,
                };
                cgroup::plan_cgroup(host, inspection, &target, &mut plan);
            }
        }
    }
    plan
}

/// `oxbow tune [--dry-run]`: inspect, plan, and apply (journaled) unless a dry run.
pub fn run_tune(host: &Host<'_>, options: &TuneOptions) -> Result<TuneReport, TuneError> {
    let journal_file = journal_path(&options.data_dir);
    // Read the journal first: a damaged one must stop the run before anything changes.
    let mut journal = Journal::load(&journal_file)?;
    let inspection = inspect(
        host,
        &InspectOptions {
            data_dir: options.data_dir.clone(),
            probe_fs: options.settings.probe_fs,
        },
    );
    let plan = make_plan(host, &inspection, options);
    let actions = if options.dry_run {
        plan::dry_run(&plan)
    } else {
        plan::apply(host, &plan, &mut journal)
    };
    Ok(TuneReport {
        inspection,
        plan,
        actions,
        disabled: TunerItem::ALL
            .into_iter()
            .filter(|i| !options.settings.enabled(*i))
            .collect(),
        journal: journal_file,
        dry_run: options.dry_run,
    })
}

/// What `oxbow tune --revert` did.
#[derive(Clone, Debug)]
pub struct RevertReport {
    /// Each journaled change and whether it was restored.
    pub reverted: Vec<Reverted>,
    /// The journal file.
    pub journal: PathBuf,
    /// The journal could not be updated (it still lists restored changes).
    pub save_error: Option<String>,
}

/// `oxbow tune --revert`: restores every journaled change.
pub fn run_revert(host: &Host<'_>, data_dir: &std::path::Path) -> Result<RevertReport, TuneError> {
    let journal_file = journal_path(data_dir);
    let mut journal = Journal::load(&journal_file)?;
    let reverted = plan::revert(host, &mut journal);
    let save_error = journal.save().err().map(|e| e.to_string());
    Ok(RevertReport {
        reverted,
        journal: journal_file,
        save_error,
    })
}
