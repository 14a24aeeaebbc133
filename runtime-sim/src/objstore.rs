//! A simulated object store (S3-like) for tiered storage: put / get / list / delete with
//! latency, errors, timeouts and uploads that stop half way.
//!
//! Operations execute when issued and report an [`ObjOutcome`] with the delay after which
//! the caller learns it. The faults follow what real stores do:
//!
//! * **Error**: the operation did nothing and says so.
//! * **Timeout**: the caller hears nothing useful after `timeout`; the operation *may or
//!   may not* have happened (a timed-out put is applied with probability 1/2) — exactly
//!   the ambiguity a tiering state machine must survive.
//! * **Partial upload**: a put stops half way. The bytes that made it are kept as an
//!   *incomplete upload* (like an S3 multipart upload never completed): listed by
//!   [`SimObjectStore::incomplete_uploads`] for garbage collection, but never visible to
//!   `get` or `list`, so nothing can take a partial object for a complete one. A test
//!   checks that invariant.

use crate::dist::Latency;
use crate::rng::{RngExt, SimRng};
use bytes::Bytes;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Why an object-store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjError {
    /// The store answered with an error (503 and friends); nothing was done.
    #[error("object store unavailable")]
    Unavailable,
    /// No answer in time; the operation may or may not have taken effect.
    #[error("object store operation timed out")]
    Timeout,
    /// The store asks the caller to slow down (S3's 503 SlowDown); nothing was done.
    #[error("object store throttling")]
    Throttled,
    /// The upload stopped part way; the object was not created.
    #[error("upload interrupted after {uploaded_bytes} bytes")]
    Interrupted {
        /// Bytes that reached the store.
        uploaded_bytes: u64,
    },
    /// No object under that key.
    #[error("no such key: {0}")]
    NotFound(String),
}

/// Fault and timing parameters.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjStoreConfig {
    /// Time per request.
    pub latency: Latency,
    /// Probability of an error answer.
    pub error_prob: f64,
    /// Probability of a timeout.
    pub timeout_prob: f64,
    /// Probability of a throttling answer (nothing done; slow down).
    pub throttle_prob: f64,
    /// How long a caller waits before calling it a timeout.
    pub timeout_us: u64,
    /// Probability that a put stops half way.
    pub partial_upload_prob: f64,
    /// A timed-out put or delete that happens takes effect *later* instead of at once:
    /// it is handed to the caller ([`SimObjectStore::take_deferred`]), who applies it at a
    /// time of its choosing (like a real request that lands after the client gave up).
    pub late_timeouts: bool,
}

impl Default for ObjStoreConfig {
    fn default() -> Self {
        ObjStoreConfig {
            latency: Latency::uniform_us(5_000, 50_000).with_tail(0.01, 1_000_000),
            error_prob: 0.0,
            timeout_prob: 0.0,
            throttle_prob: 0.0,
            timeout_us: 5_000_000,
            partial_upload_prob: 0.0,
            late_timeouts: false,
        }
    }
}

impl ObjStoreConfig {
    /// Checks the parameters; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        self.latency.validate("object_store.latency")?;
        for (name, p) in [
            ("error_prob", self.error_prob),
            ("timeout_prob", self.timeout_prob),
            ("throttle_prob", self.throttle_prob),
            ("partial_upload_prob", self.partial_upload_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("object_store.{name} = {p} is not a probability"));
            }
        }
        Ok(())
    }
}

/// The result of an operation and when the caller learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjOutcome<T> {
    /// Delay from issue to answer.
    pub delay: Duration,
    /// The answer.
    pub result: Result<T, ObjError>,
}

/// Counters of what the store did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjStats {
    /// Puts that created an object.
    pub puts: u64,
    /// Error answers.
    pub errors: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Uploads that stopped half way.
    pub partial_uploads: u64,
}

/// A timed-out operation that will still take effect ([`ObjStoreConfig::late_timeouts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferred {
    /// The object.
    pub key: String,
    /// The bytes a put writes; `None` for a delete.
    pub data: Option<Bytes>,
}

/// The store.
#[derive(Debug)]
pub struct SimObjectStore {
    config: ObjStoreConfig,
    objects: BTreeMap<String, Bytes>,
    incomplete: BTreeMap<String, Bytes>,
    deferred: Vec<Deferred>,
    stats: ObjStats,
}

enum Fault {
    None,
    Error,
    Throttled,
    Timeout { applied: bool },
}

impl SimObjectStore {
    /// An empty store.
    pub fn new(config: ObjStoreConfig) -> Self {
        SimObjectStore {
            config,
            objects: BTreeMap::new(),
            incomplete: BTreeMap::new(),
            deferred: Vec::new(),
            stats: ObjStats::default(),
        }
    }

