//! The collector: durable ingest, the tantivy index, and the audit-log HTTP API.

pub mod index;
pub mod uid;
