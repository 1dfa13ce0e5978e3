//! [`Log`]: a segmented, append-only log of checksummed frames in one directory, and its
//! recovery; [`Catalog`]: its durable segments, shared with readers.
//!
//! Entries are addressed by segment and byte offset, and numbered across segments from the
//! first segment's number (for logs named by first entry, the number is the LSN). Appends go
//! through a [`Disk`]: a failed write or sync cuts the active segment back to where it was, so
//! the file never keeps part of a batch; if even that fails the log refuses writes until the cut
//! succeeds (it is tried again by each later write).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::dir::{DirLock, LockError, sync_dir};
use crate::disk::{Disk, RealDisk};
use crate::frame::{Checksum, FrameProblem, Frames};
use crate::segment::{Frame, HEADER_LEN, SegmentFormat, SegmentReader};

/// What can go wrong with a log. I/O errors keep their [`io::ErrorKind`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is corrupt at byte {offset}: {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{} is in use by another writer", .path.display())]
    Locked { path: PathBuf },
    #[error("{} could not be rolled back after a failed write; no write is taken until it is", .path.display())]
    Poisoned { path: PathBuf },
}

impl LogError {
    /// The kind of the underlying I/O error, if this is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            LogError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What recovery does with damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Segments stand alone (the spool): a damaged tail of any segment is cut off (the bytes
    /// saved beside it as `ID-OFFSET.damaged`), a segment with an unusable header is moved aside
    /// as `NAME.damaged`, and the log opens.
    CutEach,
    /// Segments continue each other (the WAL): only the last segment's tail may be torn (a crash
    /// during an unsynced append) and is cut; anything else was synced before a newer segment
    /// existed, so it is real damage and opening fails naming the file and offset.
    TornTailOnly,
}

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryAt {
    pub segment: u64,
    /// Byte offset of the entry's frame in its segment.
    pub offset: u64,
    /// The entry's number (its LSN, for logs named by first entry).
    pub number: u64,
}

/// A durable segment: its synced length and entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentState {
    /// Bytes, header included.
    pub len: u64,
    pub entries: u64,
    /// The number of its first entry.
    pub first_entry: u64,
}

/// The durable segments of a log, by segment number; clones share them.
#[derive(Debug, Clone)]
pub struct Catalog {
    segments: Arc<Mutex<BTreeMap<u64, SegmentState>>>,
    dir: Arc<Path>,
    format: &'static SegmentFormat,
}

impl Catalog {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SegmentState>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn format(&self) -> &'static SegmentFormat {
        self.format
    }

    /// The file of segment `id`.
    pub fn path(&self, id: u64) -> PathBuf {
        self.format.path(&self.dir, id)
    }

    /// Segment `id`, if it is there.
    pub fn get(&self, id: u64) -> Option<SegmentState> {
        self.lock().get(&id).copied()
    }

    /// The first segment at or after `id`.
    pub fn next_from(&self, id: u64) -> Option<(u64, SegmentState)> {
        self.lock().range(id..).next().map(|(&id, &s)| (id, s))
    }

    /// The segment holding durable entry `number`, if there is one.
    pub fn containing(&self, number: u64) -> Option<(u64, SegmentState)> {
        let segments = self.lock();
        let holds =
            |s: &SegmentState| s.first_entry <= number && number - s.first_entry < s.entries;
        if self.format.named_by_first_entry {
            let (&id, &s) = segments.range(..=number).next_back()?;
            return holds(&s).then_some((id, s));
        }
        segments
            .iter()
            .find(|(_, s)| holds(s))
            .map(|(&id, &s)| (id, s))
    }

    /// Every segment, in order.
    pub fn all(&self) -> Vec<(u64, SegmentState)> {
        self.lock().iter().map(|(&id, &s)| (id, s)).collect()
    }

    /// How many segments.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn set(&self, id: u64, state: SegmentState) {
        self.lock().insert(id, state);
    }

    /// Deletes the oldest segments while `remove(id, state, next)` says so (`next` is the
    /// following segment), never the last (the one being appended to); fsyncs the directory
    /// once after. Returns what was deleted.
    pub fn remove_oldest_while(
        &self,
        mut remove: impl FnMut(u64, &SegmentState, (u64, &SegmentState)) -> bool,
    ) -> Result<Vec<(u64, SegmentState)>, LogError> {
        let mut removed = Vec::new();
        loop {
            let victim = {
                let segments = self.lock();
                let mut it = segments.iter();
                match (it.next(), it.next()) {
                    (Some((&id, s)), Some((&next, n))) if remove(id, s, (next, n)) => Some(id),
                    _ => None,
                }
            };
            let Some(id) = victim else { break };
            let path = self.path(id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogError::Io { path, source }),
            }
            if let Some(state) = self.lock().remove(&id) {
                removed.push((id, state));
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(removed)
    }

    /// Reads the durable entries numbered `from` and after, with file handles of its own; each
    /// entry's checksum is verified again.
    pub fn read_from(&self, from: u64) -> EntryReader {
        let all = self.all();
        let segments: Vec<_> = all
            .iter()
            .enumerate()
            // Skip segments whose every entry is before `from`.
            .filter(|(i, _)| all.get(i + 1).is_none_or(|(_, n)| n.first_entry > from))
            .map(|(_, s)| *s)
            .collect();
        EntryReader {
            catalog: self.clone(),
            segments: segments.into_iter(),
            cursor: None,
            from,
            failed: false,
        }
    }
}