    /// What the store has done.
    pub fn stats(&self) -> &ObjStats {
        &self.stats
    }

    fn fault(&mut self, rng: &mut SimRng) -> (Duration, Fault) {
        if rng.chance(self.config.timeout_prob) {
            self.stats.timeouts += 1;
            let applied = rng.chance(0.5);
            return (
                Duration::from_micros(self.config.timeout_us),
                Fault::Timeout { applied },
            );
        }
        let delay = self.config.latency.sample(rng);
        if rng.chance(self.config.error_prob) {
            self.stats.errors += 1;
            return (delay, Fault::Error);
        }
        if rng.chance(self.config.throttle_prob) {
            self.stats.errors += 1;
            return (delay, Fault::Throttled);
        }
        (delay, Fault::None)
    }

    /// Uploads `data` under `key` (replacing any object there).
    pub fn put(&mut self, rng: &mut SimRng, key: &str, data: Bytes) -> ObjOutcome<()> {
        let (delay, fault) = self.fault(rng);
        let result = match fault {
            Fault::Error => Err(ObjError::Unavailable),
            Fault::Throttled => Err(ObjError::Throttled),
            Fault::Timeout { applied } => {
                if applied && self.config.late_timeouts {
                    self.deferred.push(Deferred {
                        key: key.to_string(),
                        data: Some(data),
                    });
                } else if applied {
                    self.complete_put(key, data);
                }
                Err(ObjError::Timeout)
            }
            Fault::None if rng.chance(self.config.partial_upload_prob) => {
                let uploaded = rng.between(0, (data.len() as u64).saturating_sub(1));
                let uploaded_usize = usize::try_from(uploaded).unwrap_or(0);
                self.incomplete
                    .insert(key.to_string(), data.slice(..uploaded_usize));
                self.stats.partial_uploads += 1;
                Err(ObjError::Interrupted {
                    uploaded_bytes: uploaded,
                })
            }
            Fault::None => {
                self.complete_put(key, data);
                Ok(())
            }
        };
        ObjOutcome { delay, result }
    }

    fn complete_put(&mut self, key: &str, data: Bytes) {
        self.incomplete.remove(key);
        self.objects.insert(key.to_string(), data);
        self.stats.puts += 1;
    }

    /// Downloads the object under `key` (only complete objects exist for `get`).
    pub fn get(&mut self, rng: &mut SimRng, key: &str) -> ObjOutcome<Bytes> {
        let (delay, fault) = self.fault(rng);
        let result = match fault {
            Fault::Error => Err(ObjError::Unavailable),
            Fault::Throttled => Err(ObjError::Throttled),
            Fault::Timeout { .. } => Err(ObjError::Timeout),
            Fault::None => self
                .objects
                .get(key)
                .cloned()
                .ok_or_else(|| ObjError::NotFound(key.to_string())),
        };
        ObjOutcome { delay, result }
    }

    /// Keys of complete objects starting with `prefix`, sorted.
    pub fn list(&mut self, rng: &mut SimRng, prefix: &str) -> ObjOutcome<Vec<String>> {
        let (delay, fault) = self.fault(rng);
        let result = match fault {
            Fault::Error => Err(ObjError::Unavailable),
            Fault::Throttled => Err(ObjError::Throttled),
            Fault::Timeout { .. } => Err(ObjError::Timeout),
            Fault::None => Ok(self
                .objects
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect()),
        };
        ObjOutcome { delay, result }
    }

    /// Deletes `key` (and any incomplete upload of it); deleting nothing succeeds.
    pub fn delete(&mut self, rng: &mut SimRng, key: &str) -> ObjOutcome<()> {
        let (delay, fault) = self.fault(rng);
        let result = match fault {
            Fault::Error => Err(ObjError::Unavailable),
            Fault::Throttled => Err(ObjError::Throttled),
            Fault::Timeout { applied } => {
                if applied && self.config.late_timeouts {
                    self.deferred.push(Deferred {
                        key: key.to_string(),
                        data: None,
                    });
                } else if applied {
                    self.objects.remove(key);
                    self.incomplete.remove(key);
                }
                Err(ObjError::Timeout)
            }
            Fault::None => {
                self.objects.remove(key);
                self.incomplete.remove(key);
                Ok(())
            }
        };
        ObjOutcome { delay, result }
    }

    /// Keys with an upload that never completed (for garbage collection), sorted.
    pub fn incomplete_uploads(&self) -> Vec<String> {
        self.incomplete.keys().cloned().collect()
    }

    /// Whether a complete object exists under `key` (a checker's view, no faults).
    pub fn contains(&self, key: &str) -> bool {
        self.objects.contains_key(key)
    }

