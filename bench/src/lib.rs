//! Benchmarks of the real collector binary over real sockets, with PostgreSQL as the baseline
//! in the same run. `codestax-bench --help` lists them; BENCHMARKS.md holds the figures.

// Unsafe only for libc calls on the bench's own children (kill, prctl) and sysconf/geteuid,
// each allowed where it is.
#![deny(unsafe_code)]

pub mod cleanup;
pub mod cluster;
pub mod collector;
pub mod data;
pub mod error;
pub mod export;
pub mod import;
pub mod load;
pub mod machine;
pub mod pg;
pub mod receivers;
pub mod runs;
pub mod search;
pub mod stats;
pub mod streams;

pub use error::{BenchError, Result};
