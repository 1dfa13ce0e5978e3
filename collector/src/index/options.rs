//! [`IndexOptions`]: how the index is laid out, what writing it may take, and the thresholds of
//! its read-side caches.

use super::error::IndexError;
use super::scheme::PartitionScheme;
use codestax_config::{TANTIVY_MAX_WRITER_MEMORY_BYTES, TANTIVY_MIN_WRITER_MEMORY_BYTES};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tantivy::Directory;

/// The cold stage's default budget: half of it (what one flight takes at most) spread over 18
/// past weeks is still segments of about three thousand records each.
pub const DEFAULT_COLD_STAGE_BYTES: usize = 64 * 1024 * 1024;
/// The cold stage's default longest wait: past-week records searchable within ~3 s.
pub const DEFAULT_COLD_FLUSH_AFTER: Duration = Duration::from_secs(2);

/// The default threads of a flush of staged records: with one, a spread load on two cores waited
/// for the flush with a core idle (BENCHMARKS.md, session 14).
pub const DEFAULT_COLD_FLUSH_THREADS: usize = 2;

/// The default memory for the newest records of orgs that streams follow (`streams.tail_bytes`).
pub const DEFAULT_TAIL_BYTES: usize = codestax_config::DEFAULT_STREAMS_TAIL_BYTES as usize;

/// tantivy refuses writer threads with less memory than this.
pub(crate) const MIN_MEMORY_PER_THREAD: usize = TANTIVY_MIN_WRITER_MEMORY_BYTES;

/// How the index is laid out, how much memory and how many threads writing it may take, and the
/// sizes of the read side's caches (tests make these small so that small indexes use them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOptions {
    /// Memory budget of each indexing thread in bytes (at least 15 MB): when a thread's records
    /// since the last commit fill it, they are written out as a segment. The most the writers
    /// take together is `max_open_writers * writer_threads` times this.
    pub writer_memory_bytes: usize,
    /// Indexing threads per partition writer, 1 to 8. Each builds its own segment, so a commit
    /// writes them out in parallel: with one thread on two cores, commits took up to 1 s and
    /// ingest waited meanwhile (BENCHMARKS.md).
    pub writer_threads: usize,
    /// Threads merging segments in the background per partition writer, 1 to 8.
    pub merge_threads: usize,
    /// Most partition writers open at once. Opening one more commits and closes the least recently
    /// used (records mostly arrive for the current week, so this rarely happens: records of past
    /// partitions are staged, see `cold_stage_bytes`).
    pub max_open_writers: usize,
    /// Memory for records of past (cold) partitions waiting to be indexed in bulk, in bytes (as
    /// counted: their canonical JSON, the only form staged, plus 64 bytes each), records being
    /// flushed included. Half full, every staged partition is flushed (on `cold_flush_threads`
    /// threads of its own). 0: no stage, records of every partition go to its writer as they
    /// come.
    pub cold_stage_bytes: usize,
    /// Threads a flush of staged records indexes partitions on, each with a writer of its own
    /// (one indexing thread, one merge thread), 1 to 8.
    pub cold_flush_threads: usize,
    /// Longest a record waits in the stage: past-week records are searchable within about this
    /// plus one commit interval.
    pub cold_flush_after: Duration,
    /// How records are split into partitions; fixed for the life of an index directory.
    pub partition: PartitionScheme,
    /// Memory the facet counts of whole segments may take, in bytes (an entry is a few KiB: the
    /// values of one org's records in one segment).
    pub facet_cache_bytes: usize,
    /// Segments with fewer documents have their facets counted every time rather than cached
    /// (cheap to count, and short-lived: merged away soon).
    pub facet_cache_min_docs: u32,
    /// Documents per run whose time range is kept per segment, so that a later page of a walk
    /// visits only the runs around its cursor; at least 1.
    pub time_chunk_docs: u32,
    /// Memory for the newest records of orgs that streams follow, read by them instead of the
    /// index's segments (see `tail.rs`), in bytes (as counted: their canonical JSON and id plus
    /// 160 bytes each); oldest evicted first. 0: streams always read the index.
    pub tail_bytes: usize,
    /// Wraps each partition's tantivy directory as it is opened (tests make writes fail through
    /// it); `None`: the directory as it is.
    pub directory: Option<DirectoryHook>,
    /// The bytes the index's disk must keep free, asked before each merge: a merge whose
    /// segments would take the disk below it waits (`merges.rs`). The collector passes the
    /// WAL's room for indexing what it acknowledged; `None`: merges are not weighed.
    pub merge_room: Option<MergeRoom>,
}

