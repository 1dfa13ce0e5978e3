//! What the log writes through: [`RealDisk`] in production, [`FaultyDisk`] to make a chosen write
//! or sync fail in tests (no test-only fields in the log itself).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// Whether an I/O error of this kind means the disk (or the quota) is full: the write may
/// succeed once space is freed, so callers push back instead of failing for good.
pub fn is_full(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The two operations of an append whose failure the log must survive.
pub trait Disk: Debug + Send + Sync {
    /// Writes all of `bytes` at the end of `file`.
    fn write(&self, file: &mut File, bytes: &[u8]) -> io::Result<()>;
    /// Makes what was written to `file` durable (fdatasync).
    fn sync(&self, file: &File) -> io::Result<()>;
}

/// The file system as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn write(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next write puts down half its bytes, then fails (as ENOSPC mid-batch does).
    Write(io::ErrorKind),
    /// The next sync fails.
    Sync(io::ErrorKind),
}

/// The real disk, except for the faults armed with [`FaultyDisk::arm`], each used once in
/// order. Clones share the queue, so a test keeps one and gives the other to the log.
#[derive(Debug, Clone, Default)]
pub struct FaultyDisk(Arc<Mutex<VecDeque<Fault>>>);

impl FaultyDisk {
    /// Queues `fault` for the next write or sync it applies to.
    pub fn arm(&self, fault: Fault) {
        self.0.lock().expect("fault queue").push_back(fault);
    }

    fn take(&self, pick: fn(Fault) -> Option<io::ErrorKind>) -> Option<io::ErrorKind> {
        let mut queue = self.0.lock().expect("fault queue");
        let at = queue.iter().position(|f| pick(*f).is_some())?;
        queue.remove(at).and_then(pick)
    }
}

impl Disk for FaultyDisk {
    fn write(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        let fault = self.take(|f| match f {
            Fault::Write(kind) => Some(kind),
            Fault::Sync(_) => None,
        });
        match fault {
            Some(kind) => {
                file.write_all(&bytes[..bytes.len() / 2])?;
                Err(kind.into())
            }
            None => RealDisk.write(file, bytes),
        }
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        let fault = self.take(|f| match f {
            Fault::Sync(kind) => Some(kind),
            Fault::Write(_) => None,
        });
        match fault {
            Some(kind) => Err(kind.into()),
            None => RealDisk.sync(file),
        }
    }
}
