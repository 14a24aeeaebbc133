//! Detection: everything `oxbow tune` reports about the machine, read through the
//! roots ([`Host`]) into one [`Inspection`] that the tuner items plan from. Nothing
//! here writes; a knob that cannot be read is simply absent (`None`, empty).

use super::cpulist::parse_cpu_list;
use super::fs::{Host, Selection};
use super::interrupts::{read_irqs, read_nics, Irq, Nic};
use super::storage::{
    block_device, mount_of, parse_mountinfo, probe_fs, resolve_data_dir, BlockDevice, FsProbe, Mount,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One CPU idle state (`cpuidle/stateN`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IdleState {
    /// N in `stateN`.
    pub index: u32,
    /// `name` (`POLL`, `C1`, `C6`, …).
    pub name: String,
    /// `latency`: exit latency in microseconds.
    pub latency_us: u64,
    /// `disable`.
    pub disabled: bool,
}

/// One online CPU's frequency and idle settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Cpu {
    /// CPU number.
    pub cpu: usize,
    /// `cpufreq/scaling_governor`.
    pub governor: Option<String>,
    /// `cpufreq/scaling_available_governors`.
    pub available_governors: Vec<String>,
    /// `cpuidle/state*`.
    pub idle_states: Vec<IdleState>,
}

/// `Max locked memory` of `/proc/self/limits`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MemlockLimit {
    /// Soft limit (`unlimited` or bytes).
    pub soft: String,
    /// Hard limit.
    pub hard: String,
}

/// Everything detected.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Inspection {
    /// The data directory, resolved.
    pub data_dir: PathBuf,
    /// The mount holding it.
    pub mount: Option<Mount>,
    /// Its block device.
    pub disk: Option<BlockDevice>,
    /// Probes of the data directory's file system.
    pub fs_probe: FsProbe,
    /// Online CPUs.
    pub online_cpus: Vec<usize>,
    /// Per-CPU frequency and idle settings.
    pub cpus: Vec<Cpu>,
    /// Numbered IRQs.
    pub irqs: BTreeMap<u32, Irq>,
    /// Device-backed network interfaces.
    pub nics: Vec<Nic>,
    /// `transparent_hugepage/enabled`.
    pub thp_enabled: Option<Selection>,
    /// `transparent_hugepage/defrag`.
    pub thp_defrag: Option<Selection>,
    /// `vm.swappiness`.
    pub swappiness: Option<u64>,
    /// `fs.aio-max-nr`.
    pub aio_max_nr: Option<u64>,
    /// `fs.aio-nr` (in use now).
    pub aio_nr: Option<u64>,
    /// `kernel.io_uring_disabled` (0: allowed; absent before Linux 6.6).
    pub io_uring_disabled: Option<u64>,
    /// Current clock source.
    pub clocksource: Option<String>,
    /// Available clock sources.
    pub available_clocksources: Vec<String>,
    /// Memory locking limit of processes started like this one.
    pub memlock: Option<MemlockLimit>,
    /// Controllers of the cgroup v2 root (`None`: no cgroup v2 hierarchy there).
    pub cgroup_controllers: Option<Vec<String>>,
}

/// Options of an inspection.
#[derive(Clone, Debug)]
pub struct InspectOptions {
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// Probe the data directory's file system (writes a scratch file).
    pub probe_fs: bool,
}

/// Inspects the machine.
pub fn inspect(host: &Host<'_>, options: &InspectOptions) -> Inspection {
    let data_dir = resolve_data_dir(&options.data_dir);
    let irqs = read_irqs(host);
    let mounts = parse_mountinfo(&host.fs.read(&host.proc("self/mountinfo")).unwrap_or_default());
    let mount = mount_of(&mounts, &data_dir);
    let disk = mount.as_ref().and_then(|m| block_device(host, m.device, &irqs));
    let fs_probe = if options.probe_fs {
        probe_fs(&data_dir)
    } else {
        FsProbe {
            not_run: Some("probe switched off".to_string()),
            ..FsProbe::default()
        }
    };
    let online_cpus = host
        .read_trimmed(&host.sys("devices/system/cpu/online"))
        .and_then(|s| parse_cpu_list(&s).ok())
        .unwrap_or_default();
    let cpus = online_cpus.iter().map(|&cpu| read_cpu(host, cpu)).collect();
    let nics = read_nics(host, &irqs);
    let thp = |name: &str| {
        host.read_trimmed(&host.sys(format!("kernel/mm/transparent_hugepage/{name}")))
            .map(|s| Selection::parse(&s))
    };
    let clock = host.sys("devices/system/clocksource/clocksource0");
    Inspection {
        data_dir,
        mount,
        disk,
        fs_probe,
        cpus,
        online_cpus,
        irqs,
        nics,
        thp_enabled: thp("enabled"),
        thp_defrag: thp("defrag"),
        swappiness: host.read_u64(&host.proc("sys/vm/swappiness")),
        aio_max_nr: host.read_u64(&host.proc("sys/fs/aio-max-nr")),
        aio_nr: host.read_u64(&host.proc("sys/fs/aio-nr")),
        io_uring_disabled: host.read_u64(&host.proc("sys/kernel/io_uring_disabled")),
        clocksource: host.read_trimmed(&clock.join("current_clocksource")),
        available_clocksources: host
            .read_trimmed(&clock.join("available_clocksource"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        memlock: read_memlock(host),
        cgroup_controllers: host
            .read_trimmed(&host.sys("fs/cgroup/cgroup.controllers"))
            .map(|s| s.split_whitespace().map(str::to_string).collect()),
    }
}

fn read_cpu(host: &Host<'_>, cpu: usize) -> Cpu {
    let dir = host.sys(format!("devices/system/cpu/cpu{cpu}"));
    let idle_dir = dir.join("cpuidle");
    let mut idle_states: Vec<IdleState> = host
        .list(&idle_dir)
        .iter()
        .filter_map(|name| {
            let index = name.strip_prefix("state")?.parse().ok()?;
            let state = idle_dir.join(name);
            Some(IdleState {
                index,
                name: host.read_trimmed(&state.join("name")).unwrap_or_default(),
                latency_us: host.read_u64(&state.join("latency")).unwrap_or(0),
                disabled: host.read_u64(&state.join("disable")).is_some_and(|d| d != 0),
            })
        })
        .collect();
    idle_states.sort_by_key(|s| s.index);
    Cpu {
        cpu,
        governor: host.read_trimmed(&dir.join("cpufreq/scaling_governor")),
        available_governors: host
            .read_trimmed(&dir.join("cpufreq/scaling_available_governors"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        idle_states,
    }
}

fn read_memlock(host: &Host<'_>) -> Option<MemlockLimit> {
    let text = host.fs.read(&host.proc("self/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max locked memory"))?;
    let mut fields = line["Max locked memory".len()..].split_whitespace();
    Some(MemlockLimit {
        soft: fields.next()?.to_string(),
        hard: fields.next()?.to_string(),
    })
}

impl Inspection {
    /// Whether the data directory is on XFS (the file system Oxbow is tuned for).
    pub fn on_xfs(&self) -> bool {
        self.mount.as_ref().is_some_and(|m| m.fs_type == "xfs")
    }

    /// The data directory, for messages.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
