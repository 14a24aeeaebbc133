//! The broker-to-broker transport over loopback: frames flow both ways and wake the
//! shard; a peer that starts late or restarts (or moves) gets its traffic once it
//! listens; garbage and frames for another node close only their own connection; a
//! dead peer's queue, and a full inbound queue, drop and count instead of blocking or
//! growing.
//!
//! Every wait polls against a deadline; nothing relies on a fixed sleep.

use bytes::Bytes;
use oxbow_core::raft::{AppendRequest, Entry, EntryKind, LogId, Message, MessageBody, VoteRequest};
use oxbow_core::rpc::{encode_frame, Frame, FrameKind, GroupMessage};
use oxbow_runtime_real::peer::{PeerConfig, PeerNet, SendError};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(node: u64, listen: SocketAddr) -> PeerConfig {
    let mut config = PeerConfig::new(node, listen);
    config.connect_backoff_min_ms = 10;
    config.connect_backoff_max_ms = 100;
    config
}

/// A transport and how often it rang the shard.
fn start(config: PeerConfig) -> (PeerNet, Arc<AtomicUsize>) {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let net = PeerNet::start(
        config,
        Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .expect("start");
    (net, wakes)
}

/// A loopback address nothing listens on (bound, then released).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind(loopback(0)).expect("bind");
    listener.local_addr().expect("addr")
}

/// A frame of two Raft messages (a vote and an append) numbered `seq` (their term).
fn frame(from: u64, to: u64, seq: u64) -> Frame {
    let vote = Message {
        from,
        to,
        term: seq,
        body: MessageBody::Vote(VoteRequest {
            last_log: Some(LogId::new(seq, 7)),
            transfer: false,
        }),
    };
    let append = Message {
        from,
        to,
        term: seq,
        body: MessageBody::Append(AppendRequest {
            prev: Some(LogId::new(seq, 7)),
            entries: vec![Entry {
                term: seq,
                index: 8,
                last_index: 8,
                kind: EntryKind::Data,
                payload: Bytes::from(format!("record {seq}")),
            }],
            commit: Some(7),
        }),
    };
    Frame {
        kind: FrameKind::Raft,
        from,
        to,
        messages: vec![
            GroupMessage {
                group: 3,
                message: vote,
            },
            GroupMessage {
                group: 4,
                message: append,
            },
        ],
        cluster: Vec::new(),
    }
}

fn encoded(from: u64, to: u64, seq: u64) -> Bytes {
    encode_frame(&frame(from, to, seq)).expect("encode")
}

fn seq_of(frame: &Frame) -> u64 {
    frame.messages[0].message.term
}

/// Polls `done` until it holds, failing the test after [`DEADLINE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Receives until `count` frames arrived.
fn receive(net: &PeerNet, count: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    wait_until(&format!("{count} frames"), || {
        frames.extend(net.drain(64));
        frames.len() >= count
    });
    frames
}

/// Sends a new frame every poll until one arrives (earlier ones may be lost while the
/// connection is remade); returns the first frame received.
fn send_until_received(from: &PeerNet, to: &PeerNet, first_seq: u64) -> Frame {
    let mut seq = first_seq;
    let mut received = None;
    wait_until("traffic to resume", || {
        let _ = from.send(to.node_id(), encoded(from.node_id(), to.node_id(), seq));
        seq += 1;
        received = to.try_recv();
        received.is_some()
    });
    received.expect("received")
}

