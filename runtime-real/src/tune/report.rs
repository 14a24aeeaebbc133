//! The text `oxbow tune` prints: what was detected (with advice where a setting is
//! not what Oxbow wants), then each change and its outcome, then notes.

use super::cpulist::format_cpu_list;
use super::inspect::Inspection;
use super::plan::{Outcome, TunerItem};
use super::{RevertReport, TuneReport};
use std::fmt::Write as _;

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

fn probe_result(result: &Option<Result<(), String>>) -> String {
    match result {
        None => "not probed".to_string(),
        Some(Ok(())) => "yes".to_string(),
        Some(Err(e)) => format!("no ({e})"),
    }
}

/// The detection part of the report.
pub fn render_inspection(inspection: &Inspection) -> String {
    let mut out = String::new();
    let i = inspection;
    let _ = writeln!(out, "data directory  {}", i.data_dir.display());
    match &i.mount {
        Some(m) => {
            let advice = if i.on_xfs() { "" } else { "  (XFS recommended)" };
            let _ = writeln!(
                out,
                "  file system   {} on {} mounted at {}{advice}",
                m.fs_type,
                m.source,
                m.mount_point.display()
            );
        }
        None => {
            let _ = writeln!(out, "  file system   unknown (no mount found)");
        }
    }
    let p = &i.fs_probe;
    match &p.not_run {
        Some(reason) => {
            let _ = writeln!(out, "  probes        not run: {reason}");
        }
        None => {
            let _ = writeln!(
                out,
                "  O_DIRECT      {}\n  fallocate     {}\n  sparse files  {}",
                probe_result(&p.direct_io),
                probe_result(&p.fallocate),
                opt(p.sparse.map(|s| if s { "yes" } else { "no" }))
            );
        }
    }
    match &i.disk {
        Some(d) => {
            let _ = writeln!(
                out,
                "  disk          {} ({}), scheduler {}, nr_requests {}, IRQs {}",
                d.disk,
                match d.rotational {
                    Some(true) => "rotational",
                    Some(false) => "solid state",
                    None => "type unknown",
                },
                opt(d.scheduler.as_ref().and_then(|s| s.current.clone())),
                opt(d.nr_requests),
                if d.irqs.is_empty() {
                    "none found".to_string()
                } else {
                    d.irqs.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                }
            );
        }
        None => {
            let _ = writeln!(out, "  disk          no block device found");
        }
    }
    let _ = writeln!(out, "cpus            online {}", format_cpu_list(&i.online_cpus));
    let mut governors: Vec<String> = i.cpus.iter().filter_map(|c| c.governor.clone()).collect();
    governors.sort();
    governors.dedup();
    let _ = writeln!(
        out,
        "  governor      {}",
        if governors.is_empty() {
            "not exposed".to_string()
        } else {
            governors.join(", ")
        }
    );
    let deep: Vec<String> = i
        .cpus
        .first()
        .map(|c| {
            c.idle_states
                .iter()
                .map(|s| {
                    format!(
                        "{}({}us{})",
                        s.name,
                        s.latency_us,
                        if s.disabled { ", off" } else { "" }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  idle states   {}",
        if deep.is_empty() {
            "not exposed".to_string()
        } else {
            deep.join(" ")
        }
    );
    for nic in &i.nics {
        let _ = writeln!(
            out,
            "nic {:<11} IRQs {}",
            nic.name,
            if nic.irqs.is_empty() {
                "none found".to_string()
            } else {
                nic.irqs
                    .iter()
                    .map(|n| {
                        let affinity = i.irqs.get(n).and_then(|irq| irq.affinity.clone());
                        format!("{n}→{}", opt(affinity))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        );
    }
    let selection = |s: &Option<super::fs::Selection>| opt(s.as_ref().and_then(|s| s.current.clone()));
    let _ = writeln!(
        out,
        "memory          THP enabled {}, defrag {}; swappiness {}",
        selection(&i.thp_enabled),
        selection(&i.thp_defrag),
        opt(i.swappiness)
    );
    let _ = writeln!(
        out,
        "  memlock       {}",
        i.memlock.as_ref().map_or_else(
            || "unknown".to_string(),
            |m| format!("soft {} hard {} bytes", m.soft, m.hard)
        )
    );
    let _ = writeln!(
        out,
        "kernel          aio-max-nr {} (in use {}), io_uring {}, clock source {}",
        opt(i.aio_max_nr),
        opt(i.aio_nr),
        match i.io_uring_disabled {
            None | Some(0) => "enabled",
            Some(1) => "restricted to a group",
            Some(_) => "disabled",
        },
        opt(i.clocksource.clone())
    );
    let _ = writeln!(
        out,
        "  cgroup v2     {}",
        i.cgroup_controllers
            .as_ref()
            .map_or_else(|| "not mounted at /sys/fs/cgroup".to_string(), |c| c.join(" "))
    );
    out
}

/// The whole report of `oxbow tune`.
pub fn render_tune(report: &TuneReport) -> String {
    let mut out = render_inspection(&report.inspection);
    let heading = if report.dry_run {
        "changes (dry run: nothing changed)"
    } else {
        "changes"
    };
    let _ = writeln!(out, "\n{heading}");
    if report.actions.is_empty() {
        let _ = writeln!(out, "  none needed");
    }
    for action in &report.actions {
        let status = match &action.outcome {
            Outcome::Planned => "would set".to_string(),
            Outcome::Applied => "set".to_string(),
            Outcome::Skipped(reason) => format!("SKIPPED ({reason})"),
        };
        let _ = writeln!(out, "  [{}] {status}: {}", action.change.item, action.change);
    }
    for note in &report.plan.notes {
        let _ = writeln!(out, "  [{}] {}", note.item, note.message);
    }
    for item in &report.disabled {
        let _ = writeln!(out, "  [{item}] switched off in [tune]");
    }
    let applied = report
        .actions
        .iter()
        .filter(|a| a.outcome == Outcome::Applied)
        .count();
    if applied > 0 {
        let _ = writeln!(
            out,
            "\n{applied} changes journaled in {}; `oxbow tune --revert` restores them",
            report.journal.display()
        );
    }
    out
}

/// The report of `oxbow tune --revert`.
pub fn render_revert(report: &RevertReport) -> String {
    let mut out = String::new();
    if report.reverted.is_empty() {
        let _ = writeln!(
            out,
            "nothing to revert ({} has no changes)",
            report.journal.display()
        );
    }
    for reverted in &report.reverted {
        let e = &reverted.entry;
        let what = match &e.old {
            Some(old) => format!("{} back to {old}", e.path.display()),
            None => format!("{} removed", e.path.display()),
        };
        match &reverted.result {
            Ok(()) => {
                let _ = writeln!(out, "  [{}] restored: {what}", e.item);
            }
            Err(reason) => {
                let _ = writeln!(
                    out,
                    "  [{}] NOT restored ({reason}): {what}; kept in the journal",
                    e.item
                );
            }
        }
    }
    if let Some(error) = &report.save_error {
        let _ = writeln!(out, "journal not updated: {error}");
    }
    out
}

/// Every item name, for help texts.
pub fn item_names() -> Vec<&'static str> {
    TunerItem::ALL.iter().map(|i| i.name()).collect()
}
