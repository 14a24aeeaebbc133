//! The reactor's vectored sends: many chunks queued on one connection (more than one
//! `sendmsg` gathers, some empty, some tiny, some megabytes) arrive back to back and
//! whole at a slow reader, whose small receive buffer makes the kernel take them in
//! partial sends that stop mid-chunk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use oxbow_runtime_real::shard::net::{bind_reuseport, NetConfig, NetEvent, Reactor, MAX_SEND_CHUNKS};
use oxbow_runtime_real::shard::smp::EventFd;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn chunks_arrive_in_order_and_whole_through_partial_sends() {
    let (mut listeners, addr) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
    let doorbell = Arc::new(EventFd::new().unwrap());
    let mut reactor = Reactor::new(listeners.pop().unwrap(), doorbell, NetConfig::default()).unwrap();

    // Chunk sizes: tiny, empty, odd, and a few of megabytes; more chunks than one send
    // gathers.
    let mut chunks = Vec::new();
    let mut expected = Vec::new();
    for i in 0..(3 * MAX_SEND_CHUNKS + 5) {
        let len = match i % 7 {
            0 => 0,
            1 => 1,
            2 => 13,
            3 => 4096 + i,
            4 => 65_537,
            5 if i % 35 == 5 => (1 << 20) + i,
            _ => 300 + i,
        };
        let chunk: Vec<u8> = (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
        expected.extend_from_slice(&chunk);
        chunks.push(Bytes::from(chunk));
    }
    let total = expected.len();
    assert!(total > 4 << 20, "more than the socket buffers hold: {total}");

    let reader = std::thread::spawn(move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = vec![0u8; total];
        let mut at = 0;
        while at < total {
            let end = (at + 64 * 1024).min(total);
            stream
                .read_exact(&mut got[at..end])
                .expect("the bytes arrive within the timeout");
            at = end;
            if at % (1 << 20) < 64 * 1024 {
                // A slow reader now and then: the sender's queue fills, sends go partial.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        got
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let conn = loop {
        assert!(Instant::now() < deadline, "no connection");
        reactor.wait(Some(Duration::from_millis(50))).unwrap();
        if let Some(NetEvent::Connected(id)) = reactor.poll_event() {
            break id;
        }
    };
    assert!(reactor.send(conn, chunks));
    assert_eq!(reactor.queued_bytes(conn), total);
    while reactor.stats().sent_bytes < total as u64 {
        assert!(Instant::now() < deadline, "sends did not finish");
        reactor.wait(Some(Duration::from_millis(50))).unwrap();
        while reactor.poll_event().is_some() {}
    }
    assert_eq!(reactor.queued_bytes(conn), 0);
    let got = reader.join().unwrap();
    assert!(got == expected, "the bytes arrived out of order or changed");
    let _ = reactor.shutdown(Duration::from_secs(1));
}
