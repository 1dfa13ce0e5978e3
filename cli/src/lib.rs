//! The `codestax` command's library: the collector client, the config file, export, import, search,
//! offline verification of exports, and the demo. `main.rs` parses arguments and wires these together.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod demo;
pub mod export;
pub mod import;
pub mod report;
pub mod search;
pub mod verify;
