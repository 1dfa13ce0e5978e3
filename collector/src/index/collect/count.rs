//! [`FilteredCount`]: the number of matches that pass a [`DocFilter`].

use super::filter::{DocFilter, SegmentFilter, for_each_alive};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::query::Weight;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::collect::test_index::{Rec, hour, searcher};
    use tantivy::query::AllQuery;

    /// Ten records an hour apart at LSNs 1..=10, in two segments.
    fn ten() -> tantivy::Searcher {
        let rec = |i: i64| {
            (
                i as u64 + 1,
                Rec {
                    time: hour(i),
                    ..Rec::default()
                },
            )
        };
        searcher(&[(0..5).map(rec).collect(), (5..10).map(rec).collect()])
    }

    #[test]
    fn counts_what_passes_the_time_range_and_the_snapshot() {
        let s = ten();
        let count = |filter| s.search(&AllQuery, &FilteredCount(filter)).unwrap();
        // Settled by the columns' statistics: tantivy's own count.
        assert_eq!(count(DocFilter::default()), 10);
        let range = DocFilter {
            since: Some(hour(2)),
            until: Some(hour(8)),
            lsn_below: None,
        };
        assert_eq!(count(range), 6);
        // Hours 2..8 are LSNs 3..=8; below 7 leaves 3..=6.
        assert_eq!(
            count(DocFilter {
                lsn_below: Some(7),
                ..range
            }),
            4
        );
        assert_eq!(
            count(DocFilter {
                lsn_below: Some(1),
                ..DocFilter::default()
            }),
            0
        );
    }
}
