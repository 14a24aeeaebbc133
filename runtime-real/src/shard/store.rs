//! The object-store executor of a node: one helper thread running a small tokio
//! current-thread runtime with the `object_store` client (local filesystem or
//! S3-compatible), fed by the shards through one bounded queue and answering each shard
//! through its own bounded queue plus a ring of the shard's eventfd doorbell — a shard
//! thread never waits on the store. Every operation gets exactly one answer: the
//! store's, a timeout after `request_timeout`, or `Throttled` at once when the queue is
//! full (the archiver retries with backoff; produce never waits on any of it).

use super::smp::EventFd;
use crate::config::{StoreKind, TieredStorageSection};
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use oxbow_core::broker::io::{PartitionKey, StoreOwner};
use oxbow_core::tier::{OpId, StoreCompletion, StoreError, StoreReply};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Answers queued per shard before the helper waits for the shard to take them.
const REPLY_QUEUE: usize = 1_024;
/// Most keys one List returns (the archiver's orphan GC asks per partition).
const MAX_LISTED_KEYS: usize = 1_000_000;

/// One object-store operation, its body already in memory.
#[derive(Debug)]
pub enum StoreOp {
    /// Upload (atomically: the object is whole or absent).
    Put {
        /// Object key.
        key: String,
        /// Bytes.
        bytes: Bytes,
    },
    /// Download, whole or `(position, len)`.
    Get {
        /// Object key.
        key: String,
        /// Range.
        range: Option<(u64, u64)>,
    },
    /// Delete (a missing object is not an error).
    Delete {
        /// Object key.
        key: String,
    },
    /// Keys under a prefix, sorted.
    List {
        /// Prefix.
        prefix: String,
    },
}

#[derive(Debug)]
struct Request {
    shard: usize,
    partition: PartitionKey,
    owner: StoreOwner,
    op: OpId,
    what: StoreOp,
}

/// An answer for a shard.
#[derive(Debug)]
pub struct Answer {
    /// The partition.
    pub partition: PartitionKey,
    /// Quoted.
    pub owner: StoreOwner,
    /// The result.
    pub completion: StoreCompletion,
}

/// Node-wide store counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Operations completed successfully.
    pub ok: AtomicU64,
    /// Operations that failed (any error other than not-found).
    pub errors: AtomicU64,
    /// Operations that timed out.
    pub timeouts: AtomicU64,
    /// Operations the store throttled.
    pub throttled: AtomicU64,
    /// Operations refused because the queue was full.
    pub queue_full: AtomicU64,
    /// Bytes uploaded.
    pub put_bytes: AtomicU64,
    /// Bytes downloaded.
    pub get_bytes: AtomicU64,
}

/// A shard's handle on the store.
#[derive(Debug)]
pub struct StoreClient {
    shard: usize,
    requests: mpsc::Sender<Request>,
    answers: mpsc::Receiver<Answer>,
    counters: Arc<StoreCounters>,
}

impl StoreClient {
    /// Queues an operation; if the queue is full, the answer (`Throttled`) is returned
    /// at once for the caller to hand back.
    pub fn submit(
        &self,
        partition: PartitionKey,
        owner: StoreOwner,
        op: OpId,
        what: StoreOp,
    ) -> Result<(), Answer> {
        let request = Request {
            shard: self.shard,
            partition,
            owner,
            op,
            what,
        };
        self.requests.try_send(request).map_err(|e| {
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            let request = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            Answer {
                partition: request.partition,
                owner: request.owner,
                completion: StoreCompletion {
                    op: request.op,
                    result: Err(StoreError::Throttled),
                },
            }
        })
    }

    /// The next answer, if any.
    pub fn poll(&mut self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }

