//! [`OrgTree`]: one org's Merkle tree as stored: a [`Log`] of 32-byte hashes in the order of
//! [`layout`](super::layout), the frontier in memory, and the hashes written since the last
//! sync (read from memory until they are durable).

use super::error::TreeError;
use super::layout::{STRIDE, entries_before, entry_of, parents_of, steps_in};
use codestax_common::merkle::{self, Frontier, Hash, NodeSource, node_hash};
use codestax_storage::{Checksum, Damage, Disk, FixedReader, Frames, Log, OpenLog, SegmentFormat};
use std::path::Path;
use std::sync::Arc;

/// The segments of a tree's log.
pub(crate) static FORMAT: SegmentFormat = SegmentFormat {
    noun: "Merkle tree segment",
    magic: b"CXMT",
    suffix: ".mt",
    version: 1,
    oldest_version: 1,
    named_by_first_entry: true,
    checksum: |_| Checksum::LenAndPayload,
    max_payload: 32,
};

/// A new segment is started past this size (about 200,000 hashes).
const SEGMENT_BYTES: u64 = 8 << 20;

/// Hashes written but not yet synced that a tree keeps for reads; past this many it syncs
/// (2 MiB per org at most).
pub const MAX_PENDING: usize = 1 << 16;

/// One org's stored tree.
#[derive(Debug)]
pub struct OrgTree {
    org: String,
    log: Log,
    reader: FixedReader,
    /// Entries durable (synced, readable through `reader`).
    synced: u64,
    /// Entries written after those, not yet synced.
    pending: Vec<Hash>,
    frontier: Frontier,
    frames: Frames,
    /// Why the tree refuses use (its state could not be read back after a failed write).
    unusable: Option<String>,
}

impl OrgTree {
    /// Opens (creating if needed) `org`'s tree in `dir`. A torn tail is cut; a step the tail
    /// cut short (a leaf without some of the nodes it completes) is completed.
    pub fn open(org: &str, dir: &Path, disk: Arc<dyn Disk>) -> Result<OrgTree, TreeError> {
        let err = |source| TreeError::Log {
            org: org.to_string(),
            source,
        };
        let options = OpenLog {
            disk,
            ..OpenLog::new(&FORMAT, Damage::TornTailOnly)
        };
        let (log, notes) = Log::open(dir, options, |_, payload| {
            if payload.len() == 32 {
                Ok(())
            } else {
                Err(format!(
                    "a hash is 32 bytes, this entry is {}",
                    payload.len()
                ))
            }
        })
        .map_err(err)?;
        for note in notes {
            tracing::warn!(org, "{note}");
        }
        let entries = log.next_entry();
        let reader = FixedReader::new(log.catalog().clone(), 32);
        let mut tree = OrgTree {
            org: org.to_string(),
            log,
            reader,
            synced: entries,
            pending: Vec::new(),
            frontier: Frontier::default(),
            frames: Frames::new(),
            unusable: None,
        };
        let (leaves, part) = steps_in(entries);
        if part > 0 {
            tree.finish_step(leaves, part)?;
            tree.frontier = Frontier::at(&mut tree, leaves + 1)?;
        } else {
            tree.frontier = Frontier::at(&mut tree, leaves)?;
        }
        Ok(tree)
    }

    /// Writes the stored nodes leaf `k` completes beyond the first `present - 1` (a crash cut
    /// the step short), then syncs.
    fn finish_step(&mut self, k: u64, present: u64) -> Result<(), TreeError> {
        let checksum = self.log.checksum();
        self.frames.clear();
        for a in present as u32..=parents_of(k) {
            let index = (k + 1) / (1u64 << (STRIDE * a)) - 1;
            // From its two halves, which are hashed from the level stored below.
            let left = self.node(STRIDE * a - 1, 2 * index)?;
            let right = self.node(STRIDE * a - 1, 2 * index + 1)?;
            let hash = node_hash(&left, &right);
            self.frames.push(checksum, &hash);
            self.pending.push(hash);
        }
        tracing::warn!(
            org = self.org,
            leaf = k,
            nodes = self.frames.count(),
            "completing the last leaf's nodes a crash cut off"
        );
        self.write_frames()?;
        self.sync()
    }

