//! `oxbow tune` against fixture sysfs/procfs trees built in a temporary directory:
//! detection, a dry run, apply, a second run, revert, a damaged journal, and knobs
//! the machine refuses (read-only sysfs, IRQs the kernel will not move — injected,
//! since these tests run as root and file modes would not stop them).

use oxbow_runtime_real::tune::journal::{journal_path, Journal};
use oxbow_runtime_real::tune::{
    inspect, run_revert, run_tune, ChangeOp, Host, InspectOptions, Outcome, RealFs, RootKind, Roots, TuneFs,
    TuneOptions, TuneSettings, TunerItem,
};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data_dir: PathBuf,
}

fn put(root: &Path, rel: &str, contents: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// A 4-CPU machine with an NVMe disk (XFS) under the data directory and one NIC.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("machine");
    let data_dir = dir.path().canonicalize().unwrap().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let sys = |rel: &str, v: &str| put(&root, &format!("sys/{rel}"), v);
    sys("devices/system/cpu/online", "0-3");
    for cpu in 0..4 {
        let c = format!("devices/system/cpu/cpu{cpu}");
        sys(&format!("{c}/cpufreq/scaling_governor"), "powersave");
        sys(
            &format!("{c}/cpufreq/scaling_available_governors"),
            "performance powersave",
        );
        for (i, (name, latency)) in [("POLL", 0), ("C1", 2), ("C6", 133)].iter().enumerate() {
            sys(&format!("{c}/cpuidle/state{i}/name"), name);
            sys(&format!("{c}/cpuidle/state{i}/latency"), &latency.to_string());
            sys(&format!("{c}/cpuidle/state{i}/disable"), "0");
        }
    }
    sys("block/nvme0n1/queue/scheduler", "[mq-deadline] kyber none");
    sys("block/nvme0n1/queue/nr_requests", "1023");
    sys("block/nvme0n1/queue/rotational", "0");
    sys("block/nvme0n1/nvme0n1p1/partition", "1");
    std::fs::create_dir_all(root.join("sys/block/nvme0n1/device")).unwrap();
    std::fs::create_dir_all(root.join("sys/dev/block")).unwrap();
    std::os::unix::fs::symlink("../../block/nvme0n1/nvme0n1p1", root.join("sys/dev/block/259:1")).unwrap();
    sys("class/net/eth0/device/msi_irqs/40", "msix");
    sys("class/net/eth0/device/msi_irqs/41", "msix");
    sys("class/net/lo/operstate", "unknown");
    sys("kernel/mm/transparent_hugepage/enabled", "always [madvise] never");
    sys(
        "kernel/mm/transparent_hugepage/defrag",
        "[always] defer defer+madvise madvise never",
    );
    sys(
        "devices/system/clocksource/clocksource0/current_clocksource",
        "tsc",
    );
    sys(
        "devices/system/clocksource/clocksource0/available_clocksource",
        "tsc hpet acpi_pm",
    );
    sys("fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids");
    sys("fs/cgroup/cgroup.subtree_control", "cpuset cpu memory");
    let proc = |rel: &str, v: &str| put(&root, &format!("proc/{rel}"), v);
    proc(
        "interrupts",
        "            CPU0       CPU1       CPU2       CPU3\n\
           0:         44          0          0          0   IO-APIC   2-edge      timer\n\
          24:        100          0          0          0   PCI-MSI 524288-edge      nvme0q0\n\
          25:       9000          0          0          0   PCI-MSI 524289-edge      nvme0q1\n\
          26:       9000          0          0          0   PCI-MSI 524290-edge      nvme0q2\n\
          40:       7000          0          0          0   PCI-MSI 1048576-edge      eth0-TxRx-0\n\
          41:       7000          0          0          0   PCI-MSI 1048577-edge      eth0-TxRx-1\n\
         NMI:          0          0          0          0   Non-maskable interrupts\n",
    );
    for irq in [0, 24, 25, 26, 40, 41] {
        proc(&format!("irq/{irq}/smp_affinity_list"), "0-3");
    }
    proc("sys/vm/swappiness", "60");
    proc("sys/fs/aio-max-nr", "65536");
    proc("sys/fs/aio-nr", "0");
    proc(
        "self/mountinfo",
        &format!(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n40 22 259:1 / {} rw,noatime shared:2 - xfs /dev/nvme0n1p1 rw,attr2\n",
            data_dir.display()
        ),
    );
    proc(
        "self/limits",
        "Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         65536                65536                bytes\n",
    );
    Fixture {
        _dir: dir,
        root,
        data_dir,
    }
}

