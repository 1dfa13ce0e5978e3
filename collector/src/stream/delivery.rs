//! The delivery task of one stream: reads the org's committed records in `seq` order after its
//! cursor (at most [`BATCH_RECORDS`] at a time: bounded memory whatever the lag), keeps those
//! its filters match, encodes them in its format, hands the batch to its destination, and moves
//! its durable cursor only once the destination accepted it. Failures are retried forever, with
//! exponential backoff and jitter (`retrying`; `failed` at the longest backoff for answers
//! retrying will not fix). Caught up, it sleeps until the index commits new records.
//!
//! Each stream has its own task and its own connection, reads through the index's read handles
//! only, and never holds the ingest path: a slow or dead destination slows nothing else.
//! Records retention deleted before delivery (a gap in `seq` after the cursor) are counted and
//! written to the org's log as `audit_log.stream_records_expired`.

use super::allow::Allowlist;
use super::definition::{Format, Secrets, StreamDef};
use super::destination::{Item, SendError, Sender};
use super::shared::CursorStore;
use super::status::{State, StatusCell};
use super::store::{Cursor, StreamStore};
use crate::index::{AuditIndex, TailHead};
use crate::ingest::Ingest;
use crate::keys::COLLECTOR_ACTOR_ID;
use crate::tree::Trees;
use chrono::{DateTime, Utc};
use codestax_common::format::Context;
use codestax_common::record_view::RecordHead;
use codestax_common::{
    Actor, ActorKind, AuditRecord, Metadata, Outcome, Provenance, RESERVED_ID_PREFIX,
    SCHEMA_VERSION, Target, TargetKind,
};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most records in one batch.
pub const BATCH_RECORDS: usize = 500;
/// Most encoded bytes in one batch (a batch holds at least one record).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// Most records read past the cursor in one round (filtered-out ones included).
const SCAN_RECORDS: usize = 5000;
/// First retry delay, and the longest (also the pace of `failed` streams).
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A caught-up stream looks again this often even without a commit notice.
const IDLE_RECHECK: Duration = Duration::from_secs(5);
/// A delivered batch's cursor move is written at most this long after it was made (or at the
/// next batch, or when the task stops): delivery is at-least-once, so a crash re-delivers at
/// most this much more, and a busy stream writes its cursor once a second instead of once a
/// commit. Moves a crash must not repeat (an S3 batch's pending range, expired or truncated
/// records counted, a start resolved) are written at once.
pub const CURSOR_SYNC: Duration = Duration::from_secs(1);

/// What every delivery task shares.
#[derive(Clone)]
pub struct Deps {
    pub index: AuditIndex,
    pub trees: Arc<Trees>,
    pub ingest: Ingest,
    pub store: Arc<StreamStore>,
    pub allow: Allowlist,
    /// Tests shorten the backoff; production keeps [`BACKOFF_MAX`].
    pub backoff_max: Duration,
    /// What OCSF and ECS events say of the product and this collector.
    pub context: Context,
}

/// Exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff { attempt: 0, max }
    }

    /// The next delay: up to `BACKOFF_MIN * 2^attempt` (bounded by the maximum), at least half
    /// of it; `longest` jumps to the maximum.
    pub fn next(&mut self, longest: bool) -> Duration {
        let cap = if longest {
            self.max
        } else {
            let d = BACKOFF_MIN.saturating_mul(1u32 << self.attempt.min(16));
            self.attempt += 1;
            d.min(self.max)
        };
        let half = cap / 2;
        half + Duration::from_millis(rand::random_range(0..=half.as_millis() as u64))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// One round's read: the batch after the cursor, as far as it got.
struct Read {
    /// The records the filters keep, encoded in the stream's format, in `seq` order.
    items: Vec<Item>,
    /// The first and last `seq` read and handled (filtered-out ones included).
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// When the first record read was received.
    first_received: Option<DateTime<Utc>>,
    /// Runs of `seq` missing between the cursor and the last record read (deleted by retention
    /// before delivery), first and last of each.
    gaps: Vec<(u64, u64)>,
    /// Whether the read got to the end of what was committed (no bound stopped it), and the
    /// index's bound it read below: once this batch is delivered, every record after it has
    /// an LSN from there on.
    complete: bool,
    lsn_below: u64,
}

/// Why a round could not read its batch.
#[derive(Debug)]
enum ReadError {
    /// The index could not be read: retried.
    Index(crate::index::IndexError),
    /// A record the stream's format cannot encode: the stream waits (nothing is skipped).
    Encode(String),
}

/// How often a stream whose offered cursor names a record not imported yet looks again.
const AFTER_ID_WAIT: Duration = Duration::from_secs(1);

/// Runs the stream until `stop`, its cursor kept in `cursors`.
pub async fn run(
    deps: Deps,
    def: StreamDef,
    secrets: Secrets,
    status: Arc<StatusCell>,
    cursors: Arc<dyn CursorStore>,
    stop: CancellationToken,
) {
    let mut commits = deps.index.commits();
    // The index keeps the org's newest records in memory while the stream runs: a caught-up
    // stream reads them there, not from the segments.
    let _tail = deps.index.follow_tail(&def.org);
    // Every record of the org after the cursor has an LSN from here on (0: not known). Kept in
    // memory only; see `AuditIndex::for_each_chained_stored`.
    let mut since_lsn = 0;
    let mut backoff = Backoff::new(deps.backoff_max);
    let cursor = match cursors.read(&def.org, &def.id).await {
        Ok(Some(c)) => c,
        Ok(None) => Cursor::at(0),
        Err(e) => {
            fail(
                &status,
                State::Failed,
                format!("cannot read the cursor: {e}"),
            );
            tracing::error!(org = %def.org, stream = %def.id, error = %e, "stream cursor unreadable; the stream waits");
            stop.cancelled().await;
            return;
        }
    };
    status.update(|l| {
        l.delivered_seq = cursor.delivered_seq;
        l.expired_records = cursor.expired_records;
        l.truncated_records = cursor.truncated_records;
        l.last_success_at = cursor.last_success_at;
    });
    let mut sender = match Sender::new(&def.id, &def.destination, &secrets, deps.allow.clone()) {
        Ok(s) => s,
        Err(e) => {
            fail(&status, State::Failed, e.to_string());
            stop.cancelled().await;
            return;
        }
    };
    let mut kept = Kept {
        cursor,
        unsaved_since: None,
    };
    'deliver: loop {
        if stop.is_cancelled() {
            break;
        }
        // A single node's cursor offered to the cluster: find its record in this log.
        if let Some(id) = kept.cursor.after_id.clone() {
            let org = def.org.clone();
            let lookup = id.clone();
            match blocking(&deps, move |d| d.index.get(&org, &lookup)).await {
                Ok(Some(record)) => {
                    kept.cursor.delivered_seq = record.seq.unwrap_or(0);
                    kept.cursor.after_id = None;
                    kept.save(cursors.as_ref(), &def).await;
                    status.update(|l| l.delivered_seq = kept.cursor.delivered_seq);
                }
                Ok(None) => {
                    // Not imported yet: sending now could skip what comes before it.
                    fail(
                        &status,
                        State::Retrying,
                        format!(
                            "waiting for record {id}, the last this stream delivered before its \
                             data dir joined the cluster, to be imported into the org's log"
                        ),
                    );
                    pause(AFTER_ID_WAIT, &stop).await;
                    continue;
                }
                Err(e) => {
                    read_failed(&status, &mut backoff, &stop, e).await;
                    continue;
                }
            }
        }
        // A start or replay from a time: find its first record.
        if let Some(t) = kept.cursor.from_time {
            let org = def.org.clone();
            match blocking(&deps, move |d| {
                first_received_at_or_after(&d.index, &org, t)
            })
            .await
            {
                Ok(Some(seq)) => {
                    kept.cursor.delivered_seq = seq - 1;
                    kept.cursor.from_time = None;
                    kept.save(cursors.as_ref(), &def).await;
                    status.update(|l| l.delivered_seq = kept.cursor.delivered_seq);
                }
                Ok(None) => {
                    // Nothing received at or after it yet.
                    kept.idle(cursors.as_ref(), &def, &status, &mut commits, &stop)
                        .await;
                    continue;
                }
                Err(e) => {
                    fail(
                        &status,
                        State::Retrying,
                        format!("reading the records: {e}"),
                    );
                    pause(backoff.next(false), &stop).await;
                    continue;
                }
            }
        }

        let (org, from, until, filters, format) = (
            def.org.clone(),
            kept.cursor.delivered_seq + 1,
            kept.cursor.pending_last,
            def.filters.clone(),
            def.format,
        );
        // Commits from here on wake the idle wait below (those before are in this read).
        commits.borrow_and_update();
        let since = since_lsn;
        let read = match blocking(&deps, move |d| {
            Ok::<_, std::convert::Infallible>(read_after(
                &d.index, &org, from, until, since, &filters, format, &d.context,
            ))
        })
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(ReadError::Encode(e))) => {
                // Nothing is skipped: the stream waits until its format can encode.
                fail(&status, State::Failed, e);
                pause(backoff.next(true), &stop).await;
                continue;
            }
            Ok(Err(ReadError::Index(e))) => {
                fail(
                    &status,
                    State::Retrying,
                    format!("reading the records: {e}"),
                );
                pause(backoff.next(false), &stop).await;
                continue;
            }
            Err(e) => {
                fail(
                    &status,
                    State::Retrying,
                    format!("reading the records: {e}"),
                );
                pause(backoff.next(false), &stop).await;
                continue;
            }
        };
        let (Some(_), Some(last_seq)) = (read.first_seq, read.last_seq) else {
            if read.complete {
                since_lsn = read.lsn_below;
            }
            if !kept
                .idle(cursors.as_ref(), &def, &status, &mut commits, &stop)
                .await
            {
                // No commit for a while: the next read walks the whole org once more.
                since_lsn = 0;
            }
            continue;
        };
        status.update(|l| l.oldest_pending = read.first_received);

        // Records deleted by retention before this stream got to them.
        for &(first, last) in &read.gaps {
            let expired = last - first + 1;
            kept.cursor.expired_records += expired;
            tracing::warn!(org = %def.org, stream = %def.id, first, last, expired, "records expired before the stream delivered them");
            if let Err(e) = record_expired(&deps.ingest, &def, first, last).await {
                tracing::warn!(org = %def.org, stream = %def.id, error = %e, "cannot record the expired records in the audit log");
            }
        }
        status.update(|l| l.expired_records = kept.cursor.expired_records);
        let (items, complete) = (read.items, read.complete);

        // A node that lost the org's shard (a zombie waking up) sends nothing more; its task is
        // stopped once the lease is seen gone.
        while !cursors.may_act() {
            if stop.is_cancelled() {
                break 'deliver;
            }
            pause(BACKOFF_MIN, &stop).await;
        }
        let mut truncated = 0;
        if !items.is_empty()
            && sender.names_by_range()
            && kept.cursor.pending_last != Some(last_seq)
        {
            // Durable before the send: after a crash the same range is sent again.
            kept.cursor.pending_last = Some(last_seq);
            kept.save(cursors.as_ref(), &def).await;
        }
        if !items.is_empty() {
            loop {
                let sent = tokio::select! {
                    _ = stop.cancelled() => break 'deliver,
                    sent = sender.send(&items) => sent,
                };
                match sent {
                    Ok(d) => {
                        truncated = d.truncated;
                        break;
                    }
                    Err(e) => {
                        let (state, longest) = match &e {
                            SendError::Retryable(_) => (State::Retrying, false),
                            SendError::NonRetryable(_) => (State::Failed, true),
                        };
                        tracing::warn!(org = %def.org, stream = %def.id, error = %e, state = state.as_str(), "stream delivery failed; retrying");
                        fail(&status, state, e.to_string());
                        pause(backoff.next(longest), &stop).await;
                        if stop.is_cancelled() {
                            break 'deliver;
                        }
                    }
                }
            }
        }
        backoff.reset();
        let now = Utc::now();
        kept.cursor.delivered_seq = last_seq;
        kept.cursor.pending_last = None;
        kept.cursor.truncated_records += truncated;
        if !items.is_empty() {
            kept.cursor.last_success_at = Some(now);
        }
        // Counts a crash must not repeat are written at once; a plain move within CURSOR_SYNC.
        let at_once = !read.gaps.is_empty() || truncated > 0;
        kept.moved(cursors.as_ref(), &def, at_once).await;
        status.update(|l| {
            l.state = State::Healthy;
            l.last_error = None;
            l.delivered_seq = kept.cursor.delivered_seq;
            l.truncated_records = kept.cursor.truncated_records;
            l.delivered_records += items.len() as u64;
            if !items.is_empty() {
                l.last_success_at = Some(now);
            }
        });
        if complete {
            // Everything committed was delivered: read again after the next commit, not now
            // (a read now would find nothing), and from this read's bound on.
            since_lsn = read.lsn_below;
            if !kept
                .idle(cursors.as_ref(), &def, &status, &mut commits, &stop)
                .await
            {
                since_lsn = 0;
            }
        }
    }
    // Stopped (deleted, paused, replayed, shut down, or the shard lost): the registry waits
    // for this before it touches the cursor, so the last move is written first.
    if kept.unsaved_since.is_some() {
        kept.save(cursors.as_ref(), &def).await;
    }
}

