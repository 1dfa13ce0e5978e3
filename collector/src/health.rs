//! [`Health`]: whether the collector can take records now. One value, written by what finds out
//! (the store's writer for the write-ahead log, the indexer task for the index, the probe of a
//! failing disk) and read by `/readyz` and by ingest, which refuses while the index cannot
//! write.
//!
//! The WAL's failure is cleared by the next group it writes, or, while none comes, by
//! [`probe_writable`] passing (so `/readyz` turns 200 again on an idle collector once space
//! returns); the index's by a recovery that indexed what it lacked (`crate::indexing`). A failure
//! that room on the disk does not end ([`Failure::until_written`]) is left to the next write.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What can fail to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The write-ahead log: nothing can be acknowledged.
    Wal,
    /// The index: acknowledged records wait in the WAL until it writes again.
    Index,
}

impl Part {
    fn index(self) -> usize {
        match self {
            Part::Wal => 0,
            Part::Index => 1,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Part::Wal => "the write-ahead log",
            Part::Index => "the index",
        }
    }
}

/// Why a part cannot write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// ENOSPC or EDQUOT: clears once space returns.
    Full,
    /// Any other I/O error (EIO...).
    Io,
    /// Only a write that goes through ends it (a failed write not rolled back yet: room on the
    /// disk says nothing about it).
    UntilWritten,
    /// Not an I/O error (the log has the details).
    Other,
}

/// Why a part of the store cannot write: safe to show a client (the OS error, no path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    part: Part,
    cause: Cause,
    detail: String,
}

impl Failure {
    /// An I/O error of `part`: full when it is ENOSPC or EDQUOT.
    pub fn io(part: Part, e: &io::Error) -> Failure {
        let full = matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        );
        Failure {
            part,
            cause: if full { Cause::Full } else { Cause::Io },
            detail: e.to_string(),
        }
    }

    /// A failure of `part` that is not an I/O error; `detail` is shown to clients.
    pub fn other(part: Part, detail: impl Into<String>) -> Failure {
        Failure {
            part,
            cause: Cause::Other,
            detail: detail.into(),
        }
    }

    /// A failure of `part` that only a write that goes through clears, not the probe.
    pub fn until_written(part: Part, detail: impl Into<String>) -> Failure {
        Failure {
            part,
            cause: Cause::UntilWritten,
            detail: detail.into(),
        }
    }

    pub fn part(&self) -> Part {
        self.part
    }

    /// The disk (or quota) is full.
    pub fn is_full(&self) -> bool {
        self.cause == Cause::Full
    }

    /// The API error code: the part and whether it is full.
    pub fn code(&self) -> &'static str {
        match (self.part, self.cause) {
            (Part::Wal, Cause::Full) => "wal_full",
            (Part::Wal, _) => "wal_failed",
            (Part::Index, Cause::Full) => "index_full",
            (Part::Index, _) => "index_failed",
        }
    }

    /// How long a client should wait before trying again: a disk fills up for a while.
    pub fn retry_after(&self) -> Duration {
        match self.cause {
            Cause::Full => Duration::from_secs(5),
            _ => Duration::from_secs(1),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cannot be written: {}", self.part.noun(), self.detail)
    }
}

/// Why the collector is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unready {
    /// Replaying the write-ahead log into the index.
    Starting,
    /// These parts cannot write (the WAL first).
    Failing(Vec<Failure>),
}

impl Unready {
    pub fn code(&self) -> &'static str {
        match self {
            Unready::Starting => "starting",
            Unready::Failing(failures) => failures.first().map_or("unavailable", Failure::code),
        }
    }

    pub fn retry_after(&self) -> Duration {
        match self {
            Unready::Starting => Duration::from_secs(1),
            Unready::Failing(failures) => failures
                .iter()
                .map(Failure::retry_after)
                .max()
                .unwrap_or(Duration::from_secs(1)),
        }
    }
}

impl fmt::Display for Unready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unready::Starting => {
                write!(f, "starting: replaying the write-ahead log into the index")
            }
            Unready::Failing(failures) => {
                for (i, failure) in failures.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{failure}")?;
                }
                Ok(())
            }
        }
    }
}

