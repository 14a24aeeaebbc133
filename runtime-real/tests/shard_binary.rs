//! The `oxbow` binary itself: `oxbow start` with no data-dir flag keeps its data in
//! `./oxbow-data`, serves Kafka and admin HTTP, and exits 0 on SIGTERM and on SIGINT
//! after a clean shutdown. A bad option is refused with its name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn start(cwd: &std::path::Path) -> (std::process::Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args([
            "start",
            "--kafka-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    // "oxbow: serving Kafka on ADDR (...); admin on http://ADDR"
    let kafka = line
        .split("serving Kafka on ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let admin = line.split("http://").nth(1).unwrap().trim();
    std::thread::spawn(move || for _ in lines {});
    (child, kafka.parse().unwrap(), admin.parse().unwrap())
}

fn health(admin: SocketAddr) -> String {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /v1/health HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn signal_and_wait(child: &mut std::process::Child, signal: libc::c_int) -> std::process::ExitStatus {
    // SAFETY: kill(2) on the pid of a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("oxbow did not stop within 10 s of signal {signal}");
}

#[test]
fn start_serves_and_stops_cleanly_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let (mut child, kafka, admin) = start(dir.path());
        assert!(health(admin).starts_with("HTTP/1.1 200"));
        let _client = TcpStream::connect(kafka).unwrap();
        let status = signal_and_wait(&mut child, signal);
        assert!(status.success(), "exit status {status:?} after signal {signal}");
        assert!(dir.path().join("oxbow-data/oxbow/shard-0.kv").exists());
    }
}

#[test]
fn a_bad_option_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oxbow.toml"), "[node]\nshards = 5000\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["start", "--config", "oxbow.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node.shards"), "{stderr}");
}
