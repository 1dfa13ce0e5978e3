//! Collectors over fast fields: the newest-first page with an exact count, a bounded count, and
//! the facet counts with the time histogram. The time range and the snapshot bound are checked
//! here, per document, only in segments whose column statistics do not already settle them.

use super::schema::col;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Cardinality, Column, ColumnValues, StrColumn, TermOrdHit};
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, DocSet, Score, SegmentOrdinal, SegmentReader, TantivyError};

/// Microseconds in an hour.
pub(crate) const HOUR_MICROS: i64 = 3_600_000_000;

/// What the collectors check per document, beyond the query.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DocFilter {
    /// Inclusive lower bound on `time`.
    pub since: Option<i64>,
    /// Exclusive upper bound on `time`.
    pub until: Option<i64>,
    /// Exclusive upper bound on `lsn`: the snapshot of a cursor walk.
    pub lsn_below: Option<u64>,
}

/// A fast column, read directly when every document has exactly one value.
pub(crate) struct FastCol<T> {
    column: Column<T>,
    full: Option<Arc<dyn ColumnValues<T>>>,
}

impl<T: PartialOrd + Copy + std::fmt::Debug + Send + Sync + 'static> FastCol<T> {
    pub(crate) fn new(column: Column<T>) -> Self {
        let full = (column.get_cardinality() == Cardinality::Full).then(|| column.values.clone());
        FastCol { column, full }
    }

    #[inline]
    pub(crate) fn get(&self, doc: DocId) -> Option<T> {
        match &self.full {
            Some(values) => Some(values.get_val(doc)),
            None => self.column.first(doc),
        }
    }

    /// The column's value range, `None` when it holds no value.
    fn range(&self) -> Option<(T, T)> {
        (self.column.values.num_vals() > 0)
            .then(|| (self.column.min_value(), self.column.max_value()))
    }
}

/// [`DocFilter`] bound to one segment.
pub(crate) struct SegmentFilter {
    time: FastCol<i64>,
    check_time: bool,
    since: i64,
    until: i64,
    lsn: Option<FastCol<u64>>,
    lsn_below: u64,
    /// The smallest LSN in the segment, when a snapshot applies.
    lsn_min: Option<u64>,
}

