//! [`AuditIndex::scan`]: every match of a search, newest first, from one snapshot, in bounded
//! memory, for exports.
//!
//! A cursor walk pays for every page again: each page rescans the partitions for the page after
//! the cursor and recounts the total. A scan visits each match a fixed number of times instead:
//!
//! 1. when it starts, it takes a searcher of every partition that may hold matches (the snapshot,
//!    together with the LSN bound that search's first page uses), runs the query once per
//!    segment, and keeps the matches passing the time range and the snapshot as a bit per
//!    document (`max_doc / 8` bytes a segment) plus a histogram of their times per partition:
//!    the exact total is known before the first record is read;
//! 2. then, partition by partition, newest first, it cuts the partition's time range into
//!    windows of at most about [`WINDOW_ROWS`] matches (by the histogram), collects each window's
//!    matches from the bits (16 bytes each), sorts them newest first (time desc, then id desc:
//!    the order of search) and hands over their stored records one by one.
//!
//! Memory: the bits, the histograms and one window, whatever the number of matches. The index
//! files are read through tantivy's memory maps, so every page read would stay in the process's
//! resident set (gigabytes of document store for millions of records, though the kernel may drop
//! them at will); the scan gives the pages of the files it reads back after each partition's
//! count and every few thousand records ([`Mappings`]).

use super::audit_index::AuditIndex;
use super::collect::{DocFilter, FastCol, SegmentFilter};
use super::error::IndexError;
use super::query::{Plan, SearchQuery};
use super::schema::col;
use super::stored::stored_bytes;
use std::collections::VecDeque;
use std::path::PathBuf;
use tantivy::Directory;
use tantivy::columnar::StrColumn;
use tantivy::directory::OwnedBytes;
use tantivy::query::EnableScoring;
use tantivy::schema::{Field, Value};
use tantivy::store::StoreReader;
use tantivy::{DocId, Searcher, TantivyDocument};

/// Most matches a window holds, unless a single histogram bucket holds more.
pub(crate) const WINDOW_ROWS: u32 = 1 << 17;
/// Buckets of a partition's time histogram.
const BUCKETS: usize = 4096;
/// Decompressed blocks of a segment's document store kept while its records are read: reading
/// newest first walks each segment's blocks backwards, one block after the other.
const STORE_CACHE_BLOCKS: usize = 8;
/// Records read between two [`Mappings::release`]: a window's records may lie far apart in the
/// store (a selective filter), so its pages are given back as it goes, not only at its end.
const RELEASE_EVERY: usize = 8192;

/// The matches of a search, ready to be read newest first, from [`AuditIndex::scan`]; how it
/// keeps memory bounded: the module docs of `index/scan.rs`.
pub struct Scan {
    parts: VecDeque<PartScan>,
    total: u64,
    doc_field: Field,
}

/// One segment's matches not yet handed over.
struct SegScan {
    bits: Vec<u64>,
    time: FastCol<i64>,
    ids: Option<StrColumn>,
}

/// One partition's matches not yet handed over.
struct PartScan {
    searcher: Searcher,
    dir: PathBuf,
    segments: Vec<SegScan>,
    /// One per segment, opened when the partition's records are first read.
    stores: Vec<StoreReader>,
    /// The files the scan reads, as mapped: their pages are given back after each window.
    mappings: Mappings,
    /// Bucket `i` counts the matches with `lo + i * width <= time < lo + (i + 1) * width`.
    lo: i64,
    width: i64,
    buckets: Vec<u32>,
    /// Buckets `..top` are still to be handed over (newest last).
    top: usize,
    window_rows: u32,
}

/// One match of a window.
#[derive(Debug, Clone, Copy)]
struct Entry {
    time: i64,
    segment: u32,
    doc: DocId,
}

impl AuditIndex {
    /// Every record of `org` matching `q` (the time range, the retention floor and the filters of
    /// [`AuditIndex::search`]), in search's order, from the snapshot a first search page would
    /// see now. Reads every partition's matches once to count them; [`Scan::for_each`] reads the
    /// records.
    pub fn scan(&self, org: &str, q: &SearchQuery) -> Result<Scan, IndexError> {
        self.scan_in_windows(org, q, WINDOW_ROWS)
    }

