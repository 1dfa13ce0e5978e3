//! What can go wrong starting, driving or stopping a binary.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A binary could not be started, driven or stopped as asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited during start: {status}{detail}")]
    ExitedDuringStart {
        program: String,
        status: ExitStatus,
        /// What it wrote to stderr, when captured (with a leading newline).
        detail: String,
    },
    #[error("{program} was not ready within {timeout:?}")]
    NotReady { program: String, timeout: Duration },
    #[error("{program} did not stop within {timeout:?} of SIGTERM; killed")]
    StopTimeout { program: String, timeout: Duration },
    #[error("{program} exited with {status} on SIGTERM")]
    StopFailed { program: String, status: ExitStatus },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{what}: {source}")]
    Http {
        what: String,
        source: reqwest::Error,
    },
}
