//! File checkpoints: how far each tailed file has been spooled, keyed by file identity, kept in
//! `checkpoints.json` (versioned, written atomically).
//!
//! Positions enter this table only from the spool: the tailer appends a [`FilePosition`] after
//! a file's records in the same fsynced append, and the table is fed from the spool's recovery
//! scan and from the forwarder as it reads those entries. The table is persisted before any
//! spool segment holding positions is deleted, so a checkpoint is never ahead of the spool and
//! never lost with it.
//!
//! Beside each position the table keeps where the file was last seen, the size it was last read
//! at and whether it was released read to its end, and for the whole table when the file source
//! last looked at every watched name: what finding files again after a restart, and reporting
//! the ones gone unread, rests on (`source::file`). Fields added since the first version are
//! optional: older tables load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// A checkpoint as stored: the position, and what the file source knows of the file besides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(flatten)]
    pub position: FilePosition,
    /// Where the file was last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Its size when last read: should the file be gone before it is read to its end, the bytes
    /// from the offset to this size are the ones lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Read to its end (`size`) and released after it left the globs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub finished: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<Checkpoint>,
    /// Unix milliseconds of [`CheckpointStore::seen_at`] (absent in files of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen_at: Option<u64>,
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

/// A table written before `seen_at` was kept: its own mtime, less this, stands in for it (the
/// agent that wrote it looked at its files at most this long before it wrote it last).
const SEEN_AT_MARGIN: Duration = Duration::from_secs(60);

/// Forgotten keys remembered at most (a forgotten file's positions still in the spool must not
/// bring its checkpoint back; beyond this many, one is searched for once more and dropped).
const MAX_FORGOTTEN: usize = 10_000;

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
    /// See [`CheckpointStore::seen_at`].
    seen_at: Option<SystemTime>,
    /// Keys forgotten, with the stamp of their last position: older positions of theirs (read
    /// back from the spool by the forwarder) change nothing.
    forgotten: HashMap<FileKey, u64>,
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
        let seen_at = loaded.as_ref().and_then(|f| match f.seen_at {
            Some(ms) => Some(UNIX_EPOCH + Duration::from_millis(ms)),
            None => std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.checked_sub(SEEN_AT_MARGIN)),
        });
        let mut table = Table {
            path: path.to_path_buf(),
            entries: HashMap::new(),
            seen_at,
            forgotten: HashMap::new(),
            dirty: false,
        };
        for checkpoint in loaded.map(|f| f.files).unwrap_or_default() {
            table.entries.insert(checkpoint.position.key, checkpoint);
        }
        for position in recovered {
            table.merge(position, None);
        }
        table.dirty = false;
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

    /// The checkpoint of a file key.
    pub fn checkpoint(&self, key: FileKey) -> Option<Checkpoint> {
        self.lock().entries.get(&key).cloned()
    }

    /// Whether a file key has a checkpoint.
    pub fn knows(&self, key: FileKey) -> bool {
        self.lock().entries.contains_key(&key)
    }

    /// Records a position that is durable in the spool (an older stamp changes nothing).
    pub fn advance(&self, position: FilePosition) {
        self.lock().merge(position, None);
    }

    /// Records where a file was found (renamed, or found again).
    pub fn settle(&self, position: FilePosition, path: &Path) {
        self.lock().merge(position, Some(path.to_path_buf()));
    }

    /// Records the position a file was opened at, with the path it was found under and its
    /// size.
    pub fn opened(&self, position: FilePosition, path: &Path, size: u64) {
        let mut table = self.lock();
        let changed = table
            .merge(position, Some(path.to_path_buf()))
            .is_some_and(|c| {
                let changed = c.size != Some(size) || c.finished;
                (c.size, c.finished) = (Some(size), false);
                changed
            });
        table.dirty |= changed;
    }

    /// Records the size a tailed file was last read at.
    pub fn observe_size(&self, key: FileKey, size: u64) {
        let mut table = self.lock();
        if let Some(c) = table.entries.get_mut(&key)
            && c.size != Some(size)
        {
            c.size = Some(size);
            table.dirty = true;
        }
    }

    /// Records a file released after it left the globs, read to its end, where it is now.
    pub fn finished(&self, position: FilePosition, path: &Path, size: u64) {
        let mut table = self.lock();
        let changed = table
            .merge(position, Some(path.to_path_buf()))
            .is_some_and(|c| {
                let changed = c.size != Some(size) || !c.finished;
                (c.size, c.finished) = (Some(size), true);
                changed
            });
        table.dirty |= changed;
    }

    /// Drops the checkpoint of a file that is gone for good (deleted and released, or not found
    /// again).
    pub fn forget(&self, key: FileKey) {
        let mut table = self.lock();
        if let Some(c) = table.entries.remove(&key) {
            if table.forgotten.len() >= MAX_FORGOTTEN {
                table.forgotten.clear();
            }
            table.forgotten.insert(key, c.position.stamp);
            table.dirty = true;
        }
    }

    /// The checkpoints of files not tailed now (`tailed` says which are) but for those read to
    /// their end and released: files to finish reading, where they were last seen or elsewhere.
    pub fn untailed(&self, tailed: impl Fn(FileKey) -> bool) -> Vec<Checkpoint> {
        let table = self.lock();
        let mut untailed: Vec<Checkpoint> = table
            .entries
            .iter()
            .filter(|(key, _)| !tailed(**key))
            .map(|(_, c)| c.clone())
            .collect();
        untailed.sort_by_key(|c| c.position.key);
        untailed
    }

    /// When the file source last looked at every watched name (the start of its last
    /// discovery, as written to the table with what it found): every file then under a watched
    /// name, and every file since, has a checkpoint or was modified after this. `None` when no
    /// table was ever written.
    pub fn seen_at(&self) -> Option<SystemTime> {
        self.lock().seen_at
    }

    /// Records a discovery that started at `at` and whose files are all in the table. Written
    /// with the next change (it makes no write of its own).
    pub fn mark_seen(&self, at: SystemTime) {
        self.lock().seen_at = Some(at);
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
        let seen_at = table
            .seen_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        state_file(&table.path).write_json(&CheckpointFile {
            version: CheckpointFile::VERSION,
            files,
            seen_at,
        })?;
        table.dirty = false;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().expect("checkpoint lock")
    }
}

