//! [`PageCollector`]: the newest-first page of a search (time desc, then id desc), with the exact
//! number of matches or, on a later page of a walk, visiting only what can hold the page.

use super::filter::{DocFilter, FastCol, SegmentFilter, for_each_alive};
use super::time_chunks::TimeChunks;
use super::top_k::TopK;
use crate::index::schema::col;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{StrColumn, TermOrdHit};
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, TantivyError};

/// One entry of a page, in the sort order (time desc, id desc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub time: i64,
    /// The id's ordinal in its segment's id column: ordinals follow the byte order of ids, so
    /// within a segment `(time, ord)` sorts like `(time, id)`.
    pub ord: u64,
    pub doc: DocAddress,
    /// The id, read from the column only where needed: entries of different segments at the
    /// same microsecond (to order them), and the last entry of a page (for the cursor).
    pub id: Option<String>,
}

/// The `want` newest matches strictly older than `after` and, if `count`, the exact number of
/// all matches.
pub(crate) struct PageCollector {
    pub filter: DocFilter,
    /// `(time, id)` of the last entry already returned: only entries strictly older are taken.
    pub after: Option<(i64, String)>,
    pub want: usize,
    /// Count every match. Without it, segments that cannot hold an entry of the page (all newer
    /// than `after`, or outside the filter's range) are not visited at all, and `count` is 0.
    pub count: bool,
    /// Without `count`: the time ranges of runs of documents, to visit only the runs that can
    /// hold the page (see [`TimeChunks`]).
    pub chunks: Option<Arc<TimeChunks>>,
    /// Without `count`: entries older than this cannot be on the page, because one segment
    /// already holds `want` entries at least this new. Raised as segments are collected.
    pub older_than_page: AtomicI64,
}

impl PageCollector {
    pub fn new(
        filter: DocFilter,
        after: Option<(i64, String)>,
        want: usize,
        count: bool,
        chunks: Option<Arc<TimeChunks>>,
    ) -> PageCollector {
        PageCollector {
            filter,
            after,
            want,
            count,
            chunks,
            older_than_page: AtomicI64::new(i64::MIN),
        }
    }

    /// Collects the page over the segments of `searcher`, newest segments first (so that the
    /// first ones fill the page and the rest are mostly skipped).
    pub fn search(
        &self,
        searcher: &tantivy::Searcher,
        query: &dyn tantivy::query::Query,
    ) -> tantivy::Result<PageFruit> {
        if self.count {
            return searcher.search(query, self);
        }
        let weight = query.weight(tantivy::query::EnableScoring::disabled_from_searcher(
            searcher,
        ))?;
        let mut order = Vec::with_capacity(searcher.segment_readers().len());
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            let time = reader.fast_fields().i64(col::TIME)?;
            let newest = (time.values.num_vals() > 0).then(|| time.max_value());
            order.push((newest, ord as SegmentOrdinal));
        }
        order.sort_unstable_by(|a, b| b.cmp(a));
        let mut fruits = Vec::with_capacity(order.len());
        for (_, ord) in order {
            fruits.push(self.collect_segment(
                weight.as_ref(),
                ord,
                searcher.segment_reader(ord),
            )?);
        }
        self.merge_fruits(fruits)
    }
}

impl PageCollector {
    /// Visits the runs of documents that may hold entries of the page, newest runs first, in
    /// rounds of doubling size, until the runs left are all older than the page's last entry.
    fn collect_runs(
        &self,
        child: &mut PageSegment,
        weight: &dyn Weight,
        reader: &SegmentReader,
        runs: &[(i64, i64)],
        chunk_docs: u32,
        cursor_time: i64,
    ) -> tantivy::Result<()> {
        let (since, until) = (child.filter.since, child.filter.until);
        let floor = since.max(self.older_than_page.load(Relaxed));
        let mut todo: Vec<u32> = (0..runs.len() as u32)
            .filter(|&i| {
                let (min, max) = runs[i as usize];
                min <= cursor_time && max >= floor && min < until
            })
            .collect();
        todo.sort_unstable_by_key(|&i| std::cmp::Reverse(runs[i as usize].1));
        let alive = reader.alive_bitset();
        let max_doc = reader.max_doc();
        let mut next = 0;
        let mut round = 2;
        while next < todo.len() {
            let end = (next + round).min(todo.len());
            let mut batch = todo[next..end].to_vec();
            batch.sort_unstable();
            let mut scorer = weight.scorer(reader, 1.0)?;
            for i in batch {
                let (lo, hi) = (i * chunk_docs, ((i + 1) * chunk_docs).min(max_doc));
                let mut doc = scorer.doc();
                if doc < lo {
                    doc = scorer.seek(lo);
                }
                while doc < hi {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        child.collect(doc, 0.0);
                    }
                    doc = scorer.advance();
                }
            }
            next = end;
            round *= 2;
            let Some(&following) = todo.get(next) else {
                break;
            };
            // The runs left hold nothing newer than this.
            let newest_left = runs[following as usize].1;
            if child.top.kth().is_some_and(|(t, _)| t > newest_left)
                || self.older_than_page.load(Relaxed) > newest_left
            {
                break;
            }
        }
        Ok(())
    }
}