    /// Timed-out operations that will still take effect, for the caller to apply later
    /// with [`SimObjectStore::apply_deferred`].
    pub fn take_deferred(&mut self) -> Vec<Deferred> {
        std::mem::take(&mut self.deferred)
    }

    /// Applies a late operation now.
    pub fn apply_deferred(&mut self, late: Deferred) {
        match late.data {
            Some(data) => self.complete_put(&late.key, data),
            None => {
                self.objects.remove(&late.key);
                self.incomplete.remove(&late.key);
            }
        }
    }

    /// Removes an object outside any request (an operator's or a lifecycle rule's
    /// doing, not the archiver's), returning it.
    pub fn remove_outside(&mut self, key: &str) -> Option<Bytes> {
        self.objects.remove(key)
    }

    /// Puts an object back outside any request (an operator restoring it).
    pub fn restore_outside(&mut self, key: &str, data: Bytes) {
        self.objects.insert(key.to_string(), data);
    }

    /// The complete object under `key` (a checker's view, no faults).
    pub fn peek(&self, key: &str) -> Option<&Bytes> {
        self.objects.get(key)
    }

    /// Keys of every complete object (a checker's view, no faults).
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.objects.keys()
    }

    /// Changes the fault and timing parameters (e.g. faults off for a liveness phase).
    pub fn set_config(&mut self, config: ObjStoreConfig) {
        self.config = config;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Seeds;

    #[test]
    fn put_get_list_delete() {
        let mut s = SimObjectStore::new(ObjStoreConfig::default());
        let mut rng = Seeds::new(1).stream("objstore");
        assert_eq!(s.put(&mut rng, "a/1", Bytes::from_static(b"one")).result, Ok(()));
        assert_eq!(s.put(&mut rng, "a/2", Bytes::from_static(b"two")).result, Ok(()));
        assert_eq!(s.put(&mut rng, "b/1", Bytes::from_static(b"x")).result, Ok(()));
        let got = s.get(&mut rng, "a/2");
        assert_eq!(got.result, Ok(Bytes::from_static(b"two")));
        assert!(got.delay >= Duration::from_millis(5));
        assert_eq!(
            s.list(&mut rng, "a/").result,
            Ok(vec!["a/1".into(), "a/2".into()])
        );
        assert_eq!(s.delete(&mut rng, "a/1").result, Ok(()));
        assert_eq!(
            s.get(&mut rng, "a/1").result,
            Err(ObjError::NotFound("a/1".into()))
        );
    }

    #[test]
    fn partial_uploads_are_never_visible_as_objects() {
        let mut s = SimObjectStore::new(ObjStoreConfig {
            partial_upload_prob: 0.5,
            ..ObjStoreConfig::default()
        });
        let mut rng = Seeds::new(2).stream("objstore");
        let data = Bytes::from(vec![7u8; 1000]);
        for i in 0..200 {
            let key = format!("seg/{i}");
            let put = s.put(&mut rng, &key, data.clone());
            let listed = s.list(&mut rng, &key).result.unwrap();
            match put.result {
                Ok(()) => {
                    assert_eq!(s.get(&mut rng, &key).result, Ok(data.clone()));
                    assert_eq!(listed, vec![key.clone()]);
                }
                Err(ObjError::Interrupted { uploaded_bytes }) => {
                    assert!(uploaded_bytes < 1000);
                    assert!(matches!(s.get(&mut rng, &key).result, Err(ObjError::NotFound(_))));
                    assert!(listed.is_empty());
                    assert!(s.incomplete_uploads().contains(&key));
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(s.stats().partial_uploads > 50);
    }

    #[test]
    fn errors_do_nothing_and_timeouts_are_ambiguous() {
        let mut s = SimObjectStore::new(ObjStoreConfig {
            error_prob: 1.0,
            ..ObjStoreConfig::default()
        });
        let mut rng = Seeds::new(3).stream("objstore");
        assert_eq!(
            s.put(&mut rng, "k", Bytes::new()).result,
            Err(ObjError::Unavailable)
        );
        assert!(!s.contains("k"));
        let mut t = SimObjectStore::new(ObjStoreConfig {
            timeout_prob: 1.0,
            ..ObjStoreConfig::default()
        });
        let (mut applied, mut not_applied) = (0, 0);
        for i in 0..100 {
            let key = format!("k{i}");
            let out = t.put(&mut rng, &key, Bytes::new());
            assert_eq!(out.result, Err(ObjError::Timeout));
            assert_eq!(out.delay, Duration::from_secs(5));
            if t.contains(&key) {
                applied += 1;
            } else {
                not_applied += 1;
            }
        }
        assert!(applied > 20 && not_applied > 20);
    }
}
