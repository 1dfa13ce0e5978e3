//! What the log writes through: [`RealDisk`] in production, [`FaultyDisk`] to make a chosen write,
//! sync or rollback fail in tests (no test-only fields in the log itself).

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

/// The operations of an append whose failure the log must survive.
pub trait Disk: Debug + Send + Sync {
    /// Writes all of `bytes` at the end of `file`.
    fn write(&self, file: &mut File, bytes: &[u8]) -> io::Result<()>;
    /// Makes what was written to `file` durable (fdatasync).
    fn sync(&self, file: &File) -> io::Result<()>;
    /// Cuts `file` back to `len` bytes, durably: the rollback of a failed append.
    fn truncate(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)?;
        file.sync_data()
    }
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
    /// The next rollback of a failed append fails (the log then refuses writes until one
    /// succeeds).
    Truncate(io::ErrorKind),
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

    /// The first fault armed of the same kind as `like` (whose error kind is ignored).
    fn take(&self, like: fn(io::ErrorKind) -> Fault) -> Option<io::ErrorKind> {
        let mut queue = self.0.lock().expect("fault queue");
        let wanted = std::mem::discriminant(&like(io::ErrorKind::Other));
        let at = queue
            .iter()
            .position(|f| std::mem::discriminant(f) == wanted)?;
        match queue.remove(at)? {
            Fault::Write(kind) | Fault::Sync(kind) | Fault::Truncate(kind) => Some(kind),
        }
    }
}

impl Disk for FaultyDisk {
    fn write(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        match self.take(Fault::Write) {
            Some(kind) => {
                file.write_all(&bytes[..bytes.len() / 2])?;
                Err(kind.into())
            }
            None => RealDisk.write(file, bytes),
        }
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        match self.take(Fault::Sync) {
            Some(kind) => Err(kind.into()),
            None => RealDisk.sync(file),
        }
    }

    fn truncate(&self, file: &File, len: u64) -> io::Result<()> {
        match self.take(Fault::Truncate) {
            Some(kind) => Err(kind.into()),
            None => RealDisk.truncate(file, len),
        }
    }
}