/// What [`IndexOptions::merge_room`] holds: the bytes to keep free now.
#[derive(Clone)]
pub struct MergeRoom(pub Arc<dyn Fn() -> u64 + Send + Sync>);

impl MergeRoom {
    pub fn bytes(&self) -> u64 {
        (self.0)()
    }
}

impl fmt::Debug for MergeRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MergeRoom")
    }
}

/// The same function, not an equal one.
impl PartialEq for MergeRoom {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MergeRoom {}

/// Given a partition's path and its tantivy directory, the directory to use instead.
pub type WrapDirectory = dyn Fn(&Path, Box<dyn Directory>) -> Box<dyn Directory> + Send + Sync;

/// What [`IndexOptions::directory`] holds.
#[derive(Clone)]
pub struct DirectoryHook(pub Arc<WrapDirectory>);

impl fmt::Debug for DirectoryHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectoryHook")
    }
}

/// The same hook, not an equal one.
impl PartialEq for DirectoryHook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DirectoryHook {}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            writer_memory_bytes: 64 * 1024 * 1024,
            writer_threads: 2,
            merge_threads: 2,
            max_open_writers: 2,
            cold_stage_bytes: DEFAULT_COLD_STAGE_BYTES,
            cold_flush_threads: DEFAULT_COLD_FLUSH_THREADS,
            cold_flush_after: DEFAULT_COLD_FLUSH_AFTER,
            partition: PartitionScheme::Week,
            facet_cache_bytes: 64 * 1024 * 1024,
            facet_cache_min_docs: 2048,
            time_chunk_docs: 1024,
            tail_bytes: DEFAULT_TAIL_BYTES,
            directory: None,
            merge_room: None,
        }
    }
}

impl IndexOptions {
    pub(crate) fn validate(&self) -> Result<(), IndexError> {
        if !(1..=8).contains(&self.writer_threads) {
            return Err(IndexError::Options(format!(
                "writer_threads must be 1 to 8, got {}",
                self.writer_threads
            )));
        }
        if !(1..=8).contains(&self.cold_flush_threads) {
            return Err(IndexError::Options(format!(
                "cold_flush_threads must be 1 to 8, got {}",
                self.cold_flush_threads
            )));
        }
        if !(1..=8).contains(&self.merge_threads) {
            return Err(IndexError::Options(format!(
                "merge_threads must be 1 to 8, got {}",
                self.merge_threads
            )));
        }
        if !(MIN_MEMORY_PER_THREAD..=TANTIVY_MAX_WRITER_MEMORY_BYTES)
            .contains(&self.writer_memory_bytes)
        {
            return Err(IndexError::Options(format!(
                "writer_memory_bytes (per indexing thread) must be 15 MB to 3 GiB, got {} bytes",
                self.writer_memory_bytes
            )));
        }
        if self.max_open_writers == 0 {
            return Err(IndexError::Options(
                "max_open_writers must be at least 1".into(),
            ));
        }
        if self.cold_stage_bytes > 0 && self.cold_flush_after.is_zero() {
            return Err(IndexError::Options(
                "cold_flush_after must be above 0 when cold_stage_bytes is".into(),
            ));
        }
        if self.time_chunk_docs == 0 {
            return Err(IndexError::Options(
                "time_chunk_docs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
