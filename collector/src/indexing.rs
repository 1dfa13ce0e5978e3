//! The indexer task: the one owner of the [`Indexer`]. It indexes what the store stored, commits
//! on a schedule, runs the retention janitor (which needs the one writer), and survives an index
//! that cannot write.
//!
//! # When the index cannot write
//!
//! A failed add or commit (ENOSPC, EIO, a dead tantivy writer) does not stop the collector. The
//! task drops the writers and what they held uncommitted ([`Indexer::reset`]); readers keep
//! serving the last commit; [`Health`] says the index is failing, so `/readyz` answers 503 and
//! ingest refuses new records (the WAL would only grow). Batches that reach the task meanwhile
//! (records acknowledged just before, and the collector's own records of reads) are dropped: they
//! are in the WAL, which keeps everything after `indexed_through`. Retries come with a backoff
//! (from [`FIRST_RETRY`], doubling, at most [`MAX_RETRY`]): first a cheap probe that the index
//! directory takes writes, then the real thing, which adds every record of the WAL after
//! `indexed_through` again and commits. Records a failed commit may have committed in some
//! partition are looked up first, so every acknowledged record ends up indexed once. Every failed
//! attempt is counted (`index_write_failures`) and logged (less often as they go on); a recovery
//! is counted too (`index_recoveries`).

use crate::health::{Failure, Health, Part, probe_writable};
use crate::index::{IndexError, Indexer};
use crate::metrics::Metrics;
use crate::retention::Janitor;
use crate::store::{IndexBatch, Lsn, Store, StoreError};
use chrono::Utc;
use codestax_common::AuditRecord;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The first retry after the index failed comes this long after.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Retries never wait longer than this: the index is back within about this long of the disk.
pub const MAX_RETRY: Duration = Duration::from_secs(2);
/// Records read back from the WAL per add when recovering.
const REFEED_CHUNK: usize = 1024;
/// The first janitor run comes this long after start (or after one interval, if shorter).
const JANITOR_FIRST_RUN: Duration = Duration::from_secs(10);
/// While the cold stage is full, how often the task looks whether the flight has landed (its
/// queue of batches waits meanwhile; a landing found at the next commit tick would leave ingest
/// idle for up to a commit interval).
const FLIGHT_POLL: Duration = Duration::from_millis(5);

/// How often the task commits and runs the janitor.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub commit: Duration,
    pub janitor: Duration,
}

/// Which staged records of past partitions a commit indexes (see [`Indexer::commit_due`]).
#[derive(Debug, Clone, Copy)]
enum Flush {
    /// Those that waited long enough, or fill enough of the stage.
    Due,
    /// All (when stopping).
    All,
}

/// The index cannot write: since when, and when to try again.
#[derive(Debug)]
struct Failing {
    since: Instant,
    attempts: u32,
    next_try: tokio::time::Instant,
    /// Records of batches dropped meanwhile (they are re-read from the WAL).
    dropped: u64,
}

impl Failing {
    fn new() -> Failing {
        Failing {
            since: Instant::now(),
            attempts: 0,
            next_try: tokio::time::Instant::now() + FIRST_RETRY,
            dropped: 0,
        }
    }

    /// The wait before the next try, after `attempts` failed ones.
    fn backoff(&self) -> Duration {
        FIRST_RETRY
            .saturating_mul(1 << self.attempts.min(16))
            .min(MAX_RETRY)
    }

    /// Whether attempt `attempts` gets a log line of its own (the first ones, then fewer).
    fn worth_logging(&self) -> bool {
        self.attempts.is_power_of_two() || self.attempts.is_multiple_of(100)
    }
}

/// Why a recovery attempt failed.
#[derive(Debug, thiserror::Error)]
enum RecoverError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("reading the write-ahead log back: {0}")]
    Wal(#[from] StoreError),
}

impl RecoverError {
    fn failure(&self) -> Failure {
        match self {
            RecoverError::Index(e) => e.failure(),
            RecoverError::Wal(_) => Failure::other(
                Part::Index,
                "the write-ahead log cannot be read back; the collector's log has the details",
            ),
        }
    }
}

/// The indexer task; see the [module docs](self).
pub struct IndexTask {
    indexer: Indexer,
    batches: mpsc::Receiver<IndexBatch>,
    store: Store,
    metrics: Arc<Metrics>,
    janitor: Janitor,
    health: Health,
    /// The index directory, probed while the index fails.
    dir: PathBuf,
    /// Records up to this LSN were added from the WAL (at start or in a recovery): batches
    /// holding them again skip them.
    fed_through: Option<Lsn>,
    /// When the oldest record added since the last commit was acknowledged; `None`: nothing
    /// added.
    oldest: Option<Instant>,
    failing: Option<Failing>,
}