/// The collector's health; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// The WAL has been replayed into the index (or that was tried; see `failures`).
    started: AtomicBool,
    /// By [`Part::index`].
    failures: Mutex<[Option<Failure>; 2]>,
}

impl Health {
    /// Marks the start as done: reads and writes are served from now on.
    pub fn set_started(&self) {
        self.0.started.store(true, Ordering::Release);
    }

    /// Whether the start is done (reads are served).
    pub fn is_started(&self) -> bool {
        self.0.started.load(Ordering::Acquire)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, [Option<Failure>; 2]> {
        self.0.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `failure.part()` cannot write; returns whether it could before.
    pub fn fail(&self, failure: Failure) -> bool {
        let slot = &mut self.failures()[failure.part.index()];
        let was_ok = slot.is_none();
        *slot = Some(failure);
        was_ok
    }

    /// Records that `part` writes again; returns the failure it had, if any.
    pub fn recover(&self, part: Part) -> Option<Failure> {
        self.failures()[part.index()].take()
    }

    /// Why `part` cannot write, if it cannot.
    pub fn failure(&self, part: Part) -> Option<Failure> {
        self.failures()[part.index()].clone()
    }

    /// Ready: started, and the WAL and the index write.
    pub fn readiness(&self) -> Result<(), Unready> {
        if !self.is_started() {
            return Err(Unready::Starting);
        }
        let failing: Vec<Failure> = self.failures().iter().flatten().cloned().collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(Unready::Failing(failing))
        }
    }
}

/// Bytes [`probe_writable`] writes: room for a group of records or a small index commit.
pub const PROBE_BYTES: usize = 1 << 20;

/// Name of the probe file, beside the data it speaks for (no log or index reads it).
const PROBE_FILE: &str = ".write-probe";

/// Whether `dir` takes [`PROBE_BYTES`] of writes now: writes them to a file, fsyncs it and
/// deletes it (also when a write fails, so a probe never keeps space).
pub fn probe_writable(dir: &Path) -> io::Result<()> {
    use std::io::Write;
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_data()
    })();
    let removed = std::fs::remove_file(&path);
    written?;
    removed
}

/// Whether `dir`'s file system has `keep_free` bytes free beyond a probe's worth (a part that
/// refuses writes into the room it keeps free must not read as writable because a probe fits).
fn has_room(dir: &Path, keep_free: u64) -> io::Result<()> {
    if keep_free == 0 {
        return Ok(());
    }
    match codestax_storage::free_bytes(dir) {
        Some(free) if free < keep_free + PROBE_BYTES as u64 => Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("{free} bytes free, {keep_free} kept free"),
        )),
        _ => Ok(()),
    }
}

