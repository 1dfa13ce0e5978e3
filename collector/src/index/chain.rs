//! The hash chains as the index holds them: each org's chain head (for the store's recovery at
//! start) and the check of an org's stored chain in `seq` order (the verify endpoint).

use super::audit_index::{AuditIndex, load};
use super::error::IndexError;
use super::schema::col;
use codestax_common::chain::{ChainBreak, ChainHead, ChainSummary, ChainVerifier};
use std::collections::HashMap;
use std::path::PathBuf;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, Term};

/// An org's stored chain, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// What verified, up to the first break.
    pub summary: ChainSummary,
    /// The first place the chain does not hold; `None` when it all holds.
    pub error: Option<ChainBreak>,
}

impl AuditIndex {
    /// Per org, the `seq` and `hash` of its searchable record with the highest `seq` (opens every
    /// partition and reads the `org` and `seq` columns, then one stored record per org).
    pub fn chain_heads(&self) -> Result<HashMap<String, ChainHead>, IndexError> {
        // Per org: the highest seq, and where its record is (searcher index, doc).
        let mut best: HashMap<String, (u64, usize, DocAddress)> = HashMap::new();
        let mut searchers = Vec::new();
        for p in self.inner.partitions_newest_first(None, None) {
            let Some(searcher) = self.inner.searcher(&p)? else {
                continue;
            };
            let at = searchers.len();
            for (segment, reader) in searcher.segment_readers().iter().enumerate() {
                let ff = reader.fast_fields();
                let seqs = ff
                    .u64(col::SEQ)
                    .map_err(|e| IndexError::tantivy(&p.dir, "read the seq column", e))?;
                let Some(orgs) = ff
                    .str(col::ORG)
                    .map_err(|e| IndexError::tantivy(&p.dir, "read the org column", e))?
                else {
                    continue;
                };
                let mut per_org: Vec<Option<(u64, DocId)>> = vec![None; orgs.num_terms()];
                for doc in reader.doc_ids_alive() {
                    let (Some(seq), Some(ord)) = (seqs.first(doc), orgs.ords().first(doc)) else {
                        continue;
                    };
                    if let Some(slot) = per_org.get_mut(ord as usize)
                        && slot.is_none_or(|(s, _)| seq > s)
                    {
                        *slot = Some((seq, doc));
                    }
                }
                for (ord, slot) in per_org.into_iter().enumerate() {
                    let Some((seq, doc)) = slot else { continue };
                    let mut org = String::new();
                    orgs.ord_to_str(ord as u64, &mut org)
                        .map_err(|e| IndexError::io(&p.dir, e))?;
                    let here = (seq, at, DocAddress::new(segment as SegmentOrdinal, doc));
                    match best.get(&org) {
                        Some(b) if b.0 >= seq => {}
                        _ => {
                            best.insert(org, here);
                        }
                    }
                }
            }
            searchers.push((searcher, p.dir.clone()));
        }
        let mut heads = HashMap::with_capacity(best.len());
        for (org, (seq, at, addr)) in best {
            let (searcher, dir) = &searchers[at];
            let record = load(searcher, dir, &self.inner.fields, addr)?;
            let head = ChainHead::of(&record)
                .filter(|h| h.seq == seq)
                .ok_or_else(|| IndexError::Corrupt {
                    path: dir.clone(),
                    message: format!("the record of org {org} at seq {seq} has no chain fields"),
                })?;
            heads.insert(org, head);
        }
        Ok(heads)
    }

    /// Checks `org`'s chain as stored: its records committed now, in `seq` order, continuing
    /// `from` (a retention checkpoint; the genesis when `None`). Every hash must recompute, every
    /// `prev_hash` be the hash before it, and no `seq` be missing. Records written before chains
    /// existed (without `seq`) are not part of it. Memory: 24 bytes per record to sort them;
    /// records are read one at a time.
    pub fn verify_chain(
        &self,
        org: &str,
        from: Option<ChainHead>,
    ) -> Result<ChainReport, IndexError> {
        let query = TermQuery::new(
            Term::from_field_text(self.inner.fields.org, org),
            IndexRecordOption::Basic,
        );
        let collector = SeqCollector {
            lsn_below: self.snapshot_bound(),
        };
        let mut order: Vec<(u64, u32, DocAddress)> = Vec::new();
        let mut searchers: Vec<(tantivy::Searcher, PathBuf)> = Vec::new();
        for p in self.inner.partitions_newest_first(None, None) {
            let Some(searcher) = self.inner.searcher(&p)? else {
                continue;
            };
            let at = u32::try_from(searchers.len()).expect("fewer than 2^32 partitions");
            let found = searcher
                .search(&query, &collector)
                .map_err(|e| IndexError::tantivy(&p.dir, "list the chain", e))?;
            order.extend(found.into_iter().map(|(seq, doc)| (seq, at, doc)));
            searchers.push((searcher, p.dir.clone()));
        }
        order.sort_unstable_by_key(|e| e.0);
        let mut verifier = ChainVerifier::new(from);
        for (_, at, doc) in order {
            let (searcher, dir) = &searchers[at as usize];
            let record = load(searcher, dir, &self.inner.fields, doc)?;
            if let Err(error) = verifier.push(&record) {
                return Ok(ChainReport {
                    summary: verifier.finish(),
                    error: Some(error),
                });
            }
        }
        Ok(ChainReport {
            summary: verifier.finish(),
            error: None,
        })
    }
}

/// The `(seq, doc)` of every match that has a `seq` and an LSN below the snapshot bound.
struct SeqCollector {
    lsn_below: u64,
}

struct SeqSegment {
    segment: SegmentOrdinal,
    seqs: Column<u64>,
    lsns: Column<u64>,
    lsn_below: u64,
    found: Vec<(u64, DocAddress)>,
}

impl SegmentCollector for SeqSegment {
    type Fruit = Vec<(u64, DocAddress)>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if self.lsns.first(doc).is_none_or(|l| l >= self.lsn_below) {
            return;
        }
        if let Some(seq) = self.seqs.first(doc) {
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