    pub fn org(&self) -> &str {
        &self.org
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The root of all its leaves.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The root of its first `size` leaves (at most [`OrgTree::size`]).
    pub fn root_at(&mut self, size: u64) -> Result<Hash, TreeError> {
        debug_assert!(size <= self.size());
        if size == self.size() {
            return Ok(self.root());
        }
        merkle::root(self, size)
    }

    /// Whether it holds hashes not yet synced.
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends leaf hashes (written, not synced). On an error nothing of them is in the tree.
    pub fn append(&mut self, leaves: &[Hash]) -> Result<(), TreeError> {
        self.check_usable()?;
        if leaves.is_empty() {
            return Ok(());
        }
        if !self.log.active_is_empty() && self.log.active_len() >= SEGMENT_BYTES {
            // Rolling syncs what is pending first.
            if let Err(source) = self.log.roll() {
                return Err(self.back_to_durable(source));
            }
            self.synced += self.pending.len() as u64;
            self.pending.clear();
        }
        let checksum = self.log.checksum();
        let mut frontier = self.frontier.clone();
        let pending_before = self.pending.len();
        self.frames.clear();
        for leaf in leaves {
            let (frames, pending) = (&mut self.frames, &mut self.pending);
            frontier.push(*leaf, |level, _, hash| {
                if level % STRIDE == 0 {
                    frames.push(checksum, hash);
                    pending.push(*hash);
                }
            });
        }
        if let Err(e) = self.write_frames() {
            // The log cut the batch off; what was written before it stays.
            self.pending.truncate(pending_before);
            return Err(e);
        }
        self.frontier = frontier;
        if self.pending.len() >= MAX_PENDING {
            self.sync()?;
        }
        Ok(())
    }

    fn write_frames(&mut self) -> Result<(), TreeError> {
        self.log
            .append(&self.frames)
            .map_err(|source| TreeError::Log {
                org: self.org.clone(),
                source,
            })?;
        Ok(())
    }

    /// Makes every hash written durable. On failure the log cuts what was not synced, and so
    /// does the tree: it is back at its last durable size, and the caller must append again
    /// what it lost (from the write-ahead log).
    pub fn sync(&mut self) -> Result<(), TreeError> {
        self.check_usable()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.log.sync() {
            Ok(()) => {
                self.synced += self.pending.len() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(source) => Err(self.back_to_durable(source)),
        }
    }

    /// After the log cut what was not synced: the tree forgets it too (its frontier read back
    /// from what is durable), and the error is returned. If even that read fails the tree
    /// refuses further use until it is opened again.
    fn back_to_durable(&mut self, source: codestax_storage::LogError) -> TreeError {
        self.pending.clear();
        let (leaves, part) = steps_in(self.synced);
        debug_assert_eq!(part, 0, "syncs happen between whole steps");
        match Frontier::at(self, leaves) {
            Ok(f) => self.frontier = f,
            Err(e) => {
                tracing::error!(org = self.org, error = %e, "cannot read the tree back after a failed write; it is unusable until restart");
                self.unusable = Some(e.to_string());
            }
        }
        TreeError::Log {
            org: self.org.clone(),
            source,
        }
    }

    fn check_usable(&self) -> Result<(), TreeError> {
        match &self.unusable {
            Some(why) => Err(TreeError::Unusable {
                org: self.org.clone(),
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Entry `e` of the log: from disk if durable, else from memory.
    fn entry(&mut self, e: u64) -> Result<Hash, TreeError> {
        if e >= self.synced {
            return self
                .pending
                .get((e - self.synced) as usize)
                .copied()
                .ok_or_else(|| TreeError::Missing {
                    org: self.org.clone(),
                    entry: e,
                });
        }
        let mut out = [0u8; 32];
        self.reader
            .read(e, &mut out)
            .map_err(|source| TreeError::Log {
                org: self.org.clone(),
                source,
            })?;
        Ok(out)
    }

    /// The leaf hash of leaf `index` (the record with `seq` `index + 1`).
    pub fn leaf(&mut self, index: u64) -> Result<Hash, TreeError> {
        self.entry(entries_before(index))
    }

    /// The leaf hashes of leaves `first..first + out.len()`: the durable entries they span
    /// (leaves and the stored nodes between them) read in runs, not one read per leaf.
    pub fn leaves(&mut self, first: u64, out: &mut [Hash]) -> Result<(), TreeError> {
        if out.is_empty() {
            return Ok(());
        }
        let last = first + out.len() as u64 - 1;
        let from = entries_before(first);
        let durable_end = (entries_before(last) + 1).min(self.synced);
        let mut raw = Vec::new();
        if durable_end > from {
            raw.resize((durable_end - from) as usize * 32, 0);
            self.reader
                .read_run(from, &mut raw)
                .map_err(|source| TreeError::Log {
                    org: self.org.clone(),
                    source,
                })?;
        }
        for (k, slot) in (first..).zip(out.iter_mut()) {
            let e = entries_before(k);
            *slot = if e < durable_end {
                let at = (e - from) as usize * 32;
                raw[at..at + 32].try_into().expect("32 bytes")
            } else {
                self.entry(e)?
            };
        }
        Ok(())
    }
}

impl NodeSource for OrgTree {
    type Error = TreeError;

    /// A complete subtree's hash: stored (levels 0, 4, 8, …), or hashed from the `2^b` stored
    /// ones under it.
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, TreeError> {
        let (a, b) = (level / STRIDE, level % STRIDE);
        if b == 0 {
            return self.entry(entry_of(a, index));
        }
        let mut row = Vec::with_capacity(1 << b);
        for i in index << b..(index + 1) << b {
            row.push(self.entry(entry_of(a, i))?);
        }
        while row.len() > 1 {
            row = row.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        Ok(row[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::merkle::{Leaves, inclusion_proof, leaf_hash};
    use codestax_storage::{Fault, FaultyDisk, RealDisk};

    fn leaves(from: u64, n: u64) -> Vec<Hash> {
        (from..from + n)
            .map(|i| leaf_hash(&i.to_le_bytes()))
            .collect()
    }

    fn open(dir: &Path) -> OrgTree {
        OrgTree::open("acme", dir, Arc::new(RealDisk)).unwrap()
    }

    #[test]
    fn nodes_roots_and_proofs_equal_the_in_memory_tree_across_syncs_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(0, 5000);
        let mut tree = open(dir.path());
        assert_eq!(tree.root(), merkle::EMPTY_ROOT);
        // Uneven batches, some synced, some not.
        let mut at = 0usize;
        for (i, n) in [1usize, 15, 16, 200, 1000, 3, 2000, 1765]
            .into_iter()
            .enumerate()
        {
            tree.append(&all[at..at + n]).unwrap();
            at += n;
            if i % 3 == 1 {
                tree.sync().unwrap();
            }
            let mem = &all[..at];
            assert_eq!(
                tree.root(),
                merkle::root(&mut Leaves(mem), at as u64).unwrap()
            );
        }
        // Runs of leaves read at once equal the leaves read one by one, synced or not.
        for (first, n) in [(0u64, 5000usize), (15, 2), (4090, 10), (4999, 1), (7, 0)] {
            let mut run = vec![[0u8; 32]; n];
            tree.leaves(first, &mut run).unwrap();
            assert_eq!(run, all[first as usize..first as usize + n], "from {first}");
        }
        for size in [1u64, 17, 256, 4095, 4096, 4097, 5000] {
            let want = merkle::root(&mut Leaves(&all), size).unwrap();
            assert_eq!(tree.root_at(size).unwrap(), want, "size {size}");
        }
        for index in [0u64, 15, 16, 255, 256, 4095, 4999] {
            let got = inclusion_proof(&mut tree, index, 5000).unwrap().unwrap();
            let want = inclusion_proof(&mut Leaves(&all), index, 5000)
                .unwrap()
                .unwrap();
            assert_eq!(got, want, "leaf {index}");
            assert_eq!(tree.leaf(index).unwrap(), all[index as usize]);
        }
        tree.sync().unwrap();
        let root = tree.root();
        drop(tree);
        let mut tree = open(dir.path());
        assert_eq!((tree.size(), tree.root()), (5000, root));
        tree.append(&leaves(5000, 10)).unwrap();
        assert_eq!(tree.size(), 5010);
    }

    #[test]
    fn a_log_cut_anywhere_reopens_as_a_prefix_and_completes_its_last_step() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(0, 300);
        let mut tree = open(dir.path());
        tree.append(&all).unwrap();
        tree.sync().unwrap();
        drop(tree);
        let seg = FORMAT.path(dir.path(), 0);
        let full = std::fs::read(&seg).unwrap();
        let frame = 40;
        // Cut after every whole entry, and inside entries.
        for cut in (16..full.len()).step_by(frame / 2) {
            std::fs::write(&seg, &full[..cut]).unwrap();
            let mut tree = open(dir.path());
            let n = tree.size();
            assert!(n <= 300);
            assert_eq!(
                tree.root(),
                merkle::root(&mut Leaves(&all), n).unwrap(),
                "cut at {cut}"
            );
            // It takes appends again and ends up the same tree.
            tree.append(&all[n as usize..]).unwrap();
            assert_eq!(tree.root(), merkle::root(&mut Leaves(&all), 300).unwrap());
            tree.sync().unwrap();
            drop(tree);
            std::fs::write(&seg, &full).unwrap();
        }
    }

    #[test]
    fn a_failed_sync_puts_the_tree_back_to_its_durable_size() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FaultyDisk::default();
        let mut tree = OrgTree::open("acme", dir.path(), Arc::new(disk.clone())).unwrap();
        let all = leaves(0, 100);
        tree.append(&all[..40]).unwrap();
        tree.sync().unwrap();
        tree.append(&all[40..70]).unwrap();
        disk.arm(Fault::Sync(std::io::ErrorKind::Other));
        let err = tree.sync().unwrap_err().to_string();
        assert!(err.contains("acme"), "{err}");
        assert_eq!(tree.size(), 40);
        assert_eq!(tree.root(), merkle::root(&mut Leaves(&all), 40).unwrap());
        disk.arm(Fault::Write(std::io::ErrorKind::StorageFull));
        assert!(tree.append(&all[40..70]).is_err());
        assert_eq!(tree.size(), 40);
        tree.append(&all[40..]).unwrap();
        tree.sync().unwrap();
        assert_eq!(tree.root(), merkle::root(&mut Leaves(&all), 100).unwrap());
    }
}
