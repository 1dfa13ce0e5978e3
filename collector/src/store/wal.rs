//! `Wal`: the collector's write-ahead log, a [`codestax_storage::Log`] of opaque entries
//! addressed by [`Lsn`] (the entry's number in the log).
//!
//! # On-disk format
//!
//! A directory of segment files named by the LSN of their first entry, zero-padded to 20 digits
//! (`00000000000000000000.wal`), plus `wal.lock` (an advisory lock held while a `Wal` is open).
//! Every segment starts with a 16-byte header — magic `CXWL`, format version (u32 LE), first LSN
//! (u64 LE, equal to the file name) — followed by entries framed as
//!
//! ```text
//! len: u32 LE (1..=MAX_ENTRY_BYTES) | crc: u32 LE | payload: len bytes
//! ```
//!
//! The CRC-32 covers the length field and the payload in format 2 (what is written, as in the
//! spool), the payload only in format 1 (still read; appends after an upgrade go to a new
//! segment). LSNs are contiguous across segments and never reused once synced. A segment is
//! created as `<name>.tmp`, fsynced, renamed and the directory fsynced, so a listed segment
//! always has a whole header. Empty entries are refused so that a zero-filled tail (which a crash
//! can leave) never decodes as one.
//!
//! # Recovery
//!
//! [`Wal::open`] verifies every entry of every segment. A torn or corrupt tail of the last segment
//! is what a crash during an unsynced append leaves: it is cut off with a warning. Anything wrong
//! in an earlier segment was synced before a newer segment existed, so it is real damage and
//! [`WalError::Corrupt`] names the file and offset.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::backlog::{Backlog, lock};
use crate::health::{Failure, Part};
use codestax_storage::{
    Catalog, Checksum, Damage, Disk, EntryReader, Frames, Log, LogError, OpenLog, RealDisk,
    SegmentFormat,
};

/// Log sequence number: an entry's index in the log, from 0, monotonic for the life of the log.
pub type Lsn = u64;

/// Largest payload one entry may have, in bytes.
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

/// The WAL's segments.
pub(crate) static FORMAT: SegmentFormat = SegmentFormat {
    noun: "WAL segment",
    magic: b"CXWL",
    suffix: ".wal",
    version: 2,
    oldest_version: 1,
    named_by_first_entry: true,
    checksum: |version| match version {
        1 => Checksum::Payload,
        _ => Checksum::LenAndPayload,
    },
    max_payload: MAX_ENTRY_BYTES as u32,
};

const LOCK_FILE: &str = "wal.lock";

