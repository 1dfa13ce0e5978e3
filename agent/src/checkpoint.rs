//! File checkpoints: how far each tailed file has been spooled, keyed by file identity, kept in
//! `checkpoints.json` (versioned, written atomically).
//!
//! Positions enter this table only from the spool: the tailer appends a [`FilePosition`] after
//! a file's records in the same fsynced append, and the table is fed from the spool's recovery
//! scan and from the forwarder as it reads those entries. The table is persisted before any
//! spool segment holding positions is deleted, so a checkpoint is never ahead of the spool and
//! never lost with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use codestax_storage::{OnDamage, StateFile, StateFileError, Versioned};

/// Which file on which device: `(st_dev, st_ino)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// A hash of a file's first `len` bytes. A file shorter than the configured fingerprint size has
/// a shorter fingerprint, which grows with the file; a stored fingerprint matches a file whose
/// first `len` bytes hash to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

/// A hash of the `len` bytes just before a checkpoint's offset: if they changed, the file was
/// truncated and rewritten (copytruncate) or its inode reused with the same first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TailCheck {
    pub len: u32,
    pub hash: u64,
}

/// How far one file (identified by key and fingerprint) has been read and spooled: every line
/// ending before `offset` is in the spool. `stamp` orders the positions of a key: the newest
/// describes whatever file now has that inode (positions of a file that was truncated, or of an
/// earlier file whose inode was reused, are older).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    pub offset: u64,
    pub tail: TailCheck,
    pub stamp: u64,
}

/// A checkpoint as stored: the position and the path the file was last seen at (informative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(flatten)]
    pub position: FilePosition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<Checkpoint>,
}

impl Versioned for CheckpointFile {
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
}

/// `checkpoints.json`, written through `checkpoints.json.new`; a damaged copy is moved aside
/// (the spool's positions and replays with stable ids make up for it).
fn state_file(path: &Path) -> StateFile {
    StateFile::new(path, ".new")
}

/// The checkpoint table, shared by the file source (lookups, paths, releases) and the forwarder
/// (positions read from the spool, persistence before segment deletion).
#[derive(Clone)]
pub struct CheckpointStore {
    inner: Arc<Mutex<Table>>,
    stamps: Arc<AtomicU64>,
}

struct Table {
    path: PathBuf,
    entries: HashMap<FileKey, Checkpoint>,
    dirty: bool,
}

impl CheckpointStore {
    /// Loads `path` (a missing or corrupt file gives an empty table: the spool's positions and
    /// replays with stable ids make up for it) and merges positions recovered from the spool.
    pub fn open(
        path: &Path,
        recovered: impl IntoIterator<Item = FilePosition>,
    ) -> Result<CheckpointStore, StateFileError> {
        let loaded = state_file(path).read_json::<CheckpointFile>(OnDamage::MoveAside)?;
        let mut table = Table {
            path: path.to_path_buf(),
            entries: HashMap::new(),
            dirty: false,
        };
        for checkpoint in loaded.map(|f| f.files).unwrap_or_default() {
            table.merge(checkpoint.position, checkpoint.path);
        }
        table.dirty = false;
        for position in recovered {
            table.merge(position, None);
        }
        let newest = table
            .entries
            .values()
            .map(|c| c.position.stamp)
            .max()
            .unwrap_or(0);
        Ok(CheckpointStore {
            inner: Arc::new(Mutex::new(table)),
            stamps: Arc::new(AtomicU64::new(newest + 1)),
        })
    }

    /// A stamp newer than every position known.
    pub fn next_stamp(&self) -> u64 {
        self.stamps.fetch_add(1, Ordering::Relaxed)
    }

    /// The newest position of a file key.
    pub fn get(&self, key: FileKey) -> Option<FilePosition> {
        self.lock().entries.get(&key).map(|c| c.position)
    }

    /// Records a position that is durable in the spool (an older stamp changes nothing).
    pub fn advance(&self, position: FilePosition) {
        self.lock().merge(position, None);
    }

    /// Records the position a file was opened at, with the path it was found under.
    pub fn settle(&self, position: FilePosition, path: &Path) {
        self.lock().merge(position, Some(path.to_path_buf()));
    }

