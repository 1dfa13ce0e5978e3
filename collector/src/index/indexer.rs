//! [`Indexer`]: the single writer. Adds records to their time partition, commits, and records how
//! far in the write-ahead log the index is.

use super::error::IndexError;
use super::flight::{
    Closers, Flight, Load, close_in_background, operations, parse_staged, worker_error,
};
use super::options::MIN_MEMORY_PER_THREAD;
use super::partition::Partition;
use super::schema::Fields;
use super::scheme::PartitionKey;
use super::shared::Shared;
use super::stage::ColdStage;
use super::state::{IndexState, sync_dir, write_state};
use chrono::{DateTime, Utc};
use codestax_common::AuditRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tantivy::collector::Count;
use tantivy::index::SegmentId;
use tantivy::indexer::{IndexWriterOptions, NoMergePolicy};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{IndexWriter, Term};

/// A partition writer merges once this many segments of a size are there (tantivy's default is
/// 8). Every commit adds a segment per indexing thread (~6k records each in a bulk load at
/// ~35k/s), and each merge pass rewrites every record: with 16, a 1M-record import merges each
/// record once instead of twice (BENCHMARKS.md, session 17). A merge of 16 needs twice the free
/// disk of one of 8 while it runs: merges are weighed against the room the disk keeps free
/// (`merges.rs`); without that, a collector filling its own disk saw the index fail first.
pub(crate) const MERGE_MIN_SEGMENTS: usize = 16;

/// A past partition gets a writer of its own when it holds most of the stage and at least this
/// fraction of `cold_stage_bytes` ([`Indexer::promote_busiest`]): 1/8 of the default 64 MiB is
/// ~15k records, a partition taking thousands of records a second, not a trickle.
const PROMOTE_MIN_SHARE: usize = 8;

/// A quiet past partition is compacted into one segment ([`Indexer::compact_quiet`]) when it
/// holds at most this many records; larger ones are left to the writers' merge policy. A merge
/// of this size takes a few seconds on one thread, and a writer reopening the partition
/// meanwhile waits for it.
const COMPACT_MAX_DOCS: u64 = 262_144;

/// What [`Indexer::delete_older_than`] did to one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purge {
    /// Records deleted, per org (only orgs that had some).
    pub deleted: BTreeMap<String, u64>,
    /// Records left in the partition. When none are, the partition's directory is deleted.
    pub docs_left: u64,
    /// Bytes of the partition's files before and after (0 once deleted).
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The partition was left empty and deleted.
    pub removed: bool,
}

/// A writer that received no records for this long is closed (its merges finish first, on a
/// thread of their own). Not shorter: reopening a partition whose closed writer still merges
/// waits for that merge.
const IDLE_WRITER_CLOSE: Duration = Duration::from_secs(60);

/// A partition's open writer.
struct OpenWriter {
    partition: Arc<Partition>,
    writer: IndexWriter,
    /// Received records since its last commit.
    dirty: bool,
    /// For picking the least recently used writer to close.
    last_used: u64,
    /// When it last received records.
    last_added: Instant,
}

/// What adding records does when the stage and the flight in the air together pass the cold
/// budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    /// Waits for the flight to land.
    Wait,
    /// Returns: the caller holds back further records ([`Indexer::cold_stage_full`]).
    Defer,
}

/// The index's one writer. Owned by a single (blocking) task; records become searchable when
/// [`Indexer::commit`] returns. Records added but not committed are lost when it is dropped or the
/// process dies: they are still in the write-ahead log, after [`AuditIndex::indexed_through`].
///
/// [`AuditIndex::indexed_through`]: super::AuditIndex::indexed_through
pub struct Indexer {
    shared: Arc<Shared>,
    /// Open writers by partition start.
    writers: HashMap<i64, OpenWriter>,
    /// As persisted in the state file.
    state: IndexState,
    /// Highest LSN added since open (staged ones included).
    max_added: Option<u64>,
    /// Highest LSN handed to a writer since open: a commit makes records up to it searchable.
    max_written: Option<u64>,
    /// Records of past partitions waiting for a bulk flush ([`ColdStage`]).
    stage: ColdStage,
    /// Staged records being indexed on threads of their own, at most one flight at a time.
    flight: Option<Flight>,
    /// A flush committed records since the last [`Indexer::commit`].
    flushed: bool,
    /// Records up to this LSN may already be committed: one that is (found by org and id in its
    /// partition) is not added again.
    replay_through: Option<u64>,
    /// Partitions committed since the last [`Indexer::commit`] whose readers need a reload.
    committed: BTreeSet<i64>,
    clock: u64,
    /// Writers being closed, by partition start: each thread lets its writer's merges finish
    /// (dropping a tantivy writer throws away the merges under way, and leaves their output on
    /// disk until that partition's next commit), then makes the merged segments searchable.
    closing: HashMap<i64, JoinHandle<()>>,
    /// Past partitions a flight or a closed writer left, maybe with a segment per flush: each is
    /// compacted once the index is quiet ([`Self::compact_quiet`]).
    unsettled: BTreeSet<i64>,
}

