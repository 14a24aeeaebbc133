//! The data directory's storage: which mount holds it (`/proc/self/mountinfo`), its
//! file system (XFS or not), its block device and queue (`/sys/dev/block/MAJ:MIN`,
//! `queue/scheduler`, `nr_requests`, `rotational`), the device's IRQs, and probes of
//! the directory itself (`O_DIRECT`, `fallocate`, sparse files). The probes run on the
//! real directory, not through the roots: they ask the file system, not a knob.

use super::fs::{Host, Selection};
use super::interrupts::{device_irqs, Irq};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The mount holding the data directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File system type (`xfs`, `ext4`, …).
    pub fs_type: String,
    /// The mount source (`/dev/nvme0n1p1`).
    pub source: String,
    /// Device number.
    pub device: (u32, u32),
}

/// The block device under the data directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BlockDevice {
    /// The whole disk's name (`nvme0n1`; a partition's parent).
    pub disk: String,
    /// `queue/scheduler`.
    pub scheduler: Option<Selection>,
    /// `queue/nr_requests`.
    pub nr_requests: Option<u64>,
    /// `queue/rotational`.
    pub rotational: Option<bool>,
    /// IRQs of its controller.
    pub irqs: Vec<u32>,
}

/// What the data directory's file system supports (probed with a scratch file).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct FsProbe {
    /// `O_DIRECT` opens: `Ok` or why not.
    pub direct_io: Option<Result<(), String>>,
    /// `fallocate`: `Ok` or why not.
    pub fallocate: Option<Result<(), String>>,
    /// Whether a file extended with `ftruncate` stays sparse.
    pub sparse: Option<bool>,
    /// Why the probe could not run.
    pub not_run: Option<String>,
}

/// Unescapes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` into mounts.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let (Some(dev), Some(point), Some(fs_type)) = (left.get(2), left.get(4), right.first()) else {
            continue;
        };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        mounts.push(Mount {
            mount_point: PathBuf::from(unescape(point)),
            fs_type: (*fs_type).to_string(),
            source: right.get(1).map_or_else(String::new, |s| unescape(s)),
            device: (major, minor),
        });
    }
    mounts
}

/// The data directory as an absolute path without links, resolving the nearest
/// existing ancestor when it does not exist yet.
pub fn resolve_data_dir(data_dir: &Path) -> PathBuf {
    let absolute = if data_dir.is_absolute() {
        data_dir.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| data_dir.to_path_buf(), |cwd| cwd.join(data_dir))
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            let mut path = canonical;
            for part in rest.iter().rev() {
                path.push(part);
            }
            return path;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// The mount whose mount point is the longest prefix of `dir` (the last one mounted
/// wins among equals, as in the kernel).
pub fn mount_of(mounts: &[Mount], dir: &Path) -> Option<Mount> {
    let mut best: Option<&Mount> = None;
    for mount in mounts {
        if dir.starts_with(&mount.mount_point)
            && best
                .is_none_or(|b| mount.mount_point.components().count() >= b.mount_point.components().count())
        {
            best = Some(mount);
        }
    }
    best.cloned()
}

/// The whole disk under device `(major, minor)`, with its queue settings and IRQs.
pub fn block_device(host: &Host<'_>, device: (u32, u32), irqs: &BTreeMap<u32, Irq>) -> Option<BlockDevice> {
    let link = host.sys(format!("dev/block/{}:{}", device.0, device.1));
    let dir = host.fs.canonicalize(&link).ok()?;
    let disk_dir = if host.fs.exists(&dir.join("partition")) {
        dir.parent()?.to_path_buf()
    } else {
        dir
    };
    let disk = disk_dir.file_name()?.to_string_lossy().into_owned();
    let queue = host.sys(format!("block/{disk}/queue"));
    let device_dir = host.sys(format!("block/{disk}/device"));
    let mut prefixes = Vec::new();
    if let Some(controller) = nvme_controller(&disk) {
        prefixes.push(format!("{controller}q"));
    }
    if let Some(name) = host
        .fs
        .canonicalize(&device_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        if name.starts_with("virtio") {
            prefixes.push(format!("{name}-"));
        }
    }
    Some(BlockDevice {
        scheduler: host
            .read_trimmed(&queue.join("scheduler"))
            .map(|s| Selection::parse(&s)),
        nr_requests: host.read_u64(&queue.join("nr_requests")),
        rotational: host.read_u64(&queue.join("rotational")).map(|r| r != 0),
        irqs: device_irqs(host, &device_dir, &prefixes, irqs),
        disk,
    })
}

/// `nvme0` for `nvme0n1`.
fn nvme_controller(disk: &str) -> Option<String> {
    let rest = disk.strip_prefix("nvme")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| format!("nvme{digits}"))
}

/// Name of the scratch file the probe writes under `<data>/oxbow/`.
pub const PROBE_FILE_NAME: &str = "tune-probe.tmp";

/// Probes the data directory: `O_DIRECT`, `fallocate`, sparse files. Creates
/// `<data>/oxbow/` if needed; the scratch file is removed.
pub fn probe_fs(data_dir: &Path) -> FsProbe {
    let dir = data_dir.join("oxbow");
    if let Err(error) = std::fs::create_dir_all(&dir) {
        return FsProbe {
            not_run: Some(format!("cannot create {}: {error}", dir.display())),
            ..FsProbe::default()
        };
    }
    let path = dir.join(PROBE_FILE_NAME);
    let probe = run_probe(&path);
    let _ = std::fs::remove_file(&path);
    probe.unwrap_or_else(|error| FsProbe {
        not_run: Some(format!("{}: {error}", path.display())),
        ..FsProbe::default()
    })
}

fn run_probe(path: &Path) -> io::Result<FsProbe> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    const PROBE_BYTES: i64 = 1 << 20;
    const SPARSE_BYTES: u64 = 64 << 20;
    let direct_io = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map(drop)
        .map_err(|e| e.to_string());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    // SAFETY: fallocate on a descriptor we own; no memory involved.
    let fallocated = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, PROBE_BYTES) };
    let fallocate = if fallocated == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error().to_string())
    };
    file.set_len(0)?;
    file.set_len(SPARSE_BYTES)?;
    let allocated_bytes = file.metadata()?.blocks() * 512;
    Ok(FsProbe {
        direct_io: Some(direct_io),
        fallocate: Some(fallocate),
        sparse: Some(allocated_bytes < SPARSE_BYTES),
        not_run: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_longest_prefix_wins() {
        let text = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 259:1 / /srv/my\\040data rw,noatime - xfs /dev/nvme0n1p1 rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        let m = mount_of(&mounts, Path::new("/srv/my data/oxbow")).unwrap();
        assert_eq!((m.fs_type.as_str(), m.device), ("xfs", (259, 1)));
        assert_eq!(
            mount_of(&mounts, Path::new("/srv/other")).unwrap().fs_type,
            "ext4"
        );
        assert_eq!(nvme_controller("nvme12n1").as_deref(), Some("nvme12"));
        assert_eq!(nvme_controller("sda"), None);
    }
}
