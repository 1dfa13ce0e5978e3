//! The disk spool: records (and file positions) wait here, fsynced, until the collector has
//! acknowledged them. Segmented append-only files with a checksum per entry, bounded in size,
//! with group commit, a persisted acknowledged position and deletion of acknowledged segments.

mod entry;
mod reader;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::checkpoint::FilePosition;
use crate::state_file::{self, StateFileError, Versioned};

pub use entry::SpoolEntry;
pub use reader::{ReadEntry, SpoolReader};
pub use segment::{FRAME_OVERHEAD, HEADER_LEN};

const ACKED_FILE: &str = "acked.json";

/// A place in the spool: a segment's sequence number and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpoolPos {
    pub segment: u64,
    pub offset: u64,
}

/// Size limits of a spool.
#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    /// Most bytes all segments together may hold; appends beyond are refused with `Full`.
    pub max_bytes: u64,
    /// A segment is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
}

/// The spool could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("spool segment {path}: {source}")]
    Segment { path: PathBuf, source: io::Error },
    #[error("spool segment {path} is damaged at offset {offset}: {problem}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        problem: String,
    },
    #[error("spool is full: {used} of {max} bytes used, {needed} more needed")]
    Full { used: u64, max: u64, needed: u64 },
    #[error("an entry of {needed} bytes can never fit in a spool of {max} bytes")]
    TooLarge { needed: u64, max: u64 },
    #[error(transparent)]
    State(#[from] StateFileError),
    #[error("the spool writer has stopped")]
    Stopped,
}

impl SpoolError {
    /// True when the append may succeed later without anything changing but time (full spool,
    /// a transient write error).
    pub fn is_full(&self) -> bool {
        matches!(self, SpoolError::Full { .. })
    }
}

/// What opening the spool found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every file position still recorded in the spool (the newest file checkpoints may only be
    /// here: they become durable with the records they follow).
    pub file_positions: Vec<FilePosition>,
    /// Records after the acknowledged position, to be forwarded.
    pub pending_records: u64,
    /// Damaged tails that were cut off, one line each.
    pub damaged: Vec<String>,
}

/// An append on its way (see [`Spool::submit`]).
#[derive(Debug)]
pub struct PendingAppend(Option<oneshot::Receiver<Result<SpoolPos, SpoolError>>>);

impl PendingAppend {
    /// Waits until the entries are fsynced (or refused): the position after the last.
    pub fn wait(self) -> Result<SpoolPos, SpoolError> {
        let rx = self.0.ok_or(SpoolError::Stopped)?;
        rx.blocking_recv().map_err(|_| SpoolError::Stopped)?
    }
}

/// Counters the spool keeps for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpoolStats {
    /// Bytes on disk in all segments.
    pub used_bytes: u64,
    /// The configured limit.
    pub max_bytes: u64,
    /// Segments on disk.
    pub segments: u64,
}

/// A handle on the spool; clones share it.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    requests: mpsc::Sender<writer::Request>,
}

pub(crate) struct Shared {
    dir: PathBuf,
    options: SpoolOptions,
    used_bytes: AtomicU64,
    /// Sequence number → committed length of every segment on disk.
    segments: Mutex<BTreeMap<u64, u64>>,
    acked: Mutex<SpoolPos>,
    /// End of the fsynced data: what readers may read.
    committed: watch::Sender<SpoolPos>,
}

#[derive(Serialize, Deserialize)]
struct AckedFile {
    version: u32,
    segment: u64,
    offset: u64,
}

impl Versioned for AckedFile {
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, checking every entry: a damaged tail is cut off
    /// (saved beside it as `SEQ-OFFSET.damaged`) and logged; it never stops the agent.
    pub fn open(dir: &Path, options: SpoolOptions) -> Result<(Spool, Recovery), SpoolError> {
        let dir_err = |source| SpoolError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(dir_err)?;
        let acked_path = dir.join(ACKED_FILE);
        let acked_file = state_file::read_json::<AckedFile>(&acked_path)?;
        let mut acked = acked_file.map(|a| SpoolPos {
            segment: a.segment,
            offset: a.offset,
        });

        let mut recovery = Recovery::default();
        let mut segments = BTreeMap::new();
        let seqs = segment::list(dir).map_err(dir_err)?;
        let last = seqs.last().copied();
        let mut last_version = None;
        for seq in seqs {
            let path = segment::segment_path(dir, seq);
            match recover_segment(dir, seq, acked, &mut recovery)? {
                Some((len, version)) => {
                    segments.insert(seq, len);
                    last_version = Some(version);
                }
                None => {
                    let mut aside = path.clone().into_os_string();
                    aside.push(".damaged");
                    fs::rename(&path, &aside).map_err(|source| SpoolError::Segment {
                        path: path.clone(),
                        source,
                    })?;
                }
            }
        }
        for line in &recovery.damaged {
            tracing::warn!("{line}");
        }

        // Append to the last segment, or start one after everything known (also when the last
        // is of an older format: a segment holds only what its header's version allows).
        let (active_seq, active_file) = match segments.last_key_value() {
            Some((&seq, _))
                if Some(seq) == last && last_version == Some(segment::FORMAT_VERSION) =>
            {
                let path = segment::segment_path(dir, seq);
                let file = fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|source| SpoolError::Segment { path, source })?;
                (seq, file)
            }
            _ => {
                let seq = last
                    .max(acked.map(|a| a.segment))
                    .map_or(1, |s| s + 1)
                    .max(1);
                let file = segment::create(dir, seq).map_err(|source| SpoolError::Segment {
                    path: segment::segment_path(dir, seq),
                    source,
                })?;
                segments.insert(seq, HEADER_LEN);
                (seq, file)
            }
        };
        let active_len = segments[&active_seq];