#[test]
fn frames_flow_both_ways_and_wake_the_shard() {
    let (a, a_wakes) = start(config(1, loopback(0)));
    let (b, b_wakes) = start(config(2, loopback(0)));
    a.set_peer(2, b.local_addr()).expect("peer");
    b.set_peer(1, a.local_addr()).expect("peer");
    a.set_peer(2, b.local_addr()).expect("set_peer is idempotent");

    for seq in 0..20 {
        a.send(2, encoded(1, 2, seq)).expect("send a→b");
        b.send(1, encoded(2, 1, 100 + seq)).expect("send b→a");
    }
    let at_b = receive(&b, 20);
    let at_a = receive(&a, 20);
    assert_eq!(
        at_b,
        (0..20).map(|s| frame(1, 2, s)).collect::<Vec<_>>(),
        "whole frames, in order"
    );
    assert_eq!(at_a, (0..20).map(|s| frame(2, 1, 100 + s)).collect::<Vec<_>>());
    assert!(a_wakes.load(Ordering::SeqCst) > 0 && b_wakes.load(Ordering::SeqCst) > 0);
    assert!(a.try_recv().is_none() && b.drain(10).is_empty());

    let stats = a.stats();
    assert_eq!((stats.frames_sent, stats.frames_received), (20, 20));
    assert_eq!(
        (stats.connects, stats.connected_peers, stats.inbound_connections),
        (1, 1, 1)
    );
    assert_eq!(
        stats.bytes_sent,
        (0..20).map(|s| encoded(1, 2, s).len() as u64).sum::<u64>()
    );
    assert_eq!(
        stats.frames_dropped_queue_full + stats.frames_dropped_write_failed,
        0
    );

    a.remove_peer(2);
    assert_eq!(a.send(2, encoded(1, 2, 99)), Err(SendError::UnknownPeer));
    a.shutdown();
    b.shutdown();
}

#[test]
fn frames_sent_before_the_peer_listens_arrive_once_it_does() {
    let (a, _) = start(config(1, loopback(0)));
    let b_addr = free_addr();
    a.set_peer(2, b_addr).expect("peer");
    for seq in 0..3 {
        a.send(2, encoded(1, 2, seq))
            .expect("queued while the peer is down");
    }
    wait_until("failed connects", || a.stats().connect_failures >= 2);
    assert_eq!(
        a.stats().queued_frames,
        3,
        "frames wait for the peer (within their age bound)"
    );

    let (b, _) = start(config(2, b_addr));
    let at_b = receive(&b, 3);
    assert_eq!(at_b.iter().map(seq_of).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(a.stats().connected_peers, 1);
    a.shutdown();
    b.shutdown();
}

#[test]
fn traffic_resumes_after_the_peer_restarts_or_moves() {
    let (a, _) = start(config(1, loopback(0)));
    let (b, _) = start(config(2, loopback(0)));
    let b_addr = b.local_addr();
    a.set_peer(2, b_addr).expect("peer");
    a.send(2, encoded(1, 2, 0)).expect("send");
    assert_eq!(receive(&b, 1)[0], frame(1, 2, 0));

    // Restart on the same port.
    b.shutdown();
    let (b, _) = start(config(2, b_addr));
    let first = send_until_received(&a, &b, 1);
    assert_eq!(first.from, 1);
    assert!(a.stats().connects >= 2, "{:?}", a.stats());

    // Restart on another port: the new address reconnects.
    b.shutdown();
    let (b, _) = start(config(2, loopback(0)));
    a.set_peer(2, b.local_addr()).expect("new address");
    send_until_received(&a, &b, 1_000);
    a.send(2, encoded(1, 2, 5_000)).expect("send");
    wait_until("a later frame", || b.drain(64).iter().any(|f| seq_of(f) == 5_000));
    a.shutdown();
    b.shutdown();
}

#[test]
fn garbage_and_misaddressed_frames_close_only_their_connection() {
    // The warnings show with `--nocapture`.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (a, _) = start(config(1, loopback(0)));
    let (b, b_wakes) = start(config(2, loopback(0)));
    a.set_peer(2, b.local_addr()).expect("peer");
    a.send(2, encoded(1, 2, 0)).expect("send");
    receive(&b, 1);

    // Garbage: a length far beyond the limit.
    let mut garbage = TcpStream::connect(b.local_addr()).expect("connect");
    garbage.write_all(&[0xff; 64]).expect("write garbage");
    assert_closed_by_peer(&mut garbage);
    wait_until("the malformed count", || {
        b.stats().connections_closed_malformed == 1
    });

    // A good frame, one for another node, another good frame: only the first arrives.
    let mut stranger = TcpStream::connect(b.local_addr()).expect("connect");
    let mut bytes = encoded(9, 2, 10).to_vec();
    bytes.extend_from_slice(&encoded(9, 7, 11));
    bytes.extend_from_slice(&encoded(9, 2, 12));
    stranger.write_all(&bytes).expect("write frames");
    assert_closed_by_peer(&mut stranger);
    wait_until("the misaddressed count", || {
        b.stats().connections_closed_wrong_destination == 1
    });
    assert_eq!(receive(&b, 1).iter().map(seq_of).collect::<Vec<_>>(), vec![10]);
    assert!(
        b.try_recv().is_none(),
        "nothing after the misaddressed frame is queued"
    );

    // The first connection never noticed.
    let wakes_before = b_wakes.load(Ordering::SeqCst);
    a.send(2, encoded(1, 2, 1)).expect("send");
    assert_eq!(seq_of(&receive(&b, 1)[0]), 1);
    assert!(b_wakes.load(Ordering::SeqCst) > wakes_before);
    let (a_stats, b_stats) = (a.stats(), b.stats());
    assert_eq!((a_stats.connects, a_stats.write_failures), (1, 0));
    assert_eq!(b_stats.frames_received, 3, "{b_stats:?}");
    wait_until("closed connections to go", || b.stats().inbound_connections == 1);
    a.shutdown();
    b.shutdown();
}

/// The transport closes `stream`: reading gives end of stream (or a reset).
fn assert_closed_by_peer(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("the transport wrote {n} bytes on an inbound connection"),
    }
}

