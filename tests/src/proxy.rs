//! A loopback TCP proxy in front of one Kafka listener that a test controls: it can
//! cut every connection passing through it at any moment ([`KafkaProxy::cut`]), and
//! be pointed at another listener ([`KafkaProxy::retarget`], e.g. a restarted node).
//!
//! Kafka clients learn broker addresses from Metadata responses and connect to those,
//! which would bypass a plain proxy after bootstrap. So the proxy reads the frames in
//! both directions: it remembers the correlation ids and versions of Metadata requests
//! and rewrites the broker addresses in their responses to its own. Every other frame
//! passes through unchanged.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Largest frame the proxy relays (Kafka's default socket request maximum).
const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

#[derive(Debug)]
struct Shared {
    target: Mutex<SocketAddr>,
    /// Both sockets of every live connection.
    live: Mutex<Vec<(TcpStream, TcpStream)>>,
    stopped: AtomicBool,
    cuts: AtomicU64,
    accepted: AtomicU64,
}

/// The proxy. Dropping it stops accepting and cuts what is open.
#[derive(Debug)]
pub struct KafkaProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl KafkaProxy {
    /// Listens on 127.0.0.1 (a port the kernel picks) and relays to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<KafkaProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            live: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        thread::spawn(move || accept_loop(listener, addr, accept_shared));
        Ok(KafkaProxy { addr, shared })
    }

    /// The address clients should use.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection open now, both sides, mid-frame or not.
    pub fn cut(&self) -> usize {
        let live = std::mem::take(&mut *lock(&self.shared.live));
        for (client, server) in &live {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        self.shared.cuts.fetch_add(1, Ordering::Relaxed);
        live.len()
    }

    /// Relays new connections to `target` from now on (open ones are cut).
    pub fn retarget(&self, target: SocketAddr) {
        *lock(&self.shared.target) = target;
        self.cut();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.cut();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: TcpListener, own: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        let target = *lock(&shared.target);
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let (Ok(c1), Ok(c2), Ok(s1), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            client.try_clone(),
            server.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        lock(&shared.live).push((c3, s3));
        let metadata_requests = Arc::new(Mutex::new(BTreeMap::new()));
        let requests = metadata_requests.clone();
        thread::spawn(move || relay_requests(c1, s1, requests));
        thread::spawn(move || relay_responses(s2, c2, metadata_requests, own));
    }
}

/// Reads one size-prefixed frame; `None` at end of stream or on any error.
fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let len = usize::try_from(i32::from_be_bytes(size)).ok()?;
    if len > MAX_FRAME_BYTES {
        return None;
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    Some(Bytes::from(payload))
}

fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> bool {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    out.extend_from_slice(payload);
    stream.write_all(&out).is_ok()
}

fn relay_requests(mut client: TcpStream, mut server: TcpStream, metadata: Arc<Mutex<BTreeMap<i32, i16>>>) {
    while let Some(frame) = read_frame(&mut client) {
        if frame.len() >= 8 {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if key == ApiKey::Metadata as i16 {
                lock(&metadata).insert(correlation_id, version);
            }
        }
        if !write_frame(&mut server, &frame) {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

fn relay_responses(
    mut server: TcpStream,
    mut client: TcpStream,
    metadata: Arc<Mutex<BTreeMap<i32, i16>>>,
    own: SocketAddr,
) {
    while let Some(frame) = read_frame(&mut server) {
        let correlation_id = frame
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let version = correlation_id.and_then(|id| lock(&metadata).remove(&id));
        let out = match version {
            Some(version) => rewrite_metadata(frame.clone(), version, own).unwrap_or(frame),
            None => frame,
        };
        if !write_frame(&mut client, &out) {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// A Metadata response whose brokers all point at `own`.
fn rewrite_metadata(mut frame: Bytes, version: i16, own: SocketAddr) -> Option<Bytes> {
    let header_version = ApiKey::Metadata.response_header_version(version);
    let header = ResponseHeader::decode(&mut frame, header_version).ok()?;
    let mut response = MetadataResponse::decode(&mut frame, version).ok()?;
    for broker in &mut response.brokers {
        broker.host = StrBytes::from_string(own.ip().to_string());
        broker.port = i32::from(own.port());
    }
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version).ok()?;
    response.encode(&mut out, version).ok()?;
    Some(out.freeze())
}
