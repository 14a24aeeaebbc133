//! # oxbow-runtime-real
//!
//! The real runtime: it executes what core's state machines ask for on real hardware.
//!
//! * [`storage`] — direct-I/O segment files, the aligned buffer pool and the executor of
//!   the log's disk effects.

#![deny(clippy::unwrap_used)]
#![deny(clippy::expect_used)]
#![warn(missing_docs)]

pub mod storage;