impl Indexer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        state: IndexState,
        replay_through: Option<u64>,
    ) -> Indexer {
        Indexer {
            shared,
            writers: HashMap::new(),
            state,
            max_added: None,
            max_written: None,
            stage: ColdStage::default(),
            flight: None,
            flushed: false,
            replay_through,
            committed: BTreeSet::new(),
            clock: 0,
            closing: HashMap::new(),
            unsettled: BTreeSet::new(),
        }
    }

    /// Adds a record read from the write-ahead log at `lsn`. LSNs must grow in the order records
    /// are added (replays after a restart may repeat those after [`Self::indexed_through`]).
    ///
    /// The caller dedupes by (org, id); in addition, a record at an LSN that may already be
    /// committed (a replay after a crash) is not added again if that earlier copy is there.
    pub fn add(&mut self, lsn: u64, record: &AuditRecord) -> Result<(), IndexError> {
        let key = self.shared.opts.partition.key_for(record.time);
        self.to_tail(std::iter::once((lsn, record, None)));
        self.add_to_partition(&key, std::iter::once((lsn, record, None)))
    }

    /// Hands the records of followed orgs to the tail, in LSN order (a record's canonical JSON
    /// is made only for those, when not given).
    fn to_tail<'a>(&self, records: impl Iterator<Item = (u64, &'a AuditRecord, Option<&'a str>)>) {
        if !self.shared.tail.any_followed() {
            return;
        }
        self.shared.tail.add(records.map(|(lsn, r, stored)| {
            let held = move || {
                let json = match stored {
                    Some(s) => std::borrow::Cow::Borrowed(s.as_bytes()),
                    None => std::borrow::Cow::Owned(r.canonical_json().into_bytes()),
                };
                // As the stored JSON has them: to the microsecond.
                use codestax_common::time::truncate_to_micros;
                let head = super::tail::TailHead {
                    id: r.id.as_deref().map(std::sync::Arc::from),
                    time: truncate_to_micros(r.time),
                    received_at: r.received_at.map(truncate_to_micros),
                };
                (json, head)
            };
            (lsn, r.org_id.as_str(), r.seq, held)
        }));
    }

    /// Adds a batch of records, as [`Self::add`] each.
    pub fn add_batch(&mut self, records: &[(u64, AuditRecord)]) -> Result<(), IndexError> {
        self.add_stored(records, None)
    }

    /// Adds a batch of records, as [`Self::add`] each; `stored`, when given, holds each record's
    /// canonical JSON (the write-ahead log's payload), so it is not written again.
    ///
    /// Goes partition by partition (in LSN order within each), handing each partition's records
    /// to its writer as one operation batch: a batch that spans more partitions than there are
    /// open writers switches writers once per partition, and tantivy's indexing thread is woken
    /// once per partition rather than once per record.
    ///
    /// Waits for the flight in the air when the stage and it together pass `cold_stage_bytes`
    /// (see [`Self::add_stored_no_wait`] for a caller that keeps committing meanwhile).
    pub fn add_stored(
        &mut self,
        records: &[(u64, AuditRecord)],
        stored: Option<&[String]>,
    ) -> Result<(), IndexError> {
        self.add_stored_then(records, stored, Budget::Wait)
    }

    /// As [`Self::add_stored`], but never waits for a flight: the stage may pass its budget by
    /// this batch. The caller adds no more while [`Self::cold_stage_full`] and calls
    /// [`Self::commit_due`] once [`Self::flight_landable`], committing this week's records on its
    /// schedule meanwhile (a wait inside the add held them, and every record queued behind it,
    /// unsearchable for the length of a flight: BENCHMARKS.md, session 15).
    pub fn add_stored_no_wait(
        &mut self,
        records: &[(u64, AuditRecord)],
        stored: Option<&[String]>,
    ) -> Result<(), IndexError> {
        self.add_stored_then(records, stored, Budget::Defer)
    }

    fn add_stored_then(
        &mut self,
        records: &[(u64, AuditRecord)],
        stored: Option<&[String]>,
        budget: Budget,
    ) -> Result<(), IndexError> {
        if let Some(stored) = stored
            && stored.len() != records.len()
        {
            return Err(IndexError::InvalidRecord(format!(
                "{} records but {} stored forms",
                records.len(),
                stored.len()
            )));
        }
        self.to_tail(
            records
                .iter()
                .enumerate()
                .map(|(i, (lsn, r))| (*lsn, r, stored.map(|s| s[i].as_str()))),
        );
        let scheme = self.shared.opts.partition;
        let mut order: Vec<(i64, usize)> = records
            .iter()
            .enumerate()
            .map(|(i, (_, r))| (scheme.key_for(r.time).start, i))
            .collect();
        // Stable: LSN order is kept within a partition.
        order.sort_by_key(|&(start, _)| start);
        let hot = self.hot_start();
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let key = scheme.key_for(records[run[0].1].1.time);
            let items = run.iter().map(|&(_, i)| {
                let (lsn, record) = &records[i];
                (*lsn, record, stored.map(|s| s[i].as_str()))
            });
            if self.stages(&key, hot) {
                for (lsn, record, stored) in items {
                    let json = stored.map_or_else(|| record.canonical_json(), str::to_owned);
                    self.stage.push(&key, lsn, json);
                    self.max_added = self.max_added.max(Some(lsn));
                }
            } else {
                self.add_to_partition(&key, items)?;
            }
        }
        self.schedule_flushes(budget)
    }

    /// The start of the partition records of now fall in: it and later ones are hot.
    fn hot_start(&self) -> i64 {
        self.shared.opts.partition.key_for(Utc::now()).start
    }

    /// Whether records of partition `key` are staged rather than handed to its writer: those of
    /// a past partition without an open writer (the previous week's stays open a while after the
    /// week turns, and a busy past week gets one: [`Self::promote_busiest`]), and of one already
    /// staged, so a partition's records are never split between the two paths.
    fn stages(&self, key: &PartitionKey, hot: i64) -> bool {
        self.shared.opts.cold_stage_bytes > 0
            && (self.stage.contains(key.start)
                || (key.start < hot && !self.writers.contains_key(&key.start)))
    }

    /// Lands a flight that has ended; starts one when none is in the air and the stage is half
    /// full or a partition's first record waited `cold_flush_after`; and, with [`Budget::Wait`],
    /// keeps the stage and the flight together within the budget, waiting for the flight when
    /// they would not be. The flight takes every staged partition: while it indexes them, the
    /// stage fills again (the budget's other half), and this week's commits go on.
    fn schedule_flushes(&mut self, budget_rule: Budget) -> Result<(), IndexError> {
        if self.flight.as_ref().is_some_and(Flight::is_finished) {
            self.land()?;
        }
        if self.stage.is_empty() {
            return Ok(());
        }
        let (budget, wait) = (
            self.shared.opts.cold_stage_bytes,
            self.shared.opts.cold_flush_after,
        );
        let waits = budget_rule == Budget::Wait;
        if waits && self.cold_stage_full() {
            self.land()?;
        }
        let due = self.stage.bytes() >= budget / 2 || self.stage.waited(wait);
        if self.flight.is_none() && due {
            self.promote_busiest()?;
            self.launch(self.stage.starts())?;
            if waits && self.cold_stage_full() {
                // One batch took the stage past the budget: no room for another flight's worth.
                self.land()?;
            }
        }
        Ok(())
    }

    /// Gives the stage's busiest past partition a writer of its own, long-lived like this week's,
    /// when it holds most of what is staged and at least [`PROMOTE_MIN_SHARE`] of the budget:
    /// history brought in arrives mostly in time order, one past week after another, and a
    /// flight per stage-full costs that week a writer opened, committed and closed each time,
    /// its records parsed twice and small segments to merge (BENCHMARKS.md, session 22). Its
    /// records then skip the stage ([`Self::stages`]). Another past writer gives way, never this
    /// week's; with one writer slot there is nothing to give.
    fn promote_busiest(&mut self) -> Result<(), IndexError> {
        let Some((key, bytes)) = self.stage.largest() else {
            return Ok(());
        };
        let min = self.shared.opts.cold_stage_bytes / PROMOTE_MIN_SHARE;
        if bytes * 2 < self.stage.bytes() || bytes < min || self.shared.opts.max_open_writers < 2 {
            return Ok(());
        }
        let key = key.clone();
        if self.writers.len() >= self.shared.opts.max_open_writers {
            let hot = self.hot_start();
            let Some(past) = self
                .writers
                .iter()
                .filter(|(start, _)| **start < hot)
                .min_by_key(|(_, w)| w.last_used)
                .map(|(start, _)| *start)
            else {
                return Ok(());
            };
            self.commit_and_close(past)?;
        }
        self.writer_for(&key)?;
        tracing::debug!(
            partition = key.name(),
            "past partition promoted to a writer"
        );
        Ok(())
    }

    /// Whether a flight is in the air and it and the stage together pass `cold_stage_bytes`:
    /// records of past weeks added now would take memory beyond the budget, so a caller of
    /// [`Self::add_stored_no_wait`] adds none until the flight has landed.
    pub fn cold_stage_full(&self) -> bool {
        self.flight.is_some() && self.staged().1 > self.shared.opts.cold_stage_bytes
    }

    /// Whether the flight in the air has ended: [`Self::commit_due`] lands it (and starts the
    /// next) without waiting.
    pub fn flight_landable(&self) -> bool {
        self.flight.as_ref().is_some_and(Flight::is_finished)
    }

    /// Starts a flight of the staged records of partitions `starts` (no flight may be in the air).
    /// Those of a partition whose writer is open go to that writer instead (committed with the
    /// others).
    fn launch(&mut self, starts: Vec<i64>) -> Result<(), IndexError> {
        debug_assert!(self.flight.is_none());
        let mut loads = Vec::with_capacity(starts.len());
        for start in starts {
            let Some(staged) = self.stage.take(start) else {
                continue;
            };
            if self.writers.contains_key(&start) {
                let records = staged
                    .records
                    .iter()
                    .map(parse_staged)
                    .collect::<Result<Vec<_>, _>>()?;
                let items = staged
                    .records
                    .iter()
                    .zip(&records)
                    .map(|(r, record)| (r.lsn, record, Some(r.stored.as_str())));
                self.add_to_partition(&staged.key, items)?;
                continue;
            }
            loads.push(Load {
                partition: self.partition(&staged.key)?,
                staged,
                closing: self.closing.remove(&start),
            });
        }
        if loads.is_empty() {
            return Ok(());
        }
        // The flight commits records above `indexed_through`.
        self.persist_pending()?;
        self.flight = Some(Flight::start(
            self.shared.clone(),
            self.replay_through,
            loads,
            self.shared.opts.cold_flush_threads,
        )?);
        Ok(())
    }

    /// Waits for the flight in the air, if any, to end: its records are searchable then, and
    /// `indexed_through` may pass them at the next commit.
    fn land(&mut self) -> Result<(), IndexError> {
        let Some(flight) = self.flight.take() else {
            return Ok(());
        };
        let max_lsn = flight.max_lsn;
        let closers = flight.land(&self.shared.dir)?;
        self.keep_closers(closers);
        self.max_written = self.max_written.max(Some(max_lsn));
        self.flushed = true;
        Ok(())
    }

    fn keep_closers(&mut self, closers: Closers) {
        for (start, closer) in closers {
            self.unsettled.insert(start);
            if let Some(closer) = closer {
                self.closing.insert(start, closer);
            }
        }
    }

    /// Indexes the staged records of partition `start` and makes them searchable, before this
    /// returns.
    fn flush_staged(&mut self, start: i64) -> Result<(), IndexError> {
        self.land()?;
        self.launch(vec![start])?;
        self.land()
    }

    fn add_to_partition<'a>(
        &mut self,
        key: &PartitionKey,
        items: impl Iterator<Item = (u64, &'a AuditRecord, Option<&'a str>)>,
    ) -> Result<(), IndexError> {
        let partition = self.writer_for(key)?.partition.clone();
        let mut max = None;
        let ops = operations(
            &self.shared,
            self.replay_through,
            &partition,
            items.inspect(|(lsn, _, _)| max = max.max(Some(*lsn))),
        )?;
        let w = self.writers.get_mut(&key.start).expect("opened above");
        if let Err(e) = w.writer.run(ops) {
            let dir = w.partition.dir.clone();
            let cause = self
                .writers
                .remove(&key.start)
                .and_then(|w| worker_error(w.writer))
                .unwrap_or(e);
            return Err(IndexError::tantivy(dir, "add records", cause));
        }
        w.dirty = true;
        w.last_added = Instant::now();
        self.max_added = self.max_added.max(max);
        self.max_written = self.max_written.max(max);
        Ok(())
    }

    /// Commits every partition that received records, staged ones included, makes them
    /// searchable, then persists the highest LSN added as [`Self::indexed_through`], which it
    /// returns. Writers that received nothing for `IDLE_WRITER_CLOSE` are closed.
    pub fn commit(&mut self) -> Result<Option<u64>, IndexError> {
        self.land()?;
        self.launch(self.stage.starts())?;
        self.land()?;
        self.commit_writers()
    }

    /// As [`Self::commit`], but staged records are flushed only where due (see
    /// `Self::schedule_flushes`), on threads of their own: [`Self::indexed_through`] stays
    /// below the lowest LSN staged or in flight, so a replay after a crash adds those again.
    pub fn commit_due(&mut self) -> Result<Option<u64>, IndexError> {
        self.schedule_flushes(Budget::Defer)?;
        self.commit_writers()
    }

    /// Whether records are staged or in flight (a commit is due later even if nothing else is
    /// added).
    pub fn has_staged(&self) -> bool {
        !self.stage.is_empty() || self.flight.is_some()
    }

    /// The lowest LSN staged or in flight: `indexed_through` stays below it.
    pub(crate) fn staged_min_lsn(&self) -> Option<u64> {
        let flying = self.flight.as_ref().map(|f| f.min_lsn);
        match (self.stage.min_lsn(), flying) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records staged for past partitions or in flight, and the bytes they are counted for.
    pub fn staged(&self) -> (usize, usize) {
        let (records, bytes) = self
            .flight
            .as_ref()
            .map_or((0, 0), |f| (f.records, f.bytes));
        (self.stage.len() + records, self.stage.bytes() + bytes)
    }

    fn commit_writers(&mut self) -> Result<Option<u64>, IndexError> {
        let dirty: Vec<i64> = self
            .writers
            .iter()
            .filter(|(_, w)| w.dirty)
            .map(|(k, _)| *k)
            .collect();
        if !dirty.is_empty() || self.flushed {
            self.persist_pending()?;
        }
        for key in &dirty {
            let w = self.writers.get_mut(key).expect("listed above");
            w.writer
                .commit()
                .map_err(|e| IndexError::tantivy(&w.partition.dir, "commit", e))?;
            w.dirty = false;
            self.committed.insert(*key);
        }
        self.close_idle_writers();
        let partitions = self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for key in std::mem::take(&mut self.committed) {
            if let Some(p) = partitions.get(&key) {
                p.reload()?;
            }
        }
        let through = match self.staged_min_lsn() {
            // Every LSN below the lowest staged one is committed or deduped away.
            Some(staged) => self
                .state
                .indexed_through
                .max(self.max_added.min(staged.checked_sub(1))),
            None => self.state.indexed_through.max(self.max_added),
        };
        if through != self.state.indexed_through || self.state.pending_through.is_some() {
            let mut next = self.state.clone();
            next.indexed_through = through;
            next.pending_through = next.pending_through.filter(|p| Some(*p) > through);
            write_state(&self.shared.dir, &next)?;
            self.state = next;
        }
        {
            let mut marks = self.shared.marks.write().unwrap_or_else(|e| e.into_inner());
            marks.indexed_through = through;
            // Records committed above a staged LSN are searchable now: a walk starting now
            // includes them (a staged record with a lower LSN joins walks begun before its
            // flush).
            marks.snapshot_through = marks.snapshot_through.max(through).max(self.max_written);
        }
        if !dirty.is_empty() || std::mem::take(&mut self.flushed) {
            self.shared.commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(through)
    }

    /// For when nothing was added since the last commit: makes the segments that background
    /// merges finished since searchable (they would wait for the partition's next commit, holding
    /// the merged-away files on disk meanwhile), closes writers idle for `IDLE_WRITER_CLOSE`,
    /// and compacts one quiet past partition (`Self::compact_quiet`).
    pub fn refresh(&mut self) -> Result<(), IndexError> {
        for w in self.writers.values() {
            w.partition.reload_if_merged()?;
        }
        self.close_idle_writers();
        self.compact_quiet();
        Ok(())
    }

    /// Closes the clean writers that received no records for [`IDLE_WRITER_CLOSE`].
    fn close_idle_writers(&mut self) {
        let idle: Vec<i64> = self
            .writers
            .iter()
            .filter(|(_, w)| !w.dirty && w.last_added.elapsed() >= IDLE_WRITER_CLOSE)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.close_writer(key);
        }
        self.closing.retain(|_, closer| !closer.is_finished());
    }

    /// After a failed add or commit: drops every open writer with whatever it held uncommitted (a
    /// tantivy writer whose indexing thread failed is dead, and one whose commit failed midway is
    /// not trusted), and forgets what was added since the last commit, so that
    /// [`Self::indexed_through`] cannot pass a record that is not committed. The caller adds the
    /// records after it again, from the write-ahead log; those up to what the state file says a
    /// commit may have reached are looked up first, so none is indexed twice. Then makes the last
    /// commit of every open partition searchable (a commit of several partitions may have
    /// committed some before another failed): only the reload can fail, and the next call tries
    /// it again.
    ///
    /// Readers keep serving the last commit throughout.
    pub fn reset(&mut self) -> Result<(), IndexError> {
        // It held records this drops; they are added again.
        self.shared.tail.clear();
        self.writers.clear();
        if let Some(flight) = self.flight.take() {
            // Its writers' locks are free once it ended; what it committed is looked up first
            // when added again.
            if let Ok(closers) = flight.land(&self.shared.dir) {
                self.keep_closers(closers);
            }
        }
        self.stage.clear();
        self.flushed = false;
        self.max_added = None;
        self.max_written = None;
        self.replay_through = self.replay_through.max(self.state.pending_through);
        let partitions: Vec<Arc<Partition>> = self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for p in partitions {
            p.reload()?;
        }
        self.committed.clear();
        Ok(())
    }

    /// The LSN through which records are committed, as persisted.
    pub fn indexed_through(&self) -> Option<u64> {
        self.state.indexed_through
    }

    /// Deletes a whole partition (for retention): its writer, its records and its directory.
    /// Returns whether it existed. Records added to it later recreate it.
    ///
    /// Commits first if records were added since the last commit, so that every record deleted is
    /// at or below [`Self::indexed_through`]: a replay of the write-ahead log, which starts after
    /// it, never brings a deleted record back.
    pub fn delete_partition(&mut self, name: &str) -> Result<bool, IndexError> {
        let Some(key) = self.shared.opts.partition.parse_name(name) else {
            return Ok(false);
        };
        // Streams read deleted records no longer (from the index, which goes by what is left).
        self.shared.tail.clear();
        self.commit_if_dirty(key.start)?;
        self.writers.remove(&key.start);
        self.finish_closing(key.start);
        self.committed.remove(&key.start);
        let removed = self
            .shared
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key.start);
        let Some(p) = removed else {
            return Ok(false);
        };
        std::fs::remove_dir_all(&p.dir).map_err(|e| IndexError::io(&p.dir, e))?;
        sync_dir(&self.shared.dir)?;
        tracing::info!(partition = name, "deleted partition");
        Ok(true)
    }

    /// Deletes, in partition `name`, the records of each `(org, cutoff)` whose time is before
    /// `cutoff` (for retention), then reclaims their space: tantivy only marks deleted documents,
    /// so the segments holding them are merged (rewritten without them) and the old files
    /// removed. A partition left empty is deleted with its directory. Unknown partitions and
    /// orgs without such records are no-ops.
    ///
    /// Commits first if records were added since the last commit (see
    /// [`Self::delete_partition`] for why). Blocks for the merge: seconds for a large partition.
    pub fn delete_older_than(
        &mut self,
        name: &str,
        cutoffs: &[(String, DateTime<Utc>)],
    ) -> Result<Purge, IndexError> {
        let Some(key) = self.shared.opts.partition.parse_name(name) else {
            return Ok(Purge::default());
        };
        self.shared.tail.clear();
        self.commit_if_dirty(key.start)?;
        let Some(p) = self.shared.partition_named(name) else {
            return Ok(Purge::default());
        };
        let open = p.open()?;
        let bytes_before = p.bytes_on_disk();
        let mut purge = Purge {
            bytes_before,
            bytes_after: bytes_before,
            docs_left: open.reader.searcher().num_docs(),
            ..Purge::default()
        };
        let searcher = open.reader.searcher();
        let mut queries = Vec::new();
        for (org, cutoff) in cutoffs {
            let query = older_than(&self.shared.fields, org, cutoff.timestamp_micros());
            let n = searcher
                .search(&query, &Count)
                .map_err(|e| IndexError::tantivy(&p.dir, "count expired records", e))?;
            if n > 0 {
                purge.deleted.insert(org.clone(), n as u64);
                queries.push(query);
            }
        }
        drop(searcher);
        if queries.is_empty() {
            return Ok(purge);
        }

        // One writer per partition: the indexer's own, if open, is closed (it is clean; its
        // merges are dropped, ours rewrites the segments anyway) and a small one without a merge
        // policy does the deletes, so no automatic merge races ours.
        self.writers.remove(&key.start);
        self.finish_closing(key.start);
        let dir = p.dir.clone();
        let tantivy_err = |action: &'static str| {
            let dir = dir.clone();
            move |e: tantivy::TantivyError| IndexError::tantivy(dir, action, e)
        };
        let mut writer: IndexWriter = open
            .index
            .writer_with_num_threads(1, MIN_MEMORY_PER_THREAD)
            .map_err(tantivy_err("open a writer"))?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        for query in queries {
            writer
                .delete_query(query)
                .map_err(tantivy_err("delete expired records"))?;
        }
        writer.commit().map_err(tantivy_err("commit deletes"))?;
        let with_deletes: Vec<SegmentId> = open
            .index
            .searchable_segment_metas()
            .map_err(tantivy_err("list segments"))?
            .iter()
            .filter(|m| m.has_deletes())
            .map(|m| m.id())
            .collect();
        if !with_deletes.is_empty() {
            writer
                .merge(&with_deletes)
                .wait()
                .map_err(tantivy_err("merge segments with deletes"))?;
        }
        // Searchers of the old segments keep their files alive: reload, then collect.
        p.reload()?;
        writer
            .garbage_collect_files()
            .wait()
            .map_err(tantivy_err("remove obsolete files"))?;
        writer
            .wait_merging_threads()
            .map_err(tantivy_err("close the writer"))?;
        purge.docs_left = open.reader.searcher().num_docs();
        drop(open);
        if purge.docs_left == 0 {
            self.delete_partition(name)?;
            purge.removed = true;
            purge.bytes_after = 0;
        } else {
            purge.bytes_after = p.bytes_on_disk();
        }
        let deleted: u64 = purge.deleted.values().sum();
        tracing::info!(
            partition = name,
            deleted,
            docs_left = purge.docs_left,
            bytes_before = purge.bytes_before,
            bytes_after = purge.bytes_after,
            "deleted expired records"
        );
        Ok(purge)
    }

    /// Partition writers open now.
    pub fn open_writers(&self) -> usize {
        self.writers.len()
    }

    /// The starts of the partitions whose writers are open.
    #[cfg(test)]
    pub(crate) fn open_writer_starts(&self) -> BTreeSet<i64> {
        self.writers.keys().copied().collect()
    }

    /// Flushes the records staged for partition `start`, then commits if any writer holds
    /// records added since the last commit or a flush committed some: before a delete, so that
    /// what it deletes is at or below [`Self::indexed_through`].
    fn commit_if_dirty(&mut self, start: i64) -> Result<(), IndexError> {
        self.flush_staged(start)?;
        if self.flushed || self.writers.values().any(|w| w.dirty) {
            self.commit()?;
        }
        Ok(())
    }

    /// Before any partition commits records beyond `indexed_through`, records how far they go,
    /// so a replay after a crash knows which re-adds to check for an earlier copy.
    fn persist_pending(&mut self) -> Result<(), IndexError> {
        let Some(max) = self.max_added else {
            return Ok(());
        };
        if self.state.indexed_through >= Some(max) || self.state.pending_through >= Some(max) {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.pending_through = Some(max);
        write_state(&self.shared.dir, &next)?;
        self.state = next;
        Ok(())
    }

    /// The writer of a partition, creating the partition and opening the writer as needed.
    fn writer_for(&mut self, key: &PartitionKey) -> Result<&mut OpenWriter, IndexError> {
        self.clock += 1;
        if !self.writers.contains_key(&key.start) {
            if self.writers.len() >= self.shared.opts.max_open_writers {
                self.close_least_recently_used()?;
            }
            // The partition's previous writer holds its lock until its merges are done.
            self.finish_closing(key.start);
            let partition = self.partition(key)?;
            let open = partition.open()?;
            let opts = &self.shared.opts;
            let writer: IndexWriter = open
                .index
                .writer_with_options(
                    IndexWriterOptions::builder()
                        .num_worker_threads(opts.writer_threads)
                        .memory_budget_per_thread(opts.writer_memory_bytes)
                        .num_merge_threads(opts.merge_threads)
                        .build(),
                )
                .map_err(|e| IndexError::tantivy(&partition.dir, "open a writer", e))?;
            writer.set_merge_policy(super::merges::policy(
                MERGE_MIN_SEGMENTS,
                &partition.dir,
                opts.merge_room.as_ref(),
            ));
            // Files a writer left behind (merges under way when the process stopped) go now,
            // not only at this partition's next commit.
            drop(writer.garbage_collect_files());
            self.writers.insert(
                key.start,
                OpenWriter {
                    partition,
                    writer,
                    dirty: false,
                    last_used: 0,
                    last_added: Instant::now(),
                },
            );
        }
        let w = self.writers.get_mut(&key.start).expect("inserted above");
        w.last_used = self.clock;
        Ok(w)
    }

    /// Commits (without making searchable yet) and closes the least recently used writer.
    fn close_least_recently_used(&mut self) -> Result<(), IndexError> {
        let Some(key) = self
            .writers
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(k, _)| *k)
        else {
            return Ok(());
        };
        self.commit_and_close(key)
    }

    /// Commits (without making searchable yet) and closes the open writer of partition `key`.
    fn commit_and_close(&mut self, key: i64) -> Result<(), IndexError> {
        if self.writers[&key].dirty {
            self.persist_pending()?;
            let w = self.writers.get_mut(&key).expect("found above");
            w.writer
                .commit()
                .map_err(|e| IndexError::tantivy(&w.partition.dir, "commit", e))?;
            self.committed.insert(key);
        }
        self.close_writer(key);
        Ok(())
    }

    /// Closes the writer of partition `key` (which must be clean) on a thread of its own that
    /// waits for its merges, then makes their result searchable.
    fn close_writer(&mut self, key: i64) {
        if key < self.hot_start() {
            self.unsettled.insert(key);
        }
        if let Some(w) = self.writers.remove(&key)
            && let Some(closer) = close_in_background(w.partition, w.writer)
        {
            self.closing.insert(key, closer);
        }
    }

    /// Merges the segments of one quiet past partition into one, on a thread of its own, when
    /// nothing is staged, flying or being closed: a spread load or a history import leaves a past
    /// week a segment per flush (fewer than its writer's merge policy waits for), and every
    /// search pays per segment. One partition at a time, within the disk's room
    /// ([`MergeRoom`](super::MergeRoom)); the merge's thread is a closer, which a writer
    /// reopening the partition, a flight or retention waits for.
    fn compact_quiet(&mut self) {
        if self.flight.is_some()
            || !self.stage.is_empty()
            || self.closing.values().any(|c| !c.is_finished())
        {
            return;
        }
        let hot = self.hot_start();
        while let Some(start) = self.unsettled.pop_first() {
            if start >= hot || self.writers.contains_key(&start) {
                // Its writer's merge policy has it.
                continue;
            }
            match self.compact(start) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "compacting a past partition failed; its segments stay as they are");
                    return;
                }
            }
        }
    }

    /// Starts merging every segment of partition `start` into one; whether it started.
    fn compact(&mut self, start: i64) -> Result<bool, IndexError> {
        let partition = self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&start)
            .cloned();
        let Some(partition) = partition else {
            return Ok(false);
        };
        let open = partition.open()?;
        let metas = open
            .index
            .searchable_segment_metas()
            .map_err(|e| IndexError::tantivy(&partition.dir, "read the segment list", e))?;
        let docs: u64 = metas.iter().map(|m| u64::from(m.num_docs())).sum();
        if metas.len() < 2 || docs > COMPACT_MAX_DOCS {
            return Ok(false);
        }
        if !super::merges::whole_merge_fits(&partition.dir, self.shared.opts.merge_room.as_ref()) {
            tracing::debug!(
                partition = partition.key.name(),
                "compaction skipped: it would take the room kept free"
            );
            return Ok(false);
        }
        self.finish_closing(start);
        let mut writer: IndexWriter = open
            .index
            .writer_with_options(
                IndexWriterOptions::builder()
                    .num_worker_threads(1)
                    .memory_budget_per_thread(MIN_MEMORY_PER_THREAD)
                    .num_merge_threads(1)
                    .build(),
            )
            .map_err(|e| IndexError::tantivy(&partition.dir, "open a writer", e))?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        let ids: Vec<SegmentId> = metas.iter().map(tantivy::SegmentMeta::id).collect();
        // Its outcome is the closer's: it waits for the merge, then reloads the partition.
        drop(writer.merge(&ids));
        tracing::debug!(
            partition = partition.key.name(),
            segments = ids.len(),
            docs,
            "compacting a quiet past partition"
        );
        if let Some(closer) = close_in_background(partition, writer) {
            self.closing.insert(start, closer);
        }
        Ok(true)
    }

    /// Waits until every writer being closed has finished (its merges are searchable then).
    #[cfg(test)]
    pub(crate) fn finish_closing_all(&mut self) {
        let keys: Vec<i64> = self.closing.keys().copied().collect();
        for key in keys {
            self.finish_closing(key);
        }
    }

    /// Waits until the writer of partition `key` being closed, if any, has finished.
    fn finish_closing(&mut self, key: i64) {
        if let Some(closer) = self.closing.remove(&key) {
            // A panic in the closer was a panic in tantivy's merge: the writer is gone either way.
            let _ = closer.join();
        }
    }

    /// The partition of `key`, created if new.
    fn partition(&self, key: &PartitionKey) -> Result<Arc<Partition>, IndexError> {
        if let Some(p) = self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.start)
        {
            return Ok(p.clone());
        }
        let p = Arc::new(Partition::create(
            &self.shared.dir,
            key.clone(),
            &self.shared.schema,
            self.shared.opts.directory.clone(),
        )?);
        self.shared
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.start, p.clone());
        tracing::debug!(partition = key.name(), "created partition");
        Ok(p)
    }
}

/// `org` AND `time < cutoff` (microseconds; a range over the fast column).
fn older_than(fields: &Fields, org: &str, cutoff: i64) -> Box<dyn Query> {
    Box::new(BooleanQuery::new(vec![
        (
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_text(fields.org, org),
                IndexRecordOption::Basic,
            )) as Box<dyn Query>,
        ),
        (
            Occur::Must,
            Box::new(RangeQuery::new(
                Bound::Unbounded,
                Bound::Excluded(Term::from_field_i64(fields.time, cutoff)),
            )),
        ),
    ]))
}
