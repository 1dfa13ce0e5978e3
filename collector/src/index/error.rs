//! What can go wrong in the index, typed so the HTTP layer can map the client's mistakes
//! ([`IndexError::BadCursor`], [`IndexError::BadQuery`]) apart from internal failures.

use crate::health::{Failure, Part};
use std::io;
use std::path::PathBuf;
use tantivy::TantivyError;
use tantivy::directory::error::{OpenDirectoryError, OpenReadError, OpenWriteError};

/// An error of the audit index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The cursor is not one this index issued for this org and these filters (forged, truncated,
    /// of another version, or from another query). A client error.
    #[error("invalid cursor: {0}")]
    BadCursor(String),
    /// A search parameter cannot be used; `field` names the parameter (`"q"`). A client error.
    #[error("invalid {field}: {message}")]
    BadQuery {
        field: &'static str,
        message: String,
    },
    /// A record cannot be indexed (for example it has no id).
    #[error("record cannot be indexed: {0}")]
    InvalidRecord(String),
    /// The options given to [`AuditIndex::open`](super::AuditIndex::open) are unusable.
    #[error("invalid index options: {0}")]
    Options(String),
    /// A file or directory of the index could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The index state file exists but cannot be used.
    #[error("index state file {path}: {message}")]
    State { path: PathBuf, message: String },
    /// tantivy failed on a partition.
    #[error("tantivy error on {path} while trying to {action}: {source}")]
    Tantivy {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: tantivy::TantivyError,
    },
    /// A stored document could not be turned back into a record.
    #[error("stored record in {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IndexError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn tantivy(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: tantivy::TantivyError,
    ) -> Self {
        IndexError::Tantivy {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn bad_q(message: impl Into<String>) -> Self {
        IndexError::BadQuery {
            field: "q",
            message: message.into(),
        }
    }

    /// Whether the error is the client's fault (a bad cursor or query) rather than the server's.
    pub fn is_client_error(&self) -> bool {
        matches!(self, IndexError::BadCursor(_) | IndexError::BadQuery { .. })
    }

    /// The operating system's error behind this one, if any (ENOSPC, EIO...).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            IndexError::Io { source, .. } => Some(source),
            IndexError::Tantivy { source, .. } => tantivy_io_error(source),
            _ => None,
        }
    }

    /// What a failed write means for the collector's health: the OS error for clients, no path.
    pub fn failure(&self) -> Failure {
        match self.io_error() {
            Some(e) => Failure::io(Part::Index, e),
            None => Failure::other(
                Part::Index,
                "an internal error; the collector's log has the details",
            ),
        }
    }
}

/// The I/O error inside a tantivy error (tantivy's errors give no `source`).
fn tantivy_io_error(e: &TantivyError) -> Option<&io::Error> {
    match e {
        TantivyError::IoError(e)
        | TantivyError::OpenWriteError(OpenWriteError::IoError { io_error: e, .. })
        | TantivyError::OpenReadError(OpenReadError::IoError { io_error: e, .. })
        | TantivyError::OpenDirectoryError(OpenDirectoryError::IoError { io_error: e, .. }) => {
            Some(e)
        }
        _ => None,
    }
}
