//! The admin HTTP listener (`node.admin_addr`, default 127.0.0.1:9644): a small
//! hand-written HTTP/1.1 server on its own thread.
//!
//! * `GET /v1/health` — 200 with JSON when every shard answers, 503 otherwise.
//! * `GET /metrics` — Prometheus text format, per shard ([`metrics`]).
//! * anything else — 404 (405 for a method other than GET).
//!
//! Shard state is never locked: the server asks each shard for a snapshot by message
//! ([`Control::Metrics`] on the shard's bounded control channel, then its doorbell) and
//! waits a bounded time for the answers. One request is served at a time; a request
//! head larger than [`MAX_REQUEST_BYTES`] or slower than [`READ_TIMEOUT`] is dropped.

pub mod metrics;

use crate::shard::runtime::{Control, ShardSnapshot};
use crate::shard::smp::EventFd;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server waits for the shards' snapshots.
pub const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the accept loop checks for shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How the admin server reaches one shard.
#[derive(Clone, Debug)]
pub struct ShardLink {
    /// The shard's control channel (bounded).
    pub control: SyncSender<Control>,
    /// The shard's doorbell.
    pub doorbell: Arc<EventFd>,
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serves on `listener` (already bound) until [`AdminServer::stop`].
    pub fn start(listener: TcpListener, node_id: i32, shards: Vec<ShardLink>) -> io::Result<AdminServer> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("oxbow-admin".to_string())
            .spawn(move || serve(listener, node_id, &shards, &flag))?;
        Ok(AdminServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, node_id: i32, shards: &[ShardLink], stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = handle(stream, node_id, shards) {
                    tracing::debug!(%error, "admin: request failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(error) => {
                tracing::warn!(%error, "admin: accept failed");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// Reads the request head (up to the blank line).
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn handle(mut stream: TcpStream, node_id: i32, shards: &[ShardLink]) -> io::Result<()> {
    let Some(head) = read_head(&mut stream)? else {
        return Ok(());
    };
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET", "/v1/health") => {
            let snapshots = collect(shards);
            let up = snapshots.len();
            let healthy = up == shards.len();
            let body = format!(
                "{{\"status\":\"{}\",\"node_id\":{node_id},\"shards\":{},\"shards_up\":{up}}}\n",
                if healthy { "ok" } else { "unavailable" },
                shards.len()
            );
            let status = if healthy {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body)
        }
        ("GET", "/metrics") => {
            let snapshots = collect(shards);
            (
                "200 OK",
                "text/plain; version=0.0.4",
                metrics::render(&snapshots, shards.len()),
            )
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// Asks every shard for a snapshot; returns those that answered in time, in shard order.
pub fn collect(shards: &[ShardLink]) -> Vec<ShardSnapshot> {
    let deadline = Instant::now() + SHARD_ANSWER_TIMEOUT;
    let waiting: Vec<_> = shards
        .iter()
        .filter_map(|link| {
            let (tx, rx) = sync_channel(1);
            link.control.try_send(Control::Metrics(tx)).ok()?;
            link.doorbell.signal();
            Some(rx)
        })
        .collect();
    let mut snapshots: Vec<ShardSnapshot> = waiting
        .into_iter()
        .filter_map(|rx| {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        })
        .collect();
    snapshots.sort_by_key(|s| s.shard);
    snapshots
}
