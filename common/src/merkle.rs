//! RFC 9162 Merkle trees: the hashing, the root of any size, inclusion and consistency proofs
//! and their verification, and a multi-proof that proves many leaves at once.
//!
//! # Hashing (RFC 9162 §2.1.1)
//!
//! ```text
//! leaf hash   = SHA-256(0x00 ‖ leaf bytes)
//! node hash   = SHA-256(0x01 ‖ left ‖ right)
//! empty root  = SHA-256("")
//! MTH(D[n])   = for n > 1, k = the largest power of two below n:
//!               node hash(MTH(D[0:k]), MTH(D[k:n]))
//! ```
//!
//! An audit record's leaf is defined in [`crate::chain::record_leaf_hash`]: the very bytes whose
//! SHA-256 is the record's `hash`. Leaf `i` is the record with `seq` `i + 1`.
//!
//! # Where proofs get their hashes
//!
//! Every hash a proof needs is the hash of a *complete* subtree — `2^level` leaves starting at
//! leaf `index << level` — or combines a few of them. [`NodeSource`] gives those: a slice of leaf
//! hashes in memory ([`Leaves`]), or the collector's stored tree. The proofs are those of
//! RFC 9162 §2.1.3 (inclusion) and §2.1.4 (consistency), verified as the RFC says.
//!
//! # Multi-proofs
//!
//! [`multi_proof`] proves a set of leaves at once: the hashes of the largest subtrees (in the
//! RFC's own split) that hold none of them, left to right. For a contiguous run of leaves that is
//! at most about `2·log2(size)` hashes whatever the run's length, so a full export carries a few
//! kilobytes of proof; a leaf missing from the middle of the run costs its own 32-byte hash.
//! [`root_from_multi_proof`] recomputes the root from the leaves and the proof.

use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::fmt;

/// A SHA-256 hash: a leaf, a node or a root.
pub type Hash = [u8; 32];

/// The root of the tree with no leaves: SHA-256 of nothing.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of a leaf: SHA-256(0x00 ‖ `data`).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ `left` ‖ `right`).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Gives the hash of a complete subtree: the `2^level` leaves from leaf `index << level` on.
pub trait NodeSource {
    type Error;
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Leaf hashes in memory, as a [`NodeSource`]: every node is computed from its leaves.
#[derive(Debug, Clone, Copy)]
pub struct Leaves<'a>(pub &'a [Hash]);

impl NodeSource for Leaves<'_> {
    type Error = Infallible;

    fn node(&mut self, level: u32, index: u64) -> Result<Hash, Infallible> {
        fn perfect(leaves: &[Hash]) -> Hash {
            if leaves.len() == 1 {
                return leaves[0];
            }
            let (l, r) = leaves.split_at(leaves.len() / 2);
            node_hash(&perfect(l), &perfect(r))
        }
        let start = usize::try_from(index << level).expect("in memory");
        Ok(perfect(&self.0[start..start + (1usize << level)]))
    }
}

/// The largest power of two strictly below `n` (`n` ≥ 2): where the RFC splits a tree of `n`.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[begin:end]) for a range the RFC's recursion produces (non-empty; `begin` a multiple of
/// the smallest power of two ≥ its length): its complete subtrees, largest first, folded from
/// the right.
fn range_hash<S: NodeSource>(src: &mut S, begin: u64, end: u64) -> Result<Hash, S::Error> {
    debug_assert!(end > begin);
    let size = end - begin;
    let mut parts: Vec<Hash> = Vec::with_capacity(size.count_ones() as usize);
    let mut at = begin;
    for level in (0..64).rev() {
        if size >> level & 1 == 1 {
            parts.push(src.node(level, at >> level)?);
            at += 1 << level;
        }
    }
    let mut hash = parts.pop().expect("size > 0");
    while let Some(left) = parts.pop() {
        hash = node_hash(&left, &hash);
    }
    Ok(hash)
}

/// The root of the first `size` leaves.
pub fn root<S: NodeSource>(src: &mut S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    range_hash(src, 0, size)
}