/// What can go wrong with the WAL. I/O errors keep their [`io::ErrorKind`] (see
/// [`WalError::is_storage_full`]).
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error on {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("WAL segment {} is corrupt at byte {offset}: {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("WAL directory {} is in use by another writer", .path.display())]
    Locked { path: PathBuf },
    #[error("WAL entry of {len} bytes is over the limit of {MAX_ENTRY_BYTES} bytes")]
    EntryTooLarge { len: usize },
    #[error("WAL entries may not be empty")]
    EmptyEntry,
    #[error("WAL segment {} could not be rolled back after a failed write; no write is taken until it is", .path.display())]
    Poisoned { path: PathBuf },
}

impl From<LogError> for WalError {
    fn from(e: LogError) -> WalError {
        match e {
            LogError::Io { path, source } => WalError::Io { path, source },
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => WalError::Corrupt {
                path,
                offset,
                reason,
            },
            LogError::Locked { path } => WalError::Locked { path },
            LogError::Poisoned { path } => WalError::Poisoned { path },
        }
    }
}

impl WalError {
    /// The kind of the underlying I/O error, if this is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            WalError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// Whether the disk (or the quota) is full: the caller should shed load (HTTP 503), not crash.
    pub fn is_storage_full(&self) -> bool {
        matches!(
            self.io_kind(),
            Some(io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        )
    }

    /// What a failed write means for the collector's health: the OS error for clients, no path.
    pub fn failure(&self) -> Failure {
        match self {
            WalError::Io { source, .. } => Failure::io(Part::Wal, source),
            WalError::Poisoned { .. } => Failure::until_written(
                Part::Wal,
                "a failed write could not be rolled back yet; the next write tries again",
            ),
            _ => Failure::other(
                Part::Wal,
                "an internal error; the collector's log has the details",
            ),
        }
    }
}

/// A segmented write-ahead log in one directory. One writer per directory (enforced by a lock).
#[derive(Debug)]
pub struct Wal {
    log: Log,
    segment_bytes: u64,
    /// Bytes an append must leave free on the WAL's file system (0: none), besides the room
    /// for the index's backlog.
    keep_free_bytes: u64,
    /// The entries the index has not committed: shared with the [`Store`](super::Store) handle,
    /// which tells the probe of a full disk the room an append needs now.
    backlog: Arc<Mutex<Backlog>>,
    frames: Frames,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, verifying every entry and cutting a torn tail
    /// off the last segment. New segments are started once the active one would pass
    /// `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Wal, WalError> {
        Wal::open_on(dir, segment_bytes, Arc::new(RealDisk))
    }

    /// [`Wal::open`], writing through `disk`.
    pub fn open_on(dir: &Path, segment_bytes: u64, disk: Arc<dyn Disk>) -> Result<Wal, WalError> {
        let options = OpenLog {
            lock_file: Some(LOCK_FILE),
            disk,
            ..OpenLog::new(&FORMAT, Damage::TornTailOnly)
        };
        let (log, notes) = Log::open(dir, options, |_, _| Ok(()))?;
        for note in notes {
            tracing::warn!("{note}");
        }
        Ok(Wal {
            log,
            segment_bytes,
            keep_free_bytes: 0,
            backlog: Arc::default(),
            frames: Frames::new(),
        })
    }

    /// From now on an append that would leave less than `bytes` free on the WAL's file system,
    /// plus the room committing the index's backlog takes ([`Backlog::room`]), is refused as a
    /// full disk (nothing written). The room kept lets the index commit, and the trees and state
    /// files be written, for what the WAL acknowledged when WAL and index share a disk: without
    /// it a collector that filled its own disk could index nothing more, so it could delete no
    /// WAL segment, and stay stuck. 0: the WAL has a disk of its own, nothing is kept.
    pub fn keep_free(&mut self, bytes: u64) {
        self.keep_free_bytes = bytes;
    }

    /// The entries the index has not committed: a handle that stays valid while the WAL appends.
    pub fn backlog(&self) -> Arc<Mutex<Backlog>> {
        self.backlog.clone()
    }

    fn lock_backlog(&self) -> MutexGuard<'_, Backlog> {
        lock(&self.backlog)
    }

    /// Counts the entry at `lsn`, of `payload_len` bytes, as not committed by the index: for
    /// the entries found at open after the index's `indexed_through`.
    pub fn count_unindexed(&mut self, lsn: Lsn, payload_len: usize) {
        let bytes = codestax_storage::FRAME_OVERHEAD + payload_len as u64;
        self.lock_backlog().push(lsn, lsn + 1, bytes);
    }

    /// The index has committed every entry before `lsn`: they need no room any more.
    pub fn indexed_before(&mut self, lsn: Lsn) {
        self.lock_backlog().indexed_before(lsn);
    }

    /// The directory the WAL lives in.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// The LSN the next appended entry will get.
    pub fn next_lsn(&self) -> Lsn {
        self.log.next_entry()
    }

    /// The LSN of the oldest entry still kept (entries before it were removed).
    pub fn first_lsn(&self) -> Lsn {
        self.log.first_entry()
    }

    /// How many segment files the WAL has.
    pub fn segment_count(&self) -> usize {
        self.log.catalog().count()
    }

    /// Appends `payloads` as consecutive entries and returns the LSN of the first. They are written
    /// but not durable until [`Wal::sync`]. A batch never spans segments: a new segment is started
    /// first if the batch would take the active one past `segment_bytes`.
    ///
    /// On an I/O error the active segment is cut back to where it was before this call, so the file
    /// never keeps part of a batch, and the error keeps its kind (ENOSPC is
    /// [`io::ErrorKind::StorageFull`]).
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<Lsn, WalError> {
        if payloads.is_empty() {
            return Ok(self.next_lsn());
        }
        for p in payloads {
            let len = p.as_ref().len();
            if len == 0 {
                return Err(WalError::EmptyEntry);
            }
            if len > MAX_ENTRY_BYTES {
                return Err(WalError::EntryTooLarge { len });
            }
        }
        let mut batch_len = 0;
        for p in payloads {
            batch_len += codestax_storage::FRAME_OVERHEAD + p.as_ref().len() as u64;
        }
        self.check_room(batch_len)?;
        if !self.log.active_is_empty() && self.log.active_len() + batch_len > self.segment_bytes {
            self.log.roll()?;
        }
        self.frames.clear();
        let checksum = self.log.checksum();
        for p in payloads {
            self.frames.push(checksum, p.as_ref());
        }
        let first = self.log.append(&self.frames)?.number;
        self.lock_backlog()
            .push(first, first + payloads.len() as Lsn, batch_len);
        Ok(first)
    }

    /// Refuses an append of `batch_len` bytes that would eat into the room kept free: the
    /// fixed room and what indexing the backlog, this batch included, takes.
    fn check_room(&self, batch_len: u64) -> Result<(), WalError> {
        if self.keep_free_bytes == 0 {
            return Ok(());
        }
        let Some(free) = codestax_storage::free_bytes(self.dir()) else {
            return Ok(());
        };
        let (room, backlog) = {
            let backlog = self.lock_backlog();
            (
                backlog.room(self.keep_free_bytes, batch_len),
                backlog.bytes(),
            )
        };
        if free >= batch_len.saturating_add(room) {
            return Ok(());
        }
        Err(WalError::Io {
            path: self.dir().to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "{free} bytes free on the WAL's disk, {batch_len} needed and {room} kept free \
                     for indexing what was acknowledged ({} of wal.keep_free_bytes, the rest for \
                     the {backlog} bytes the index has not committed yet)",
                    self.keep_free_bytes
                ),
            ),
        })
    }

    /// Makes every appended entry durable (fdatasync of the active segment; segment creation
    /// already synced the directory). On failure every entry appended since the last successful
    /// sync is cut off (their LSNs will be reused) and the error is returned.
    pub fn sync(&mut self) -> Result<(), WalError> {
        let synced = self.log.sync();
        if synced.is_err() {
            let next = self.next_lsn();
            self.lock_backlog().cut_from(next);
        }
        Ok(synced?)
    }

    /// Reads the synced entries with LSN ≥ `from`, with file handles of its own. Each entry's
    /// checksum is verified again.
    pub fn read_from(&self, from: Lsn) -> Result<WalReader, WalError> {
        Ok(self.entries().read_from(from))
    }

    /// A handle that reads the synced entries while this `Wal` appends.
    pub fn entries(&self) -> WalEntries {
        WalEntries(self.log.catalog().clone())
    }

    /// Whether [`Wal::remove_before`] with `lsn` would delete a segment.
    pub fn would_remove_before(&self, lsn: Lsn) -> bool {
        let all = self.log.catalog().all();
        all.len() >= 2 && all[1].1.first_entry <= lsn
    }

    /// Deletes the segments whose entries all have LSN < `lsn`, oldest first, never the active one.
    /// Returns how many were deleted.
    pub fn remove_before(&mut self, lsn: Lsn) -> Result<usize, WalError> {
        let removed = self
            .log
            .catalog()
            .remove_oldest_while(|_, _, (_, next)| next.first_entry <= lsn)?;
        Ok(removed.len())
    }
}

