//! [`Tail`]: the stored JSON of the records most recently added to the index, kept in memory for
//! the orgs a reader follows (streams), so that reading an org's newest records in `seq` order
//! needs no search of the new segments and no decompression of doc-store blocks that hold every
//! org's records (each stream used to decompress every block of every new segment to find its
//! org's few records in it).
//!
//! Per followed org the tail holds a run of consecutive `seq`s: every record of the org from the
//! run's first `seq` through its last, as added (the store numbers an org's records in LSN
//! order, and the indexer is handed them in that order). A record the run cannot take (a `seq`
//! past a gap) starts the run over. A reader asks for the records from a `seq` below an LSN
//! bound; the tail answers only when its run starts at or before that `seq`, else the reader
//! walks the index as before. Whatever could make the tail disagree with the index (retention
//! deleting records, the indexer dropping what it added since its last commit) empties it.
//! Bounded: at most [`IndexOptions::tail_bytes`](super::IndexOptions::tail_bytes) in all,
//! oldest records evicted first; nothing is kept for orgs nobody follows.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Bytes an entry is counted for on top of its JSON and its id (the entry with its head, its slot
/// in the eviction order, the allocations' headers).
const ENTRY_OVERHEAD: usize = 160;

/// One record of the tail.
#[derive(Debug, Clone)]
pub struct TailRecord {
    pub seq: u64,
    pub lsn: u64,
    /// The record's canonical JSON, as stored.
    pub json: Arc<[u8]>,
    pub head: TailHead,
}

/// What places a record of the tail besides its `seq`, taken from the record the indexer was
/// handed: a reader that needs no more (a stream without filters) parses nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailHead {
    pub id: Option<Arc<str>>,
    pub time: DateTime<Utc>,
    pub received_at: Option<DateTime<Utc>>,
}

/// What [`Tail::read`] found.
#[derive(Debug)]
pub(crate) enum TailRead {
    /// The tail does not hold the org's records from that `seq` on: read the index.
    NotHere,
    /// The org's records from that `seq` on with an LSN below the bound, in `seq` order, at most
    /// as many as asked; fewer means there are no more below the bound.
    Records(Vec<TailRecord>),
}

/// The tail of every followed org; see the module's documentation.
pub(crate) struct Tail {
    budget: usize,
    /// Orgs followed, kept apart so that adding records costs one load while nobody follows.
    followed: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each followed org: one map, so that adding a record looks its org up once.
    orgs: HashMap<Arc<str>, Followed>,
    /// Every record held, oldest first, by org and LSN: eviction takes the front.
    order: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
}

/// A followed org.
struct Followed {
    /// The org's name, shared with its entries in [`State::order`].
    name: Arc<str>,
    followers: usize,
    /// Its run: consecutive `seq`s, empty until a record comes.
    run: VecDeque<TailRecord>,
}

impl Followed {
    /// Empties the run and its entries in `order`; the bytes they were counted for.
    fn drop_run(&mut self, order: &mut VecDeque<(Arc<str>, u64)>) -> usize {
        if self.run.is_empty() {
            return 0;
        }
        order.retain(|(o, _)| *o != self.name);
        self.run.drain(..).map(|r| counted(&r)).sum()
    }
}

fn counted(r: &TailRecord) -> usize {
    r.json.len() + r.head.id.as_ref().map_or(0, |id| id.len()) + ENTRY_OVERHEAD
}