/// Why a proof was not produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {first} is larger than tree size {second}")]
    SizesReversed { first: u64, second: u64 },
    #[error("a consistency proof from the empty tree proves nothing")]
    FromEmpty,
    #[error("the proof has {got} hashes; a proof of this shape has {want}")]
    WrongLength { got: usize, want: usize },
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("the proof does not lead to the expected first root")]
    FirstRootMismatch,
    #[error("leaf indexes must be ascending without repeats ({index} after {previous})")]
    Unordered { index: u64, previous: u64 },
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1), from
/// the leaf up.
pub fn inclusion_proof<S: NodeSource>(
    src: &mut S,
    index: u64,
    size: u64,
) -> Result<Result<Vec<Hash>, ProofError>, S::Error> {
    if index >= size {
        return Ok(Err(ProofError::IndexOutOfRange { index, size }));
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Ok(Ok(out))
}

fn path<S: NodeSource>(
    src: &mut S,
    m: u64,
    begin: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if end - begin == 1 {
        return Ok(());
    }
    let mid = begin + split(end - begin);
    if m < mid {
        path(src, m, begin, mid, out)?;
        out.push(range_hash(src, mid, end)?);
    } else {
        path(src, m, mid, end, out)?;
        out.push(range_hash(src, begin, mid)?);
    }
    Ok(())
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want,
            });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 || r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// How many hashes the inclusion proof of `index` in `size` has.
fn inclusion_len(index: u64, size: u64) -> usize {
    // Below the level where the paths to `index` and to the last leaf part, one sibling per
    // level; above it, one per complete subtree to the left.
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    inner as usize + index.checked_shr(inner).unwrap_or(0).count_ones() as usize
}

/// The consistency proof between the tree of `first` leaves and that of `second` (RFC 9162
/// §2.1.4.1). Empty when the sizes are equal.
pub fn consistency_proof<S: NodeSource>(
    src: &mut S,
    first: u64,
    second: u64,
) -> Result<Result<Vec<Hash>, ProofError>, S::Error> {
    if first > second {
        return Ok(Err(ProofError::SizesReversed { first, second }));
    }
    if first == 0 {
        return Ok(Err(ProofError::FromEmpty));
    }
    let mut out = Vec::new();
    if first < second {
        subproof(src, first, 0, second, true, &mut out)?;
    }
    Ok(Ok(out))
}

fn subproof<S: NodeSource>(
    src: &mut S,
    m: u64,
    begin: u64,
    end: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - begin;
    if m == n {
        if !whole {
            out.push(range_hash(src, begin, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, begin, begin + k, whole, out)?;
        out.push(range_hash(src, begin + k, end)?);
    } else {
        subproof(src, m - k, begin + k, end, false, out)?;
        out.push(range_hash(src, begin, begin + k)?);
    }
    Ok(())
}

/// Checks that the tree of `second` leaves with root `second_root` extends the tree of `first`
/// leaves with root `first_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesReversed { first, second });
    }
    if first == 0 {
        return Err(ProofError::FromEmpty);
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: 0,
            });
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let want = consistency_len(first, second);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want,
            });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if fr != *first_root {
        return Err(ProofError::FirstRootMismatch);
    }
    if s != 0 || sr != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// How many hashes the consistency proof from `first` to `second` (0 < first < second) has.
fn consistency_len(first: u64, second: u64) -> usize {
    // As the inclusion proof of the first tree's last leaf, less the subtree that is the whole
    // first tree's left part when `first` is a power of two (the verifier has that: the root).
    let inner = 64 - ((first - 1) ^ (second - 1)).leading_zeros();
    let shift = first.trailing_zeros();
    let border = (first - 1).checked_shr(inner).unwrap_or(0).count_ones();
    let inner = inner - shift;
    let seed = if first == 1 << shift { 0 } else { 1 };
    (seed + inner + border) as usize
}

/// The multi-proof of the leaves `indexes` (ascending, no repeats) in the tree of `size`
/// leaves: the hash of each largest subtree holding none of them, left to right.
pub fn multi_proof<S: NodeSource>(
    src: &mut S,
    size: u64,
    indexes: &[u64],
) -> Result<Result<Vec<Hash>, ProofError>, S::Error> {
    if let Err(e) = check_indexes(size, indexes.iter().copied()) {
        return Ok(Err(e));
    }
    let mut out = Vec::new();
    if size > 0 {
        gaps(src, 0, size, indexes, &mut out)?;
    }
    Ok(Ok(out))
}

fn check_indexes(size: u64, indexes: impl Iterator<Item = u64>) -> Result<(), ProofError> {
    let mut previous: Option<u64> = None;
    for index in indexes {
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        if let Some(p) = previous
            && index <= p
        {
            return Err(ProofError::Unordered { index, previous: p });
        }
        previous = Some(index);
    }
    Ok(())
}

fn gaps<S: NodeSource>(
    src: &mut S,
    begin: u64,
    end: u64,
    indexes: &[u64],
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if indexes.is_empty() {
        out.push(range_hash(src, begin, end)?);
        return Ok(());
    }
    if end - begin == 1 {
        return Ok(());
    }
    let mid = begin + split(end - begin);
    let at = indexes.partition_point(|&i| i < mid);
    gaps(src, begin, mid, &indexes[..at], out)?;
    gaps(src, mid, end, &indexes[at..], out)
}

