//! The retention overrides set through the API, `<data_dir>/retention-overrides.json`:
//! versioned; written to a temporary file, fsynced, renamed over the old one, directory fsynced.
//! On start a complete temporary file wins (a crash came between its fsync and the rename).

use super::error::RetentionError;
use codestax_storage::{
    OnDamage, PreparedFile, StateFile, StateFileError, StateFileFault, Versioned,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(crate) const FILE: &str = "retention-overrides.json";
const TMP: &str = "retention-overrides.json.tmp";
const VERSION: u32 = 1;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridesFile {
    version: u32,
    /// Days per org id.
    days: BTreeMap<String, u32>,
}

impl Versioned for OverridesFile {
    const VERSION: u32 = VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

/// Where the overrides live.
#[derive(Debug, Clone)]
pub(crate) struct OverrideStore {
    dir: PathBuf,
}

impl OverrideStore {
    pub fn new(dir: &Path) -> OverrideStore {
        OverrideStore {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved overrides: a complete temporary file first, else the stable file, else none.
    pub fn load(&self) -> Result<BTreeMap<String, u32>, RetentionError> {
        let file: Option<OverridesFile> = load_preferring_tmp(&self.dir, TMP, FILE)?;
        Ok(file.map(|f| f.days).unwrap_or_default())
    }

    /// Saves `days` atomically: temporary file, fsync, rename, fsync of the directory.
    pub fn save(&self, days: &BTreeMap<String, u32>) -> Result<(), RetentionError> {
        let file = OverridesFile {
            version: VERSION,
            days: days.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("the overrides always serialise");
        save_atomically(&self.dir, TMP, FILE, &bytes)
    }

    /// Writes and fsyncs `days` as the next overrides file, not in place yet
    /// ([`OverrideStore::commit`] puts it there; dropped, it is removed).
    pub fn prepare(&self, days: &BTreeMap<String, u32>) -> Result<PreparedFile, RetentionError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| RetentionError::io(&self.dir, e))?;
        state_file(&self.dir, TMP, FILE)
            .prepare_json(&OverridesFile {
                version: VERSION,
                days: days.clone(),
            })
            .map_err(state_error)
    }

    pub fn commit(&self, prepared: PreparedFile) -> Result<(), RetentionError> {
        prepared.commit().map_err(state_error)
    }
}

/// Reads a state file of `dir`: a complete (parseable) temporary file `tmp` first, else the
/// stable file `stable`, else `None`. A damaged stable file is an error naming it.
pub(super) fn load_preferring_tmp<T: Versioned>(
    dir: &Path,
    tmp: &str,
    stable: &str,
) -> Result<Option<T>, RetentionError> {
    state_file(dir, tmp, stable)
        .read_json(OnDamage::Fail)
        .map_err(state_error)
}

/// Writes a state file of `dir` atomically: temporary file, fsync, rename, fsync of the
/// directory.
pub(super) fn save_atomically(
    dir: &Path,
    tmp: &str,
    stable: &str,
    bytes: &[u8],
) -> Result<(), RetentionError> {
    std::fs::create_dir_all(dir).map_err(|e| RetentionError::io(dir, e))?;
    state_file(dir, tmp, stable)
        .write(bytes)
        .map_err(state_error)
}

fn state_file(dir: &Path, tmp: &str, stable: &str) -> StateFile {
    let suffix = tmp
        .strip_prefix(stable)
        .expect("the temporary name extends the stable one");
    StateFile::new(dir.join(stable), suffix)
}

fn state_error(e: StateFileError) -> RetentionError {
    match e.into_fault() {
        StateFileFault::Io { path, source } => RetentionError::io(path, source),
        StateFileFault::Content { path, message } => RetentionError::State { path, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_recovery_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = OverrideStore::new(dir.path());
        assert!(store.load().unwrap().is_empty());
        let saved = BTreeMap::from([("acme".to_string(), 400)]);
        store.save(&saved).unwrap();
        assert_eq!(store.load().unwrap(), saved);
        assert!(!dir.path().join(TMP).exists());

        // A crash after the temporary file was complete but before the rename: it is newer.
        let newer = BTreeMap::from([("acme".to_string(), 500)]);
        let file = OverridesFile {
            version: VERSION,
            days: newer.clone(),
        };
        std::fs::write(dir.path().join(TMP), serde_json::to_vec(&file).unwrap()).unwrap();
        assert_eq!(store.load().unwrap(), newer);
        // A torn temporary file is ignored.
        std::fs::write(dir.path().join(TMP), b"{\"vers").unwrap();
        assert_eq!(store.load().unwrap(), saved);
        // A corrupt or future stable file is an error naming it.
        std::fs::remove_file(dir.path().join(TMP)).unwrap();
        std::fs::write(store.path(), br#"{"version": 9, "days": {}}"#).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains(FILE) && err.contains("version 9"), "{err}");
    }
}
