//! [`SeqCollector`]: the chain position (`seq`) of every match in a snapshot, for verifying an
//! org's hash chain in `seq` order.

use crate::index::schema::col;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

/// The `(seq, doc)` of every match that has a `seq` of `from_seq` or more and an LSN from
/// `lsn_from` up to below the snapshot bound.
pub(crate) struct SeqCollector {
    pub lsn_below: u64,
    /// Matches with a lower LSN are not kept, and a segment whose LSNs are all lower is not
    /// walked at all (a stream that already read everything below an earlier bound reads only
    /// the segments written since).
    pub lsn_from: u64,
    /// Matches with a lower `seq` are not kept (a stream reading after its cursor holds only
    /// what comes after it).
    pub from_seq: u64,
}

pub(crate) struct SeqSegment {
    segment: SegmentOrdinal,
    seqs: Column<u64>,
    lsns: Column<u64>,
    lsn_below: u64,
    lsn_from: u64,
    from_seq: u64,
    found: Vec<(u64, DocAddress)>,
}

impl SegmentCollector for SeqSegment {
    type Fruit = Vec<(u64, DocAddress)>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if self
            .lsns
            .first(doc)
            .is_none_or(|l| l >= self.lsn_below || l < self.lsn_from)
        {
            return;
        }
        if let Some(seq) = self.seqs.first(doc)
            && seq >= self.from_seq
        {
            self.found.push((seq, DocAddress::new(self.segment, doc)));
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.found
    }
}

impl Collector for SeqCollector {
    type Fruit = Vec<(u64, DocAddress)>;
    type Child = SeqSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SeqSegment> {
        let ff = reader.fast_fields();
        Ok(SeqSegment {
            segment,
            seqs: ff.u64(col::SEQ)?,
            lsns: ff.u64(col::LSN)?,
            lsn_below: self.lsn_below,
            lsn_from: self.lsn_from,
            from_seq: self.from_seq,
            found: Vec::new(),
        })
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<Self::Fruit> {
        let mut child = self.for_segment(segment, reader)?;
        // The column's bounds: a segment entirely below `lsn_from` or `from_seq` has nothing.
        if child.lsns.max_value() < self.lsn_from || child.seqs.max_value() < self.from_seq {
            return Ok(Vec::new());
        }
        let alive = reader.alive_bitset();
        weight.for_each_no_score(reader, &mut |docs| {
            for &doc in docs {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    child.collect(doc, 0.0);
                }
            }
        })?;
        Ok(child.harvest())
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::collect::test_index::{Rec, searcher};
    use tantivy::query::AllQuery;

    #[test]
    fn finds_the_seq_of_every_match_below_the_snapshot() {
        let rec = |lsn, seq| {
            (
                lsn,
                Rec {
                    seq,
                    ..Rec::default()
                },
            )
        };
        let s = searcher(&[
            vec![rec(1, Some(1)), rec(2, Some(2)), rec(3, None)],
            vec![rec(4, Some(3)), rec(5, Some(4))],
        ]);
        let seqs = |lsn_from, lsn_below, from_seq| {
            let mut found: Vec<u64> = s
                .search(
                    &AllQuery,
                    &SeqCollector {
                        lsn_below,
                        lsn_from,
                        from_seq,
                    },
                )
                .unwrap()
                .into_iter()
                .map(|(seq, _)| seq)
                .collect();
            found.sort_unstable();
            found
        };
        assert_eq!(seqs(0, u64::MAX, 0), [1, 2, 3, 4]);
        assert_eq!(seqs(0, 5, 0), [1, 2, 3]);
        assert!(seqs(0, 1, 0).is_empty());
        // From an LSN: the first segment (LSNs 1 to 3) is below it.
        assert_eq!(seqs(4, u64::MAX, 0), [3, 4]);
        assert_eq!(seqs(2, u64::MAX, 0), [2, 3, 4]);
        assert_eq!(seqs(2, 5, 0), [2, 3]);
        assert!(seqs(6, u64::MAX, 0).is_empty());
        // From a seq: whole segments below it have nothing.
        assert_eq!(seqs(0, u64::MAX, 3), [3, 4]);
        assert_eq!(seqs(0, u64::MAX, 4), [4]);
        assert!(seqs(0, u64::MAX, 5).is_empty());
    }
}