/// The root that `leaves` (`(index, leaf hash)`, ascending by index, no repeats) and their
/// multi-proof lead to in a tree of `size` leaves; compare it with a signed root. Every hash
/// of the proof must be used.
pub fn root_from_multi_proof(
    size: u64,
    leaves: &[(u64, Hash)],
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    check_indexes(size, leaves.iter().map(|l| l.0))?;
    if size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: 0,
            });
        }
        return Ok(EMPTY_ROOT);
    }
    let mut next = 0;
    let root = fold(0, size, leaves, proof, &mut next)?;
    if next != proof.len() {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: next,
        });
    }
    Ok(root)
}

fn fold(
    begin: u64,
    end: u64,
    leaves: &[(u64, Hash)],
    proof: &[Hash],
    next: &mut usize,
) -> Result<Hash, ProofError> {
    if leaves.is_empty() {
        let hash = proof.get(*next).ok_or(ProofError::WrongLength {
            got: proof.len(),
            want: *next + 1,
        })?;
        *next += 1;
        return Ok(*hash);
    }
    if end - begin == 1 {
        return Ok(leaves[0].1);
    }
    let mid = begin + split(end - begin);
    let at = leaves.partition_point(|l| l.0 < mid);
    let left = fold(begin, mid, &leaves[..at], proof, next)?;
    let right = fold(mid, end, &leaves[at..], proof, next)?;
    Ok(node_hash(&left, &right))
}

/// The right edge of a growing tree: the roots of its complete subtrees, largest first (one per
/// bit of its size). Enough to append a leaf and to give the root, in `O(log size)` memory.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    /// `(level, hash)`, levels descending.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The frontier of the tree of `size` leaves, its complete subtrees read from `src`.
    pub fn at<S: NodeSource>(src: &mut S, size: u64) -> Result<Frontier, S::Error> {
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        let mut at = 0u64;
        for level in (0..64).rev() {
            if size >> level & 1 == 1 {
                nodes.push((level, src.node(level, at >> level)?));
                at += 1 << level;
            }
        }
        Ok(Frontier { size, nodes })
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; calls `completed(level, index, hash)` for each complete subtree it
    /// closes, the leaf itself (level 0) first, then upwards.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let index = self.size;
        completed(0, index, &leaf);
        let mut hash = leaf;
        let mut level = 0;
        while let Some(&(l, left)) = self.nodes.last() {
            if l != level {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            completed(level, index >> level, &hash);
        }
        self.nodes.push((level, hash));
        self.size += 1;
    }

    /// The root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut hash)) = it.next() else {
            return EMPTY_ROOT;
        };
        for (_, left) in it {
            hash = node_hash(left, &hash);
        }
        hash
    }

    /// The complete subtree at (`level`, `index`) if it is one of the frontier's.
    pub fn node(&self, level: u32, index: u64) -> Option<Hash> {
        let mut at = 0u64;
        for &(l, hash) in &self.nodes {
            if l == level && at >> l == index {
                return Some(hash);
            }
            at += 1 << l;
        }
        None
    }
}

