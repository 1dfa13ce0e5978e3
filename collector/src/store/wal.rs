//! `Wal`: a segmented, append-only, checksummed log of opaque entries addressed by [`Lsn`].
//!
//! # On-disk format
//!
//! A directory of segment files named by the LSN of their first entry, zero-padded to 20 digits
//! (`00000000000000000000.wal`), plus `wal.lock` (an advisory lock held while a `Wal` is open).
//! Every segment starts with a 16-byte header — magic `CXWL`, format version (u32 LE, 1), first LSN
//! (u64 LE, equal to the file name) — followed by entries framed as
//!
//! ```text
//! len: u32 LE (1..=MAX_ENTRY_BYTES) | crc: u32 LE (CRC-32 of payload) | payload: len bytes
//! ```
//!
//! An entry's LSN is its segment's first LSN plus its index in the segment; LSNs are contiguous
//! across segments and never reused once synced. A segment is created as `<name>.tmp`, fsynced,
//! renamed and the directory fsynced, so a listed segment always has a whole header. Empty
//! entries are refused so that a zero-filled tail (which a crash can leave) never decodes as one.
//!
//! # Recovery
//!
//! [`Wal::open`] verifies every entry of every segment. A torn or corrupt tail of the last segment
//! is what a crash during an unsynced append leaves: it is cut off with a warning. Anything wrong
//! in an earlier segment was synced before a newer segment existed, so it is real damage and
//! [`WalError::Corrupt`] names the file and offset.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Log sequence number: an entry's index in the log, from 0, monotonic for the life of the log.
pub type Lsn = u64;

/// Largest payload one entry may have, in bytes.
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

const MAGIC: [u8; 4] = *b"CXWL";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 16;
const FRAME_HEADER_LEN: u64 = 8;
const SEGMENT_SUFFIX: &str = ".wal";
const TMP_SUFFIX: &str = ".wal.tmp";
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
    #[error("WAL segment {} could not be rolled back after a failed write; reopen the WAL", .path.display())]
    Poisoned { path: PathBuf },
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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
struct Segment {
    first_lsn: Lsn,
    path: PathBuf,
}

/// The segment being appended to.
#[derive(Debug)]
struct Active {
    file: File,
    first_lsn: Lsn,
    /// Bytes written (header included).
    len: u64,
    entries: u64,
    /// `len` and `entries` as of the last successful sync.
    synced_len: u64,
    synced_entries: u64,
}

