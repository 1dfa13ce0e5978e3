//! [`AuditIndex`]: the read side shared by every request (search, facets, get, contains), and
//! opening the index directory.

use super::collect::{
    DocFilter, FacetCache, FacetCollector, FacetFruit, FilteredCount, HOUR_MICROS,
    OrgSpanCollector, PageCollector, PageFruit, TimeChunks,
};
use super::cursor::{CarriedCount, Cursor};
use super::error::IndexError;
use super::indexer::Indexer;
use super::partition::OpenPartition;
use super::partition::{Partition, PartitionKey, PartitionScheme, micros_to_time};
use super::query::{Plan, SearchQuery};
use super::scan::stored_bytes;
use super::schema::{Fields, UidForm, build_schema, col};
use super::state::{IndexState, read_state};
use crate::uid::{uid, uid_hash};
use codestax_common::AuditRecord;
use codestax_common::api::{
    FacetCount, FacetResponse, Histogram, HistogramBucket, HistogramInterval,
};
use codestax_config::{TANTIVY_MAX_WRITER_MEMORY_BYTES, TANTIVY_MIN_WRITER_MEMORY_BYTES};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tantivy::collector::DocSetCollector;
use tantivy::query::{AllQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Schema, Value};
use tantivy::store::StoreReader;
use tantivy::{DocAddress, DocId, Searcher, SegmentOrdinal, SegmentReader, TantivyDocument, Term};

/// tantivy refuses writer threads with less memory than this.
pub(crate) const MIN_MEMORY_PER_THREAD: usize = TANTIVY_MIN_WRITER_MEMORY_BYTES;
/// Largest page a search returns; larger limits are lowered to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// A facet query over a range this long or shorter gets hour buckets, else day buckets.
const HOURLY_MAX_RANGE_MICROS: i64 = 3 * 24 * HOUR_MICROS;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;
/// Memory the facet counts of whole segments may take (an entry is a few KiB: the values of one
/// org's records in one segment).
const FACET_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// How long, in record time and in wall-clock time, a cursor's carried count may be relied on
/// (see [`AuditIndex::search_with`]): a later page counts at most this much of the oldest matches.
const CARRY_MICROS: i64 = 10 * 60 * 1_000_000;

/// How the index is laid out and how much memory and how many threads writing it may take.
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
    /// used (records mostly arrive for the current week, so this rarely happens).
    pub max_open_writers: usize,
    /// How records are split into partitions; fixed for the life of an index directory.
    pub partition: PartitionScheme,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            writer_memory_bytes: 64 * 1024 * 1024,
            writer_threads: 2,
            merge_threads: 2,
            max_open_writers: 2,
            partition: PartitionScheme::Week,
        }
    }
}

impl IndexOptions {
    fn validate(&self) -> Result<(), IndexError> {
        if !(1..=8).contains(&self.writer_threads) {
            return Err(IndexError::Options(format!(
                "writer_threads must be 1 to 8, got {}",
                self.writer_threads
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
        Ok(())
    }
}

/// One page of a search, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage<E = AuditRecord> {
    pub entries: Vec<E>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Exact number of matches in the walk's snapshot, the same on every page of a walk.
    pub total: u64,
}

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
    /// Directory name, and the name [`Indexer::delete_partition`] takes.
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

/// State shared by [`AuditIndex`] handles and the [`Indexer`].
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub opts: IndexOptions,
    pub schema: Schema,
    pub fields: Fields,
    /// Partitions by start time.
    pub partitions: RwLock<BTreeMap<i64, Arc<Partition>>>,
    pub marks: RwLock<Marks>,
    /// Facet counts of whole segments (see [`FacetCache`]).
    pub facet_cache: Arc<FacetCache>,
    /// Time ranges of runs of documents per segment, for later pages of walks.
    pub time_chunks: Arc<TimeChunks>,
}

/// How far the index is, as last committed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Marks {
    /// Persisted: every record up to this LSN is committed.
    pub indexed_through: Option<u64>,
    /// Every record searchable now that a new cursor walk includes: up to this LSN.
    pub snapshot_through: Option<u64>,
}

impl Inner {
    /// Partitions that may hold records of `[since, until)`, newest first.
    pub fn partitions_newest_first(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Vec<Arc<Partition>> {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .rev()
            .filter(|p| p.key.overlaps(since, until))
            .cloned()
            .collect()
    }

    /// A searcher of a partition; `None` if it was deleted meanwhile.
    pub(super) fn searcher(&self, p: &Partition) -> Result<Option<Searcher>, IndexError> {
        Ok(self.opened(p)?.map(|open| open.reader.searcher()))
    }

    /// A partition, opened; `None` if it was deleted meanwhile.
    fn opened(&self, p: &Partition) -> Result<Option<Arc<OpenPartition>>, IndexError> {
        match p.open() {
            Ok(open) => Ok(Some(open)),
            Err(e) => {
                let live = self
                    .partitions
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&p.key.start);
                if live { Err(e) } else { Ok(None) }
            }
        }
    }