impl SegmentFilter {
    pub(crate) fn new(
        filter: &DocFilter,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentFilter> {
        let ff = reader.fast_fields();
        let time = FastCol::new(ff.i64(col::TIME)?);
        let since = filter.since.unwrap_or(i64::MIN);
        let until = filter.until.unwrap_or(i64::MAX);
        let check_time = match time.range() {
            Some((min, max)) => !(min >= since && max < until),
            None => true,
        };
        let mut lsn_min = None;
        let lsn = match filter.lsn_below {
            Some(below) => {
                let lsn = FastCol::new(ff.u64(col::LSN)?);
                let range = lsn.range();
                lsn_min = range.map(|(min, _)| min);
                match range {
                    Some((_, max)) if max < below => None,
                    _ => Some(lsn),
                }
            }
            None => None,
        };
        Ok(SegmentFilter {
            time,
            check_time,
            since,
            until,
            lsn,
            lsn_below: filter.lsn_below.unwrap_or(u64::MAX),
            lsn_min,
        })
    }

    /// Nothing to check per document: the query's own count is the answer.
    fn is_trivial(&self) -> bool {
        !self.check_time && self.lsn.is_none()
    }

    /// The smallest and largest time in the segment, `None` when it holds none.
    pub(crate) fn time_range(&self) -> Option<(i64, i64)> {
        self.time.range()
    }

    /// The segment's time column, once filtering is done.
    pub(crate) fn into_time(self) -> FastCol<i64> {
        self.time
    }

    /// The document's time if it passes.
    #[inline]
    pub(crate) fn accept(&self, doc: DocId) -> Option<i64> {
        let t = self.time.get(doc)?;
        if self.check_time && (t < self.since || t >= self.until) {
            return None;
        }
        if let Some(lsn) = &self.lsn
            && lsn.get(doc).is_none_or(|l| l >= self.lsn_below)
        {
            return None;
        }
        Some(t)
    }
}

fn for_each_alive(
    weight: &dyn Weight,
    reader: &SegmentReader,
    mut f: impl FnMut(DocId),
) -> tantivy::Result<()> {
    let alive = reader.alive_bitset();
    weight.for_each_no_score(reader, &mut |docs| {
        for &doc in docs {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                f(doc);
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Count

/// Counts the matches that pass a [`DocFilter`]; uses tantivy's own count where the filter is
/// settled by the segment's statistics.
pub(crate) struct FilteredCount(pub DocFilter);

pub(crate) struct CountSegment {
    filter: SegmentFilter,
    count: u64,
}

impl SegmentCollector for CountSegment {
    type Fruit = u64;

    fn collect(&mut self, doc: DocId, _: Score) {
        if self.filter.accept(doc).is_some() {
            self.count += 1;
        }
    }

    fn harvest(self) -> u64 {
        self.count
    }
}

impl Collector for FilteredCount {
    type Fruit = u64;
    type Child = CountSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<CountSegment> {
        Ok(CountSegment {
            filter: SegmentFilter::new(&self.0, reader)?,
            count: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, counts: Vec<u64>) -> tantivy::Result<u64> {
        Ok(counts.into_iter().sum())
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        _: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<u64> {
        let filter = SegmentFilter::new(&self.0, reader)?;
        if filter.is_trivial() {
            return Ok(u64::from(weight.count(reader)?));
        }
        let mut count = 0;
        for_each_alive(weight, reader, |doc| {
            if filter.accept(doc).is_some() {
                count += 1;
            }
        })?;
        Ok(count)
    }
}

// ---------------------------------------------------------------------------------------------
// Page

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
                let (lo, hi) = (i * CHUNK_DOCS, ((i + 1) * CHUNK_DOCS).min(max_doc));
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

/// The smallest and largest time of each run of a segment.
type Runs = Arc<[(i64, i64)]>;

/// Documents per run in [`TimeChunks`] (in tests, small: test segments are small).
const CHUNK_DOCS: u32 = if cfg!(test) { 16 } else { 1024 };
/// Segments whose runs [`TimeChunks`] keeps; beyond, it starts afresh.
const MAX_CHUNKED_SEGMENTS: usize = 10_000;

/// Per segment, the smallest and largest `time` of each run of [`CHUNK_DOCS`] documents (in
/// document order, deleted ones included). Records arrive roughly in time order, so a run spans
/// a short time and a later page of a walk visits only the runs around its cursor instead of
/// every match of the partition. Kept by segment id: a segment never changes.
#[derive(Default)]
pub(crate) struct TimeChunks {
    segments: std::sync::Mutex<HashMap<tantivy::index::SegmentId, Runs>>,
}

impl TimeChunks {
    /// The runs of a segment whose `time` column holds one value per document.
    fn of(&self, reader: &SegmentReader, time: &FastCol<i64>) -> Option<Runs> {
        let values = time.full.as_ref()?;
        let id = reader.segment_id();
        if let Some(runs) = self
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(runs.clone());
        }
        let max_doc = reader.max_doc();
        let mut buf = vec![0i64; CHUNK_DOCS as usize];
        let mut runs = Vec::with_capacity(max_doc.div_ceil(CHUNK_DOCS) as usize);
        let mut start = 0;
        while start < max_doc {
            let len = CHUNK_DOCS.min(max_doc - start) as usize;
            values.get_range(u64::from(start), &mut buf[..len]);
            let (min, max) = buf[..len]
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            runs.push((min, max));
            start += CHUNK_DOCS;
        }
        let runs: Runs = runs.into();
        let mut segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        if segments.len() >= MAX_CHUNKED_SEGMENTS {
            segments.clear();
        }
        segments.insert(id, runs.clone());
        Some(runs)
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

/// Keeps the `k` largest keys: a buffer of `2k` pruned with a linear selection, so each document
/// costs O(1) amortised and those below the running threshold are rejected at once.
struct TopK<K: Ord + Copy> {
    k: usize,
    buf: Vec<(K, DocId)>,
    threshold: Option<K>,
}

impl<K: Ord + Copy> TopK<K> {
    fn new(k: usize) -> Self {
        TopK {
            k,
            buf: Vec::new(),
            threshold: None,
        }
    }

    #[inline]
    fn push(&mut self, key: K, doc: DocId) {
        if self.k == 0 || self.threshold.is_some_and(|t| key <= t) {
            return;
        }
        self.buf.push((key, doc));
        if self.buf.len() >= 2 * self.k {
            self.prune();
        }
    }

    fn prune(&mut self) {
        let k = self.k;
        self.buf.select_nth_unstable_by(k - 1, |a, b| b.0.cmp(&a.0));
        self.buf.truncate(k);
        self.threshold = Some(self.buf[k - 1].0);
    }

    /// The `k`-th largest key so far, once there are `k`.
    fn kth(&mut self) -> Option<K> {
        if self.k > 0 && self.buf.len() >= self.k {
            self.prune();
        }
        self.threshold
    }

    fn into_sorted(mut self) -> Vec<(K, DocId)> {
        if self.buf.len() > self.k {
            self.prune();
        }
        self.buf.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        self.buf
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
            (Some(chunks), Some((t, _))) if !self.count => {
                chunks.of(reader, &child.filter.time).map(|runs| (runs, *t))
            }
            _ => None,
        };
        match chunked {
            Some((runs, cursor_time)) => {
                self.collect_runs(&mut child, weight, reader, &runs, cursor_time)?
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

// ---------------------------------------------------------------------------------------------
// Facets

/// The fast fields counted by [`FacetCollector`], in the order of [`FacetFruit::values`].
pub(crate) const FACET_COLUMNS: [&str; 5] = [
    col::CATEGORY,
    col::ACTION,
    col::USER,
    col::REPOSITORY,
    col::OUTCOME,
];

/// Counts per value of each of [`FACET_COLUMNS`] and per UTC hour.
pub(crate) struct FacetCollector {
    pub filter: DocFilter,
    /// Where the counts of whole segments are kept, and the query's key there
    /// ([`super::query::Plan::filter_key`]).
    pub cache: Option<(Arc<FacetCache>, Arc<str>)>,
}

/// The facet counts of whole segments, per query: for a segment wholly inside a query's time
/// range and wholly below its snapshot, the counts depend only on the segment's documents, its
/// deletions and the query's other filters, and a segment's documents never change. So they are
/// kept by segment id, deletion state and query; a merge makes a new segment (a new key), a
/// deletion a new deletion state, and entries nobody asks for are evicted, least recently used
/// first, beyond a memory budget.
pub(crate) struct FacetCache {
    state: std::sync::Mutex<CacheState>,
    budget_bytes: usize,
    /// Segments with fewer documents are not kept (cheap to count, and short-lived).
    min_docs: u32,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FacetKey {
    segment: tantivy::index::SegmentId,
    delete_opstamp: Option<u64>,
    deleted: u32,
    query: Arc<str>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<FacetKey, CacheEntry>,
    bytes: usize,
    tick: u64,
}

struct CacheEntry {
    fruit: Arc<FacetFruit>,
    bytes: usize,
    used: u64,
}

/// Segments smaller than this are counted every time (in tests, every segment is kept, so that
/// the brute-force comparisons go through the cache).
const FACET_CACHE_MIN_DOCS: u32 = if cfg!(test) { 0 } else { 2048 };

impl FacetCache {
    pub fn new(budget_bytes: usize) -> FacetCache {
        FacetCache {
            state: std::sync::Mutex::new(CacheState::default()),
            budget_bytes,
            min_docs: FACET_CACHE_MIN_DOCS,
            hits: 0.into(),
            misses: 0.into(),
        }
    }

    /// Lookups answered from the cache and not, so far.
    pub fn counters(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    fn key(&self, reader: &SegmentReader, query: &Arc<str>) -> Option<FacetKey> {
        (reader.num_docs() >= self.min_docs).then(|| FacetKey {
            segment: reader.segment_id(),
            delete_opstamp: reader.delete_opstamp(),
            deleted: reader.num_deleted_docs(),
            query: query.clone(),
        })
    }

    fn get(&self, key: &FacetKey) -> Option<Arc<FacetFruit>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.tick += 1;
        let tick = state.tick;
        match state.entries.get_mut(key) {
            Some(e) => {
                e.used = tick;
                self.hits.fetch_add(1, Relaxed);
                Some(e.fruit.clone())
            }
            None => {
                self.misses.fetch_add(1, Relaxed);
                None
            }
        }
    }

    fn put(&self, key: FacetKey, fruit: Arc<FacetFruit>) {
        let bytes = fruit.approx_bytes() + key.query.len() + 64;
        if bytes > self.budget_bytes / 4 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.tick += 1;
        let used = state.tick;
        if let Some(old) = state.entries.insert(key, CacheEntry { fruit, bytes, used }) {
            state.bytes -= old.bytes;
        }
        state.bytes += bytes;
        if state.bytes > self.budget_bytes {
            // Down to three quarters of the budget, least recently used first.
            let mut by_use: Vec<(u64, FacetKey)> = state
                .entries
                .iter()
                .map(|(k, e)| (e.used, k.clone()))
                .collect();
            by_use.sort_unstable_by_key(|(used, _)| *used);
            for (_, k) in by_use {
                if state.bytes <= self.budget_bytes / 4 * 3 {
                    break;
                }
                if let Some(e) = state.entries.remove(&k) {
                    state.bytes -= e.bytes;
                }
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }
}

#[derive(Debug, Default)]
pub(crate) struct FacetFruit {
    pub count: u64,
    pub values: [HashMap<String, u64>; 5],
    /// Start of the hour (microseconds) → count.
    pub hours: HashMap<i64, u64>,
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
}

impl FacetFruit {
    pub fn merge(&mut self, other: &FacetFruit) {
        self.count += other.count;
        for (mine, theirs) in self.values.iter_mut().zip(&other.values) {
            for (v, c) in theirs {
                match mine.get_mut(v) {
                    Some(n) => *n += c,
                    None => {
                        mine.insert(v.clone(), *c);
                    }
                }
            }
        }
        for (h, c) in &other.hours {
            *self.hours.entry(*h).or_default() += c;
        }
        self.min_time = min_opt(self.min_time, other.min_time);
        self.max_time = max_opt(self.max_time, other.max_time);
    }

    /// Roughly the memory the fruit holds.
    fn approx_bytes(&self) -> usize {
        let values: usize = self
            .values
            .iter()
            .flat_map(|m| m.keys())
            .map(|k| k.len() + 48)
            .sum();
        values + self.hours.len() * 32 + 160
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Hours a segment's dense histogram may span (a partition is at most a month); beyond, a map.
const MAX_DENSE_HOURS: i64 = 32 * 24;

pub(crate) struct FacetSegment {
    filter: SegmentFilter,
    columns: Vec<Option<(StrColumn, FastCol<u64>)>>,
    counts: Vec<Vec<u64>>,
    base_hour: i64,
    dense_hours: Vec<u64>,
    sparse_hours: HashMap<i64, u64>,
    count: u64,
    min_time: i64,
    max_time: i64,
}

/// Scratch buffers of [`FacetSegment::collect_docs`], reused from block to block.
#[derive(Default)]
struct FacetBlock {
    alive: Vec<DocId>,
    times: Vec<Option<i64>>,
    lsns: Vec<Option<u64>>,
    docs: Vec<DocId>,
    kept_times: Vec<i64>,
    ords: Vec<Option<u64>>,
}

impl FacetSegment {
    /// Counts one kept document's time: the range seen and its hour of the histogram.
    #[inline]
    fn count_time(&mut self, t: i64) {
        self.min_time = self.min_time.min(t);
        self.max_time = self.max_time.max(t);
        let hour = t.div_euclid(HOUR_MICROS);
        match usize::try_from(hour - self.base_hour)
            .ok()
            .and_then(|i| self.dense_hours.get_mut(i))
        {
            Some(c) => *c += 1,
            None => *self.sparse_hours.entry(hour).or_default() += 1,
        }
    }

    /// [`SegmentCollector::collect`] for a block of matching documents (ascending): each
    /// column is read for the whole block at once rather than value by value.
    fn collect_docs(&mut self, docs: &[DocId], b: &mut FacetBlock) {
        let n = docs.len();
        b.times.clear();
        b.times.resize(n, None);
        self.filter.time.column.first_vals(docs, &mut b.times);
        if let Some(lsn) = &self.filter.lsn {
            b.lsns.clear();
            b.lsns.resize(n, None);
            lsn.column.first_vals(docs, &mut b.lsns);
        }
        b.docs.clear();
        b.kept_times.clear();
        let f = &self.filter;
        for (i, (&doc, t)) in docs.iter().zip(&b.times).enumerate() {
            let Some(t) = *t else { continue };
            if f.check_time && (t < f.since || t >= f.until) {
                continue;
            }
            if f.lsn.is_some() && b.lsns[i].is_none_or(|l| l >= f.lsn_below) {
                continue;
            }
            b.docs.push(doc);
            b.kept_times.push(t);
        }
        if b.docs.is_empty() {
            return;
        }
        self.count += b.docs.len() as u64;
        for &t in &b.kept_times {
            self.count_time(t);
        }
        for (column, counts) in self.columns.iter().zip(self.counts.iter_mut()) {
            let Some((_, ords)) = column else { continue };
            b.ords.clear();
            b.ords.resize(b.docs.len(), None);
            ords.column.first_vals(&b.docs, &mut b.ords);
            for ord in b.ords.iter().flatten() {
                if let Some(c) = counts.get_mut(*ord as usize) {
                    *c += 1;
                }
            }
        }
    }
}

impl SegmentCollector for FacetSegment {
    type Fruit = Result<Arc<FacetFruit>, String>;

    #[inline]
    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(t) = self.filter.accept(doc) else {
            return;
        };
        self.count += 1;
        for (column, counts) in self.columns.iter().zip(self.counts.iter_mut()) {
            if let Some((_, ords)) = column
                && let Some(ord) = ords.get(doc)
                && let Some(c) = counts.get_mut(ord as usize)
            {
                *c += 1;
            }
        }
        self.count_time(t);
    }

    fn harvest(self) -> Self::Fruit {
        self.harvest_fruit().map(Arc::new)
    }
}

impl FacetSegment {
    fn harvest_fruit(self) -> Result<FacetFruit, String> {
        let mut fruit = FacetFruit {
            count: self.count,
            ..FacetFruit::default()
        };
        if self.count == 0 {
            return Ok(fruit);
        }
        fruit.min_time = Some(self.min_time);
        fruit.max_time = Some(self.max_time);
        for (i, (column, counts)) in self.columns.iter().zip(&self.counts).enumerate() {
            let Some((dict, _)) = column else { continue };
            // One pass over the dictionary's blocks for all the values seen (reading them one by
            // one decompresses a block per value).
            let seen: Vec<u64> = (0..counts.len() as u64)
                .filter(|&ord| counts[ord as usize] > 0)
                .collect();
            let mut next = seen.iter();
            let values = &mut fruit.values[i];
            values.reserve(seen.len());
            let mut bad_utf8 = false;
            let found = dict
                .dictionary()
                .sorted_ords_to_term_cb(&seen, |bytes| {
                    let Some(&ord) = next.next() else { return };
                    match std::str::from_utf8(bytes) {
                        Ok(value) => {
                            *values.entry(value.to_string()).or_default() += counts[ord as usize]
                        }
                        Err(_) => bad_utf8 = true,
                    }
                })
                .map_err(|e| format!("reading column {}: {e}", FACET_COLUMNS[i]))?;
            if !found || bad_utf8 {
                return Err(format!(
                    "reading column {}: an ordinal without a UTF-8 value",
                    FACET_COLUMNS[i]
                ));
            }
        }
        for (i, &c) in self.dense_hours.iter().enumerate() {
            if c > 0 {
                fruit
                    .hours
                    .insert((self.base_hour + i as i64) * HOUR_MICROS, c);
            }
        }
        for (h, c) in self.sparse_hours {
            *fruit.hours.entry(h * HOUR_MICROS).or_default() += c;
        }
        Ok(fruit)
    }
}

impl Collector for FacetCollector {
    type Fruit = FacetFruit;
    type Child = FacetSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<FacetSegment> {
        FacetSegment::new(SegmentFilter::new(&self.filter, reader)?, reader)
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        _: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<Result<Arc<FacetFruit>, String>> {
        let filter = SegmentFilter::new(&self.filter, reader)?;
        let outside = match filter.time.range() {
            Some((min, max)) => max < filter.since || min >= filter.until,
            None => true,
        } || filter.lsn_min.is_some_and(|l| l >= filter.lsn_below);
        if outside {
            return Ok(Ok(Arc::new(FacetFruit::default())));
        }
        // Wholly inside the range and the snapshot: the counts of the whole segment.
        let cached = match &self.cache {
            Some((cache, query)) if filter.is_trivial() => {
                cache.key(reader, query).map(|key| (cache, key))
            }
            _ => None,
        };
        if let Some((cache, key)) = &cached
            && let Some(fruit) = cache.get(key)
        {
            return Ok(Ok(fruit));
        }
        let mut child = FacetSegment::new(filter, reader)?;
        let alive = reader.alive_bitset();
        let mut block = FacetBlock::default();
        weight.for_each_no_score(reader, &mut |docs| match alive {
            Some(alive) => {
                block.alive.clear();
                block
                    .alive
                    .extend(docs.iter().copied().filter(|&d| alive.is_alive(d)));
                let docs = std::mem::take(&mut block.alive);
                child.collect_docs(&docs, &mut block);
                block.alive = docs;
            }
            None => child.collect_docs(docs, &mut block),
        })?;
        let fruit = child.harvest();
        if let (Some((cache, key)), Ok(fruit)) = (cached, &fruit) {
            cache.put(key, fruit.clone());
        }
        Ok(fruit)
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Result<Arc<FacetFruit>, String>>,
    ) -> tantivy::Result<FacetFruit> {
        let mut all = FacetFruit::default();
        for fruit in fruits {
            let fruit = fruit.map_err(TantivyError::InternalError)?;
            all.merge(&fruit);
        }
        Ok(all)
    }
}

impl FacetSegment {
    fn new(filter: SegmentFilter, reader: &SegmentReader) -> tantivy::Result<FacetSegment> {
        let mut columns = Vec::with_capacity(FACET_COLUMNS.len());
        let mut counts = Vec::with_capacity(FACET_COLUMNS.len());
        for name in FACET_COLUMNS {
            let column = reader.fast_fields().str(name)?;
            counts.push(vec![0; column.as_ref().map_or(0, |c| c.num_terms())]);
            columns.push(column.map(|c| {
                let ords = FastCol::new(c.ords().clone());
                (c, ords)
            }));
        }
        let (base_hour, dense) = match filter.time.range() {
            Some((min, max)) => {
                let (lo, hi) = (min.div_euclid(HOUR_MICROS), max.div_euclid(HOUR_MICROS));
                (lo, (hi - lo + 1).clamp(0, MAX_DENSE_HOURS) as usize)
            }
            None => (0, 0),
        };
        Ok(FacetSegment {
            filter,
            columns,
            counts,
            base_hour,
            dense_hours: vec![0; dense],
            sparse_hours: HashMap::new(),
            count: 0,
            min_time: i64::MAX,
            max_time: i64::MIN,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Org spans (retention)

/// What one org has in a partition: live records and the oldest one's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub docs: u64,
    /// Microseconds.
    pub oldest: i64,
}

impl Span {
    fn merge(&mut self, other: Span) {
        self.docs += other.docs;
        self.oldest = self.oldest.min(other.oldest);
    }
}

/// Per org (by the `org` column): live records and the oldest time. One pass over two columns.
pub(crate) struct OrgSpanCollector;

pub(crate) struct OrgSpanSegment {
    org: Option<(StrColumn, FastCol<u64>)>,
    time: FastCol<i64>,
    /// By org ordinal: (docs, oldest).
    spans: Vec<(u64, i64)>,
}

impl SegmentCollector for OrgSpanSegment {
    type Fruit = Result<HashMap<String, Span>, String>;

    #[inline]
    fn collect(&mut self, doc: DocId, _: Score) {
        let Some((_, ords)) = &self.org else { return };
        let (Some(ord), Some(t)) = (ords.get(doc), self.time.get(doc)) else {
            return;
        };
        if let Some(span) = self.spans.get_mut(ord as usize) {
            span.0 += 1;
            span.1 = span.1.min(t);
        }
    }

    fn harvest(self) -> Self::Fruit {
        let mut out = HashMap::new();
        let Some((dict, _)) = &self.org else {
            return Ok(out);
        };
        for (ord, &(docs, oldest)) in self.spans.iter().enumerate() {
            if docs == 0 {
                continue;
            }
            let mut org = String::new();
            dict.ord_to_str(ord as u64, &mut org)
                .map_err(|e| format!("reading column {}: {e}", col::ORG))?;
            out.entry(org)
                .or_insert(Span {
                    docs: 0,
                    oldest: i64::MAX,
                })
                .merge(Span { docs, oldest });
        }
        Ok(out)
    }
}

impl Collector for OrgSpanCollector {
    type Fruit = HashMap<String, Span>;
    type Child = OrgSpanSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<OrgSpanSegment> {
        let ff = reader.fast_fields();
        let org = ff.str(col::ORG)?;
        let terms = org.as_ref().map_or(0, |c| c.num_terms());
        Ok(OrgSpanSegment {
            org: org.map(|c| {
                let ords = FastCol::new(c.ords().clone());
                (c, ords)
            }),
            time: FastCol::new(ff.i64(col::TIME)?),
            spans: vec![(0, i64::MAX); terms],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Result<HashMap<String, Span>, String>>,
    ) -> tantivy::Result<HashMap<String, Span>> {
        let mut all: HashMap<String, Span> = HashMap::new();
        for fruit in fruits {
            for (org, span) in fruit.map_err(TantivyError::InternalError)? {
                match all.get_mut(&org) {
                    Some(s) => s.merge(span),
                    None => {
                        all.insert(org, span);
                    }
                }
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_in_order() {
        for k in [1usize, 3, 10] {
            let mut top = TopK::new(k);
            let keys: Vec<u64> = (0..200).map(|i| (i * 7919) % 211).collect();
            for (doc, key) in keys.iter().enumerate() {
                top.push(*key, doc as DocId);
            }
            let mut want = keys.clone();
            want.sort_unstable_by(|a, b| b.cmp(a));
            want.truncate(k);
            let got: Vec<u64> = top.into_sorted().into_iter().map(|(key, _)| key).collect();
            assert_eq!(got, want);
        }
        assert!(TopK::<u64>::new(0).into_sorted().is_empty());
    }
}