    /// [`AuditIndex::scan`] with windows of at most about `window_rows` matches.
    pub(crate) fn scan_in_windows(
        &self,
        org: &str,
        q: &SearchQuery,
        window_rows: u32,
    ) -> Result<Scan, IndexError> {
        let plan = Plan::new(&self.shared.fields, org, q)?;
        let lsn_below = self.walk_bound();
        // The time range and the snapshot, checked per document as search checks them.
        let doc_filter = DocFilter {
            since: plan.since,
            until: plan.until,
            lsn_below: Some(lsn_below),
        };
        let since = plan.since.unwrap_or(i64::MIN);
        let until = plan.until.unwrap_or(i64::MAX);
        let mut parts = VecDeque::new();
        let mut total = 0;
        for p in self.shared.partitions_newest_first(plan.since, plan.until) {
            let Some(searcher) = self.shared.searcher(&p)? else {
                continue;
            };
            let err = |what: &'static str| {
                let dir = p.dir.clone();
                move |e: tantivy::TantivyError| IndexError::tantivy(&dir, what, e)
            };
            let weight = plan
                .query
                .weight(EnableScoring::disabled_from_searcher(&searcher))
                .map_err(err("prepare the export query"))?;
            let filters = searcher
                .segment_readers()
                .iter()
                .map(|reader| SegmentFilter::new(&doc_filter, reader))
                .collect::<tantivy::Result<Vec<_>>>()
                .map_err(err("read the time and lsn columns"))?;
            // The partition's time range as its segments' statistics give it, within the query's.
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            for (min, max) in filters.iter().filter_map(SegmentFilter::time_range) {
                lo = lo.min(min);
                hi = hi.max(max);
            }
            let (lo, hi) = (lo.max(since), hi.min(until.saturating_sub(1)));
            if lo > hi {
                continue;
            }
            let width = ((i128::from(hi) - i128::from(lo)) / BUCKETS as i128 + 1) as i64;
            let mut buckets = vec![0u32; BUCKETS];
            let mut segments = Vec::new();
            let mut count = 0u64;
            for (reader, filter) in searcher.segment_readers().iter().zip(filters) {
                let alive = reader.alive_bitset();
                let mut bits = vec![0u64; (reader.max_doc() as usize).div_ceil(64)];
                weight
                    .for_each_no_score(reader, &mut |docs| {
                        for &doc in docs {
                            if alive.is_some_and(|a| !a.is_alive(doc)) {
                                continue;
                            }
                            let Some(t) = filter.accept(doc) else {
                                continue;
                            };
                            bits[doc as usize / 64] |= 1 << (doc % 64);
                            buckets[bucket(t, lo, width)] += 1;
                            count += 1;
                        }
                    })
                    .map_err(err("run the export query"))?;
                segments.push(SegScan {
                    bits,
                    time: filter.into_time(),
                    ids: reader
                        .fast_fields()
                        .str(col::ID)
                        .map_err(err("read the id column"))?,
                });
            }
            let mappings = Mappings::of(&searcher);
            mappings.release();
            if count == 0 {
                continue;
            }
            total += count;
            parts.push_back(PartScan {
                searcher,
                dir: p.dir.clone(),
                segments,
                stores: Vec::new(),
                mappings,
                lo,
                width,
                buckets,
                top: BUCKETS,
                window_rows,
            });
        }
        Ok(Scan {
            parts,
            total,
            doc_field: self.shared.fields.doc,
        })
    }
}

#[inline]
fn bucket(t: i64, lo: i64, width: i64) -> usize {
    ((i128::from(t) - i128::from(lo)) / i128::from(width)) as usize
}

