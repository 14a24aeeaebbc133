//! The controller snapshot: the file `<data-dir>/oxbow/controller/0_0/snapshot`, which is
//! also the Raft snapshot of group 0 (streamed verbatim to a joining or lagging broker),
//! and [`SnapshotPolicy`], which decides when to take one.
//!
//! File: magic `OXSN`, version u16, last term u64, last offset u64, the Raft membership
//! at that offset ([`Membership::encode`], u32-length-prefixed), the
//! [`ControllerState`] encoding (u32-length-prefixed), CRC32C of everything before it.
//!
//! Policy (a state machine with time as input): a snapshot is taken after each applied
//! command unless one was taken less than `rapid_window` ago — rapid updates; then the
//! next command after the window takes it, and a timer takes it at the latest
//! `max_age` (seed: 60 s) after the oldest command it does not yet cover. One snapshot
//! write is in flight at a time.

use std::time::Duration;

use bytes::Bytes;

use super::codec::{seal, split_checked, DecodeError, Put, Reader};
use super::state::ControllerState;
use crate::raft::{LogId, Membership, SnapshotMeta};
use crate::time::Instant;

const MAGIC: &[u8; 4] = b"OXSN";
const FILE_VERSION: u16 = 1;

/// A decoded snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The Raft position and membership it covers.
    pub meta: SnapshotMeta,
    /// The metadata state at that position.
    pub state: ControllerState,
}

impl SnapshotFile {
    /// Encodes the file.
    pub fn encode(meta: &SnapshotMeta, state: &ControllerState) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.put_u16v(FILE_VERSION);
        out.put_u64v(meta.last.term);
        out.put_u64v(meta.last.index);
        out.put_bytes32(&meta.membership.encode());
        out.put_bytes32(&state.encode());
        seal(&mut out);
        Bytes::from(out)
    }

    /// Decodes a file of at most `max_bytes`; damage is an error, never a panic.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<SnapshotFile, DecodeError> {
        if bytes.len() > max_bytes {
            return Err(DecodeError::TooLarge {
                what: "snapshot",
                value: bytes.len() as u64,
                limit: max_bytes as u64,
            });
        }
        let body = split_checked(bytes)?;
        let mut r = Reader::new(body);
        if r.take(4)? != MAGIC {
            return Err(DecodeError::BadMagic("controller snapshot"));
        }
        let version = r.u16()?;
        if version != FILE_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "controller snapshot",
                version,
            });
        }
        let last = LogId::new(r.u64()?, r.u64()?);
        let membership = Membership::decode(&r.bytes32()?).map_err(|_| DecodeError::Invalid {
            what: "snapshot membership",
            value: 0,
        })?;
        let state = ControllerState::decode(&r.bytes32()?)?;
        r.finish()?;
        Ok(SnapshotFile {
            meta: SnapshotMeta { last, membership },
            state,
        })
    }
}

/// Timings of [`SnapshotPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicyConfig {
    /// Commands within this time of the last snapshot count as rapid updates and do not
    /// each take a snapshot.
    pub rapid_window: Duration,
    /// Under rapid updates, the longest a command stays outside every snapshot (seed:
    /// 60 s).
    pub max_age: Duration,
}

impl Default for SnapshotPolicyConfig {
    fn default() -> Self {
        SnapshotPolicyConfig {
            rapid_window: Duration::from_secs(1),
            max_age: Duration::from_secs(60),
        }
    }
}

/// When to snapshot. See the module docs.
#[derive(Clone, Debug)]
pub struct SnapshotPolicy {
    config: SnapshotPolicyConfig,
    last_taken_at: Option<Instant>,
    /// When the oldest command not covered by a snapshot was applied.
    dirty_since: Option<Instant>,
    /// A command was applied since the last decision.
    poked: bool,
    in_flight: bool,
}

impl SnapshotPolicy {
    /// A policy; nothing is due until a command is applied.
    pub fn new(config: SnapshotPolicyConfig) -> Self {
        SnapshotPolicy {
            config,
            last_taken_at: None,
            dirty_since: None,
            poked: false,
            in_flight: false,
        }
    }

    /// A command was applied at `now`.
    pub fn on_applied(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
        self.poked = true;
    }

    /// Whether a snapshot should start now. Consumes the "command applied" trigger.
    pub fn due(&mut self, now: Instant) -> bool {
        let poked = std::mem::take(&mut self.poked);
        let Some(dirty_since) = self.dirty_since else {
            return false;
        };
        if self.in_flight {
            return false;
        }
        let outside_window = self
            .last_taken_at
            .is_none_or(|last| now >= last + self.config.rapid_window);
        (poked && outside_window) || now >= dirty_since + self.config.max_age
    }

    /// A snapshot write started at `now`; it covers everything applied so far.
    pub fn on_started(&mut self, now: Instant) {
        assert!(!self.in_flight, "one snapshot write at a time");
        self.in_flight = true;
        self.last_taken_at = Some(now);
        self.dirty_since = None;
    }

    /// The write finished (durable, or failed: `covered` false re-marks the state dirty).
    pub fn on_finished(&mut self, now: Instant, covered: bool) {
        self.in_flight = false;
        if !covered {
            self.dirty_since.get_or_insert(now);
        }
    }

    /// The state was replaced by a snapshot (restart or install): nothing is dirty.
    pub fn on_restored(&mut self, now: Instant) {
        self.last_taken_at = Some(now);
        self.dirty_since = None;
        self.poked = false;
    }

    /// When the timer must run [`SnapshotPolicy::due`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight {
            return None;
        }
        self.dirty_since.map(|since| since + self.config.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn sparse_commands_snapshot_each_rapid_ones_at_most_every_max_age() {
        let mut p = SnapshotPolicy::new(SnapshotPolicyConfig::default());
        assert!(!p.due(at(0)), "nothing applied");
        p.on_applied(at(0));
        assert!(p.due(at(0)), "the first command snapshots at once");
        p.on_started(at(0));
        p.on_applied(at(10));
        assert!(!p.due(at(10)), "one write in flight");
        assert_eq!(p.poll_timeout(), None);
        p.on_finished(at(20), true);
        assert!(!p.due(at(20)), "inside the rapid window: deferred");
        assert_eq!(p.poll_timeout(), Some(at(60_010)));
        assert!(!p.due(at(59_000)));
        assert!(p.due(at(60_010)), "max age reached");
        p.on_started(at(60_010));
        p.on_finished(at(60_020), true);
        assert_eq!(p.poll_timeout(), None);
        p.on_applied(at(70_000));
        assert!(
            p.due(at(70_000)),
            "a command after a quiet spell snapshots at once"
        );
    }

    #[test]
    fn file_round_trips_and_refuses_damage() {
        let meta = SnapshotMeta {
            last: LogId::new(3, 42),
            membership: Membership::with_voters([1, 2, 3]).unwrap(),
        };
        let bytes = SnapshotFile::encode(&meta, &ControllerState::new());
        let file = SnapshotFile::decode(&bytes, 1 << 20).unwrap();
        assert_eq!(file.meta, meta);
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0x80;
            assert!(SnapshotFile::decode(&damaged, 1 << 20).is_err(), "byte {i}");
        }
        assert!(SnapshotFile::decode(&bytes, 8).is_err(), "over the size bound");
    }
}
