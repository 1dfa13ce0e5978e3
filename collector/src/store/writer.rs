//! `Store`: the handle that makes submitted records durable, and the group-committing writer
//! thread behind it that owns the [`Wal`] and the [`DedupeSet`].

use crate::health::{Health, Part};
use crate::store::backlog::Backlog;
use crate::store::dedupe::{DedupeSet, Fingerprints, IdLookup, Prehashed, Seen};
use crate::store::wal::{Lsn, MAX_ENTRY_BYTES, Wal, WalEntries, WalError, WalReader};
use crate::tree::{TreeError, Trees};
use crate::uid::uid_hash;
use codestax_common::chain::{ChainHead, SEAL_OVERHEAD_BYTES, Unsealed};
use codestax_common::merkle::Hash;
use codestax_common::{AuditRecord, Provenance};
use codestax_storage::{Committer, Disk, GroupCommit, GroupOptions, RealDisk};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How the store writes. Runtime values: built from the collector's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// A new WAL segment is started when the next group would take the active one past this
    /// size, in bytes.
    pub segment_bytes: u64,
    /// Bytes a WAL append leaves free on the WAL's file system ([`Wal::keep_free`]); 0: none.
    pub keep_free_bytes: u64,
    /// How long the writer waits for more submissions to join a group, while other submitters
    /// are known to be on their way. Zero never waits. A lone submitter is never delayed.
    pub group_commit_max_wait: Duration,
    /// A group stops taking submissions once it holds this many records.
    pub max_group_records: usize,
    /// A group stops taking submissions once it holds this many payload bytes.
    pub max_group_bytes: usize,
    /// Submissions that may wait for the writer; beyond this `submit` waits (back-pressure).
    pub queue_depth: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_bytes: 64 << 20,
            keep_free_bytes: 0,
            group_commit_max_wait: Duration::from_millis(2),
            max_group_records: 10_000,
            max_group_bytes: 16 << 20,
            queue_depth: 1024,
        }
    }
}

/// What happened to one submitted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Newly stored (durable) at this LSN.
    Stored { lsn: Lsn },
    /// Already stored earlier (or earlier in the same submission), with the same content; not
    /// stored again.
    Duplicate,
    /// Its id is already stored (or earlier in the same submission) for a record with other
    /// content: another record, not a resend. Not stored; the sender is told.
    IdConflict,
    /// A restored record ([`Store::restore`]) that does not continue its org's chain here (its
    /// `seq`, `prev_hash` or `hash` do not follow the head): not stored.
    ChainConflict,
}

/// Newly stored records for the indexer, in LSN order.
#[derive(Debug)]
pub struct IndexBatch {
    pub records: Vec<(Lsn, AuditRecord)>,
    /// Each record's canonical JSON (its WAL payload), in the same order: the index stores it.
    pub stored: Vec<String>,
    /// When the records were fsynced, just before their acks: the start of their wait to become
    /// searchable (`index_lag_seconds`).
    pub durable_at: std::time::Instant,
}

/// A snapshot of the store's counters, for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Submissions answered (with admissions or an error).
    pub submissions: u64,
    /// Groups committed (each one WAL append and at most one fsync).
    pub groups: u64,
    /// Records newly stored.
    pub records_stored: u64,
    /// Records acknowledged as duplicates.
    pub duplicates: u64,
    /// Records refused because their id is stored for other content.
    pub id_conflicts: u64,
    /// Successful WAL fsyncs.
    pub fsyncs: u64,
    /// Total time spent in successful fsyncs.
    pub fsync_time: Duration,
    /// Groups that failed to append or sync.
    pub storage_errors: u64,
    /// Failed writes or syncs of the Merkle trees (what they lost is taken again from the WAL).
    pub tree_errors: u64,
    /// The LSN the next stored record will get.
    pub next_lsn: Lsn,
}

