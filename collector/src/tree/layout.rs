//! Where each hash of an org's tree is in its log: a pure function of the tree's shape.
//!
//! The log holds the leaf hashes and the hashes of every complete subtree of levels 4, 8, 12, …
//! (a node of level `4a` covers `16^a` leaves), each written as soon as it is complete:
//! appending leaf `k` writes the leaf, then, for `a = 1, 2, …` while `16^a` divides `k + 1`, the
//! node of level `4a` it completes. So entry numbers follow from `k` alone:
//!
//! ```text
//! entries before leaf k        = k + Σ_{a≥1} ⌊k / 16^a⌋
//! leaf k                       at entries_before(k)
//! node (level 4a, index i)     at entries_before(k) + a, where k = (i + 1)·16^a − 1
//! ```
//!
//! Any other complete subtree (level `4a + b`, `b` in 1..3) is hashed from the `2^b` stored
//! nodes of level `4a` under it. Storage: 32 bytes per leaf plus 1/15 of that for the stored
//! levels (and 8 bytes of frame per hash).

/// Levels between stored ones: a node of a level that is a multiple of this is stored.
pub const STRIDE: u32 = 4;
/// Leaves under a stored node of level `STRIDE`.
const FAN: u64 = 1 << STRIDE;

/// Entries of the log before leaf `k`'s: the leaves before it and the stored nodes they
/// completed.
pub fn entries_before(k: u64) -> u64 {
    let mut n = k;
    let mut span = FAN;
    while span <= k {
        n += k / span;
        match span.checked_mul(FAN) {
            Some(s) => span = s,
            None => break,
        }
    }
    n
}

/// The entry of the stored node at level `STRIDE * a`, index `index` (`a` = 0: a leaf).
pub fn entry_of(a: u32, index: u64) -> u64 {
    if a == 0 {
        return entries_before(index);
    }
    let span = FAN.pow(a);
    let last_leaf = (index + 1) * span - 1;
    entries_before(last_leaf) + u64::from(a)
}

/// How many stored nodes above the leaf appending leaf `k` writes: the `a ≥ 1` with `16^a`
/// dividing `k + 1`.
pub fn parents_of(k: u64) -> u32 {
    (k + 1).trailing_zeros() / STRIDE
}

/// What a log of `entries` entries holds: the number of whole leaf steps, and how many entries
/// of the next step are there (0 if none: the log ends cleanly).
pub fn steps_in(entries: u64) -> (u64, u64) {
    // entries_before is increasing and entries_before(k) ≥ k: search below `entries + 1`.
    let (mut lo, mut hi) = (0u64, entries + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if entries_before(mid) <= entries {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo, entries - entries_before(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout, written out by appending leaf after leaf.
    fn simulate(leaves: u64) -> Vec<(u32, u64)> {
        let mut log = Vec::new();
        for k in 0..leaves {
            log.push((0, k));
            for a in 1..=parents_of(k) {
                log.push((a, (k + 1) / FAN.pow(a) - 1));
            }
        }
        log
    }

    #[test]
    fn positions_match_an_appended_log() {
        let log = simulate(70_000);
        for (entry, &(a, index)) in log.iter().enumerate() {
            assert_eq!(entry_of(a, index), entry as u64, "({a}, {index})");
        }
        let mut next = 0;
        for k in 0..70_000u64 {
            assert_eq!(entries_before(k), next);
            next += 1 + u64::from(parents_of(k));
            // A log cut inside step k: k whole steps and the part of step k that is there.
            for part in 0..=u64::from(parents_of(k)) {
                assert_eq!(steps_in(entries_before(k) + part), (k, part));
            }
        }
        assert_eq!(steps_in(log.len() as u64), (70_000, 0));
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        assert!(entries_before(u64::MAX / 2) > u64::MAX / 2);
        assert_eq!(parents_of((1 << 60) - 1), 15);
        let (k, part) = steps_in(entries_before(1 << 60));
        assert_eq!((k, part), (1 << 60, 0));
    }
}
