//! A process's CPU time and resident memory from `/proc`, and the process listening
//! on a TCP port (a broker given by address only).

use std::path::Path;
use std::time::Instant;

/// CPU time (user + system) and resident set size of a process at one instant.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    /// When it was read.
    pub at: Instant,
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Clock ticks per second of `/proc/PID/stat`'s times.
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Reads `/proc/PID/stat` (utime, stime) and `/proc/PID/status` (VmRSS); `None` when
/// the process is gone or the files cannot be parsed.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let cpu_s = cpu_seconds(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_bytes = rss_bytes(&status)?;
    Some(ProcSample { at, cpu_s, rss_bytes })
}

/// utime + stime in seconds from the text of `/proc/PID/stat`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_s())
}

/// VmRSS in bytes from the text of `/proc/PID/status`.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU used between two samples, in cores (1.0 = one core busy all the time).
pub fn cores_used(before: &ProcSample, after: &ProcSample) -> f64 {
    let wall_s = after.at.duration_since(before.at).as_secs_f64();
    if wall_s > 0.0 {
        (after.cpu_s - before.cpu_s) / wall_s
    } else {
        0.0
    }
}

/// The process listening on TCP `port` (any local address, IPv4 or IPv6), found by the
/// listening socket's inode in `/proc/net/tcp*` and the `/proc/*/fd` link naming it.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if owns_socket(&entry.path().join("fd"), &targets) {
            return Some(pid);
        }
    }
    None
}

fn owns_socket(fd_dir: &Path, targets: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(fd_dir) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|link| link.to_str().map(|s| targets.iter().any(|t| t == s)))
            .unwrap_or(false)
    })
}

/// Inodes of sockets in LISTEN state (0A) on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    let wanted = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            let local_port = local.rsplit(':').next()?;
            (local_port.eq_ignore_ascii_case(&wanted) && *state == "0A").then(|| (*inode).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_status_and_tcp_tables() {
        let stat =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 1000 200";
        let cpu = cpu_seconds(stat).unwrap();
        assert!((cpu - 300.0 / ticks_per_s()).abs() < 1e-9);
        assert_eq!(rss_bytes("Name:\tx\nVmRSS:\t  2048 kB\n"), Some(2048 * 1024));
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 55512 1 0\n   1: 0100007F:2384 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 55513 1 0\n";
        assert_eq!(listening_inodes(table, 9092), vec!["55512".to_string()]);
        assert!(listening_inodes(table, 9093).is_empty());
    }

    #[test]
    fn finds_this_process_by_its_listening_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
        let later = sample(std::process::id()).unwrap();
        assert!(cores_used(&me, &later) >= 0.0);
    }
}
