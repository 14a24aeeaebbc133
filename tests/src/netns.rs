//! Network namespaces for tests that cut brokers off from each other: one namespace
//! per broker, joined through a bridge in a "hub" namespace that the test process
//! reaches over one veth pair, and `iptables` DROP rules inside a broker's namespace to
//! partition it from its peers while the test process still reaches every broker.
//!
//! ```text
//!   test process (its own namespace) 10.213.S.1 ── veth ──┐
//!                                          hub namespace: br0
//!   broker namespace i: eth0 10.213.S.(11+i) ── veth ─────┘
//! ```
//!
//! Only the root side of the uplink lives in the test's namespace; the bridge sits in
//! the hub, so the host's own firewall (bridge netfilter, a FORWARD policy) never sees
//! the brokers' traffic. Names carry the test process's pid and a per-process counter:
//! runs side by side do not meet, and [`NetLab::create`] removes what earlier runs of a
//! process that no longer exists left behind (a test killed before its `Drop` ran).
//!
//! Everything is torn down by [`NetLab`]'s `Drop`, also when the test panics: rules,
//! namespaces (which take their bridge and veths with them) and the uplink.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Prefix of every namespace a lab creates (`oxbow-netlab-<pid>-<n>-<role>`).
const NAMESPACE_PREFIX: &str = "oxbow-netlab-";
/// Prefix of the uplink's root-side interface (`oxh<pid>-<n>`, at most 15 bytes).
const UPLINK_PREFIX: &str = "oxh";
/// First two octets of the labs' private addresses.
const NET_PREFIX: [u8; 2] = [10, 213];
/// Brokers per lab: one octet of host addresses, starting at `.11`.
const MAX_MEMBERS: usize = 200;
/// How long `iptables` waits for the xtables lock another namespace may hold.
const XTABLES_WAIT_S: &str = "10";

/// Labs created by this process so far (part of every name).
static LABS_CREATED: AtomicU32 = AtomicU32::new(0);