/// The stream's cursor as delivery moved it, and since when its last move is not written.
struct Kept {
    cursor: Cursor,
    unsaved_since: Option<tokio::time::Instant>,
}

impl Kept {
    /// Writes the cursor now; a failure is logged and tried again within [`CURSOR_SYNC`] (a
    /// cursor behind what was delivered re-delivers after a restart or a takeover, never
    /// skips). In a cluster a write from a node that lost the shard is refused here.
    async fn save(&mut self, cursors: &dyn CursorStore, def: &StreamDef) {
        match cursors.write(&def.org, &def.id, &self.cursor).await {
            Ok(()) => self.unsaved_since = None,
            Err(e) => {
                tracing::warn!(org = %def.org, stream = %def.id, error = %e, "cannot write the stream cursor; it stays behind (records may be sent again after a restart)");
                self.unsaved_since = Some(tokio::time::Instant::now());
            }
        }
    }

    /// The cursor moved after a delivery: written now when `at_once` or when an earlier move
    /// has waited [`CURSOR_SYNC`], else by [`Self::idle`] or the next move.
    async fn moved(&mut self, cursors: &dyn CursorStore, def: &StreamDef, at_once: bool) {
        let since = *self
            .unsaved_since
            .get_or_insert_with(tokio::time::Instant::now);
        if at_once || since.elapsed() >= CURSOR_SYNC {
            self.save(cursors, def).await;
        }
    }

