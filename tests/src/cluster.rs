//! A cluster of `oxbow-test-node` processes, for tests that kill, pause and restart
//! brokers with signals: fixed addresses per broker (a restarted broker comes back at
//! the same addresses), seeds naming every broker, and the signals themselves. Brokers
//! run on loopback ([`BrokerSite::loopback`]) or wherever a [`BrokerSite`] says, under
//! a command prefix (e.g. `ip netns exec NS`, see [`crate::netns`]).

use crate::ports::free_port;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One broker of a test cluster.
#[derive(Debug)]
pub struct TestBroker {
    /// Broker id.
    pub id: u32,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Kafka listener.
    pub kafka_addr: String,
    /// Admin listener.
    pub admin_addr: String,
    /// Broker-to-broker listener.
    pub rpc_addr: String,
    /// The program and arguments the broker's program runs under (empty: directly).
    pub command_prefix: Vec<String>,
    /// The running process, if any.
    pub process: Option<Child>,
}

/// Where a broker runs: its listeners and the command its program runs under.
#[derive(Debug, Clone)]
pub struct BrokerSite {
    /// Kafka listener.
    pub kafka_addr: String,
    /// Admin listener.
    pub admin_addr: String,
    /// Broker-to-broker listener.
    pub rpc_addr: String,
    /// Program and arguments to run the broker under (empty: run it directly).
    pub command_prefix: Vec<String>,
}

impl BrokerSite {
    /// Free loopback ports, run directly.
    pub fn loopback() -> BrokerSite {
        BrokerSite {
            kafka_addr: format!("127.0.0.1:{}", free_port()),
            admin_addr: format!("127.0.0.1:{}", free_port()),
            rpc_addr: format!("127.0.0.1:{}", free_port()),
            command_prefix: Vec::new(),
        }
    }
}

/// A cluster of brokers.
#[derive(Debug)]
pub struct TestCluster {
    /// The brokers, by position (broker id = position + 1).
    pub brokers: Vec<TestBroker>,
    seeds: String,
    /// The `oxbow-test-node` program.
    program: PathBuf,
    /// A configuration file every broker starts with.
    config: Option<PathBuf>,
}

impl TestBroker {
    fn new(id: u32, root: &Path, site: BrokerSite) -> TestBroker {
        TestBroker {
            id,
            data_dir: root.join(format!("broker-{id}")),
            kafka_addr: site.kafka_addr,
            admin_addr: site.admin_addr,
            rpc_addr: site.rpc_addr,
            command_prefix: site.command_prefix,
            process: None,
        }
    }
}

impl TestCluster {
    /// Starts `count` brokers of `program` (`oxbow-test-node`, from the test's
    /// `CARGO_BIN_EXE_oxbow-test-node`) on loopback with data under `root`; waits until
    /// each serves.
    pub fn start(program: &Path, root: &Path, count: u32) -> TestCluster {
        Self::start_with_config(program, root, count, None)
    }

    /// [`TestCluster::start`] with every broker reading configuration file `config`
    /// (flags still set its addresses, id, seeds and data directory).
    pub fn start_with_config(program: &Path, root: &Path, count: u32, config: Option<&Path>) -> TestCluster {
        let sites = (0..count).map(|_| BrokerSite::loopback()).collect();
        TestCluster::start_at_with_config(program, root, sites, config)
    }

    /// Starts one broker per site (broker id = position + 1) with data under `root`;
    /// waits until each serves.
    pub fn start_at(program: &Path, root: &Path, sites: Vec<BrokerSite>) -> TestCluster {
        TestCluster::start_at_with_config(program, root, sites, None)
    }