pub(crate) struct PageFruit {
    pub count: u64,
    /// Sorted newest first (ties across segments settled by id), at most `want`.
    pub hits: Vec<Hit>,
    /// The id column of each segment that contributed hits.
    ids: Vec<(SegmentOrdinal, StrColumn)>,
}

impl PageFruit {
    /// The id of `hit` (one of [`PageFruit::hits`]).
    pub fn id(&self, hit: &Hit) -> Result<String, String> {
        if let Some(id) = &hit.id {
            return Ok(id.clone());
        }
        let (_, column) = self
            .ids
            .iter()
            .find(|(s, _)| *s == hit.doc.segment_ord)
            .ok_or("a hit of an unknown segment")?;
        let mut id = String::new();
        match column.ord_to_str(hit.ord, &mut id) {
            Ok(true) => Ok(id),
            Ok(false) => Err("an id ordinal out of range".into()),
            Err(e) => Err(format!("reading the id column: {e}")),
        }
    }
}

pub(crate) struct PageSegment {
    segment: SegmentOrdinal,
    filter: SegmentFilter,
    ids: Option<(StrColumn, FastCol<u64>)>,
    /// The cursor's time, and the first id ordinal not older than the cursor's id: entries at
    /// the cursor's very microsecond are taken only below it.
    after: Option<(i64, u64)>,
    count: u64,
    top: TopK<(i64, u64)>,
}

impl PageSegment {
    /// Whether no document of the segment can be on the page.
    fn cannot_hold_page(&self) -> bool {
        let Some((min, max)) = self.filter.time.range() else {
            return true;
        };
        self.ids.is_none()
            || self.top.k == 0
            || max < self.filter.since
            || min >= self.filter.until
            || self.after.is_some_and(|(t, _)| min > t)
            || self
                .filter
                .lsn_min
                .is_some_and(|l| l >= self.filter.lsn_below)
    }
}

impl SegmentCollector for PageSegment {
    type Fruit = PageFruit;

    #[inline]
    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(t) = self.filter.accept(doc) else {
            return;
        };
        self.count += 1;
        let Some((_, ords)) = &self.ids else {
            return;
        };
        if let Some((after_t, below_ord)) = self.after
            && t >= after_t
        {
            if t > after_t {
                return;
            }
            let ord = ords.get(doc).unwrap_or(u64::MAX);
            if ord >= below_ord {
                return;
            }
            self.top.push((t, ord), doc);
            return;
        }
        let ord = ords.get(doc).unwrap_or(0);
        self.top.push((t, ord), doc);
    }

    fn harvest(self) -> PageFruit {
        let segment = self.segment;
        let hits: Vec<Hit> = self
            .top
            .into_sorted()
            .into_iter()
            .map(|((time, ord), doc)| Hit {
                time,
                ord,
                doc: DocAddress::new(segment, doc),
                id: None,
            })
            .collect();
        let ids = match self.ids {
            Some((column, _)) if !hits.is_empty() => vec![(segment, column)],
            _ => Vec::new(),
        };
        PageFruit {
            count: self.count,
            hits,
            ids,
        }
    }
}

/// Newest first: time desc, then id desc. Both ids must be resolved.
pub(crate) fn newest_first(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id))
}

