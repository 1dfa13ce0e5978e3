//! [`AuditIndex::search`]: one page of newest-first results with an exact total, and the cursor
//! that continues the walk from the same snapshot.

use super::audit_index::AuditIndex;
use super::collect::{DocFilter, FilteredCount, PageCollector, PageFruit};
use super::cursor::{CarriedCount, Cursor};
use super::error::IndexError;
use super::query::{Plan, SearchQuery};
use super::stored::{StoredDocs, corrupt};
use codestax_common::AuditRecord;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tantivy::Searcher;

/// Largest page a search returns; larger limits are lowered to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// How long, in record time and in wall-clock time, a cursor's carried count may be relied on
/// (see [`AuditIndex::search_with`]): a later page counts at most this much of the oldest matches.
const CARRY_MICROS: i64 = 10 * 60 * 1_000_000;

/// One page of a search, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage<E = AuditRecord> {
    pub entries: Vec<E>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Exact number of matches in the walk's snapshot, the same on every page of a walk.
    pub total: u64,
}

impl AuditIndex {
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
        let plan = Plan::new(&self.shared.fields, org, q)?;
        let now = chrono::Utc::now().timestamp_micros();
        let key = self.cursor_key();
        let (snapshot, after, carried) = match cursor {
            Some(c) => {
                let c = Cursor::decode(c, &plan.scope, &key)?;
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
        let partitions = self.shared.partitions_newest_first(plan.since, plan.until);
        for p in &partitions {
            let may_hold_page = got < want && after.as_ref().is_none_or(|(t, _)| p.key.start <= *t);
            if !may_hold_page && !count {
                if got >= want {
                    break;
                }
                // Wholly newer than the cursor.
                continue;
            }
            let Some(searcher) = self.shared.searcher(p)? else {
                continue;
            };
            if may_hold_page {
                let collector = PageCollector::new(
                    filter,
                    after.clone(),
                    want - got,
                    count,
                    Some(self.shared.time_chunks.clone()),
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
            let mut docs = StoredDocs::new(searcher, dir, &self.shared.fields);
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
                    .encode(&plan.scope, &key),
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
        for p in self
            .shared
            .partitions_newest_first(Some(since), Some(until))
        {
            let Some(searcher) = self.shared.searcher(&p)? else {
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
}