/// How to open a log.
#[derive(Debug, Clone)]
pub struct OpenLog {
    pub format: &'static SegmentFormat,
    pub damage: Damage,
    /// A lock file in the directory held while the log is open (one writer per directory).
    pub lock_file: Option<&'static str>,
    /// The lowest number a new segment named by sequence may take (one past a segment the
    /// caller still refers to, for example).
    pub min_next_id: u64,
    pub disk: Arc<dyn Disk>,
}

impl OpenLog {
    pub fn new(format: &'static SegmentFormat, damage: Damage) -> OpenLog {
        OpenLog {
            format,
            damage,
            lock_file: None,
            min_next_id: 0,
            disk: Arc::new(RealDisk),
        }
    }
}

/// The segment being appended to.
#[derive(Debug)]
struct Active {
    id: u64,
    file: File,
    checksum: Checksum,
    len: u64,
    entries: u64,
    first_entry: u64,
    /// `len` and `entries` as of the last successful sync.
    synced_len: u64,
    synced_entries: u64,
}

/// The writing side of a segmented log. One per directory when opened with a lock file.
#[derive(Debug)]
pub struct Log {
    catalog: Catalog,
    active: Active,
    disk: Arc<dyn Disk>,
    /// A rollback that failed: the length and entries the active segment must be cut back to
    /// before it takes another write.
    poisoned: Option<(u64, u64)>,
    _lock: Option<DirLock>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, verifying every entry: `visit` sees each
    /// verified entry and may refuse it (then it is damage at that entry). Damage is handled as
    /// [`OpenLog::damage`] says; each repair is described in the returned notes. Appends go to
    /// the last segment, or to a new one when the last is of an older format version or was
    /// moved aside.
    pub fn open(
        dir: &Path,
        options: OpenLog,
        mut visit: impl FnMut(EntryAt, &[u8]) -> Result<(), String>,
    ) -> Result<(Log, Vec<String>), LogError> {
        let OpenLog {
            format,
            damage,
            lock_file,
            min_next_id,
            disk,
        } = options;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = match lock_file {
            None => None,
            Some(name) => Some(DirLock::try_acquire(&dir.join(name)).map_err(|e| match e {
                LockError::Held { path } => LogError::Locked { path },
                LockError::Io { path, source } => LogError::Io { path, source },
            })?),
        };
        let ids = format.list(dir).map_err(io_err(dir))?;
        let catalog = Catalog {
            segments: Arc::default(),
            dir: Arc::from(dir),
            format,
        };
        let mut notes = Vec::new();
        let mut last_version = None;
        let mut next_entry = if format.named_by_first_entry {
            ids.first().copied().unwrap_or(0)
        } else {
            0
        };
        for (i, &id) in ids.iter().enumerate() {
            let is_last = i + 1 == ids.len();
            let path = format.path(dir, id);
            if format.named_by_first_entry && id != next_entry {
                return Err(LogError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!(
                        "segment starts at entry {id} but the previous one ends before entry {next_entry}"
                    ),
                });
            }
            let file_len = fs::metadata(&path).map_err(io_err(&path))?.len();
            let mut reader =
                match SegmentReader::open(format, dir, id, HEADER_LEN).map_err(io_err(&path))? {
                    Ok(reader) => reader,
                    Err(why) if damage == Damage::CutEach => {
                        let mut aside = path.clone().into_os_string();
                        aside.push(".damaged");
                        fs::rename(&path, &aside).map_err(io_err(&path))?;
                        notes.push(format!(
                            "{} {} moved aside: {why}",
                            format.noun,
                            path.display()
                        ));
                        last_version = None;
                        continue;
                    }
                    Err(why) => {
                        return Err(LogError::Corrupt {
                            path,
                            offset: 0,
                            reason: why,
                        });
                    }
                };
            let first_entry = next_entry;
            let mut problem = None;
            loop {
                let at = EntryAt {
                    segment: id,
                    offset: reader.offset(),
                    number: next_entry,
                };
                match reader.next(file_len).map_err(io_err(&path))? {
                    Frame::End => break,
                    Frame::Entry(payload) => {
                        if let Err(why) = visit(at, &payload) {
                            reader.unread(payload.len()).map_err(io_err(&path))?;
                            problem = Some(FrameProblem::Refused(why));
                            break;
                        }
                        next_entry += 1;
                    }
                    Frame::Bad(p) => {
                        problem = Some(p);
                        break;
                    }
                }
            }
            let valid = reader.offset();
            if let Some(problem) = problem {
                if damage == Damage::TornTailOnly && !is_last {
                    return Err(LogError::Corrupt {
                        path,
                        offset: valid,
                        reason: problem.to_string(),
                    });
                }
                let cut = file_len - valid;
                let note = match damage {
                    Damage::CutEach => {
                        let saved = save_damaged(dir, id, valid, &path);
                        format!(
                            "{} {}: {problem} at offset {valid}; cut off {cut} bytes{}",
                            format.noun,
                            path.display(),
                            match saved {
                                Ok(p) => format!(" (saved to {})", p.display()),
                                Err(e) => format!(" (could not save them: {e})"),
                            }
                        )
                    }
                    Damage::TornTailOnly => format!(
                        "{} {}: {problem} at offset {valid}; cut off the torn tail of {cut} bytes",
                        format.noun,
                        path.display()
                    ),
                };
                notes.push(note);
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                file.set_len(valid)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err(&path))?;
            }
            catalog.set(
                id,
                SegmentState {
                    len: valid,
                    entries: next_entry - first_entry,
                    first_entry,
                },
            );
            last_version = Some(reader.version());
        }

        let last_listed = ids.last().copied();
        let appendable = match catalog.lock().last_key_value() {
            Some((&id, _)) => Some(id) == last_listed && last_version == Some(format.version),
            None => false,
        };
        let active = if appendable {
            let (id, state) = catalog
                .lock()
                .last_key_value()
                .map(|(&i, &s)| (i, s))
                .expect("checked");
            let path = format.path(dir, id);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            Active {
                id,
                file,
                checksum: (format.checksum)(format.version),
                len: state.len,
                entries: state.entries,
                first_entry: state.first_entry,
                synced_len: state.len,
                synced_entries: state.entries,
            }
        } else {
            let id = if format.named_by_first_entry {
                // An empty segment of an older version has this name: it is replaced.
                catalog.lock().remove(&next_entry);
                next_entry
            } else {
                last_listed
                    .map_or(0, |l| l.saturating_add(1))
                    .max(min_next_id)
            };
            new_active(&catalog, id, next_entry)?
        };
        Ok((
            Log {
                catalog,
                active,
                disk,
                poisoned: None,
                _lock: lock,
            },
            notes,
        ))
    }

    /// The durable segments, for readers and removal.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn dir(&self) -> &Path {
        self.catalog.dir()
    }

    /// The checksum rule of the segment being appended to: frame with it.
    pub fn checksum(&self) -> Checksum {
        self.active.checksum
    }

    /// The segment being appended to.
    pub fn active_segment(&self) -> u64 {
        self.active.id
    }

    /// Bytes written to the active segment (header included).
    pub fn active_len(&self) -> u64 {
        self.active.len
    }

    /// Whether the active segment holds no entry.
    pub fn active_is_empty(&self) -> bool {
        self.active.entries == 0
    }

    /// The number the next appended entry will get.
    pub fn next_entry(&self) -> u64 {
        self.active.first_entry + self.active.entries
    }

    /// The number of the oldest entry still kept.
    pub fn first_entry(&self) -> u64 {
        self.catalog
            .lock()
            .first_key_value()
            .map_or(self.active.first_entry, |(_, s)| s.first_entry)
    }

    fn active_path(&self) -> PathBuf {
        self.catalog.path(self.active.id)
    }

    /// Appends `frames` to the active segment and says where the first is. Not durable until
    /// [`Log::sync`]. On an I/O error the segment is cut back to where it was.
    pub fn append(&mut self, frames: &Frames) -> Result<EntryAt, LogError> {
        self.check_poisoned()?;
        let at = EntryAt {
            segment: self.active.id,
            offset: self.active.len,
            number: self.next_entry(),
        };
        if frames.is_empty() {
            return Ok(at);
        }
        let (len, entries) = (self.active.len, self.active.entries);
        match self.disk.write(&mut self.active.file, frames.bytes()) {
            Ok(()) => {
                self.active.len += frames.len();
                self.active.entries += frames.count();
                Ok(at)
            }
            Err(source) => {
                let path = self.active_path();
                tracing::warn!(path = %path.display(), error = %source, "append failed; cutting the partial batch");
                // The original error is what the caller needs; a failed rollback poisons the log.
                let _ = self.truncate_active(len, entries);
                Err(LogError::Io { path, source })
            }
        }
    }

    /// Makes every appended entry durable (fdatasync of the active segment; segment creation
    /// already synced the directory) and publishes it in the catalog. On failure every entry
    /// appended since the last successful sync is cut off and the error returned.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        if self.active.synced_len == self.active.len {
            return Ok(());
        }
        match self.disk.sync(&self.active.file) {
            Ok(()) => {
                self.active.synced_len = self.active.len;
                self.active.synced_entries = self.active.entries;
                self.catalog.set(
                    self.active.id,
                    SegmentState {
                        len: self.active.len,
                        entries: self.active.entries,
                        first_entry: self.active.first_entry,
                    },
                );
                Ok(())
            }
            Err(source) => {
                let path = self.active_path();
                tracing::warn!(path = %path.display(), error = %source, "sync failed; cutting the unsynced entries");
                let (len, entries) = (self.active.synced_len, self.active.synced_entries);
                let _ = self.truncate_active(len, entries);
                Err(LogError::Io { path, source })
            }
        }
    }

    /// Seals the active segment (synced first: once a newer segment exists, recovery may treat
    /// damage in the old one as corruption) and starts the next one.
    pub fn roll(&mut self) -> Result<(), LogError> {
        self.sync()?;
        let next_entry = self.next_entry();
        let id = if self.catalog.format.named_by_first_entry {
            next_entry
        } else {
            self.active
                .id
                .checked_add(1)
                .ok_or_else(|| LogError::Corrupt {
                    path: self.active_path(),
                    offset: 0,
                    reason: "no segment number after this one".into(),
                })?
        };
        self.active = new_active(&self.catalog, id, next_entry)?;
        Ok(())
    }

    /// After a failed rollback, tries it again: the log takes writes once it succeeds.
    fn check_poisoned(&mut self) -> Result<(), LogError> {
        if let Some((len, entries)) = self.poisoned {
            if self.truncate_active(len, entries).is_err() {
                return Err(LogError::Poisoned {
                    path: self.active_path(),
                });
            }
            tracing::warn!(path = %self.active_path().display(), "failed write rolled back at last; taking writes again");
        }
        Ok(())
    }

    /// Cuts the active segment back to `len` bytes holding `entries` entries, durably. If that
    /// fails the file's content is unknown, so the log refuses further writes until a retry of
    /// this cut succeeds.
    fn truncate_active(&mut self, len: u64, entries: u64) -> Result<(), LogError> {
        match self.disk.truncate(&self.active.file, len) {
            Ok(()) => {
                self.poisoned = None;
                self.active.len = len;
                self.active.entries = entries;
                self.active.synced_len = self.active.synced_len.min(len);
                self.active.synced_entries = self.active.synced_entries.min(entries);
                Ok(())
            }
            Err(source) => {
                self.poisoned = Some((len, entries));
                let path = self.active_path();
                tracing::error!(path = %path.display(), error = %source, "cannot roll the log back; refusing further writes");
                Err(LogError::Io { path, source })
            }
        }
    }
}

