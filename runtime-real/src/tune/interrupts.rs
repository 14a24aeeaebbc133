//! Interrupts: `/proc/interrupts` parsed into numbered IRQs with their action names
//! and current affinity (`/proc/irq/N/smp_affinity_list`), and which of them belong to
//! a network interface or a disk controller (its `msi_irqs` directory in sysfs, or
//! action names that start with the device's name, e.g. `nvme0q3`, `eth0-TxRx-1`).

use super::fs::Host;
use std::collections::BTreeMap;
use std::path::Path;

/// One numbered interrupt.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Irq {
    /// The IRQ number.
    pub number: u32,
    /// Its action names (the last column of `/proc/interrupts`).
    pub name: String,
    /// `smp_affinity_list`, if readable.
    pub affinity: Option<String>,
}

/// Parses `/proc/interrupts` text: numbered lines only (`NMI:` and friends skipped).
pub fn parse_interrupts(text: &str) -> BTreeMap<u32, String> {
    let mut irqs = BTreeMap::new();
    let mut lines = text.lines();
    let cpus = lines.next().map_or(0, |header| header.split_whitespace().count());
    for line in lines {
        let Some((number, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(number) = number.trim().parse::<u32>() else {
            continue;
        };
        // Per-CPU counts, then chip, hwirq/type, then the action names.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let name = fields
            .get(cpus.min(fields.len())..)
            .and_then(|tail| tail.last())
            .copied()
            .unwrap_or("");
        irqs.insert(number, name.to_string());
    }
    irqs
}

/// Every numbered IRQ with its name and affinity.
pub fn read_irqs(host: &Host<'_>) -> BTreeMap<u32, Irq> {
    let text = host.fs.read(&host.proc("interrupts")).unwrap_or_default();
    parse_interrupts(&text)
        .into_iter()
        .map(|(number, name)| {
            let affinity = host.read_trimmed(&host.proc(format!("irq/{number}/smp_affinity_list")));
            (
                number,
                Irq {
                    number,
                    name,
                    affinity,
                },
            )
        })
        .collect()
}

/// IRQs of a device: numbers listed in `<device_dir>/msi_irqs` (and one level up, for
/// an NVMe namespace's controller), plus IRQs whose name starts with one of `prefixes`.
pub fn device_irqs(
    host: &Host<'_>,
    device_dir: &Path,
    prefixes: &[String],
    irqs: &BTreeMap<u32, Irq>,
) -> Vec<u32> {
    let mut found: Vec<u32> = Vec::new();
    for dir in [
        device_dir.join("msi_irqs"),
        device_dir.join("device").join("msi_irqs"),
    ] {
        found.extend(host.list(&dir).iter().filter_map(|n| n.parse::<u32>().ok()));
    }
    for irq in irqs.values() {
        if prefixes
            .iter()
            .any(|p| !p.is_empty() && irq.name.starts_with(p.as_str()))
        {
            found.push(irq.number);
        }
    }
    found.retain(|n| irqs.contains_key(n));
    found.sort_unstable();
    found.dedup();
    found
}

/// A network interface backed by a device (loopback and virtual interfaces skipped).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// Its IRQs.
    pub irqs: Vec<u32>,
}

/// The machine's physical (device-backed) network interfaces and their IRQs.
pub fn read_nics(host: &Host<'_>, irqs: &BTreeMap<u32, Irq>) -> Vec<Nic> {
    let net = host.sys("class/net");
    let mut nics = Vec::new();
    for name in host.list(&net) {
        let device = net.join(&name).join("device");
        if name == "lo" || !host.fs.exists(&device) {
            continue;
        }
        let mut prefixes = vec![name.clone()];
        // virtio-net names its IRQs after the virtio device (`virtio1-input.0`).
        if let Some(dev) = host
            .fs
            .canonicalize(&device)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        {
            if dev.starts_with("virtio") {
                prefixes.push(format!("{dev}-"));
            }
        }
        let irqs = device_irqs(host, &device, &prefixes, irqs);
        nics.push(Nic { name, irqs });
    }
    nics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbered_lines() {
        let text = "           CPU0       CPU1\n  0:         40          0   IO-APIC   2-edge      timer\n 24:       1000         20   PCI-MSI 1048576-edge      nvme0q1\nNMI:          0          0   Non-maskable interrupts\n";
        let irqs = parse_interrupts(text);
        assert_eq!(irqs.len(), 2);
        assert_eq!(irqs[&24], "nvme0q1");
        assert_eq!(irqs[&0], "timer");
    }
}
