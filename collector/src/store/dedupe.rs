//! `DedupeSet`: whether an (org, id) is already stored, answered from memory and verified exactly.
//!
//! Every stored record's [`uid_hash`](crate::uid::uid_hash) is kept in a set. A miss proves the
//! record is new. A hit is only a hint (two uids can share a hash), so it is verified: against the
//! exact `recent` map of records written to the WAL but not yet visible in the index, then against
//! the index itself through [`IdLookup`]. A colliding record that is not a real duplicate is stored.
//!
//! A record found stored comes with what it says ([`Seen`]): a resend is only a resend if it says
//! the same ([`AuditRecord::content_json`]); the same id with other content is another record
//! (refused by the writer, never taken as a duplicate of the first). The recent map keeps a
//! [`Fingerprints`] of each record's content for that; the index gives back the stored record.
//!
//! # Memory
//!
//! The hash set holds a bare `u64` per record in a swiss table (8 bytes + 1 control byte per slot,
//! 7/16 to 7/8 of slots full between doublings): 10–21 bytes per record, ~16 on average, so
//! 10 million records take about 160 MiB. The `recent` map holds only the records not yet visible
//! in the index (about 100 bytes each plus org and id) and shrinks as the index catches up.

use crate::store::Lsn;
use codestax_common::AuditRecord;
use codestax_common::chain::Unsealed;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Exact membership of an (org, id) in the index: the source of truth for records that are no
/// longer in the `recent` map. Called on the store's writer thread, only when a hash matches.
pub trait IdLookup: Send + Sync {
    /// The record the index holds with this org and id, if any. `time` (µs) is the time of the
    /// record being checked: where its original most likely is, so where to look first.
    fn stored(&self, org: &str, id: &str, time: i64) -> Option<AuditRecord>;

    /// Whether the index holds a record with this org and id, without reading it back (the
    /// replay at start only needs that).
    fn contains(&self, org: &str, id: &str, time: i64) -> bool {
        self.stored(org, id, time).is_some()
    }
}

/// Fingerprints of records' content ([`AuditRecord::content_json`]), under a key drawn at start:
/// a writer who cannot read the key cannot make other content match a record's fingerprint.
/// They live only in memory, so the key need not outlive the process.
#[derive(Debug, Clone, Default)]
pub struct Fingerprints(RandomState);

impl Fingerprints {
    pub fn of(&self, record: &AuditRecord) -> u64 {
        let mut hasher = self.0.build_hasher();
        record.hash_content(&mut hasher);
        hasher.finish()
    }

    /// [`Fingerprints::of`] the record `unsealed` was made from, from the JSON already written.
    pub fn of_unsealed(&self, unsealed: &Unsealed) -> u64 {
        let mut hasher = self.0.build_hasher();
        unsealed.hash_content(&mut hasher);
        hasher.finish()
    }
}

/// What the dedupe set knows of an (org, id).
#[derive(Debug)]
pub enum Seen {
    /// Not stored.
    New,
    /// Stored, not yet visible in the index: its content's fingerprint.
    Recent { fingerprint: u64 },
    /// Stored and indexed: the record as stored.
    Indexed(Box<AuditRecord>),
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
    fingerprint: u64,
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

    /// Whether (org, id) is stored, and what it says, `hash` being `uid_hash(org, id)`; `time`
    /// (µs) is the checked record's time, a hint for the index lookup.
    pub fn seen(&self, org: &str, id: &str, hash: u64, time: i64) -> Seen {
        if !self.hashes.contains(&hash) {
            return Seen::New;
        }
        if let Some(e) = self.recent_entry(org, id, hash) {
            return Seen::Recent {
                fingerprint: e.fingerprint,
            };
        }
        match self.lookup.stored(org, id, time) {
            Some(record) => Seen::Indexed(Box::new(record)),
            None => Seen::New,
        }
    }

    /// Whether (org, id) is stored, without what it says ([`DedupeSet::seen`]).
    pub fn contains(&self, org: &str, id: &str, hash: u64, time: i64) -> bool {
        self.hashes.contains(&hash)
            && (self.recent_entry(org, id, hash).is_some() || self.lookup.contains(org, id, time))
    }

    fn recent_entry(&self, org: &str, id: &str, hash: u64) -> Option<&RecentEntry> {
        self.recent
            .get(&hash)?
            .iter()
            .find(|e| &*e.org == org && &*e.id == id)
    }

