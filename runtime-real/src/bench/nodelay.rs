//! `TCP_NODELAY` on the bench client's own connections.
//!
//! rskafka neither sets `TCP_NODELAY` nor exposes its sockets, and it writes each
//! request as two writes (the 4-byte length, then the body). With Nagle's algorithm the
//! body then waits for the peer to acknowledge the length, and a Linux peer delays that
//! acknowledgement by up to 40 ms: every request would take ~40 ms whatever the broker
//! does. So after the client has connected, the bench sets `TCP_NODELAY` on every
//! connected TCP socket of its own process — the option only changes how this process
//! sends, and the client's sockets are the only ones a bench process has (in tests, an
//! in-process broker's sockets already have it).

use std::os::fd::RawFd;

/// Sets `TCP_NODELAY` on every connected TCP socket of this process; returns how many.
pub fn set_on_own_tcp_connections() -> usize {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()))
        .filter(|&fd| is_connected_tcp(fd) && set_nodelay(fd))
        .count()
}

fn is_connected_tcp(fd: RawFd) -> bool {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid for writes of the sizes given; on a descriptor
    // that is not a socket (or was closed meanwhile) the call fails and changes nothing.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            std::ptr::from_mut(&mut kind).cast(),
            &mut len,
        )
    };
    if rc != 0 || kind != libc::SOCK_STREAM {
        return false;
    }
    // SAFETY: sockaddr_storage is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` has room for any socket address and `addr_len` says so.
    let rc = unsafe { libc::getpeername(fd, std::ptr::from_mut(&mut addr).cast(), &mut addr_len) };
    rc == 0 && matches!(i32::from(addr.ss_family), libc::AF_INET | libc::AF_INET6)
}

fn set_nodelay(fd: RawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn sets_nodelay_on_connected_sockets_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        assert!(!client.nodelay().unwrap());
        assert!(set_on_own_tcp_connections() >= 2);
        assert!(client.nodelay().unwrap());
    }
}