    /// The node's store counters.
    pub fn counters(&self) -> &StoreCounters {
        &self.counters
    }
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreSetupError {
    /// The filesystem store's directory.
    #[error("tiered_storage.filesystem_dir {dir}: {message}")]
    Directory {
        /// The directory.
        dir: String,
        /// What failed.
        message: String,
    },
    /// The S3 client refused its settings.
    #[error("tiered_storage (s3): {0}")]
    S3(String),
    /// The helper thread or its runtime.
    #[error("object-store thread: {0}")]
    Thread(String),
}

/// Builds the configured store (`None` when tiered storage is off).
pub fn build_store(
    config: &TieredStorageSection,
    data_dir: &Path,
) -> Result<Option<Arc<dyn ObjectStore>>, StoreSetupError> {
    let timeout = Duration::from_millis(config.request_timeout_ms);
    match config.store {
        StoreKind::None => Ok(None),
        StoreKind::Filesystem => {
            let dir = if config.filesystem_dir.as_os_str().is_empty() {
                data_dir.join("tiered")
            } else {
                config.filesystem_dir.clone()
            };
            let fail = |message: String| StoreSetupError::Directory {
                dir: dir.display().to_string(),
                message,
            };
            std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| fail(e.to_string()))?;
            Ok(Some(Arc::new(store)))
        }
        StoreKind::S3 => {
            let client = object_store::ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(timeout.min(Duration::from_secs(5)))
                .with_allow_http(config.s3_allow_http);
            // One quick retry inside the client; the archiver owns the backoff.
            let retry = object_store::RetryConfig {
                max_retries: 1,
                retry_timeout: timeout,
                ..object_store::RetryConfig::default()
            };
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_region(&config.s3_region)
                .with_bucket_name(&config.s3_bucket)
                .with_allow_http(config.s3_allow_http)
                .with_client_options(client)
                .with_retry(retry);
            if !config.s3_endpoint.is_empty() {
                builder = builder.with_endpoint(&config.s3_endpoint);
            }
            if !config.s3_access_key_id.is_empty() {
                builder = builder
                    .with_access_key_id(&config.s3_access_key_id)
                    .with_secret_access_key(&config.s3_secret_access_key);
            }
            let store = builder.build().map_err(|e| StoreSetupError::S3(e.to_string()))?;
            Ok(Some(Arc::new(store)))
        }
    }
}

