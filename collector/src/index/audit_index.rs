//! [`AuditIndex`]: the read handle shared by every request, with the lookups by (org, id), the
//! sizes of partitions and what retention asks of them. Search, facets, scans and chain
//! verification are its other reads, each in a file of its own.

use super::collect::OrgSpanCollector;
use super::cursor::CursorKey;
use super::error::IndexError;
use super::schema::col;
use super::scheme::{PartitionKey, micros_to_time};
use super::shared::Shared;
use super::stored::load;
use codestax_common::AuditRecord;
use std::collections::BTreeMap;
use std::sync::Arc;
use tantivy::query::AllQuery;

/// Size of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStats {
    /// Records searchable now.
    pub docs: u64,
    pub bytes_on_disk: u64,
    pub partitions: usize,
}

/// One partition, for retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Directory name, and the name [`Indexer::delete_partition`](super::Indexer::delete_partition)
    /// takes.
    pub name: String,
    /// Inclusive start of the partition's time range.
    pub start: chrono::DateTime<chrono::Utc>,
    /// Exclusive end.
    pub end: chrono::DateTime<chrono::Utc>,
    /// Records searchable now.
    pub docs: u64,
    pub bytes_on_disk: u64,
}

/// What one org has in one partition, for retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgSpan {
    /// Records searchable now.
    pub docs: u64,
    /// Time of the oldest of them.
    pub oldest: chrono::DateTime<chrono::Utc>,
}

/// The audit index: a cheap, cloneable, thread-safe read handle. Its one writer is the
/// [`Indexer`](super::Indexer) returned with it by [`AuditIndex::open`].
#[derive(Clone)]
pub struct AuditIndex {
    pub(super) shared: Arc<Shared>,
}

/// While held, the index keeps the newest records of an org in memory, for
/// [`AuditIndex::for_each_chained_stored`] to read them from there (each stream holds one for
/// its org). See `tail.rs`.
pub struct TailFollow {
    shared: Arc<Shared>,
    org: String,
}

impl Drop for TailFollow {
    fn drop(&mut self) {
        self.shared.tail.unfollow(&self.org);
    }
}

impl AuditIndex {
    /// Keeps `org`'s records added from now on in memory while the answer is held.
    pub fn follow_tail(&self, org: &str) -> TailFollow {
        self.shared.tail.follow(org);
        TailFollow {
            shared: self.shared.clone(),
            org: org.to_string(),
        }
    }

