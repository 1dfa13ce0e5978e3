//! Tailing JSON-lines emit files: discovery by glob and file-system events, identity by
//! fingerprint and inode, rotation and truncation, partial and over-long lines, derived ids,
//! checkpoints that become durable with the records in the spool, and files found again after
//! they moved while the agent was not watching (or reported lost).

mod discovery;
mod fingerprint;
mod rediscovery;
mod server;
mod tailer;

use std::path::Path;
use std::sync::Arc;

use codestax_config::FileSourceConfig;

pub use discovery::{FileGlobs, GlobError};
pub use fingerprint::derived_id;
pub use server::{FileServer, FileServerOptions, FileSourceError, FileTailer};

/// One `[[sources.files]]` entry, checked and compiled.
#[derive(Debug)]
pub struct FileSettings {
    pub globs: FileGlobs,
    /// Org for records that name none.
    pub org_id: Option<String>,
    /// Longer lines are quarantined.
    pub max_line_bytes: usize,
    /// Bytes of a file's start that identify it.
    pub fingerprint_bytes: usize,
}

impl FileSettings {
    /// Compiles a config entry; relative globs are taken from `cwd`. `max_line_bytes` is capped
    /// at `line_cap` (a line must fit in the spool with room to spare).
    pub fn from_config(
        config: &FileSourceConfig,
        cwd: &Path,
        line_cap: usize,
    ) -> Result<Arc<FileSettings>, GlobError> {
        if config.max_line_bytes > line_cap {
            tracing::warn!(
                max_line_bytes = config.max_line_bytes,
                line_cap,
                "max_line_bytes is more than a quarter of spool.max_bytes; longer lines are quarantined"
            );
        }
        Ok(Arc::new(FileSettings {
            globs: FileGlobs::new(&config.include, &config.exclude, cwd)?,
            org_id: config.org_id.clone(),
            max_line_bytes: config.max_line_bytes.min(line_cap),
            fingerprint_bytes: config.fingerprint_bytes,
        }))
    }
}

#[cfg(test)]
mod tests;
