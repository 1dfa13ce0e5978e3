//! What every collector checks per document beyond the query: the time range and the snapshot
//! bound ([`DocFilter`]), settled per segment by the columns' statistics where they can be
//! ([`SegmentFilter`]), and fast columns read without their cardinality check where every
//! document has one value ([`FastCol`]).

use crate::index::schema::col;
use std::sync::Arc;
use tantivy::columnar::{Cardinality, Column, ColumnValues};
use tantivy::query::Weight;
use tantivy::{DocId, SegmentReader};

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
    pub(super) column: Column<T>,
    pub(super) full: Option<Arc<dyn ColumnValues<T>>>,
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
    pub(super) fn range(&self) -> Option<(T, T)> {
        (self.column.values.num_vals() > 0)
            .then(|| (self.column.min_value(), self.column.max_value()))
    }
}

/// [`DocFilter`] bound to one segment.
pub(crate) struct SegmentFilter {
    pub(super) time: FastCol<i64>,
    pub(super) check_time: bool,
    pub(super) since: i64,
    pub(super) until: i64,
    pub(super) lsn: Option<FastCol<u64>>,
    pub(super) lsn_below: u64,
    /// The smallest LSN in the segment, when a snapshot applies.
    pub(super) lsn_min: Option<u64>,
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
    pub(super) fn is_trivial(&self) -> bool {
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

/// Calls `f` with each live document matching `weight`.
pub(super) fn for_each_alive(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::collect::test_index::{Rec, hour, searcher};

    #[test]
    fn settles_by_statistics_what_it_can_and_checks_the_rest_per_document() {
        let s = searcher(&[(0..4)
            .map(|i| {
                (
                    i as u64 + 10,
                    Rec {
                        time: hour(i),
                        ..Rec::default()
                    },
                )
            })
            .collect()]);
        let reader = s.segment_reader(0);
        let filter = |f| SegmentFilter::new(&f, reader).unwrap();
        // The whole segment is inside: nothing to check per document.
        let inside = filter(DocFilter {
            since: Some(hour(0)),
            until: Some(hour(4)),
            lsn_below: Some(14),
        });
        assert!(inside.is_trivial());
        assert_eq!(inside.time_range(), Some((hour(0), hour(3))));
        assert_eq!(inside.lsn_min, Some(10));
        // Cut by both bounds: documents are times 0..4 at LSNs 10..14.
        let cut = filter(DocFilter {
            since: Some(hour(1)),
            until: None,
            lsn_below: Some(13),
        });
        assert!(!cut.is_trivial());
        let kept: Vec<Option<i64>> = (0..4).map(|d| cut.accept(d)).collect();
        assert_eq!(kept, [None, Some(hour(1)), Some(hour(2)), None]);
    }
}
