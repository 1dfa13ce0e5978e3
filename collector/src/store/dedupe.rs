//! `DedupeSet`: whether an (org, id) is already stored, answered from memory and verified exactly.
//!
//! Every stored record's [`uid_hash`](crate::uid::uid_hash) is kept in a set. A miss proves the
//! record is new. A hit is only a hint (two uids can share a hash), so it is verified: against the
//! exact `recent` map of records written to the WAL but not yet visible in the index, then against
//! the index itself through [`IdLookup`]. A colliding record that is not a real duplicate is stored.
//!
//! # Memory
//!
//! The hash set holds a bare `u64` per record in a swiss table (8 bytes + 1 control byte per slot,
//! 7/16 to 7/8 of slots full between doublings): 10–21 bytes per record, ~16 on average, so
//! 10 million records take about 160 MiB. The `recent` map holds only the records not yet visible
//! in the index (about 100 bytes each plus org and id) and shrinks as the index catches up.

use crate::store::Lsn;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Exact membership of an (org, id) in the index: the source of truth for records that are no
/// longer in the `recent` map. Called on the store's writer thread, only when a hash matches.
pub trait IdLookup: Send + Sync {
    /// Whether the index holds a record with this org and id. `time` (µs) is the time of the
    /// record being checked: where its original most likely is, so where to look first.
    fn contains(&self, org: &str, id: &str, time: i64) -> bool;
}

/// A hasher for keys that already are uniformly distributed 64-bit hashes: passes them through.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by our keys; fold anything else rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type Prehashed = BuildHasherDefault<PrehashedHasher>;

#[derive(Debug)]
struct RecentEntry {
    org: Box<str>,
    id: Box<str>,
    lsn: Lsn,
}

/// The set of stored (org, id) pairs. See the module docs for how a hash hit is verified.
pub struct DedupeSet {
    hashes: HashSet<u64, Prehashed>,
    /// Records in the WAL but not yet visible in the index, by uid hash.
    recent: HashMap<u64, Vec<RecentEntry>, Prehashed>,
    /// The keys of `recent` in LSN order, for pruning.
    recent_order: VecDeque<(Lsn, u64)>,
    lookup: Arc<dyn IdLookup>,
}

impl std::fmt::Debug for DedupeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupeSet")
            .field("hashes", &self.hashes.len())
            .field("recent", &self.recent_order.len())
            .finish_non_exhaustive()
    }
}

impl DedupeSet {
    /// An empty set that verifies hash hits outside the recent map with `lookup`.
    pub fn new(lookup: Arc<dyn IdLookup>) -> Self {
        DedupeSet {
            hashes: HashSet::default(),
            recent: HashMap::default(),
            recent_order: VecDeque::new(),
            lookup,
        }
    }

    /// Makes room for `additional` more hashes.
    pub fn reserve(&mut self, additional: usize) {
        self.hashes.reserve(additional);
    }

    /// Adds the hash of a record the index holds (the rebuild at start).
    pub fn insert_hash(&mut self, hash: u64) {
        self.hashes.insert(hash);
    }

    /// Whether (org, id) is stored, `hash` being `uid_hash(org, id)`; `time` (µs) is the checked
    /// record's time, a hint for the index lookup.
    pub fn contains(&self, org: &str, id: &str, hash: u64, time: i64) -> bool {
        if !self.hashes.contains(&hash) {
            return false;
        }
        let in_recent = self
            .recent
            .get(&hash)
            .is_some_and(|v| v.iter().any(|e| &*e.org == org && &*e.id == id));
        in_recent || self.lookup.contains(org, id, time)
    }

    /// Records that (org, id) was written to the WAL at `lsn` and is not yet visible in the index.
    /// LSNs must be inserted in increasing order.
    pub fn insert_recent(&mut self, org: &str, id: &str, hash: u64, lsn: Lsn) {
        debug_assert!(self.recent_order.back().is_none_or(|&(last, _)| last < lsn));
        self.hashes.insert(hash);
        self.recent.entry(hash).or_default().push(RecentEntry {
            org: org.into(),
            id: id.into(),
            lsn,
        });
        self.recent_order.push_back((lsn, hash));
    }

    /// Forgets the recent entries with LSN ≤ `lsn`: the index now answers for them. Their hashes
    /// stay in the set.
    pub fn forget_recent_through(&mut self, lsn: Lsn) {
        while let Some(&(entry_lsn, hash)) = self.recent_order.front() {
            if entry_lsn > lsn {
                break;
            }
            self.recent_order.pop_front();
            if let Entry::Occupied(mut slot) = self.recent.entry(hash) {
                slot.get_mut().retain(|e| e.lsn != entry_lsn);
                if slot.get().is_empty() {
                    slot.remove();
                }
            }
        }
    }

    /// How many distinct hashes are stored.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no hash is stored.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// How many records are in the recent map.
    pub fn recent_len(&self) -> usize {
        self.recent_order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uid::uid_hash;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Index(Mutex<HashSet<(String, String)>>);

    impl IdLookup for Index {
        fn contains(&self, org: &str, id: &str, _time: i64) -> bool {
            self.0.lock().unwrap().contains(&(org.into(), id.into()))
        }
    }

    #[test]
    fn recent_then_index_answers() {
        let index = Arc::new(Index::default());
        let mut set = DedupeSet::new(index.clone());
        let h = uid_hash("acme", "a");
        assert!(!set.contains("acme", "a", h, 0));
        set.insert_recent("acme", "a", h, 7);
        assert!(set.contains("acme", "a", h, 0));
        assert_eq!(set.recent_len(), 1);

        // Pruned before the index has it: the lookup says no. (The store only prunes once the
        // index can see the record, so this only shows that the recent map is no longer asked.)
        set.forget_recent_through(7);
        assert_eq!(set.recent_len(), 0);
        assert!(!set.contains("acme", "a", h, 0));
        index.0.lock().unwrap().insert(("acme".into(), "a".into()));
        assert!(set.contains("acme", "a", h, 0));
    }

    #[test]
    fn forged_hash_collision_is_not_a_duplicate() {
        let mut set = DedupeSet::new(Arc::new(Index::default()));
        let h = uid_hash("acme", "a");
        set.insert_recent("acme", "a", h, 0);
        // Another uid with the same hash (forged: pass a's hash for b).
        assert!(!set.contains("acme", "b", h, 0));
        set.insert_recent("acme", "b", h, 1);
        assert!(set.contains("acme", "b", h, 0));
        assert!(set.contains("acme", "a", h, 0));
        set.forget_recent_through(0);
        assert!(!set.contains("acme", "a", h, 0));
        assert!(set.contains("acme", "b", h, 0));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn prehashed_hasher_passes_u64_through() {
        let mut h = PrehashedHasher::default();
        h.write_u64(0xdead_beef);
        assert_eq!(h.finish(), 0xdead_beef);
    }
}