impl Tail {
    pub fn new(budget: usize) -> Tail {
        Tail {
            budget,
            followed: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts keeping `org`'s records (from the next one added); undone by [`Self::unfollow`].
    pub fn follow(&self, org: &str) {
        let mut s = self.state();
        let f = s
            .orgs
            .entry(Arc::from(org))
            .or_insert_with_key(|name| Followed {
                name: name.clone(),
                followers: 0,
                run: VecDeque::new(),
            });
        f.followers += 1;
        self.followed.store(s.orgs.len(), Ordering::Release);
    }

    /// One follower of `org` less; the last one's going drops the org's run.
    pub fn unfollow(&self, org: &str) {
        let mut guard = self.state();
        let s = &mut *guard;
        let Some(f) = s.orgs.get_mut(org) else {
            return;
        };
        f.followers -= 1;
        if f.followers == 0 {
            s.bytes -= f.drop_run(&mut s.order);
            s.orgs.remove(org);
        }
        self.followed.store(s.orgs.len(), Ordering::Release);
    }

    /// Whether any org is followed (adding records costs nothing more while none is).
    pub fn any_followed(&self) -> bool {
        self.followed.load(Ordering::Acquire) > 0
    }

    /// Takes records as the indexer is handed them, in LSN order: `(lsn, org, seq, held)`;
    /// `held` (the record's JSON and head) is called only for records of followed orgs.
    pub fn add<'a, J: AsRef<[u8]>>(
        &self,
        records: impl Iterator<Item = (u64, &'a str, Option<u64>, impl FnOnce() -> (J, TailHead))>,
    ) {
        if !self.any_followed() || self.budget == 0 {
            return;
        }
        let mut guard = self.state();
        let State { orgs, order, bytes } = &mut *guard;
        for (lsn, org, seq, held) in records {
            let Some(seq) = seq else { continue };
            let Some(f) = orgs.get_mut(org) else {
                continue;
            };
            match f.run.back().map(|r| r.seq) {
                // Already held (a replay), or older than the run.
                Some(last) if seq <= last => continue,
                Some(last) if seq == last + 1 => {}
                // A gap: the run cannot vouch for what lies between.
                Some(_) => *bytes -= f.drop_run(order),
                None => {}
            }
            let (json, head) = held();
            let record = TailRecord {
                seq,
                lsn,
                json: Arc::from(json.as_ref()),
                head,
            };
            *bytes += counted(&record);
            order.push_back((f.name.clone(), lsn));
            f.run.push_back(record);
        }
        while *bytes > self.budget {
            let Some((org, lsn)) = order.pop_front() else {
                break;
            };
            let Some(f) = orgs.get_mut(&org) else {
                continue;
            };
            if f.run.front().is_some_and(|r| r.lsn == lsn) {
                let r = f.run.pop_front().expect("checked above");
                *bytes -= counted(&r);
            }
        }
    }

    /// `org`'s records from `seq` `from` on with an LSN below `lsn_below`, at most `max`; see
    /// [`TailRead`].
    pub fn read(&self, org: &str, from: u64, lsn_below: u64, max: usize) -> TailRead {
        if !self.any_followed() {
            return TailRead::NotHere;
        }
        let s = self.state();
        let Some(run) = s.orgs.get(org).map(|f| &f.run) else {
            return TailRead::NotHere;
        };
        let (Some(first), Some(last)) = (run.front(), run.back()) else {
            return TailRead::NotHere;
        };
        if from < first.seq || from > last.seq + 1 {
            return TailRead::NotHere;
        }
        let skip = (from - first.seq) as usize;
        TailRead::Records(
            run.iter()
                .skip(skip)
                .take_while(|r| r.lsn < lsn_below)
                .take(max)
                .cloned()
                .collect(),
        )
    }

    /// Forgets every run (followers stay): after a delete, or when the indexer drops what it
    /// added since its last commit.
    pub fn clear(&self) {
        let mut s = self.state();
        for f in s.orgs.values_mut() {
            f.run.clear();
        }
        s.order.clear();
        s.bytes = 0;
    }

    /// Bytes counted now, for tests.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.state().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(r: TailRead) -> Option<Vec<u64>> {
        match r {
            TailRead::NotHere => None,
            TailRead::Records(v) => Some(v.into_iter().map(|r| r.seq).collect()),
        }
    }

    fn add(t: &Tail, recs: &[(u64, &str, u64)]) {
        let head = || TailHead {
            id: None,
            time: DateTime::UNIX_EPOCH,
            received_at: None,
        };
        t.add(
            recs.iter()
                .map(|&(lsn, org, seq)| (lsn, org, Some(seq), move || (b"{}".to_vec(), head()))),
        );
    }

    #[test]
    fn keeps_only_followed_orgs_from_their_first_record_on() {
        let t = Tail::new(1 << 20);
        add(&t, &[(1, "a", 1)]);
        assert!(seqs(t.read("a", 1, 10, 100)).is_none());
        t.follow("a");
        add(&t, &[(2, "a", 2), (3, "b", 1), (4, "a", 3)]);
        // From before the run: the index.
        assert!(seqs(t.read("a", 1, 10, 100)).is_none());
        assert_eq!(seqs(t.read("a", 2, 10, 100)), Some(vec![2, 3]));
        assert_eq!(seqs(t.read("a", 3, 10, 100)), Some(vec![3]));
        // Caught up: nothing more, said by the tail.
        assert_eq!(seqs(t.read("a", 4, 10, 100)), Some(vec![]));
        // Past the run's end + 1: not something the tail can say.
        assert!(seqs(t.read("a", 5, 10, 100)).is_none());
        assert!(seqs(t.read("b", 1, 10, 100)).is_none());
    }

    #[test]
    fn stops_at_the_lsn_bound_and_at_max() {
        let t = Tail::new(1 << 20);
        t.follow("a");
        add(&t, &[(5, "a", 1), (6, "a", 2), (9, "a", 3), (12, "a", 4)]);
        assert_eq!(seqs(t.read("a", 1, 9, 100)), Some(vec![1, 2]));
        assert_eq!(seqs(t.read("a", 1, 13, 3)), Some(vec![1, 2, 3]));
        assert_eq!(seqs(t.read("a", 3, 5, 100)), Some(vec![]));
    }

    #[test]
    fn a_gap_starts_the_run_over_and_repeats_are_ignored() {
        let t = Tail::new(1 << 20);
        t.follow("a");
        add(&t, &[(1, "a", 1), (2, "a", 2), (3, "a", 2), (4, "a", 1)]);
        assert_eq!(seqs(t.read("a", 1, 10, 100)), Some(vec![1, 2]));
        add(&t, &[(5, "a", 5), (6, "a", 6)]);
        assert!(seqs(t.read("a", 3, 10, 100)).is_none());
        assert_eq!(seqs(t.read("a", 5, 10, 100)), Some(vec![5, 6]));
        assert_eq!(t.bytes(), 2 * (2 + ENTRY_OVERHEAD));
    }

    #[test]
    fn evicts_oldest_first_within_the_budget() {
        let each = 2 + ENTRY_OVERHEAD;
        let t = Tail::new(3 * each);
        t.follow("a");
        t.follow("b");
        add(&t, &[(1, "a", 1), (2, "b", 1), (3, "a", 2), (4, "b", 2)]);
        assert_eq!(t.bytes(), 3 * each);
        // a's seq 1 went first: a's run now starts at 2.
        assert!(seqs(t.read("a", 1, 10, 100)).is_none());
        assert_eq!(seqs(t.read("a", 2, 10, 100)), Some(vec![2]));
        assert_eq!(seqs(t.read("b", 1, 10, 100)), Some(vec![1, 2]));
        add(&t, &[(5, "a", 3), (6, "a", 4), (7, "a", 5)]);
        assert!(seqs(t.read("b", 1, 10, 100)).is_none());
        assert_eq!(seqs(t.read("a", 3, 10, 100)), Some(vec![3, 4, 5]));
        assert_eq!(t.bytes(), 3 * each);
    }

    #[test]
    fn the_last_follower_going_or_a_clear_drops_the_runs() {
        let t = Tail::new(1 << 20);
        t.follow("a");
        t.follow("a");
        add(&t, &[(1, "a", 1)]);
        t.unfollow("a");
        assert_eq!(seqs(t.read("a", 1, 10, 100)), Some(vec![1]));
        t.clear();
        assert!(seqs(t.read("a", 1, 10, 100)).is_none());
        add(&t, &[(2, "a", 2)]);
        assert_eq!(seqs(t.read("a", 2, 10, 100)), Some(vec![2]));
        t.unfollow("a");
        assert_eq!(t.bytes(), 0);
        assert!(!t.any_followed());
        add(&t, &[(3, "a", 3)]);
        assert_eq!(t.bytes(), 0);
    }
}