    /// Records that (org, id), whose content has `fingerprint`, was written to the WAL at `lsn`
    /// and is not yet visible in the index. LSNs must be inserted in increasing order.
    pub fn insert_recent(&mut self, org: &str, id: &str, hash: u64, fingerprint: u64, lsn: Lsn) {
        debug_assert!(self.recent_order.back().is_none_or(|&(last, _)| last < lsn));
        self.hashes.insert(hash);
        self.recent.entry(hash).or_default().push(RecentEntry {
            org: org.into(),
            id: id.into(),
            lsn,
            fingerprint,
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

/// A stand-in for the index in the store's tests: the records by org and id.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct MemoryIndex(std::sync::Mutex<HashMap<(String, String), AuditRecord>>);

#[cfg(test)]
impl MemoryIndex {
    pub(crate) fn with(records: &[&AuditRecord]) -> Arc<MemoryIndex> {
        let index = MemoryIndex::default();
        for r in records {
            index.add(r);
        }
        Arc::new(index)
    }

    pub(crate) fn add(&self, r: &AuditRecord) {
        let key = (r.org_id.clone(), r.id().to_owned());
        self.0.lock().unwrap().insert(key, r.clone());
    }
}

#[cfg(test)]
impl IdLookup for MemoryIndex {
    fn stored(&self, org: &str, id: &str, _time: i64) -> Option<AuditRecord> {
        self.0
            .lock()
            .unwrap()
            .get(&(org.into(), id.into()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uid::uid_hash;

    fn record(org: &str, id: &str, message: &str) -> AuditRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "org_id": org, "time": "2026-12-08T10:00:00Z", "action": "user.login",
            "actor": {"id": "u-1"}, "message": message,
        }))
        .unwrap()
    }

    /// The fingerprint `seen` reports, if any.
    fn fingerprint(seen: Seen, prints: &Fingerprints) -> Option<u64> {
        match seen {
            Seen::New => None,
            Seen::Recent { fingerprint } => Some(fingerprint),
            Seen::Indexed(record) => Some(prints.of(&record)),
        }
    }

    #[test]
    fn recent_then_index_answers_with_the_content() {
        let index = Arc::new(MemoryIndex::default());
        let prints = Fingerprints::default();
        let mut set = DedupeSet::new(index.clone());
        let a = record("acme", "a", "hello");
        let h = uid_hash("acme", "a");
        assert!(matches!(set.seen("acme", "a", h, 0), Seen::New));
        set.insert_recent("acme", "a", h, prints.of(&a), 7);
        assert_eq!(
            fingerprint(set.seen("acme", "a", h, 0), &prints),
            Some(prints.of(&a))
        );
        assert_eq!(set.recent_len(), 1);

        // Pruned before the index has it: the lookup says no. (The store only prunes once the
        // index can see the record, so this only shows that the recent map is no longer asked.)
        set.forget_recent_through(7);
        assert_eq!(set.recent_len(), 0);
        assert!(matches!(set.seen("acme", "a", h, 0), Seen::New));
        index.add(&a);
        assert_eq!(
            fingerprint(set.seen("acme", "a", h, 0), &prints),
            Some(prints.of(&a))
        );
    }

    #[test]
    fn forged_hash_collision_is_not_a_duplicate() {
        let prints = Fingerprints::default();
        let mut set = DedupeSet::new(Arc::new(MemoryIndex::default()));
        let h = uid_hash("acme", "a");
        set.insert_recent("acme", "a", h, 1, 0);
        // Another uid with the same hash (forged: pass a's hash for b).
        assert!(matches!(set.seen("acme", "b", h, 0), Seen::New));
        set.insert_recent("acme", "b", h, 2, 1);
        assert_eq!(fingerprint(set.seen("acme", "b", h, 0), &prints), Some(2));
        assert_eq!(fingerprint(set.seen("acme", "a", h, 0), &prints), Some(1));
        set.forget_recent_through(0);
        assert!(matches!(set.seen("acme", "a", h, 0), Seen::New));
        assert_eq!(fingerprint(set.seen("acme", "b", h, 0), &prints), Some(2));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn fingerprints_are_of_the_content_only() {
        let prints = Fingerprints::default();
        let a = record("acme", "a", "hello");
        // Who sent it, when it arrived, its id and chain fields are not its content.
        let mut resent = a.clone();
        resent.id = Some("b".into());
        resent.received_at = Some(chrono::Utc::now());
        resent.provenance = Some(codestax_common::Provenance::Collector);
        resent.seq = Some(3);
        assert_eq!(prints.of(&resent), prints.of(&a));
        assert_ne!(prints.of(&record("acme", "a", "hello!")), prints.of(&a));
        assert_eq!(prints.of_unsealed(&Unsealed::new(&resent)), prints.of(&a));
        // Another key draws other fingerprints.
        assert_ne!(Fingerprints::default().of(&a), prints.of(&a));
    }

    #[test]
    fn prehashed_hasher_passes_u64_through() {
        let mut h = PrehashedHasher::default();
        h.write_u64(0xdead_beef);
        assert_eq!(h.finish(), 0xdead_beef);
    }
}
