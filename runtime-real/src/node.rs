//! One Oxbow node on real hardware: it owns a data directory (locked against a second
//! process), recovers every partition log found there — torn tails cut, corruption
//! reported and the partition left unserved rather than cut — and closes the logs
//! cleanly (indexes, sync, checkpoint) on SIGINT or SIGTERM.
//!
//! The Kafka listener, the shards and the Raft groups build on this (see the broker
//! and cluster issues); today `oxbow start` recovers and holds the directory.

use crate::clock::MonotonicClock;
use crate::config::NodeConfig;
use crate::storage::aligned::{BufferPool, PoolConfig};
use crate::storage::disk_log::{open_partition_log, DiskLog, OpenLogError};
use oxbow_core::log::RecoveryReport;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The data directory could not be created or read.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another oxbow process")]
    Locked(PathBuf),
    /// The buffer pool could not be allocated.
    #[error("buffer pool: {0}")]
    Pool(String),
}

/// A partition replica's directory: `kafka/<topic>/<partition>_<revision>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartitionDir {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Revision (the controller command that created this replica).
    pub revision: i64,
}

/// The outcome of opening one partition.
#[derive(Debug)]
pub enum PartitionState {
    /// Recovered and open.
    Open(Box<DiskLog>, RecoveryReport),
    /// Not served: its data is damaged or unreadable (nothing was cut).
    Failed(OpenLogError),
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    clock: MonotonicClock,
    _lock: File,
    /// Partitions found in the data directory.
    pub partitions: Vec<(PartitionDir, PartitionState)>,
}

/// Lists the partition directories under `<data_dir>/kafka`, sorted.
pub fn find_partitions(data_dir: &Path) -> std::io::Result<Vec<PartitionDir>> {
    let kafka = data_dir.join("kafka");
    let mut found = Vec::new();
    let Ok(topics) = std::fs::read_dir(&kafka) else {
        return Ok(found);
    };
    for topic in topics {
        let topic = topic?;
        if !topic.file_type()?.is_dir() {
            continue;
        }
        let topic_name = topic.file_name().to_string_lossy().into_owned();
        for partition in std::fs::read_dir(topic.path())? {
            let partition = partition?;
            let name = partition.file_name().to_string_lossy().into_owned();
            let parsed = name
                .split_once('_')
                .and_then(|(p, r)| Some((p.parse::<i32>().ok()?, r.parse::<i64>().ok()?)));
            if let (Some((partition, revision)), true) = (parsed, partition.file_type()?.is_dir()) {
                found.push(PartitionDir {
                    topic: topic_name.clone(),
                    partition,
                    revision,
                });
            }
        }
    }
    found.sort();
    Ok(found)
}

fn lock_data_dir(data_dir: &Path) -> Result<File, NodeError> {
    let dir_error = |source| NodeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir.join("oxbow")).map_err(dir_error)?;
    std::fs::create_dir_all(data_dir.join("kafka")).map_err(dir_error)?;
    let lock = File::create(data_dir.join("oxbow").join("lock")).map_err(dir_error)?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(NodeError::Locked(data_dir.to_path_buf()));
    }
    Ok(lock)
}

impl Node {
    /// Locks the data directory and recovers every partition in it.
    pub fn open(config: NodeConfig) -> Result<Node, NodeError> {
        let data_dir = config.node.data_dir.clone();
        let lock = lock_data_dir(&data_dir)?;
        let clock = MonotonicClock::start();
        let pool = BufferPool::new(PoolConfig::default()).map_err(|e| NodeError::Pool(e.to_string()))?;
        let dirs = find_partitions(&data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let mut partitions = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let opened = open_partition_log(
                &data_dir,
                &dir.topic,
                dir.partition,
                dir.revision,
                config.log_config(),
                pool.clone(),
                clock.now(),
            );
            let state = match opened {
                Ok((log, report)) => PartitionState::Open(Box::new(log), report),
                Err(error) => PartitionState::Failed(error),
            };
            partitions.push((dir, state));
        }
        Ok(Node {
            config,
            clock,
            _lock: lock,
            partitions,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Closes every open log cleanly: index of the active segment, sync, checkpoint.
    /// Returns the partitions that could not be closed cleanly, with why.
    pub fn close(self) -> Vec<(PartitionDir, String)> {
        let now = self.clock.now();
        let mut failures = Vec::new();
        for (dir, state) in self.partitions {
            if let PartitionState::Open(log, _) = state {
                if let Err(error) = log.close(now) {
                    failures.push((dir, error.to_string()));
                }
            }
        }
        failures
    }
}

/// Blocks SIGINT and SIGTERM for this thread and the threads it starts later, so
/// [`wait_for_shutdown_signal`] can take them synchronously. Call first in `main`.
pub fn block_shutdown_signals() {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM (blocked by [`block_shutdown_signals`]); returns its name.
pub fn wait_for_shutdown_signal() -> &'static str {
    // SAFETY: sigwait on a local set of signals this thread has blocked.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut signal: libc::c_int = 0;
        loop {
            if libc::sigwait(&set, &mut signal) == 0 {
                return if signal == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
            }
        }
    }
}