impl Table {
    /// Takes a position (the newest stamp wins) and a path; the checkpoint, unless the
    /// position is an old one of a forgotten file.
    fn merge(&mut self, position: FilePosition, path: Option<PathBuf>) -> Option<&mut Checkpoint> {
        let key = position.key;
        if !self.entries.contains_key(&key) {
            if self
                .forgotten
                .get(&key)
                .is_some_and(|stamp| position.stamp <= *stamp)
            {
                return None;
            }
            self.forgotten.remove(&key);
            self.entries.insert(
                key,
                Checkpoint {
                    position,
                    path,
                    size: None,
                    finished: false,
                },
            );
            self.dirty = true;
            return self.entries.get_mut(&key);
        }
        let existing = self.entries.get_mut(&key)?;
        if position.stamp > existing.position.stamp {
            existing.position = position;
            self.dirty = true;
        }
        if path.is_some() && existing.path != path {
            existing.path = path;
            self.dirty = true;
        }
        Some(existing)
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

    #[test]
    fn a_table_of_the_previous_format_loads_and_gains_the_new_fields() {
        // Written before sizes and `seen_at` were kept.
        let dir = tempfile::tempdir().unwrap();
        codestax_storage::testing::copy_fixture("spool-main", dir.path());
        let path = dir.path().join("checkpoints.json");
        let written = SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(written)
            .unwrap();
        let store = CheckpointStore::open(&path, []).unwrap();
        let all = store.all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].position.offset, 1234);
        assert_eq!(
            (all[0].path.as_ref(), all[0].size, all[0].finished),
            (None, None, false)
        );
        // Its mtime, less a margin, stands in for the time its files were last looked at.
        assert_eq!(store.seen_at(), Some(written - SEEN_AT_MARGIN));

        let key = all[0].position.key;
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        store.finished(
            FilePosition {
                stamp: 4,
                ..all[0].position
            },
            Path::new("/x/app.jsonl.1"),
            2000,
        );
        store.mark_seen(at);
        store.persist().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""size":2000,"finished":true"#), "{text}");
        assert!(text.ends_with(r#""seen_at":1700000000123}"#), "{text}");
        let reopened = CheckpointStore::open(&path, []).unwrap();
        assert_eq!(reopened.seen_at(), Some(at));
        let c = &reopened.all()[0];
        assert_eq!((c.size, c.finished), (Some(2000), true));
        assert_eq!(c.path.as_deref(), Some(Path::new("/x/app.jsonl.1")));

        // Forgotten: its older positions, read back from the spool, do not bring it back; a
        // newer one (a new file under the inode) does.
        reopened.forget(key);
        let old = FilePosition {
            offset: 1500,
            stamp: 4,
            ..c.position
        };
        reopened.advance(old);
        assert_eq!(reopened.get(key), None);
        reopened.advance(FilePosition {
            offset: 10,
            stamp: 5,
            ..old
        });
        assert_eq!(reopened.get(key).unwrap().offset, 10);
    }
}
