//! The file source's loop: one thread that discovers files, reacts to file-system events,
//! reads every file with new data, and appends the records with the files' positions to the
//! spool in one fsynced step per round.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codestax_common::Rules;
use notify::{EventKind, RecursiveMode, Watcher, event::ModifyKind};

use super::FileSettings;
use super::tailer::{Chunk, Leaving, Status, TailedFile};
use crate::checkpoint::{CheckpointStore, FileKey};
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::spool::{PendingAppend, Spool, SpoolEntry, SpoolError};
use codestax_common::LineParser;

/// How the file source paces itself.
#[derive(Debug, Clone)]
pub struct FileServerOptions {
    /// Globs are expanded again this often, besides events (`discovery.rescan_interval`).
    pub rescan_interval: Duration,
    /// A file that left the globs (renamed away, deleted) is released after being idle at its
    /// end this long.
    pub finish_grace: Duration,
    /// Most new bytes read from one file per round.
    pub read_bytes: usize,
    /// Most new bytes read from all files per round (one spool append).
    pub round_bytes: usize,
    /// Wait before trying again when the spool is full.
    pub full_pause: Duration,
}

impl FileServerOptions {
    /// Defaults for a spool of `spool_max_bytes`: rounds small enough to always fit.
    pub fn new(rescan_interval: Duration, spool_max_bytes: u64) -> FileServerOptions {
        let quarter = usize::try_from(spool_max_bytes / 4).unwrap_or(usize::MAX);
        FileServerOptions {
            rescan_interval,
            finish_grace: Duration::from_secs(5),
            read_bytes: (1 << 20).min(quarter / 2),
            round_bytes: (8 << 20).min(quarter),
            full_pause: Duration::from_millis(200),
        }
    }
}

/// The file source could not start.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("cannot start the file watcher: {0}")]
    Watcher(#[from] notify::Error),
    #[error("cannot start the file source thread: {0}")]
    Thread(io::Error),
}

/// The tailing of every configured file, driven step by step (the thread in [`FileServer`],
/// or a test).
pub struct FileTailer {
    sources: Vec<Arc<FileSettings>>,
    options: FileServerOptions,
    files: HashMap<FileKey, TailedFile>,
    by_path: HashMap<PathBuf, FileKey>,
    dirty: BTreeSet<FileKey>,
    spool: Spool,
    pub(crate) checkpoints: CheckpointStore,
    quarantine: Quarantine,
    metrics: Arc<Metrics>,
    paused_until: Option<Instant>,
    /// Growth seen per file, for the idle time of finishing files.
    last_growth: HashMap<FileKey, Instant>,
    /// Finishing files are polled at most this often (they send no events once renamed away).
    last_finish_poll: Instant,
    /// The last round did not fit in the spool as a whole: read one file per round for now.
    one_file_per_round: bool,
    /// The append started by the last round, not yet waited for.
    in_flight: Option<InFlight>,
    /// Reads the lines of every file (one record's strings, reused line after line).
    parser: LineParser,
}

/// An append of a round, on its way to the spool.
struct InFlight {
    append: PendingAppend,
    /// The chunks it holds (their entries moved into the append).
    polled: Vec<(FileKey, Chunk)>,
    records: u64,
}

impl FileTailer {
    pub fn new(
        sources: Vec<Arc<FileSettings>>,
        options: FileServerOptions,
        spool: Spool,
        checkpoints: CheckpointStore,
        quarantine: Quarantine,
        metrics: Arc<Metrics>,
    ) -> FileTailer {
        FileTailer {
            sources,
            options,
            files: HashMap::new(),
            by_path: HashMap::new(),
            dirty: BTreeSet::new(),
            spool,
            checkpoints,
            quarantine,
            metrics,
            paused_until: None,
            last_growth: HashMap::new(),
            last_finish_poll: Instant::now(),
            one_file_per_round: false,
            in_flight: None,
            parser: LineParser::default(),
        }
    }