    /// [`idle`], writing an unwritten move once it has waited [`CURSOR_SYNC`].
    async fn idle(
        &mut self,
        cursors: &dyn CursorStore,
        def: &StreamDef,
        status: &StatusCell,
        commits: &mut tokio::sync::watch::Receiver<u64>,
        stop: &CancellationToken,
    ) -> bool {
        while let Some(since) = self.unsaved_since {
            tokio::select! {
                woke = idle(status, commits, stop) => return woke,
                _ = tokio::time::sleep_until(since + CURSOR_SYNC) => self.save(cursors, def).await,
            }
        }
        idle(status, commits, stop).await
    }
}

/// Runs `f` on a blocking thread with the deps.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    deps: &Deps,
    f: impl FnOnce(&Deps) -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    let deps = deps.clone();
    match tokio::task::spawn_blocking(move || f(&deps)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn fail(status: &StatusCell, state: State, error: String) {
    status.update(|l| {
        l.state = state;
        l.last_error = Some(error);
    });
}

/// The records could not be read: said in the status, tried again after the backoff.
async fn read_failed(
    status: &StatusCell,
    backoff: &mut Backoff,
    stop: &CancellationToken,
    e: String,
) {
    fail(status, State::Retrying, format!("reading the records: {e}"));
    pause(backoff.next(false), stop).await;
}

async fn pause(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Caught up: healthy (unless failing), until the index commits (`true`) or a while passes.
async fn idle(
    status: &StatusCell,
    commits: &mut tokio::sync::watch::Receiver<u64>,
    stop: &CancellationToken,
) -> bool {
    status.update(|l| {
        l.oldest_pending = None;
        if l.state != State::Failed {
            l.state = State::Healthy;
            l.last_error = None;
        }
    });
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = commits.changed() => true,
        _ = tokio::time::sleep(IDLE_RECHECK) => false,
    }
}

/// The org's committed records from `seq` `from` on (up to `until` when given), in `seq`
/// order, encoded from their stored bytes: at most [`SCAN_RECORDS`] read, [`BATCH_RECORDS`] and
/// [`BATCH_BYTES`] kept (at least one). Each is read as its [`RecordHead`] only; a `native`
/// stream passes the stored bytes on, and no `AuditRecord` is built for a record the filters
/// drop.
#[allow(clippy::too_many_arguments)]
fn read_after(
    index: &AuditIndex,
    org: &str,
    from: u64,
    until: Option<u64>,
    since_lsn: u64,
    filters: &super::definition::Filters,
    format: Format,
    cx: &Context,
) -> Result<Read, ReadError> {
    let mut read = Read {
        items: Vec::new(),
        first_seq: None,
        last_seq: None,
        first_received: None,
        gaps: Vec::new(),
        complete: true,
        lsn_below: 0,
    };
    let (mut scanned, mut bytes) = (0, 0);
    let mut encode_error = None;
    let org_name: Arc<str> = Arc::from(org);
    read.lsn_below = index
        .for_each_chained_stored(org, from, since_lsn, |dir, stored, from_tail| {
            let corrupt = |e: &dyn std::fmt::Display| crate::index::IndexError::Corrupt {
                path: dir.to_path_buf(),
                message: e.to_string(),
            };
            // A record from the tail comes with its place; without filters to look into, its
            // JSON is not parsed (that parse was the largest part of what streams cost ingest).
            let (seq, head) = match from_tail {
                Some(t) if filters.is_empty() => (t.seq, Head::Tail(&t.head)),
                _ => {
                    let head: RecordHead =
                        serde_json::from_slice(stored).map_err(|e| corrupt(&e))?;
                    let Some(seq) = head.seq else { return Ok(true) };
                    (seq, Head::Parsed(head))
                }
            };
            if until.is_some_and(|u| seq > u) {
                // The pending batch ends here; the next round reads on.
                read.complete = false;
                return Ok(false);
            }
            let received_at = match &head {
                Head::Tail(h) => h.received_at,
                Head::Parsed(h) => h
                    .received_at
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(|e| corrupt(&e))?,
            };
            let passes = match &head {
                Head::Tail(_) => true,
                Head::Parsed(h) => filters.matches_view(h),
            };
            let item = if passes {
                let json = match format.encode_stored(stored, from_tail.map(|t| &t.json), cx) {
                    Ok(json) => json,
                    Err(e) => {
                        encode_error = Some(e);
                        read.complete = false;
                        return Ok(false);
                    }
                };
                // The byte bound: this record waits for the next batch.
                if !read.items.is_empty() && bytes + json.len() > BATCH_BYTES {
                    read.complete = false;
                    return Ok(false);
                }
                bytes += json.len();
                let (id, time) = match &head {
                    Head::Tail(h) => (h.id.clone(), h.time),
                    Head::Parsed(h) => (
                        h.id.as_deref().map(Arc::from),
                        parse_time(&h.time).map_err(|e| corrupt(&e))?,
                    ),
                };
                Some(Item {
                    seq,
                    id: id.unwrap_or_else(|| Arc::from("")),
                    org: org_name.clone(),
                    time,
                    // Committed records carry it; the record's time is the best stand-in.
                    received_at: received_at.unwrap_or(time),
                    json,
                })
            } else {
                None
            };
            let expected = read.last_seq.map_or(from, |s| s + 1);
            if seq > expected {
                read.gaps.push((expected, seq - 1));
            }
            if read.first_seq.is_none() {
                read.first_seq = Some(seq);
                read.first_received = received_at;
            }
            read.last_seq = Some(seq);
            scanned += 1;
            read.items.extend(item);
            let more = read.items.len() < BATCH_RECORDS && scanned < SCAN_RECORDS;
            read.complete = more;
            Ok(more)
        })
        .map_err(ReadError::Index)?;
    // A record that cannot be encoded stops the stream only when nothing before it was read:
    // what was read goes first.
    match encode_error {
        Some(e) if read.first_seq.is_none() => Err(ReadError::Encode(e)),
        _ => Ok(read),
    }
}

/// What places a record read: kept by the tail, or parsed from its JSON.
// A local, one record at a time: boxing the parsed head would allocate per record.
#[allow(clippy::large_enum_variant)]
enum Head<'a> {
    Tail(&'a TailHead),
    Parsed(RecordHead<'a>),
}

/// A stored time (RFC 3339, UTC).
fn parse_time(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// The `seq` of the org's first record received at or after `t`.
fn first_received_at_or_after(
    index: &AuditIndex,
    org: &str,
    t: DateTime<Utc>,
) -> Result<Option<u64>, crate::index::IndexError> {
    let mut found = None;
    index.for_each_chained(org, 1, |r| {
        if r.received_at.is_some_and(|at| at >= t) {
            found = r.seq;
            return false;
        }
        true
    })?;
    Ok(found)
}

/// Writes `audit_log.stream_records_expired` for `first..=last` into the org's log. Its id is
/// derived from the stream and the range, so writing it again after a crash is deduplicated.
async fn record_expired(
    ingest: &Ingest,
    def: &StreamDef,
    first: u64,
    last: u64,
) -> Result<(), String> {
    let mut metadata = Metadata::default();
    for (k, v) in [
        ("stream_id", serde_json::Value::from(def.id.clone())),
        ("stream_name", def.name.clone().into()),
        ("first_seq", first.into()),
        ("last_seq", last.into()),
        ("records", (last - first + 1).into()),
    ] {
        metadata.extra.insert(k.to_string(), v);
    }
    let mut record = entry_about(
        def,
        format!("stream-expired-{}-{first}-{last}", def.id),
        "audit_log.stream_records_expired",
        format!(
            "{} records (seq {first} to {last}) expired before stream {} delivered them",
            last - first + 1,
            def.id
        ),
    );
    record.outcome = Outcome::Failure;
    record.metadata = metadata;
    ingest
        .submit_collector_entry(record)
        .await
        .map_err(|e| e.to_string())
}

/// A test event: what a record of the stream looks like, marked as a test, not from the log.
pub fn test_item(def: &StreamDef, cx: &Context) -> Result<Item, String> {
    let mut record = entry_about(
        def,
        format!("stream-test-{}", Utc::now().timestamp_micros()),
        "audit_log.stream_changed",
        format!("test event of stream {} (not an audit record)", def.id),
    );
    record.received_at = Some(record.time);
    record.seq = Some(0);
    record.provenance = Some(Provenance::Collector);
    let json = def.format.encode(&record, cx)?;
    Ok(Item {
        seq: 0,
        id: record.id.unwrap_or_default().into(),
        org: def.org.as_str().into(),
        time: record.time,
        received_at: record.time,
        json: json.into(),
    })
}

/// An entry of the collector (actor `codestax-collector`) about stream `def`, id
/// `codestax:<id>`.
fn entry_about(def: &StreamDef, id: String, action: &str, message: String) -> AuditRecord {
    AuditRecord {
        id: Some(format!("{RESERVED_ID_PREFIX}{id}")),
        org_id: def.org.clone(),
        time: codestax_common::time::truncate_to_micros(Utc::now()),
        actor: Actor {
            id: COLLECTOR_ACTOR_ID.to_string(),
            name: None,
            email: None,
            kind: ActorKind::System,
        },
        action: action.into(),
        category: "audit_log".into(),
        target: Some(Target {
            kind: TargetKind::Integration,
            id: Some(def.id.clone()),
            name: Some(def.name.clone()),
        }),
        repository: None,
        outcome: Outcome::Success,
        message: Some(message),
        metadata: Metadata::default(),
        schema_version: SCHEMA_VERSION,
        received_at: None,
        seq: None,
        prev_hash: None,
        provenance: None,
        hash: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(4));
        let first = b.next(false);
        assert!(
            first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN,
            "{first:?}"
        );
        for _ in 0..20 {
            assert!(b.next(false) <= Duration::from_secs(4));
        }
        let longest = b.next(true);
        assert!(longest >= Duration::from_secs(2), "{longest:?}");
        b.reset();
        assert!(b.next(false) <= BACKOFF_MIN);
    }
}
