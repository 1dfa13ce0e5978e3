//! The hash chains as the index holds them: each org's chain head (for the store's recovery at
//! start) and the check of an org's stored chain in `seq` order (the verify endpoint).

use super::audit_index::AuditIndex;
use super::collect::SeqCollector;
use super::error::IndexError;
use super::schema::col;
use super::stored::{StoredDocs, corrupt, load};
use super::tail::{TailRead, TailRecord};
use chrono::{DateTime, Utc};
use codestax_common::AuditRecord;
use codestax_common::chain::{
    ChainBreak, ChainHead, ChainSummary, ChainVerifier, Deleted, RetentionCheckpoint,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocId, SegmentOrdinal, Term};

/// Records taken from the tail at a time, between which `f` runs without its lock.
const TAIL_READ_CHUNK: usize = 512;

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
        for p in self.shared.partitions_newest_first(None, None) {
            let Some(searcher) = self.shared.searcher(&p)? else {
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
            let record = load(searcher, dir, &self.shared.fields, addr)?;
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
    /// `from` (what retention kept of the records it deleted: a checkpoint and tombstones; the
    /// genesis when `None`). Every hash must recompute, every `prev_hash` be the hash before it,
    /// and no `seq` be missing but where a tombstone stands for it. Records written before chains
    /// existed (without `seq`) are not part of it. Memory: 24 bytes per record to sort them;
    /// records are read one at a time.
    pub fn verify_chain(
        &self,
        org: &str,
        from: Option<&RetentionCheckpoint>,
    ) -> Result<ChainReport, IndexError> {
        let mut verifier = ChainVerifier::after(from.cloned().unwrap_or_default());
        let mut error = None;
        self.for_each_chained(org, 0, |record| match verifier.push(record) {
            Ok(()) => true,
            Err(e) => {
                error = Some(e);
                false
            }
        })?;
        Ok(ChainReport {
            summary: verifier.finish(),
            error,
        })
    }

    /// Calls `f` with each of `org`'s committed records whose `seq` is `from` or more, in `seq`
    /// order, until it returns `false` (the Merkle tree's backfill, chain checks). Memory: 24
    /// bytes per record of the org from `from` on.
    pub fn for_each_chained(
        &self,
        org: &str,
        from: u64,
        f: impl FnMut(&AuditRecord) -> bool,
    ) -> Result<(), IndexError> {
        self.for_each_chained_below(org, from, u64::MAX, f)
    }

    /// [`Self::for_each_chained`] for the records stored below `lsn_below` only: what a reader
    /// saw committed at one moment, while later records keep coming (a cluster shard's
    /// snapshot, taken while its owner consumes on). An org's records are numbered in LSN
    /// order, so they are a prefix of its chain from `from`.
    pub fn for_each_chained_below(
        &self,
        org: &str,
        from: u64,
        lsn_below: u64,
        mut f: impl FnMut(&AuditRecord) -> bool,
    ) -> Result<(), IndexError> {
        self.walk_chained(org, from, 0, lsn_below, |dir, json, _| {
            let record: AuditRecord = serde_json::from_slice(json).map_err(|e| corrupt(dir, e))?;
            Ok(f(&record))
        })?;
        Ok(())
    }

    /// [`Self::for_each_chained`] handing `f` each record as stored (its canonical JSON), for
    /// readers that encode records without building an `AuditRecord` each (streams). `f` gets
    /// the partition's directory to name in its errors, and the tail's record when it comes from
    /// there (its `seq` and head taken when it was added: no parse needed; its JSON shared).
    ///
    /// Reads the org's newest records from memory where the index keeps them (an org followed
    /// through [`Self::follow_tail`], from a `seq` its tail still holds), the rest from the
    /// index. There, records with an LSN below `since_lsn` are left out, and segments holding
    /// only such records are not walked: a reader that saw every record of the org from `from`
    /// on below an earlier call's bound passes that bound, and reads only what was committed
    /// since rather than the whole org each time. Returns this call's bound (the records it
    /// could see have LSNs below it).
    pub fn for_each_chained_stored(
        &self,
        org: &str,
        from: u64,
        since_lsn: u64,
        f: impl FnMut(&Path, &[u8], Option<&TailRecord>) -> Result<bool, IndexError>,
    ) -> Result<u64, IndexError> {
        self.walk_chained(org, from, since_lsn, u64::MAX, f)
    }

    /// [`Self::for_each_chained_stored`] below `lsn_below` as well as below what walks see.
    fn walk_chained(
        &self,
        org: &str,
        from: u64,
        since_lsn: u64,
        lsn_below: u64,
        mut f: impl FnMut(&Path, &[u8], Option<&TailRecord>) -> Result<bool, IndexError>,
    ) -> Result<u64, IndexError> {
        let lsn_below = self.walk_bound().min(lsn_below);
        let mut from = from;
        // A chunk at a time: the tail's lock is not held while `f` runs.
        while let TailRead::Records(chunk) =
            self.shared.tail.read(org, from, lsn_below, TAIL_READ_CHUNK)
        {
            let last_chunk = chunk.len() < TAIL_READ_CHUNK;
            for record in chunk {
                if !f(&self.shared.dir, &record.json, Some(&record))? {
                    return Ok(lsn_below);
                }
                from = record.seq + 1;
            }
            if last_chunk {
                return Ok(lsn_below);
            }
        }
        self.walk_stored(org, from, since_lsn, lsn_below, |dir, json| {
            f(dir, json, None)
        })?;
        Ok(lsn_below)
    }

    /// The index's part of [`Self::for_each_chained_stored`], below `lsn_below`.
    fn walk_stored(
        &self,
        org: &str,
        from: u64,
        since_lsn: u64,
        lsn_below: u64,
        mut f: impl FnMut(&Path, &[u8]) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        let query = TermQuery::new(
            Term::from_field_text(self.shared.fields.org, org),
            IndexRecordOption::Basic,
        );
        let collector = SeqCollector {
            lsn_below,
            lsn_from: since_lsn,
            from_seq: from,
        };
        let mut order: Vec<(u64, u32, DocAddress)> = Vec::new();
        let mut searchers: Vec<(tantivy::Searcher, PathBuf)> = Vec::new();
        for p in self.shared.partitions_newest_first(None, None) {
            let Some(searcher) = self.shared.searcher(&p)? else {
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
        // The stored bytes straight from each segment's store (not tantivy's document decoding).
        let mut stores: Vec<StoredDocs> = searchers
            .iter()
            .map(|(s, dir)| StoredDocs::new(s, dir, &self.shared.fields))
            .collect();
        for (_, at, doc) in order {
            let store = &mut stores[at as usize];
            let dir = &searchers[at as usize].1;
            if !store.read(doc, |_, json| f(dir, json))? {
                break;
            }
        }
        Ok(())
    }

    /// The chained records of partitions `partitions` (by name) that a retention run is about
    /// to delete: per org of `cutoffs`, those with a `time` before its cutoff (the janitor's
    /// rule, for whole partitions and per-org deletes alike). One pass over the `org`, `time`
    /// and `seq` columns of those partitions; stored records are read only for the hashes asked
    /// for ([`ExpiringChains::about`]).
    pub fn expiring_chains(
        &self,
        partitions: &HashSet<String>,
        cutoffs: &HashMap<String, DateTime<Utc>>,
    ) -> Result<ExpiringChains, IndexError> {
        let mut out = ExpiringChains {
            index: self.clone(),
            searchers: Vec::new(),
            orgs: HashMap::new(),
        };
        for p in self.shared.partitions_newest_first(None, None) {
            if !partitions.contains(p.key.name()) {
                continue;
            }
            let Some(searcher) = self.shared.searcher(&p)? else {
                continue;
            };
            let at = u32::try_from(out.searchers.len()).expect("fewer than 2^32 partitions");
            for (segment, reader) in searcher.segment_readers().iter().enumerate() {
                let ff = reader.fast_fields();
                let err = |what| {
                    let dir = p.dir.clone();
                    move |e| IndexError::tantivy(dir, what, e)
                };
                let seqs = ff.u64(col::SEQ).map_err(err("read the seq column"))?;
                let times = ff.i64(col::TIME).map_err(err("read the time column"))?;
                let Some(orgs) = ff.str(col::ORG).map_err(err("read the org column"))? else {
                    continue;
                };
                // Per org ordinal of the segment: its name and cutoff (microseconds).
                let mut by_ord: Vec<Option<(String, i64)>> = Vec::with_capacity(orgs.num_terms());
                for ord in 0..orgs.num_terms() {
                    let mut org = String::new();
                    orgs.ord_to_str(ord as u64, &mut org)
                        .map_err(|e| IndexError::io(&p.dir, e))?;
                    let cut = cutoffs.get(&org).map(|c| c.timestamp_micros());
                    by_ord.push(cut.map(|c| (org, c)));
                }
                for doc in reader.doc_ids_alive() {
                    let Some(ord) = orgs.ords().first(doc) else {
                        continue;
                    };
                    let Some(Some((org, cut))) = by_ord.get(ord as usize) else {
                        continue;
                    };
                    let (Some(seq), Some(time)) = (seqs.first(doc), times.first(doc)) else {
                        continue;
                    };
                    if time < *cut {
                        let addr = DocAddress::new(segment as SegmentOrdinal, doc);
                        out.orgs
                            .entry(org.clone())
                            .or_default()
                            .insert(seq, (at, addr, time));
                    }
                }
            }
            out.searchers.push((searcher, p.dir.clone()));
        }
        Ok(out)
    }
}

/// The chained records a retention run is about to delete ([`AuditIndex::expiring_chains`]):
/// per org their `seq`s, and where each one is stored, to read its hash. Holds searchers of the
/// partitions: drop it before deleting.
pub struct ExpiringChains {
    index: AuditIndex,
    searchers: Vec<(tantivy::Searcher, PathBuf)>,
    /// Per org, per `seq`: where the record is, and its `time` (µs).
    orgs: HashMap<String, BTreeMap<u64, (u32, DocAddress, i64)>>,
}

impl ExpiringChains {
    /// The orgs with chained records about to be deleted.
    pub fn orgs(&self) -> impl Iterator<Item = &str> {
        self.orgs.keys().map(String::as_str)
    }

    /// The `seq`s of `org`'s records about to be deleted.
    pub fn seqs(&self, org: &str) -> BTreeSet<u64> {
        self.orgs
            .get(org)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The hash and time of `org`'s record `seq` (one of [`Self::seqs`]): reads the stored
    /// record for the hash.
    pub fn about(&self, org: &str, seq: u64) -> Result<Deleted, IndexError> {
        let corrupt = |message: String| IndexError::Corrupt {
            path: self.index.shared.dir.clone(),
            message,
        };
        let &(at, addr, time) = self
            .orgs
            .get(org)
            .and_then(|m| m.get(&seq))
            .ok_or_else(|| corrupt(format!("no record of org {org} at seq {seq} to delete")))?;
        let (searcher, dir) = &self.searchers[at as usize];
        let record = load(searcher, dir, &self.index.shared.fields, addr)?;
        ChainHead::of(&record)
            .filter(|h| h.seq == seq)
            .map(|h| Deleted {
                hash: h.hash,
                time: DateTime::from_timestamp_micros(time),
            })
            .ok_or_else(|| {
                corrupt(format!(
                    "the record of org {org} at seq {seq} has no chain fields"
                ))
            })
    }
}