impl Scan {
    /// The number of records [`Scan::for_each`] hands over.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Calls `f` with each record's stored canonical JSON, newest first, until all are handed
    /// over or `f` fails. Returns how many were.
    pub fn for_each<E: From<IndexError>>(
        mut self,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut window = Vec::new();
        let mut n = 0;
        while let Some(part) = self.parts.front_mut() {
            if !part.next_window(&mut window)? {
                self.parts.pop_front();
                continue;
            }
            if part.stores.is_empty() {
                part.open_stores()?;
            }
            for (i, e) in window.iter().enumerate() {
                if i > 0 && i % RELEASE_EVERY == 0 {
                    part.mappings.release();
                }
                let store = &part.stores[e.segment as usize];
                let raw = store
                    .get_document_bytes(e.doc)
                    .map_err(|e| IndexError::tantivy(&part.dir, "read a stored record", e))?;
                match stored_bytes(&raw, self.doc_field) {
                    Some(json) => f(json)?,
                    None => {
                        // Not the layout `stored_bytes` reads: let tantivy decode it.
                        let doc: TantivyDocument = store.get(e.doc).map_err(|e| {
                            IndexError::tantivy(&part.dir, "read a stored record", e)
                        })?;
                        let json = doc
                            .get_first(self.doc_field)
                            .and_then(|v| v.as_bytes())
                            .ok_or_else(|| IndexError::Corrupt {
                                path: part.dir.clone(),
                                message: "a document has no stored record".into(),
                            })?;
                        f(json)?;
                    }
                }
                n += 1;
            }
            part.mappings.release();
        }
        Ok(n)
    }
}

/// The index files a scan reads — each segment's postings (`.idx`), columns (`.fast`) and
/// document store (`.store`) — where the process maps them, to give their pages back.
pub(crate) struct Mappings(pub(crate) Vec<OwnedBytes>);