impl Collector for PageCollector {
    type Fruit = PageFruit;
    type Child = PageSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageSegment> {
        let ids = reader.fast_fields().str(col::ID)?.map(|c| {
            let ords = FastCol::new(c.ords().clone());
            (c, ords)
        });
        // Until the segment is known to be visited, no entry is at the cursor's microsecond.
        let after = self.after.as_ref().map(|(t, _)| (*t, 0));
        Ok(PageSegment {
            segment,
            filter: SegmentFilter::new(&self.filter, reader)?,
            ids,
            after,
            count: 0,
            top: TopK::new(self.want),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageFruit> {
        let mut child = self.for_segment(segment, reader)?;
        let older_than_page = self.older_than_page.load(Relaxed);
        if child.cannot_hold_page()
            || (!self.count
                && child
                    .filter
                    .time
                    .range()
                    .is_some_and(|(_, max)| max < older_than_page))
        {
            if self.count {
                child.count = if child.filter.is_trivial() {
                    u64::from(weight.count(reader)?)
                } else {
                    let mut count = 0;
                    for_each_alive(weight, reader, |doc| {
                        if child.filter.accept(doc).is_some() {
                            count += 1;
                        }
                    })?;
                    count
                };
            }
            return Ok(child.harvest());
        }
        // Entries at the cursor's very microsecond are taken below the cursor's id: find where
        // it would be in this segment's ids (a dictionary lookup, so only where it may matter).
        if let (Some((t, id)), Some((column, _)), Some((min, max))) =
            (&self.after, &child.ids, child.filter.time.range())
            && (min..=max).contains(t)
        {
            let below = match column.dictionary().term_ord_or_next(id.as_bytes())? {
                TermOrdHit::Exact(ord) | TermOrdHit::Next(ord) => ord,
            };
            child.after = Some((*t, below));
        }
        let chunked = match (&self.chunks, &self.after) {
            (Some(chunks), Some((t, _))) if !self.count => chunks
                .of(reader, &child.filter.time)
                .map(|runs| (runs, chunks.chunk_docs(), *t)),
            _ => None,
        };
        match chunked {
            Some((runs, chunk_docs, cursor_time)) => {
                self.collect_runs(&mut child, weight, reader, &runs, chunk_docs, cursor_time)?
            }
            None => for_each_alive(weight, reader, |doc| child.collect(doc, 0.0))?,
        }
        let fruit = child.harvest();
        if !self.count
            && fruit.hits.len() >= self.want
            && let Some(last) = fruit.hits.last()
        {
            self.older_than_page.fetch_max(last.time, Relaxed);
        }
        Ok(fruit)
    }

    fn merge_fruits(&self, fruits: Vec<PageFruit>) -> tantivy::Result<PageFruit> {
        let mut count = 0;
        let mut hits = Vec::new();
        let mut ids = Vec::new();
        for fruit in fruits {
            count += fruit.count;
            hits.extend(fruit.hits);
            ids.extend(fruit.ids);
        }
        let mut fruit = PageFruit { count, hits, ids };
        fruit
            .sort_and_cut(self.want)
            .map_err(TantivyError::InternalError)?;
        Ok(fruit)
    }
}

impl PageFruit {
    /// Sorts the hits newest first and keeps `want`. Hits of one segment compare by id ordinal;
    /// runs of equal time that span segments (rare) read their ids.
    pub fn sort_and_cut(&mut self, want: usize) -> Result<(), String> {
        self.hits.sort_unstable_by(|a, b| {
            b.time
                .cmp(&a.time)
                .then_with(|| a.doc.segment_ord.cmp(&b.doc.segment_ord))
                .then_with(|| b.ord.cmp(&a.ord))
        });
        let mut start = 0;
        while start < self.hits.len().min(want) {
            let time = self.hits[start].time;
            let mut end = start + 1;
            while end < self.hits.len() && self.hits[end].time == time {
                end += 1;
            }
            let segment = self.hits[start].doc.segment_ord;
            if self.hits[start..end]
                .iter()
                .any(|h| h.doc.segment_ord != segment)
            {
                for i in start..end {
                    let id = self.id(&self.hits[i])?;
                    self.hits[i].id = Some(id);
                }
                self.hits[start..end].sort_unstable_by(newest_first);
            }
            start = end;
        }
        self.hits.truncate(want);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::collect::test_index::{Rec, hour, searcher};
    use tantivy::query::AllQuery;

    /// The ids of a page, and the count.
    fn page(s: &tantivy::Searcher, c: &PageCollector) -> (Vec<String>, u64) {
        let fruit = c.search(s, &AllQuery).unwrap();
        let ids = fruit.hits.iter().map(|h| fruit.id(h).unwrap()).collect();
        (ids, fruit.count)
    }

    #[test]
    fn newest_first_by_time_then_id_across_segments_and_after_a_cursor() {
        let ids = ["a", "b", "c", "d", "e", "f"];
        let rec = |i: usize, time| {
            (
                i as u64 + 1,
                Rec {
                    id: ids[i],
                    time,
                    ..Rec::default()
                },
            )
        };
        // "b", "c" and "e" share a microsecond, in two segments.
        let s = searcher(&[
            vec![rec(0, hour(0)), rec(1, hour(5)), rec(3, hour(7))],
            vec![rec(2, hour(5)), rec(4, hour(5)), rec(5, hour(1))],
        ]);
        let all = PageCollector::new(DocFilter::default(), None, 10, true, None);
        assert_eq!(
            page(&s, &all),
            (
                vec!["d", "e", "c", "b", "f", "a"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                6
            )
        );
        // A page of two, then the page after "c" (at hour 5): "b" shares its time, "f" follows.
        let first = PageCollector::new(DocFilter::default(), None, 2, true, None);
        assert_eq!(page(&s, &first).0, ["d", "e"]);
        let chunks = Arc::new(TimeChunks::new(1));
        let after = Some((hour(5), "c".to_string()));
        let next = PageCollector::new(DocFilter::default(), after, 2, false, Some(chunks));
        assert_eq!(page(&s, &next).0, ["b", "f"]);
        // The snapshot and the range filter entries, and the count.
        let filter = DocFilter {
            since: Some(hour(1)),
            until: None,
            lsn_below: Some(5),
        };
        let c = PageCollector::new(filter, None, 10, true, None);
        assert_eq!(page(&s, &c), (vec!["d".into(), "c".into(), "b".into()], 3));
    }
}
