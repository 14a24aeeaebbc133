//! The io_uring reactor, driven by an echo loop: ordered delivery, large responses
//! sent in full (partial sends), closes after queued output, many connections, and a
//! clean shutdown.

use bytes::Bytes;
use oxbow_runtime_real::shard::net::{bind_reuseport, NetConfig, NetEvent, Reactor};
use oxbow_runtime_real::shard::smp::EventFd;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Echoes every byte back; a connection that sends `q` is closed after its echo;
/// `x<n>` sends n MiB back. Runs until `stop`.
fn echo_server(
    config: NetConfig,
) -> (
    std::net::SocketAddr,
    Arc<AtomicBool>,
    Arc<EventFd>,
    std::thread::JoinHandle<u64>,
) {
    let (mut listeners, addr) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1, 128).unwrap();
    let doorbell = Arc::new(EventFd::new().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let listener = listeners.pop().unwrap();
    let (bell, flag) = (doorbell.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        let mut reactor = Reactor::new(listener, bell.clone(), config).unwrap();
        let mut doorbells = 0;
        while !flag.load(Ordering::SeqCst) {
            reactor.wait(Some(Duration::from_millis(200))).unwrap();
            while let Some(event) = reactor.poll_event() {
                match event {
                    NetEvent::Received(id, bytes) => {
                        if bytes.starts_with(b"x") {
                            let mib: usize =
                                std::str::from_utf8(&bytes[1..]).unwrap().trim().parse().unwrap();
                            assert!(reactor.send(id, [Bytes::from(vec![7u8; mib << 20])]));
                        } else {
                            assert!(reactor.send(id, [bytes.clone()]));
                            if bytes.ends_with(b"q") {
                                reactor.close(id);
                            }
                        }
                    }
                    NetEvent::Doorbell => {
                        bell.drain();
                        doorbells += 1;
                    }
                    NetEvent::Connected(_) | NetEvent::Closed(_) => {}
                }
            }
        }
        reactor.shutdown(Duration::from_secs(1));
        doorbells
    });
    (addr, stop, doorbell, handle)
}

fn read_exact_len(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn echo_order_partial_sends_close_and_shutdown() {
    let config = NetConfig {
        recv_buffer_bytes: 1024,
        max_send_queue_bytes: 64 * 1024,
        ..NetConfig::default()
    };
    let (addr, stop, doorbell, handle) = echo_server(config);
    // Ordered echo over many small writes.
    let mut a = TcpStream::connect(addr).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut expected = Vec::new();
    for i in 0..200u32 {
        let chunk = format!("message {i};");
        a.write_all(chunk.as_bytes()).unwrap();
        expected.extend_from_slice(chunk.as_bytes());
    }
    assert_eq!(read_exact_len(&mut a, expected.len()), expected);
    // A response far larger than the socket buffer arrives whole (partial sends).
    a.write_all(b"x8").unwrap();
    let big = read_exact_len(&mut a, 8 << 20);
    assert!(big.iter().all(|&b| b == 7));
    // Many connections at once, each its own stream.
    let mut clients: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(format!("client-{i:03}").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(read_exact_len(c, 10), format!("client-{i:03}").into_bytes());
    }
    // Close after the queued output: the echo arrives, then EOF.
    let mut b = TcpStream::connect(addr).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    b.write_all(b"bye q").unwrap();
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye q");
    // The first client is unaffected.
    a.write_all(b"still here").unwrap();
    assert_eq!(read_exact_len(&mut a, 10), b"still here");
    // The doorbell wakes the loop.
    doorbell.signal();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    doorbell.signal();
    let doorbells = handle.join().unwrap();
    assert!(doorbells >= 1);
    // After shutdown the connections are closed.
    let mut end = Vec::new();
    assert_eq!(a.read_to_end(&mut end).unwrap_or(0), 0);
}

#[test]
fn a_client_that_does_not_read_stops_being_read() {
    let config = NetConfig {
        recv_buffer_bytes: 4096,
        max_send_queue_bytes: 256 * 1024,
        ..NetConfig::default()
    };
    let (addr, stop, doorbell, handle) = echo_server(config);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    // Write without reading: the echo queue fills, the reactor stops reading, the
    // kernel buffers fill, and our writes block (time out) — bounded, no growth.
    let chunk = vec![1u8; 64 * 1024];
    let mut written = 0usize;
    let blocked = loop {
        match c.write(&chunk) {
            Ok(n) => written += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break true
            }
            Err(e) => panic!("{e}"),
        }
        if written > 256 << 20 {
            break false;
        }
    };
    assert!(
        blocked,
        "the server kept reading {written} bytes from a client that never reads"
    );
    // Reading drains everything that was accepted, in order.
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let echoed = read_exact_len(&mut c, written);
    assert!(echoed.iter().all(|&b| b == 1));
    stop.store(true, Ordering::SeqCst);
    doorbell.signal();
    handle.join().unwrap();
}
