//! [`Flight`]: staged records of past partitions indexed on threads of their own (lanes), so
//! that the [`Indexer`](super::Indexer) keeps committing the current week meanwhile. Also what
//! both those threads and the indexer's own writers need: the add operations of records, closing
//! a writer in the background, the cause of a dead writer.

use super::error::IndexError;
use super::partition::Partition;
use super::schema::{UidForm, document};
use super::shared::Shared;
use super::stage::{Staged, StagedRecord};
use codestax_common::AuditRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tantivy::IndexWriter;
use tantivy::indexer::{IndexWriterOptions, UserOperation};

/// A cold partition's writer merges as soon as this many segments of a size are there: each
/// flush adds a segment, and the writer is closed right after, so merges happen on the flush that
/// makes the count. Tantivy's default (8; the current week's writers use 16, `indexer.rs`): at 4, merging the cold
/// weeks' segments took about 15 % of a spread load's CPU (10 ms per 1,000 records, the largest
/// share after indexing itself), and every record was rewritten once per 4 flushes of its week
/// rather than once per 8 (BENCHMARKS.md, session 16).
const COLD_MERGE_MIN_SEGMENTS: usize = 8;

/// The add operations of `items` for `partition`, leaving out records at an LSN that may
/// already be committed (`replay_through`: a replay after a crash) whose earlier copy is there.
pub(crate) fn operations<'a>(
    shared: &Shared,
    replay_through: Option<u64>,
    partition: &Partition,
    items: impl Iterator<Item = (u64, &'a AuditRecord, Option<&'a str>)>,
) -> Result<Vec<UserOperation>, IndexError> {
    let form = partition.open()?.uid_form;
    let mut ops = Vec::with_capacity(items.size_hint().0);
    for (lsn, record, stored) in items {
        if let Some(op) = operation(shared, replay_through, partition, form, lsn, record, stored)? {
            ops.push(op);
        }
    }
    Ok(ops)
}

/// Staged records are parsed and handed to a flight's writer this many at a time: the lane
/// parses the next chunk while the writer's indexing thread indexes the last (built whole first,
/// one of the two waited for the other), and only a chunk's documents are held at once.
pub(crate) const FEED_CHUNK: usize = 256;

/// The record a staged one's JSON holds (it is the write-ahead log's payload, which a replay
/// parses the same way).
pub(crate) fn parse_staged(r: &StagedRecord) -> Result<AuditRecord, IndexError> {
    serde_json::from_str(&r.stored).map_err(|e| {
        IndexError::InvalidRecord(format!(
            "the staged record at LSN {} does not parse: {e}",
            r.lsn
        ))
    })
}

/// The add operation of one record, or `None` when it is a replayed record already committed.
fn operation(
    shared: &Shared,
    replay_through: Option<u64>,
    partition: &Partition,
    form: UidForm,
    lsn: u64,
    record: &AuditRecord,
    stored: Option<&str>,
) -> Result<Option<UserOperation>, IndexError> {
    if replay_through.is_some_and(|r| lsn <= r)
        && shared
            .find(partition, &record.org_id, record.id())?
            .is_some()
    {
        // Committed before the crash: the store dedupes (org, id) before the WAL, so
        // this is the same record.
        return Ok(None);
    }
    Ok(Some(UserOperation::Add(document(
        &shared.fields,
        form,
        lsn,
        record,
        stored,
    )?)))
}

/// The error that killed `writer`'s indexing thread (an ENOSPC or EIO writing a segment): a dead
/// writer's `run` only says it is dead; joining its threads, which preparing a commit does, gives
/// the cause. Nothing is committed: the writer is dropped right after.
pub(crate) fn worker_error(mut writer: IndexWriter) -> Option<tantivy::TantivyError> {
    writer.prepare_commit().err()
}