fn new_active(catalog: &Catalog, id: u64, first_entry: u64) -> Result<Active, LogError> {
    let format = catalog.format;
    let file = format
        .create(&catalog.dir, id)
        .map_err(io_err(&catalog.path(id)))?;
    let state = SegmentState {
        len: HEADER_LEN,
        entries: 0,
        first_entry,
    };
    catalog.set(id, state);
    Ok(Active {
        id,
        file,
        checksum: (format.checksum)(format.version),
        len: HEADER_LEN,
        entries: 0,
        first_entry,
        synced_len: HEADER_LEN,
        synced_entries: 0,
    })
}

/// Copies the bytes about to be cut off, for forensics (at most 1 MiB).
fn save_damaged(dir: &Path, id: u64, from: u64, path: &Path) -> io::Result<PathBuf> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(1 << 20).read_to_end(&mut bytes)?;
    let out = dir.join(format!("{id:020}-{from}.damaged"));
    fs::write(&out, &bytes)?;
    Ok(out)
}

/// Iterates over durable entries as `(number, payload)`; stops after the first error.
#[derive(Debug)]
pub struct EntryReader {
    catalog: Catalog,
    segments: std::vec::IntoIter<(u64, SegmentState)>,
    cursor: Option<(PathBuf, SegmentReader, u64, u64)>,
    from: u64,
    failed: bool,
}

