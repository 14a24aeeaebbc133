//! Tuner item `cgroup`: a cgroup v2 group (`/sys/fs/cgroup/<tune.cgroup_name>`) that
//! gives Oxbow its CPUs (`cpuset.cpus`: `node.cores`, or every online core) and its
//! memory (`memory.max`). Oxbow runs in it once its process is moved there (see the
//! README). The root's controllers are not changed: if `cpuset` or `memory` is not
//! delegated to child groups the item says so and writes nothing.

use super::cpulist::format_cpu_list;
use super::fs::{Host, RootKind};
use super::inspect::Inspection;
use super::plan::{Change, ChangeOp, Plan, TunerItem};
use std::path::PathBuf;

/// What the group gets.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CgroupTarget {
    /// The group's name under the cgroup v2 root.
    pub name: String,
    /// Its CPUs (empty: every online CPU).
    pub cores: Vec<usize>,
    /// `memory.max` in bytes (`None`: no limit).
    pub memory_max_bytes: Option<u64>,
}

/// Plans the group.
pub fn plan_cgroup(host: &Host<'_>, inspection: &Inspection, target: &CgroupTarget, plan: &mut Plan) {
    let item = TunerItem::Cgroup;
    let Some(controllers) = &inspection.cgroup_controllers else {
        plan.note(
            item,
            "no cgroup v2 hierarchy at /sys/fs/cgroup (cgroup v1 or hybrid): no group written",
        );
        return;
    };
    let subtree = host
        .read_trimmed(&host.sys("fs/cgroup/cgroup.subtree_control"))
        .unwrap_or_default();
    let missing: Vec<&str> = ["cpuset", "memory"]
        .into_iter()
        .filter(|c| {
            !controllers.iter().any(|have| have == c) || !subtree.split_whitespace().any(|have| have == *c)
        })
        .collect();
    if !missing.is_empty() {
        plan.note(
            item,
            format!(
                "controllers {} not enabled for child groups (echo '+{}' > /sys/fs/cgroup/cgroup.subtree_control): no group written",
                missing.join(", "),
                missing.join(" +")
            ),
        );
        return;
    }
    if target.name.is_empty() || target.name.contains('/') || target.name.starts_with('.') {
        plan.note(item, format!("`{}` is not a cgroup name", target.name));
        return;
    }
    let cores = if target.cores.is_empty() {
        inspection.online_cpus.clone()
    } else {
        target.cores.clone()
    };
    let dir = PathBuf::from("fs/cgroup").join(&target.name);
    let exists = host.fs.exists(&host.sys(&dir));
    if !exists {
        plan.changes.push(Change {
            item,
            root: RootKind::Sys,
            path: dir.clone(),
            op: ChangeOp::CreateDir,
        });
    }
    let memory = target
        .memory_max_bytes
        .map_or_else(|| "max".to_string(), |b| b.to_string());
    for (file, value) in [("cpuset.cpus", format_cpu_list(&cores)), ("memory.max", memory)] {
        let path = dir.join(file);
        let old = if exists {
            host.read_trimmed(&host.sys(&path))
        } else {
            None
        };
        if old.as_deref() != Some(value.as_str()) {
            plan.changes
                .push(Change::write(item, RootKind::Sys, path, old, value));
        }
    }
}
