//! For tests: a tantivy [`Directory`] whose writes fail or wait on demand, so an I/O error the
//! index must survive (EIO, which a tmpfs cannot give) can be injected, and a write held midway
//! (a flush in flight). Given to the index through
//! [`IndexOptions::directory`](super::IndexOptions::directory).

use super::options::DirectoryHook;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use tantivy::Directory;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{DirectoryLock, FileHandle, Lock, WatchCallback, WatchHandle, WritePtr};

/// Which OS error writes fail with, if any, and whether they wait; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults(Arc<(Mutex<State>, Condvar)>);

#[derive(Debug, Default)]
struct State {
    errno: Option<i32>,
    held: bool,
}

impl Faults {
    /// From now on, every new file and every atomic write (`meta.json`) fails with OS error
    /// `errno` in the partitions the hook applies to.
    pub fn arm(&self, errno: i32) {
        self.0.0.lock().unwrap().errno = Some(errno);
    }

    /// Writes go through again.
    pub fn disarm(&self) {
        self.0.0.lock().unwrap().errno = None;
    }

    /// From now on, those writes wait until [`Self::release`].
    pub fn hold(&self) {
        self.0.0.lock().unwrap().held = true;
    }

    /// Writes held go on (and fail, if armed meanwhile).
    pub fn release(&self) {
        self.0.0.lock().unwrap().held = false;
        self.0.1.notify_all();
    }

    fn check(&self) -> io::Result<()> {
        let state = self.0.0.lock().unwrap();
        let state = self.0.1.wait_while(state, |s| s.held).unwrap();
        match state.errno {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    /// The hook that wraps the directories of the partitions `applies` says yes to.
    pub fn hook(&self, applies: impl Fn(&Path) -> bool + Send + Sync + 'static) -> DirectoryHook {
        let faults = self.clone();
        DirectoryHook(Arc::new(move |path, inner| {
            if applies(path) {
                Box::new(FaultyDirectory {
                    inner,
                    faults: faults.clone(),
                })
            } else {
                inner
            }
        }))
    }
}

#[derive(Debug, Clone)]
struct FaultyDirectory {
    inner: Box<dyn Directory>,
    faults: Faults,
}

impl Directory for FaultyDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        self.faults
            .check()
            .map_err(|e| OpenWriteError::wrap_io_error(e, PathBuf::from(path)))?;
        self.inner.open_write(path)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.faults.check()?;
        self.inner.atomic_write(path, data)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}
