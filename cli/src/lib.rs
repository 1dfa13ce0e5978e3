//! The `codestax` command's library: the collector client, the config file, export, search and
//! offline verification of exports. `main.rs` parses arguments and wires these together.

pub mod client;
pub mod config;
pub mod export;
pub mod search;
pub mod verify;
