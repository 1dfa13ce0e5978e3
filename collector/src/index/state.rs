//! The index's state file, `<dir>/index-state.json`: how far in the write-ahead log the index is
//! committed. Versioned; written to a temporary file, fsynced and renamed over the old one.

use super::error::IndexError;
use super::scheme::PartitionScheme;
use codestax_storage::{OnDamage, StateFile, StateFileError, StateFileFault, Versioned};
use serde::{Deserialize, Serialize};
use std::path::Path;

const STATE_FILE: &str = "index-state.json";
const STATE_TMP: &str = "index-state.json.tmp";
const STATE_VERSION: u32 = 1;

/// What the state file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IndexState {
    pub version: u32,
    /// The partition scheme of every partition directory; reopening with another one is refused.
    pub scheme: PartitionScheme,
    /// Every record of the log up to this LSN (inclusive) is committed and searchable.
    pub indexed_through: Option<u64>,
    /// Records up to this LSN may be committed in some partition even though `indexed_through` is
    /// lower (a commit was under way): each is looked up before it is added again.
    pub pending_through: Option<u64>,
}

impl IndexState {
    pub fn new(scheme: PartitionScheme) -> IndexState {
        IndexState {
            version: STATE_VERSION,
            scheme,
            indexed_through: None,
            pending_through: None,
        }
    }
}

impl Versioned for IndexState {
    const VERSION: u32 = STATE_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

fn state_file(dir: &Path) -> StateFile {
    StateFile::new(dir.join(STATE_FILE), &STATE_TMP[STATE_FILE.len()..])
}

fn state_error(e: StateFileError) -> IndexError {
    match e.into_fault() {
        StateFileFault::Io { path, source } => IndexError::io(&path, source),
        StateFileFault::Content { path, message } => IndexError::State { path, message },
    }
}

/// Reads the state: a complete temporary file first (it is only ever newer than the stable one:
/// a crash came between writing it and the rename), else the stable file, else `None` for a new
/// index. A torn temporary file is ignored; a damaged stable file is an error.
pub(crate) fn read_state(dir: &Path) -> Result<Option<IndexState>, IndexError> {
    state_file(dir)
        .read_json(OnDamage::Fail)
        .map_err(state_error)
}

/// Writes the state: temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_state(dir: &Path, state: &IndexState) -> Result<(), IndexError> {
    let bytes = serde_json::to_vec_pretty(state).expect("the state always serialises");
    state_file(dir).write(&bytes).map_err(state_error)
}

/// Fsyncs a directory so a rename or a new entry in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    codestax_storage::sync_dir(dir).map_err(|e| IndexError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_recovery_from_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), None);
        let mut s = IndexState::new(PartitionScheme::Week);
        s.indexed_through = Some(42);
        write_state(dir.path(), &s).unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), Some(s.clone()));
        // A crash between writing the temporary file and the rename: the newer file wins.
        let mut newer = s.clone();
        newer.indexed_through = Some(50);
        std::fs::write(
            dir.path().join(STATE_TMP),
            serde_json::to_vec(&newer).unwrap(),
        )
        .unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), Some(newer));
        // A torn temporary file is ignored.
        std::fs::write(dir.path().join(STATE_TMP), b"{\"vers").unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), Some(s));
        // A corrupt stable file is an error.
        std::fs::write(dir.path().join(STATE_FILE), b"nope").unwrap();
        assert!(matches!(
            read_state(dir.path()),
            Err(IndexError::State { .. })
        ));
    }
}
