//! What the spool's handle, writer and readers share: positions, options, errors and the state
//! behind the handle (below them all, so the writer and readers need not import the handle).

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use codestax_storage::{Catalog, StateFile, StateFileError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A place in the spool: a segment's sequence number and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpoolPos {
    pub segment: u64,
    pub offset: u64,
}

/// Size limits of a spool.
#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    /// Most bytes all segments together may hold; appends beyond are refused with `Full`.
    pub max_bytes: u64,
    /// A segment is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
}

/// The spool could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("spool segment {path}: {source}")]
    Segment { path: PathBuf, source: io::Error },
    /// The disk under the spool has no space left (ENOSPC, or the quota): nothing was written.
    /// Not [`SpoolError::Full`], which is `max_bytes` reached.
    #[error("the spool's disk is full (writing {path}): {source}")]
    DiskFull { path: PathBuf, source: io::Error },
    #[error("spool segment {path} is damaged at offset {offset}: {problem}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        problem: String,
    },
    #[error("spool is full: {used} of {max} bytes used, {needed} more needed")]
    Full { used: u64, max: u64, needed: u64 },
    #[error("an entry of {needed} bytes can never fit in a spool of {max} bytes")]
    TooLarge { needed: u64, max: u64 },
    #[error(transparent)]
    State(#[from] StateFileError),
    #[error("the spool writer has stopped")]
    Stopped,
}

impl SpoolError {
    /// True when the spool holds `max_bytes`: the append may succeed once the collector has
    /// acknowledged more.
    pub fn is_full(&self) -> bool {
        matches!(self, SpoolError::Full { .. })
    }

    /// True when the disk under the spool is full (an append, or the acknowledged position's
    /// file): the write may succeed once space is freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            SpoolError::DiskFull { .. } => true,
            SpoolError::State(e) => e.is_disk_full(),
            _ => false,
        }
    }
}

/// Appends are failing on the disk: what `/healthz` shows until one succeeds again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// The disk is full (rather than failing otherwise).
    pub disk_full: bool,
    /// The newest error.
    pub message: String,
    /// When the first append of this run of failures failed.
    pub since: SystemTime,
    /// Appends (groups of appends written together) failed since then.
    pub failures: u64,
}

/// What the spool handle, its writer and its readers share.
pub(crate) struct Shared {
    pub(super) dir: PathBuf,
    pub(super) options: SpoolOptions,
    pub(super) used_bytes: AtomicU64,
    /// Every segment on disk with its committed length.
    pub(super) catalog: Catalog,
    pub(super) acked_file: StateFile,
    pub(super) acked: Mutex<SpoolPos>,
    /// End of the fsynced data: what readers may read.
    pub(super) committed: watch::Sender<SpoolPos>,
    /// Runs of failed writes ended so far. Bumped by the first append that succeeds after
    /// failed ones, before its committed end is published: a reader that sees that end sees the
    /// bump, and drops what it had buffered of the file beyond the old end (bytes of failed
    /// writes, since cut back, never committed).
    pub(super) cuts: AtomicU64,
    /// Set while appends fail on the disk, cleared by the next append that succeeds.
    pub(super) failing: Mutex<Option<WriteFailure>>,
}
