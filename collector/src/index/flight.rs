//! [`Flight`]: staged records of past partitions indexed on a thread of their own, so that the
//! [`Indexer`](super::Indexer) keeps committing the current week meanwhile. Also what both that
//! thread and the indexer's own writers need: the add operations of records, closing a writer
//! in the background, the cause of a dead writer.

use super::error::IndexError;
use super::partition::Partition;
use super::schema::{UidForm, document};
use super::shared::Shared;
use super::stage::{Staged, StagedRecord};
use codestax_common::AuditRecord;
use std::sync::Arc;
use std::thread::JoinHandle;
use tantivy::IndexWriter;
use tantivy::indexer::{IndexWriterOptions, LogMergePolicy, UserOperation};

/// A cold partition's writer merges as soon as this many segments of a size are there (tantivy's
/// default is 8): each flush adds a segment, and the writer is closed right after, so merges
/// happen on the flush that makes the count.
const COLD_MERGE_MIN_SEGMENTS: usize = 4;

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

/// As [`operations`], for staged records: each parsed back from its stored JSON, one at a time
/// (only the documents are held for the whole partition, as for records added directly).
pub(crate) fn staged_operations(
    shared: &Shared,
    replay_through: Option<u64>,
    partition: &Partition,
    records: &[StagedRecord],
) -> Result<Vec<UserOperation>, IndexError> {
    let form = partition.open()?.uid_form;
    let mut ops = Vec::with_capacity(records.len());
    for r in records {
        let record = parse_staged(r)?;
        if let Some(op) = operation(
            shared,
            replay_through,
            partition,
            form,
            r.lsn,
            &record,
            Some(&r.stored),
        )? {
            ops.push(op);
        }
    }
    Ok(ops)
}

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

/// Staged records of one or more partitions being indexed on a thread: per partition a writer of
/// its own (one indexing thread) adds them, commits, makes them searchable and is closed, its
/// merges finishing on yet another thread.
pub(crate) struct Flight {
    /// `indexed_through` stays below this until the flight has landed.
    pub min_lsn: u64,
    pub max_lsn: u64,
    /// Records and counted bytes aboard: they count against the stage's budget until landed.
    pub records: usize,
    pub bytes: usize,
    thread: JoinHandle<Result<Closers, IndexError>>,
}

impl Flight {
    /// Starts a flight of `loads` (none empty). `replay_through`: as [`operations`].
    pub fn start(
        shared: Arc<Shared>,
        replay_through: Option<u64>,
        loads: Vec<Load>,
    ) -> Result<Flight, IndexError> {
        let lsns = loads
            .iter()
            .flat_map(|l| l.staged.records.iter().map(|r| r.lsn));
        let (min_lsn, max_lsn) = lsns.fold((u64::MAX, 0), |(lo, hi), l| (lo.min(l), hi.max(l)));
        let records = loads.iter().map(|l| l.staged.records.len()).sum();
        let bytes = loads.iter().map(|l| l.staged.bytes).sum();
        let dir = shared.dir.clone();
        let thread = std::thread::Builder::new()
            .name("codestax-flush".into())
            .spawn(move || fly(&shared, replay_through, loads))
            .map_err(|e| IndexError::io(dir, e))?;
        Ok(Flight {
            min_lsn,
            max_lsn,
            records,
            bytes,
            thread,
        })
    }

    /// Whether the flight is over (landing it will not wait).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the flight to end: every record aboard is committed and searchable, or the
    /// error that stopped it (then the write-ahead log still has them all).
    pub fn land(self, dir: &std::path::Path) -> Result<Closers, IndexError> {
        self.thread.join().unwrap_or_else(|_| {
            Err(IndexError::io(
                dir,
                std::io::Error::other("the thread indexing staged records panicked"),
            ))
        })
    }
}

/// The flight's thread: each load in turn.
fn fly(
    shared: &Shared,
    replay_through: Option<u64>,
    loads: Vec<Load>,
) -> Result<Closers, IndexError> {
    let mut closers = Vec::with_capacity(loads.len());
    for load in loads {
        let start = load.partition.key.start;
        match flush(shared, replay_through, load) {
            Ok(closer) => closers.push((start, closer)),
            Err(e) => {
                // No writer of this flight may hold a partition's lock after it failed.
                for (_, closer) in closers {
                    if let Some(c) = closer {
                        let _ = c.join();
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(closers)
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
    let ops = staged_operations(shared, replay_through, &partition, &staged.records)?;
    let n = staged.records.len();
    drop(staged);
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
    let mut merges = LogMergePolicy::default();
    merges.set_min_num_segments(COLD_MERGE_MIN_SEGMENTS);
    writer.set_merge_policy(Box::new(merges));
    // As the indexer's writers do: what a failed flush left (segments never committed, on a
    // full disk) goes before this one writes beside it, or every retry needs that room again.
    drop(writer.garbage_collect_files());
    if let Err(e) = writer.run(ops) {
        let cause = worker_error(writer).unwrap_or(e);
        return Err(IndexError::tantivy(dir, "add staged records", cause));
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
