//! Harness for end-to-end tests over the real binaries: the workspace's `codestax-harness`
//! (collector, agent and CLI processes, free ports, waiting, records and emit lines), under the
//! names the tests here use.
#![forbid(unsafe_code)]

pub use codestax_harness::*;
