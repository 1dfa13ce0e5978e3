//! The file source's loop: one thread that discovers files, reacts to file-system events,
//! reads every file with new data, and appends the records with the files' positions to the
//! spool in one fsynced step per round.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use codestax_common::Rules;
use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

use super::FileSettings;
use super::rediscovery::{self, Found, MTIME_SLACK, key_of};
use super::tailer::{Chunk, Leaving, Status, TailedFile};
use crate::checkpoint::{Checkpoint, CheckpointStore, FileKey};
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
    /// A checkpointed file looked for and not found is given up (and reported) when it is
    /// still not found at a later discovery at least this long after (a file renamed while
    /// its directory was listed can be missed once).
    pub lost_after: Duration,
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
            lost_after: Duration::from_secs(1),
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
    /// Discoveries so far.
    discoveries: u64,
    /// Checkpointed files looked for and not found: at which discovery and when first missed.
    missing: HashMap<FileKey, (u64, Instant)>,
    /// Look for files rotated out of the globs unseen at the next discovery (at start-up,
    /// after lost events, after a rename away from a watched name).
    look_for_rotated: bool,
    /// Files renamed away from a watched name to one the globs do not match, with their key
    /// then and their source: adopted at the next discovery unless tailed.
    renamed: Vec<(PathBuf, FileKey, Arc<FileSettings>)>,
    /// The last write of the checkpoint table failed: later failures are counted, not logged
    /// again (it is retried every second while a disk is full).
    persist_failing: std::cell::Cell<bool>,
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
            discoveries: 0,
            missing: HashMap::new(),
            look_for_rotated: true,
            renamed: Vec::new(),
            persist_failing: std::cell::Cell::new(false),
        }
    }

    /// Expands every glob: opens new files, follows renames, and starts finishing files that
    /// left the globs. Then finds again the files that moved while not tailed (see
    /// `Self::find_elsewhere`, `Self::adopt_rotated`, [`Self::renamed`]). Every file is
    /// polled afterwards (the safety net for missed events).
    pub fn discover(&mut self) {
        let started = SystemTime::now();
        // Files modified since the last look at every watched name that have no checkpoint
        // were never seen (taken before this discovery moves it).
        let since = self.checkpoints.seen_at();
        self.discoveries += 1;
        let now = Instant::now();
        let mut changed = false;
        let mut seen = HashSet::new();
        for source in &self.sources {
            for path in source.globs.expand() {
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                let key = key_of(&meta);
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
                            changed = true;
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
        changed |= self.adopt_renamed();
        changed |= self.find_elsewhere(now);
        if std::mem::take(&mut self.look_for_rotated)
            && let Some(since) = since
        {
            changed |= self.adopt_rotated(since);
        }
        self.by_path = self
            .files
            .iter()
            .map(|(key, f)| (f.path.clone(), *key))
            .collect();
        self.dirty.extend(self.files.keys().copied());
        self.metrics.files_open.set(self.files.len() as u64);
        // Every file under a watched name when this discovery started is in the table now.
        self.checkpoints.mark_seen(started);
        if changed {
            // New files (and files given up) are in the table on disk before any of their
            // records is spooled: should they go while the agent is down, what was not read of
            // them is known.
            self.persist();
        }
    }

    /// The source a file found outside the globs belongs to: the one whose globs match where
    /// it was, else the one that watches where it is now.
    fn source_of(&self, was: Option<&Path>, now_at: &Path) -> Arc<FileSettings> {
        was.and_then(|was| self.sources.iter().find(|s| s.globs.matches(was)))
            .or_else(|| {
                self.sources.iter().find(|s| {
                    s.globs
                        .watch_dirs()
                        .iter()
                        .any(|(dir, _)| now_at.starts_with(dir))
                })
            })
            .unwrap_or(&self.sources[0])
            .clone()
    }

    /// Opens a file found outside the globs to read it to its end (from its checkpoint, or from
    /// its start) and let it go, like a file renamed out of the globs while tailed.
    fn adopt(&mut self, path: &Path, settings: Arc<FileSettings>, why: &str) -> bool {
        match TailedFile::open(path, settings, &self.checkpoints) {
            Ok(mut file) => {
                if self.files.contains_key(&file.key) {
                    return false;
                }
                tracing::info!(path = %path.display(), offset = file.position().offset, "{why}; reading it to its end");
                file.status = Status::Finishing {
                    why: Leaving::OutOfGlob,
                    idle_since: Instant::now(),
                };
                self.files.insert(file.key, file);
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "{why}, but it cannot be opened");
                false
            }
        }
    }

    /// Checkpointed files that are not tailed and not where they were last seen (renamed while
    /// the agent was down, or shifted by a rotation after they were released) are looked for by
    /// key in their own directories and in the watched ones. One found with the first bytes and
    /// the bytes before the offset of its checkpoint is read from there to its end (so is one
    /// where it was last seen, out of the globs, that was not read to its end: adopted, and the
    /// agent killed before it was done); one not found (or another file under its inode) is
    /// gone: reported if it was not read to its end, and forgotten. Costs a walk of those
    /// directories per discovery while such checkpoints exist; none otherwise.
    fn find_elsewhere(&mut self, now: Instant) -> bool {
        let mut here: Vec<(Checkpoint, PathBuf)> = Vec::new();
        let mut lost: Vec<Checkpoint> = Vec::new();
        for checkpoint in self
            .checkpoints
            .untailed(|key| self.files.contains_key(&key))
        {
            let key = checkpoint.position.key;
            let at_path = checkpoint.path.as_deref().is_some_and(|path| {
                fs::metadata(path).map_or_else(
                    // Only "not found" means gone; anything else keeps the checkpoint.
                    |e| e.kind() != io::ErrorKind::NotFound,
                    |m| key_of(&m) == key,
                )
            });
            match (at_path, checkpoint.path.clone()) {
                (true, _) if checkpoint.finished => {}
                (true, Some(path)) => here.push((checkpoint, path)),
                _ => lost.push(checkpoint),
            }
        }
        self.missing
            .retain(|key, _| lost.iter().any(|c| c.position.key == *key));
        let mut found: HashMap<FileKey, PathBuf> = HashMap::new();
        if !lost.is_empty() {
            let mut dirs = self.watched_dirs();
            for c in &lost {
                if let Some(dir) = c.path.as_deref().and_then(Path::parent) {
                    add_dir(&mut dirs, dir.to_path_buf(), Some(0));
                }
            }
            let keys: HashSet<FileKey> = lost.iter().map(|c| c.position.key).collect();
            found = rediscovery::locate(&keys, &dirs);
        }
        let mut changed = false;
        let candidates = here
            .into_iter()
            .map(|(c, path)| (c, Some(path), true))
            .chain(lost.into_iter().map(|c| {
                let path = found.get(&c.position.key).cloned();
                (c, path, false)
            }));
        for (checkpoint, path, in_place) in candidates {
            let key = checkpoint.position.key;
            let outcome = path.map(|path| {
                let found = rediscovery::compare(&path, &checkpoint.position);
                (path, found)
            });
            let handled = match outcome {
                Some((path, Ok(Found::Same { size }))) => {
                    if checkpoint.finished && checkpoint.size.is_some_and(|s| size <= s) {
                        // Read and released before; only renamed since (a rotation shifting
                        // the older files).
                        tracing::debug!(path = %path.display(), "released file renamed; following it");
                        self.checkpoints.settle(checkpoint.position, &path);
                        true
                    } else {
                        let source = self.source_of(checkpoint.path.as_deref(), &path);
                        let why = if in_place {
                            "file out of the globs not read to its end before the agent stopped"
                        } else {
                            "file found again after it moved while not tailed"
                        };
                        // One that cannot be opened is given up like one not found.
                        self.adopt(&path, source, why) || self.files.contains_key(&key)
                    }
                }
                Some((_, Ok(Found::Other))) => {
                    self.gone(&checkpoint, "its inode now holds another file");
                    true
                }
                Some((_, Ok(Found::Moved) | Err(_))) | None => false,
            };
            if handled {
                self.missing.remove(&key);
                changed = true;
                continue;
            }
            let (at, since) = *self.missing.entry(key).or_insert((self.discoveries, now));
            if at < self.discoveries && now.duration_since(since) >= self.options.lost_after {
                self.gone(
                    &checkpoint,
                    "deleted, moved out of the watched directories, compressed, or unreadable",
                );
                changed = true;
            }
        }
        changed
    }

    /// A checkpointed file is gone: what of it was not read (from its checkpoint to the size
    /// it was last read at) is reported once, as a warning and in the lost counters, and the
    /// checkpoint is forgotten. A file read to its end is not a loss.
    fn gone(&mut self, checkpoint: &Checkpoint, why: &str) {
        let key = checkpoint.position.key;
        self.missing.remove(&key);
        self.checkpoints.forget(key);
        let name = checkpoint.path.as_ref().map_or_else(
            || format!("(inode {} of device {}, path unknown)", key.ino, key.dev),
            |p| p.display().to_string(),
        );
        let from = checkpoint.position.offset;
        match checkpoint.size {
            Some(to) if to > from => {
                tracing::warn!(
                    file = %name,
                    from,
                    to,
                    bytes = to - from,
                    "file gone before it was read to its end ({why}): bytes {from} to {to} of it were not read and are lost"
                );
                self.metrics.files_lost.inc();
                self.metrics.file_bytes_lost.inc_by(to - from);
            }
            Some(_) => {
                tracing::debug!(file = %name, "file gone after it was read to its end")
            }
            // Positions read back from the spool of a file released since, or a table written
            // before sizes were kept.
            None if checkpoint.path.is_none() => {}
            None => tracing::info!(
                file = %name,
                offset = from,
                "file gone ({why}); read up to the offset, its size then is not known"
            ),
        }
    }

    /// Files renamed away from a watched name (see [`Self::renamed`]) that are not tailed:
    /// created and renamed between two discoveries, the agent never opened them. They are
    /// read from their checkpoint, or from their start, to their end.
    fn adopt_renamed(&mut self) -> bool {
        let mut changed = false;
        for (path, key, settings) in std::mem::take(&mut self.renamed) {
            if self.files.contains_key(&key)
                || !fs::metadata(&path).is_ok_and(|m| key_of(&m) == key)
            {
                continue; // Tailed, or renamed again since (then found as rotated).
            }
            changed |= self.adopt(
                &path,
                settings,
                "file renamed out of the globs before it was read",
            );
        }
        changed
    }

    /// Files rotated out of the globs that the agent never saw (created, written and rotated
    /// while it was down, or while events were lost): regular files in the watched
    /// directories named after a name the globs match (`app.jsonl.1`, `app.jsonl-20261203` for
    /// `*.jsonl`), that the globs do not match, that no checkpoint knows, that are not
    /// compressed, and that were modified at or after `since` (the agent's last look at every
    /// watched name: a file under one then has a checkpoint, so older archives are not taken).
    /// Each is read from its start to its end; should it be one read before after all, its
    /// lines keep their ids (derived ids are deterministic) and the collector drops them as
    /// replays.
    fn adopt_rotated(&mut self, since: SystemTime) -> bool {
        let since = since.checked_sub(MTIME_SLACK).unwrap_or(since);
        let watched = |path: &Path| self.sources.iter().any(|s| s.globs.matches(path));
        let candidates = rediscovery::rotated_from(&self.watched_dirs(), &watched, since);
        let mut changed = false;
        for rotated in candidates {
            if self.files.contains_key(&rotated.key)
                || self.checkpoints.knows(rotated.key)
                || self.sources.iter().any(|s| s.globs.matches(&rotated.path))
            {
                continue;
            }
            match rediscovery::compressed(&rotated.path) {
                Ok(false) => {}
                Ok(true) => {
                    tracing::debug!(path = %rotated.path.display(), "rotated file is compressed; not read");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path = %rotated.path.display(), error = %e, "cannot read a rotated file");
                    continue;
                }
            }
            let settings = self.source_of(Some(&rotated.base), &rotated.path);
            changed |= self.adopt(
                &rotated.path,
                settings,
                "file rotated out of the globs while the agent was not watching",
            );
        }
        changed
    }

    /// The directories the sources watch, with how deep to walk them (`None`: all the way).
    fn watched_dirs(&self) -> Vec<(PathBuf, Option<usize>)> {
        let mut dirs: Vec<(PathBuf, Option<usize>)> = Vec::new();
        for (dir, recursive) in self.sources.iter().flat_map(|s| s.globs.watch_dirs()) {
            let depth = if recursive { None } else { Some(0) };
            add_dir(&mut dirs, dir, depth);
        }
        dirs
    }

    /// A file was renamed from `from` to `to` (a file-system event). Renamed away from a
    /// watched name to one the globs do not match (an excluded one too: bytes written under a
    /// watched name are never dropped), a file not tailed is adopted at the next discovery, and
    /// files rotated out of the globs are looked for there.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        let Some(source) = self.sources.iter().find(|s| s.globs.matches(from)) else {
            return;
        };
        if self.sources.iter().any(|s| s.globs.matches(to)) {
            return; // Followed by the discovery.
        }
        if let Ok(meta) = fs::metadata(to)
            && meta.is_file()
        {
            self.renamed
                .push((to.to_path_buf(), key_of(&meta), source.clone()));
        }
        self.look_for_rotated = true;
    }

    /// File-system events were lost (the watcher's queue overflowed, or it failed): files
    /// rotated out of the globs meanwhile are looked for at the next discovery.
    pub fn events_lost(&mut self) {
        self.look_for_rotated = true;
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
                self.checkpoints.observe_size(key, file.size);
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
        let mut released: Vec<(FileKey, Leaving)> = Vec::new();
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
        let mut any_released = false;
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
                // come back, or be renamed again), until it is gone (see find_elsewhere).
                (Leaving::OutOfGlob, Some(now_at)) => {
                    self.checkpoints
                        .finished(file.position(), &now_at, file.size);
                }
                _ => self.checkpoints.forget(key),
            }
            tracing::info!(path = %file.path.display(), ?why, "released file");
            self.by_path.remove(&file.path);
            self.last_growth.remove(&key);
            self.metrics.forget_file(&file.path.display().to_string());
            any_released = true;
        }
        self.metrics.files_open.set(self.files.len() as u64);
        if any_released {
            // Written now: a released file deleted while the agent is down is no loss.
            self.persist();
        }
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
        match self.checkpoints.persist() {
            Ok(()) => {
                if self.persist_failing.replace(false) {
                    tracing::info!("checkpoints persisted again");
                }
            }
            Err(e) => {
                // Still marked changed: written again at the next call.
                if !self.persist_failing.replace(true) {
                    tracing::error!(error = %e, "cannot persist checkpoints; retrying (failures are counted in disk_write_errors_total)");
                }
                self.metrics
                    .write_failed("checkpoints", e.is_disk_full(), e.to_string());
            }
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

/// Adds a directory to walk, once, at the greater of the depths asked.
fn add_dir(dirs: &mut Vec<(PathBuf, Option<usize>)>, dir: PathBuf, depth: Option<usize>) {
    match dirs.iter_mut().find(|(d, _)| *d == dir) {
        Some((_, d)) => {
            *d = match (*d, depth) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            }
        }
        None => dirs.push((dir, depth)),
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
                                    tailer.events_lost();
                                    rescan = true;
                                }
                                if let (
                                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                                    [from, to],
                                ) = (&event.kind, event.paths.as_slice())
                                {
                                    tailer.renamed(from, to);
                                }
                                for path in &event.paths {
                                    rescan |= tailer.path_changed(path, &event.kind);
                                }
                            }
                            Msg::Fs(Err(e)) => {
                                tracing::warn!(error = %e, "file watcher error; rescanning");
                                tailer.events_lost();
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
