//! The machine's raw figures, shared by `oxbow bench log`, `oxbow bench limits` and the
//! client benchmarks' ratios: aligned `O_DIRECT` writes with an `fdatasync` every
//! `depth` writes ([`RawWriter`]), sequential `O_DIRECT` reads ([`direct_read`]) and one
//! loopback TCP stream ([`loopback_tcp`]).
//!
//! The writer lays its files out like the log's segments — a new file every
//! `segment_bytes`, reserved with `fallocate(FALLOC_FL_KEEP_SIZE)` of
//! `preallocate_bytes` — so the figure is what the disk gives the log's access pattern.

use super::log_append::BenchError;
use super::report::Latencies;
use crate::storage::aligned::{align_up, AlignedBuf, BufferPool, PoolConfig, BLOCK_BYTES};
use crate::storage::vfs::{DataFile, RealFile, RealVfs, Vfs};
use crate::storage::StorageError;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Removes `dir` if it exists and creates it empty.
pub(crate) fn fresh_dir(dir: &Path) -> Result<(), StorageError> {
    remove_dir(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("mkdir", dir, e))
}

/// `rm -r dir`; a missing directory is fine.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("rm -r", dir, e)),
    }
}

/// What one phase has measured so far.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Batches written.
    pub(crate) batches: u64,
    /// `fdatasync`/`fsync` calls.
    pub(crate) flushes: u64,
    /// Sum of the rounds' wall time.
    pub(crate) elapsed: Duration,
    /// Latency of a round (N writes + sync).
    pub(crate) rounds: Latencies,
    /// Latency of the `fdatasync` alone.
    pub(crate) fsyncs: Latencies,
}

/// Layout of the raw writer's files (the log's `segment.bytes` and preallocation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawLayout {
    /// A new file after this many bytes.
    pub(crate) segment_bytes: u64,
    /// `fallocate` per new file.
    pub(crate) preallocate_bytes: u64,
}

/// Aligned `pwrite`s with `O_DIRECT` and an `fdatasync` after every `depth` of them.
#[derive(Debug)]
pub(crate) struct RawWriter {
    dir: PathBuf,
    layout: RawLayout,
    batch_bytes: usize,
    write_bytes: usize,
    depth: usize,
    buf: AlignedBuf,
    path: PathBuf,
    file: RealFile,
    file_index: u64,
    position: u64,
    /// The figures so far.
    pub(crate) tally: Tally,
}

impl RawWriter {
    /// A writer in the fresh directory `dir` (removed by [`RawWriter::finish`]); the
    /// pool's buffers must hold `batch_bytes` rounded up to a block.
    pub(crate) fn new(
        dir: &Path,
        layout: RawLayout,
        pool: &BufferPool,
        batch_bytes: usize,
        depth: usize,
    ) -> Result<RawWriter, StorageError> {
        fresh_dir(dir)?;
        let write_bytes = align_up(batch_bytes as u64) as usize;
        let mut buf = pool.acquire().map_err(StorageError::from)?;
        for (i, byte) in buf.as_mut_slice()[..write_bytes].iter_mut().enumerate() {
            *byte = (i % 251) as u8;
        }
        let (path, file) = Self::open_file(dir, layout, 0)?;
        Ok(RawWriter {
            dir: dir.to_path_buf(),
            layout,
            batch_bytes,
            write_bytes,
            depth: depth.max(1),
            buf,
            path,
            file,
            file_index: 0,
            position: 0,
            tally: Tally::default(),
        })
    }

    /// A new file laid out like a log segment: reserved as the log reserves.
    fn open_file(dir: &Path, layout: RawLayout, index: u64) -> Result<(PathBuf, RealFile), StorageError> {
        let path = dir.join(format!("raw-{index}.dat"));
        let file = RealVfs::direct()
            .open_data(&path, true)
            .map_err(|e| StorageError::io("open", &path, e))?;
        file.allocate(layout.preallocate_bytes.min(layout.segment_bytes))
            .map_err(|e| StorageError::io("fallocate", &path, e))?;
        Ok((path, file))
    }

    /// Writes rounds of `depth` batches + `fdatasync` for `duration` or `max_bytes`.
    pub(crate) fn run_for(&mut self, duration: Duration, max_bytes: u64) -> Result<(), StorageError> {
        let start = Instant::now();
        let mut bytes = 0u64;
        while start.elapsed() < duration && bytes < max_bytes {
            let round_start = Instant::now();
            for _ in 0..self.depth {
                if self.position + self.write_bytes as u64 > self.layout.segment_bytes {
                    self.file_index += 1;
                    (self.path, self.file) = Self::open_file(&self.dir, self.layout, self.file_index)?;
                    self.position = 0;
                }
                let written = self
                    .file
                    .write_at(&self.buf.as_slice()[..self.write_bytes], self.position)
                    .map_err(|e| StorageError::io("pwrite", &self.path, e))?;
                if written != self.write_bytes {
                    return Err(StorageError::ShortWrite {
                        path: self.path.clone(),
                        written_bytes: written,
                        asked_bytes: self.write_bytes,
                    });
                }
                self.position += self.write_bytes as u64;
                self.tally.batches += 1;
                bytes += self.batch_bytes as u64;
            }
            let sync_start = Instant::now();
            self.file
                .sync_data()
                .map_err(|e| StorageError::io("fdatasync", &self.path, e))?;
            self.tally.flushes += 1;
            self.tally.fsyncs.record(sync_start.elapsed());
            let round = round_start.elapsed();
            self.tally.rounds.record(round);
            self.tally.elapsed += round;
        }
        Ok(())
    }