    /// Expands every glob: opens new files, follows renames, and starts finishing files that
    /// left the globs. Every file is polled afterwards (the safety net for missed events).
    pub fn discover(&mut self) {
        let now = Instant::now();
        let mut seen = HashSet::new();
        for source in &self.sources {
            for path in source.globs.expand() {
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                let key = FileKey {
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                if !seen.insert(key) {
                    continue; // Another path (or an earlier source) has it.
                }
                if let Some(file) = self.files.get_mut(&key) {
                    if file.path != path {
                        tracing::info!(from = %file.path.display(), to = %path.display(), "file renamed; following it");
                        self.metrics.forget_file(&file.path.display().to_string());
                        self.checkpoints.settle(file.position(), &path);
                        file.path = path;
                    }
                    if file.status != Status::Active {
                        file.status = Status::Active;
                    }
                } else {
                    match TailedFile::open(&path, source.clone(), &self.checkpoints) {
                        Ok(file) if file.key == key => {
                            tracing::info!(path = %path.display(), offset = file.position().offset, "tailing file");
                            self.files.insert(key, file);
                        }
                        Ok(_) => continue, // Replaced between stat and open: next round.
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot open file");
                            continue;
                        }
                    }
                }
            }
        }
        for (key, file) in &mut self.files {
            if !seen.contains(key) && file.status == Status::Active {
                let why = match file.nlink() {
                    Ok(0) => Leaving::Deleted,
                    _ => Leaving::OutOfGlob,
                };
                tracing::info!(path = %file.path.display(), ?why, "file left the globs; reading it to its end");
                file.status = Status::Finishing {
                    why,
                    idle_since: now,
                };
            }
        }
        self.by_path = self
            .files
            .iter()
            .map(|(key, f)| (f.path.clone(), *key))
            .collect();
        self.dirty.extend(self.files.keys().copied());
        self.metrics.files_open.set(self.files.len() as u64);
        self.forget_gone();
    }

    /// Drops the checkpoints of files not tailed any more that are gone from where they were
    /// last seen (deleted, or renamed again after they left the globs).
    fn forget_gone(&self) {
        let dropped = self.checkpoints.forget_gone(
            |key| self.files.contains_key(&key),
            |path, key| {
                fs::metadata(path).map_or_else(
                    // Only "not found" means gone; anything else keeps the checkpoint.
                    |e| e.kind() != io::ErrorKind::NotFound,
                    |m| m.dev() == key.dev && m.ino() == key.ino,
                )
            },
        );
        if dropped > 0 {
            tracing::debug!(dropped, "checkpoints of files that are gone dropped");
        }
    }

