//! Tuner items `cpu_governor` (the `performance` frequency governor on every online
//! CPU) and `cpu_idle` (idle states whose exit latency exceeds
//! `tune.idle_max_latency_us` disabled, so a shard waking for a request does not pay
//! a deep C-state's exit).

use super::fs::RootKind;
use super::inspect::Inspection;
use super::plan::{Change, Plan, TunerItem};

/// The governor every CPU gets.
pub const GOVERNOR: &str = "performance";

/// Plans the frequency governors.
pub fn plan_governor(inspection: &Inspection, plan: &mut Plan) {
    let item = TunerItem::CpuGovernor;
    let mut missing = 0usize;
    for cpu in &inspection.cpus {
        let Some(governor) = &cpu.governor else {
            missing += 1;
            continue;
        };
        if governor == GOVERNOR {
            continue;
        }
        if !cpu.available_governors.iter().any(|g| g == GOVERNOR) {
            plan.note(item, format!("cpu{}: no `{GOVERNOR}` governor offered", cpu.cpu));
            continue;
        }
        plan.changes.push(Change::write(
            item,
            RootKind::Sys,
            format!("devices/system/cpu/cpu{}/cpufreq/scaling_governor", cpu.cpu),
            Some(governor.clone()),
            GOVERNOR,
        ));
    }
    if missing > 0 {
        plan.note(
            item,
            format!("{missing} CPUs expose no cpufreq governor (a VM, or no frequency scaling)"),
        );
    }
}

/// Plans the idle states to disable.
pub fn plan_idle(inspection: &Inspection, max_latency_us: u64, plan: &mut Plan) {
    let item = TunerItem::CpuIdle;
    let mut without = 0usize;
    for cpu in &inspection.cpus {
        if cpu.idle_states.is_empty() {
            without += 1;
        }
        for state in cpu
            .idle_states
            .iter()
            .filter(|s| s.latency_us > max_latency_us && !s.disabled)
        {
            plan.changes.push(Change::write(
                item,
                RootKind::Sys,
                format!(
                    "devices/system/cpu/cpu{}/cpuidle/state{}/disable",
                    cpu.cpu, state.index
                ),
                Some("0".to_string()),
                "1",
            ));
        }
    }
    if without > 0 {
        plan.note(item, format!("{without} CPUs expose no cpuidle states"));
    }
}
