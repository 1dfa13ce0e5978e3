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
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::state_file::{self, StateFileError, Versioned};

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
/// ending before `offset` is in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    pub offset: u64,
    pub tail: TailCheck,
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

/// The checkpoint table, shared by the file source (lookups, paths, releases) and the forwarder
/// (positions read from the spool, persistence before segment deletion).
#[derive(Clone)]
pub struct CheckpointStore {
    inner: Arc<Mutex<Table>>,
}

struct Table {
    path: PathBuf,
    /// Usually one per key; more only until the live file is opened and the rest are stale
    /// (inode reuse, truncation).
    entries: HashMap<FileKey, Vec<Checkpoint>>,
    dirty: bool,
}

impl CheckpointStore {
    /// Loads `path` (a missing or corrupt file gives an empty table: the spool's positions and
    /// replays with stable ids make up for it) and merges positions recovered from the spool.
    pub fn open(
        path: &Path,
        recovered: impl IntoIterator<Item = FilePosition>,
    ) -> Result<CheckpointStore, StateFileError> {
        let loaded = state_file::read_json::<CheckpointFile>(path)?;
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
        Ok(CheckpointStore {
            inner: Arc::new(Mutex::new(table)),
        })
    }

    /// The stored candidates for a file key, newest offset first.
    pub fn candidates(&self, key: FileKey) -> Vec<FilePosition> {
        let table = self.lock();
        let mut found: Vec<FilePosition> = table
            .entries
            .get(&key)
            .map(|v| v.iter().map(|c| c.position).collect())
            .unwrap_or_default();
        found.sort_by_key(|p| std::cmp::Reverse(p.offset));
        found
    }

    /// Records a position that is durable in the spool (never moves a position backwards).
    pub fn advance(&self, position: FilePosition) {
        self.lock().merge(position, None);
    }

    /// Makes `position` the only checkpoint of its file: the file was opened and matched (or
    /// found to be new, truncated or a reused inode), and every other candidate is stale.
    pub fn settle(&self, position: FilePosition, path: &Path) {
        let mut table = self.lock();
        let slot = table.entries.entry(position.key).or_default();
        let keep_path = Some(path.to_path_buf());
        let changed = slot.len() != 1 || slot[0].position != position || slot[0].path != keep_path;
        if changed {
            *slot = vec![Checkpoint {
                position,
                path: keep_path,
            }];
            table.dirty = true;
        }
    }

    /// Drops the checkpoint of a file that is gone for good (deleted and released).
    pub fn forget(&self, key: FileKey) {
        let mut table = self.lock();
        if table.entries.remove(&key).is_some() {
            table.dirty = true;
        }
    }

    /// Every checkpoint, for status output and tests.
    pub fn all(&self) -> Vec<Checkpoint> {
        let table = self.lock();
        let mut all: Vec<Checkpoint> = table.entries.values().flatten().cloned().collect();
        all.sort_by_key(|c| c.position.key);
        all
    }

    /// Writes the table if it changed since the last write.
    pub fn persist(&self) -> Result<(), StateFileError> {
        let mut table = self.lock();
        if !table.dirty {
            return Ok(());
        }
        let mut files: Vec<Checkpoint> = table.entries.values().flatten().cloned().collect();
        files.sort_by_key(|c| (c.position.key, c.position.fingerprint.len));
        state_file::write_json(
            &table.path,
            &CheckpointFile {
                version: CheckpointFile::VERSION,
                files,
            },
        )?;
        table.dirty = false;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().expect("checkpoint lock")
    }
}

impl Table {
    fn merge(&mut self, position: FilePosition, path: Option<PathBuf>) {
        let slot = self.entries.entry(position.key).or_default();
        // The same file: same fingerprint, or a fingerprint that grew from this one's prefix
        // (same length and hash means the same prefix; a grown one supersedes an older shorter
        // one only once settled by the tailer, so both are kept until then).
        match slot
            .iter_mut()
            .find(|c| c.position.fingerprint == position.fingerprint)
        {
            Some(existing) => {
                if position.offset > existing.position.offset {
                    existing.position = position;
                    self.dirty = true;
                }
                if path.is_some() && existing.path != path {
                    existing.path = path;
                    self.dirty = true;
                }
            }
            None => {
                slot.push(Checkpoint { position, path });
                self.dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(ino: u64, fp_len: u32, fp_hash: u64, offset: u64) -> FilePosition {
        FilePosition {
            key: FileKey { dev: 1, ino },
            fingerprint: Fingerprint {
                len: fp_len,
                hash: fp_hash,
            },
            offset,
            tail: TailCheck::default(),
        }
    }

    #[test]
    fn merges_persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        let store = CheckpointStore::open(&path, [pos(7, 10, 1, 100), pos(7, 10, 1, 50)]).unwrap();
        store.advance(pos(7, 10, 1, 80));
        store.advance(pos(7, 20, 2, 300));
        let c = store.candidates(FileKey { dev: 1, ino: 7 });
        assert_eq!(
            c.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [300, 100],
            "positions never move back; different fingerprints are kept apart"
        );
        store.persist().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"version":1,"files":["#), "{text}");

        let reopened = CheckpointStore::open(&path, [pos(7, 20, 2, 400)]).unwrap();
        assert_eq!(
            reopened.candidates(FileKey { dev: 1, ino: 7 })[0].offset,
            400,
            "spool positions newer than the file win"
        );
        reopened.settle(pos(7, 20, 2, 400), Path::new("/x/a.jsonl"));
        assert_eq!(reopened.all().len(), 1);
        reopened.forget(FileKey { dev: 1, ino: 7 });
        reopened.persist().unwrap();
        assert!(
            CheckpointStore::open(&path, []).unwrap().all().is_empty(),
            "forgotten after release"
        );
    }
}
