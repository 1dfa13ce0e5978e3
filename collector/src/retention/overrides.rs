//! The retention overrides set through the API, `<data_dir>/retention-overrides.json`:
//! versioned; written to a temporary file, fsynced, renamed over the old one, directory fsynced.
//! On start a complete temporary file wins (a crash came between its fsync and the rename).

use super::error::RetentionError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
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
        Ok(load_preferring_tmp(&self.dir, TMP, FILE, parse)?.unwrap_or_default())
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
}

/// Reads a state file of `dir`: a complete (parseable) temporary file `tmp` first, else the
/// stable file `stable`, else `None`.
pub(super) fn load_preferring_tmp<T>(
    dir: &Path,
    tmp: &str,
    stable: &str,
    parse: impl Fn(&Path, &[u8]) -> Result<T, RetentionError>,
) -> Result<Option<T>, RetentionError> {
    let tmp = dir.join(tmp);
    match std::fs::read(&tmp) {
        Ok(bytes) => {
            if let Ok(v) = parse(&tmp, &bytes) {
                return Ok(Some(v));
            }
            // A torn temporary file: the stable one is the last complete save.
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RetentionError::io(&tmp, e)),
    }
    let stable = dir.join(stable);
    match std::fs::read(&stable) {
        Ok(bytes) => parse(&stable, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RetentionError::io(&stable, e)),
    }
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
    let tmp = dir.join(tmp);
    let mut f = File::create(&tmp).map_err(|e| RetentionError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| RetentionError::io(&tmp, e))?;
    drop(f);
    let stable = dir.join(stable);
    std::fs::rename(&tmp, &stable).map_err(|e| RetentionError::io(&stable, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RetentionError::io(dir, e))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, u32>, RetentionError> {
    let state = |message: String| RetentionError::State {
        path: path.to_path_buf(),
        message,
    };
    let file: OverridesFile = serde_json::from_slice(bytes).map_err(|e| state(e.to_string()))?;
    if file.version != VERSION {
        return Err(state(format!(
            "version {} is not supported (this build reads {VERSION})",
            file.version
        )));
    }
    Ok(file.days)
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
