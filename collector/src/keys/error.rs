//! What can go wrong with the key store, each variant naming the file or key it concerns.

use chrono::{DateTime, Utc};
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file-system operation on the store failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `reading key store`.
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `keys.json` is not valid JSON for the store's format. Never reset silently.
    #[error("key store {} is corrupt: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `keys.json` parses but breaks a rule (bad hash, duplicate id, invalid org, ...).
    #[error("key store {} is invalid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// `keys.json` was written by a build with another format version.
    #[error("key store {} has format version {version}; this build reads version {supported}", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        version: u64,
        /// The version this build reads.
        supported: u64,
    },
    #[error("invalid org id {0:?}: use 1 to 64 letters, digits, '_', '-' or '.'")]
    InvalidOrg(String),
    /// Holds at most the name's first 32 characters: the error never echoes a huge name back.
    #[error(
        "invalid key name {0:?}: use 1 to 128 characters without control or bidirectional formatting characters"
    )]
    InvalidName(String),
    #[error("no API key with id {0:?}")]
    NotFound(String),
    #[error(
        "API key {id} is already revoked (at {})",
        codestax_common::time::format_rfc3339(at)
    )]
    AlreadyRevoked { id: String, at: DateTime<Utc> },
    /// The change's audit entry could not be made durable, so the change was not made.
    #[error("the change could not be recorded in the audit log, so it was not made: {0}")]
    NotRecorded(String),
    #[error("the operating system's random number generator failed: {0}")]
    Rng(#[source] rand::rngs::SysError),
    /// Writing the CLI's output failed.
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}