/// Closes `writer` (clean) of `partition` on a thread of its own that lets its merges finish
/// (dropping a tantivy writer throws away the merges under way, and leaves their output on disk
/// until that partition's next commit), then makes the merged segments searchable. `None`: no
/// thread could be started, and the writer was dropped with its merges.
pub(crate) fn close_in_background(
    partition: Arc<Partition>,
    writer: IndexWriter,
) -> Option<JoinHandle<()>> {
    let closer = std::thread::Builder::new()
        .name("codestax-close-writer".into())
        .spawn(move || {
            if let Err(e) = writer.wait_merging_threads() {
                tracing::warn!(partition = partition.key.name(), error = %e, "merges of a closed writer failed");
            }
            if let Err(e) = partition.reload() {
                tracing::warn!(partition = partition.key.name(), error = %e, "reloading after merges failed");
            }
        });
    match closer {
        Ok(closer) => Some(closer),
        Err(e) => {
            tracing::warn!(error = %e, "could not start a thread to close a writer");
            None
        }
    }
}

/// One partition's share of a flight.
pub(crate) struct Load {
    pub partition: Arc<Partition>,
    pub staged: Staged,
    /// The thread closing the partition's previous writer: its lock is free once it ends.
    pub closing: Option<JoinHandle<()>>,
}

/// What a landed flight leaves: per partition start, the thread closing its writer.
pub(crate) type Closers = Vec<(i64, Option<JoinHandle<()>>)>;

/// Staged records of one or more partitions being indexed on up to `lanes` threads: each lane
/// takes the largest partition left and, with a writer of its own (one indexing thread), adds its
/// records, commits, makes them searchable and closes the writer, its merges finishing on yet
/// another thread. Lanes overlap one partition's indexing with another's commit (fsyncs) and use
/// the cores the current week's writer leaves idle: with one lane a spread load waited for the
/// flight with a core to spare (BENCHMARKS.md, session 14).
pub(crate) struct Flight {
    /// `indexed_through` stays below this until the flight has landed.
    pub min_lsn: u64,
    pub max_lsn: u64,
    /// Records and counted bytes aboard: they count against the stage's budget until landed.
    pub records: usize,
    pub bytes: usize,
    lanes: Vec<JoinHandle<Lane>>,
}

/// What one lane of a flight did: the closers of the partitions it committed, and the error that
/// stopped it, if one did.
type Lane = (Closers, Option<IndexError>);

/// The partitions of a flight not yet taken by a lane, and whether a lane failed (the others
/// then take no more).
struct Hold {
    loads: Mutex<Vec<Load>>,
    failed: AtomicBool,
}

impl Flight {
    /// Starts a flight of `loads` (none empty) on at most `lanes` threads (at least one).
    /// `replay_through`: as [`operations`].
    pub fn start(
        shared: Arc<Shared>,
        replay_through: Option<u64>,
        mut loads: Vec<Load>,
        lanes: usize,
    ) -> Result<Flight, IndexError> {
        let lsns = loads
            .iter()
            .flat_map(|l| l.staged.records.iter().map(|r| r.lsn));
        let (min_lsn, max_lsn) = lsns.fold((u64::MAX, 0), |(lo, hi), l| (lo.min(l), hi.max(l)));
        let records = loads.iter().map(|l| l.staged.records.len()).sum();
        let bytes = loads.iter().map(|l| l.staged.bytes).sum();
        // Taken from the end: the largest partitions first, so the lanes end together.
        loads.sort_by_key(|l| l.staged.bytes);
        let n = lanes.clamp(1, loads.len().max(1));
        let hold = Arc::new(Hold {
            loads: Mutex::new(loads),
            failed: AtomicBool::new(false),
        });
        let mut flight = Flight {
            min_lsn,
            max_lsn,
            records,
            bytes,
            lanes: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let (lane_shared, hold) = (shared.clone(), hold.clone());
            let lane = std::thread::Builder::new()
                .name("codestax-flush".into())
                .spawn(move || fly(&lane_shared, replay_through, &hold));
            match lane {
                Ok(lane) => flight.lanes.push(lane),
                // The lanes started take the rest.
                Err(e) if !flight.lanes.is_empty() => {
                    tracing::warn!(error = %e, "could not start another lane of a flight");
                    break;
                }
                Err(e) => return Err(IndexError::io(&shared.dir, e)),
            }
        }
        Ok(flight)
    }

    /// Whether the flight is over (landing it will not wait).
    pub fn is_finished(&self) -> bool {
        self.lanes.iter().all(JoinHandle::is_finished)
    }