impl Mappings {
    /// The files of `searcher`'s segments, each through the directory's cache of maps (the very
    /// mapping the segment readers read), kept only where /proc/self/maps confirms the bytes are
    /// that file's whole read-only shared mapping. Empty elsewhere than on Linux.
    pub(crate) fn of(searcher: &Searcher) -> Mappings {
        let mut mapped = Vec::new();
        if !cfg!(target_os = "linux") {
            return Mappings(mapped);
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        for reader in searcher.segment_readers() {
            for ext in ["idx", "fast", "store"] {
                let name = format!("{}.{ext}", reader.segment_id().uuid_string());
                let bytes = searcher
                    .index()
                    .directory()
                    .open_read(std::path::Path::new(&name))
                    .ok()
                    .and_then(|f| f.read_bytes().ok());
                if let Some(bytes) = bytes
                    && is_file_mapping(&maps, bytes.as_slice(), &name)
                {
                    mapped.push(bytes);
                }
            }
        }
        Mappings(mapped)
    }

    /// Gives the pages back: they leave the process's resident set but stay in the page cache,
    /// so reading them again costs a minor fault.
    fn release(&self) {
        #[cfg(target_os = "linux")]
        for bytes in &self.0 {
            let s = bytes.as_slice();
            // SAFETY: `s` is the whole of a read-only shared mapping of a committed segment's
            // file (checked against /proc/self/maps in `Mappings::of`, kept mapped by `bytes`).
            // MADV_DONTNEED on a file mapping only drops this process's page table entries: the
            // next access maps the file's unchanged page again. Nothing else is touched: the
            // range starts at the mapping's start and ends within its last page.
            #[allow(unsafe_code)]
            unsafe {
                libc::madvise(
                    s.as_ptr() as *mut libc::c_void,
                    s.len(),
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

/// Whether `bytes` is exactly the start of a mapping of the file `name` in `maps` (the text of
/// `/proc/self/maps`), and lies within it.
fn is_file_mapping(maps: &str, bytes: &[u8], name: &str) -> bool {
    let start = bytes.as_ptr() as usize;
    let end = start + bytes.len();
    !bytes.is_empty()
        && maps.lines().any(|line| {
            let mut parts = line.split_whitespace();
            let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
                return false;
            };
            let path = parts.nth(3).unwrap_or("");
            let Some((lo, hi)) = range.split_once('-') else {
                return false;
            };
            let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            else {
                return false;
            };
            lo == start
                && end <= hi
                && perms.starts_with('r')
                && !perms.contains('w')
                && perms.ends_with('s')
                && path.rsplit('/').next() == Some(name)
        })
}

impl PartScan {
    fn open_stores(&mut self) -> Result<(), IndexError> {
        for reader in self.searcher.segment_readers() {
            let store = reader
                .get_store_reader(STORE_CACHE_BLOCKS)
                .map_err(|e| IndexError::io(&self.dir, e))?;
            self.stores.push(store);
        }
        Ok(())
    }

    /// Fills `out` with the newest window of matches left, sorted newest first; `false` when
    /// none are left.
    fn next_window(&mut self, out: &mut Vec<Entry>) -> Result<bool, IndexError> {
        out.clear();
        // The newest buckets left, as many as fit in a window (at least one that is not empty).
        let end = self.top;
        let mut rows = 0u32;
        while self.top > 0 {
            let b = self.buckets[self.top - 1];
            if rows > 0 && rows.saturating_add(b) > self.window_rows {
                break;
            }
            rows = rows.saturating_add(b);
            self.top -= 1;
        }
        if rows == 0 {
            return Ok(false);
        }
        let from = i128::from(self.lo) + self.top as i128 * i128::from(self.width);
        let to = i128::from(self.lo) + end as i128 * i128::from(self.width);
        out.reserve(rows as usize);
        for (segment, seg) in self.segments.iter_mut().enumerate() {
            for (w, word) in seg.bits.iter_mut().enumerate() {
                let mut rest = *word;
                while rest != 0 {
                    let bit = rest.trailing_zeros();
                    rest &= rest - 1;
                    let doc = (w * 64) as DocId + bit;
                    let t = seg.time.get(doc).unwrap_or(i64::MIN);
                    if (from..to).contains(&i128::from(t)) {
                        out.push(Entry {
                            time: t,
                            segment: segment as u32,
                            doc,
                        });
                        *word &= !(1u64 << bit);
                    }
                }
            }
        }
        out.sort_unstable_by_key(|e| std::cmp::Reverse(e.time));
        self.break_ties(out)?;
        Ok(true)
    }

    /// Orders the entries of equal time by id, descending (byte order), as search does.
    fn break_ties(&self, out: &mut [Entry]) -> Result<(), IndexError> {
        let mut i = 0;
        while i < out.len() {
            let mut j = i + 1;
            while j < out.len() && out[j].time == out[i].time {
                j += 1;
            }
            if j - i > 1 {
                let mut keyed = Vec::with_capacity(j - i);
                for e in &out[i..j] {
                    let mut id = String::new();
                    if let Some(ids) = &self.segments[e.segment as usize].ids
                        && let Some(ord) = ids.ords().first(e.doc)
                    {
                        ids.ord_to_str(ord, &mut id)
                            .map_err(|e| IndexError::io(&self.dir, e))?;
                    }
                    keyed.push((id, *e));
                }
                keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0));
                for (slot, (_, e)) in out[i..j].iter_mut().zip(keyed) {
                    *slot = e;
                }
            }
            i = j;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_is_recognised_only_whole_read_only_shared_and_of_its_file() {
        let data = vec![0u8; 10_000];
        let start = data.as_ptr() as usize;
        let line = |perms: &str, lo: usize, hi: usize, path: &str| {
            format!("{lo:x}-{hi:x} {perms} 00000000 fd:00 1234                       {path}\n")
        };
        let name = "0123abcd.store";
        let file = format!("/data/index/2026-W48/{name}");
        let ok = line("r--s", start, start + 12_288, &file);
        assert!(is_file_mapping(&ok, &data, name));
        for bad in [
            line("rw-s", start, start + 12_288, &file),
            line("r--p", start, start + 12_288, &file),
            line("r--s", start - 4096, start + 12_288, &file),
            line("r--s", start, start + 4096, &file),
            line(
                "r--s",
                start,
                start + 12_288,
                "/data/index/2026-W48/other.store",
            ),
            line("r--s", start, start + 12_288, ""),
        ] {
            assert!(!is_file_mapping(&bad, &data, name), "{bad}");
        }
        assert!(!is_file_mapping(&ok, &[], name));
    }
}
