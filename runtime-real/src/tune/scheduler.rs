//! Tuner item `disk_scheduler`: the data disk's I/O scheduler — `none` on SSD/NVMe
//! (Oxbow's own queues order its I/O; a kernel scheduler only adds latency), and
//! `mq-deadline` on rotating disks or when `none` is not offered.

use super::fs::RootKind;
use super::inspect::Inspection;
use super::plan::{Change, Plan, TunerItem};

/// Plans the scheduler of the data directory's disk.
pub fn plan_scheduler(inspection: &Inspection, plan: &mut Plan) {
    let item = TunerItem::DiskScheduler;
    let Some(disk) = &inspection.disk else {
        plan.note(
            item,
            format!(
                "no block device found under {} (tmpfs, overlay or a network file system?)",
                inspection.data_dir.display()
            ),
        );
        return;
    };
    let Some(scheduler) = &disk.scheduler else {
        plan.note(item, format!("{}: queue/scheduler not readable", disk.disk));
        return;
    };
    let preferred: &[&str] = if disk.rotational == Some(true) {
        &["mq-deadline"]
    } else {
        &["none", "mq-deadline"]
    };
    let Some(want) = preferred.iter().find(|s| scheduler.offers(s)) else {
        plan.note(
            item,
            format!("{}: neither {} offered", disk.disk, preferred.join(" nor ")),
        );
        return;
    };
    match &scheduler.current {
        Some(current) if current == want => {}
        current => plan.changes.push(Change::write(
            item,
            RootKind::Sys,
            format!("block/{}/queue/scheduler", disk.disk),
            Some(current.clone().unwrap_or_else(|| "none".to_string())),
            *want,
        )),
    }
}