/// What can go wrong opening the store or submitting to it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store options: {0}")]
    InvalidOptions(&'static str),
    #[error("cannot open the write-ahead log")]
    Open(#[source] WalError),
    #[error("cannot read the write-ahead log")]
    Read(#[source] WalError),
    #[error("WAL entry at LSN {lsn} is not a valid record")]
    Replay {
        lsn: Lsn,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the index has records through LSN {indexed_through} but the write-ahead log ends before \
         LSN {next_lsn}; was the WAL directory replaced?"
    )]
    WalBehindIndex { indexed_through: Lsn, next_lsn: Lsn },
    #[error("cannot start the store's writer thread")]
    Spawn(#[source] io::Error),
    #[error("cannot bring the Merkle trees up to the write-ahead log")]
    Tree(#[source] TreeError),
    #[error("record {index} is {len} bytes, over the limit of {MAX_ENTRY_BYTES} bytes")]
    RecordTooLarge { index: usize, len: usize },
    /// The group this submission was in could not be made durable; none of it was stored.
    #[error("{}", if *.storage_full { "storage is full; nothing was stored" } else { "storage failed; nothing was stored" })]
    Storage {
        #[source]
        source: Arc<WalError>,
        storage_full: bool,
    },
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Whether this is a full disk: shed load (HTTP 503) and let the client retry.
    pub fn is_storage_full(&self) -> bool {
        matches!(
            self,
            StoreError::Storage {
                storage_full: true,
                ..
            }
        )
    }
}

/// A cloneable handle to the durable ingest path. See the [module docs](crate::store).
#[derive(Debug, Clone)]
pub struct Store {
    writer: GroupCommit<Submission>,
    shared: Arc<Shared>,
    entries: WalEntries,
    /// The WAL's entries the index has not committed ([`Store::room_kept_free`]).
    backlog: Arc<Mutex<Backlog>>,
    keep_free_bytes: u64,
    fingerprints: Fingerprints,
}

/// Records read back from the WAL, as `(lsn, record, payload)`; see [`Store::read_stored`].
/// Stops after the first error.
#[derive(Debug)]
pub struct StoredRecords(WalReader);

impl Iterator for StoredRecords {
    type Item = Result<(Lsn, AuditRecord, String), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.0.next()?;
        Some(entry.map_err(StoreError::Read).and_then(|(lsn, payload)| {
            let record = parse_entry(lsn, &payload)?;
            let json = String::from_utf8(payload).map_err(|e| StoreError::Replay {
                lsn,
                source: serde::de::Error::custom(e),
            })?;
            Ok((lsn, record, json))
        }))
    }
}

/// The record of the WAL entry at `lsn`.
fn parse_entry(lsn: Lsn, payload: &[u8]) -> Result<AuditRecord, StoreError> {
    serde_json::from_slice(payload).map_err(|source| StoreError::Replay { lsn, source })
}

#[derive(Debug, Default)]
struct Shared {
    submissions: AtomicU64,
    groups: AtomicU64,
    records_stored: AtomicU64,
    duplicates: AtomicU64,
    id_conflicts: AtomicU64,
    fsyncs: AtomicU64,
    fsync_nanos: AtomicU64,
    storage_errors: AtomicU64,
    tree_errors: AtomicU64,
    next_lsn: AtomicU64,
    /// One past the highest LSN the index has made visible and durable; 0 for none.
    indexed_before: AtomicU64,
    /// Woken whenever `indexed_before` moves ([`Store::wait_indexed_through`]).
    indexed: tokio::sync::Notify,
}

#[derive(Debug)]
struct Submission {
    records: Vec<AuditRecord>,
    /// Each record's canonical JSON, ready to be sealed into the org's hash chain.
    prepared: Vec<Unsealed>,
    hashes: Vec<u64>,
    /// Each record's content fingerprint: a resend must match what is stored.
    fingerprints: Vec<u64>,
    bytes: usize,
    /// The records are already sealed (a snapshot restored): they keep their chain fields,
    /// which must continue each org's chain.
    sealed: bool,
    /// Chain heads to move to before this submission's records, where further along
    /// ([`Store::continue_chains`]).
    heads: Vec<(String, ChainHead)>,
    reply: oneshot::Sender<Result<Vec<Admission>, StoreError>>,
}

impl Store {
    /// Opens the store in `dir` and starts its writer thread. Blocking (file I/O): call it at
    /// startup, or from `spawn_blocking`. Works with or without a Tokio runtime.
    ///
    /// Recovery: the index tells what it has — `hashes` (the `uid_hash` of every record it
    /// holds), `lookup` (exact membership) and `indexed_through` (the highest LSN it has durably
    /// committed, `None` if empty). The WAL is opened (its torn tail cut), segments wholly at or
    /// below `indexed_through` are deleted, and the entries after it are parsed, entered in the
    /// dedupe set and returned in LSN order: feed them to the indexer before serving. Entries the
    /// index already has (it may be ahead of what it reported) are skipped.
    ///
    /// Hash chains: `chain_heads` holds, per org, the `seq` and `hash` of the org's last record
    /// the index holds (and, once retention deletes records, of its checkpoint when that is
    /// newer). The WAL entries read here carry their own chain fields and may take an org's head
    /// further. Every record stored from now on continues its org's chain from there.
    ///
    /// Newly stored records go to `sink`; the writer waits when it is full. Whether the WAL
    /// writes goes to `health`: a failed group marks it failing, the next group that is written
    /// clears that.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: &Path,
        opts: StoreOptions,
        lookup: Arc<dyn IdLookup>,
        hashes: impl IntoIterator<Item = u64>,
        indexed_through: Option<Lsn>,
        chain_heads: HashMap<String, ChainHead>,
        sink: mpsc::Sender<IndexBatch>,
        health: Health,
    ) -> Result<(Store, Vec<(Lsn, AuditRecord)>), StoreError> {
        let disk = Arc::new(RealDisk);
        Store::open_on(
            dir,
            opts,
            lookup,
            hashes,
            indexed_through,
            chain_heads,
            sink,
            health,
            disk,
            None,
        )
    }

    /// [`Store::open`], keeping each org's Merkle tree in `trees`: at open the trees take in
    /// every record the WAL still holds (from its oldest entry; they skip what they have), and
    /// every group stored from then on is appended to them once durable. The trees are synced
    /// before WAL segments are deleted, so a record the trees might lack is always still in the
    /// WAL ([`crate::tree`]).
    #[allow(clippy::too_many_arguments)]
    pub fn open_with_trees(
        dir: &Path,
        opts: StoreOptions,
        lookup: Arc<dyn IdLookup>,
        hashes: impl IntoIterator<Item = u64>,
        indexed_through: Option<Lsn>,
        chain_heads: HashMap<String, ChainHead>,
        sink: mpsc::Sender<IndexBatch>,
        health: Health,
        trees: Arc<Trees>,
    ) -> Result<(Store, Vec<(Lsn, AuditRecord)>), StoreError> {
        Store::open_on(
            dir,
            opts,
            lookup,
            hashes,
            indexed_through,
            chain_heads,
            sink,
            health,
            Arc::new(RealDisk),
            Some(trees),
        )
    }

    /// [`Store::open`], with the WAL writing through `disk`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_on(
        dir: &Path,
        opts: StoreOptions,
        lookup: Arc<dyn IdLookup>,
        hashes: impl IntoIterator<Item = u64>,
        indexed_through: Option<Lsn>,
        chain_heads: HashMap<String, ChainHead>,
        sink: mpsc::Sender<IndexBatch>,
        health: Health,
        disk: Arc<dyn Disk>,
        trees: Option<Arc<Trees>>,
    ) -> Result<(Store, Vec<(Lsn, AuditRecord)>), StoreError> {
        if opts.queue_depth == 0 {
            return Err(StoreError::InvalidOptions("queue_depth must be at least 1"));
        }
        if opts.max_group_records == 0 || opts.max_group_bytes == 0 {
            return Err(StoreError::InvalidOptions(
                "max_group_records and max_group_bytes must be at least 1",
            ));
        }
        let mut wal = Wal::open_on(dir, opts.segment_bytes, disk).map_err(StoreError::Open)?;
        wal.keep_free(opts.keep_free_bytes);
        if let Some(indexed) = indexed_through
            && indexed >= wal.next_lsn()
        {
            return Err(StoreError::WalBehindIndex {
                indexed_through: indexed,
                next_lsn: wal.next_lsn(),
            });
        }

        let hashes = hashes.into_iter();
        let fingerprints = Fingerprints::default();
        let mut dedupe = DedupeSet::new(lookup);
        dedupe.reserve(hashes.size_hint().0);
        for h in hashes {
            dedupe.insert_hash(h);
        }

        let start = indexed_through.map_or(0, |l| l + 1);
        if start < wal.first_lsn() {
            tracing::error!(
                indexed_through,
                wal_first_lsn = wal.first_lsn(),
                "the WAL no longer has records the index is missing; they cannot be recovered"
            );
        }
        let mut replay = Vec::new();
        let mut chain = chain_heads;
        // The trees take in everything the WAL holds; the index only what it lacks.
        let read_from = if trees.is_some() {
            start.min(wal.first_lsn())
        } else {
            start
        };
        for entry in wal.read_from(read_from).map_err(StoreError::Read)? {
            let (lsn, payload) = entry.map_err(StoreError::Read)?;
            let record = parse_entry(lsn, &payload)?;
            if let Some(trees) = &trees {
                match trees.replay(&record) {
                    Ok(()) | Err(TreeError::Gap { .. } | TreeError::Diverged { .. }) => {}
                    Err(e) => return Err(StoreError::Tree(e)),
                }
            }
            if lsn < start {
                continue;
            }
            wal.count_unindexed(lsn, payload.len());
            advance_head(&mut chain, &record, lsn);
            let hash = uid_hash(&record.org_id, record.id());
            let time = record.time.timestamp_micros();
            if dedupe.contains(&record.org_id, record.id(), hash, time) {
                tracing::debug!(lsn, "WAL record already indexed; not replayed");
                continue;
            }
            let fingerprint = fingerprints.of(&record);
            dedupe.insert_recent(&record.org_id, record.id(), hash, fingerprint, lsn);
            replay.push((lsn, record));
        }
        if let Some(trees) = &trees {
            trees.sync_all().map_err(StoreError::Tree)?;
        }
        if let Some(indexed) = indexed_through {
            wal.remove_before(indexed + 1).map_err(StoreError::Open)?;
        }
        tracing::info!(
            dir = %dir.display(),
            next_lsn = wal.next_lsn(),
            segments = wal.segment_count(),
            known = dedupe.len(),
            replay = replay.len(),
            chains = chain.len(),
            "store opened"
        );

        let shared = Arc::new(Shared::default());
        shared.next_lsn.store(wal.next_lsn(), Ordering::Relaxed);
        shared
            .indexed_before
            .store(indexed_through.map_or(0, |l| l + 1), Ordering::Relaxed);
        let group = GroupOptions {
            max_wait: opts.group_commit_max_wait,
            max_requests: usize::MAX,
            max_records: opts.max_group_records,
            max_bytes: opts.max_group_bytes,
            queue_depth: Some(opts.queue_depth),
        };
        let entries = wal.entries();
        let backlog = wal.backlog();
        let writer = Writer {
            tree_synced_before: wal.next_lsn(),
            wal,
            dedupe,
            fingerprints: fingerprints.clone(),
            chain,
            trees,
            tree_behind_from: None,
            sink,
            indexed_before: indexed_through.map_or(0, |l| l + 1),
            sink_closed: false,
            shared: shared.clone(),
            health,
        };
        let writer =
            GroupCommit::start("store-writer", writer, group).map_err(StoreError::Spawn)?;
        Ok((
            Store {
                writer,
                shared,
                entries,
                backlog,
                keep_free_bytes: opts.keep_free_bytes,
                fingerprints,
            },
            replay,
        ))
    }

    /// The records stored at LSN ≥ `from`, in LSN order, each with its WAL payload (the sealed
    /// canonical JSON the index stores), read while the store runs: for the indexer, which
    /// re-reads what it had not committed when it failed. Reads what was durable when called.
    /// The WAL keeps every record the index has not committed (see
    /// [`Store::mark_indexed_through`]).
    pub fn read_stored(&self, from: Lsn) -> StoredRecords {
        StoredRecords(self.entries.read_from(from))
    }

    /// Stores the new records among `records` durably and says, in order, what happened to each.
    /// Resolves only after every record reported `Stored` is fsynced. Records must have `id` and
    /// `received_at` set. On a storage error nothing of this submission was stored.
    pub async fn submit(&self, records: Vec<AuditRecord>) -> Result<Vec<Admission>, StoreError> {
        self.send(records, false).await
    }

    /// Stores records that are already sealed, keeping their `seq`, `prev_hash` and `hash`: a
    /// shard's snapshot taken over from its previous owner (docs/cluster.md). Records already
    /// stored are duplicates; a new record must continue its org's chain exactly (the next
    /// `seq`, the head's hash as `prev_hash`, a `hash` that recomputes), or it is refused as
    /// [`Admission::ChainConflict`].
    pub async fn restore(&self, records: Vec<AuditRecord>) -> Result<Vec<Admission>, StoreError> {
        self.send(records, true).await
    }

    /// Moves each org's chain head to the one given where that is further along (by `seq`),
    /// never back: a shard taken over whose previous owner's retention deleted records
    /// continues its orgs' chains after them. Call it only with heads kept durably elsewhere
    /// (the retention checkpoints), as the store's own heads come from there at open.
    pub async fn continue_chains(&self, heads: Vec<(String, ChainHead)>) -> Result<(), StoreError> {
        if heads.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            records: Vec::new(),
            prepared: Vec::new(),
            hashes: Vec::new(),
            fingerprints: Vec::new(),
            bytes: 0,
            sealed: true,
            heads,
            reply,
        };
        self.writer
            .send_when_room(submission)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?.map(|_| ())
    }

    async fn send(
        &self,
        records: Vec<AuditRecord>,
        sealed: bool,
    ) -> Result<Vec<Admission>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut prepared = Vec::with_capacity(records.len());
        let mut hashes = Vec::with_capacity(records.len());
        let mut fingerprints = Vec::with_capacity(records.len());
        let mut bytes = 0;
        for (index, r) in records.iter().enumerate() {
            debug_assert!(r.id.is_some(), "submitted records must have an id");
            debug_assert!(
                r.received_at.is_some(),
                "submitted records must have received_at"
            );
            // Serialised here, on the submitter's thread; the writer only seals.
            let unsealed = Unsealed::new(r);
            let len = unsealed.len() + SEAL_OVERHEAD_BYTES;
            if len > MAX_ENTRY_BYTES {
                return Err(StoreError::RecordTooLarge { index, len });
            }
            bytes += len;
            fingerprints.push(self.fingerprints.of_unsealed(&unsealed));
            prepared.push(unsealed);
            hashes.push(uid_hash(&r.org_id, r.id()));
        }
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            records,
            prepared,
            hashes,
            fingerprints,
            bytes,
            sealed,
            heads: Vec::new(),
            reply,
        };
        self.writer
            .send_when_room(submission)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Tells the store that the index has durably committed, and can find, every record with
    /// LSN ≤ `lsn`. The writer then drops them from the recent map (the index answers for them)
    /// and deletes WAL segments that hold only such records. Call it only after the commit and
    /// the reader reload.
    pub fn mark_indexed_through(&self, lsn: Lsn) {
        self.shared
            .indexed_before
            .fetch_max(lsn.saturating_add(1), Ordering::AcqRel);
        self.shared.indexed.notify_waiters();
    }

    /// Resolves once the index has durably committed every record with LSN ≤ `lsn` (as
    /// [`Store::mark_indexed_through`] reports it): for a consumer that acknowledges its source
    /// only once what it stored is searchable and survives a restart without the WAL.
    pub async fn wait_indexed_through(&self, lsn: Lsn) {
        loop {
            // Registered before the check, so a mark between the two is not missed.
            let marked = self.shared.indexed.notified();
            if self.shared.indexed_before.load(Ordering::Acquire) > lsn {
                return;
            }
            marked.await;
        }
    }

    /// The bytes a WAL append must leave free on its disk now: `keep_free_bytes`, plus the room
    /// committing what the index has not committed yet takes ([`Backlog::room`]). For the probe
    /// of a full disk, which must not call the WAL writable while an append would be refused.
    pub fn room_kept_free(&self) -> u64 {
        room_kept_free(&self.backlog, &self.shared, self.keep_free_bytes)
    }

    /// [`Self::room_kept_free`] as a function holding only what it reads, not the store (which
    /// holds the index): what the index's merges leave free (`crate::index::MergeRoom`).
    pub fn room_kept_free_fn(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let (backlog, shared) = (self.backlog.clone(), self.shared.clone());
        let keep_free_bytes = self.keep_free_bytes;
        move || room_kept_free(&backlog, &shared, keep_free_bytes)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StoreStats {
        let s = &self.shared;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStats {
            submissions: get(&s.submissions),
            groups: get(&s.groups),
            records_stored: get(&s.records_stored),
            duplicates: get(&s.duplicates),
            id_conflicts: get(&s.id_conflicts),
            fsyncs: get(&s.fsyncs),
            fsync_time: Duration::from_nanos(get(&s.fsync_nanos)),
            storage_errors: get(&s.storage_errors),
            tree_errors: get(&s.tree_errors),
            next_lsn: get(&s.next_lsn),
        }
    }

    /// Drops this handle and waits until the writer has stopped and released the WAL, which
    /// happens once every clone is dropped and queued submissions are answered.
    pub async fn close(self) {
        self.writer.close().await;
    }
}