impl fmt::Debug for Frontier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frontier")
            .field("size", &self.size)
            .field("root", &hex::encode(self.root()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// MTH straight from the RFC's definition.
    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => EMPTY_ROOT,
            1 => d[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    fn unwrap<T>(r: Result<Result<T, ProofError>, Infallible>) -> T {
        match r {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => panic!("{e}"),
            Err(never) => match never {},
        }
    }

    #[test]
    fn root_equals_the_definition_for_every_size() {
        let all = leaves(70);
        for n in 0..=70u64 {
            let d = &all[..n as usize];
            let want = mth(d);
            assert_eq!(root(&mut Leaves(d), n).unwrap(), want, "size {n}");
            let mut f = Frontier::default();
            for l in d {
                f.push(*l, |_, _, _| {});
            }
            assert_eq!(f.root(), want, "frontier, size {n}");
            assert_eq!(Frontier::at(&mut Leaves(d), n).unwrap(), f);
        }
    }

    #[test]
    fn frontier_reports_each_completed_subtree() {
        let all = leaves(16);
        let mut f = Frontier::default();
        let mut seen = Vec::new();
        for l in &all {
            f.push(*l, |level, index, hash| seen.push((level, index, *hash)));
        }
        // 16 leaves, 8 + 4 + 2 + 1 interior nodes.
        assert_eq!(seen.len(), 31);
        for (level, index, hash) in seen {
            assert_eq!(Leaves(&all).node(level, index).unwrap(), hash);
        }
        assert_eq!(f.node(4, 0), Some(mth(&all)));
        assert_eq!(f.node(3, 0), None);
    }

    #[test]
    fn every_proof_of_small_trees_verifies_and_lengths_match() {
        let all = leaves(40);
        for n in 1..=40u64 {
            let d = &all[..n as usize];
            let r = mth(d);
            for i in 0..n {
                let p = unwrap(inclusion_proof(&mut Leaves(d), i, n));
                assert_eq!(p.len(), inclusion_len(i, n));
                verify_inclusion(&d[i as usize], i, n, &p, &r).unwrap();
                // Another leaf's hash, or a neighbour's index, fails.
                let other = d[((i + 1) % n) as usize];
                if n > 1 {
                    assert!(verify_inclusion(&other, i, n, &p, &r).is_err());
                }
            }
            for m in 1..=n {
                let p = unwrap(consistency_proof(&mut Leaves(d), m, n));
                if m < n {
                    assert_eq!(p.len(), consistency_len(m, n), "{m} -> {n}");
                }
                verify_consistency(m, n, &mth(&d[..m as usize]), &r, &p)
                    .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
            }
        }
    }

    #[test]
    fn multi_proofs_of_runs_are_logarithmic() {
        let all = leaves(1000);
        let r = mth(&all);
        // A run in the middle: only the two edges cost hashes.
        let run: Vec<u64> = (137..861).collect();
        let p = unwrap(multi_proof(&mut Leaves(&all), 1000, &run));
        assert!(p.len() <= 2 * 10, "{} hashes", p.len());
        let given: Vec<(u64, Hash)> = run.iter().map(|&i| (i, all[i as usize])).collect();
        assert_eq!(root_from_multi_proof(1000, &given, &p).unwrap(), r);
        // Everything: no hash at all.
        let every: Vec<(u64, Hash)> = (0..1000).map(|i| (i, all[i as usize])).collect();
        let ix: Vec<u64> = (0..1000).collect();
        assert!(unwrap(multi_proof(&mut Leaves(&all), 1000, &ix)).is_empty());
        assert_eq!(root_from_multi_proof(1000, &every, &[]).unwrap(), r);
        // Nothing: the root itself.
        assert_eq!(unwrap(multi_proof(&mut Leaves(&all), 1000, &[])), vec![r]);
        // A changed leaf, a dropped one, extra proof hashes: all fail.
        let mut changed = given.clone();
        changed[5].1[0] ^= 1;
        assert_ne!(root_from_multi_proof(1000, &changed, &p).unwrap(), r);
        let mut dropped = given.clone();
        dropped.remove(10);
        assert!(
            root_from_multi_proof(1000, &dropped, &p) != Ok(r),
            "a dropped leaf cannot give the root"
        );
        let mut longer = p.clone();
        longer.push(r);
        assert!(matches!(
            root_from_multi_proof(1000, &given, &longer),
            Err(ProofError::WrongLength { .. })
        ));
        // Out of order or repeated.
        let mut swapped = given.clone();
        swapped.swap(0, 1);
        assert!(matches!(
            root_from_multi_proof(1000, &swapped, &p),
            Err(ProofError::Unordered { .. })
        ));
    }

    #[test]
    fn edge_cases_are_errors_not_panics() {
        let d = leaves(5);
        let r = mth(&d);
        assert_eq!(
            verify_inclusion(&d[0], 5, 5, &[], &r),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            verify_consistency(0, 5, &EMPTY_ROOT, &r, &[]),
            Err(ProofError::FromEmpty)
        );
        assert_eq!(
            verify_consistency(6, 5, &r, &r, &[]),
            Err(ProofError::SizesReversed {
                first: 6,
                second: 5
            })
        );
        assert!(matches!(
            verify_consistency(2, 5, &r, &r, &[]),
            Err(ProofError::WrongLength { .. })
        ));
        assert!(matches!(
            unwrap(inclusion_proof(&mut Leaves(&d), 0, 5)).len(),
            3
        ));
        assert_eq!(root_from_multi_proof(0, &[], &[]).unwrap(), EMPTY_ROOT);
        assert!(root_from_multi_proof(0, &[], &[r]).is_err());
        assert!(root_from_multi_proof(5, &[(5, r)], &[]).is_err());
        assert!(root_from_multi_proof(u64::MAX, &[(0, r)], &[]).is_err());
        assert!(verify_inclusion(&r, u64::MAX - 1, u64::MAX, &[r; 64], &r).is_err());
    }
}