    /// The searchable record (org, id) in partition `p` and the searcher that found it; `None` if
    /// the partition does not hold it (or was deleted meanwhile).
    pub(super) fn find(
        &self,
        p: &Partition,
        org: &str,
        id: &str,
    ) -> Result<Option<(Searcher, DocAddress)>, IndexError> {
        let Some(open) = self.opened(p)? else {
            return Ok(None);
        };
        let searcher = open.reader.searcher();
        let term = match open.uid_form {
            UidForm::Text => Term::from_field_text(self.fields.uid, &uid(org, id)),
            UidForm::Hash => Term::from_field_u64(self.fields.uid_hash, uid_hash(org, id)),
        };
        let hits = searcher
            .search(
                &TermQuery::new(term, IndexRecordOption::Basic),
                &DocSetCollector,
            )
            .map_err(|e| IndexError::tantivy(&p.dir, "look up a record by id", e))?;
        for addr in hits {
            let reader = searcher.segment_reader(addr.segment_ord);
            if open.uid_form == UidForm::Text || is_record(reader, addr.doc_id, org, id, &p.dir)? {
                return Ok(Some((searcher, addr)));
            }
        }
        Ok(None)
    }

    /// The highest LSN in any committed partition (opens every partition).
    fn max_lsn(&self) -> Result<Option<u64>, IndexError> {
        let mut max = None;
        for p in self.partitions_newest_first(None, None) {
            let Some(searcher) = self.searcher(&p)? else {
                continue;
            };
            for reader in searcher.segment_readers() {
                let lsn = reader
                    .fast_fields()
                    .u64(col::LSN)
                    .map_err(|e| IndexError::tantivy(&p.dir, "read the lsn column", e))?;
                if lsn.values.num_vals() > 0 {
                    max = max.max(Some(lsn.max_value()));
                }
            }
        }
        Ok(max)
    }
}

/// The audit index: a cheap, cloneable, thread-safe read handle. Its one writer is the
/// [`Indexer`] returned with it by [`AuditIndex::open`].
#[derive(Clone)]
pub struct AuditIndex {
    pub(super) inner: Arc<Inner>,
}

impl AuditIndex {
    /// Opens (or creates) the index in `dir`. Partitions are found by their directory names and
    /// opened when a query first needs them. Refuses a directory written with another partition
    /// scheme. At most one process may open a directory.
    pub fn open(dir: &Path, opts: IndexOptions) -> Result<(AuditIndex, Indexer), IndexError> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let found = read_state(dir)?;
        let state = found
            .clone()
            .unwrap_or_else(|| IndexState::new(opts.partition));
        if state.scheme != opts.partition {
            return Err(IndexError::Options(format!(
                "{} holds {} partitions, not {} ones",
                dir.display(),
                state.scheme.as_str(),
                opts.partition.as_str()
            )));
        }
        let (schema, fields) = build_schema();
        let mut partitions = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| IndexError::io(dir, e))? {
            let entry = entry.map_err(|e| IndexError::io(dir, e))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                // A partition whose creation did not finish: it never received a commit.
                std::fs::remove_dir_all(&path).map_err(|e| IndexError::io(&path, e))?;
                continue;
            }
            match opts.partition.parse_name(&name) {
                Some(key) => {
                    partitions.insert(key.start, Arc::new(Partition::existing(key, path)));
                }
                None => {
                    tracing::warn!(path = %path.display(), "ignoring a directory that is not a partition")
                }
            }
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            opts,
            schema,
            fields,
            partitions: RwLock::new(partitions),
            marks: RwLock::new(Marks {
                indexed_through: state.indexed_through,
                snapshot_through: state.indexed_through,
            }),
            facet_cache: Arc::new(FacetCache::new(FACET_CACHE_BYTES)),
            time_chunks: Arc::default(),
        });
        let mut replay_through = state.indexed_through.max(state.pending_through);
        if found.is_none() && !inner.partitions_newest_first(None, None).is_empty() {
            // The state file is gone but records are not: what the log still holds is unknown,
            // so report nothing indexed (the caller replays all) and make those re-adds replace.
            let max = inner.max_lsn()?;
            tracing::warn!(dir = %dir.display(), max_lsn = ?max, "index state file missing; re-adds up to the highest indexed LSN will replace");
            replay_through = max;
            inner
                .marks
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot_through = max;
        }
        let index = AuditIndex {
            inner: inner.clone(),
        };
        let indexer = Indexer::new(inner, state, replay_through);
        Ok((index, indexer))
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Every record of the write-ahead log up to this LSN is committed and searchable; replay
    /// from the next one. `None`: replay from the start.
    pub fn indexed_through(&self) -> Option<u64> {
        self.inner
            .marks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .indexed_through
    }

    /// The exclusive LSN bound of a walk starting now.
    pub(super) fn snapshot_bound(&self) -> u64 {
        self.inner
            .marks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot_through
            .map_or(0, |l| l.saturating_add(1))
    }

    /// One page of `org`'s records matching `q`, newest first (time desc, then id desc).
    ///
    /// `limit` is clamped to 1..=[`MAX_PAGE_SIZE`]. Without a cursor, the walk's snapshot is fixed
    /// to the records committed now; `cursor` continues a walk: records committed since its first
    /// page are left out, so pages neither skip nor repeat and `total` does not change (but for
    /// records leaving through the retention floor, see [`SearchQuery::floor`]).
    pub fn search(
        &self,
        org: &str,
        q: &SearchQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<SearchPage, IndexError> {
        self.search_with(org, q, limit, cursor, |dir, bytes| {
            serde_json::from_slice(bytes).map_err(|e| corrupt(dir, e))
        })
    }

    /// [`AuditIndex::search`] with each entry as its stored canonical JSON, not parsed: what the
    /// API returns (the same values; object keys in byte order).
    pub fn search_raw(
        &self,
        org: &str,
        q: &SearchQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<SearchPage<Box<RawValue>>, IndexError> {
        self.search_with(org, q, limit, cursor, |dir, bytes| {
            let text = std::str::from_utf8(bytes).map_err(|e| corrupt(dir, e))?;
            RawValue::from_string(text.to_string()).map_err(|e| corrupt(dir, e))
        })
    }

    /// The search, with `decode` turning a stored record into an entry.
    ///
    /// The first page counts every match. Its cursor carries that count, split at an anchor
    /// [`CARRY_MICROS`] after the lower time bound (`since` or the retention floor): the matches
    /// at or after the anchor cannot change during the walk (the snapshot keeps new records out,
    /// and retention deletes only below the floor), so a later page counts only the matches
    /// between its own lower bound and the anchor (records expire from the bottom as the floor
    /// moves). It counts everything again, and carries a new anchor, when its bound has passed
    /// the anchor or the count is older than [`CARRY_MICROS`] (after that long, records above
    /// the anchor may have been deleted).
    fn search_with<E>(
        &self,
        org: &str,
        q: &SearchQuery,
        limit: usize,
        cursor: Option<&str>,
        decode: impl Fn(&Path, &[u8]) -> Result<E, IndexError>,
    ) -> Result<SearchPage<E>, IndexError> {
        let started = Instant::now();
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let plan = Plan::new(&self.inner.fields, org, q)?;
        let now = chrono::Utc::now().timestamp_micros();
        let (snapshot, after, carried) = match cursor {
            Some(c) => {
                let c = Cursor::decode(c, &plan.scope)?;
                (c.snapshot, Some((c.time, c.id)), c.count)
            }
            None => (self.snapshot_bound(), None, None),
        };
        let filter = DocFilter {
            since: plan.since,
            until: plan.until,
            lsn_below: Some(snapshot),
        };
        let carried = match carried {
            Some(c) => self
                .carried_total(&plan, snapshot, &c, now)?
                .map(|total| (c, total)),
            None => None,
        };
        let count = carried.is_none();
        // One more than the page, to know whether there is a next page.
        let want = limit + 1;
        let mut total = 0;
        let mut got = 0;
        let mut pages: Vec<(PageFruit, Searcher, PathBuf)> = Vec::new();
        let partitions = self.inner.partitions_newest_first(plan.since, plan.until);
        for p in &partitions {
            let may_hold_page = got < want && after.as_ref().is_none_or(|(t, _)| p.key.start <= *t);
            if !may_hold_page && !count {
                if got >= want {
                    break;
                }
                // Wholly newer than the cursor.
                continue;
            }
            let Some(searcher) = self.inner.searcher(p)? else {
                continue;
            };
            if may_hold_page {
                let collector = PageCollector::new(
                    filter,
                    after.clone(),
                    want - got,
                    count,
                    Some(self.inner.time_chunks.clone()),
                );
                let fruit = collector
                    .search(&searcher, plan.query.as_ref())
                    .map_err(|e| IndexError::tantivy(&p.dir, "search", e))?;
                total += fruit.count;
                got += fruit.hits.len();
                pages.push((fruit, searcher, p.dir.clone()));
            } else {
                // Partitions are time-disjoint: once the page is full, older ones only count.
                total += searcher
                    .search(plan.query.as_ref(), &FilteredCount(filter))
                    .map_err(|e| IndexError::tantivy(&p.dir, "count", e))?;
            }
        }
        let total = carried.map_or(total, |(_, t)| t);
        let more = got > limit;
        // Partitions were visited newest first and are time-disjoint: their hits follow on.
        let mut entries = Vec::with_capacity(got.min(limit));
        let mut last = None;
        'pages: for (fruit, searcher, dir) in &pages {
            let mut docs = StoredDocs::new(searcher, dir, &self.inner.fields);
            for hit in &fruit.hits {
                if entries.len() == limit {
                    break 'pages;
                }
                entries.push(docs.read(hit.doc, &decode)?);
                last = Some((fruit, hit, dir));
            }
        }
        let next_cursor = match last {
            Some((fruit, hit, dir)) if more => {
                let id = fruit.id(hit).map_err(|message| IndexError::Corrupt {
                    path: dir.clone(),
                    message,
                })?;
                let count = match carried {
                    Some((c, _)) => c,
                    None => self.carry(&plan, snapshot, total, now)?,
                };
                Some(
                    Cursor {
                        snapshot,
                        time: hit.time,
                        id,
                        count: Some(count),
                    }
                    .encode(&plan.scope),
                )
            }
            _ => None,
        };
        tracing::debug!(
            org,
            total,
            counted = count,
            returned = entries.len(),
            partitions = partitions.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "search"
        );
        Ok(SearchPage {
            entries,
            next_cursor,
            total,
        })
    }

    /// The matches of `plan` in the snapshot with a time in `[since, until)` (and the plan's own
    /// range).
    fn count_between(
        &self,
        plan: &Plan,
        snapshot: u64,
        since: i64,
        until: i64,
    ) -> Result<u64, IndexError> {
        let since = plan.since.map_or(since, |s| s.max(since));
        let until = plan.until.map_or(until, |u| u.min(until));
        if since >= until {
            return Ok(0);
        }
        let filter = FilteredCount(DocFilter {
            since: Some(since),
            until: Some(until),
            lsn_below: Some(snapshot),
        });
        let mut n = 0;
        for p in self.inner.partitions_newest_first(Some(since), Some(until)) {
            let Some(searcher) = self.inner.searcher(&p)? else {
                continue;
            };
            n += searcher
                .search(plan.query.as_ref(), &filter)
                .map_err(|e| IndexError::tantivy(&p.dir, "count", e))?;
        }
        Ok(n)
    }

    /// What a cursor carries of `total`, counted now over the whole range.
    fn carry(
        &self,
        plan: &Plan,
        snapshot: u64,
        total: u64,
        now: i64,
    ) -> Result<CarriedCount, IndexError> {
        let anchor = plan
            .since
            .map_or(i64::MIN, |s| s.saturating_add(CARRY_MICROS));
        let below = match plan.since {
            Some(since) => self.count_between(plan, snapshot, since, anchor)?,
            None => 0,
        };
        Ok(CarriedCount {
            at_or_after_anchor: total.saturating_sub(below),
            anchor,
            counted_at: now,
        })
    }

    /// The walk's total from a cursor's carried count, if it may still be relied on (see
    /// [`AuditIndex::search_with`]).
    fn carried_total(
        &self,
        plan: &Plan,
        snapshot: u64,
        c: &CarriedCount,
        now: i64,
    ) -> Result<Option<u64>, IndexError> {
        let age = now.saturating_sub(c.counted_at);
        let since = plan.since.unwrap_or(i64::MIN);
        if !(0..=CARRY_MICROS).contains(&age) || since > c.anchor {
            return Ok(None);
        }
        let below = if since == c.anchor {
            0
        } else {
            self.count_between(plan, snapshot, since, c.anchor)?
        };
        Ok(Some(c.at_or_after_anchor.saturating_add(below)))
    }

    /// For the records of `org` matching `q`, in the snapshot a new search sees: the total, the
    /// `top_n` most frequent values of category, action, user (actor email, else id),
    /// repository and outcome (count desc, then value), and a histogram over time in UTC hour
    /// buckets when the range is at most 3 days, else day buckets. The range is `[since, until)`; an open end is closed by the earliest
    /// or latest match. Buckets run from the first to the last non-empty one, empty ones included.
    pub fn facets(
        &self,
        org: &str,
        q: &SearchQuery,
        top_n: usize,
    ) -> Result<FacetResponse, IndexError> {
        let started = Instant::now();
        let plan = Plan::new(&self.inner.fields, org, q)?;
        // The same snapshot as a first search page: a partition is reloaded (its records visible)
        // a moment before the snapshot mark moves past them, and counts must never run ahead of
        // what a search returns.
        let collector = FacetCollector {
            filter: DocFilter {
                since: plan.since,
                until: plan.until,
                lsn_below: Some(self.snapshot_bound()),
            },
            cache: Some((self.inner.facet_cache.clone(), plan.filter_key.clone())),
        };
        let (hits, misses) = self.inner.facet_cache.counters();
        let mut all = FacetFruit::default();
        for p in self.inner.partitions_newest_first(plan.since, plan.until) {
            let Some(searcher) = self.inner.searcher(&p)? else {
                continue;
            };
            all.merge(
                &searcher
                    .search(plan.query.as_ref(), &collector)
                    .map_err(|e| IndexError::tantivy(&p.dir, "compute facets", e))?,
            );
        }
        let [categories, actions, users, repositories, outcomes] =
            std::mem::take(&mut all.values).map(|values| top(values, top_n));
        // The client's own range picks the buckets' width; the retention floor only filters.
        let histogram = histogram(&all, q.since.map(|t| t.timestamp_micros()), plan.until);
        let (hits_after, misses_after) = self.inner.facet_cache.counters();
        tracing::debug!(
            org,
            total = all.count,
            cached_segments = hits_after - hits,
            counted_segments = misses_after - misses,
            elapsed_us = started.elapsed().as_micros() as u64,
            "facets"
        );
        Ok(FacetResponse {
            total: all.count,
            categories,
            actions,
            users,
            repositories,
            outcomes,
            histogram,
        })
    }

    /// The record `id` of `org`, if indexed.
    pub fn get(&self, org: &str, id: &str) -> Result<Option<AuditRecord>, IndexError> {
        for p in self.inner.partitions_newest_first(None, None) {
            if let Some((searcher, addr)) = self.inner.find(&p, org, id)? {
                return load(&searcher, &p.dir, &self.inner.fields, addr).map(Some);
            }
        }
        Ok(None)
    }

    /// Whether the record `id` of `org` is indexed (exactly: org and id, not only their hash).
    pub fn contains(&self, org: &str, id: &str) -> Result<bool, IndexError> {
        for p in self.inner.partitions_newest_first(None, None) {
            if self.inner.find(&p, org, id)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Calls `f` with the `uid_hash` of every searchable record (to rebuild the dedupe set).
    pub fn for_each_uid_hash(&self, mut f: impl FnMut(u64)) -> Result<(), IndexError> {
        for p in self.inner.partitions_newest_first(None, None) {
            let Some(searcher) = self.inner.searcher(&p)? else {
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
            .inner
            .partitions_newest_first(None, None)
            .into_iter()
            .rev()
        {
            let Some(searcher) = self.inner.searcher(&p)? else {
                continue;
            };
            out.push(PartitionInfo {
                name: p.key.name().to_string(),
                start: p.key.start(),
                end: p.key.end(),
                docs: searcher.num_docs(),
                bytes_on_disk: dir_size(&p.dir),
            });
        }
        Ok(out)
    }

    /// Per org with records in partition `name` (a [`PartitionInfo::name`]): how many and the
    /// oldest one's time. One pass over the partition's `org` and `time` columns. Empty if there
    /// is no such partition.
    pub fn org_spans(&self, name: &str) -> Result<BTreeMap<String, OrgSpan>, IndexError> {
        let Some(key) = self.inner.opts.partition.parse_name(name) else {
            return Ok(BTreeMap::new());
        };
        let p = self
            .inner
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.start)
            .cloned();
        let Some(p) = p else {
            return Ok(BTreeMap::new());
        };
        let Some(searcher) = self.inner.searcher(&p)? else {
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
        self.inner.opts.partition.key_for(t)
    }
}

/// Reads a stored record.
pub(super) fn load(
    searcher: &Searcher,
    dir: &Path,
    fields: &Fields,
    addr: DocAddress,
) -> Result<AuditRecord, IndexError> {
    load_with(searcher, dir, fields, addr, |dir, bytes| {
        serde_json::from_slice(bytes).map_err(|e| corrupt(dir, e))
    })
}

/// Reads the stored records of one searcher, many at a time.
///
/// tantivy's own document reader copies a bytes value one byte at a time (a quarter of a deep
/// walk's time); this reads a document's serialised bytes from the segment's store and takes
/// the one stored field, `doc`, straight out of them. A document it does not recognise (a future
/// tantivy with another layout) is read the slow way.
pub(super) struct StoredDocs<'a> {
    searcher: &'a Searcher,
    dir: &'a Path,
    fields: &'a Fields,
    stores: HashMap<SegmentOrdinal, StoreReader>,
    pub(super) fast_reads: usize,
}

/// Decompressed doc-store blocks a [`StoredDocs`] keeps per segment: the entries of a page lie
/// in a run of consecutive blocks.
const PAGE_STORE_CACHE_BLOCKS: usize = 4;

impl<'a> StoredDocs<'a> {
    pub(super) fn new(searcher: &'a Searcher, dir: &'a Path, fields: &'a Fields) -> Self {
        StoredDocs {
            searcher,
            dir,
            fields,
            stores: HashMap::new(),
            fast_reads: 0,
        }
    }

    pub(super) fn read<E>(
        &mut self,
        addr: DocAddress,
        decode: impl Fn(&Path, &[u8]) -> Result<E, IndexError>,
    ) -> Result<E, IndexError> {
        let store = match self.stores.entry(addr.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                self.searcher
                    .segment_reader(addr.segment_ord)
                    .get_store_reader(PAGE_STORE_CACHE_BLOCKS)
                    .map_err(|e| IndexError::tantivy(self.dir, "open the doc store", e.into()))?,
            ),
        };
        let raw = store
            .get_document_bytes(addr.doc_id)
            .map_err(|e| IndexError::tantivy(self.dir, "read a stored record", e))?;
        match stored_bytes(&raw, self.fields.doc) {
            Some(bytes) => {
                self.fast_reads += 1;
                decode(self.dir, bytes)
            }
            None => load_with(self.searcher, self.dir, self.fields, addr, decode),
        }
    }
}

/// Reads a stored record's canonical JSON and decodes it with `decode`.
fn load_with<E>(
    searcher: &Searcher,
    dir: &Path,
    fields: &Fields,
    addr: DocAddress,
    decode: impl Fn(&Path, &[u8]) -> Result<E, IndexError>,
) -> Result<E, IndexError> {
    let doc: TantivyDocument = searcher
        .doc(addr)
        .map_err(|e| IndexError::tantivy(dir, "read a stored record", e))?;
    let bytes = doc
        .get_first(fields.doc)
        .and_then(|v| v.as_bytes())
        .ok_or_else(|| IndexError::Corrupt {
            path: dir.to_path_buf(),
            message: "a document has no stored record".into(),
        })?;
    decode(dir, bytes)
}

/// Whether document `doc` of `reader` is the record (org, id), by its `org` and `id` columns: a
/// hit on `uid_hash` alone does not prove it.
fn is_record(
    reader: &SegmentReader,
    doc: DocId,
    org: &str,
    id: &str,
    dir: &Path,
) -> Result<bool, IndexError> {
    let ff = reader.fast_fields();
    let mut value = String::new();
    for (name, want) in [(col::ORG, org), (col::ID, id)] {
        let Some(column) = ff
            .str(name)
            .map_err(|e| IndexError::tantivy(dir, "read a column to check a record's id", e))?
        else {
            return Ok(false);
        };
        let Some(ord) = column.term_ords(doc).next() else {
            return Ok(false);
        };
        value.clear();
        column
            .ord_to_str(ord, &mut value)
            .map_err(|e| IndexError::io(dir, e))?;
        if value != want {
            return Ok(false);
        }
    }
    Ok(true)
}

fn corrupt(dir: &Path, e: impl std::fmt::Display) -> IndexError {
    IndexError::Corrupt {
        path: dir.to_path_buf(),
        message: e.to_string(),
    }
}

/// The `n` most frequent values: count desc, then value asc.
fn top(values: HashMap<String, u64>, n: usize) -> Vec<FacetCount> {
    let mut v: Vec<FacetCount> = values
        .into_iter()
        .map(|(value, count)| FacetCount { value, count })
        .collect();
    v.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    v.truncate(n);
    v
}

fn histogram(all: &FacetFruit, since: Option<i64>, until: Option<i64>) -> Histogram {
    let start = since.or(all.min_time);
    let end = until.or(all.max_time.map(|t| t.saturating_add(1)));
    let interval = match (start, end) {
        (Some(s), Some(e)) if e.saturating_sub(s) <= HOURLY_MAX_RANGE_MICROS => {
            HistogramInterval::Hour
        }
        _ => HistogramInterval::Day,
    };
    let width = match interval {
        HistogramInterval::Hour => HOUR_MICROS,
        HistogramInterval::Day => DAY_MICROS,
    };
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for (&hour, &c) in &all.hours {
        *counts.entry(hour.div_euclid(width) * width).or_default() += c;
    }
    let mut buckets = Vec::new();
    if let (Some(&first), Some(&last)) = (counts.keys().next(), counts.keys().next_back()) {
        let mut b = first;
        while b <= last {
            buckets.push(HistogramBucket {
                start: micros_to_time(b),
                count: counts.get(&b).copied().unwrap_or(0),
            });
            b += width;
        }
    }
    Histogram { interval, buckets }
}

/// Bytes of the files directly in `dir` (a partition holds no subdirectories).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