/// Reads a WAL's synced entries from another thread than its writer's (the indexer re-reads what
/// it has not committed); clones share the writer's list of segments.
#[derive(Debug, Clone)]
pub struct WalEntries(Catalog);

impl WalEntries {
    /// The entries with LSN ≥ `from` synced when this is called (those synced later are not
    /// read), each checksum verified again.
    pub fn read_from(&self, from: Lsn) -> WalReader {
        WalReader(self.0.read_from(from))
    }
}

/// Iterates over WAL entries as `(lsn, payload)`; stops after the first error.
#[derive(Debug)]
pub struct WalReader(EntryReader);

impl Iterator for WalReader {
    type Item = Result<(Lsn, Vec<u8>), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|r| r.map_err(WalError::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_storage::testing::{append as append_bytes, segment_damage, segment_paths};
    use codestax_storage::{Fault, FaultyDisk, HEADER_LEN};
    use std::fs;

    fn payload(i: u64) -> Vec<u8> {
        format!("entry-{i}-{}", "x".repeat((i % 7) as usize)).into_bytes()
    }

    fn read_all(wal: &Wal, from: Lsn) -> Vec<(Lsn, Vec<u8>)> {
        wal.read_from(from)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn seg_paths(dir: &Path) -> Vec<PathBuf> {
        segment_paths(&FORMAT, dir)
    }

    /// Appends `n` entries in batches of 3, syncing each, starting at `wal.next_lsn()`.
    fn fill(wal: &mut Wal, n: u64) {
        let start = wal.next_lsn();
        let all: Vec<_> = (start..start + n).map(payload).collect();
        for chunk in all.chunks(3) {
            wal.append(chunk).unwrap();
            wal.sync().unwrap();
        }
    }

    #[test]
    fn round_trip_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 200).unwrap();
        assert_eq!(wal.next_lsn(), 0);
        assert_eq!(wal.append(&[payload(0), payload(1)]).unwrap(), 0);
        wal.sync().unwrap();
        fill(&mut wal, 40);
        assert_eq!(wal.next_lsn(), 42);
        assert!(wal.segment_count() > 3, "{} segments", wal.segment_count());
        let expected: Vec<_> = (0..42).map(|i| (i, payload(i))).collect();
        assert_eq!(read_all(&wal, 0), expected);
        assert_eq!(read_all(&wal, 17), expected[17..]);
        assert_eq!(read_all(&wal, 42), vec![]);
        drop(wal);

        let mut wal = Wal::open(dir.path(), 200).unwrap();
        assert_eq!(wal.next_lsn(), 42);
        assert_eq!(read_all(&wal, 0), expected);
        fill(&mut wal, 5);
        assert_eq!(read_all(&wal, 40).len(), 7);
        // Segment names are their first LSN.
        for p in seg_paths(dir.path()) {
            let first = FORMAT
                .parse_name(p.file_name().unwrap().to_str().unwrap())
                .unwrap();
            let entries = read_all(&wal, first);
            assert_eq!(entries[0].0, first);
        }
    }

