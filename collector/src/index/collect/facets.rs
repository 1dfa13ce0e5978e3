//! [`FacetCollector`]: counts per value of the facet columns and per UTC hour, over a block of
//! documents at a time, taking the counts of whole segments from the [`FacetCache`].

use super::facet_cache::FacetCache;
use super::facet_fruit::FacetFruit;
use super::filter::{DocFilter, FastCol, SegmentFilter};
use crate::index::schema::col;
use std::collections::HashMap;
use std::sync::Arc;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::query::Weight;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader, TantivyError};

/// Microseconds in an hour.
pub(crate) const HOUR_MICROS: i64 = 3_600_000_000;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::collect::test_index::{Rec, hour, searcher};
    use tantivy::query::AllQuery;

    fn corpus() -> tantivy::Searcher {
        let rec = |lsn, h, action, user, repository, failed| {
            (
                lsn,
                Rec {
                    time: hour(h),
                    action,
                    user,
                    repository,
                    failed,
                    ..Rec::default()
                },
            )
        };
        searcher(&[
            vec![
                rec(1, 0, "scan.triggered", "ada@x", Some("acme/api"), false),
                rec(2, 0, "scan.failed", "zoe@x", Some("acme/api"), true),
                rec(3, 2, "scan.triggered", "ada@x", None, false),
            ],
            vec![
                rec(4, 2, "user.login", "ada@x", Some("acme/web"), false),
                rec(5, 40, "scan.triggered", "zoe@x", None, false),
            ],
        ])
    }

    fn counts(fruit: &FacetFruit, column: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = fruit.values[column]
            .iter()
            .map(|(k, c)| (k.as_str(), *c))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn counts_values_and_hours_of_what_passes_the_filter() {
        let s = corpus();
        let all = FacetCollector {
            filter: DocFilter::default(),
            cache: None,
        };
        let f = s.search(&AllQuery, &all).unwrap();
        assert_eq!(f.count, 5);
        assert_eq!(counts(&f, 0), [("scan", 4), ("user", 1)]);
        assert_eq!(
            counts(&f, 1),
            [("scan.failed", 1), ("scan.triggered", 3), ("user.login", 1)]
        );
        assert_eq!(counts(&f, 2), [("ada@x", 3), ("zoe@x", 2)]);
        assert_eq!(counts(&f, 3), [("acme/api", 2), ("acme/web", 1)]);
        assert_eq!(counts(&f, 4), [("failure", 1), ("success", 4)]);
        let mut hours: Vec<(i64, u64)> = f.hours.iter().map(|(h, c)| (*h, *c)).collect();
        hours.sort_unstable();
        assert_eq!(hours, [(hour(0), 2), (hour(2), 2), (hour(40), 1)]);
        assert_eq!((f.min_time, f.max_time), (Some(hour(0)), Some(hour(40))));

        // The range and the snapshot, checked per document.
        let some = FacetCollector {
            filter: DocFilter {
                since: Some(hour(1)),
                until: Some(hour(41)),
                lsn_below: Some(5),
            },
            cache: None,
        };
        let f = s.search(&AllQuery, &some).unwrap();
        assert_eq!(f.count, 2);
        assert_eq!(counts(&f, 1), [("scan.triggered", 1), ("user.login", 1)]);
        assert_eq!((f.min_time, f.max_time), (Some(hour(2)), Some(hour(2))));
    }

    #[test]
    fn whole_segments_come_from_the_cache_the_second_time() {
        let s = corpus();
        let cache = Arc::new(FacetCache::new(1 << 20, 0));
        let collector = FacetCollector {
            filter: DocFilter::default(),
            cache: Some((cache.clone(), "q".into())),
        };
        let first = s.search(&AllQuery, &collector).unwrap();
        assert_eq!(cache.counters(), (0, 2));
        let second = s.search(&AllQuery, &collector).unwrap();
        assert_eq!(cache.counters(), (2, 2));
        assert_eq!(second.count, first.count);
        assert_eq!(second.values, first.values);
        assert_eq!(second.hours, first.hours);
        // A segment cut by the range is counted, not cached.
        let cut = FacetCollector {
            filter: DocFilter {
                since: Some(hour(1)),
                ..DocFilter::default()
            },
            cache: Some((cache.clone(), "q".into())),
        };
        assert_eq!(s.search(&AllQuery, &cut).unwrap().count, 3);
        assert_eq!(cache.counters(), (3, 2), "only the segment wholly inside");
    }
}
