//! What can go wrong with retention settings, typed so the HTTP layer can tell a refused change
//! (the client's plan or value) from a failure to load or save them.

use codestax_config::Plan;
use std::path::PathBuf;

/// An error of the retention policy.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The org's plan does not let it change its retention (only `enterprise` does). A client
    /// error (403).
    #[error(
        "extended retention needs the enterprise plan; org {org:?} is on the {} plan, whose \
         retention is fixed at {default_days} days",
        plan.as_str()
    )]
    NotEnterprise {
        org: String,
        plan: Plan,
        default_days: u32,
    },
    /// `days` outside 1 to [`codestax_config::MAX_RETENTION_DAYS`]. A client error (400).
    #[error("days must be a whole number between 1 and {max}, got {days}")]
    DaysOutOfRange { days: i64, max: u32 },
    /// The overrides file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The index failed during a janitor run.
    #[error("index: {0}")]
    Index(#[from] crate::index::IndexError),
    /// A state file (overrides, chain checkpoints) exists but cannot be used.
    #[error("retention state file {path}: {message}")]
    State { path: PathBuf, message: String },
}

impl RetentionError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RetentionError::Io {
            path: path.into(),
            source,
        }
    }
}