    /// Removes the files and hands back the figures.
    pub(crate) fn finish(self) -> Result<Tally, StorageError> {
        remove_dir(&self.dir)?;
        Ok(self.tally)
    }
}

/// A pool with one buffer per writer of `batch_bytes` (at least 256 KiB).
pub(crate) fn pool_for(
    batch_bytes: usize,
    buffers: usize,
) -> Result<BufferPool, crate::storage::aligned::PoolConfigError> {
    BufferPool::new(PoolConfig {
        buffer_count: buffers.max(1),
        buffer_bytes: (align_up(batch_bytes as u64) as usize + BLOCK_BYTES).max(256 * 1024),
    })
}

/// Bytes moved and the time it took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Transfer {
    /// Bytes moved.
    pub(crate) bytes: u64,
    /// Wall time, seconds.
    pub(crate) elapsed_s: f64,
}

impl Transfer {
    /// Bandwidth in MB/s (1 MB = 2^20 bytes); 0 for an empty transfer.
    pub(crate) fn mb_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.bytes as f64 / MB / self.elapsed_s
        } else {
            0.0
        }
    }
}

/// Bytes in a MB as every bench figure counts it (2^20, as Kafka's perf tools do).
pub(crate) const MB: f64 = 1024.0 * 1024.0;

/// Sequential `O_DIRECT` reads of `chunk_bytes` from a file of `file_bytes` written
/// first (with `O_DIRECT`, synced) in `dir`, for `duration` (wrapping around the file).
pub(crate) fn direct_read(
    dir: &Path,
    file_bytes: u64,
    chunk_bytes: usize,
    duration: Duration,
) -> Result<Transfer, BenchError> {
    fresh_dir(dir)?;
    let chunk = align_up(chunk_bytes as u64) as usize;
    let file_bytes = align_up(file_bytes.max(chunk as u64));
    let pool = pool_for(chunk, 1)?;
    let mut buf = pool.acquire().map_err(StorageError::from)?;
    for (i, byte) in buf.as_mut_slice()[..chunk].iter_mut().enumerate() {
        *byte = (i % 253) as u8;
    }
    let path = dir.join("read.dat");
    let file = RealVfs::direct()
        .open_data(&path, true)
        .map_err(|e| StorageError::io("open", &path, e))?;
    let mut position = 0u64;
    while position < file_bytes {
        file.write_at(&buf.as_slice()[..chunk], position)
            .map_err(|e| StorageError::io("pwrite", &path, e))?;
        position += chunk as u64;
    }
    file.sync_data()
        .map_err(|e| StorageError::io("fdatasync", &path, e))?;
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut position = 0u64;
    while start.elapsed() < duration {
        if position + chunk as u64 > file_bytes {
            position = 0;
        }
        let read = file
            .read_at(&mut buf.as_mut_slice()[..chunk], position)
            .map_err(|e| StorageError::io("pread", &path, e))?;
        if read == 0 {
            position = 0;
            continue;
        }
        position += read as u64;
        bytes += read as u64;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    drop(file);
    remove_dir(dir)?;
    Ok(Transfer { bytes, elapsed_s })
}

/// One TCP stream over 127.0.0.1: a thread reads and discards while this one writes
/// `chunk_bytes` at a time for `duration`. The figure is the bytes the reader received.
pub(crate) fn loopback_tcp(chunk_bytes: usize, duration: Duration) -> std::io::Result<Transfer> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::Builder::new()
        .name("bench-loopback".to_string())
        .spawn(move || -> std::io::Result<u64> {
            let (mut stream, _) = listener.accept()?;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                match stream.read(&mut buf)? {
                    0 => return Ok(total),
                    n => total += n as u64,
                }
            }
        })?;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let chunk = vec![0x5au8; chunk_bytes.max(1)];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream.write_all(&chunk)?;
    }
    stream.shutdown(Shutdown::Write)?;
    let bytes = reader
        .join()
        .map_err(|_| std::io::Error::other("the loopback reader thread panicked"))??;
    Ok(Transfer {
        bytes,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_writer_direct_read_and_loopback_move_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = RawLayout {
            segment_bytes: 1 << 20,
            preallocate_bytes: 1 << 20,
        };
        let pool = pool_for(16 * 1024, 1).unwrap();
        let mut writer = RawWriter::new(&dir.path().join("w"), layout, &pool, 16 * 1024, 4).unwrap();
        writer.run_for(Duration::from_secs(10), 256 * 1024).unwrap();
        let tally = writer.finish().unwrap();
        assert_eq!(tally.batches, 16);
        assert_eq!(tally.flushes, 4);
        assert!(!dir.path().join("w").exists());

        let read = direct_read(
            &dir.path().join("r"),
            1 << 20,
            64 * 1024,
            Duration::from_millis(20),
        )
        .unwrap();
        assert!(read.bytes > 0);
        let tcp = loopback_tcp(64 * 1024, Duration::from_millis(20)).unwrap();
        assert!(tcp.bytes > 0 && tcp.mb_s() > 0.0);
    }
}