/// While `part` has a failure that space returning can clear, probes `dir` every `every` and
/// clears the failure once it takes writes with `keep_free()` bytes left over (asked at each
/// probe: the WAL's room grows with the index's backlog); until `stop`. For the WAL, whose own
/// recovery needs no help but a write, so that an idle collector turns ready again too.
pub async fn probe_while_failing(
    health: Health,
    part: Part,
    dir: std::path::PathBuf,
    keep_free: impl Fn() -> u64 + Send,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(failure) = health.failure(part) else {
            continue;
        };
        if failure.cause == Cause::UntilWritten {
            continue;
        }
        let probed = {
            let dir = dir.clone();
            let keep_free = keep_free();
            tokio::task::spawn_blocking(move || {
                has_room(&dir, keep_free).and_then(|()| probe_writable(&dir))
            })
            .await
        };
        match probed {
            Ok(Ok(())) => {
                if health.recover(part).is_some() {
                    tracing::info!(failure = %failure, "{} takes writes again", part.noun());
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, dir = %dir.display(), "write probe failed"),
            Err(e) => tracing::warn!(error = %e, "write probe task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(part: Part) -> Failure {
        Failure::io(part, &io::Error::from(io::ErrorKind::StorageFull))
    }

    #[test]
    fn readiness_names_every_failing_part_wal_first() {
        let h = Health::default();
        assert_eq!(h.readiness(), Err(Unready::Starting));
        assert_eq!(h.readiness().unwrap_err().code(), "starting");
        h.set_started();
        assert_eq!(h.readiness(), Ok(()));

        assert!(h.fail(full(Part::Index)));
        assert!(!h.fail(full(Part::Index)), "already failing");
        let eio = Failure::io(Part::Wal, &io::Error::from_raw_os_error(5));
        h.fail(eio.clone());
        let unready = h.readiness().unwrap_err();
        assert_eq!(unready.code(), "wal_failed");
        assert_eq!(unready.retry_after(), Duration::from_secs(5));
        let text = unready.to_string();
        assert!(
            text.starts_with("the write-ahead log cannot be written: "),
            "{text}"
        );
        assert!(text.contains("; the index cannot be written: "), "{text}");

        assert_eq!(h.recover(Part::Wal), Some(eio));
        assert_eq!(h.readiness().unwrap_err().code(), "index_full");
        assert_eq!(h.recover(Part::Index).map(|f| f.code()), Some("index_full"));
        assert_eq!(h.recover(Part::Index), None);
        assert_eq!(h.readiness(), Ok(()));
    }

    /// A failure the probe cannot end is left to the next write, which ends it.
    #[tokio::test]
    async fn the_probe_clears_only_what_room_on_the_disk_ends() {
        let dir = tempfile::tempdir().unwrap();
        let h = Health::default();
        h.set_started();
        let stop = tokio_util::sync::CancellationToken::new();
        let probe = tokio::spawn(probe_while_failing(
            h.clone(),
            Part::Wal,
            dir.path().to_path_buf(),
            || 0,
            Duration::from_millis(10),
            stop.clone(),
        ));
        h.fail(Failure::until_written(
            Part::Wal,
            "a failed write is not rolled back yet",
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(h.failure(Part::Wal).is_some(), "the probe left it");
        assert!(h.recover(Part::Wal).is_some(), "a write ends it");

        h.fail(full(Part::Wal));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while h.failure(Part::Wal).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the probe never cleared it"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(h.readiness(), Ok(()));
        stop.cancel();
        probe.await.unwrap();
    }

    /// A WAL that keeps more room free than its disk has stays failing, though a probe would fit.
    #[tokio::test]
    async fn the_probe_does_not_clear_a_part_short_of_the_room_it_keeps_free() {
        let dir = tempfile::tempdir().unwrap();
        let free = codestax_storage::free_bytes(dir.path()).expect("statvfs of a temp dir");
        let h = Health::default();
        h.set_started();
        let stop = tokio_util::sync::CancellationToken::new();
        let probe = tokio::spawn(probe_while_failing(
            h.clone(),
            Part::Wal,
            dir.path().to_path_buf(),
            move || free + (1 << 30),
            Duration::from_millis(10),
            stop.clone(),
        ));
        h.fail(full(Part::Wal));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.failure(Part::Wal).map(|f| f.code()), Some("wal_full"));
        stop.cancel();
        probe.await.unwrap();
    }

    #[test]
    fn codes_and_messages_name_the_part_and_the_os_error() {
        let enospc = io::Error::from_raw_os_error(28);
        let f = Failure::io(Part::Wal, &enospc);
        assert!(f.is_full());
        assert_eq!(f.code(), "wal_full");
        assert_eq!(
            f.to_string(),
            format!("the write-ahead log cannot be written: {enospc}")
        );
        let f = Failure::io(Part::Index, &io::Error::from_raw_os_error(5));
        assert!(!f.is_full());
        assert_eq!(f.code(), "index_failed");
        assert_eq!(f.retry_after(), Duration::from_secs(1));
        assert_eq!(Failure::other(Part::Index, "x").code(), "index_failed");
    }

    #[test]
    fn the_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        probe_writable(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let missing = dir.path().join("missing");
        assert!(probe_writable(&missing).is_err());
    }
}