/// A segmented write-ahead log in one directory. One writer per directory (enforced by a lock).
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    /// Every segment in LSN order; the last one is `active`.
    segments: Vec<Segment>,
    active: Active,
    poisoned: bool,
    buf: Vec<u8>,
    _lock: File,
    #[cfg(test)]
    faults: faults::Slot,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, verifying every entry and cutting a torn tail
    /// off the last segment. New segments are started once the active one would pass
    /// `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Wal, WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock_dir(dir)?;
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            segments.push(create_segment(dir, 0)?);
        }
        let last = segments.len() - 1;
        let mut expected = segments[0].first_lsn;
        let mut tail = None;
        for (i, seg) in segments.iter().enumerate() {
            if seg.first_lsn != expected {
                return Err(WalError::Corrupt {
                    path: seg.path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at LSN {} but the previous one ends before LSN {expected}",
                        seg.first_lsn
                    ),
                });
            }
            let scan = scan_segment(seg)?;
            let mut valid_len = scan.file_len;
            if let Some((offset, reason)) = scan.bad {
                if i < last {
                    return Err(WalError::Corrupt {
                        path: seg.path.clone(),
                        offset,
                        reason: reason.to_owned(),
                    });
                }
                tracing::warn!(
                    path = %seg.path.display(),
                    offset,
                    dropped_bytes = scan.file_len - offset,
                    reason,
                    "cutting a torn or corrupt tail off the last WAL segment"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(io_err(&seg.path))?;
                file.set_len(offset)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err(&seg.path))?;
                valid_len = offset;
            }
            expected = seg.first_lsn + scan.entries;
            tail = Some((valid_len, scan.entries));
        }
        let (len, entries) = tail.expect("there is at least one segment");
        let seg = &segments[last];
        let file = open_append(&seg.path)?;
        let active = Active {
            file,
            first_lsn: seg.first_lsn,
            len,
            entries,
            synced_len: len,
            synced_entries: entries,
        };
        Ok(Wal {
            dir: dir.to_owned(),
            segment_bytes,
            segments,
            active,
            poisoned: false,
            buf: Vec::new(),
            _lock: lock,
            #[cfg(test)]
            faults: Default::default(),
        })
    }

    /// The directory the WAL lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The LSN the next appended entry will get.
    pub fn next_lsn(&self) -> Lsn {
        self.active.first_lsn + self.active.entries
    }

    /// The LSN of the oldest entry still kept (entries before it were removed).
    pub fn first_lsn(&self) -> Lsn {
        self.segments[0].first_lsn
    }

    /// How many segment files the WAL has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends `payloads` as consecutive entries and returns the LSN of the first. They are written
    /// but not durable until [`Wal::sync`]. A batch never spans segments: a new segment is started
    /// first if the batch would take the active one past `segment_bytes`.
    ///
    /// On an I/O error the active segment is cut back to where it was before this call, so the file
    /// never keeps part of a batch, and the error keeps its kind (ENOSPC is
    /// [`io::ErrorKind::StorageFull`]).
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<Lsn, WalError> {
        self.check_poisoned()?;
        let first = self.next_lsn();
        if payloads.is_empty() {
            return Ok(first);
        }
        self.buf.clear();
        for p in payloads {
            let p = p.as_ref();
            if p.is_empty() {
                return Err(WalError::EmptyEntry);
            }
            if p.len() > MAX_ENTRY_BYTES {
                return Err(WalError::EntryTooLarge { len: p.len() });
            }
            let len = u32::try_from(p.len()).expect("MAX_ENTRY_BYTES fits in u32");
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf
                .extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            self.buf.extend_from_slice(p);
        }
        let batch_len = self.buf.len() as u64;
        if self.active.len > HEADER_LEN && self.active.len + batch_len > self.segment_bytes {
            self.roll()?;
        }
        let (start_len, start_entries) = (self.active.len, self.active.entries);
        match self.write_buf() {
            Ok(()) => {
                self.active.len += batch_len;
                self.active.entries += payloads.len() as u64;
                Ok(first)
            }
            Err(source) => {
                let path = self.active_path().to_owned();
                tracing::warn!(path = %path.display(), error = %source, "WAL append failed; cutting the partial batch");
                // The original error is what the caller needs; a failed rollback poisons the WAL.
                let _ = self.truncate_active(start_len, start_entries);
                Err(WalError::Io { path, source })
            }
        }
    }

    /// Makes every appended entry durable (fdatasync of the active segment; segment creation
    /// already synced the directory). On failure every entry appended since the last successful
    /// sync is cut off (their LSNs will be reused) and the error is returned.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_poisoned()?;
        if self.active.synced_len == self.active.len {
            return Ok(());
        }
        match self.sync_active() {
            Ok(()) => {
                self.active.synced_len = self.active.len;
                self.active.synced_entries = self.active.entries;
                Ok(())
            }
            Err(source) => {
                let path = self.active_path().to_owned();
                tracing::warn!(path = %path.display(), error = %source, "WAL sync failed; cutting the unsynced entries");
                let (len, entries) = (self.active.synced_len, self.active.synced_entries);
                let _ = self.truncate_active(len, entries);
                Err(WalError::Io { path, source })
            }
        }
    }

    /// Reads the entries with LSN ≥ `from` through the last one appended when this is called,
    /// with file handles of its own. Each entry's checksum is verified again.
    pub fn read_from(&self, from: Lsn) -> Result<WalReader, WalError> {
        let n = self.segments.len();
        let mut segments = Vec::with_capacity(n);
        for (i, seg) in self.segments.iter().enumerate() {
            let next_first = self.segments.get(i + 1).map(|s| s.first_lsn);
            if next_first.is_some_and(|next| next <= from) {
                continue; // every entry of this segment is before `from`
            }
            let limit = (i == n - 1).then_some(self.active.len);
            segments.push((seg.clone(), limit));
        }
        let mut reader = WalReader {
            segments: segments.into_iter(),
            cursor: None,
            from,
            failed: false,
        };
        // Open the first segment now so that a missing or unreadable file is reported here.
        if let Some(seg) = reader.segments.next() {
            reader.cursor = Some(Cursor::open(seg)?);
        }
        Ok(reader)
    }

    /// Deletes the segments whose entries all have LSN < `lsn`, oldest first, never the active one.
    /// Returns how many were deleted.
    pub fn remove_before(&mut self, lsn: Lsn) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first_lsn <= lsn {
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    fn active_path(&self) -> &Path {
        &self
            .segments
            .last()
            .expect("the active segment is listed")
            .path
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned {
                path: self.active_path().to_owned(),
            });
        }
        Ok(())
    }

    fn write_buf(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(kind) = self.faults.take(faults::Fault::is_write) {
            // A partial write, as ENOSPC mid-batch leaves it.
            self.active
                .file
                .write_all(&self.buf[..self.buf.len() / 2])?;
            return Err(kind.into());
        }
        self.active.file.write_all(&self.buf)
    }

    fn sync_active(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(kind) = self.faults.take(faults::Fault::is_sync) {
            return Err(kind.into());
        }
        self.active.file.sync_data()
    }

    /// Cuts the active segment back to `len` bytes holding `entries` entries, durably. If that
    /// fails the file's content is unknown, so the WAL refuses further writes.
    fn truncate_active(&mut self, len: u64, entries: u64) -> Result<(), WalError> {
        let file = &self.active.file;
        match file.set_len(len).and_then(|()| file.sync_data()) {
            Ok(()) => {
                self.active.len = len;
                self.active.entries = entries;
                self.active.synced_len = self.active.synced_len.min(len);
                self.active.synced_entries = self.active.synced_entries.min(entries);
                Ok(())
            }
            Err(source) => {
                self.poisoned = true;
                let path = self.active_path().to_owned();
                tracing::error!(path = %path.display(), error = %source, "cannot roll the WAL back; refusing further writes");
                Err(WalError::Io { path, source })
            }
        }
    }

    /// Starts a new segment at `next_lsn`. The old one is synced first: once a newer segment
    /// exists, recovery treats damage in the old one as corruption, not as a torn tail.
    fn roll(&mut self) -> Result<(), WalError> {
        self.sync()?;
        let first_lsn = self.next_lsn();
        let seg = create_segment(&self.dir, first_lsn)?;
        let file = open_append(&seg.path)?;
        self.segments.push(seg);
        self.active = Active {
            file,
            first_lsn,
            len: HEADER_LEN,
            entries: 0,
            synced_len: HEADER_LEN,
            synced_entries: 0,
        };
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn faults(&self) -> faults::Slot {
        self.faults.clone()
    }
}

