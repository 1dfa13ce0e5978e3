//! Small state files (checkpoints, the spool's acknowledged position) written atomically and read
//! back in recovery order.
//!
//! Writing: `NAME.new` is written and fsynced, renamed over `NAME`, then the directory is fsynced,
//! so a crash leaves either the old or the new content, never a mix. Reading: a complete
//! `NAME.new` is the newest state (a crash came between its fsync and the rename), else `NAME`.
//! A file that does not parse is renamed aside to `NAME.corrupt` and treated as missing: the
//! callers then start from what the spool and the files themselves say, replaying rather than
//! losing records.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path} has version {found}; this agent reads version {expected}")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
}

/// The temporary sibling a state file is written to before being renamed into place.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// Writes `value` as JSON to `path` atomically and durably.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateFileError> {
    let bytes = serde_json::to_vec(value).expect("state serialises to JSON");
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path`: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateFileError> {
    let err = |source| StateFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let temp = temp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&temp, path).map_err(err)?;
    sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(err)
}

/// Fsyncs a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A versioned state document: `{"version": N, ...}`.
pub(crate) trait Versioned: DeserializeOwned {
    const VERSION: u32;
    fn version(&self) -> u32;
}

/// Reads the newest complete copy of a state file; `Ok(None)` when there is none (first start,
/// or only a corrupt copy, which is renamed aside with a warning).
pub(crate) fn read_json<T: Versioned>(path: &Path) -> Result<Option<T>, StateFileError> {
    for candidate in [temp_path(path), path.to_path_buf()] {
        let bytes = match fs::read(&candidate) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StateFileError::Read {
                    path: candidate,
                    source,
                });
            }
        };
        match serde_json::from_slice::<T>(&bytes) {
            Ok(value) if value.version() != T::VERSION => {
                return Err(StateFileError::Version {
                    path: candidate,
                    found: value.version(),
                    expected: T::VERSION,
                });
            }
            Ok(value) => return Ok(Some(value)),
            Err(e) => {
                let mut aside = candidate.clone().into_os_string();
                aside.push(".corrupt");
                tracing::warn!(
                    path = %candidate.display(),
                    error = %e,
                    "state file does not parse; moved aside, recovering from the spool and the files"
                );
                let _ = fs::rename(&candidate, &aside);
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        version: u32,
        n: u64,
    }
    impl Versioned for Doc {
        const VERSION: u32 = 1;
        fn version(&self) -> u32 {
            self.version
        }
    }

    #[test]
    fn round_trip_and_recovery_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(read_json::<Doc>(&path).unwrap(), None);
        write_json(&path, &Doc { version: 1, n: 1 }).unwrap();
        assert_eq!(read_json::<Doc>(&path).unwrap().unwrap().n, 1);
        // A crash after the temp file's fsync but before the rename: the temp copy wins.
        fs::write(temp_path(&path), br#"{"version":1,"n":2}"#).unwrap();
        assert_eq!(read_json::<Doc>(&path).unwrap().unwrap().n, 2);
        // A torn temp copy is moved aside and the stable copy is used.
        fs::write(temp_path(&path), br#"{"version":1,"#).unwrap();
        assert_eq!(read_json::<Doc>(&path).unwrap().unwrap().n, 1);
        assert!(dir.path().join("state.json.new.corrupt").exists());
        // A corrupt stable copy: nothing, never a crash.
        fs::write(&path, b"\0\0\0").unwrap();
        assert_eq!(read_json::<Doc>(&path).unwrap(), None);
        // A newer version is refused, naming the file.
        fs::write(&path, br#"{"version":7,"n":1}"#).unwrap();
        let err = read_json::<Doc>(&path).unwrap_err().to_string();
        assert!(err.contains("state.json has version 7"), "{err}");
    }
}
