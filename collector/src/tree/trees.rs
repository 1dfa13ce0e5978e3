//! [`Trees`]: every org's tree under `<data_dir>/tree/`, one directory per org
//! (`org-<org id>`), and the lock that keeps a second collector out.

use super::error::TreeError;
use super::org::OrgTree;
use codestax_common::AuditRecord;
use codestax_common::chain::leaf_of_sealed;
use codestax_common::merkle::Hash;
use codestax_storage::{DirLock, Disk, LockError, RealDisk, sync_dir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

const LOCK_FILE: &str = "tree.lock";
/// An org's directory is this and its id (org ids may be `.` or `..`).
const ORG_DIR_PREFIX: &str = "org-";

/// One org's tree, shared by the writer and the readers.
pub type SharedTree = Arc<Mutex<OrgTree>>;

/// Locks a tree; a panic elsewhere while it was held does not make it unreadable.
pub fn lock(tree: &SharedTree) -> MutexGuard<'_, OrgTree> {
    tree.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every org's tree.
#[derive(Debug)]
pub struct Trees {
    dir: PathBuf,
    disk: Arc<dyn Disk>,
    orgs: RwLock<BTreeMap<String, SharedTree>>,
    /// Orgs whose tree cannot be kept (records missing from it that nothing can give back), and
    /// why. Their records are stored as ever; their tree takes no more leaves.
    unavailable: RwLock<BTreeMap<String, String>>,
    _lock: DirLock,
}

impl Trees {
    /// Opens the trees in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Trees, TreeError> {
        Trees::open_on(dir, Arc::new(RealDisk))
    }

    /// [`Trees::open`], the logs writing through `disk`.
    pub fn open_on(dir: &Path, disk: Arc<dyn Disk>) -> Result<Trees, TreeError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TreeError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = DirLock::try_acquire(&dir.join(LOCK_FILE)).map_err(|e| match e {
            LockError::Held { path } => TreeError::Locked { path },
            LockError::Io { path, source } => TreeError::Io { path, source },
        })?;
        let mut orgs = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(org) = name.to_str().and_then(|n| n.strip_prefix(ORG_DIR_PREFIX)) else {
                continue;
            };
            if !codestax_common::is_valid_org_id(org) {
                tracing::warn!(path = %entry.path().display(), "not an org's tree; ignored");
                continue;
            }
            let tree = OrgTree::open(org, &entry.path(), disk.clone())?;
            orgs.insert(org.to_string(), Arc::new(Mutex::new(tree)));
        }
        tracing::info!(dir = %dir.display(), orgs = orgs.len(), "Merkle trees opened");
        Ok(Trees {
            dir: dir.to_path_buf(),
            disk,
            orgs: RwLock::new(orgs),
            unavailable: RwLock::default(),
            _lock: lock,
        })
    }

    /// `org`'s tree, if it has one.
    pub fn org(&self, org: &str) -> Option<SharedTree> {
        self.orgs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(org)
            .cloned()
    }

    fn org_or_create(&self, org: &str) -> Result<SharedTree, TreeError> {
        if let Some(t) = self.org(org) {
            return Ok(t);
        }
        let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = orgs.get(org) {
            return Ok(t.clone());
        }
        let path = self.dir.join(format!("{ORG_DIR_PREFIX}{org}"));
        let tree = OrgTree::open(org, &path, self.disk.clone())?;
        // The org's directory entry must outlive a crash as its records do.
        sync_dir(&self.dir).map_err(|source| TreeError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let tree = Arc::new(Mutex::new(tree));
        orgs.insert(org.to_string(), tree.clone());
        Ok(tree)
    }

    /// Leaves in `org`'s tree (0 if it has none).
    pub fn size(&self, org: &str) -> u64 {
        self.org(org).map_or(0, |t| lock(&t).size())
    }

    /// The orgs that have a tree.
    pub fn orgs(&self) -> Vec<String> {
        self.orgs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Why `org`'s tree is unavailable, if it is.
    pub fn unavailable(&self, org: &str) -> Option<String> {
        self.unavailable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(org)
            .cloned()
    }

    /// Appends `org`'s leaves for the records `first_seq`, `first_seq + 1`, …: those the tree
    /// already has are checked against it and skipped, the first new one must be the next. A
    /// gap or a different leaf makes the org's tree unavailable (logged, and said by every
    /// request for it) and is returned; later appends for it are skipped.
    pub fn append(&self, org: &str, first_seq: u64, leaves: &[Hash]) -> Result<(), TreeError> {
        if leaves.is_empty() || self.unavailable(org).is_some() {
            return Ok(());
        }
        let result = self.append_checked(org, first_seq, leaves);
        if let Err(e @ (TreeError::Gap { .. } | TreeError::Diverged { .. })) = &result {
            tracing::error!(org, error = %e, "the org's Merkle tree is unavailable from now on");
            self.unavailable
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(org.to_string(), e.to_string());
        }
        result
    }

    fn append_checked(&self, org: &str, first_seq: u64, leaves: &[Hash]) -> Result<(), TreeError> {
        let tree = self.org_or_create(org)?;
        let mut tree = lock(&tree);
        let size = tree.size();
        if first_seq == 0 || first_seq > size + 1 {
            return Err(TreeError::Gap {
                org: org.to_string(),
                size,
                seq: first_seq,
            });
        }
        let have = usize::try_from(size + 1 - first_seq)
            .unwrap_or(usize::MAX)
            .min(leaves.len());
        for (i, leaf) in leaves[..have].iter().enumerate() {
            let index = first_seq - 1 + i as u64;
            if tree.leaf(index)? != *leaf {
                return Err(TreeError::Diverged {
                    org: org.to_string(),
                    seq: index + 1,
                });
            }
        }
        tree.append(&leaves[have..])
    }

    /// Takes in a sealed record read back (from the write-ahead log or the index): appended if
    /// it is its org's next leaf, skipped if the tree has it (the last leaf is checked), an
    /// error if records before it are missing. Records without chain fields are skipped.
    pub fn replay(&self, record: &AuditRecord) -> Result<(), TreeError> {
        let Some(seq) = record.seq else {
            return Ok(());
        };
        let size = self.size(&record.org_id);
        if seq < size {
            return Ok(());
        }
        let Some(leaf) = leaf_of_sealed(record) else {
            return Ok(());
        };
        self.append(&record.org_id, seq, &[leaf])
    }

    /// Makes every tree's written hashes durable. Every tree is tried; the first error is
    /// returned.
    pub fn sync_all(&self) -> Result<(), TreeError> {
        let trees: Vec<SharedTree> = self
            .orgs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut first = None;
        for t in trees {
            let mut t = lock(&t);
            if !t.is_dirty() {
                continue;
            }
            if let Err(e) = t.sync() {
                tracing::error!(error = %e, "cannot sync a Merkle tree");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::merkle::{self, Leaves, leaf_hash};

    #[test]
    fn orgs_are_apart_appends_are_checked_and_trees_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::open(dir.path()).unwrap();
        assert!(matches!(
            Trees::open(dir.path()),
            Err(TreeError::Locked { .. })
        ));
        let l: Vec<Hash> = (0..10u8).map(|i| leaf_hash(&[i])).collect();
        trees.append("acme", 1, &l[..4]).unwrap();
        trees.append("a..b", 1, &l[..2]).unwrap();
        // Again from seq 3: 3 and 4 are there and equal, 5 and 6 are new.
        trees.append("acme", 3, &l[2..6]).unwrap();
        assert_eq!(trees.size("acme"), 6);
        // A gap, or another leaf for a seq it has: refused, nothing appended.
        let fork = trees.append("a..b", 2, &l[..1]).unwrap_err();
        assert!(matches!(fork, TreeError::Diverged { seq: 2, .. }), "{fork}");
        let gap = trees.append("acme", 8, &l[7..8]).unwrap_err();
        assert!(
            matches!(
                gap,
                TreeError::Gap {
                    size: 6,
                    seq: 8,
                    ..
                }
            ),
            "{gap}"
        );
        assert_eq!(trees.size("acme"), 6);
        // From then on the org's tree is unavailable, saying why, and takes nothing more.
        assert!(trees.unavailable("acme").unwrap().contains("seq 8"));
        trees.append("acme", 7, &l[6..7]).unwrap();
        assert_eq!(trees.size("acme"), 6);
        assert_eq!(trees.size("a..b"), 2);
        assert!(trees.unavailable("a..b").is_some());
        assert_eq!(trees.size("globex"), 0);
        assert_eq!(trees.unavailable("globex"), None);
        trees.sync_all().unwrap();
        drop(trees);
        let trees = Trees::open(dir.path()).unwrap();
        assert_eq!(trees.orgs(), vec!["a..b".to_string(), "acme".into()]);
        let acme = trees.org("acme").unwrap();
        assert_eq!(
            lock(&acme).root(),
            merkle::root(&mut Leaves(&l[..6]), 6).unwrap()
        );
        assert!(dir.path().join("org-a..b").is_dir());
    }
}