    /// A file-system event named `path`: read it if it is ours. Returns true when the event
    /// may mean a new, renamed or removed file (the caller then expands the globs).
    pub fn path_changed(&mut self, path: &Path, kind: &EventKind) -> bool {
        if let Some(key) = self.by_path.get(path) {
            self.dirty.insert(*key);
        }
        match kind {
            EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_)) => true,
            EventKind::Access(_) => false,
            _ => {
                !self.by_path.contains_key(path)
                    && self.sources.iter().any(|s| s.globs.matches(path))
            }
        }
    }

    /// Whether a round has work to do now (files to read, or an append to wait for).
    pub fn has_work(&self) -> bool {
        (!self.dirty.is_empty() && !self.paused()) || self.in_flight.is_some()
    }

    fn paused(&self) -> bool {
        self.paused_until.is_some_and(|t| Instant::now() < t)
    }

    /// When the next timed step is due (pause end, finishing files).
    pub fn next_wakeup(&self) -> Option<Duration> {
        let pause = self
            .paused_until
            .map(|t| t.saturating_duration_since(Instant::now()));
        let finishing = self
            .files
            .values()
            .any(|f| f.status != Status::Active)
            .then(|| self.options.finish_grace.min(Duration::from_secs(1)));
        match (pause, finishing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads every file with news once and starts the append of what was read (one append for
    /// all files). The append started by the previous round is waited for after the reading,
    /// so that the spool's fsync and the reading overlap; only then are its positions
    /// committed and this round's quarantine written. Returns true if an append was started.
    pub fn round(&mut self) -> bool {
        if self.paused() {
            self.settle();
            return false;
        }
        self.paused_until = None;
        let rules = Rules {
            max_record_bytes: usize::MAX,
            allow_custom_actions: true,
            now: chrono::Utc::now(),
            collector_entries: false,
        };
        let keys: Vec<FileKey> = std::mem::take(&mut self.dirty).into_iter().collect();
        let mut budget = self.options.round_bytes;
        let mut polled: Vec<(FileKey, Chunk)> = Vec::new();
        for key in keys {
            let Some(file) = self.files.get_mut(&key) else {
                continue;
            };
            if budget == 0 || (self.one_file_per_round && !polled.is_empty()) {
                self.dirty.insert(key);
                continue;
            }
            let before = file.size;
            let read = self.options.read_bytes.min(budget);
            let chunk = match file.poll(&rules, &mut self.parser, read) {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::warn!(path = %file.path.display(), error = %e, "cannot read file");
                    continue;
                }
            };
            if file.size != before {
                self.last_growth.insert(key, Instant::now());
            }
            budget = budget.saturating_sub(self.options.read_bytes);
            self.metrics.lines_read.inc_by(chunk.lines);
            if chunk.more {
                self.dirty.insert(key);
            }
            if chunk.position.is_some() || !chunk.quarantine.is_empty() {
                polled.push((key, chunk));
            } else {
                self.metrics
                    .set_file_lag(&file.path.display().to_string(), file.lag());
            }
        }
        if !self.settle() {
            // The previous append failed: what was read since is read again too, from the
            // committed positions.
            self.rewind(&polled);
            return false;
        }
        if polled.is_empty() {
            return false;
        }

        // Quarantine first: a line must never leave both the file's future and the quarantine.
        let quarantine: Vec<_> = polled
            .iter()
            .flat_map(|(_, c)| c.quarantine.iter().cloned())
            .collect();
        if let Err(e) = self.quarantine.write(&quarantine) {
            tracing::error!(error = %e, "cannot write the quarantine; pausing file intake");
            self.metrics.set_last_error(e.to_string());
            self.back_off(&polled, Duration::from_secs(1));
            return false;
        }
        let mut entries = Vec::with_capacity(polled.iter().map(|(_, c)| c.entries.len() + 1).sum());
        let mut records = 0;
        for (key, chunk) in &mut polled {
            if let Some(file) = self.files.get_mut(key) {
                file.quarantined(chunk);
            }
            records += chunk.entries.len() as u64;
            // Moved, not copied: should the append fail, the files are read again.
            entries.append(&mut chunk.entries);
            if let Some(p) = chunk.position {
                entries.push(SpoolEntry::FilePosition(p));
            }
        }
        self.in_flight = Some(InFlight {
            append: self.spool.submit(entries),
            polled,
            records,
        });
        true
    }

    /// Waits for the append in flight and commits the positions it made durable. False if it
    /// failed: its files are then read again from their committed positions, after a pause.
    pub fn settle(&mut self) -> bool {
        let Some(InFlight {
            append,
            polled,
            records,
        }) = self.in_flight.take()
        else {
            return true;
        };
        match append.wait() {
            Ok(_) => {
                self.one_file_per_round = false;
                Metrics::count(&self.metrics.records_spooled, "source", "file", records);
                for (key, chunk) in &polled {
                    if let Some(file) = self.files.get_mut(key) {
                        file.commit(chunk);
                        if let Some(p) = chunk.position {
                            self.checkpoints.advance(p);
                        }
                        self.metrics
                            .set_file_lag(&file.path.display().to_string(), file.lag());
                    }
                }
                self.metrics.spool_bytes.set(self.spool.stats().used_bytes);
                true
            }
            Err(SpoolError::Full { .. }) => {
                if self.metrics.spool_full_pauses.get() == 0 {
                    tracing::warn!("spool full; file intake paused until the collector catches up");
                }
                self.metrics.spool_full_pauses.inc();
                self.back_off(&polled, self.options.full_pause);
                false
            }
            Err(SpoolError::TooLarge { .. }) if polled.len() > 1 => {
                // Many files with long pending lines: smaller rounds fit.
                self.one_file_per_round = true;
                self.back_off(&polled, Duration::ZERO);
                false
            }
            Err(e) => {
                if matches!(e, SpoolError::DiskFull { .. } | SpoolError::Segment { .. }) {
                    // The spool's writer logs the first failure of a run; each is counted.
                    self.metrics
                        .write_failed("spool", e.is_disk_full(), e.to_string());
                } else {
                    tracing::error!(error = %e, "cannot append to the spool; pausing file intake");
                    self.metrics.set_last_error(e.to_string());
                }
                self.back_off(&polled, Duration::from_secs(1));
                false
            }
        }
    }

    fn back_off(&mut self, polled: &[(FileKey, Chunk)], pause: Duration) {
        self.rewind(polled);
        self.paused_until = Some(Instant::now() + pause);
    }

    /// Forgets what was read of these files after their committed positions; they are read
    /// again (their lag shows what waits).
    fn rewind(&mut self, polled: &[(FileKey, Chunk)]) {
        for (key, _) in polled {
            if let Some(file) = self.files.get_mut(key) {
                file.rewind();
                self.metrics
                    .set_file_lag(&file.path.display().to_string(), file.lag());
            }
            self.dirty.insert(*key);
        }
    }

    /// Releases files that left the globs once read to the end and idle for the grace period;
    /// marks the others for reading.
    pub fn finish(&mut self) {
        let now = Instant::now();
        // A file is released only once its last chunk is committed: the append in flight is
        // waited for, but only when some file is ready to go (waiting on every call would slow
        // the loop, and with it the discovery of new files, while files are finishing).
        if self.in_flight.is_some()
            && self
                .files
                .iter()
                .any(|(k, f)| self.releasable(k, f, now).is_some())
        {
            self.settle();
        }
        let grace = self.options.finish_grace;
        let poll_every = grace.min(Duration::from_secs(1));
        let poll = now.duration_since(self.last_finish_poll) >= poll_every;
        if poll {
            self.last_finish_poll = now;
        }
        let mut released = Vec::new();
        for (key, file) in &self.files {
            if file.status == Status::Active {
                continue;
            }
            match self.releasable(key, file, now) {
                Some(why) => released.push((*key, why)),
                None if poll => {
                    self.dirty.insert(*key);
                }
                None => {}
            }
        }
        for (key, why) in released {
            // Its unterminated last line is quarantined first; should that fail (a full disk),
            // the file is kept and released on a later call.
            if let Some(entry) = self.files.get(&key).and_then(TailedFile::unterminated)
                && let Err(e) = self.quarantine.write(&[entry])
            {
                tracing::error!(error = %e, "cannot write the quarantine; the file is released later");
                continue;
            }
            let Some(file) = self.files.remove(&key) else {
                continue;
            };
            match (why, file.current_path()) {
                // Renamed out of the globs and still there: its checkpoint follows it (should it
                // come back), until it is gone (see forget_gone).
                (Leaving::OutOfGlob, Some(now_at)) => {
                    self.checkpoints.settle(file.position(), &now_at);
                }
                _ => self.checkpoints.forget(key),
            }
            tracing::info!(path = %file.path.display(), ?why, "released file");
            self.by_path.remove(&file.path);
            self.last_growth.remove(&key);
            self.metrics.forget_file(&file.path.display().to_string());
        }
        self.metrics.files_open.set(self.files.len() as u64);
    }

    /// Why a finishing file may be released now: read to its end, nothing left to read, idle
    /// for the grace period.
    fn releasable(&self, key: &FileKey, file: &TailedFile, now: Instant) -> Option<Leaving> {
        let Status::Finishing { why, idle_since } = file.status else {
            return None;
        };
        let idle_since = self
            .last_growth
            .get(key)
            .map_or(idle_since, |g| (*g).max(idle_since));
        (file.at_end()
            && !self.dirty.contains(key)
            && now.duration_since(idle_since) >= self.options.finish_grace)
            .then_some(why)
    }

    /// Runs rounds until no file has anything left to read and the last append is committed
    /// (for tests and shutdown drains).
    pub fn drain(&mut self) {
        while self.has_work() {
            self.round();
        }
        self.settle();
    }

    /// Writes the checkpoint table (at shutdown and now and then).
    pub fn persist(&self) {
        if let Err(e) = self.checkpoints.persist() {
            // Still marked changed: written again at the next call.
            tracing::error!(error = %e, "cannot persist checkpoints");
            self.metrics
                .write_failed("checkpoints", e.is_disk_full(), e.to_string());
        }
    }

    /// Whether an append is on its way (for tests).
    #[cfg(test)]
    pub(crate) fn append_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Paths being tailed, for tests and status.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<_> = self.files.values().map(|f| f.path.clone()).collect();
        paths.sort();
        paths
    }
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// The file source's thread and watcher.
pub struct FileServer {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Starts watching and tailing in a thread of its own.
    pub fn start(mut tailer: FileTailer) -> Result<FileServer, FileSourceError> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = events.send(Msg::Fs(event));
        })?;
        let dirs: Vec<(PathBuf, bool)> = tailer
            .sources
            .iter()
            .flat_map(|s| s.globs.watch_dirs())
            .collect();
        let thread = std::thread::Builder::new()
            .name("file-source".into())
            .spawn(move || {
                let mut watched = HashSet::new();
                let mut watch_all = |watcher: &mut notify::RecommendedWatcher| {
                    for (dir, recursive) in &dirs {
                        if watched.contains(dir) {
                            continue;
                        }
                        let mode = if *recursive {
                            RecursiveMode::Recursive
                        } else {
                            RecursiveMode::NonRecursive
                        };
                        match watcher.watch(dir, mode) {
                            Ok(()) => {
                                watched.insert(dir.clone());
                            }
                            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory yet"),
                        }
                    }
                };
                watch_all(&mut watcher);
                tailer.discover();
                let mut next_rescan = Instant::now() + tailer.options.rescan_interval;
                let mut last_persist = Instant::now();
                loop {
                    let now = Instant::now();
                    let timeout = if tailer.has_work() {
                        Duration::ZERO
                    } else {
                        let rescan = next_rescan.saturating_duration_since(now);
                        tailer.next_wakeup().map_or(rescan, |w| w.min(rescan))
                    };
                    let mut rescan = false;
                    let mut stop = false;
                    let first = match rx.recv_timeout(timeout) {
                        Ok(msg) => Some(msg),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => Some(Msg::Stop),
                    };
                    for msg in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                        match msg {
                            Msg::Stop => stop = true,
                            Msg::Fs(Ok(event)) => {
                                if event.need_rescan() {
                                    rescan = true;
                                }
                                for path in &event.paths {
                                    rescan |= tailer.path_changed(path, &event.kind);
                                }
                            }
                            Msg::Fs(Err(e)) => {
                                tracing::warn!(error = %e, "file watcher error; rescanning");
                                rescan = true;
                            }
                        }
                    }
                    if stop {
                        break;
                    }
                    if rescan || Instant::now() >= next_rescan {
                        watch_all(&mut watcher);
                        tailer.discover();
                        next_rescan = Instant::now() + tailer.options.rescan_interval;
                    }
                    tailer.round();
                    tailer.finish();
                    if last_persist.elapsed() >= Duration::from_secs(1) {
                        tailer.persist();
                        last_persist = Instant::now();
                    }
                }
                tailer.settle();
                tailer.persist();
                drop(watcher);
            })
            .map_err(FileSourceError::Thread)?;
        Ok(FileServer {
            tx,
            thread: Some(thread),
        })
    }

    /// Stops reading after the round in progress (its records are spooled or not, never half),
    /// persists the checkpoints and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the file source thread panicked");
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