    /// A temporary copy of a fixture directory of `storage/tests/fixtures`.
    fn fixture(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        codestax_storage::testing::copy_fixture(name, dir.path());
        dir
    }

    #[test]
    fn a_wal_written_by_format_1_reads_back_exactly_and_takes_appends() {
        // Written by the collector before the storage crate: 4 groups of 3, 100-byte segments.
        let dir = fixture("wal-main");
        let expected: Vec<_> = (0..4u64)
            .flat_map(|b| (0..3).map(move |i| format!("wal-{b}-{i}").into_bytes()))
            .enumerate()
            .map(|(lsn, p)| (lsn as Lsn, p))
            .collect();
        let mut wal = Wal::open(dir.path(), 100).unwrap();
        assert_eq!(wal.next_lsn(), 12);
        assert_eq!(read_all(&wal, 0), expected);
        // Appends go to a new segment of the current format; the old ones stay as they were.
        assert_eq!(wal.append(&[b"new"]).unwrap(), 12);
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), 100).unwrap();
        let mut all = expected;
        all.push((12, b"new".to_vec()));
        assert_eq!(read_all(&wal, 0), all);
        let newest = fs::read(seg_paths(dir.path()).pop().unwrap()).unwrap();
        assert_eq!(newest[..16], FORMAT.header(12));
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _wal = Wal::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            Wal::open(dir.path(), 1 << 20),
            Err(WalError::Locked { .. })
        ));
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        fill(&mut wal, 6);
        drop(wal);
        let path = seg_paths(dir.path()).pop().unwrap();
        let full = fs::metadata(&path).unwrap().len();
        // Cut the last entry in the middle of its payload.
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 3)
            .unwrap();

        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(wal.next_lsn(), 5);
        assert!(
            fs::metadata(&path).unwrap().len() < full - 3,
            "the torn entry was cut"
        );
        fill(&mut wal, 3);
        let got = read_all(&wal, 0);
        assert_eq!(got.len(), 8);
        assert_eq!(got[5], (5, payload(5)), "LSN 5 was reused by the new entry");
    }

    #[test]
    fn garbage_after_the_tail_is_cut() {
        for garbage in [
            &[0u8; 3][..],
            &[0u8; 64],
            &[0xff; 64],
            b"\x05\0\0\0abcdhello",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
            fill(&mut wal, 4);
            drop(wal);
            let path = seg_paths(dir.path()).pop().unwrap();
            let good_len = fs::metadata(&path).unwrap().len();
            append_bytes(&path, garbage);

            let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(wal.next_lsn(), 4, "garbage {garbage:?}");
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
            fill(&mut wal, 1);
            assert_eq!(read_all(&wal, 0).len(), 5);
        }
    }

    #[test]
    fn flipped_byte_in_last_entry_is_caught_by_crc() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        fill(&mut wal, 3);
        drop(wal);
        let path = seg_paths(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20;
        fs::write(&path, &bytes).unwrap();

        // Recovery cuts the damaged entry off.
        let wal = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(wal.next_lsn(), 2);
        assert_eq!(read_all(&wal, 0), vec![(0, payload(0)), (1, payload(1))]);
    }

    #[test]
    fn corrupt_middle_segment_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 100).unwrap();
        fill(&mut wal, 30);
        drop(wal);
        let segs = seg_paths(dir.path());
        assert!(segs.len() >= 3);
        let middle = &segs[1];
        let mut bytes = fs::read(middle).unwrap();
        let at = bytes.len() - 1;
        bytes[at] ^= 1;
        fs::write(middle, &bytes).unwrap();

        match Wal::open(dir.path(), 100) {
            Err(WalError::Corrupt { path, offset, .. }) => {
                assert_eq!(&path, middle);
                assert!(offset >= HEADER_LEN);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let message = Wal::open(dir.path(), 100).unwrap_err().to_string();
        assert!(message.contains(middle.to_str().unwrap()), "{message}");
    }

    #[test]
    fn missing_middle_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 100).unwrap();
        fill(&mut wal, 30);
        drop(wal);
        let segs = seg_paths(dir.path());
        fs::remove_file(&segs[1]).unwrap();
        match Wal::open(dir.path(), 100) {
            Err(WalError::Corrupt { path, .. }) => assert_eq!(path, segs[2]),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn remove_before_deletes_only_fully_older_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 100).unwrap();
        fill(&mut wal, 30);
        let firsts: Vec<Lsn> = wal.log.catalog().all().iter().map(|(id, _)| *id).collect();
        assert!(firsts.len() >= 4, "{firsts:?}");

        // An LSN inside the second segment removes only the first.
        assert!(!wal.would_remove_before(firsts[1] - 1));
        assert!(wal.would_remove_before(firsts[1]));
        assert_eq!(wal.remove_before(firsts[1] + 1).unwrap(), 1);
        assert_eq!(wal.first_lsn(), firsts[1]);
        // Exactly the third segment's first LSN: the second holds only older entries.
        assert_eq!(wal.remove_before(firsts[2]).unwrap(), 1);
        assert_eq!(wal.first_lsn(), firsts[2]);
        // Past everything: the active segment stays.
        wal.remove_before(Lsn::MAX).unwrap();
        assert_eq!(wal.segment_count(), 1);
        assert_eq!(seg_paths(dir.path()).len(), 1);
        let active_first = *firsts.last().unwrap();
        assert_eq!(read_all(&wal, 0)[0].0, active_first);
        drop(wal);

        let wal = Wal::open(dir.path(), 100).unwrap();
        assert_eq!(wal.first_lsn(), active_first);
        assert_eq!(wal.next_lsn(), 30);
    }

    #[test]
    fn failed_write_rolls_back_the_partial_batch() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FaultyDisk::default();
        let mut wal = Wal::open_on(dir.path(), 1 << 20, Arc::new(disk.clone())).unwrap();
        fill(&mut wal, 3);
        let path = seg_paths(dir.path()).pop().unwrap();
        let len_before = fs::metadata(&path).unwrap().len();

        disk.arm(Fault::Write(io::ErrorKind::StorageFull));
        let err = wal.append(&[payload(3), payload(4)]).unwrap_err();
        assert!(err.is_storage_full(), "{err:?}");
        assert_eq!(err.io_kind(), Some(io::ErrorKind::StorageFull));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            len_before,
            "half batch cut"
        );
        assert_eq!(wal.next_lsn(), 3);

        assert_eq!(wal.append(&[payload(3)]).unwrap(), 3);
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            read_all(&wal, 0),
            (0..4).map(|i| (i, payload(i))).collect::<Vec<_>>()
        );
    }

    #[test]
    fn failed_sync_cuts_unsynced_entries() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FaultyDisk::default();
        let mut wal = Wal::open_on(dir.path(), 1 << 20, Arc::new(disk.clone())).unwrap();
        fill(&mut wal, 2);
        wal.append(&[payload(2)]).unwrap();
        wal.append(&[payload(3)]).unwrap();
        disk.arm(Fault::Sync(io::ErrorKind::Other));
        let err = wal.sync().unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::Other));
        assert!(!err.is_storage_full());
        assert_eq!(wal.next_lsn(), 2);
        fill(&mut wal, 1);
        drop(wal);
        let wal = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(wal.next_lsn(), 3);
    }

    #[test]
    fn bad_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            wal.append(&[b"ok".to_vec(), Vec::new()]),
            Err(WalError::EmptyEntry)
        ));
        assert!(matches!(
            wal.append(&[vec![1u8; MAX_ENTRY_BYTES + 1]]),
            Err(WalError::EntryTooLarge { .. })
        ));
        assert_eq!(wal.next_lsn(), 0);
        assert_eq!(wal.append::<Vec<u8>>(&[]).unwrap(), 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift64*: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for round in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let files = 1 + next() % 3;
            for f in 0..files {
                let len = (next() % 300) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Half the time, a valid header so the frame decoder is exercised too.
                if round % 2 == 0 && bytes.len() >= 16 {
                    bytes[..16].copy_from_slice(&FORMAT.header(f * 1000));
                    if round % 4 == 0 && bytes.len() > 24 {
                        let len = (next() % 16) as u32;
                        bytes[16..20].copy_from_slice(&len.to_le_bytes());
                    }
                }
                fs::write(FORMAT.path(dir.path(), f * 1000), &bytes).unwrap();
            }
            match Wal::open(dir.path(), 1 << 20) {
                Ok(mut wal) => {
                    let _ = wal.read_from(0).map(|r| r.count());
                    let n = wal.next_lsn();
                    wal.append(&[b"after".to_vec()]).unwrap();
                    wal.sync().unwrap();
                    let last = wal.read_from(n).unwrap().last().unwrap().unwrap();
                    assert_eq!(last, (n, b"after".to_vec()));
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(32)
            ))]

            /// Whatever is flipped, cut or appended: the WAL opens with a prefix of what was
            /// written (a damaged tail is cut; nothing invented, reordered or skipped) and takes
            /// appends again, or it refuses with an error naming a file of the WAL. No panic.
            #[test]
            fn prop_damaged_wal_recovers_a_prefix_or_names_the_file(
                payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 1..40),
                segment_bytes in prop::sample::select(vec![64u64, 200, 1 << 20]),
                damage in segment_damage(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut wal = Wal::open(dir.path(), segment_bytes).unwrap();
                for chunk in payloads.chunks(3) {
                    wal.append(chunk).unwrap();
                    wal.sync().unwrap();
                }
                drop(wal);
                damage.apply(&FORMAT, dir.path());
                match Wal::open(dir.path(), segment_bytes) {
                    Ok(mut wal) => {
                        let got = wal
                            .read_from(0)
                            .unwrap()
                            .collect::<Result<Vec<_>, _>>();
                        let got = match got {
                            Ok(got) => got,
                            // Opened, but a damaged middle segment is met on reading: named.
                            Err(e) => {
                                assert!(e.to_string().contains(dir.path().to_str().unwrap()), "{e}");
                                return Ok(());
                            }
                        };
                        assert!(got.len() <= payloads.len(), "{damage:?}");
                        for (i, (lsn, p)) in got.iter().enumerate() {
                            assert_eq!(*lsn, i as u64, "{damage:?}");
                            assert_eq!(p, &payloads[i], "{damage:?}");
                        }
                        assert_eq!(wal.next_lsn(), got.len() as u64, "{damage:?}");
                        wal.append(&[b"after"]).unwrap();
                        wal.sync().unwrap();
                        let last = wal.read_from(got.len() as u64).unwrap().next();
                        assert_eq!(last.unwrap().unwrap(), (got.len() as u64, b"after".to_vec()));
                    }
                    Err(e) => {
                        let message = e.to_string();
                        assert!(
                            message.contains(dir.path().to_str().unwrap()),
                            "{damage:?}: {message}"
                        );
                    }
                }
            }
        }
    }
}