/// The helper thread; dropping every client ends it.
#[derive(Debug)]
pub struct StoreService {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoreService {
    /// Starts the helper thread for `store`, with one client per shard (each woken
    /// through its doorbell).
    pub fn start(
        store: Arc<dyn ObjectStore>,
        config: &TieredStorageSection,
        doorbells: Vec<Arc<EventFd>>,
    ) -> Result<(StoreService, Vec<StoreClient>), StoreSetupError> {
        let (requests_tx, requests_rx) = mpsc::channel(config.max_queued_ops);
        let counters = Arc::new(StoreCounters::default());
        let mut answer_txs = Vec::new();
        let mut clients = Vec::new();
        for (shard, _) in doorbells.iter().enumerate() {
            let (tx, rx) = mpsc::channel(REPLY_QUEUE);
            answer_txs.push(tx);
            clients.push(StoreClient {
                shard,
                requests: requests_tx.clone(),
                answers: rx,
                counters: counters.clone(),
            });
        }
        drop(requests_tx);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreSetupError::Thread(e.to_string()))?;
        let helper = Helper {
            store,
            timeout: Duration::from_millis(config.request_timeout_ms),
            answers: answer_txs,
            doorbells,
            counters,
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_ops)),
        };
        let thread = std::thread::Builder::new()
            .name("oxbow-store".to_string())
            .spawn(move || runtime.block_on(helper.run(requests_rx)))
            .map_err(|e| StoreSetupError::Thread(e.to_string()))?;
        Ok((StoreService { thread: Some(thread) }, clients))
    }

    /// Waits for the helper to finish (after every client is dropped).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Helper {
    store: Arc<dyn ObjectStore>,
    timeout: Duration,
    answers: Vec<mpsc::Sender<Answer>>,
    doorbells: Vec<Arc<EventFd>>,
    counters: Arc<StoreCounters>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Helper {
    async fn run(self, mut requests: mpsc::Receiver<Request>) {
        let helper = Arc::new(self);
        while let Some(request) = requests.recv().await {
            let Ok(permit) = helper.permits.clone().acquire_owned().await else {
                return;
            };
            let helper = helper.clone();
            tokio::spawn(async move {
                let result = match tokio::time::timeout(
                    helper.timeout,
                    execute(&*helper.store, &helper.counters, request.what),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Timeout),
                };
                drop(permit);
                helper.count(&result);
                let answer = Answer {
                    partition: request.partition,
                    owner: request.owner,
                    completion: StoreCompletion {
                        op: request.op,
                        result,
                    },
                };
                if let Some(tx) = helper.answers.get(request.shard) {
                    // The shard is gone when this fails (shutdown): nothing to tell.
                    if tx.send(answer).await.is_ok() {
                        if let Some(doorbell) = helper.doorbells.get(request.shard) {
                            doorbell.signal();
                        }
                    }
                }
            });
        }
    }

    fn count(&self, result: &Result<StoreReply, StoreError>) {
        let c = &self.counters;
        match result {
            Ok(StoreReply::Got(bytes)) => {
                c.ok.fetch_add(1, Ordering::Relaxed);
                c.get_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Ok(_) | Err(StoreError::NotFound) => {
                c.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(StoreError::Timeout) => {
                c.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(StoreError::Throttled) => {
                c.throttled.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Maps a client error onto the archiver's kinds.
fn store_error(error: &object_store::Error) -> StoreError {
    if matches!(error, object_store::Error::NotFound { .. }) {
        return StoreError::NotFound;
    }
    let text = error.to_string();
    if text.contains("SlowDown") || text.contains("503") || text.contains("429") || text.contains("Too Many")
    {
        StoreError::Throttled
    } else if text.contains("timed out") || text.contains("timeout") {
        StoreError::Timeout
    } else {
        tracing::debug!(%error, "object store operation failed");
        StoreError::Unavailable
    }
}

async fn execute(
    store: &dyn ObjectStore,
    counters: &StoreCounters,
    what: StoreOp,
) -> Result<StoreReply, StoreError> {
    match what {
        StoreOp::Put { key, bytes } => {
            counters
                .put_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let path = StorePath::from(key);
            store
                .put(&path, PutPayload::from_bytes(bytes))
                .await
                .map_err(|e| store_error(&e))?;
            Ok(StoreReply::Put)
        }
        StoreOp::Get { key, range } => {
            let path = StorePath::from(key);
            let bytes = match range {
                Some((position, len)) => store
                    .get_range(&path, position..position.saturating_add(len))
                    .await
                    .map_err(|e| store_error(&e))?,
                None => store
                    .get(&path)
                    .await
                    .map_err(|e| store_error(&e))?
                    .bytes()
                    .await
                    .map_err(|e| store_error(&e))?,
            };
            Ok(StoreReply::Got(bytes))
        }
        StoreOp::Delete { key } => match store.delete(&StorePath::from(key)).await {
            Ok(()) => Ok(StoreReply::Deleted),
            Err(object_store::Error::NotFound { .. }) => Ok(StoreReply::Deleted),
            Err(e) => Err(store_error(&e)),
        },
        StoreOp::List { prefix } => {
            // `object_store` lists by path segments: list the prefix's directory and
            // keep the keys that start with the prefix.
            let dir = match prefix.rfind('/') {
                Some(at) => StorePath::from(&prefix[..at]),
                None => StorePath::default(),
            };
            let mut stream = store.list(Some(&dir));
            let mut keys = Vec::new();
            while let Some(item) = stream.next().await {
                let meta = match item {
                    Ok(meta) => meta,
                    // Nothing under the prefix yet.
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(store_error(&e)),
                };
                let key = meta.location.to_string();
                if key.starts_with(&prefix) {
                    if keys.len() >= MAX_LISTED_KEYS {
                        return Err(StoreError::Unavailable);
                    }
                    keys.push(key);
                }
            }
            keys.sort();
            Ok(StoreReply::Listed(keys))
        }
    }
}