    pub(crate) fn new(shared: Arc<Shared>) -> AuditIndex {
        AuditIndex { shared }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Tags search cursors under `key` from now on: the collector's, derived from its signing
    /// key ([`CursorKey::from_signer`]), set before the API answers. Until then cursors are tagged
    /// under a key of this process alone.
    pub fn set_cursor_key(&self, key: CursorKey) {
        *self
            .shared
            .cursor_key
            .write()
            .unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// The key cursors are tagged under now.
    pub(crate) fn cursor_key(&self) -> CursorKey {
        self.shared
            .cursor_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every record of the write-ahead log up to this LSN is committed and searchable; replay
    /// from the next one. `None`: replay from the start.
    pub fn indexed_through(&self) -> Option<u64> {
        self.shared
            .marks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .indexed_through
    }

    /// Changes after every commit that made new records searchable (its value counts them).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }

    /// The exclusive LSN bound of a search or facet count starting now: everything committed,
    /// including records of this week committed above a past record still staged.
    pub(super) fn snapshot_bound(&self) -> u64 {
        self.shared
            .marks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot_through
            .map_or(0, bound_after)
    }

    /// The exclusive LSN bound of a walk by `seq` or an export's scan starting now: only the
    /// records through `indexed_through`, below which nothing is staged. Above it a record of
    /// this week may be committed while an earlier one of the same org waits in the stage; a
    /// walk that saw the later one would find a hole in the chain and take the staged record
    /// for deleted (a stream would skip it, an export or `verify` would report a break).
    pub(super) fn walk_bound(&self) -> u64 {
        self.shared
            .marks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .indexed_through
            .map_or(0, bound_after)
    }

    /// Waits, at most `limit`, until walks and export scans see everything a search sees now
    /// (the past records staged below this week's committed ones are flushed), so an export
    /// holds what the search before it showed. Returns whether they do.
    pub async fn wait_walks_caught_up(&self, limit: std::time::Duration) -> bool {
        let target = self.snapshot_bound();
        let mut commits = self.commits();
        let caught_up = async {
            while self.walk_bound() < target {
                if commits.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(limit, caught_up)
            .await
            .unwrap_or(false)
    }

    /// The record `id` of `org`, if indexed.
    pub fn get(&self, org: &str, id: &str) -> Result<Option<AuditRecord>, IndexError> {
        for p in self.shared.partitions_newest_first(None, None) {
            if let Some((searcher, addr)) = self.shared.find(&p, org, id)? {
                return load(&searcher, &p.dir, &self.shared.fields, addr).map(Some);
            }
        }
        Ok(None)
    }

    /// The record `id` of `org`, if indexed, looked for in [`AuditIndex::contains`]'s order:
    /// from the partition of `time` (µs) out.
    pub fn get_near(
        &self,
        org: &str,
        id: &str,
        time: i64,
    ) -> Result<Option<AuditRecord>, IndexError> {
        for p in self.shared.partitions_near_first(time) {
            if let Some((searcher, addr)) = self.shared.find(&p, org, id)? {
                return load(&searcher, &p.dir, &self.shared.fields, addr).map(Some);
            }
        }
        Ok(None)
    }

    /// Whether the record `id` of `org` is indexed (exactly: org and id, not only their hash).
    /// `time` (µs) is where to look first, the time of the record being checked: a duplicate
    /// usually carries its original's time. Every partition is looked in before answering no.
    pub fn contains(&self, org: &str, id: &str, time: i64) -> Result<bool, IndexError> {
        for p in self.shared.partitions_near_first(time) {
            if self.shared.find(&p, org, id)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Calls `f` with the `uid_hash` of every searchable record (to rebuild the dedupe set).
    pub fn for_each_uid_hash(&self, mut f: impl FnMut(u64)) -> Result<(), IndexError> {
        for p in self.shared.partitions_newest_first(None, None) {
            let Some(searcher) = self.shared.searcher(&p)? else {
                continue;
            };
            for reader in searcher.segment_readers() {
                let hashes = reader
                    .fast_fields()
                    .u64(col::UID_HASH)
                    .map_err(|e| IndexError::tantivy(&p.dir, "read the uid_hash column", e))?;
                for doc in reader.doc_ids_alive() {
                    if let Some(h) = hashes.first(doc) {
                        f(h);
                    }
                }
            }
        }
        Ok(())
    }

    /// The partitions, oldest first, with their size (opens every partition).
    pub fn partitions(&self) -> Result<Vec<PartitionInfo>, IndexError> {
        let mut out = Vec::new();
        for p in self
            .shared
            .partitions_newest_first(None, None)
            .into_iter()
            .rev()
        {
            let Some(searcher) = self.shared.searcher(&p)? else {
                continue;
            };
            out.push(PartitionInfo {
                name: p.key.name().to_string(),
                start: p.key.start(),
                end: p.key.end(),
                docs: searcher.num_docs(),
                bytes_on_disk: p.bytes_on_disk(),
            });
        }
        Ok(out)
    }

    /// Per org with records in partition `name` (a [`PartitionInfo::name`]): how many and the
    /// oldest one's time. One pass over the partition's `org` and `time` columns. Empty if there
    /// is no such partition.
    pub fn org_spans(&self, name: &str) -> Result<BTreeMap<String, OrgSpan>, IndexError> {
        let Some(p) = self.shared.partition_named(name) else {
            return Ok(BTreeMap::new());
        };
        let Some(searcher) = self.shared.searcher(&p)? else {
            return Ok(BTreeMap::new());
        };
        let spans = searcher
            .search(&AllQuery, &OrgSpanCollector)
            .map_err(|e| IndexError::tantivy(&p.dir, "count records per org", e))?;
        Ok(spans
            .into_iter()
            .map(|(org, s)| {
                (
                    org,
                    OrgSpan {
                        docs: s.docs,
                        oldest: micros_to_time(s.oldest),
                    },
                )
            })
            .collect())
    }

    /// Records, bytes on disk and partitions (opens every partition).
    pub fn stats(&self) -> Result<IndexStats, IndexError> {
        let parts = self.partitions()?;
        Ok(IndexStats {
            docs: parts.iter().map(|p| p.docs).sum(),
            bytes_on_disk: parts.iter().map(|p| p.bytes_on_disk).sum(),
            partitions: parts.len(),
        })
    }

    /// The partition a time belongs to.
    pub fn partition_of(&self, t: chrono::DateTime<chrono::Utc>) -> PartitionKey {
        self.shared.opts.partition.key_for(t)
    }
}

/// The exclusive LSN bound of a walk that sees records through `lsn`.
fn bound_after(lsn: u64) -> u64 {
    lsn.saturating_add(1)
}
