//! [`AuditIndex::open`]: an index directory opened, as its read handle and its one writer.

use super::audit_index::AuditIndex;
use super::error::IndexError;
use super::indexer::Indexer;
use super::options::IndexOptions;
use super::shared::Shared;
use std::path::Path;

impl AuditIndex {
    /// Opens (or creates) the index in `dir`. Partitions are found by their directory names and
    /// opened when a query first needs them. Refuses a directory written with another partition
    /// scheme. At most one process may open a directory.
    pub fn open(dir: &Path, opts: IndexOptions) -> Result<(AuditIndex, Indexer), IndexError> {
        let opened = Shared::open(dir, opts)?;
        let index = AuditIndex::new(opened.shared.clone());
        let indexer = Indexer::new(opened.shared, opened.state, opened.replay_through);
        Ok((index, indexer))
    }
}