    /// Waits for the flight to end: every record aboard is committed and searchable, or the
    /// error that stopped it (then the write-ahead log still has them all, and no writer of the
    /// flight holds a partition's lock any more).
    pub fn land(self, dir: &std::path::Path) -> Result<Closers, IndexError> {
        let mut closers = Vec::new();
        let mut error = None;
        for lane in self.lanes {
            let (done, failed) = lane.join().unwrap_or_else(|_| {
                let panicked = std::io::Error::other("a thread indexing staged records panicked");
                (Vec::new(), Some(IndexError::io(dir, panicked)))
            });
            closers.extend(done);
            error = error.or(failed);
        }
        match error {
            None => Ok(closers),
            Some(e) => {
                for (_, closer) in closers {
                    if let Some(c) = closer {
                        // A panic in the closer was a panic in tantivy's merge: the writer is
                        // gone either way.
                        let _ = c.join();
                    }
                }
                Err(e)
            }
        }
    }
}

/// A lane's thread: the largest partition left, in turn, until none is or a lane failed.
fn fly(shared: &Shared, replay_through: Option<u64>, hold: &Hold) -> Lane {
    let mut closers = Vec::new();
    loop {
        if hold.failed.load(Ordering::Acquire) {
            return (closers, None);
        }
        let next = hold.loads.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let Some(load) = next else {
            return (closers, None);
        };
        let start = load.partition.key.start;
        match flush(shared, replay_through, load) {
            Ok(closer) => closers.push((start, closer)),
            Err(e) => {
                hold.failed.store(true, Ordering::Release);
                return (closers, Some(e));
            }
        }
    }
}

/// Indexes one partition's staged records with a writer of its own, commits, makes them
/// searchable, and closes the writer in the background.
fn flush(
    shared: &Shared,
    replay_through: Option<u64>,
    load: Load,
) -> Result<Option<JoinHandle<()>>, IndexError> {
    let Load {
        partition,
        staged,
        closing,
    } = load;
    if let Some(closing) = closing {
        // A panic in the closer was a panic in tantivy's merge: the writer is gone either way.
        let _ = closing.join();
    }
    let open = partition.open()?;
    let n = staged.records.len();
    let dir = partition.dir.clone();
    let tantivy_err = |action: &'static str| {
        let dir = dir.clone();
        move |e: tantivy::TantivyError| IndexError::tantivy(dir, action, e)
    };
    let mut writer: IndexWriter = open
        .index
        .writer_with_options(
            IndexWriterOptions::builder()
                .num_worker_threads(1)
                .memory_budget_per_thread(shared.opts.writer_memory_bytes)
                .num_merge_threads(1)
                .build(),
        )
        .map_err(tantivy_err("open a writer"))?;
    writer.set_merge_policy(super::merges::policy(
        COLD_MERGE_MIN_SEGMENTS,
        &partition.dir,
        shared.opts.merge_room.as_ref(),
    ));
    // As the indexer's writers do: what a failed flush left (segments never committed, on a
    // full disk) goes before this one writes beside it, or every retry needs that room again.
    drop(writer.garbage_collect_files());
    // Each staged record is freed once parsed: the writer's memory grows as the stage's shrinks.
    let mut records = staged.records.into_iter().peekable();
    while records.peek().is_some() {
        let mut ops = Vec::with_capacity(FEED_CHUNK);
        for r in records.by_ref().take(FEED_CHUNK) {
            // A record that does not parse stops the flight; dropping the writer drops what it
            // took (the write-ahead log still has every record).
            let record = parse_staged(&r)?;
            ops.extend(operation(
                shared,
                replay_through,
                &partition,
                open.uid_form,
                r.lsn,
                &record,
                Some(&r.stored),
            )?);
        }
        if let Err(e) = writer.run(ops) {
            let cause = worker_error(writer).unwrap_or(e);
            return Err(IndexError::tantivy(dir, "add staged records", cause));
        }
    }
    writer
        .commit()
        .map_err(tantivy_err("commit staged records"))?;
    partition.reload()?;
    tracing::debug!(
        partition = partition.key.name(),
        records = n,
        "flushed staged records"
    );
    Ok(close_in_background(partition, writer))
}
