//! Core must stay deterministic and sans-IO (DESIGN.md §2). `core/clippy.toml` forbids
//! the offending APIs at lint time; this test scans the sources too, so a violation
//! fails `cargo test` even where clippy is not run, and it proves it can fail by
//! scanning planted snippets.

#![allow(clippy::disallowed_methods)] // this test reads core's sources: the one I/O core's tests need

use std::fs;
use std::path::{Path, PathBuf};

/// Patterns that must not appear in core's non-test code, with why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("std::time::Instant", "wall/monotonic clock: time is an input"),
    ("Instant::now", "clock read: time is an input"),
    ("SystemTime", "wall clock: time is an input"),
    ("std::thread", "threads: core is single-threaded"),
    ("thread::spawn", "threads: core is single-threaded"),
    ("std::fs", "file I/O: emit an effect"),
    ("std::net", "sockets: emit an effect"),
    ("std::env", "environment: configuration is an input"),
    ("tokio", "async runtime: core is sans-IO"),
    ("thread_rng", "global RNG: randomness is an input"),
    ("rand::random", "global RNG: randomness is an input"),
    ("OsRng", "OS randomness: randomness is an input"),
    ("HashMap", "iteration order leaks: use BTreeMap"),
    ("HashSet", "iteration order leaks: use BTreeSet"),
    ("Mutex", "locks: core is single-threaded"),
    ("RwLock", "locks: core is single-threaded"),
];

/// Violations in one file's text: (line number, pattern, reason). Lines inside a
/// `#[cfg(test)]` module (everything after the first one) and comments are skipped.
fn violations(text: &str) -> Vec<(usize, &'static str, &'static str)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or("");
        for (pattern, reason) in FORBIDDEN {
            if code.contains(pattern) {
                found.push((number + 1, *pattern, *reason));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_sources_use_no_clock_thread_io_global_rng_or_hash_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 5, "found core's sources");
    let mut report = String::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_default();
        for (line, pattern, reason) in violations(&text) {
            report.push_str(&format!("{}:{line}: `{pattern}` — {reason}\n", file.display()));
        }
    }
    assert!(
        report.is_empty(),
        "core must stay deterministic and sans-IO:\n{report}"
    );
}

#[test]
fn the_scan_catches_planted_violations() {
    let planted = "use std::collections::HashMap;\nfn f() { let t = std::time::Instant::now(); }\n";
    let found = violations(planted);
    assert!(found.iter().any(|(_, p, _)| *p == "HashMap"));
    assert!(found.iter().any(|(_, p, _)| *p == "Instant::now"));
    assert!(violations("// a HashMap in a comment is fine\n").is_empty());
    assert!(violations("#[cfg(test)]\nmod tests { use std::fs; }\n").is_empty());
}
