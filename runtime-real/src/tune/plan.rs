//! Changes and their execution: the items plan [`Change`]s from an inspection; here
//! they are printed (dry run), applied (each journaled with its old value first) or
//! reverted from the journal. A change the machine refuses (no permission, read-only
//! sysfs, a knob the kernel lacks or rejects) becomes a [`Outcome::Skipped`] with the
//! reason; it never stops the run.

use super::fs::{describe_error, Host, RootKind};
use super::journal::{EntryKind, Journal, JournalEntry};
use std::fmt;
use std::path::PathBuf;

/// One tuner item; each can be switched off in `[tune]`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[non_exhaustive]
pub enum TunerItem {
    /// Spread disk and NIC IRQs over cores (away from shard cores when possible).
    IrqSpread,
    /// `performance` frequency governor.
    CpuGovernor,
    /// Deep CPU idle states off.
    CpuIdle,
    /// Block device I/O scheduler `none` / `mq-deadline`.
    DiskScheduler,
    /// `fs.aio-max-nr` raised.
    AioMaxNr,
    /// Transparent huge page defragmentation off.
    ThpDefrag,
    /// A cgroup v2 group holding Oxbow's CPUs and memory.
    Cgroup,
}

impl TunerItem {
    /// Every item, in the order they run.
    pub const ALL: [TunerItem; 7] = [
        TunerItem::IrqSpread,
        TunerItem::CpuGovernor,
        TunerItem::CpuIdle,
        TunerItem::DiskScheduler,
        TunerItem::AioMaxNr,
        TunerItem::ThpDefrag,
        TunerItem::Cgroup,
    ];

    /// The item's name, as in `[tune]`.
    pub fn name(self) -> &'static str {
        match self {
            TunerItem::IrqSpread => "irq_spread",
            TunerItem::CpuGovernor => "cpu_governor",
            TunerItem::CpuIdle => "cpu_idle",
            TunerItem::DiskScheduler => "disk_scheduler",
            TunerItem::AioMaxNr => "aio_max_nr",
            TunerItem::ThpDefrag => "thp_defrag",
            TunerItem::Cgroup => "cgroup",
        }
    }
}

impl fmt::Display for TunerItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a change does.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ChangeOp {
    /// Write `new` to a file whose value is `old` (`None`: the file does not exist and
    /// is created).
    Write {
        /// The value now.
        old: Option<String>,
        /// The value to write.
        new: String,
    },
    /// Create a directory.
    CreateDir,
}

/// One planned change.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Change {
    /// The item planning it.
    pub item: TunerItem,
    /// Which tree.
    pub root: RootKind,
    /// Path inside the tree.
    pub path: PathBuf,
    /// What to do.
    pub op: ChangeOp,
}

impl Change {
    /// A write of `new` over `old`.
    pub fn write(
        item: TunerItem,
        root: RootKind,
        path: impl Into<PathBuf>,
        old: Option<String>,
        new: impl Into<String>,
    ) -> Change {
        Change {
            item,
            root,
            path: path.into(),
            op: ChangeOp::Write { old, new: new.into() },
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = match self.root {
            RootKind::Sys => "/sys",
            RootKind::Proc => "/proc",
        };
        match &self.op {
            ChangeOp::Write { old: Some(old), new } => {
                write!(f, "{root}/{}: {old} -> {new}", self.path.display())
            }
            ChangeOp::Write { old: None, new } => write!(f, "{root}/{}: (new) {new}", self.path.display()),
            ChangeOp::CreateDir => write!(f, "{root}/{}: create directory", self.path.display()),
        }
    }
}

/// Something an item reports without changing it (why it plans nothing, advice).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Note {
    /// The item.
    pub item: TunerItem,
    /// What to say.
    pub message: String,
}

/// Everything the items plan.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Plan {
    /// Changes, in order.
    pub changes: Vec<Change>,
    /// Notes.
    pub notes: Vec<Note>,
}

impl Plan {
    /// Adds a note.
    pub fn note(&mut self, item: TunerItem, message: impl Into<String>) {
        self.notes.push(Note {
            item,
            message: message.into(),
        });
    }
}

/// What became of a change.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Dry run: it would be made.
    Planned,
    /// Made (and journaled).
    Applied,
    /// Not made, with the reason.
    Skipped(String),
}

