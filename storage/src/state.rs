//! Small state files, written atomically and read back in recovery order.
//!
//! Writing ([`AtomicFile`]): the temporary sibling is written and fsynced, renamed over the
//! stable name, then the directory is fsynced, so a crash leaves the old or the new content,
//! never a mix. Reading ([`StateFile::read_json`]): a complete temporary file is the newest state
//! (a crash came between its fsync and the rename), else the stable file. A torn temporary file
//! is ignored; what a damaged stable file means is the caller's choice ([`OnDamage`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::dir::sync_dir;

/// A state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot write state file {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read state file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {} has version {found}; this build reads version {expected}", .path.display())]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("state file {} is damaged: {message}", .path.display())]
    Damaged { path: PathBuf, message: String },
}

impl StateFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            StateFileError::Write { path, .. }
            | StateFileError::Read { path, .. }
            | StateFileError::Version { path, .. }
            | StateFileError::Damaged { path, .. } => path,
        }
    }

    /// This error as an I/O error: the one underneath, or (for a file whose content cannot be
    /// used) one of kind `Other` carrying this error's text.
    pub fn into_io_error(self) -> io::Error {
        match self {
            StateFileError::Write { source, .. } | StateFileError::Read { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }

    /// This error in the two kinds callers tell apart: the disk failed, or the file's content
    /// cannot be used (with why, without the path).
    pub fn into_fault(self) -> StateFileFault {
        match self {
            StateFileError::Write { path, source } | StateFileError::Read { path, source } => {
                StateFileFault::Io { path, source }
            }
            StateFileError::Version {
                path,
                found,
                expected,
            } => StateFileFault::Content {
                path,
                message: format!("version {found} is not supported (this build reads {expected})"),
            },
            StateFileError::Damaged { path, message } => StateFileFault::Content { path, message },
        }
    }

    /// Whether the disk (or the quota) is full: the write may succeed once space is freed.
    pub fn is_disk_full(&self) -> bool {
        self.io_error()
            .is_some_and(|e| crate::disk::is_full(e.kind()))
    }

    /// The I/O error underneath, if this is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            StateFileError::Write { source, .. } | StateFileError::Read { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// A [`StateFileError`] by kind ([`StateFileError::into_fault`]).
#[derive(Debug)]
pub enum StateFileFault {
    /// Reading or writing failed.
    Io { path: PathBuf, source: io::Error },
    /// The file was read but cannot be used: another version, or damaged.
    Content { path: PathBuf, message: String },
}

/// A versioned state document: `{"version": N, ...}`.
pub trait Versioned: DeserializeOwned {
    const VERSION: u32;
    fn version(&self) -> u32;
}

/// What reading does with a stable file that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDamage {
    /// Rename it aside to `NAME.corrupt`, warn, and read it as missing: for state the caller can
    /// rebuild (the agent replays from its spool).
    MoveAside,
    /// Refuse with [`StateFileError::Damaged`]: for state nothing else can tell.
    Fail,
}

/// A state file and the temporary sibling it is written through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
    temp: PathBuf,
}

