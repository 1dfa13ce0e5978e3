//! [`FacetCache`]: the facet counts of whole segments, kept across queries.

use super::facet_fruit::FacetFruit;
use std::collections::HashMap;
use std::sync::Arc;
use tantivy::SegmentReader;

/// The facet counts of whole segments, per query: for a segment wholly inside a query's time
/// range and wholly below its snapshot, the counts depend only on the segment's documents, its
/// deletions and the query's other filters, and a segment's documents never change. So they are
/// kept by segment id, deletion state and query; a merge makes a new segment (a new key), a
/// deletion a new deletion state, and entries nobody asks for are evicted, least recently used
/// first, beyond a memory budget.
pub(crate) struct FacetCache {
    state: std::sync::Mutex<CacheState>,
    budget_bytes: usize,
    /// Segments with fewer documents are not kept (cheap to count, and short-lived).
    min_docs: u32,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct FacetKey {
    segment: tantivy::index::SegmentId,
    delete_opstamp: Option<u64>,
    deleted: u32,
    query: Arc<str>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<FacetKey, CacheEntry>,
    bytes: usize,
    tick: u64,
}

struct CacheEntry {
    fruit: Arc<FacetFruit>,
    bytes: usize,
    used: u64,
}

impl FacetCache {
    /// A cache of at most about `budget_bytes`, of segments of at least `min_docs` documents.
    pub fn new(budget_bytes: usize, min_docs: u32) -> FacetCache {
        FacetCache {
            state: std::sync::Mutex::new(CacheState::default()),
            budget_bytes,
            min_docs,
            hits: 0.into(),
            misses: 0.into(),
        }
    }

    /// Lookups answered from the cache and not, so far.
    pub fn counters(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    pub(super) fn key(&self, reader: &SegmentReader, query: &Arc<str>) -> Option<FacetKey> {
        (reader.num_docs() >= self.min_docs).then(|| FacetKey {
            segment: reader.segment_id(),
            delete_opstamp: reader.delete_opstamp(),
            deleted: reader.num_deleted_docs(),
            query: query.clone(),
        })
    }

    pub(super) fn get(&self, key: &FacetKey) -> Option<Arc<FacetFruit>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.tick += 1;
        let tick = state.tick;
        match state.entries.get_mut(key) {
            Some(e) => {
                e.used = tick;
                self.hits.fetch_add(1, Relaxed);
                Some(e.fruit.clone())
            }
            None => {
                self.misses.fetch_add(1, Relaxed);
                None
            }
        }
    }

    pub(super) fn put(&self, key: FacetKey, fruit: Arc<FacetFruit>) {
        let bytes = fruit.approx_bytes() + key.query.len() + 64;
        if bytes > self.budget_bytes / 4 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.tick += 1;
        let used = state.tick;
        if let Some(old) = state.entries.insert(key, CacheEntry { fruit, bytes, used }) {
            state.bytes -= old.bytes;
        }
        state.bytes += bytes;
        if state.bytes > self.budget_bytes {
            // Down to three quarters of the budget, least recently used first.
            let mut by_use: Vec<(u64, FacetKey)> = state
                .entries
                .iter()
                .map(|(k, e)| (e.used, k.clone()))
                .collect();
            by_use.sort_unstable_by_key(|(used, _)| *used);
            for (_, k) in by_use {
                if state.bytes <= self.budget_bytes / 4 * 3 {
                    break;
                }
                if let Some(e) = state.entries.remove(&k) {
                    state.bytes -= e.bytes;
                }
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::collect::test_index::{Rec, searcher};

    #[test]
    fn keeps_segments_large_enough_within_its_budget() {
        let s = searcher(&[
            vec![(1, Rec::default()), (2, Rec::default())],
            vec![(3, Rec::default())],
        ]);
        let (big, small) = {
            let r = s.segment_readers();
            if r[0].num_docs() == 2 {
                (&r[0], &r[1])
            } else {
                (&r[1], &r[0])
            }
        };
        let q: Arc<str> = "q".into();
        let cache = FacetCache::new(1 << 20, 2);
        assert!(cache.key(small, &q).is_none(), "fewer than min_docs");
        let key = cache.key(big, &q).unwrap();
        assert!(cache.get(&key).is_none());
        cache.put(
            key.clone(),
            Arc::new(FacetFruit {
                count: 2,
                ..FacetFruit::default()
            }),
        );
        assert_eq!(cache.get(&key).unwrap().count, 2);
        assert_eq!(cache.counters(), (1, 1));
        // Another query is another entry.
        assert!(
            cache
                .get(&cache.key(big, &"other".into()).unwrap())
                .is_none()
        );
        // An entry larger than a quarter of the budget is not kept.
        let tiny = FacetCache::new(100, 0);
        let key = tiny.key(big, &q).unwrap();
        tiny.put(key.clone(), Arc::new(FacetFruit::default()));
        assert!(tiny.get(&key).is_none());
        assert_eq!(tiny.len(), 0);
    }

    #[test]
    fn evicts_the_least_recently_used_beyond_its_budget() {
        let s = searcher(&[vec![(1, Rec::default())]]);
        let reader = &s.segment_readers()[0];
        let fruit = Arc::new(FacetFruit::default());
        let entry = fruit.approx_bytes() + 1 + 64;
        // Room for four entries; a fifth brings it down to three quarters.
        let cache = FacetCache::new(entry * 4, 0);
        let keys: Vec<FacetKey> = (0..5)
            .map(|i| cache.key(reader, &i.to_string().into()).unwrap())
            .collect();
        for key in &keys[..4] {
            cache.put(key.clone(), fruit.clone());
        }
        assert!(cache.get(&keys[0]).is_some(), "now the most recently used");
        cache.put(keys[4].clone(), fruit.clone());
        assert_eq!(cache.len(), 3);
        for (i, kept) in [(0, true), (1, false), (2, false), (3, true), (4, true)] {
            assert_eq!(cache.get(&keys[i]).is_some(), kept, "entry {i}");
        }
    }
}