/// A change and its outcome.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Action {
    /// The change.
    pub change: Change,
    /// Its outcome.
    pub outcome: Outcome,
}

fn entry_of(change: &Change) -> JournalEntry {
    let (kind, old, new) = match &change.op {
        ChangeOp::Write { old, new } => (EntryKind::Write, old.clone(), Some(new.clone())),
        ChangeOp::CreateDir => (EntryKind::CreateDir, None, None),
    };
    JournalEntry {
        item: change.item.name().to_string(),
        kind,
        root: change.root,
        path: change.path.clone(),
        old,
        new,
    }
}

/// The plan as a dry run: every change [`Outcome::Planned`].
pub fn dry_run(plan: &Plan) -> Vec<Action> {
    plan.changes
        .iter()
        .map(|change| Action {
            change: change.clone(),
            outcome: Outcome::Planned,
        })
        .collect()
}

/// Applies the plan: each change is journaled (durably) and then made; a change that
/// fails is taken out of the journal again and reported as skipped. If the journal
/// cannot be written nothing further is changed (it could not be reverted).
pub fn apply(host: &Host<'_>, plan: &Plan, journal: &mut Journal) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut journal_failed: Option<String> = None;
    for change in &plan.changes {
        if let Some(reason) = &journal_failed {
            actions.push(Action {
                change: change.clone(),
                outcome: Outcome::Skipped(reason.clone()),
            });
            continue;
        }
        let journaled = !journal.covers(change.root, &change.path);
        if journaled {
            journal.push(entry_of(change));
            if let Err(error) = journal.save() {
                journal.pop();
                let reason = format!("not changed: cannot journal the old value ({error})");
                journal_failed = Some(reason.clone());
                actions.push(Action {
                    change: change.clone(),
                    outcome: Outcome::Skipped(reason),
                });
                continue;
            }
        }
        let path = host.roots.path(change.root, &change.path);
        let result = match &change.op {
            ChangeOp::Write { old, new } => host.fs.write(&path, new, old.is_none()),
            ChangeOp::CreateDir => host.fs.create_dir(&path),
        };
        let outcome = match result {
            Ok(()) => Outcome::Applied,
            Err(error) => {
                if journaled {
                    journal.pop();
                    if let Err(save) = journal.save() {
                        tracing::warn!(%save, "tune journal: cannot drop the entry of a failed change");
                    }
                }
                Outcome::Skipped(describe_error(&error))
            }
        };
        actions.push(Action {
            change: change.clone(),
            outcome,
        });
    }
    actions
}

/// One journal entry's revert.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reverted {
    /// The entry.
    pub entry: JournalEntry,
    /// `Ok`, or why it could not be restored (it stays in the journal).
    pub result: Result<(), String>,
}

/// Restores every journaled change, newest first. Entries that could not be restored
/// stay in the journal (saved); the journal file is removed when all were.
pub fn revert(host: &Host<'_>, journal: &mut Journal) -> Vec<Reverted> {
    let mut kept = Vec::new();
    let mut done = Vec::new();
    for entry in journal.entries().iter().rev() {
        let path = host.roots.path(entry.root, &entry.path);
        let result = match (entry.kind, &entry.old) {
            (EntryKind::Write, Some(old)) => host.fs.write(&path, old, false),
            (EntryKind::Write, None) => host.fs.remove_file(&path),
            (EntryKind::CreateDir, _) => host.fs.remove_dir(&path),
        };
        let result = match result {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && entry.old.is_none() => Ok(()),
            other => other.map_err(|e| describe_error(&e)),
        };
        if result.is_err() {
            kept.push(entry.clone());
        } else if entry.kind == EntryKind::CreateDir {
            // Files the kernel kept in the group (cgroupfs cannot unlink them) went
            // with it.
            kept.retain(|k: &JournalEntry| !(k.root == entry.root && k.path.starts_with(&entry.path)));
        }
        done.push(Reverted {
            entry: entry.clone(),
            result,
        });
    }
    kept.reverse();
    for reverted in &mut done {
        let gone = !kept.iter().any(|k| k == &reverted.entry);
        if reverted.result.is_err() && gone {
            reverted.result = Ok(());
        }
    }
    journal.set_entries(kept);
    done
}
