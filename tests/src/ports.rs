//! Loopback ports for the servers the tests start as separate processes (brokers,
//! moto), chosen before those processes bind them.
//!
//! A port picked by binding port 0 comes from the kernel's ephemeral range, which the
//! kernel also hands to every other `bind(:0)` and outgoing connection on the machine:
//! between the pick and the server's own bind, another test running at the same time
//! (the runner runs two at once) can take it and keep it, and the server then fails
//! with "address already in use". These ports come from below the ephemeral range
//! instead, where nothing is handed out on its own; each process walks its own
//! sequence, offset by its pid, so two test processes rarely try the same port.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// First port of the range (well above the privileged ports).
const LOWEST_PORT: u32 = 10_000;
/// Ports in the range: 10000..30000, below Linux's default ephemeral range (32768..).
const PORT_SPAN: u32 = 20_000;

/// A loopback port nobody listens on now, outside the kernel's ephemeral range.
///
/// # Panics
/// When every port of the range is taken (never in practice).
pub fn free_port() -> u16 {
    static PICKED: AtomicU32 = AtomicU32::new(0);
    // Spread processes over the range: pids that differ by one start 613 ports apart.
    let start = std::process::id().wrapping_mul(613) % PORT_SPAN;
    loop {
        let picked = PICKED.fetch_add(1, Ordering::Relaxed);
        assert!(picked < PORT_SPAN, "no free loopback port in {LOWEST_PORT}..");
        let port = LOWEST_PORT + (start + picked) % PORT_SPAN;
        let port = u16::try_from(port).expect("the range fits in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