/// Why a lab could not be built or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetLabError {
    /// Not running as root: namespaces and firewall rules need it.
    #[error("network namespaces need root (running as uid {0})")]
    NotRoot(u32),
    /// A tool could not be started.
    #[error("`{command}` could not run: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A tool refused.
    #[error("`{command}` failed: {stderr}")]
    Refused {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// No free private subnet.
    #[error("no free 10.213.x.0/24 subnet on this host")]
    NoSubnet,
    /// Too many members for one subnet.
    #[error("{0} members: a lab holds at most {MAX_MEMBERS}")]
    TooManyMembers(usize),
    /// Entering a namespace failed.
    #[error("cannot enter namespace {name}: {source}")]
    Enter {
        /// The namespace.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}

/// One member (broker) of a lab.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its namespace's name.
    pub namespace: String,
    /// Its address on the lab's subnet.
    pub addr: Ipv4Addr,
}

/// Namespaces joined through a bridge; torn down on drop. See the module docs.
#[derive(Debug)]
pub struct NetLab {
    /// The namespace holding the bridge.
    hub: Option<String>,
    /// The uplink's interface in the test's namespace.
    uplink: Option<String>,
    /// The test process's address on the lab's subnet.
    host_addr: Ipv4Addr,
    members: Vec<Member>,
    /// Members with DROP rules in their namespace.
    isolated: Vec<usize>,
}

impl NetLab {
    /// Builds a lab of `count` member namespaces, each with `lo` up and an address on a
    /// fresh 10.213.x.0/24 subnet the test process reaches. Fails (for the caller to
    /// skip its test, printing the reason) when not root or when `ip`/`iptables` or the
    /// kernel refuse.
    pub fn create(count: usize) -> Result<NetLab, NetLabError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(NetLabError::NotRoot(uid));
        }
        if count > MAX_MEMBERS {
            return Err(NetLabError::TooManyMembers(count));
        }
        run("iptables", &["--version"])?;
        remove_leftovers();
        let pid = std::process::id();
        let lab = LABS_CREATED.fetch_add(1, Ordering::Relaxed) % 10;
        let subnet = free_subnet(pid)?;
        let octets = |host: u8| Ipv4Addr::new(NET_PREFIX[0], NET_PREFIX[1], subnet, host);
        // Filled in as it is built: a failure half-way drops it, which removes the rest.
        let mut built = NetLab {
            hub: None,
            uplink: None,
            host_addr: octets(1),
            members: Vec::new(),
            isolated: Vec::new(),
        };
        let hub = format!("{NAMESPACE_PREFIX}{pid}-{lab}-hub");
        run("ip", &["netns", "add", &hub])?;
        built.hub = Some(hub.clone());
        ip_in(&hub, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&hub, &["link", "set", "br0", "up"])?;

        let uplink = format!("{UPLINK_PREFIX}{pid}-{lab}");
        run(
            "ip",
            &[
                "link", "add", &uplink, "type", "veth", "peer", "name", "up0", "netns", &hub,
            ],
        )?;
        built.uplink = Some(uplink.clone());
        ip_in(&hub, &["link", "set", "up0", "master", "br0", "up"])?;
        let host_cidr = format!("{}/24", built.host_addr);
        run("ip", &["addr", "add", &host_cidr, "dev", &uplink])?;
        run("ip", &["link", "set", &uplink, "up"])?;

        for index in 0..count {
            let namespace = format!("{NAMESPACE_PREFIX}{pid}-{lab}-{index}");
            run("ip", &["netns", "add", &namespace])?;
            let addr = octets(11 + u8::try_from(index).map_err(|_| NetLabError::TooManyMembers(count))?);
            built.members.push(Member {
                namespace: namespace.clone(),
                addr,
            });
            let port = format!("vb{index}");
            ip_in(
                &hub,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
                ],
            )?;
            ip_in(&hub, &["link", "set", &port, "master", "br0", "up"])?;
            ip_in(&namespace, &["link", "set", "lo", "up"])?;
            ip_in(&namespace, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip_in(&namespace, &["link", "set", "eth0", "up"])?;
        }
        // The firewall must work inside a member's namespace, or no cut can be made.
        if let Some(first) = built.members.first() {
            let namespace = first.namespace.clone();
            iptables_in(&namespace, &["-S", "INPUT"])?;
        }
        Ok(built)
    }

    /// The test process's address on the lab's subnet.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The members, in creation order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The command prefix that runs a program inside member `index`'s namespace.
    pub fn exec_prefix(&self, index: usize) -> Vec<String> {
        ["ip", "netns", "exec", self.members[index].namespace.as_str()]
            .map(str::to_string)
            .to_vec()
    }

    /// Cuts member `index` off from every other member: DROP rules for their addresses,
    /// in and out, inside its namespace. The test process still reaches it.
    pub fn isolate(&mut self, index: usize) -> Result<(), NetLabError> {
        let namespace = self.members[index].namespace.clone();
        self.isolated.push(index);
        let peers: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, m)| m.addr.to_string())
            .collect();
        for peer in &peers {
            iptables_in(&namespace, &["-A", "INPUT", "-s", peer, "-j", "DROP"])?;
            iptables_in(&namespace, &["-A", "OUTPUT", "-d", peer, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Removes every rule [`Self::isolate`] added.
    pub fn heal(&mut self) -> Result<(), NetLabError> {
        while let Some(index) = self.isolated.pop() {
            let namespace = &self.members[index].namespace;
            iptables_in(namespace, &["-F", "INPUT"])?;
            iptables_in(namespace, &["-F", "OUTPUT"])?;
        }
        Ok(())
    }

    /// Runs `work` on a thread inside member `index`'s network namespace (sockets it
    /// opens, and threads it starts, live there) and returns its result.
    pub fn run_in<T: Send>(&self, index: usize, work: impl FnOnce() -> T + Send) -> Result<T, NetLabError> {
        let name = self.members[index].namespace.clone();
        let enter_error = |source| NetLabError::Enter {
            name: name.clone(),
            source,
        };
        let handle = File::open(format!("/run/netns/{name}"))
            .or_else(|_| File::open(format!("/var/run/netns/{name}")))
            .map_err(enter_error)?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: `handle` is an open namespace file; setns changes only
                    // this thread's network namespace.
                    let entered = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    if entered != 0 {
                        return Err(enter_error(std::io::Error::last_os_error()));
                    }
                    Ok(work())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Whether a TCP connection from inside member `index`'s namespace to `target`
    /// is established within `timeout`.
    pub fn connects_from(
        &self,
        index: usize,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<bool, NetLabError> {
        self.run_in(index, || TcpStream::connect_timeout(&target, timeout).is_ok())
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if let Err(e) = self.heal() {
            eprintln!("netns: removing rules: {e}");
        }
        // Deleting a namespace takes its interfaces (bridge, veths) along once no
        // process is left in it; the caller stops its brokers first.
        for member in self.members.drain(..) {
            remove_namespace(&member.namespace);
        }
        if let Some(hub) = self.hub.take() {
            remove_namespace(&hub);
        }
        if let Some(uplink) = self.uplink.take() {
            // Usually gone with the hub already.
            let _ = run("ip", &["link", "del", &uplink]);
        }
    }
}

/// Runs `program args...`; its stdout on success.
fn run(program: &str, args: &[&str]) -> Result<String, NetLabError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetLabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(NetLabError::Refused {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip -n NAMESPACE args...`.
fn ip_in(namespace: &str, args: &[&str]) -> Result<String, NetLabError> {
    let mut all = vec!["-n", namespace];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// `iptables` inside a namespace (waiting for the xtables lock).
fn iptables_in(namespace: &str, args: &[&str]) -> Result<String, NetLabError> {
    let mut all = vec!["netns", "exec", namespace, "iptables", "-w", XTABLES_WAIT_S];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Kills what still runs in a namespace, then deletes it.
fn remove_namespace(name: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: signalling a process left inside a namespace this harness made.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    if let Err(e) = run("ip", &["netns", "del", name]) {
        eprintln!("netns: {e}");
    }
}

/// The pid in a name `<prefix><pid>-...`, if the name is one of ours.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('-') {
        return None;
    }
    digits.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and uplinks of labs whose process is gone.
fn remove_leftovers() {
    let namespaces = run("ip", &["netns", "list"]).unwrap_or_default();
    for line in namespaces.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if owner_pid(name, NAMESPACE_PREFIX).is_some_and(|pid| !process_exists(pid)) {
            eprintln!("netns: removing {name}, left by an earlier run");
            remove_namespace(name);
        }
    }
    let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // `12: oxh123-0@if11: <BROADCAST,...`
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
            continue;
        };
        if owner_pid(name, UPLINK_PREFIX).is_some_and(|pid| !process_exists(pid)) {
            eprintln!("netns: removing {name}, left by an earlier run");
            let _ = run("ip", &["link", "del", name]);
        }
    }
}

/// A 10.213.x.0/24 subnet no interface here uses, starting from one the pid picks.
fn free_subnet(pid: u32) -> Result<u8, NetLabError> {
    let in_use = run("ip", &["-o", "-4", "addr", "show"])?;
    let start = pid % 250;
    (0..250)
        .map(|step| u8::try_from((start + step) % 250 + 1).unwrap_or(1))
        .find(|s| !in_use.contains(&format!(" {}.{}.{s}.", NET_PREFIX[0], NET_PREFIX[1])))
        .ok_or(NetLabError::NoSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_our_names() {
        assert_eq!(owner_pid("oxbow-netlab-4242-0-hub", NAMESPACE_PREFIX), Some(4242));
        assert_eq!(owner_pid("oxbow-netlab-17-3-2", NAMESPACE_PREFIX), Some(17));
        assert_eq!(owner_pid("oxh99-1", UPLINK_PREFIX), Some(99));
        assert_eq!(owner_pid("oxhost", UPLINK_PREFIX), None);
        assert_eq!(owner_pid("oxh12", UPLINK_PREFIX), None);
        assert_eq!(owner_pid("other-netns", NAMESPACE_PREFIX), None);
    }
}