/// [`Store::room_kept_free`], from its parts.
fn room_kept_free(backlog: &Mutex<Backlog>, shared: &Shared, keep_free_bytes: u64) -> u64 {
    let mut backlog = crate::store::backlog::lock(backlog);
    backlog.indexed_before(shared.indexed_before.load(Ordering::Acquire));
    backlog.room(keep_free_bytes, 0)
}

/// Whether a restored record is exactly the one its org's chain expects next: number `seq`
/// after `prev_hash`, with the hash its content recomputes to (`hash`).
fn continues(record: &AuditRecord, seq: u64, prev_hash: &str, hash: &str) -> bool {
    record.seq == Some(seq)
        && record.prev_hash.as_deref() == Some(prev_hash)
        && record.hash.as_deref() == Some(hash)
}

/// The single owner of the WAL and the dedupe set.
/// Takes an org's chain head to `record` if the record is further along; says so when the chain
/// jumps (records the index and the WAL both lack: the chain will not verify across the gap).
fn advance_head(heads: &mut HashMap<String, ChainHead>, record: &AuditRecord, lsn: Lsn) {
    let Some(next) = ChainHead::of(record) else {
        return; // written before records were chained
    };
    match heads.get_mut(&record.org_id) {
        Some(head) if next.seq <= head.seq => {}
        Some(head) => {
            if next.seq != head.seq + 1 {
                tracing::error!(
                    org = %record.org_id,
                    lsn,
                    from = head.seq,
                    to = next.seq,
                    "the hash chain jumps: records between are in neither the index nor the WAL"
                );
            }
            *head = next;
        }
        None => {
            heads.insert(record.org_id.clone(), next);
        }
    }
}

struct Writer {
    wal: Wal,
    dedupe: DedupeSet,
    /// The same key as the submitters' ([`Store`]), for records the index gives back.
    fingerprints: Fingerprints,
    /// Each org's hash-chain head: the `seq` and `hash` of its last durable record.
    chain: HashMap<String, ChainHead>,
    /// Each org's Merkle tree, when kept.
    trees: Option<Arc<Trees>>,
    /// Every record with an LSN below this is durably in the trees: WAL segments above it stay.
    tree_synced_before: Lsn,
    /// The trees may lack records from this LSN on (a failed tree write): they are taken again
    /// from the WAL before the next group's.
    tree_behind_from: Option<Lsn>,
    sink: mpsc::Sender<IndexBatch>,
    /// `Shared::indexed_before` as last applied.
    indexed_before: Lsn,
    sink_closed: bool,
    shared: Arc<Shared>,
    health: Health,
}

impl Committer for Writer {
    type Request = Submission;

    fn weight(s: &Submission) -> (usize, usize) {
        (s.records.len(), s.bytes)
    }

    fn before_group(&mut self) {
        self.apply_indexed();
    }

    async fn commit(&mut self, group: Vec<Submission>) {
        self.commit_group(group).await;
    }
}

