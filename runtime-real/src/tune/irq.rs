//! Tuner item `irq_spread`: the data disk's and the NICs' IRQs spread one per core,
//! round-robin, over the cores the shards do not use (`node.cores` leaves some free),
//! or over every online core when the shards take them all.

use super::cpulist::format_cpu_list;
use super::fs::RootKind;
use super::inspect::Inspection;
use super::plan::{Change, Plan, TunerItem};

/// Plans the IRQ affinities. `shard_cores`: the cores `node.cores` gives the shards
/// (empty: all of them).
pub fn plan_irq_spread(inspection: &Inspection, shard_cores: &[usize], plan: &mut Plan) {
    let item = TunerItem::IrqSpread;
    let mut irqs: Vec<u32> = inspection
        .disk
        .iter()
        .flat_map(|d| d.irqs.iter().copied())
        .collect();
    irqs.extend(inspection.nics.iter().flat_map(|n| n.irqs.iter().copied()));
    irqs.sort_unstable();
    irqs.dedup();
    if irqs.is_empty() {
        plan.note(
            item,
            "no disk or NIC IRQs found (a VM without MSI-X queues?): nothing to spread",
        );
        return;
    }
    let online = &inspection.online_cpus;
    if online.is_empty() {
        plan.note(item, "online CPUs unknown: IRQs left as they are");
        return;
    }
    let free: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| !shard_cores.contains(c))
        .collect();
    let cores = if !shard_cores.is_empty() && !free.is_empty() {
        plan.note(
            item,
            format!(
                "{} IRQs onto cores {} (shards use {})",
                irqs.len(),
                format_cpu_list(&free),
                format_cpu_list(shard_cores)
            ),
        );
        free
    } else {
        plan.note(
            item,
            format!(
                "{} IRQs over all {} online cores (set node.cores to keep IRQs off the shard cores)",
                irqs.len(),
                online.len()
            ),
        );
        online.clone()
    };
    for (i, irq) in irqs.iter().enumerate() {
        let target = cores[i % cores.len()].to_string();
        let current = inspection.irqs.get(irq).and_then(|i| i.affinity.clone());
        match current {
            Some(current) if current == target => {}
            Some(current) => plan.changes.push(Change::write(
                item,
                RootKind::Proc,
                format!("irq/{irq}/smp_affinity_list"),
                Some(current),
                target,
            )),
            None => plan.note(item, format!("IRQ {irq}: affinity not readable; left alone")),
        }
    }
}