impl StateFile {
    /// The state file at `path`, written through `path` + `temp_suffix` (e.g. `.tmp`).
    pub fn new(path: impl Into<PathBuf>, temp_suffix: &str) -> StateFile {
        let path = path.into();
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(temp_suffix);
        let temp = path.with_file_name(name);
        StateFile { path, temp }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Replaces the file with `bytes`, atomically and durably.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateFileError> {
        let mut file = AtomicFile::create(&self.path, &self.temp)?;
        file.write_all(bytes)
            .map_err(|source| StateFileError::Write {
                path: self.temp.clone(),
                source,
            })?;
        file.commit()
    }

    /// Replaces the file with `value` as compact JSON.
    pub fn write_json<T: Serialize>(&self, value: &T) -> Result<(), StateFileError> {
        self.write(&serde_json::to_vec(value).expect("state serialises to JSON"))
    }

    /// Writes `value` as compact JSON and fsyncs it under a name reading never looks at
    /// (`NAME.prepared`), to be put in place by [`PreparedFile::commit`]: a crash before the
    /// commit leaves the file as it was (unlike the temporary file of [`StateFile::write`],
    /// which reading prefers once complete).
    pub fn prepare_json<T: Serialize>(&self, value: &T) -> Result<PreparedFile, StateFileError> {
        let mut prepared = self.path.file_name().unwrap_or_default().to_os_string();
        prepared.push(".prepared");
        let prepared = self.path.with_file_name(prepared);
        let mut file = AtomicFile::create(&self.path, &prepared)?;
        file.write_all(&serde_json::to_vec(value).expect("state serialises to JSON"))
            .map_err(|source| StateFileError::Write {
                path: prepared.clone(),
                source,
            })?;
        file.prepare()
    }

    /// Reads the newest complete copy; `Ok(None)` when there is none (first start, or a damaged
    /// stable copy moved aside under [`OnDamage::MoveAside`]). A copy of another version is
    /// refused, naming it.
    pub fn read_json<T: Versioned>(
        &self,
        on_damage: OnDamage,
    ) -> Result<Option<T>, StateFileError> {
        for (candidate, is_temp) in [(&self.temp, true), (&self.path, false)] {
            let bytes = match fs::read(candidate) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StateFileError::Read {
                        path: candidate.clone(),
                        source,
                    });
                }
            };
            match serde_json::from_slice::<T>(&bytes) {
                Ok(value) if value.version() != T::VERSION => {
                    return Err(StateFileError::Version {
                        path: candidate.clone(),
                        found: value.version(),
                        expected: T::VERSION,
                    });
                }
                Ok(value) => return Ok(Some(value)),
                Err(e) if on_damage == OnDamage::MoveAside => {
                    let mut aside = candidate.clone().into_os_string();
                    aside.push(".corrupt");
                    tracing::warn!(
                        path = %candidate.display(),
                        error = %e,
                        "state file does not parse; moved aside"
                    );
                    let _ = fs::rename(candidate, &aside);
                }
                // A torn temporary file: the stable one is the last complete write.
                Err(_) if is_temp => {}
                Err(e) => {
                    return Err(StateFileError::Damaged {
                        path: candidate.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(None)
    }
}

/// A file written under a temporary name and renamed into place by [`AtomicFile::commit`]
/// (fsync, rename, fsync of the directory); dropped uncommitted, the temporary file is removed.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    path: PathBuf,
    temp: PathBuf,
}

impl AtomicFile {
    /// Creates (or truncates) `temp` to be renamed to `path`.
    pub fn create(path: &Path, temp: &Path) -> Result<AtomicFile, StateFileError> {
        AtomicFile::create_with(path, temp, &mut OpenOptions::new())
    }

    /// [`AtomicFile::create`] with extra open options (e.g. a Unix mode).
    pub fn create_with(
        path: &Path,
        temp: &Path,
        options: &mut OpenOptions,
    ) -> Result<AtomicFile, StateFileError> {
        let file = options
            .write(true)
            .create(true)
            .truncate(true)
            .open(temp)
            .map_err(|source| StateFileError::Write {
                path: temp.to_path_buf(),
                source,
            })?;
        Ok(AtomicFile {
            file: Some(file),
            path: path.to_path_buf(),
            temp: temp.to_path_buf(),
        })
    }

    /// The temporary file, to write to.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// Makes the content durable under the final name.
    pub fn commit(self) -> Result<(), StateFileError> {
        self.prepare()?.commit()
    }

    /// Makes the content durable under the temporary name only: what needs room on the disk is
    /// done, what is left ([`PreparedFile::commit`]) is a rename. For a change that must be
    /// recorded before it is made, and must not be recorded unless it can be made.
    pub fn prepare(mut self) -> Result<PreparedFile, StateFileError> {
        let file = self.file.take().expect("open until committed");
        let prepared = PreparedFile {
            path: self.path.clone(),
            temp: self.temp.clone(),
            done: false,
        };
        // From here on an error removes the temporary file through `prepared`'s drop.
        file.sync_all().map_err(|source| StateFileError::Write {
            path: self.temp.clone(),
            source,
        })?;
        Ok(prepared)
    }
}

/// A file's next content, fsynced under its temporary name ([`AtomicFile::prepare`]): committed,
/// it replaces the file; dropped uncommitted, it is removed and the file stays as it was.
#[derive(Debug)]
#[must_use = "dropped uncommitted, the prepared content is removed"]
pub struct PreparedFile {
    path: PathBuf,
    temp: PathBuf,
    done: bool,
}

impl PreparedFile {
    /// Renames the content over the final name and fsyncs the directory.
    pub fn commit(mut self) -> Result<(), StateFileError> {
        self.done = true;
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateFileError::Write { path, source }
        };
        fs::rename(&self.temp, &self.path).map_err(write_err(&self.path))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        sync_dir(dir).map_err(write_err(dir))
    }
}

impl Drop for PreparedFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
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
        let file = StateFile::new(dir.path().join("state.json"), ".new");
        let read = |on| file.read_json::<Doc>(on);
        assert_eq!(read(OnDamage::Fail).unwrap(), None);
        file.write_json(&Doc { version: 1, n: 1 }).unwrap();
        assert!(!file.temp_path().exists());
        assert_eq!(read(OnDamage::Fail).unwrap().unwrap().n, 1);
        // A crash after the temp file's fsync but before the rename: the temp copy wins.
        fs::write(file.temp_path(), br#"{"version":1,"n":2}"#).unwrap();
        assert_eq!(read(OnDamage::Fail).unwrap().unwrap().n, 2);
        // A torn temp copy is ignored (and moved aside when asked) for the stable copy.
        fs::write(file.temp_path(), br#"{"version":1,"#).unwrap();
        assert_eq!(read(OnDamage::Fail).unwrap().unwrap().n, 1);
        assert_eq!(read(OnDamage::MoveAside).unwrap().unwrap().n, 1);
        assert!(dir.path().join("state.json.new.corrupt").exists());
        // A damaged stable copy: an error naming it, or nothing (moved aside); never a panic.
        fs::write(file.path(), b"\0\0\0").unwrap();
        let err = read(OnDamage::Fail).unwrap_err().to_string();
        assert!(err.contains("state.json is damaged"), "{err}");
        assert_eq!(read(OnDamage::MoveAside).unwrap(), None);
        assert!(dir.path().join("state.json.corrupt").exists());
        // Another version is refused, naming the file.
        fs::write(file.path(), br#"{"version":7,"n":1}"#).unwrap();
        let err = read(OnDamage::MoveAside).unwrap_err().to_string();
        assert!(err.contains("state.json has version 7"), "{err}");
    }

    #[test]
    fn a_prepared_change_is_invisible_until_committed_and_gone_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"), ".tmp");
        file.write_json(&Doc { version: 1, n: 1 }).unwrap();
        let prepared_path = dir.path().join("state.json.prepared");
        let n = || file.read_json::<Doc>(OnDamage::Fail).unwrap().unwrap().n;

        // Prepared: on disk and fsynced, but reading (as after a crash here) sees the old state.
        let prepared = file.prepare_json(&Doc { version: 1, n: 2 }).unwrap();
        assert!(prepared_path.exists());
        assert_eq!(n(), 1);
        drop(prepared);
        assert!(!prepared_path.exists(), "a dropped preparation is removed");
        assert_eq!(n(), 1);

        file.prepare_json(&Doc { version: 1, n: 3 })
            .unwrap()
            .commit()
            .unwrap();
        assert!(!prepared_path.exists());
        assert_eq!(n(), 3);
    }

    #[test]
    fn an_uncommitted_atomic_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let temp = dir.path().join(".out.partial");
        let mut f = AtomicFile::create(&path, &temp).unwrap();
        f.write_all(b"half").unwrap();
        drop(f);
        assert!(!temp.exists() && !path.exists());
        let mut f = AtomicFile::create(&path, &temp).unwrap();
        f.write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        assert!(!temp.exists());
    }
}