/// Iterates over WAL entries as `(lsn, payload)`; stops after the first error.
#[derive(Debug)]
pub struct WalReader {
    segments: std::vec::IntoIter<(Segment, Option<u64>)>,
    cursor: Option<Cursor>,
    from: Lsn,
    failed: bool,
}

#[derive(Debug)]
struct Cursor {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    end: u64,
    next_lsn: Lsn,
}

impl Cursor {
    fn open((seg, limit): (Segment, Option<u64>)) -> Result<Cursor, WalError> {
        let file = File::open(&seg.path).map_err(io_err(&seg.path))?;
        let file_len = file.metadata().map_err(io_err(&seg.path))?.len();
        let mut reader = BufReader::new(file);
        if let Err(reason) = read_header(&mut reader, file_len, seg.first_lsn) {
            return Err(header_error(&seg.path, reason));
        }
        Ok(Cursor {
            path: seg.path,
            reader,
            offset: HEADER_LEN,
            end: limit.map_or(file_len, |l| l.min(file_len)),
            next_lsn: seg.first_lsn,
        })
    }
}

impl Iterator for WalReader {
    type Item = Result<(Lsn, Vec<u8>), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            let cursor = match &mut self.cursor {
                Some(c) => c,
                None => match Cursor::open(self.segments.next()?) {
                    Ok(c) => self.cursor.insert(c),
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                },
            };
            let mut payload = Vec::new();
            match read_frame(&mut cursor.reader, cursor.offset, cursor.end, &mut payload) {
                Ok(Frame::End) => self.cursor = None,
                Ok(Frame::Entry) => {
                    let lsn = cursor.next_lsn;
                    cursor.next_lsn += 1;
                    cursor.offset += FRAME_HEADER_LEN + payload.len() as u64;
                    if lsn >= self.from {
                        return Some(Ok((lsn, payload)));
                    }
                }
                Ok(Frame::Bad(reason)) => {
                    self.failed = true;
                    return Some(Err(WalError::Corrupt {
                        path: cursor.path.clone(),
                        offset: cursor.offset,
                        reason: reason.to_owned(),
                    }));
                }
                Err(source) => {
                    self.failed = true;
                    return Some(Err(WalError::Io {
                        path: cursor.path.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

enum Frame {
    /// Clean end of the readable range.
    End,
    /// A verified entry; its payload is in the buffer.
    Entry,
    /// A torn or corrupt frame.
    Bad(&'static str),
}

/// Reads the frame at `offset` (where `r` is positioned) of a range ending at `end`.
fn read_frame<R: Read>(r: &mut R, offset: u64, end: u64, buf: &mut Vec<u8>) -> io::Result<Frame> {
    let remaining = end.saturating_sub(offset);
    if remaining == 0 {
        return Ok(Frame::End);
    }
    if remaining < FRAME_HEADER_LEN {
        return Ok(Frame::Bad("frame header cut short"));
    }
    let mut header = [0u8; FRAME_HEADER_LEN as usize];
    r.read_exact(&mut header)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 {
        return Ok(Frame::Bad("zero-length entry"));
    }
    if len as usize > MAX_ENTRY_BYTES {
        return Ok(Frame::Bad("entry length over the limit"));
    }
    if u64::from(len) > remaining - FRAME_HEADER_LEN {
        return Ok(Frame::Bad("entry runs past the end of the file"));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    r.read_exact(buf)?;
    if crc32fast::hash(buf) != crc {
        return Ok(Frame::Bad("checksum mismatch"));
    }
    Ok(Frame::Entry)
}

fn read_header<R: Read>(r: &mut R, file_len: u64, first_lsn: Lsn) -> Result<(), String> {
    if file_len < HEADER_LEN {
        return Err("segment header cut short".into());
    }
    let mut h = [0u8; HEADER_LEN as usize];
    r.read_exact(&mut h).map_err(|e| e.to_string())?;
    if h[..4] != MAGIC {
        return Err("not a WAL segment (bad magic)".into());
    }
    let version = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!("unsupported segment version {version}"));
    }
    let lsn = u64::from_le_bytes(h[8..].try_into().expect("8 bytes"));
    if lsn != first_lsn {
        return Err(format!(
            "header says first LSN {lsn}, file name says {first_lsn}"
        ));
    }
    Ok(())
}

fn header_error(path: &Path, reason: String) -> WalError {
    WalError::Corrupt {
        path: path.to_owned(),
        offset: 0,
        reason,
    }
}

struct Scan {
    entries: u64,
    file_len: u64,
    /// Where the first torn or corrupt frame starts, and why.
    bad: Option<(u64, &'static str)>,
}

fn scan_segment(seg: &Segment) -> Result<Scan, WalError> {
    let file = File::open(&seg.path).map_err(io_err(&seg.path))?;
    let file_len = file.metadata().map_err(io_err(&seg.path))?.len();
    let mut reader = BufReader::new(file);
    read_header(&mut reader, file_len, seg.first_lsn).map_err(|r| header_error(&seg.path, r))?;
    let mut offset = HEADER_LEN;
    let mut entries = 0;
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut reader, offset, file_len, &mut buf).map_err(io_err(&seg.path))? {
            Frame::End => {
                return Ok(Scan {
                    entries,
                    file_len,
                    bad: None,
                });
            }
            Frame::Entry => {
                entries += 1;
                offset += FRAME_HEADER_LEN + buf.len() as u64;
            }
            Frame::Bad(reason) => {
                return Ok(Scan {
                    entries,
                    file_len,
                    bad: Some((offset, reason)),
                });
            }
        }
    }
}

fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, in LSN order. Leftover `.tmp` files of an interrupted roll are removed.
fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing an unfinished WAL segment");
            fs::remove_file(&path).map_err(io_err(&path))?;
        } else if let Some(first_lsn) = parse_segment_name(name) {
            segments.push(Segment {
                first_lsn,
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// Creates an empty segment durably: write `<name>.tmp`, fsync, rename, fsync the directory.
fn create_segment(dir: &Path, first_lsn: Lsn) -> Result<Segment, WalError> {
    let path = dir.join(segment_name(first_lsn));
    let tmp = dir.join(format!("{first_lsn:020}{TMP_SUFFIX}"));
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&first_lsn.to_le_bytes());
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(&header)?;
        f.sync_all()
    });
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(WalError::Io { path: tmp, source });
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(Segment { first_lsn, path })
}

fn open_append(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(WalError::Locked { path }),
        Err(TryLockError::Error(source)) => Err(WalError::Io { path, source }),
    }
}

/// Fault injection for tests: the next write or sync fails with a chosen error kind.
#[cfg(test)]
pub(crate) mod faults {
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Fault {
        /// The next append writes half its bytes, then fails.
        Write(io::ErrorKind),
        /// The next sync fails.
        Sync(io::ErrorKind),
    }

    impl Fault {
        pub(crate) fn is_write(&self) -> Option<io::ErrorKind> {
            match *self {
                Fault::Write(k) => Some(k),
                Fault::Sync(_) => None,
            }
        }

        pub(crate) fn is_sync(&self) -> Option<io::ErrorKind> {
            match *self {
                Fault::Sync(k) => Some(k),
                Fault::Write(_) => None,
            }
        }
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct Slot(Arc<Mutex<Option<Fault>>>);

    impl Slot {
        pub(crate) fn set(&self, fault: Fault) {
            *self.0.lock().unwrap() = Some(fault);
        }

        pub(crate) fn take(
            &self,
            pick: fn(&Fault) -> Option<io::ErrorKind>,
        ) -> Option<io::ErrorKind> {
            let mut slot = self.0.lock().unwrap();
            let kind = slot.as_ref().and_then(pick)?;
            *slot = None;
            Some(kind)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::faults::Fault;
    use super::*;

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
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        v.sort();
        v
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
            let first = parse_segment_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
            let entries = read_all(&wal, first);
            assert_eq!(entries[0].0, first);
        }
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
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(garbage).unwrap();
            drop(f);

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

        // A reader of the damaged file reports it...
        let reader = Wal::open_readonly_for_test(dir.path());
        assert!(matches!(reader.last(), Some(Err(WalError::Corrupt { .. }))));
        // ...and recovery cuts that entry off.
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
        let firsts: Vec<Lsn> = wal.segments.iter().map(|s| s.first_lsn).collect();
        assert!(firsts.len() >= 4, "{firsts:?}");

        // An LSN inside the second segment removes only the first.
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
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        fill(&mut wal, 3);
        let path = seg_paths(dir.path()).pop().unwrap();
        let len_before = fs::metadata(&path).unwrap().len();

        wal.faults().set(Fault::Write(io::ErrorKind::StorageFull));
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
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        fill(&mut wal, 2);
        wal.append(&[payload(2)]).unwrap();
        wal.append(&[payload(3)]).unwrap();
        wal.faults().set(Fault::Sync(io::ErrorKind::Other));
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
                    bytes[..4].copy_from_slice(&MAGIC);
                    bytes[4..8].copy_from_slice(&VERSION.to_le_bytes());
                    bytes[8..16].copy_from_slice(&(f * 1000).to_le_bytes());
                    if round % 4 == 0 && bytes.len() > 24 {
                        let len = (next() % 16) as u32;
                        bytes[16..20].copy_from_slice(&len.to_le_bytes());
                    }
                }
                fs::write(dir.path().join(segment_name(f * 1000)), &bytes).unwrap();
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

    impl Wal {
        /// Reads the directory's entries without opening (and so without repairing) the WAL.
        fn open_readonly_for_test(dir: &Path) -> WalReader {
            let segments: Vec<_> = list_segments(dir)
                .unwrap()
                .into_iter()
                .map(|s| (s, None))
                .collect();
            WalReader {
                segments: segments.into_iter(),
                cursor: None,
                from: 0,
                failed: false,
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// What happens to the files between a run and the next start.
        #[derive(Debug, Clone)]
        enum Damage {
            Flip {
                segment: prop::sample::Index,
                at: prop::sample::Index,
                bits: u8,
            },
            Cut {
                segment: prop::sample::Index,
                at: prop::sample::Index,
            },
            Append(Vec<u8>),
        }

        fn damage() -> impl Strategy<Value = Damage> {
            prop_oneof![
                (
                    any::<prop::sample::Index>(),
                    any::<prop::sample::Index>(),
                    1u8..=255
                )
                    .prop_map(|(segment, at, bits)| Damage::Flip {
                        segment,
                        at,
                        bits
                    }),
                (any::<prop::sample::Index>(), any::<prop::sample::Index>())
                    .prop_map(|(segment, at)| Damage::Cut { segment, at }),
                prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
            ]
        }

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
                damage in damage(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut wal = Wal::open(dir.path(), segment_bytes).unwrap();
                for chunk in payloads.chunks(3) {
                    wal.append(chunk).unwrap();
                    wal.sync().unwrap();
                }
                drop(wal);
                let segs = seg_paths(dir.path());
                match &damage {
                    Damage::Flip { segment, at, bits } => {
                        let path = &segs[segment.index(segs.len())];
                        let mut bytes = fs::read(path).unwrap();
                        let i = at.index(bytes.len());
                        bytes[i] ^= bits;
                        fs::write(path, &bytes).unwrap();
                    }
                    Damage::Cut { segment, at } => {
                        let path = &segs[segment.index(segs.len())];
                        let len = fs::metadata(path).unwrap().len() as usize;
                        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
                        f.set_len(at.index(len + 1) as u64).unwrap();
                    }
                    Damage::Append(garbage) => {
                        use std::io::Write;
                        let mut f = fs::OpenOptions::new()
                            .append(true)
                            .open(segs.last().unwrap())
                            .unwrap();
                        f.write_all(garbage).unwrap();
                    }
                }
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