impl Writer {
    async fn commit_group(&mut self, mut group: Vec<Submission>) {
        // Heads to continue from come first: a restore sends them before the records after them.
        for (org, head) in group.iter_mut().flat_map(|s| std::mem::take(&mut s.heads)) {
            match self.chain.get(&org) {
                Some(h) if h.seq >= head.seq => {}
                _ => {
                    self.chain.insert(org, head);
                }
            }
        }
        // Dedupe against the store and within the group; the first copy of an id wins, and a
        // later one is a duplicate only if it says the same.
        let mut admissions: Vec<Vec<Admission>> = group
            .iter()
            .map(|s| vec![Admission::Duplicate; s.records.len()])
            .collect();
        let mut new: Vec<(usize, usize)> = Vec::new();
        let mut in_group: HashMap<u64, Vec<(usize, usize)>, Prehashed> = HashMap::default();
        let mut id_conflicts = 0;
        for (si, sub) in group.iter().enumerate() {
            for (ri, rec) in sub.records.iter().enumerate() {
                let hash = sub.hashes[ri];
                let earlier = in_group.get(&hash).and_then(|v| {
                    v.iter().find(|&&(s, i)| {
                        let other = &group[s].records[i];
                        other.org_id == rec.org_id && other.id() == rec.id()
                    })
                });
                let stored_fingerprint = match earlier {
                    Some(&(s, i)) => Some(group[s].fingerprints[i]),
                    None => match self.dedupe.seen(
                        &rec.org_id,
                        rec.id(),
                        hash,
                        rec.time.timestamp_micros(),
                    ) {
                        Seen::New => None,
                        Seen::Recent { fingerprint } => Some(fingerprint),
                        Seen::Indexed(stored) => Some(self.fingerprints.of(&stored)),
                    },
                };
                match stored_fingerprint {
                    None => {
                        in_group.entry(hash).or_default().push((si, ri));
                        new.push((si, ri));
                    }
                    // A restored snapshot's record stored here already: the chain checks decide.
                    Some(_) if sub.sealed => {}
                    // The collector's ids are its own (no other writer may take one): an entry
                    // written again after a crash is the same entry, at another time.
                    Some(_) if rec.provenance == Some(Provenance::Collector) => {}
                    Some(stored) if stored != sub.fingerprints[ri] => {
                        tracing::warn!(
                            org = %rec.org_id,
                            id = rec.id(),
                            "a record's id is already stored for a record with other content; not stored"
                        );
                        admissions[si][ri] = Admission::IdConflict;
                        id_conflicts += 1;
                    }
                    Some(_) => {}
                }
            }
        }

        // Number and chain the new records per org, in LSN order. Tentative: the chain heads
        // move only once the group is durable.
        let genesis = ChainHead::genesis();
        let mut heads: HashMap<String, ChainHead> = HashMap::new();
        let mut sealed = Vec::with_capacity(new.len());
        let mut conflicts = 0;
        new.retain(|&(s, i)| {
            let record = &group[s].records[i];
            let org = &record.org_id;
            let head = heads
                .get(org)
                .or_else(|| self.chain.get(org))
                .unwrap_or(&genesis);
            let (seq, prev_hash) = (head.seq + 1, head.hash.clone());
            let seal = group[s].prepared[i].seal(seq, &prev_hash);
            if group[s].sealed && !continues(record, seq, &prev_hash, &seal.hash) {
                tracing::error!(
                    org = %org,
                    id = record.id(),
                    seq = record.seq,
                    head = head.seq,
                    "a restored record does not continue its org's chain here; not stored"
                );
                admissions[s][i] = Admission::ChainConflict;
                conflicts += 1;
                return false;
            }
            heads.insert(
                org.clone(),
                ChainHead {
                    seq,
                    hash: seal.hash.clone(),
                },
            );
            sealed.push((seq, prev_hash, seal));
            true
        });

        let first_lsn = if new.is_empty() {
            None
        } else {
            let payloads: Vec<&[u8]> = sealed.iter().map(|(_, _, s)| s.json.as_bytes()).collect();
            match self.append_and_sync(&payloads) {
                Ok(lsn) => {
                    if let Some(failure) = self.health.recover(Part::Wal) {
                        tracing::info!(%failure, "the write-ahead log takes writes again");
                    }
                    Some(lsn)
                }
                Err(e) => return self.fail(group, e),
            }
        };

        // Durable: now, and only now, the records count as stored and the chains move on.
        let mut stored = Vec::with_capacity(sealed.len());
        // Per org: the seq of its first record in the group and the leaves, in seq order.
        let mut leaves: HashMap<String, (u64, Vec<Hash>)> = HashMap::new();
        if let Some(first_lsn) = first_lsn {
            for (k, (&(s, i), (seq, prev_hash, seal))) in new.iter().zip(sealed).enumerate() {
                let lsn = first_lsn + k as Lsn;
                let hash = group[s].hashes[i];
                if self.trees.is_some() {
                    let org = &group[s].records[i].org_id;
                    match leaves.get_mut(org) {
                        Some((_, l)) => l.push(seal.leaf),
                        None => {
                            leaves.insert(org.clone(), (seq, vec![seal.leaf]));
                        }
                    }
                }
                let rec = &mut group[s].records[i];
                rec.seq = Some(seq);
                rec.prev_hash = Some(prev_hash);
                rec.hash = Some(seal.hash);
                stored.push(seal.json);
                let fingerprint = group[s].fingerprints[i];
                let rec = &group[s].records[i];
                self.dedupe
                    .insert_recent(&rec.org_id, rec.id(), hash, fingerprint, lsn);
                admissions[s][i] = Admission::Stored { lsn };
            }
            self.chain.extend(heads);
            self.feed_trees(first_lsn, &leaves);
        }
        let total: usize = group.iter().map(|s| s.records.len()).sum();
        let s = &self.shared;
        s.groups.fetch_add(1, Ordering::Relaxed);
        s.records_stored
            .fetch_add(new.len() as u64, Ordering::Relaxed);
        s.duplicates.fetch_add(
            (total - new.len() - conflicts - id_conflicts) as u64,
            Ordering::Relaxed,
        );
        s.id_conflicts
            .fetch_add(id_conflicts as u64, Ordering::Relaxed);

        let mut batch = Vec::with_capacity(new.len());
        let mut replies = Vec::with_capacity(group.len());
        for (sub, adms) in group.into_iter().zip(admissions) {
            for (rec, adm) in sub.records.into_iter().zip(&adms) {
                if let Admission::Stored { lsn } = *adm {
                    batch.push((lsn, rec));
                }
            }
            replies.push((sub.reply, adms));
        }
        debug_assert!(batch.windows(2).all(|w| w[0].0 < w[1].0));
        // `new` and `batch` are both in (submission, record) order.
        debug_assert_eq!(batch.len(), stored.len());
        if !batch.is_empty() && !self.sink_closed {
            // Waits while the indexer is behind: back-pressure on ingest.
            let next = IndexBatch {
                records: batch,
                stored,
                durable_at: Instant::now(),
            };
            if self.sink.send(next).await.is_err() {
                self.sink_closed = true;
                tracing::error!(
                    "the indexer is gone; records stay durable in the WAL and are indexed at restart"
                );
            }
        }
        for (reply, adms) in replies {
            self.answer(reply, Ok(adms));
        }
    }

    fn append_and_sync(&mut self, payloads: &[&[u8]]) -> Result<Lsn, WalError> {
        let first = self.wal.append(payloads)?;
        let started = Instant::now();
        self.wal.sync()?;
        let s = &self.shared;
        s.fsyncs.fetch_add(1, Ordering::Relaxed);
        s.fsync_nanos.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        s.next_lsn.store(self.wal.next_lsn(), Ordering::Relaxed);
        Ok(first)
    }

    /// Answers every submitter of a group that could not be made durable. The WAL has already cut
    /// the group's bytes; the dedupe set was never told about them.
    fn fail(&mut self, group: Vec<Submission>, error: WalError) {
        let storage_full = error.is_storage_full();
        let source = std::error::Error::source(&error);
        // Clients retry while a disk is full: the first failure of a run is logged as an error,
        // the others at debug (each is counted in storage_errors).
        if self.health.fail(error.failure()) {
            tracing::error!(error = %error, source = source.map(tracing::field::display), storage_full, "store group failed; ingest is refused until the WAL writes again");
        } else {
            tracing::debug!(error = %error, source = source.map(tracing::field::display), storage_full, "store group failed");
        }
        self.shared.storage_errors.fetch_add(1, Ordering::Relaxed);
        self.shared
            .next_lsn
            .store(self.wal.next_lsn(), Ordering::Relaxed);
        let source = Arc::new(error);
        for sub in group {
            let err = StoreError::Storage {
                source: source.clone(),
                storage_full,
            };
            self.answer(sub.reply, Err(err));
        }
    }

    fn answer(
        &self,
        reply: oneshot::Sender<Result<Vec<Admission>, StoreError>>,
        result: Result<Vec<Admission>, StoreError>,
    ) {
        self.shared.submissions.fetch_add(1, Ordering::Relaxed);
        // The submitter may have given up waiting; its records are stored all the same.
        let _ = reply.send(result);
    }

    /// Applies the indexer's progress: prune the recent map, delete fully indexed segments
    /// (those the trees have durably, too: they are synced first).
    fn apply_indexed(&mut self) {
        let before = self.shared.indexed_before.load(Ordering::Acquire);
        if before <= self.indexed_before {
            return;
        }
        self.indexed_before = before;
        self.dedupe.forget_recent_through(before - 1);
        self.wal.indexed_before(before);
        let mut bound = before;
        if let Some(trees) = self.trees.clone() {
            // Syncing is needed only when it lets a segment go.
            if self.tree_synced_before < before && self.wal.would_remove_before(before) {
                match trees.sync_all() {
                    Ok(()) => {
                        self.tree_synced_before =
                            self.tree_behind_from.unwrap_or(self.wal.next_lsn());
                    }
                    Err(e) => {
                        // The trees cut what they had not synced: take it again from the WAL.
                        self.tree_failed(&e, self.tree_synced_before);
                    }
                }
            }
            bound = bound.min(self.tree_synced_before);
        }
        if let Err(e) = self.wal.remove_before(bound) {
            tracing::warn!(error = %e, "cannot delete indexed WAL segments; will retry");
        }
    }

