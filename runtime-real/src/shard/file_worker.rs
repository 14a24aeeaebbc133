//! The shard's small-file helper thread: runs the [`FileJob`]s of the shard's partition
//! directories (checkpoints, producer-state and tier-state files, indexes) with blocking
//! calls, so the shard's event loop never waits in their `fdatasync`, `rename` and
//! directory `fsync` — on a busy disk one of those takes tens of milliseconds, and every
//! partition of the shard would wait with it.
//!
//! Jobs run one at a time in the order submitted (a partition's jobs stay in its
//! emission order). Each outcome goes back through a queue the shard drains, and a ring
//! of the shard's eventfd doorbell wakes it. Dropping the worker lets the thread finish
//! what was submitted, then joins it.

use super::smp::EventFd;
use crate::storage::error::StorageResult;
use crate::storage::file_job::FileJob;
use crate::storage::vfs::Vfs;
use crate::storage::RealVfs;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A job as the shard submits it: whose it is (the storage's owner id) and the job.
type Submitted = (u64, FileJob);

/// One finished job: the owner id, the job's token and its outcome.
pub type FileJobDone = (u64, u64, StorageResult<()>);

/// The helper thread and its two queues.
#[derive(Debug)]
pub struct FileWorker {
    jobs: Option<Sender<Submitted>>,
    done: Receiver<FileJobDone>,
    in_flight: usize,
    thread: Option<JoinHandle<()>>,
}

impl FileWorker {
    /// Starts the helper thread of shard `shard`, ringing `doorbell` after each job.
    pub fn start(shard: u32, vfs: RealVfs, doorbell: Arc<EventFd>) -> std::io::Result<FileWorker> {
        let (jobs, job_queue) = channel::<Submitted>();
        let (done_queue, done) = channel::<FileJobDone>();
        let thread = std::thread::Builder::new()
            .name(format!("oxbow-files-{shard}"))
            .spawn(move || run(&vfs, &job_queue, &done_queue, &doorbell))?;
        Ok(FileWorker {
            jobs: Some(jobs),
            done,
            in_flight: 0,
            thread: Some(thread),
        })
    }

    /// Queues `job` of the storage `owner`. Returns the job back if the thread is gone
    /// (it never stops on its own; only a panic in a system call wrapper would end it).
    pub fn submit(&mut self, owner: u64, job: FileJob) -> Result<(), FileJob> {
        let Some(jobs) = self.jobs.as_ref() else {
            return Err(job);
        };
        match jobs.send((owner, job)) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(returned) => Err(returned.0 .1),
        }
    }

    /// The next finished job, if any.
    pub fn poll(&mut self) -> Option<FileJobDone> {
        let done = self.done.try_recv().ok()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(done)
    }

    /// Jobs submitted and not yet polled back.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for FileWorker {
    fn drop(&mut self) {
        // Closing the job queue ends the thread once it has run what was queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("file worker thread panicked");
            }
        }
    }
}

fn run<V: Vfs>(vfs: &V, jobs: &Receiver<Submitted>, done: &Sender<FileJobDone>, doorbell: &EventFd) {
    while let Ok((owner, job)) = jobs.recv() {
        let result = job.kind.execute(vfs);
        if done.send((owner, job.token, result)).is_err() {
            // The shard is gone; finish the queued jobs anyway (they are durable
            // writes the log asked for), nobody reads the outcomes.
            continue;
        }
        doorbell.signal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::file_job::FileJobKind;
    use bytes::Bytes;
    use std::time::{Duration, Instant};

    fn wait_for(worker: &mut FileWorker) -> FileJobDone {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(done) = worker.poll() {
                return done;
            }
            assert!(Instant::now() < deadline, "no outcome in 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn jobs_run_in_order_and_each_reports_once_with_a_doorbell_ring() {
        let dir = tempfile::tempdir().unwrap();
        let doorbell = Arc::new(EventFd::new().unwrap());
        let mut worker = FileWorker::start(7, RealVfs::direct(), doorbell.clone()).unwrap();
        let path = dir.path().join("state");
        for (token, content) in [(1u64, "first"), (2, "second")] {
            let kind = FileJobKind::Replace {
                dir: dir.path().to_path_buf(),
                tmp: dir.path().join("state.tmp"),
                path: path.clone(),
                data: Bytes::from(content),
            };
            worker.submit(9, FileJob { token, kind }).unwrap();
        }
        assert_eq!(worker.in_flight(), 2);
        let (owner, token, result) = wait_for(&mut worker);
        assert_eq!((owner, token), (9, 1));
        result.unwrap();
        let (owner, token, result) = wait_for(&mut worker);
        assert_eq!((owner, token), (9, 2));
        result.unwrap();
        assert_eq!(worker.in_flight(), 0);
        assert!(doorbell.drain() >= 1, "the doorbell rang");
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!dir.path().join("state.tmp").exists());
    }

    #[test]
    fn a_failed_job_reports_its_error_and_the_next_job_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let doorbell = Arc::new(EventFd::new().unwrap());
        let mut worker = FileWorker::start(0, RealVfs::direct(), doorbell).unwrap();
        let missing = dir.path().join("no-such-dir");
        let failing = FileJobKind::Replace {
            dir: missing.clone(),
            tmp: missing.join("checkpoint.tmp"),
            path: missing.join("checkpoint"),
            data: Bytes::from_static(b"x"),
        };
        worker
            .submit(
                1,
                FileJob {
                    token: 5,
                    kind: failing,
                },
            )
            .unwrap();
        let index = FileJobKind::Overwrite {
            path: dir.path().join("0-1-v1.index"),
            data: Bytes::from_static(b"index"),
        };
        worker
            .submit(
                1,
                FileJob {
                    token: 6,
                    kind: index,
                },
            )
            .unwrap();
        let (_, token, result) = wait_for(&mut worker);
        assert_eq!(token, 5);
        let error = result.unwrap_err().to_string();
        assert!(error.contains("checkpoint.tmp"), "{error}");
        let (_, token, result) = wait_for(&mut worker);
        assert_eq!(token, 6);
        result.unwrap();
    }

    #[test]
    fn dropping_the_worker_finishes_the_queued_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let doorbell = Arc::new(EventFd::new().unwrap());
        let mut worker = FileWorker::start(0, RealVfs::direct(), doorbell).unwrap();
        for token in 0..20u64 {
            let kind = FileJobKind::Overwrite {
                path: dir.path().join(format!("{token}.index")),
                data: Bytes::from(token.to_string()),
            };
            worker.submit(1, FileJob { token, kind }).unwrap();
        }
        drop(worker);
        for token in 0..20u64 {
            let written = std::fs::read(dir.path().join(format!("{token}.index"))).unwrap();
            assert_eq!(written, token.to_string().as_bytes());
        }
    }
}
