//! The end-to-end tests: real collector, agent and CLI processes, servers and browsers.
//!
//! One test binary (each file a module) rather than one per file: every binary links the whole
//! tree, and two dozen of them filled CI's disk. Run one file's tests with
//! `cargo test -p codestax-tests --test e2e soak::` (a module path filters by prefix).

#[path = "../../../common/tests/support/schemas.rs"]
mod schemas;

mod agent_e2e;
mod bench_smoke;
mod cluster_common;
mod cluster_ingest;
mod cluster_owner;
mod cluster_route;
mod cluster_servers;
mod cluster_snapshot;
mod cluster_state;
mod cluster_streams;
mod cluster_three;
mod collector_api;
mod collector_durability;
mod collector_hostile;
mod collector_limits;
mod collector_otlp;
mod collector_retention;
mod collector_start;
mod config_check;
mod dashboard;
mod demo;
mod disk_full;
mod examples;
mod export_chain;
mod export_formats;
mod export_proofs;
mod first_hour;
mod fresh_clone;
mod import;
mod merkle_tree;
mod provenance;
mod snapshot_retention;
mod soak;
mod streams;
