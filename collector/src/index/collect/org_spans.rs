//! [`OrgSpanCollector`]: per org, its live records in a partition and the oldest one's time (for
//! retention).

use super::filter::FastCol;
use crate::index::schema::col;
use std::collections::HashMap;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader, TantivyError};

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
    use crate::index::collect::test_index::{Rec, hour, searcher};
    use tantivy::query::AllQuery;

    #[test]
    fn counts_each_orgs_records_and_finds_its_oldest() {
        let rec = |org, h| {
            (
                1,
                Rec {
                    org,
                    time: hour(h),
                    ..Rec::default()
                },
            )
        };
        let s = searcher(&[
            vec![rec("acme", 5), rec("globex", 7), rec("acme", 3)],
            vec![rec("acme", 9), rec("initech", 2)],
        ]);
        let spans = s.search(&AllQuery, &OrgSpanCollector).unwrap();
        let span = |docs, h| Span {
            docs,
            oldest: hour(h),
        };
        assert_eq!(spans.len(), 3);
        assert_eq!(spans["acme"], span(3, 3));
        assert_eq!(spans["globex"], span(1, 7));
        assert_eq!(spans["initech"], span(1, 2));
    }
}