        // The acknowledged position must name a place that exists.
        let first = *segments.keys().next().expect("at least the active segment");
        let start = SpoolPos {
            segment: first,
            offset: HEADER_LEN,
        };
        let clamped = match acked {
            None => start,
            Some(a) if a.segment < first => start,
            Some(a) => match segments.get(&a.segment) {
                Some(&len) => SpoolPos {
                    segment: a.segment,
                    offset: a.offset.clamp(HEADER_LEN, len),
                },
                // A gap (segments were moved aside): continue at the next segment that exists.
                None => segments
                    .range(a.segment..)
                    .next()
                    .map_or(start, |(&seq, _)| SpoolPos {
                        segment: seq,
                        offset: HEADER_LEN,
                    }),
            },
        };
        acked = Some(clamped);

        let used = segments.values().sum();
        let committed = SpoolPos {
            segment: active_seq,
            offset: active_len,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            used_bytes: AtomicU64::new(used),
            segments: Mutex::new(segments),
            acked: Mutex::new(acked.expect("set above")),
            committed: watch::channel(committed).0,
        });
        let requests = writer::start(shared.clone(), active_seq, active_file, active_len).map_err(
            |source| SpoolError::Dir {
                path: dir.to_path_buf(),
                source,
            },
        )?;
        // Acknowledged segments left by a crash are deleted by the next `delete_acked`, once the
        // caller has persisted the file positions recovered from them.
        Ok((Spool { shared, requests }, recovery))
    }

    /// Appends entries and returns once they are fsynced, with the position after the last.
    /// Appends from many callers share one fsync (group commit). Refused with
    /// [`SpoolError::Full`] when the entries do not fit: nothing is written then.
    pub async fn append(&self, entries: Vec<SpoolEntry>) -> Result<SpoolPos, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(writer::Request { entries, reply })
            .map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?
    }

    /// [`Spool::append`] for threads outside the async runtime.
    pub fn append_blocking(&self, entries: Vec<SpoolEntry>) -> Result<SpoolPos, SpoolError> {
        self.submit(entries).wait()
    }

    /// Starts an append and returns at once; [`PendingAppend::wait`] gives its outcome. For a
    /// thread that prepares its next append while the spool fsyncs this one.
    pub fn submit(&self, entries: Vec<SpoolEntry>) -> PendingAppend {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .requests
            .send(writer::Request { entries, reply })
            .is_ok();
        PendingAppend(sent.then_some(rx))
    }

    /// A reader starting at the acknowledged position.
    pub fn reader(&self) -> SpoolReader {
        SpoolReader::new(self.shared.clone(), self.acked())
    }

    /// The position up to which the collector has acknowledged everything.
    pub fn acked(&self) -> SpoolPos {
        *self.shared.acked.lock().expect("acked lock")
    }

    /// The end of the fsynced data.
    pub fn committed(&self) -> SpoolPos {
        *self.shared.committed.borrow()
    }

    /// Records that everything before `pos` is acknowledged and persists the position
    /// atomically. Segments entirely acknowledged are deleted by [`Spool::delete_acked`]
    /// (persist the file checkpoints first: those segments may hold the newest positions).
    pub fn ack(&self, pos: SpoolPos) -> Result<(), SpoolError> {
        {
            let mut acked = self.shared.acked.lock().expect("acked lock");
            if pos <= *acked {
                return Ok(());
            }
            state_file::write_json(
                &self.shared.dir.join(ACKED_FILE),
                &AckedFile {
                    version: AckedFile::VERSION,
                    segment: pos.segment,
                    offset: pos.offset,
                },
            )?;
            *acked = pos;
        }
        Ok(())
    }

    /// Bytes of entries committed but not yet acknowledged (the backlog).
    pub fn unacked_bytes(&self) -> u64 {
        let acked = self.acked();
        let segments = self.shared.segments.lock().expect("segments lock");
        segments
            .range(acked.segment..)
            .map(|(&seq, &len)| {
                let from = if seq == acked.segment {
                    acked.offset
                } else {
                    HEADER_LEN
                };
                len.saturating_sub(from)
            })
            .sum()
    }

    /// Whether some segment is entirely acknowledged (and not the one being written).
    pub fn has_deletable(&self) -> bool {
        let acked = self.acked();
        let segments = self.shared.segments.lock().expect("segments lock");
        let mut keys = segments.iter();
        matches!((keys.next(), keys.next()), (Some((&seq, &len)), Some(_))
            if seq < acked.segment || (seq == acked.segment && acked.offset >= len))
    }

    /// Whether `bytes` more would fit now.
    pub fn has_room_for(&self, bytes: u64) -> bool {
        self.shared.used_bytes.load(Ordering::Acquire) + bytes <= self.shared.options.max_bytes
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            used_bytes: self.shared.used_bytes.load(Ordering::Acquire),
            max_bytes: self.shared.options.max_bytes,
            segments: self.shared.segments.lock().expect("segments lock").len() as u64,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Deletes the segments that are entirely acknowledged; frees their bytes.
    pub fn delete_acked(&self) -> Result<(), SpoolError> {
        let acked = self.acked();
        let mut deleted = false;
        loop {
            let victim = {
                let segments = self.shared.segments.lock().expect("segments lock");
                let mut keys = segments.iter();
                match (keys.next(), keys.next()) {
                    // Never the last (active) segment.
                    (Some((&seq, &len)), Some(_))
                        if seq < acked.segment || (seq == acked.segment && acked.offset >= len) =>
                    {
                        Some(seq)
                    }
                    _ => None,
                }
            };
            let Some(seq) = victim else { break };
            let path = segment::segment_path(&self.shared.dir, seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(SpoolError::Segment { path, source }),
            }
            let len = self
                .shared
                .segments
                .lock()
                .expect("segments lock")
                .remove(&seq)
                .unwrap_or(0);
            self.shared.used_bytes.fetch_sub(len, Ordering::AcqRel);
            deleted = true;
        }
        if deleted {
            state_file::sync_dir(&self.shared.dir).map_err(|source| SpoolError::Dir {
                path: self.shared.dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Checks one segment, cutting off a damaged tail. Returns its valid length and format version,
/// or `None` when its header is unusable (the caller moves it aside).
fn recover_segment(
    dir: &Path,
    seq: u64,
    acked: Option<SpoolPos>,
    recovery: &mut Recovery,
) -> Result<Option<(u64, u32)>, SpoolError> {
    let path = segment::segment_path(dir, seq);
    let seg_err = |source| SpoolError::Segment {
        path: path.clone(),
        source,
    };
    let file_len = fs::metadata(&path).map_err(seg_err)?.len();
    let mut reader = segment::FrameReader::open(&path, 0).map_err(seg_err)?;
    let version = match reader.read_header().map_err(seg_err)? {
        Ok(version) => version,
        Err(problem) => {
            recovery.damaged.push(format!(
                "spool segment {} moved aside: {problem}",
                path.display()
            ));
            return Ok(None);
        }
    };
    let mut problem = None;
    loop {
        let at = reader.offset();
        match reader.next().map_err(seg_err)? {
            None => break,
            Some(Ok(entry)) => match entry {
                SpoolEntry::FilePosition(p) => recovery.file_positions.push(p),
                SpoolEntry::Log(_) | SpoolEntry::Json(_) => {
                    if acked.is_none_or(|a| {
                        SpoolPos {
                            segment: seq,
                            offset: at,
                        } >= a
                    }) {
                        recovery.pending_records += 1;
                    }
                }
            },
            Some(Err(p)) => {
                problem = Some(p);
                break;
            }
        }
    }
    let valid = reader.offset();
    if let Some(problem) = problem {
        let cut = file_len - valid;
        let saved = save_damaged(dir, seq, valid, &path);
        recovery.damaged.push(format!(
            "spool segment {}: {problem} at offset {valid}; cut off {cut} bytes{}",
            path.display(),
            match saved {
                Ok(p) => format!(" (saved to {})", p.display()),
                Err(e) => format!(" (could not save them: {e})"),
            }
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(seg_err)?;
        file.set_len(valid).map_err(seg_err)?;
        file.sync_all().map_err(seg_err)?;
    }
    Ok(Some((valid, version)))
}

/// Copies the bytes about to be cut off, for forensics (at most 1 MiB).
fn save_damaged(dir: &Path, seq: u64, from: u64, path: &Path) -> io::Result<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(1 << 20).read_to_end(&mut bytes)?;
    let out = dir.join(format!("{seq:020}-{from}.damaged"));
    fs::write(&out, &bytes)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