    /// Appends a durable group's leaves (per org: first seq, leaves) to the trees, after taking
    /// in first what the trees may have lost before (from the WAL).
    fn feed_trees(&mut self, first_lsn: Lsn, leaves: &HashMap<String, (u64, Vec<Hash>)>) {
        let Some(trees) = self.trees.clone() else {
            return;
        };
        if let Some(from) = self.tree_behind_from {
            if let Err(e) = self.catch_up_trees(&trees, from, first_lsn) {
                tracing::warn!(error = %e, from, "the Merkle trees are still behind the WAL; will retry");
                return;
            }
            self.tree_behind_from = None;
        }
        for (org, (seq, l)) in leaves {
            match trees.append(org, *seq, l) {
                Ok(()) | Err(TreeError::Gap { .. } | TreeError::Diverged { .. }) => {}
                Err(e) => return self.tree_failed(&e, first_lsn),
            }
        }
    }

    /// Takes the records with LSN in `from..until` from the WAL into the trees (which skip what
    /// they have).
    fn catch_up_trees(&self, trees: &Trees, from: Lsn, until: Lsn) -> Result<(), String> {
        for entry in self.wal.read_from(from).map_err(|e| e.to_string())? {
            let (lsn, payload) = entry.map_err(|e| e.to_string())?;
            if lsn >= until {
                break;
            }
            let record: AuditRecord =
                serde_json::from_slice(&payload).map_err(|e| format!("LSN {lsn}: {e}"))?;
            match trees.replay(&record) {
                Ok(()) | Err(TreeError::Gap { .. } | TreeError::Diverged { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// A tree write or sync failed: the trees may lack the records from `from` on.
    fn tree_failed(&mut self, e: &TreeError, from: Lsn) {
        tracing::error!(error = %e, from, storage_full = e.is_storage_full(), "a Merkle tree write failed; the WAL keeps the records until the trees have them");
        self.shared.tree_errors.fetch_add(1, Ordering::Relaxed);
        let from = self.tree_behind_from.map_or(from, |b| b.min(from));
        self.tree_behind_from = Some(from);
        self.tree_synced_before = self.tree_synced_before.min(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_storage::{Fault, FaultyDisk};
    use serde_json::json;
    use std::collections::HashSet;

    type Index = crate::store::dedupe::MemoryIndex;

    fn record(org: &str, id: &str) -> AuditRecord {
        serde_json::from_value(json!({
            "id": id,
            "org_id": org,
            "time": "2026-11-27T10:15:30.123456Z",
            "actor": {"id": "u-42", "email": "ada@acme.example", "kind": "user"},
            "action": "scan.triggered",
            "category": "scan",
            "metadata": {"scan_type": "sast"},
            "received_at": "2026-11-27T10:15:31.000001Z"
        }))
        .unwrap()
    }

    /// The records without their chain fields, to compare with what was submitted.
    fn unchained(records: &[(Lsn, AuditRecord)]) -> Vec<(Lsn, AuditRecord)> {
        records
            .iter()
            .map(|(lsn, r)| {
                let mut r = r.clone();
                (r.seq, r.prev_hash, r.hash) = (None, None, None);
                (*lsn, r)
            })
            .collect()
    }

    fn hash_of(r: &AuditRecord) -> u64 {
        uid_hash(&r.org_id, r.id())
    }

    /// Everything the store sent to the indexer; complete once the store is closed.
    type Indexed = tokio::task::JoinHandle<Vec<(Lsn, AuditRecord)>>;

    /// Opens a store whose index batches are collected by a background task.
    fn open(
        dir: &Path,
        opts: StoreOptions,
        index: Arc<Index>,
        indexed_through: Option<Lsn>,
        hashes: Vec<u64>,
    ) -> (Store, Vec<(Lsn, AuditRecord)>, Indexed) {
        open_with_heads(dir, opts, index, indexed_through, hashes, HashMap::new())
    }

    /// [`open`], with the chain heads an index would report.
    fn open_with_heads(
        dir: &Path,
        opts: StoreOptions,
        index: Arc<Index>,
        indexed_through: Option<Lsn>,
        hashes: Vec<u64>,
        heads: HashMap<String, ChainHead>,
    ) -> (Store, Vec<(Lsn, AuditRecord)>, Indexed) {
        let (sink, mut batches) = mpsc::channel(4);
        let (store, replay) = Store::open(
            dir,
            opts,
            index,
            hashes,
            indexed_through,
            heads,
            sink,
            Health::default(),
        )
        .unwrap();
        let indexed = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(batch) = batches.recv().await {
                all.extend(batch.records);
            }
            all
        });
        (store, replay, indexed)
    }

    fn stored(lsn: Lsn) -> Admission {
        Admission::Stored { lsn }
    }

    use Admission::Duplicate as Dup;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submitters_are_group_committed() {
        const TASKS: usize = 8;
        const BATCHES: usize = 50;
        const PER_BATCH: usize = 4;
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            segment_bytes: 64 << 10,
            ..StoreOptions::default()
        };
        let (store, replay, indexed) = open(dir.path(), opts, Arc::default(), None, vec![]);
        assert!(replay.is_empty());

        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut lsns = Vec::new();
                for b in 0..BATCHES {
                    let batch: Vec<_> = (0..PER_BATCH)
                        .map(|i| record("acme", &format!("t{t}-b{b}-r{i}")))
                        .collect();
                    for adm in store.submit(batch).await.unwrap() {
                        match adm {
                            Admission::Stored { lsn } => lsns.push(lsn),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
                lsns
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let lsns = t.await.unwrap();
            assert!(
                lsns.windows(2).all(|w| w[0] < w[1]),
                "one submitter's LSNs ascend"
            );
            all.extend(lsns);
        }
        all.sort_unstable();
        let n = (TASKS * BATCHES * PER_BATCH) as Lsn;
        assert_eq!(all, (0..n).collect::<Vec<_>>());

        let stats = store.stats();
        let submissions = (TASKS * BATCHES) as u64;
        assert_eq!(stats.submissions, submissions);
        assert_eq!(stats.records_stored, n);
        assert_eq!(stats.duplicates, 0);
        assert_eq!(stats.next_lsn, n);
        assert_eq!(stats.fsyncs, stats.groups);
        assert!(
            stats.fsyncs < submissions,
            "group commit: {} fsyncs for {submissions} submissions",
            stats.fsyncs
        );
        eprintln!(
            "group commit: {} submissions, {} fsyncs ({:.2} per submission), mean fsync {:?}",
            submissions,
            stats.fsyncs,
            stats.fsyncs as f64 / submissions as f64,
            stats.fsync_time / u32::try_from(stats.fsyncs).unwrap()
        );

        store.close().await;
        // Everything acknowledged reached the indexer, in LSN order, and is in the WAL.
        let indexed = indexed.await.unwrap();
        assert_eq!(indexed.iter().map(|e| e.0).collect::<Vec<_>>(), all);
        let (store, replay, _) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        assert_eq!(replay, indexed);
        store.close().await;
    }

    /// A record's id sent again with other content, whoever sends it: in the same
    /// submission, while the first is only in the WAL, and once only the index has it.
    #[tokio::test]
    async fn an_id_stored_for_other_content_is_refused_not_a_duplicate() {
        use Admission::IdConflict as Conflict;
        let dir = tempfile::tempdir().unwrap();
        let a = record("acme", "a");
        let mut other = a.clone();
        other.message = Some("the same id, something else".into());
        // The same content sent by another writer, later: a resend.
        let mut resent = a.clone();
        resent.provenance = Some(Provenance::Ingest {
            key_id: "key_other".into(),
        });
        resent.received_at = Some(chrono::Utc::now());
        // The collector's own entry under one of its ids, written again at another time.
        let entry = |minute: u32| {
            let mut e = record("acme", "codestax:change-1");
            e.provenance = Some(Provenance::Collector);
            e.time = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 8, 3, minute, 0)
                .unwrap();
            e
        };

        let (store, _, indexed) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        let got = store
            .submit(vec![a.clone(), other.clone(), resent.clone()])
            .await
            .unwrap();
        assert_eq!(got, vec![stored(0), Conflict, Dup]);
        let got = store
            .submit(vec![other.clone(), resent.clone(), entry(1)])
            .await
            .unwrap();
        assert_eq!(got, vec![Conflict, Dup, stored(1)]);
        assert_eq!(store.submit(vec![entry(2)]).await.unwrap(), vec![Dup]);
        let stats = store.stats();
        assert_eq!(
            (stats.records_stored, stats.duplicates, stats.id_conflicts),
            (2, 3, 2)
        );
        store.close().await;
        assert_eq!(
            unchained(&indexed.await.unwrap()),
            vec![(0, a.clone()), (1, entry(1))]
        );

        // Only the index has it now: the stored record decides.
        let index = Index::with(&[&a, &entry(1)]);
        let (store, replay, _) = open(
            dir.path(),
            StoreOptions::default(),
            index,
            Some(1),
            vec![hash_of(&a), hash_of(&entry(1))],
        );
        assert!(replay.is_empty());
        let got = store.submit(vec![other, resent, entry(3)]).await.unwrap();
        assert_eq!(got, vec![Conflict, Dup, Dup]);
        store.close().await;
    }

    #[tokio::test]
    async fn duplicates_within_across_batches_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c, d) = (
            record("acme", "a"),
            record("acme", "b"),
            record("acme", "c"),
            record("acme", "d"),
        );
        // The same id in another org is another record.
        let a_globex = record("globex", "a");

        let (store, _, indexed) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        let got = store
            .submit(vec![a.clone(), b.clone(), a.clone()])
            .await
            .unwrap();
        assert_eq!(got, vec![stored(0), stored(1), Dup]);
        let got = store
            .submit(vec![b.clone(), c.clone(), a_globex.clone()])
            .await
            .unwrap();
        assert_eq!(got, vec![Dup, stored(2), stored(3)]);
        assert_eq!(store.submit(vec![]).await.unwrap(), vec![]);
        let stats = store.stats();
        assert_eq!((stats.records_stored, stats.duplicates), (4, 2));
        store.close().await;
        let stored_records = indexed.await.unwrap();
        let expected = vec![
            (0, a.clone()),
            (1, b.clone()),
            (2, c.clone()),
            (3, a_globex.clone()),
        ];
        assert_eq!(unchained(&stored_records), expected);

        // Restart with an empty index: everything is replayed and still deduplicated.
        let (store, replay, _) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        assert_eq!(unchained(&replay), expected);
        let got = store
            .submit(vec![a.clone(), b.clone(), c.clone(), a_globex.clone()])
            .await
            .unwrap();
        assert_eq!(got, vec![Dup; 4]);
        assert_eq!(
            store.submit(vec![d.clone()]).await.unwrap(),
            vec![stored(4)]
        );
        store.close().await;

        // Restart with an index that holds LSNs 0..=1: only the rest is replayed, and the index
        // answers for what it holds.
        let index = Index::with(&[&a, &b]);
        let hashes = vec![hash_of(&a), hash_of(&b)];
        let (store, replay, _) = open(
            dir.path(),
            StoreOptions::default(),
            index.clone(),
            Some(1),
            hashes,
        );
        assert_eq!(
            unchained(&replay),
            vec![(2, c.clone()), (3, a_globex.clone()), (4, d.clone())]
        );
        let got = store
            .submit(vec![
                a.clone(),
                b.clone(),
                c.clone(),
                d.clone(),
                record("acme", "e"),
            ])
            .await
            .unwrap();
        assert_eq!(got, vec![Dup, Dup, Dup, Dup, stored(5)]);

        // Once the index has the replayed records, the recent map lets go of them.
        for r in [&c, &a_globex, &d] {
            index.add(r);
        }
        store.mark_indexed_through(4);
        let got = store.submit(vec![c.clone(), d.clone()]).await.unwrap();
        assert_eq!(got, vec![Dup, Dup]);
        store.close().await;
    }

    #[tokio::test]
    async fn index_ahead_of_its_checkpoint_is_not_replayed_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (record("acme", "a"), record("acme", "b"));
        let (store, _, _) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        store.submit(vec![a.clone(), b.clone()]).await.unwrap();
        store.close().await;
        // The index committed both but only recorded LSN 0 as its checkpoint.
        let index = Index::with(&[&a, &b]);
        let (store, replay, _) = open(
            dir.path(),
            StoreOptions::default(),
            index,
            Some(0),
            vec![hash_of(&a), hash_of(&b)],
        );
        assert!(replay.is_empty(), "{replay:?}");
        store.close().await;
    }

    #[tokio::test]
    async fn hash_collision_is_stored_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (x, y) = (record("acme", "x"), record("acme", "y"));
        // Forge: the index reports x's hash (as another record colliding with it would), but
        // does not hold x. y is really indexed.
        let index = Index::with(&[&y]);
        let (store, _, _) = open(
            dir.path(),
            StoreOptions::default(),
            index,
            None,
            vec![hash_of(&x), hash_of(&y)],
        );
        let got = store.submit(vec![x.clone(), y.clone()]).await.unwrap();
        assert_eq!(got, vec![stored(0), Dup]);
        store.close().await;
    }

    #[tokio::test]
    async fn wal_behind_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _rx) = mpsc::channel(1);
        let err = Store::open(
            dir.path(),
            StoreOptions::default(),
            Arc::new(Index::default()),
            [],
            Some(5),
            HashMap::new(),
            sink,
            Health::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::WalBehindIndex {
                    indexed_through: 5,
                    next_lsn: 0
                }
            ),
            "{err}"
        );
    }

    /// The records of `org` among `records`, in LSN order.
    fn of_org<'a>(records: &'a [(Lsn, AuditRecord)], org: &str) -> Vec<&'a AuditRecord> {
        records
            .iter()
            .filter(|(_, r)| r.org_id == org)
            .map(|(_, r)| r)
            .collect()
    }

    /// Records `ids` of acme as another node's store sealed them (a previous shard owner's).
    async fn sealed_elsewhere(ids: &[&str]) -> Vec<AuditRecord> {
        let old = tempfile::tempdir().unwrap();
        let (store, _, indexed) = open(
            old.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        store
            .submit(ids.iter().map(|id| record("acme", id)).collect())
            .await
            .unwrap();
        store.close().await;
        indexed.await.unwrap().into_iter().map(|(_, r)| r).collect()
    }

    #[tokio::test]
    async fn restored_records_keep_their_chain_and_a_fork_is_refused() {
        use codestax_common::chain::verify_chain;
        // The previous owner's records, sealed by its store.
        let sealed = sealed_elsewhere(&["a", "b", "c", "d"]).await;

        // A new owner restores the first three (one twice), then a tampered fourth, then the
        // real fourth; what it stores next continues the chain.
        let new = tempfile::tempdir().unwrap();
        let (store, _, indexed) = open(
            new.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        let got = store.restore(sealed[..3].to_vec()).await.unwrap();
        assert_eq!(got, vec![stored(0), stored(1), stored(2)]);
        let got = store.restore(vec![sealed[1].clone()]).await.unwrap();
        assert_eq!(got, vec![Dup]);
        let mut tampered = sealed[3].clone();
        tampered.action = "auth.logout".into();
        let mut skipped = sealed[3].clone();
        skipped.id = Some("e".into());
        skipped.seq = Some(5);
        let got = store.restore(vec![tampered, skipped]).await.unwrap();
        assert_eq!(
            got,
            vec![Admission::ChainConflict, Admission::ChainConflict]
        );
        let got = store.restore(vec![sealed[3].clone()]).await.unwrap();
        assert_eq!(got, vec![stored(3)]);
        store.submit(vec![record("acme", "f")]).await.unwrap();
        assert_eq!(store.stats().duplicates, 1);
        store.close().await;
        let all: Vec<AuditRecord> = indexed.await.unwrap().into_iter().map(|(_, r)| r).collect();
        assert_eq!(all[..4], sealed[..]);
        let summary = verify_chain(&all, None).unwrap();
        assert_eq!((summary.first_seq, summary.last_seq), (Some(1), Some(5)));
    }

    #[tokio::test]
    async fn a_restore_continues_from_the_retained_checkpoint_and_over_tombstones() {
        use codestax_common::chain::{ChainVerifier, RetentionCheckpoint, Tombstone};
        let sealed = sealed_elsewhere(&["a", "b", "c", "d", "e"]).await;
        // Retention deleted seqs 1-2 (the checkpoint) and 4 (a tombstone).
        let head = |r: &AuditRecord| ChainHead::of(r).unwrap();
        let retained = RetentionCheckpoint {
            checkpoint: head(&sealed[1]),
            tombstones: vec![Tombstone {
                seq: 4,
                hash: sealed[3].hash.clone().unwrap(),
                time: None,
            }],
        };

        let new = tempfile::tempdir().unwrap();
        let (store, _, indexed) = open(
            new.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        // Without the checkpoint, seq 3 does not continue an empty chain.
        let got = store.restore(vec![sealed[2].clone()]).await.unwrap();
        assert_eq!(got, vec![Admission::ChainConflict]);
        store
            .continue_chains(vec![("acme".into(), retained.checkpoint.clone())])
            .await
            .unwrap();
        assert_eq!(
            store.restore(vec![sealed[2].clone()]).await.unwrap(),
            vec![stored(0)]
        );
        // Seq 5 only after the tombstone's head; a head behind the chain changes nothing.
        let got = store.restore(vec![sealed[4].clone()]).await.unwrap();
        assert_eq!(got, vec![Admission::ChainConflict]);
        store
            .continue_chains(vec![("acme".into(), retained.tombstones[0].head())])
            .await
            .unwrap();
        assert_eq!(
            store.restore(vec![sealed[4].clone()]).await.unwrap(),
            vec![stored(1)]
        );
        store
            .continue_chains(vec![("acme".into(), retained.checkpoint.clone())])
            .await
            .unwrap();
        store.submit(vec![record("acme", "f")]).await.unwrap();
        store.close().await;
        let all: Vec<AuditRecord> = indexed.await.unwrap().into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [Some(3), Some(5), Some(6)]
        );
        let mut verifier = ChainVerifier::after(retained);
        for r in &all {
            verifier.push(r).unwrap();
        }
        let summary = verifier.finish();
        assert_eq!((summary.first_seq, summary.last_seq), (Some(3), Some(6)));
    }

    #[tokio::test]
    async fn records_are_chained_per_org_and_the_chains_survive_restarts() {
        use codestax_common::chain::verify_chain;
        let dir = tempfile::tempdir().unwrap();
        let (store, _, indexed) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        // Chain fields given on input are never trusted.
        let mut forged = record("acme", "f");
        forged.seq = Some(99);
        forged.prev_hash = Some("1".repeat(64));
        forged.hash = Some("2".repeat(64));
        let got = store
            .submit(vec![
                record("acme", "a"),
                record("globex", "a"),
                record("acme", "b"),
                record("acme", "a"),
                forged,
            ])
            .await
            .unwrap();
        assert_eq!(got, vec![stored(0), stored(1), stored(2), Dup, stored(3)]);
        store.submit(vec![record("globex", "b")]).await.unwrap();
        store.close().await;
        let first = indexed.await.unwrap();
        let acme = verify_chain(of_org(&first, "acme"), None).unwrap();
        assert_eq!((acme.first_seq, acme.last_seq), (Some(1), Some(3)));
        let globex = verify_chain(of_org(&first, "globex"), None).unwrap();
        assert_eq!(globex.last_seq, Some(2));

        // Restart with an empty index: the WAL holds the sealed records, exactly as indexed, and
        // they carry the chains on.
        let (store, replay, indexed) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        assert_eq!(replay, first);
        store.submit(vec![record("acme", "c")]).await.unwrap();
        store.close().await;
        let second = indexed.await.unwrap();
        let mut acme_all = of_org(&first, "acme");
        acme_all.extend(of_org(&second, "acme"));
        assert_eq!(verify_chain(acme_all, None).unwrap().last_seq, Some(4));

        // Restart with an index that holds everything (the WAL gives nothing back): the heads
        // it reports carry the chains on.
        let all: Vec<_> = first.iter().chain(&second).cloned().collect();
        let index = Index::with(&all.iter().map(|(_, r)| r).collect::<Vec<_>>());
        let hashes = all.iter().map(|(_, r)| hash_of(r)).collect();
        let heads: HashMap<String, ChainHead> = ["acme", "globex"]
            .into_iter()
            .map(|org| {
                let last = of_org(&all, org).last().copied().unwrap();
                (org.to_string(), ChainHead::of(last).unwrap())
            })
            .collect();
        let (store, replay, indexed) = open_with_heads(
            dir.path(),
            StoreOptions::default(),
            index,
            Some(all.last().unwrap().0),
            hashes,
            heads,
        );
        assert!(replay.is_empty());
        store
            .submit(vec![record("acme", "d"), record("globex", "c")])
            .await
            .unwrap();
        store.close().await;
        let third = indexed.await.unwrap();
        let mut acme_all = of_org(&all, "acme");
        acme_all.extend(of_org(&third, "acme"));
        assert_eq!(verify_chain(acme_all, None).unwrap().last_seq, Some(5));
        let mut globex_all = of_org(&all, "globex");
        globex_all.extend(of_org(&third, "globex"));
        assert_eq!(verify_chain(globex_all, None).unwrap().last_seq, Some(3));
    }

    #[tokio::test]
    async fn storage_full_fails_the_group_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            record("acme", "a"),
            record("acme", "b"),
            record("acme", "c"),
        );
        let disk = FaultyDisk::default();
        let (sink, mut batches) = mpsc::channel(4);
        tokio::spawn(async move { while batches.recv().await.is_some() {} });
        let health = Health::default();
        let (store, _) = Store::open_on(
            dir.path(),
            StoreOptions::default(),
            Arc::<Index>::default(),
            vec![],
            None,
            HashMap::new(),
            sink,
            health.clone(),
            Arc::new(disk.clone()),
            None,
        )
        .unwrap();
        assert_eq!(
            store.submit(vec![a.clone()]).await.unwrap(),
            vec![stored(0)]
        );

        // The next write puts half its bytes on disk, then fails with ENOSPC.
        disk.arm(Fault::Write(io::ErrorKind::StorageFull));
        let err = store.submit(vec![b.clone(), c.clone()]).await.unwrap_err();
        assert!(err.is_storage_full(), "{err:?}");
        let chain = std::error::Error::source(&err).unwrap().to_string();
        assert!(chain.contains(".wal"), "the source names the file: {chain}");
        assert_eq!(store.stats().storage_errors, 1);
        let failure = health.failure(Part::Wal).expect("the WAL is failing");
        assert_eq!(failure.code(), "wal_full");

        // Not remembered as stored: a retry stores them, at the LSNs the failed group had.
        let got = store.submit(vec![b.clone(), c.clone()]).await.unwrap();
        assert_eq!(got, vec![stored(1), stored(2)]);
        assert_eq!(health.failure(Part::Wal), None, "a written group clears it");

        // A failed fsync is no different.
        disk.arm(Fault::Sync(io::ErrorKind::Other));
        let err = store.submit(vec![record("acme", "d")]).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Storage {
                    storage_full: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(health.failure(Part::Wal).unwrap().code(), "wal_failed");

        // What is read back while the store runs is what was acknowledged, as sealed.
        let read: Vec<_> = store.read_stored(1).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            read.iter()
                .map(|(lsn, r, _)| (*lsn, r.id()))
                .collect::<Vec<_>>(),
            vec![(1, "b"), (2, "c")]
        );
        for (_, r, json) in &read {
            assert_eq!(json, &r.canonical_json());
        }

        // A failed write whose rollback fails too: the WAL takes nothing until a rollback goes
        // through, and the health says so (a failure the probe leaves alone); the next write
        // rolls back first, then goes through.
        let e = record("acme", "e");
        disk.arm(Fault::Write(io::ErrorKind::Other));
        disk.arm(Fault::Truncate(io::ErrorKind::Other));
        disk.arm(Fault::Truncate(io::ErrorKind::Other));
        store.submit(vec![e.clone()]).await.unwrap_err();
        let err = store.submit(vec![e.clone()]).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Storage { source, .. } if matches!(**source, WalError::Poisoned { .. })),
            "{err:?}"
        );
        let failure = health.failure(Part::Wal).unwrap();
        assert_eq!(failure.code(), "wal_failed");
        assert!(failure.to_string().contains("rolled back"), "{failure}");
        assert_eq!(
            store.submit(vec![e.clone()]).await.unwrap(),
            vec![stored(3)]
        );
        assert_eq!(health.failure(Part::Wal), None);
        store.close().await;

        let (store, replay, _) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        assert_eq!(unchained(&replay), vec![(0, a), (1, b), (2, c), (3, e)]);
        // The failed groups left no hole in the chain.
        let seqs: Vec<_> = replay.iter().map(|(_, r)| r.seq.unwrap()).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(
            store.submit(vec![record("acme", "d")]).await.unwrap(),
            vec![stored(4)]
        );
        store.close().await;
    }

    /// The root of `org`'s records among `records` (in LSN order), recomputed from them.
    fn root_of(records: &[(Lsn, AuditRecord)], org: &str) -> codestax_common::merkle::Hash {
        use codestax_common::merkle::{Leaves, root};
        let leaves: Vec<_> = of_org(records, org)
            .into_iter()
            .map(|r| codestax_common::chain::leaf_of_sealed(r).unwrap())
            .collect();
        root(&mut Leaves(&leaves), leaves.len() as u64).unwrap()
    }

    #[tokio::test]
    async fn a_failed_tree_write_is_taken_again_from_the_wal_and_trees_reopen() {
        use crate::tree::{Trees, lock};
        let dir = tempfile::tempdir().unwrap();
        let (wal, tree_dir) = (dir.path().join("wal"), dir.path().join("tree"));
        let disk = FaultyDisk::default();
        let trees = Arc::new(Trees::open_on(&tree_dir, Arc::new(disk.clone())).unwrap());
        let (sink, mut batches) = mpsc::channel::<IndexBatch>(16);
        let indexed = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(batch) = batches.recv().await {
                all.extend(batch.records);
            }
            all
        });
        let open = |sink: mpsc::Sender<IndexBatch>| {
            Store::open_with_trees(
                &wal,
                StoreOptions::default(),
                Arc::<Index>::default(),
                vec![],
                None,
                HashMap::new(),
                sink,
                Health::default(),
                trees.clone(),
            )
            .unwrap()
            .0
        };
        let store = open(sink);
        let acme = |id: &str| record("acme", id);
        store
            .submit(vec![acme("a"), acme("b"), record("globex", "a")])
            .await
            .unwrap();
        assert_eq!((trees.size("acme"), trees.size("globex")), (2, 1));

        // The trees' disk fails once: the records are stored all the same (the WAL has them),
        // and the failure is counted.
        disk.arm(Fault::Write(io::ErrorKind::StorageFull));
        let got = store.submit(vec![acme("c")]).await.unwrap();
        assert_eq!(got, vec![stored(3)]);
        assert_eq!(store.stats().tree_errors, 1);
        assert_eq!(trees.size("acme"), 2);
        // The next group first takes the missed record again from the WAL.
        store.submit(vec![acme("d")]).await.unwrap();
        assert_eq!(trees.size("acme"), 4);
        store.close().await;
        let all = indexed.await.unwrap();
        let acme_root = lock(&trees.org("acme").unwrap()).root();
        assert_eq!(acme_root, root_of(&all, "acme"));
        assert_eq!(
            lock(&trees.org("globex").unwrap()).root(),
            root_of(&all, "globex")
        );

        // Trees lost (a directory restored from an old backup, here: nothing): reopened, the
        // store gives them back every record its WAL holds.
        drop(trees);
        std::fs::remove_dir_all(&tree_dir).unwrap();
        let trees = Arc::new(Trees::open(&tree_dir).unwrap());
        let (sink, _rx) = mpsc::channel::<IndexBatch>(16);
        let (store, _) = Store::open_with_trees(
            &wal,
            StoreOptions::default(),
            Arc::<Index>::default(),
            vec![],
            None,
            HashMap::new(),
            sink,
            Health::default(),
            trees.clone(),
        )
        .unwrap();
        assert_eq!(trees.size("acme"), 4);
        assert_eq!(lock(&trees.org("acme").unwrap()).root(), acme_root);
        store.close().await;
    }

    #[tokio::test]
    async fn waiting_for_the_index_ends_only_when_it_reports_the_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = open(
            dir.path(),
            StoreOptions::default(),
            Arc::default(),
            None,
            vec![],
        );
        store
            .submit(vec![record("acme", "a"), record("acme", "b")])
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.wait_indexed_through(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nothing indexed yet");
        store.mark_indexed_through(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "LSN 1 not indexed yet");
        store.mark_indexed_through(1);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the mark")
            .unwrap();
        // Already indexed: at once.
        store.wait_indexed_through(0).await;
        store.close().await;
    }

    #[tokio::test]
    async fn a_full_index_queue_slows_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, mut batches) = mpsc::channel(1);
        let (store, _) = Store::open(
            dir.path(),
            StoreOptions::default(),
            Arc::new(Index::default()),
            [],
            None,
            HashMap::new(),
            sink,
            Health::default(),
        )
        .unwrap();
        // The first batch fills the queue; the second must wait for the indexer.
        store.submit(vec![record("acme", "a")]).await.unwrap();
        let second = tokio::spawn({
            let store = store.clone();
            async move { store.submit(vec![record("acme", "b")]).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !second.is_finished(),
            "acked while the indexer queue was full"
        );
        assert_eq!(batches.recv().await.unwrap().records[0].0, 0);
        assert_eq!(second.await.unwrap().unwrap(), vec![stored(1)]);
        assert_eq!(batches.recv().await.unwrap().records[0].0, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn indexed_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            segment_bytes: 1024,
            ..StoreOptions::default()
        };
        let (store, _, _) = open(dir.path(), opts.clone(), Arc::default(), None, vec![]);
        for i in 0..40 {
            store
                .submit(vec![record("acme", &format!("r{i}"))])
                .await
                .unwrap();
        }
        let segments = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "wal")
                })
                .count()
        };
        let before = segments();
        assert!(before > 3, "{before} segments");
        store.mark_indexed_through(39);
        // Progress is applied by the writer at its next group.
        store.submit(vec![record("acme", "r40")]).await.unwrap();
        // Only the active segment (which may still hold indexed records) and the new one remain.
        assert!(segments() <= 2, "{} segments", segments());
        store.close().await;
        let (store, replay, _) = open(dir.path(), opts, Arc::default(), Some(39), vec![]);
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].0, 40);
        store.close().await;
    }

    /// The room a WAL append leaves is the fixed room plus twice the WAL bytes the index has
    /// not committed: counted on append, at open for what the index lacks, and forgotten once
    /// the index reports them (on the handle at once: an idle collector's probe sees it).
    #[tokio::test]
    async fn the_room_kept_free_follows_the_index_backlog() {
        use crate::store::INDEX_BYTES_PER_WAL_BYTE as X;
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            keep_free_bytes: 1,
            ..StoreOptions::default()
        };
        let (store, _, _) = open(dir.path(), opts.clone(), Arc::default(), None, vec![]);
        assert_eq!(store.room_kept_free(), 1);
        for i in 0..10 {
            store
                .submit(vec![record("acme", &format!("r{i}"))])
                .await
                .unwrap();
        }
        let bytes_from = |store: &Store, lsn: Lsn| -> u64 {
            store
                .read_stored(lsn)
                .map(|e| codestax_storage::FRAME_OVERHEAD + e.unwrap().2.len() as u64)
                .sum()
        };
        assert_eq!(store.room_kept_free(), 1 + X * bytes_from(&store, 0));
        store.mark_indexed_through(9);
        assert_eq!(store.room_kept_free(), 1, "forgotten without a group");
        store.close().await;

        // At open, what the index lacks is the backlog.
        let (store, replay, _) = open(dir.path(), opts, Arc::default(), Some(4), vec![]);
        assert_eq!(replay.len(), 5);
        assert_eq!(store.room_kept_free(), 1 + X * bytes_from(&store, 5));
        store.close().await;

        // A WAL on a disk of its own keeps nothing.
        let opts = StoreOptions {
            keep_free_bytes: 0,
            ..StoreOptions::default()
        };
        let (store, _, _) = open(dir.path(), opts, Arc::default(), Some(4), vec![]);
        assert_eq!(store.room_kept_free(), 0);
        store.close().await;
    }

    #[tokio::test]
    async fn invalid_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _rx) = mpsc::channel(1);
        let opts = StoreOptions {
            queue_depth: 0,
            ..StoreOptions::default()
        };
        let err = Store::open(
            dir.path(),
            opts,
            Arc::new(Index::default()),
            [],
            None,
            HashMap::new(),
            sink,
            Health::default(),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::InvalidOptions(_)));
    }

    const CRASH_DIR_ENV: &str = "CODESTAX_STORE_CRASH_DIR";

    /// The child of `kill_9_loses_nothing_acknowledged`: submits until killed, printing each ack.
    #[test]
    #[ignore = "run as a child process by kill_9_loses_nothing_acknowledged"]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let (store, _, _) = open(
                Path::new(&dir),
                StoreOptions::default(),
                Arc::default(),
                None,
                vec![],
            );
            let pid = std::process::id();
            let mut tasks = Vec::new();
            for t in 0..4 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    for b in 0.. {
                        let ids: Vec<String> =
                            (0..3).map(|i| format!("p{pid}-t{t}-b{b}-r{i}")).collect();
                        let batch = ids.iter().map(|id| record("acme", id)).collect();
                        store.submit(batch).await.unwrap();
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        for id in &ids {
                            writeln!(out, "ACK {id}").unwrap();
                        }
                        out.flush().unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
    }

    /// A process killed mid-write loses no acknowledged record, and a restart repairs the tail.
    #[tokio::test]
    async fn kill_9_loses_nothing_acknowledged() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::writer::tests::crash_child",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CRASH_DIR_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut acked = HashSet::new();
            for line in stdout.lines() {
                if let Some(id) = line.unwrap().strip_prefix("ACK ") {
                    acked.insert(id.to_owned());
                }
                if acked.len() >= 300 {
                    break;
                }
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            assert!(acked.len() >= 300, "round {round}: the child stopped early");

            let (store, replay, _) = open(
                dir.path(),
                StoreOptions::default(),
                Arc::default(),
                None,
                vec![],
            );
            let replayed: HashSet<String> = replay.iter().map(|(_, r)| r.id().to_owned()).collect();
            assert_eq!(
                replayed.len(),
                replay.len(),
                "round {round}: nothing stored twice"
            );
            let lost: Vec<_> = acked.difference(&replayed).collect();
            assert!(
                lost.is_empty(),
                "round {round}: lost acknowledged records {lost:?}"
            );
            assert!(replay.windows(2).all(|w| w[0].0 + 1 == w[1].0));
            eprintln!(
                "kill -9 round {round}: {} acked by the killed child, {} in the WAL",
                acked.len(),
                replay.len()
            );
            store.close().await;
        }
    }
}