impl EntryReader {
    fn open_next(&mut self) -> Option<Result<(), LogError>> {
        let (id, state) = self.segments.next()?;
        let path = self.catalog.path(id);
        Some(
            match SegmentReader::open(self.catalog.format, self.catalog.dir(), id, HEADER_LEN) {
                Ok(Ok(reader)) => {
                    self.cursor = Some((path, reader, state.len, state.first_entry));
                    Ok(())
                }
                Ok(Err(reason)) => Err(LogError::Corrupt {
                    path,
                    offset: 0,
                    reason,
                }),
                Err(source) => Err(LogError::Io { path, source }),
            },
        )
    }
}

impl Iterator for EntryReader {
    type Item = Result<(u64, Vec<u8>), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if self.cursor.is_none()
                && let Err(e) = self.open_next()?
            {
                self.failed = true;
                return Some(Err(e));
            }
            let (path, reader, end, number) = self.cursor.as_mut().expect("opened above");
            let offset = reader.offset();
            match reader.next(*end) {
                Ok(Frame::End) => self.cursor = None,
                Ok(Frame::Entry(payload)) => {
                    let n = *number;
                    *number += 1;
                    if n >= self.from {
                        return Some(Ok((n, payload)));
                    }
                }
                Ok(Frame::Bad(problem)) => {
                    self.failed = true;
                    return Some(Err(LogError::Corrupt {
                        path: path.clone(),
                        offset,
                        reason: problem.to_string(),
                    }));
                }
                Err(source) => {
                    self.failed = true;
                    return Some(Err(LogError::Io {
                        path: path.clone(),
                        source,
                    }));
                }
            }
        }
    }
}
