//! Tuner items on plain kernel settings: `aio_max_nr` (`fs.aio-max-nr` raised to at
//! least `tune.aio_max_nr_min`, so many shards' AIO contexts fit) and `thp_defrag`
//! (transparent huge page defragmentation `never`: no allocation stalls compacting
//! memory on a shard's hot path).

use super::fs::RootKind;
use super::inspect::Inspection;
use super::plan::{Change, Plan, TunerItem};

/// Plans `fs.aio-max-nr`.
pub fn plan_aio_max_nr(inspection: &Inspection, minimum: u64, plan: &mut Plan) {
    let item = TunerItem::AioMaxNr;
    match inspection.aio_max_nr {
        None => plan.note(item, "fs.aio-max-nr not readable"),
        Some(now) if now >= minimum => {}
        Some(now) => plan.changes.push(Change::write(
            item,
            RootKind::Proc,
            "sys/fs/aio-max-nr",
            Some(now.to_string()),
            minimum.to_string(),
        )),
    }
}

/// Plans THP defragmentation off.
pub fn plan_thp_defrag(inspection: &Inspection, plan: &mut Plan) {
    let item = TunerItem::ThpDefrag;
    let Some(defrag) = &inspection.thp_defrag else {
        plan.note(item, "transparent huge pages not configurable here");
        return;
    };
    match &defrag.current {
        Some(current) if current == "never" => {}
        None => plan.note(item, "THP defrag setting not readable"),
        Some(_) if !defrag.offers("never") => plan.note(item, "THP defrag offers no `never`"),
        Some(current) => plan.changes.push(Change::write(
            item,
            RootKind::Sys,
            "kernel/mm/transparent_hugepage/defrag",
            Some(current.clone()),
            "never",
        )),
    }
}
