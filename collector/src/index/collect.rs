//! Collectors over fast fields: the newest-first page with an exact count, a bounded count, and
//! the facet counts with the time histogram. The time range and the snapshot bound are checked
//! here, per document, only in segments whose column statistics do not already settle them.

use super::schema::col;
use std::collections::HashMap;
use std::sync::Arc;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Cardinality, Column, ColumnValues, StrColumn};
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, TantivyError};

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
struct FastCol<T> {
    column: Column<T>,
    full: Option<Arc<dyn ColumnValues<T>>>,
}

impl<T: PartialOrd + Copy + std::fmt::Debug + Send + Sync + 'static> FastCol<T> {
    fn new(column: Column<T>) -> Self {
        let full = (column.get_cardinality() == Cardinality::Full).then(|| column.values.clone());
        FastCol { column, full }
    }

    #[inline]
    fn get(&self, doc: DocId) -> Option<T> {
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
struct SegmentFilter {
    time: FastCol<i64>,
    check_time: bool,
    since: i64,
    until: i64,
    lsn: Option<FastCol<u64>>,
    lsn_below: u64,
}

impl SegmentFilter {
    fn new(filter: &DocFilter, reader: &SegmentReader) -> tantivy::Result<SegmentFilter> {
        let ff = reader.fast_fields();
        let time = FastCol::new(ff.i64(col::TIME)?);
        let since = filter.since.unwrap_or(i64::MIN);
        let until = filter.until.unwrap_or(i64::MAX);
        let check_time = match time.range() {
            Some((min, max)) => !(min >= since && max < until),
            None => true,
        };
        let lsn = match filter.lsn_below {
            Some(below) => {
                let lsn = FastCol::new(ff.u64(col::LSN)?);
                match lsn.range() {
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
        })
    }

    /// Nothing to check per document: the query's own count is the answer.
    fn is_trivial(&self) -> bool {
        !self.check_time && self.lsn.is_none()
    }

    /// The document's time if it passes.
    #[inline]
    fn accept(&self, doc: DocId) -> Option<i64> {
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
    pub id: String,
    pub doc: DocAddress,
}

/// The exact count of matches and the `want` newest of those after `after`.
pub(crate) struct PageCollector {
    pub filter: DocFilter,
    /// `(time, id)` of the last entry already returned: only entries strictly older are taken.
    pub after: Option<(i64, String)>,
    pub want: usize,
}

pub(crate) struct PageFruit {
    pub count: u64,
    /// Sorted newest first, at most `want`.
    pub hits: Vec<Hit>,
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
    after: Option<(i64, String)>,
    count: u64,
    /// Keyed by (time, id ordinal): ordinals follow the byte order of ids within a segment.
    top: TopK<(i64, u64)>,
    scratch: String,
}

impl SegmentCollector for PageSegment {
    type Fruit = Result<PageFruit, String>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(t) = self.filter.accept(doc) else {
            return;
        };
        self.count += 1;
        let Some((ids, ords)) = &self.ids else {
            return;
        };
        let ord = ords.get(doc).unwrap_or(0);
        if let Some((after_t, after_id)) = &self.after {
            if t > *after_t {
                return;
            }
            if t == *after_t {
                // Rare: only entries at the very microsecond of the cursor read their id.
                if ids.ord_to_str(ord, &mut self.scratch).is_err()
                    || self.scratch.as_str() >= after_id.as_str()
                {
                    return;
                }
            }
        }
        self.top.push((t, ord), doc);
    }

    fn harvest(self) -> Self::Fruit {
        let mut hits = Vec::new();
        if let Some((ids, _)) = &self.ids {
            for ((time, ord), doc) in self.top.into_sorted() {
                let mut id = String::new();
                ids.ord_to_str(ord, &mut id)
                    .map_err(|e| format!("reading the id column: {e}"))?;
                hits.push(Hit {
                    time,
                    id,
                    doc: DocAddress::new(self.segment, doc),
                });
            }
        }
        Ok(PageFruit {
            count: self.count,
            hits,
        })
    }
}

/// Newest first: time desc, then id desc.
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
        Ok(PageSegment {
            segment,
            filter: SegmentFilter::new(&self.filter, reader)?,
            ids,
            after: self.after.clone(),
            count: 0,
            top: TopK::new(self.want),
            scratch: String::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Result<PageFruit, String>>) -> tantivy::Result<PageFruit> {
        let mut count = 0;
        let mut hits = Vec::new();
        for fruit in fruits {
            let fruit = fruit.map_err(TantivyError::InternalError)?;
            count += fruit.count;
            hits.extend(fruit.hits);
        }
        hits.sort_unstable_by(newest_first);
        hits.truncate(self.want);
        Ok(PageFruit { count, hits })
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
pub(crate) struct FacetCollector(pub DocFilter);

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
    pub fn merge(&mut self, other: FacetFruit) {
        self.count += other.count;
        for (mine, theirs) in self.values.iter_mut().zip(other.values) {
            for (v, c) in theirs {
                *mine.entry(v).or_default() += c;
            }
        }
        for (h, c) in other.hours {
            *self.hours.entry(h).or_default() += c;
        }
        self.min_time = min_opt(self.min_time, other.min_time);
        self.max_time = max_opt(self.max_time, other.max_time);
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

impl SegmentCollector for FacetSegment {
    type Fruit = Result<FacetFruit, String>;

    #[inline]
    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(t) = self.filter.accept(doc) else {
            return;
        };
        self.count += 1;
        self.min_time = self.min_time.min(t);
        self.max_time = self.max_time.max(t);
        for (column, counts) in self.columns.iter().zip(self.counts.iter_mut()) {
            if let Some((_, ords)) = column
                && let Some(ord) = ords.get(doc)
                && let Some(c) = counts.get_mut(ord as usize)
            {
                *c += 1;
            }
        }
        let hour = t.div_euclid(HOUR_MICROS);
        match usize::try_from(hour - self.base_hour)
            .ok()
            .and_then(|i| self.dense_hours.get_mut(i))
        {
            Some(c) => *c += 1,
            None => *self.sparse_hours.entry(hour).or_default() += 1,
        }
    }

    fn harvest(self) -> Self::Fruit {
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
            for (ord, &c) in counts.iter().enumerate() {
                if c == 0 {
                    continue;
                }
                let mut value = String::new();
                dict.ord_to_str(ord as u64, &mut value)
                    .map_err(|e| format!("reading column {}: {e}", FACET_COLUMNS[i]))?;
                *fruit.values[i].entry(value).or_default() += c;
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
        let filter = SegmentFilter::new(&self.0, reader)?;
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

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Result<FacetFruit, String>>) -> tantivy::Result<FacetFruit> {
        let mut all = FacetFruit::default();
        for fruit in fruits {
            all.merge(fruit.map_err(TantivyError::InternalError)?);
        }
        Ok(all)
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
