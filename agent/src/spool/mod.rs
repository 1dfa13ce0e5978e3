//! The disk spool: records (and file positions) wait here, fsynced, until the collector has
//! acknowledged them. A segment log ([`codestax_storage::Log`], group-committed) bounded in size,
//! plus the acknowledged position, persisted as a state file, before which segments are deleted.

mod entry;
mod reader;
mod segment;
mod shared;
mod writer;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use codestax_storage::{
    Damage, Disk, Frames, GroupCommit, GroupOptions, Log, LogError, OnDamage, OpenLog, RealDisk,
    StateFile, Versioned,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::checkpoint::FilePosition;

pub use codestax_storage::{FRAME_OVERHEAD, HEADER_LEN};
pub use entry::SpoolEntry;
pub use reader::{ReadEntry, SpoolReader};
pub use shared::{SpoolError, SpoolOptions, SpoolPos, WriteFailure};

use shared::Shared;

const ACKED_FILE: &str = "acked.json";

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
    requests: GroupCommit<writer::Request>,
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
        Spool::open_on(dir, options, Arc::new(RealDisk))
    }

    /// [`Spool::open`], with the segments written through `disk` (faults in tests).
    pub fn open_on(
        dir: &Path,
        options: SpoolOptions,
        disk: Arc<dyn Disk>,
    ) -> Result<(Spool, Recovery), SpoolError> {
        let acked_file = StateFile::new(dir.join(ACKED_FILE), ".new");
        let acked = acked_file
            .read_json::<AckedFile>(OnDamage::MoveAside)?
            .map(|a| SpoolPos {
                segment: a.segment,
                offset: a.offset,
            });

        let mut recovery = Recovery::default();
        let open = OpenLog {
            // A new segment comes after the acknowledged one, even if that one is gone.
            min_next_id: acked.map_or(1, |a| a.segment.saturating_add(1)),
            disk,
            ..OpenLog::new(&segment::FORMAT, Damage::CutEach)
        };
        let (log, notes) = Log::open(dir, open, |at, payload| {
            match SpoolEntry::decode(payload).ok_or("unknown entry kind")? {
                SpoolEntry::FilePosition(p) => recovery.file_positions.push(p),
                SpoolEntry::Log(_) | SpoolEntry::Json(_) => {
                    let pos = SpoolPos {
                        segment: at.segment,
                        offset: at.offset,
                    };
                    if acked.is_none_or(|a| pos >= a) {
                        recovery.pending_records += 1;
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| log_error(dir, e))?;
        for line in &notes {
            tracing::warn!("{line}");
        }
        recovery.damaged = notes;
        let catalog = log.catalog().clone();
        let segments = catalog.all();

        // The acknowledged position must name a place that exists.
        let (first, _) = *segments.first().expect("at least the active segment");
        let start = SpoolPos {
            segment: first,
            offset: HEADER_LEN,
        };
        let clamped = match acked {
            None => start,
            Some(a) if a.segment < first => start,
            Some(a) => match catalog.get(a.segment) {
                Some(state) => SpoolPos {
                    segment: a.segment,
                    offset: a.offset.clamp(HEADER_LEN, state.len),
                },
                // A gap (segments were moved aside): continue at the next segment that exists.
                None => catalog
                    .next_from(a.segment)
                    .map_or(start, |(seq, _)| SpoolPos {
                        segment: seq,
                        offset: HEADER_LEN,
                    }),
            },
        };

        let used = segments.iter().map(|(_, s)| s.len).sum();
        let committed = SpoolPos {
            segment: log.active_segment(),
            offset: log.active_len(),
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            used_bytes: AtomicU64::new(used),
            catalog,
            acked_file,
            acked: Mutex::new(clamped),
            committed: watch::channel(committed).0,
            cuts: AtomicU64::new(0),
            failing: Mutex::new(None),
        });
        let writer = writer::Writer {
            shared: shared.clone(),
            log,
            frames: Frames::new(),
            roll_failing: false,
        };
        let group = GroupOptions {
            max_wait: std::time::Duration::ZERO,
            max_requests: MAX_GROUP,
            max_records: usize::MAX,
            max_bytes: usize::MAX,
            queue_depth: None,
        };
        let requests = GroupCommit::start("spool-writer", writer, group).map_err(|source| {
            SpoolError::Dir {
                path: dir.to_path_buf(),
                source,
            }
        })?;
        // Acknowledged segments left by a crash are deleted by the next `delete_acked`, once the
        // caller has persisted the file positions recovered from them.
        Ok((Spool { shared, requests }, recovery))
    }

    /// Appends entries and returns once they are fsynced, with the position after the last.
    /// Appends from many callers share one fsync (group commit). Refused with
    /// [`SpoolError::Full`] when the entries do not fit, [`SpoolError::DiskFull`] when the disk
    /// has no room: nothing is written then (a failed write is cut back), and the same append
    /// may be tried again.
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
            self.shared.acked_file.write_json(&AckedFile {
                version: AckedFile::VERSION,
                segment: pos.segment,
                offset: pos.offset,
            })?;
            *acked = pos;
        }
        Ok(())
    }

    /// Bytes of entries committed but not yet acknowledged (the backlog).
    pub fn unacked_bytes(&self) -> u64 {
        let acked = self.acked();
        self.shared
            .catalog
            .all()
            .into_iter()
            .filter(|(seq, _)| *seq >= acked.segment)
            .map(|(seq, state)| {
                let from = if seq == acked.segment {
                    acked.offset
                } else {
                    HEADER_LEN
                };
                state.len.saturating_sub(from)
            })
            .sum()
    }

    /// Whether some segment is entirely acknowledged (and not the one being written).
    pub fn has_deletable(&self) -> bool {
        let acked = self.acked();
        let segments = self.shared.catalog.all();
        matches!(&segments[..], [(seq, state), _, ..] if is_acked(*seq, state.len, acked))
    }

    /// Whether `bytes` more would fit now.
    pub fn has_room_for(&self, bytes: u64) -> bool {
        self.shared.used_bytes.load(Ordering::Acquire) + bytes <= self.shared.options.max_bytes
    }

    /// Set while appends fail on the disk (until one succeeds).
    pub fn write_failure(&self) -> Option<WriteFailure> {
        self.shared.failing.lock().expect("failing lock").clone()
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            used_bytes: self.shared.used_bytes.load(Ordering::Acquire),
            max_bytes: self.shared.options.max_bytes,
            segments: self.shared.catalog.count() as u64,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Deletes the segments that are entirely acknowledged; frees their bytes.
    pub fn delete_acked(&self) -> Result<(), SpoolError> {
        let acked = self.acked();
        let removed = self
            .shared
            .catalog
            .remove_oldest_while(|seq, state, _| is_acked(seq, state.len, acked))
            .map_err(|e| log_error(&self.shared.dir, e))?;
        for (_, state) in removed {
            self.shared
                .used_bytes
                .fetch_sub(state.len, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// Appends waiting together are committed with one fsync, up to this many.
const MAX_GROUP: usize = 1024;

/// Whether every entry of segment `seq`, `len` bytes long, is before `acked`.
fn is_acked(seq: u64, len: u64, acked: SpoolPos) -> bool {
    seq < acked.segment || (seq == acked.segment && acked.offset >= len)
}

fn log_error(dir: &Path, e: LogError) -> SpoolError {
    match e {
        LogError::Io { path, source } if path == dir => SpoolError::Dir { path, source },
        LogError::Io { path, source } => SpoolError::Segment { path, source },
        other => SpoolError::Dir {
            path: dir.to_path_buf(),
            source: io::Error::other(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests;