    fn start_at_with_config(
        program: &Path,
        root: &Path,
        sites: Vec<BrokerSite>,
        config: Option<&Path>,
    ) -> TestCluster {
        let brokers: Vec<TestBroker> = (1..)
            .zip(sites)
            .map(|(id, site)| TestBroker::new(id, root, site))
            .collect();
        let count = u32::try_from(brokers.len()).expect("few brokers");
        let seeds = brokers
            .iter()
            .map(|b| format!("{}@{}", b.id, b.rpc_addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestCluster {
            brokers,
            seeds,
            program: program.to_path_buf(),
            config: config.map(Path::to_path_buf),
        };
        for id in 1..=count {
            cluster.restart(id);
        }
        cluster
    }

    /// Starts one more broker (the next id) that joins the running cluster through the
    /// seeds; returns its id.
    pub fn add_broker(&mut self, root: &Path) -> u32 {
        let id = u32::try_from(self.brokers.len()).expect("few brokers") + 1;
        self.brokers
            .push(TestBroker::new(id, root, BrokerSite::loopback()));
        self.restart(id);
        id
    }

    /// `host:port,...` of every broker, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.kafka_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn broker(&mut self, id: u32) -> &mut TestBroker {
        let index = usize::try_from(id - 1).expect("small id");
        &mut self.brokers[index]
    }

    /// Starts broker `id` (again) and waits until it serves.
    pub fn restart(&mut self, id: u32) {
        let seeds = self.seeds.clone();
        let program = self.program.clone();
        let config = self.config.clone();
        let broker = self.broker(id);
        assert!(broker.process.is_none(), "broker {id} is running");
        std::fs::create_dir_all(&broker.data_dir).expect("data directory");
        // Right after a SIGKILL the kernel may still hold the old process's data
        // directory lock or ports for a moment: try again briefly.
        for _ in 0..100 {
            let log = std::fs::File::create(broker.data_dir.with_extension("log")).expect("log file");
            let mut command = match broker.command_prefix.split_first() {
                Some((wrapper, args)) => {
                    let mut command = Command::new(wrapper);
                    command.args(args).arg(&program);
                    command
                }
                None => Command::new(&program),
            };
            let mut child = command
                .arg(&broker.data_dir)
                .arg(&broker.kafka_addr)
                .arg(&broker.admin_addr)
                .arg(broker.id.to_string())
                .arg(&broker.rpc_addr)
                .arg(&seeds)
                .args(config.iter())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .expect("spawn oxbow-test-node");
            let mut line = String::new();
            if let Some(stdout) = child.stdout.take() {
                let _ = BufReader::new(stdout).read_line(&mut line);
            }
            if line.starts_with("ready ") {
                broker.process = Some(child);
                return;
            }
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "broker {id} did not start; see {}",
            broker.data_dir.with_extension("log").display()
        );
    }

    /// SIGKILL broker `id` and reap it.
    pub fn kill(&mut self, id: u32) {
        if let Some(mut child) = self.broker(id).process.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGSTOP broker `id` (a long pause: it keeps its sockets and says nothing).
    pub fn pause(&mut self, id: u32) {
        if let Some(child) = self.broker(id).process.as_ref() {
            signal(child, libc::SIGSTOP);
        }
    }

    /// SIGCONT broker `id`.
    pub fn resume(&mut self, id: u32) {
        if let Some(child) = self.broker(id).process.as_ref() {
            signal(child, libc::SIGCONT);
        }
    }

    /// The tail of broker `id`'s log, for failure messages.
    pub fn log_tail(&self, id: u32, lines: usize) -> String {
        let index = usize::try_from(id - 1).expect("small id");
        let path = self.brokers[index].data_dir.with_extension("log");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for broker in &self.brokers {
                eprintln!(
                    "---- broker {} (last 60 log lines) ----\n{}",
                    broker.id,
                    self.log_tail(broker.id, 60)
                );
            }
        }
        for broker in &mut self.brokers {
            if let Some(mut child) = broker.process.take() {
                signal(&child, libc::SIGCONT);
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

fn signal(child: &Child, signal: i32) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: signalling our own child process, which we have not reaped yet.
    unsafe {
        libc::kill(pid, signal);
    }
}