#[test]
fn a_dead_peer_queue_drops_and_counts_instead_of_growing() {
    let mut cfg = config(1, loopback(0));
    cfg.max_queued_frames_per_peer = 8;
    cfg.max_frame_age_ms = 300;
    let (a, _) = start(cfg);
    a.set_peer(2, free_addr()).expect("peer");

    let started = Instant::now();
    let results: Vec<_> = (0..1_000).map(|seq| a.send(2, encoded(1, 2, seq))).collect();
    assert!(started.elapsed() < Duration::from_secs(2), "send never blocks");
    let full = results
        .iter()
        .filter(|r| **r == Err(SendError::QueueFull))
        .count() as u64;
    let queued = results.iter().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(full + queued, 1_000);
    assert!(
        full >= 900,
        "at most a few age out during the burst: {full} refused"
    );
    let stats = a.stats();
    assert_eq!(stats.frames_dropped_queue_full, full);
    assert!(stats.queued_frames <= 8, "{stats:?}");

    // While the peer stays down, queued frames age out rather than wait forever.
    wait_until("queued frames to age out", || a.stats().queued_frames == 0);
    let stats = a.stats();
    assert_eq!(stats.frames_dropped_stale, queued, "{stats:?}");
    assert!(stats.connect_failures >= 1 && stats.connected_peers == 0);
    a.send(2, encoded(1, 2, 2_000)).expect("room again");

    let stopping = Instant::now();
    a.shutdown();
    assert!(stopping.elapsed() < Duration::from_secs(3), "shutdown is prompt");
}

#[test]
fn a_peer_net_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<PeerNet>();
}

#[test]
fn a_full_inbound_queue_drops_and_counts() {
    let (a, _) = start(config(1, loopback(0)));
    let mut cfg = config(2, loopback(0));
    cfg.max_inbound_frames = 4;
    let (b, b_wakes) = start(cfg);
    a.set_peer(2, b.local_addr()).expect("peer");
    for seq in 0..20 {
        a.send(2, encoded(1, 2, seq)).expect("send");
    }
    wait_until("every frame read", || b.stats().frames_received == 20);
    let stats = b.stats();
    assert_eq!(
        (stats.inbound_queued_frames, stats.frames_dropped_inbound_full),
        (4, 16)
    );
    assert!(b_wakes.load(Ordering::SeqCst) > 0);
    assert_eq!(
        b.drain(100).iter().map(seq_of).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "the oldest stay"
    );
    a.send(2, encoded(1, 2, 20)).expect("send");
    assert_eq!(seq_of(&receive(&b, 1)[0]), 20, "room again once drained");
    a.shutdown();
    b.shutdown();
}
