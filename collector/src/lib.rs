//! The collector: durable ingest (WAL with group commit, dedupe), the tantivy index, the
//! OTLP and NDJSON receivers, API keys, exports, retention, and the audit-log HTTP API.

// Unsafe only for madvise on the index's own read-only mappings (index/scan.rs), allowed there.
#![deny(unsafe_code)]

pub mod api;
pub mod cluster;
pub mod export;
pub mod export_proof;
pub mod health;
pub mod index;
mod indexing;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod retention;
pub mod saved_views;
mod server;
pub mod store;
pub mod stream;
pub mod tree;
pub mod uid;

pub use server::{Layout, ServeError, run};
