//! What can go wrong with the Merkle trees.

use codestax_storage::LogError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("the Merkle tree of org {org}: {source}")]
    Log {
        org: String,
        #[source]
        source: LogError,
    },
    #[error("the Merkle tree directory {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Merkle tree directory {} is in use by another process", .path.display())]
    Locked { path: PathBuf },
    #[error(
        "the Merkle tree of org {org} has {size} leaves, so its next record is seq {}, but seq \
         {seq} came: records between are in neither the tree nor the write-ahead log",
        size + 1
    )]
    Gap { org: String, size: u64, seq: u64 },
    #[error("the Merkle tree of org {org} holds another leaf for seq {seq} than the record's")]
    Diverged { org: String, seq: u64 },
    #[error("the Merkle tree of org {org} has no entry {entry} (internal error)")]
    Missing { org: String, entry: u64 },
    #[error("the Merkle tree of org {org} is unusable until the collector restarts: {why}")]
    Unusable { org: String, why: String },
}

impl TreeError {
    /// Whether the disk (or quota) is full.
    pub fn is_storage_full(&self) -> bool {
        let kind = match self {
            TreeError::Log { source, .. } => source.io_kind(),
            TreeError::Io { source, .. } => Some(source.kind()),
            _ => None,
        };
        matches!(
            kind,
            Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        )
    }
}
