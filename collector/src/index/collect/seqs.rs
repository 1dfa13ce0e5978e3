//! [`SeqCollector`]: the chain position (`seq`) of every match in a snapshot, for verifying an
//! org's hash chain in `seq` order.

use crate::index::schema::col;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

/// The `(seq, doc)` of every match that has a `seq` of `from_seq` or more and an LSN below the
/// snapshot bound.
pub(crate) struct SeqCollector {
    pub lsn_below: u64,
    /// Matches with a lower `seq` are not kept (a stream reading after its cursor holds only
    /// what comes after it).
    pub from_seq: u64,
}

pub(crate) struct SeqSegment {
    segment: SegmentOrdinal,
    seqs: Column<u64>,
    lsns: Column<u64>,
    lsn_below: u64,
    from_seq: u64,
    found: Vec<(u64, DocAddress)>,
}

impl SegmentCollector for SeqSegment {
    type Fruit = Vec<(u64, DocAddress)>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if self.lsns.first(doc).is_none_or(|l| l >= self.lsn_below) {
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
            from_seq: self.from_seq,
            found: Vec::new(),
        })
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
        let seqs = |lsn_below| {
            let mut found: Vec<u64> = s
                .search(
                    &AllQuery,
                    &SeqCollector {
                        lsn_below,
                        from_seq: 0,
                    },
                )
                .unwrap()
                .into_iter()
                .map(|(seq, _)| seq)
                .collect();
            found.sort_unstable();
            found
        };
        assert_eq!(seqs(u64::MAX), [1, 2, 3, 4]);
        assert_eq!(seqs(5), [1, 2, 3]);
        assert!(seqs(1).is_empty());
    }
}