    /// Drops the checkpoint of a file that is gone for good (deleted and released).
    pub fn forget(&self, key: FileKey) {
        let mut table = self.lock();
        if table.entries.remove(&key).is_some() {
            table.dirty = true;
        }
    }

    /// Drops the checkpoints of files that are gone: not tailed now (`tailed` says which are)
    /// and no longer found where they were last seen (`still_there(path, key)`), or never seen
    /// at a path (positions read back from the spool for a file released since). Such a file
    /// is never read again unless it comes back into the globs, and then it is read from its
    /// start (its lines keep their ids: the collector drops the ones it has). Returns how many
    /// were dropped.
    pub fn forget_gone(
        &self,
        tailed: impl Fn(FileKey) -> bool,
        still_there: impl Fn(&Path, FileKey) -> bool,
    ) -> usize {
        let mut table = self.lock();
        let before = table.entries.len();
        table.entries.retain(|key, checkpoint| {
            tailed(*key)
                || checkpoint
                    .path
                    .as_deref()
                    .is_some_and(|path| still_there(path, *key))
        });
        let dropped = before - table.entries.len();
        if dropped > 0 {
            table.dirty = true;
        }
        dropped
    }

    /// Every checkpoint, for status output and tests.
    pub fn all(&self) -> Vec<Checkpoint> {
        let table = self.lock();
        let mut all: Vec<Checkpoint> = table.entries.values().cloned().collect();
        all.sort_by_key(|c| c.position.key);
        all
    }

    /// Writes the table if it changed since the last write.
    pub fn persist(&self) -> Result<(), StateFileError> {
        let mut table = self.lock();
        if !table.dirty {
            return Ok(());
        }
        let mut files: Vec<Checkpoint> = table.entries.values().cloned().collect();
        files.sort_by_key(|c| c.position.key);
        state_file(&table.path).write_json(&CheckpointFile {
            version: CheckpointFile::VERSION,
            files,
        })?;
        table.dirty = false;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().expect("checkpoint lock")
    }
}

impl Table {
    fn merge(&mut self, position: FilePosition, path: Option<PathBuf>) {
        match self.entries.get_mut(&position.key) {
            Some(existing) => {
                if position.stamp > existing.position.stamp {
                    existing.position = position;
                    self.dirty = true;
                }
                if path.is_some() && existing.path != path {
                    existing.path = path;
                    self.dirty = true;
                }
            }
            None => {
                self.entries
                    .insert(position.key, Checkpoint { position, path });
                self.dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(ino: u64, fp_hash: u64, offset: u64, stamp: u64) -> FilePosition {
        FilePosition {
            key: FileKey { dev: 1, ino },
            fingerprint: Fingerprint {
                len: 16,
                hash: fp_hash,
            },
            offset,
            tail: TailCheck::default(),
            stamp,
        }
    }

    #[test]
    fn newest_stamp_wins_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        let key = FileKey { dev: 1, ino: 7 };
        let store = CheckpointStore::open(&path, [pos(7, 1, 100, 2), pos(7, 1, 50, 1)]).unwrap();
        assert_eq!(store.get(key).unwrap().offset, 100);
        assert_eq!(store.next_stamp(), 3);
        // A truncated file (or a reused inode) has a lower offset but a newer stamp.
        store.advance(pos(7, 2, 10, 5));
        store.advance(pos(7, 1, 900, 4));
        assert_eq!(store.get(key).unwrap().offset, 10);
        store.persist().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"version":1,"files":["#), "{text}");

        let reopened = CheckpointStore::open(&path, [pos(7, 2, 400, 6), pos(7, 2, 1, 3)]).unwrap();
        assert_eq!(
            reopened.get(key).unwrap().offset,
            400,
            "newer spool positions win"
        );
        assert_eq!(reopened.next_stamp(), 7);
        reopened.settle(pos(7, 2, 400, 8), Path::new("/x/a.jsonl"));
        assert_eq!(
            reopened.all()[0].path.as_deref(),
            Some(Path::new("/x/a.jsonl"))
        );
        reopened.forget(key);
        reopened.persist().unwrap();
        assert!(
            CheckpointStore::open(&path, []).unwrap().all().is_empty(),
            "forgotten after release"
        );
    }
}