impl IndexTask {
    pub fn new(
        indexer: Indexer,
        batches: mpsc::Receiver<IndexBatch>,
        store: Store,
        metrics: Arc<Metrics>,
        janitor: Janitor,
        health: Health,
        dir: PathBuf,
    ) -> IndexTask {
        IndexTask {
            indexer,
            batches,
            store,
            metrics,
            janitor,
            health,
            dir,
            fed_through: None,
            oldest: None,
            failing: None,
        }
    }

    /// Indexes and commits the records the store handed back at open (those after
    /// `indexed_through`). Blocking. If the index cannot write, the task starts out failing and
    /// recovers as it would later.
    pub fn replay(&mut self, records: &[(Lsn, AuditRecord)]) {
        let result = self
            .indexer
            .add_batch(records)
            .and_then(|()| self.indexer.commit());
        match result {
            Ok(through) => {
                self.fed_through = records.last().map(|(lsn, _)| *lsn);
                if let Some(lsn) = through {
                    self.store.mark_indexed_through(lsn);
                }
            }
            Err(e) => self.fail(&e, "index the write-ahead log's records at start"),
        }
    }

    /// Runs until `stop` (then indexes what is queued and commits once more) or until the store
    /// is gone. Commits every `schedule.commit`, so a record is searchable within about that long
    /// after its ack; runs the janitor shortly after start, then every `schedule.janitor` (ingest
    /// waits meanwhile).
    pub async fn run(mut self, schedule: Schedule, stop: CancellationToken) {
        let mut tick = tokio::time::interval(schedule.commit);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first = tokio::time::Instant::now() + schedule.janitor.min(JANITOR_FIRST_RUN);
        let mut janitor_tick = tokio::time::interval_at(first, schedule.janitor);
        janitor_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Since when the cold stage has been full (`index_held_back_seconds`).
        let mut held_since: Option<Instant> = None;
        loop {
            let retry_at = self.failing.as_ref().map(|f| f.next_try);
            // Past weeks' records fill the stage's budget: the queue waits (acks wait once it is
            // full, the bounded back-pressure), this week's records added are still committed on
            // every tick.
            let cold_full = self.failing.is_none() && self.indexer.cold_stage_full();
            match (cold_full, held_since) {
                (true, None) => held_since = Some(Instant::now()),
                (false, Some(since)) => {
                    self.metrics
                        .observe_index_held_back(since.elapsed().as_secs_f64());
                    held_since = None;
                }
                _ => {}
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    while let Ok(batch) = self.batches.try_recv() {
                        self.take(batch);
                    }
                    break;
                }
                batch = self.batches.recv(), if !cold_full => match batch {
                    Some(batch) => self.take(batch),
                    None => break,
                },
                _ = tokio::time::sleep(FLIGHT_POLL), if cold_full => self.on_flight_poll(),
                _ = tick.tick() => self.on_tick(),
                _ = janitor_tick.tick() => self.run_janitor(),
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                    if retry_at.is_some() => self.try_recover(),
            }
        }
        if self.oldest.is_some() || self.indexer.has_staged() {
            self.commit(Flush::All);
        }
        if let Some(failing) = &self.failing {
            tracing::warn!(
                failing_for = failing.since.elapsed().as_secs_f64(),
                "stopping while the index cannot write: the records it lacks stay in the \
                 write-ahead log and are indexed at the next start"
            );
        }
    }

    /// Adds a stored batch (searchable at the next commit); drops it while the index fails.
    fn take(&mut self, batch: IndexBatch) {
        if let Some(failing) = &mut self.failing {
            // In the WAL: the recovery reads them back.
            failing.dropped += batch.records.len() as u64;
            return;
        }
        // Batches arrive in LSN order; those the WAL already gave are skipped.
        let skip = self
            .fed_through
            .map_or(0, |t| batch.records.partition_point(|(lsn, _)| *lsn <= t));
        if skip == batch.records.len() {
            return;
        }
        let (records, stored) = (&batch.records[skip..], &batch.stored[skip..]);
        // Never waits for a flight: `run` takes no batch while the cold stage is full.
        let added =
            tokio::task::block_in_place(|| self.indexer.add_stored_no_wait(records, Some(stored)));
        match added {
            // Batches arrive in the order they were acknowledged.
            Ok(()) => {
                self.oldest.get_or_insert(batch.durable_at);
            }
            Err(e) => self.fail(&e, "add records"),
        }
    }

    /// Takes the batches queued now (not those stored meanwhile), as far as the cold stage
    /// allows. Before a commit: the batches acknowledged while the last commit ran are waiting
    /// in the queue, and `run`'s select, finding the tick and the queue both ready, picks one at
    /// random: a commit that left them queued made them wait a commit interval and another commit
    /// longer.
    fn take_queued(&mut self) {
        for _ in 0..self.batches.len() {
            if self.failing.is_some() || self.indexer.cold_stage_full() {
                break;
            }
            match self.batches.try_recv() {
                Ok(batch) => self.take(batch),
                Err(_) => break,
            }
        }
    }

    /// While the cold stage is full: once the flight has landed, commits (which lands it,
    /// starts the next, and frees the budget for the queue).
    fn on_flight_poll(&mut self) {
        if self.indexer.flight_landable() {
            self.commit(Flush::Due);
        }
    }

    fn on_tick(&mut self) {
        if self.failing.is_some() {
            return;
        }
        self.take_queued();
        if self.oldest.is_some() || self.indexer.has_staged() {
            self.commit(Flush::Due);
        } else if let Err(e) = tokio::task::block_in_place(|| self.indexer.refresh()) {
            tracing::warn!(error = %e, "making merged segments searchable failed; the next commit will");
        }
    }

    /// Commits what was added, making it searchable (records of past partitions only where
    /// `flush` says), and observes how long the oldest of it waited.
    fn commit(&mut self, flush: Flush) {
        let started = Instant::now();
        let committed = tokio::task::block_in_place(|| match flush {
            Flush::All => self.indexer.commit(),
            Flush::Due => self.indexer.commit_due(),
        });
        match committed {
            Ok(through) => {
                self.metrics.observe_commit(started.elapsed().as_secs_f64());
                if let Some(acked) = self.oldest.take() {
                    self.metrics
                        .observe_index_lag(acked.elapsed().as_secs_f64());
                }
                if let Some(lsn) = through {
                    self.store.mark_indexed_through(lsn);
                }
            }
            Err(e) => self.fail(&e, "commit"),
        }
    }

    /// The index could not `doing`: drop the writers, say so, retry later.
    fn fail(&mut self, error: &IndexError, doing: &str) {
        self.metrics.observe_index_failure();
        let failure = error.failure();
        tracing::error!(
            error = %error,
            code = failure.code(),
            "the index cannot {doing}: ingest is refused until it can again (retried from {:?} \
             to every {:?}); acknowledged records wait in the write-ahead log",
            FIRST_RETRY,
            MAX_RETRY
        );
        self.health.fail(failure);
        if let Err(e) = tokio::task::block_in_place(|| self.indexer.reset()) {
            tracing::warn!(error = %e, "cannot reload the index's readers; the recovery will");
        }
        self.oldest = None;
        self.failing = Some(Failing::new());
    }

    /// One recovery attempt: the probe, then the WAL's records after `indexed_through` added
    /// again and committed.
    fn try_recover(&mut self) {
        let Some(failing) = &mut self.failing else {
            return;
        };
        failing.attempts += 1;
        let result = match tokio::task::block_in_place(|| probe_writable(&self.dir)) {
            // Cheap first: a disk still full fails here, without indexing anything.
            Err(e) => Err(Failure::io(Part::Index, &e)),
            Ok(()) => tokio::task::block_in_place(|| self.refeed()).map_err(|e| {
                tracing::warn!(error = %e, "index recovery failed");
                let _ = self.indexer.reset();
                e.failure()
            }),
        };
        let failing = self.failing.as_mut().expect("checked above");
        match result {
            Ok(refed) => {
                let failing_for = failing.since.elapsed();
                let (attempts, dropped) = (failing.attempts, failing.dropped);
                self.failing = None;
                self.health.recover(Part::Index);
                self.metrics.observe_index_recovery();
                tracing::info!(
                    refed,
                    dropped,
                    attempts,
                    failing_for = failing_for.as_secs_f64(),
                    "the index writes again: the records it lacked were read back from the \
                     write-ahead log; ingest resumes"
                );
            }
            Err(failure) => {
                self.metrics.observe_index_failure();
                if failing.worth_logging() {
                    tracing::warn!(
                        attempts = failing.attempts,
                        failing_for = failing.since.elapsed().as_secs_f64(),
                        %failure,
                        "the index still cannot write; retrying"
                    );
                }
                failing.next_try = tokio::time::Instant::now() + failing.backoff();
                self.health.fail(failure);
            }
        }
    }

    /// Adds the WAL's records after `indexed_through` and commits them; returns how many.
    fn refeed(&mut self) -> Result<u64, RecoverError> {
        self.indexer.reset()?;
        let from = self.indexer.indexed_through().map_or(0, |l| l + 1);
        let (mut records, mut stored) = (Vec::new(), Vec::new());
        let mut n = 0u64;
        let mut last = None;
        for entry in self.store.read_stored(from) {
            let (lsn, record, json) = entry?;
            records.push((lsn, record));
            stored.push(json);
            last = Some(lsn);
            n += 1;
            if records.len() == REFEED_CHUNK {
                self.indexer.add_stored(&records, Some(&stored))?;
                records.clear();
                stored.clear();
            }
        }
        self.indexer.add_stored(&records, Some(&stored))?;
        let through = self.indexer.commit()?;
        self.fed_through = self.fed_through.max(last);
        if let Some(lsn) = through {
            self.store.mark_indexed_through(lsn);
        }
        Ok(n)
    }

    /// One janitor run, after a commit of what was added (so a failed commit is the index's
    /// failure, not the janitor's). A failed run is logged and counted, and the next run tries
    /// again: deleting late is not worth stopping ingest for (reads hide expired records anyway).
    /// It runs while the index fails too: deleting may be what frees the disk.
    fn run_janitor(&mut self) {
        if self.failing.is_none() && (self.oldest.is_some() || self.indexer.has_staged()) {
            self.commit(Flush::Due);
        }
        let result =
            tokio::task::block_in_place(|| self.janitor.run(&mut self.indexer, Utc::now()));
        // The run commits first: tell the store, so it can drop the WAL segments now indexed.
        if let Some(lsn) = self.indexer.indexed_through() {
            self.store.mark_indexed_through(lsn);
        }
        match result {
            Ok(report) => self.metrics.observe_janitor(&report, Utc::now()),
            Err(e) => {
                self.metrics.observe_janitor_failure();
                tracing::error!(error = %e, "retention janitor failed; it will try again at its next run");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{AuditIndex, IndexOptions, SearchQuery, faults::Faults};
    use crate::ingest::{Ingest, IngestError, IngestSettings, Receiver};
    use crate::retention::RetentionPolicy;
    use crate::store::{IdLookup, StoreOptions};
    use codestax_common::Provenance;
    use serde_json::json;

    fn record(id: &str) -> AuditRecord {
        serde_json::from_value(json!({
            "id": id,
            "org_id": "acme",
            "time": Utc::now(),
            "actor": {"id": "u-42", "email": "ada@acme.example", "kind": "user"},
            "action": "scan.triggered",
            "category": "scan",
            "metadata": {"scan_type": "sast"},
        }))
        .unwrap()
    }

    fn batch(
        from: usize,
        n: usize,
    ) -> Vec<Result<AuditRecord, codestax_common::api::RejectedRecord>> {
        (from..from + n)
            .map(|i| Ok(record(&format!("r{i}"))))
            .collect()
    }

    /// The value of the series written `series` (name and labels) in `metrics`' exposition.
    fn series(metrics: &Metrics, series: &str) -> Option<f64> {
        metrics.render(Default::default()).lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    /// Polls `done` every 10 ms for up to 10 s.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn total(index: &AuditIndex) -> u64 {
        index
            .search("acme", &SearchQuery::default(), 1, None)
            .unwrap()
            .total
    }

    /// A real store and index with their ingest pipeline, for an indexer task.
    struct Parts {
        _dir: tempfile::TempDir,
        index: AuditIndex,
        policy: Arc<RetentionPolicy>,
        store: Store,
        ingest: Ingest,
        health: Health,
        metrics: Arc<Metrics>,
    }

    /// A running indexer task over [`Parts`].
    struct Running {
        parts: Parts,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl std::ops::Deref for Running {
        type Target = Parts;
        fn deref(&self) -> &Parts {
            &self.parts
        }
    }

    /// Starts the task on a new index whose partitions' directories go through `faults` where
    /// `applies`, with retention as `config` says and the janitor every `janitor`.
    fn start(
        faults: &Faults,
        applies: impl Fn(&std::path::Path) -> bool + Send + Sync + 'static,
        config: &codestax_config::CollectorConfig,
        janitor: Duration,
    ) -> Running {
        start_in(
            tempfile::tempdir().unwrap(),
            faults,
            applies,
            config,
            janitor,
        )
    }

    /// [`start`] on the index and WAL in `dir`.
    fn start_in(
        dir: tempfile::TempDir,
        faults: &Faults,
        applies: impl Fn(&std::path::Path) -> bool + Send + Sync + 'static,
        config: &codestax_config::CollectorConfig,
        janitor: Duration,
    ) -> Running {
        let opts = IndexOptions {
            directory: Some(faults.hook(applies)),
            ..small_writers()
        };
        start_with(dir, opts, config, janitor)
    }

    /// Writers as small as tantivy allows.
    fn small_writers() -> IndexOptions {
        IndexOptions {
            writer_memory_bytes: 16_000_000,
            writer_threads: 1,
            ..IndexOptions::default()
        }
    }

    /// [`start_in`] with the index's options as given.
    fn start_with(
        dir: tempfile::TempDir,
        opts: IndexOptions,
        config: &codestax_config::CollectorConfig,
        janitor: Duration,
    ) -> Running {
        let (task, parts) = assemble(dir, opts, config);
        let stop = CancellationToken::new();
        let schedule = Schedule {
            commit: Duration::from_millis(50),
            janitor,
        };
        let task = tokio::spawn(task.run(schedule, stop.clone()));
        Running { parts, stop, task }
    }

    /// The task, not yet running, over new [`Parts`] in `dir`; the WAL's records are replayed.
    fn assemble(
        dir: tempfile::TempDir,
        opts: IndexOptions,
        config: &codestax_config::CollectorConfig,
    ) -> (IndexTask, Parts) {
        let (index, indexer) = AuditIndex::open(&dir.path().join("index"), opts).unwrap();
        let health = Health::default();
        let metrics = Arc::new(Metrics::new());
        let (sink, batches) = mpsc::channel(4);
        let (store, replay) = Store::open(
            &dir.path().join("wal"),
            StoreOptions::default(),
            Arc::new(index.clone()) as Arc<dyn IdLookup>,
            [],
            None,
            Default::default(),
            sink,
            health.clone(),
        )
        .unwrap();
        let policy = Arc::new(RetentionPolicy::open(config, dir.path()).unwrap());
        let mut task = IndexTask::new(
            indexer,
            batches,
            store.clone(),
            metrics.clone(),
            Janitor::new(policy.clone(), index.clone()),
            health.clone(),
            dir.path().join("index"),
        );
        task.replay(&replay);
        health.set_started();
        let ingest = Ingest::new(
            store.clone(),
            IngestSettings {
                max_record_bytes: 65536,
                allow_custom_actions: false,
            },
            metrics.clone(),
            health.clone(),
        );
        let parts = Parts {
            _dir: dir,
            index,
            policy,
            store,
            ingest,
            health,
            metrics,
        };
        (task, parts)
    }

    impl Running {
        async fn stop(self) {
            self.stop.cancel();
            self.task.await.unwrap();
            drop(self.parts.ingest);
            self.parts.store.close().await;
        }
    }

    /// A tick commits the batches queued before it: records acknowledged while the previous
    /// commit ran are searchable after this commit, not a commit interval and a commit later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tick_commits_the_batches_queued_before_it() {
        let config = codestax_config::CollectorConfig::default();
        let (mut task, parts) = assemble(tempfile::tempdir().unwrap(), small_writers(), &config);
        let sender = Provenance::Ingest {
            key_id: "key_test".into(),
        };
        // Three acknowledged batches wait in the queue (it holds four), none taken yet.
        for i in 0..3 {
            let outcome = parts
                .ingest
                .submit("acme", sender.clone(), batch(i * 10, 10), Receiver::Ndjson)
                .await
                .unwrap();
            assert_eq!(outcome.accepted, 10);
        }
        assert_eq!(total(&parts.index), 0);
        task.on_tick();
        assert_eq!(
            total(&parts.index),
            30,
            "the tick's commit left queued batches out"
        );
        drop(task);
        drop(parts.ingest);
        parts.store.close().await;
    }

    /// The indexer task over a real store and index whose partitions fail with EIO on demand:
    /// it keeps running, says so in the health, refuses senders' records, never blocks acks,
    /// keeps the last commit searchable, and once writes go through again indexes every
    /// acknowledged record exactly once, without a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_task_survives_an_index_that_cannot_write_and_recovers_by_itself() {
        let faults = Faults::default();
        let config = codestax_config::CollectorConfig::default();
        let running = start(&faults, |_| true, &config, Duration::from_secs(3600));
        let (index, ingest, health, metrics) = (
            &running.index,
            &running.ingest,
            &running.health,
            &running.metrics,
        );
        let sender = Provenance::Ingest {
            key_id: "key_test".into(),
        };
        let mut acked = 0;
        let outcome = ingest
            .submit("acme", sender.clone(), batch(0, 50), Receiver::Ndjson)
            .await
            .unwrap();
        acked += outcome.accepted;
        eventually("the first records are searchable", || total(index) == 50).await;

        // EIO from now on: the next commit fails, the task stays up and says so.
        const EIO: i32 = 5;
        faults.arm(EIO);
        let mut next = 50;
        while health.failure(Part::Index).is_none() {
            match ingest
                .submit("acme", sender.clone(), batch(next, 10), Receiver::Ndjson)
                .await
            {
                Ok(outcome) => acked += outcome.accepted,
                Err(IngestError::Unavailable(_)) => break,
                Err(e) => panic!("{e}"),
            }
            next += 10;
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(next < 10_000, "the index never failed");
        }
        let failure = health.failure(Part::Index).unwrap();
        assert_eq!(failure.code(), "index_failed");
        assert!(
            failure
                .to_string()
                .contains(&std::io::Error::from_raw_os_error(EIO).to_string()),
            "{failure}"
        );
        assert!(health.readiness().is_err());

        // Senders are refused; the collector's own records are still acknowledged (into the
        // WAL), more batches than the index queue holds, without waiting for the index.
        let refused = ingest
            .submit("acme", sender.clone(), batch(next, 10), Receiver::Ndjson)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, IngestError::Unavailable(f) if f.part() == Part::Index),
            "{refused}"
        );
        for i in 0..12 {
            let submit = ingest.submit(
                "acme",
                Provenance::Collector,
                batch(100_000 + i * 5, 5),
                Receiver::Internal,
            );
            let outcome = tokio::time::timeout(Duration::from_secs(5), submit)
                .await
                .expect("an ack waits for the failing index")
                .unwrap();
            acked += outcome.accepted;
        }
        // The last commit stays searchable.
        assert!(total(index) >= 50);
        let text = metrics.render(Default::default());
        assert!(
            !text.contains("codestax_collector_index_write_failures_total 0"),
            "{text}"
        );

        // Writes go through again: the task recovers by itself, while the collector's own records
        // keep coming (some stored while the WAL is read back, queued for the task meanwhile).
        let writing = CancellationToken::new();
        let writer = tokio::spawn({
            let (ingest, writing) = (ingest.clone(), writing.clone());
            async move {
                let mut acked = 0;
                for i in 0.. {
                    if writing.is_cancelled() {
                        break;
                    }
                    let outcome = ingest
                        .submit(
                            "acme",
                            Provenance::Collector,
                            batch(200_000 + i * 3, 3),
                            Receiver::Internal,
                        )
                        .await
                        .unwrap();
                    acked += outcome.accepted;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                acked
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        faults.disarm();
        eventually("the index recovers", || {
            health.failure(Part::Index).is_none()
        })
        .await;
        assert_eq!(health.readiness(), Ok(()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        writing.cancel();
        acked += writer.await.unwrap();
        let outcome = ingest
            .submit("acme", sender.clone(), batch(next, 10), Receiver::Ndjson)
            .await
            .unwrap();
        acked += outcome.accepted;
        eventually("every acknowledged record is searchable", || {
            total(index) == acked
        })
        .await;
        let mut hashes = Vec::new();
        index.for_each_uid_hash(|h| hashes.push(h)).unwrap();
        assert_eq!(hashes.len() as u64, acked, "each record once");
        let text = metrics.render(Default::default());
        assert!(
            text.contains("codestax_collector_index_recoveries_total 1"),
            "{text}"
        );

        running.stop().await;
    }

    /// The janitor on a disk that fails: each failed run is logged and counted, the next run
    /// tries again, the index keeps taking records meanwhile, and once writes go through a run
    /// deletes what has expired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_janitor_run_is_counted_and_the_next_one_deletes() {
        let mut config = codestax_config::CollectorConfig::default();
        let enterprise = |id: &str| codestax_config::OrgConfig {
            id: id.into(),
            name: None,
            plan: codestax_config::Plan::Enterprise,
            retention_days: Some(30),
            legal_hold: false,
        };
        config.orgs = vec![enterprise("acme"), enterprise("ent")];
        // Eight days back is another ISO week than today's: only that partition fails.
        let old = Utc::now() - chrono::Duration::days(8);
        let old_week = crate::index::PartitionScheme::Week
            .key_for(old)
            .name()
            .to_string();
        let faults = Faults::default();
        let running = start(
            &faults,
            move |path| path.ends_with(&old_week),
            &config,
            Duration::from_millis(100),
        );
        let search = |org: &str| {
            running
                .index
                .search(org, &SearchQuery::default(), 10, None)
                .unwrap()
                .total
        };
        for (org, id) in [("acme", "old0"), ("acme", "old1"), ("ent", "kept")] {
            let mut r = record(id);
            r.org_id = org.into();
            r.time = old;
            running
                .ingest
                .submit(org, Provenance::Collector, vec![Ok(r)], Receiver::Internal)
                .await
                .unwrap();
        }
        eventually("the old records are searchable", || {
            search("acme") == 2 && search("ent") == 1
        })
        .await;

        // acme's records expire; deleting them means writing the old partition, which fails.
        faults.arm(5);
        running.policy.set_days("acme", 3).unwrap();
        let errors = |m: &Metrics| {
            series(
                m,
                "codestax_collector_retention_janitor_runs_total{result=\"error\"}",
            )
            .map_or(0, |n| n as u64)
        };
        eventually("janitor runs fail and are counted", || {
            errors(&running.metrics) >= 2
        })
        .await;
        assert_eq!(search("acme"), 2, "nothing deleted by a failed run");
        // The index itself keeps working: new records go to this week's partition.
        let sender = Provenance::Ingest {
            key_id: "key_test".into(),
        };
        let outcome = running
            .ingest
            .submit("acme", sender, batch(0, 5), Receiver::Ndjson)
            .await
            .unwrap();
        assert_eq!(outcome.accepted, 5);
        eventually("new records are searchable", || search("acme") == 7).await;
        assert_eq!(running.health.readiness(), Ok(()));

        faults.disarm();
        eventually("a run deletes the expired records", || search("acme") == 5).await;
        assert_eq!(search("ent"), 1);
        running.stop().await;
    }

    /// An index that holds nothing.
    struct NoIndex;

    impl IdLookup for NoIndex {
        fn stored(&self, _: &str, _: &str, _: i64) -> Option<codestax_common::AuditRecord> {
            None
        }
    }

    /// A start whose replay of the WAL cannot be indexed: the collector starts all the same,
    /// not ready, and indexes the records once writes go through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_that_cannot_be_indexed_at_start_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        // Records in the WAL only, as a crash before the index committed leaves them.
        let (sink, mut batches) = mpsc::channel(16);
        let drain = tokio::spawn(async move { while batches.recv().await.is_some() {} });
        let (store, _) = Store::open(
            &dir.path().join("wal"),
            StoreOptions::default(),
            Arc::new(NoIndex) as Arc<dyn IdLookup>,
            [],
            None,
            Default::default(),
            sink,
            Health::default(),
        )
        .unwrap();
        let records: Vec<AuditRecord> = (0..20)
            .map(|i| {
                let mut r = record(&format!("w{i}"));
                r.received_at = Some(r.time);
                r
            })
            .collect();
        store.submit(records).await.unwrap();
        store.close().await;
        drain.await.unwrap();

        let faults = Faults::default();
        faults.arm(5);
        let config = codestax_config::CollectorConfig::default();
        let running = start_in(dir, &faults, |_| true, &config, Duration::from_secs(3600));
        let failure = running
            .health
            .failure(Part::Index)
            .expect("the replay failed");
        assert_eq!(failure.code(), "index_failed");
        assert!(running.health.is_started(), "reads are served meanwhile");
        assert_eq!(total(&running.index), 0);
        faults.disarm();
        eventually("the replayed records are indexed", || {
            running.health.readiness().is_ok() && total(&running.index) == 20
        })
        .await;
        running.stop().await;
    }

    /// `n` records of acme from `from`, `weeks_back` weeks before now (0: this week's).
    fn weeks_back(
        from: usize,
        n: usize,
        weeks_back: i64,
    ) -> Vec<Result<AuditRecord, codestax_common::api::RejectedRecord>> {
        (from..from + n)
            .map(|i| {
                let mut r = record(&format!("r{i}"));
                r.time -= chrono::Duration::weeks(weeks_back);
                Ok(r)
            })
            .collect()
    }

    /// `n` records spread over the second, third and fourth week back: no one week holds most
    /// of the stage, so none gets a writer of its own and they all go by flight.
    fn past_weeks(
        from: usize,
        n: usize,
    ) -> Vec<Result<AuditRecord, codestax_common::api::RejectedRecord>> {
        (from..from + n)
            .flat_map(|i| weeks_back(i, 1, 2 + (i % 3) as i64))
            .collect()
    }

    /// Past weeks' records fill the cold stage while their flight is held (its writes wait): the
    /// task takes no more batches (the queue fills, then acks wait: memory stays bounded), yet
    /// the current week's records it took in the same batch become searchable at the next
    /// commit, not once the flight lands (a wait inside the add held them). Released, every
    /// acknowledged record is searchable once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_cold_stage_holds_back_acks_but_not_this_weeks_records() {
        let faults = Faults::default();
        let this_week = crate::index::PartitionScheme::Week
            .key_for(Utc::now())
            .name()
            .to_string();
        let budget = 64 << 10;
        let opts = IndexOptions {
            directory: Some(faults.hook(move |path| !path.ends_with(&this_week))),
            cold_stage_bytes: budget,
            cold_flush_after: Duration::from_millis(100),
            ..small_writers()
        };
        let config = codestax_config::CollectorConfig::default();
        let running = start_with(
            tempfile::tempdir().unwrap(),
            opts,
            &config,
            Duration::from_secs(3600),
        );
        let ingest = running.ingest.clone();
        let submit = move |records| {
            let ingest = ingest.clone();
            async move {
                let sender = Provenance::Ingest {
                    key_id: "key_test".into(),
                };
                ingest
                    .submit("acme", sender, records, Receiver::Ndjson)
                    .await
                    .unwrap()
                    .accepted
            }
        };
        // The past weeks' partitions exist (their first flight went through).
        let mut acked = submit(past_weeks(0, 40)).await;
        eventually("the first past records are searchable", || {
            total(&running.index) == acked
        })
        .await;

        faults.hold();
        // Over half the budget (and under all of it): a flight leaves, and waits in its first
        // write.
        acked += submit(past_weeks(1000, 90)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Past records passing the budget with the flight in the air, and this week's beside
        // them in the same batch.
        let mut mixed = past_weeks(2000, 90);
        mixed.extend(weeks_back(3000, 10, 0));
        acked += submit(mixed).await;
        let searchable_before = 40;
        eventually(
            "this week's records are searchable with the flight held",
            || total(&running.index) == searchable_before + 10,
        )
        .await;

        // More past records: the task takes none while the stage is full, so once the queue is
        // full their acks wait for the flight.
        let (submit_more, more) = (submit.clone(), 12);
        let more_acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sender = tokio::spawn({
            let more_acked = more_acked.clone();
            async move {
                for i in 0..more {
                    let n = submit_more(past_weeks(10_000 + i * 100, 100)).await;
                    more_acked.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let waiting = more_acked.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            waiting < more as u64 * 100,
            "every ack came while the cold stage was full ({waiting})"
        );
        assert_eq!(total(&running.index), searchable_before + 10);

        faults.release();
        sender.await.unwrap();
        acked += more_acked.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(acked, 40 + 90 + 100 + more as u64 * 100);
        eventually("every acknowledged record is searchable", || {
            total(&running.index) == acked
        })
        .await;
        let mut hashes = Vec::new();
        running.index.for_each_uid_hash(|h| hashes.push(h)).unwrap();
        assert_eq!(hashes.len() as u64, acked, "each record once");
        // The wait is counted: at least the 500 ms the flight was held with the stage full.
        let held = |name| series(&running.metrics, name).unwrap_or_else(|| panic!("no {name}"));
        assert!(held("codestax_collector_index_held_back_seconds_count") >= 1.0);
        assert!(held("codestax_collector_index_held_back_seconds_sum") >= 0.4);
        // Its ingest handle keeps the store open.
        drop(submit);
        running.stop().await;
    }

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        let mut f = Failing::new();
        let waits: Vec<Duration> = (1..=6)
            .map(|n| {
                f.attempts = n;
                f.backoff()
            })
            .collect();
        assert_eq!(waits[0], FIRST_RETRY * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), MAX_RETRY);
        f.attempts = u32::MAX;
        assert_eq!(f.backoff(), MAX_RETRY);
    }
}