/// A selection file's chosen option (`a [b] c` reads `b`), as the kernel shows it after
/// `b` is written to it; other contents as they are.
fn selected(contents: &str) -> String {
    contents
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .map_or_else(|| contents.to_string(), str::to_string)
}

/// Every file (with contents; selection files by their choice), directory and link
/// under `root`.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&path).unwrap().display()),
                );
            } else if kind.is_dir() {
                out.insert(rel, "<dir>".to_string());
                stack.push(path);
            } else {
                out.insert(rel, selected(&std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out
}

fn options(f: &Fixture, dry_run: bool) -> TuneOptions {
    TuneOptions {
        data_dir: f.data_dir.clone(),
        settings: TuneSettings::default(),
        shard_cores: vec![2, 3],
        memory_bytes: 1 << 30,
        dry_run,
    }
}

fn read(f: &Fixture, rel: &str) -> String {
    std::fs::read_to_string(f.root.join(rel)).unwrap()
}

#[test]
fn detects_the_fixture_machine() {
    let f = fixture();
    let host = Host {
        roots: Roots::under(&f.root),
        fs: &RealFs,
    };
    let i = inspect(
        &host,
        &InspectOptions {
            data_dir: f.data_dir.clone(),
            probe_fs: true,
        },
    );
    assert!(i.on_xfs(), "{:?}", i.mount);
    let disk = i.disk.as_ref().expect("the partition's disk");
    assert_eq!(disk.disk, "nvme0n1");
    assert_eq!(
        disk.scheduler.as_ref().unwrap().current.as_deref(),
        Some("mq-deadline")
    );
    assert_eq!((disk.nr_requests, disk.rotational), (Some(1023), Some(false)));
    assert_eq!(disk.irqs, vec![24, 25, 26]);
    assert_eq!(i.nics.len(), 1, "lo is not a NIC");
    assert_eq!(
        (i.nics[0].name.as_str(), i.nics[0].irqs.clone()),
        ("eth0", vec![40, 41])
    );
    assert_eq!(i.online_cpus, vec![0, 1, 2, 3]);
    assert_eq!(i.cpus[3].governor.as_deref(), Some("powersave"));
    assert_eq!(i.cpus[0].idle_states[2].latency_us, 133);
    assert_eq!(i.thp_defrag.as_ref().unwrap().current.as_deref(), Some("always"));
    assert_eq!(
        (i.swappiness, i.aio_max_nr, i.aio_nr),
        (Some(60), Some(65536), Some(0))
    );
    assert_eq!(i.clocksource.as_deref(), Some("tsc"));
    assert_eq!(i.memlock.as_ref().unwrap().soft, "65536");
    assert!(i
        .cgroup_controllers
        .as_ref()
        .unwrap()
        .contains(&"memory".to_string()));
    // The probes ran on the real data directory and cleaned up after themselves.
    assert!(i.fs_probe.not_run.is_none(), "{:?}", i.fs_probe);
    assert_eq!(i.fs_probe.fallocate.as_ref().map(Result::is_ok), Some(true));
    assert_eq!(std::fs::read_dir(f.data_dir.join("oxbow")).unwrap().count(), 0);
    let text = oxbow_runtime_real::tune::report::render_inspection(&i);
    assert!(
        text.contains("xfs on /dev/nvme0n1p1") && text.contains("eth0"),
        "{text}"
    );
}

#[test]
fn a_dry_run_plans_every_item_and_changes_nothing() {
    let f = fixture();
    let before = snapshot(&f.root);
    let host = Host {
        roots: Roots::under(&f.root),
        fs: &RealFs,
    };
    let report = run_tune(&host, &options(&f, true)).unwrap();
    assert!(report.actions.iter().all(|a| a.outcome == Outcome::Planned));
    let planned: BTreeMap<String, String> = report
        .actions
        .iter()
        .filter_map(|a| match &a.change.op {
            ChangeOp::Write { new, .. } => Some((a.change.path.display().to_string(), new.clone())),
            _ => None,
        })
        .collect();
    // IRQs go round-robin to the cores the shards (2, 3) leave free.
    for (irq, core) in [(24, "0"), (25, "1"), (26, "0"), (40, "1"), (41, "0")] {
        assert_eq!(
            planned[&format!("irq/{irq}/smp_affinity_list")],
            core,
            "irq {irq}"
        );
    }
    assert!(
        !planned.contains_key("irq/0/smp_affinity_list"),
        "the timer is not a device IRQ"
    );
    assert_eq!(
        planned["devices/system/cpu/cpu1/cpufreq/scaling_governor"],
        "performance"
    );
    assert_eq!(planned["devices/system/cpu/cpu1/cpuidle/state2/disable"], "1");
    assert!(
        !planned.contains_key("devices/system/cpu/cpu1/cpuidle/state1/disable"),
        "C1 is shallow"
    );
    assert_eq!(planned["block/nvme0n1/queue/scheduler"], "none");
    assert_eq!(planned["sys/fs/aio-max-nr"], "1048576");
    assert_eq!(planned["kernel/mm/transparent_hugepage/defrag"], "never");
    assert_eq!(planned["fs/cgroup/oxbow/cpuset.cpus"], "2-3");
    assert_eq!(
        planned["fs/cgroup/oxbow/memory.max"],
        ((1u64 << 30) + (1 << 28) + (256 << 20)).to_string()
    );
    assert!(report
        .actions
        .iter()
        .any(|a| a.change.op == ChangeOp::CreateDir && a.change.item == TunerItem::Cgroup));
    let text = oxbow_runtime_real::tune::report::render_tune(&report);
    assert!(text.contains("dry run") && text.contains("would set"), "{text}");
    assert_eq!(snapshot(&f.root), before, "a dry run changes nothing");
    assert!(!journal_path(&f.data_dir).exists());
}

#[test]
fn apply_journals_old_values_and_revert_restores_them() {
    let f = fixture();
    let before = snapshot(&f.root);
    let host = Host {
        roots: Roots::under(&f.root),
        fs: &RealFs,
    };
    let report = run_tune(&host, &options(&f, false)).unwrap();
    let applied = report
        .actions
        .iter()
        .filter(|a| a.outcome == Outcome::Applied)
        .count();
    assert_eq!(applied, report.actions.len(), "{:#?}", report.actions);
    assert_eq!(read(&f, "proc/irq/40/smp_affinity_list"), "1");
    assert_eq!(read(&f, "sys/block/nvme0n1/queue/scheduler"), "none");
    assert_eq!(
        read(&f, "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor"),
        "performance"
    );
    assert_eq!(read(&f, "sys/fs/cgroup/oxbow/cpuset.cpus"), "2-3");
    let journal = Journal::load(&journal_path(&f.data_dir)).unwrap();
    assert_eq!(journal.entries().len(), applied);
    let irq = journal
        .entries()
        .iter()
        .find(|e| e.root == RootKind::Proc && e.path == Path::new("irq/40/smp_affinity_list"))
        .unwrap();
    assert_eq!((irq.old.as_deref(), irq.new.as_deref()), (Some("0-3"), Some("1")));

    // Someone moves an IRQ back; a second run fixes it but keeps the original value.
    std::fs::write(f.root.join("proc/irq/40/smp_affinity_list"), "3").unwrap();
    let again = run_tune(&host, &options(&f, false)).unwrap();
    assert_eq!(again.actions.len(), 1, "{:#?}", again.actions);
    assert_eq!(read(&f, "proc/irq/40/smp_affinity_list"), "1");
    assert_eq!(
        Journal::load(&journal_path(&f.data_dir)).unwrap().entries().len(),
        applied
    );

    let reverted = run_revert(&host, &f.data_dir).unwrap();
    assert!(
        reverted.reverted.iter().all(|r| r.result.is_ok()),
        "{:#?}",
        reverted.reverted
    );
    assert_eq!(snapshot(&f.root), before, "revert restores the machine exactly");
    assert!(!journal_path(&f.data_dir).exists(), "an empty journal is removed");
    let nothing = run_revert(&host, &f.data_dir).unwrap();
    assert!(nothing.reverted.is_empty());
}

/// The real file system, with writes under some paths failing like the kernel's.
#[derive(Debug)]
struct Refusing {
    prefixes: Vec<PathBuf>,
    errno: i32,
}

impl TuneFs for Refusing {
    fn read(&self, path: &Path) -> io::Result<String> {
        RealFs.read(path)
    }
    fn write(&self, path: &Path, value: &str, create: bool) -> io::Result<()> {
        if self.prefixes.iter().any(|p| path.starts_with(p)) {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        RealFs.write(path, value, create)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        if self.prefixes.iter().any(|p| path.starts_with(p)) {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        RealFs.create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }
    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        RealFs.list(path)
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        RealFs.canonicalize(path)
    }
    fn exists(&self, path: &Path) -> bool {
        RealFs.exists(path)
    }
}

#[test]
fn a_read_only_machine_is_reported_not_failed() {
    let f = fixture();
    let before = snapshot(&f.root);
    let fs = Refusing {
        prefixes: vec![f.root.clone()],
        errno: libc::EROFS,
    };
    let host = Host {
        roots: Roots::under(&f.root),
        fs: &fs,
    };
    let report = run_tune(&host, &options(&f, false)).expect("refusals are reported, not errors");
    assert!(!report.actions.is_empty());
    for action in &report.actions {
        match &action.outcome {
            Outcome::Skipped(reason) => assert!(reason.contains("read-only"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(snapshot(&f.root), before);
    assert!(
        !journal_path(&f.data_dir).exists(),
        "nothing applied, nothing journaled"
    );
    let text = oxbow_runtime_real::tune::report::render_tune(&report);
    assert!(text.contains("SKIPPED (read-only file system"), "{text}");
}

#[test]
fn refused_knobs_are_skipped_and_the_rest_applied_and_reverted() {
    let f = fixture();
    let before = snapshot(&f.root);
    // The kernel refuses to move managed IRQs (EIO); a knob is a directory here.
    let fs = Refusing {
        prefixes: vec![f.root.join("proc/irq")],
        errno: libc::EIO,
    };
    std::fs::remove_file(f.root.join("proc/sys/fs/aio-max-nr")).unwrap();
    std::fs::create_dir(f.root.join("proc/sys/fs/aio-max-nr")).unwrap();
    let host = Host {
        roots: Roots::under(&f.root),
        fs: &fs,
    };
    let before_dir_swap = {
        let mut b = before.clone();
        b.insert(PathBuf::from("proc/sys/fs/aio-max-nr"), "<dir>".to_string());
        b
    };
    let report = run_tune(&host, &options(&f, false)).unwrap();
    let skipped: Vec<_> = report
        .actions
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Skipped(_)))
        .collect();
    assert_eq!(skipped.len(), 5, "{skipped:#?}");
    assert!(skipped.iter().all(|a| a.change.item == TunerItem::IrqSpread));
    assert!(report
        .plan
        .notes
        .iter()
        .any(|n| n.item == TunerItem::AioMaxNr && n.message.contains("not readable")));
    assert_eq!(read(&f, "sys/block/nvme0n1/queue/scheduler"), "none");
    let journal = Journal::load(&journal_path(&f.data_dir)).unwrap();
    assert!(
        journal.entries().iter().all(|e| e.root == RootKind::Sys),
        "refused changes are not journaled"
    );
    run_revert(&host, &f.data_dir).unwrap();
    assert_eq!(snapshot(&f.root), before_dir_swap);
}

#[test]
fn a_damaged_journal_stops_the_run_before_any_change() {
    let f = fixture();
    let before = snapshot(&f.root);
    let path = journal_path(&f.data_dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "[[change]]\nitem = 3\n").unwrap();
    let host = Host {
        roots: Roots::under(&f.root),
        fs: &RealFs,
    };
    let error = run_tune(&host, &options(&f, false)).unwrap_err();
    assert!(error.to_string().contains("damaged"), "{error}");
    assert_eq!(snapshot(&f.root), before);
}

#[test]
fn switched_off_items_plan_nothing() {
    let f = fixture();
    let host = Host {
        roots: Roots::under(&f.root),
        fs: &RealFs,
    };
    let mut opts = options(&f, true);
    opts.settings = TuneSettings {
        irq_spread: false,
        cgroup: false,
        cpu_idle: false,
        ..TuneSettings::default()
    };
    let report = run_tune(&host, &opts).unwrap();
    assert!(report.actions.iter().all(|a| !matches!(
        a.change.item,
        TunerItem::IrqSpread | TunerItem::Cgroup | TunerItem::CpuIdle
    )));
    assert_eq!(
        report.disabled,
        vec![TunerItem::IrqSpread, TunerItem::CpuIdle, TunerItem::Cgroup]
    );
}

#[test]
fn the_command_line_tunes_and_reverts_a_fixture_root() {
    let f = fixture();
    let before = snapshot(&f.root);
    let oxbow = env!("CARGO_BIN_EXE_oxbow");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(oxbow)
            .arg("tune")
            .arg("--root")
            .arg(&f.root)
            .arg("--data-dir")
            .arg(&f.data_dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let dry = run(&["--dry-run", "--cores", "2-3"]);
    assert!(
        dry.contains("would set: /proc/irq/24/smp_affinity_list: 0-3 -> 0"),
        "{dry}"
    );
    assert_eq!(snapshot(&f.root), before);
    let applied = run(&["--cores", "2-3"]);
    assert!(applied.contains("journaled in"), "{applied}");
    assert_eq!(read(&f, "sys/kernel/mm/transparent_hugepage/defrag"), "never");
    let reverted = run(&["--revert"]);
    assert!(reverted.contains("restored"), "{reverted}");
    assert_eq!(snapshot(&f.root), before);
}
