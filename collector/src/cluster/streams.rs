//! Streams in cluster mode (docs/cluster.md, "Streams in cluster mode"): definitions in the
//! metastore's `streams` (secrets sealed with `streams.secret_key_file`, which every node
//! shares), cursors in `stream_cursors` written under the lease of the org's shard
//! ([`Metastore::put_stream_cursor`]). The API's stream routes are served by the shard's owner
//! (`api::route`), which writes a change to PostgreSQL before it applies it. [`StreamSync`]
//! follows this node's leases: once a held shard serves ([`Serving`]: restored and caught up) it
//! starts the shard's streams from their cursors, reads the definitions changed since its last
//! read every [`SETTINGS_REFRESH`] ([`Metastore::stream_changes`]: O(changes), not O(streams)),
//! and stops them when the lease goes. A node that lost the lease (a zombie) can move no cursor
//! and change no definition: the writes are refused by epoch. At a single node's data dir's
//! first cluster start, [`offer_streams`] offers its streams to the metastore.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use codestax_common::is_reserved_id;
use tokio::sync::watch;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Json;
use tokio_util::sync::CancellationToken;

use super::cursors::put_stream_cursor;
use super::error::{MetastoreError, SettingsError, StreamOfferError};
use super::keys::refresh_every;
use super::leases::Held;
use super::metastore::{Lease, Metastore, MetastoreLink};
use super::owner::Serving;
use super::settings::{SETTINGS_REFRESH, commit_recorded, within};
use super::shard::shard_of;
use super::signing::BINDING as SIGNING_KEY_BINDING;
use crate::index::{AuditIndex, IndexError};
use crate::stream::store::{Cursor, OfferedStreams, StoreError};
use crate::stream::{
    CursorStore, Recording, Secrets, SharedError, SharedStreams, StreamDef, StreamError,
    StreamStore, Streams,
};

/// The streams written since a node's last read ([`Metastore::stream_changes`]).
#[derive(Debug, Default)]
pub struct StreamChanges {
    /// Each changed stream: (org, id, its definition as stored, or `None` once deleted).
    pub rows: Vec<(String, String, Option<serde_json::Value>)>,
    /// Where the next read starts: the xmin of a snapshot taken before this read's. Every
    /// transaction this read could not see has an id at or above it.
    pub next: u64,
}

/// The fencing condition of a write for a shard's lease: `$1` shard, `$2` owner, `$3` epoch.
const HELD: &str = "SELECT shard FROM shard_leases
     WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now() FOR SHARE";

impl Metastore {
    /// The streams written (made, changed or deleted) by transactions not yet committed when
    /// the read that returned `since` took its snapshot (`0`: every stream). A reader that
    /// passes each answer's `next` to its following call sees every change, at least once, in
    /// O(changes) rather than O(streams): a transaction's id is taken when it writes, so one
    /// that commits late still has an id at or above the xmin of any snapshot that missed it.
    pub async fn stream_changes(&self, since: u64) -> Result<StreamChanges, MetastoreError> {
        // Taken before the rows' snapshot: conservative (a few rows may be read twice).
        let next: String = self
            .client
            .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
            .await
            .map_err(MetastoreError::sql("read the metastore's snapshot"))?
            .get(0);
        let rows = self
            .client
            .query(
                "SELECT org_id, id, CASE WHEN deleted_at IS NULL THEN definition END FROM streams
                 WHERE changed_xid >= $1::text::xid8",
                &[&since.to_string()],
            )
            .await
            .map_err(MetastoreError::sql("read the changed streams"))?;
        Ok(StreamChanges {
            rows: rows
                .iter()
                .map(|r| {
                    let definition: Option<Json<serde_json::Value>> = r.get(2);
                    (r.get(0), r.get(1), definition.map(|d| d.0))
                })
                .collect(),
            next: next.parse().unwrap_or(since),
        })
    }

    /// Stores stream `org`/`id`'s definition (a new stream, or one made again), fenced like a
    /// cursor: only while `lease` (of the org's shard) is the writer's, under its epoch,
    /// unexpired; else [`MetastoreError::Fenced`] and nothing changes.
    pub async fn put_stream(
        &self,
        lease: &Lease,
        org: &str,
        id: &str,
        definition: &serde_json::Value,
    ) -> Result<(), MetastoreError> {
        put_stream(&self.client, lease, org, id, definition).await
    }

    /// Marks stream `org`/`id` deleted and deletes its cursor, in one statement fenced by
    /// `lease` as [`Metastore::put_stream`] is.
    pub async fn delete_stream(
        &self,
        lease: &Lease,
        org: &str,
        id: &str,
    ) -> Result<(), MetastoreError> {
        delete_stream(&self.client, lease, org, id).await
    }
}

/// [`Metastore::put_stream`] on `client` (a connection, or a transaction).
async fn put_stream(
    client: &impl GenericClient,
    lease: &Lease,
    org: &str,
    id: &str,
    definition: &serde_json::Value,
) -> Result<(), MetastoreError> {
    let row = client
        .query_opt(
            &format!(
                "INSERT INTO streams (org_id, id, definition, changed_xid)
                     SELECT $4, $5, $6, pg_current_xact_id() FROM ({HELD}) held
                     ON CONFLICT (org_id, id) DO UPDATE
                     SET definition = EXCLUDED.definition, deleted_at = NULL, updated_at = now(),
                         changed_xid = EXCLUDED.changed_xid
                     RETURNING 1"
            ),
            &[
                &(lease.shard as i32),
                &lease.owner,
                &lease.epoch,
                &org,
                &id,
                &Json(definition),
            ],
        )
        .await
        .map_err(MetastoreError::sql("store a stream"))?;
    row.map(drop).ok_or_else(|| fenced(lease))
}

/// [`Metastore::delete_stream`] on `client` (a connection, or a transaction).
async fn delete_stream(
    client: &impl GenericClient,
    lease: &Lease,
    org: &str,
    id: &str,
) -> Result<(), MetastoreError> {
    let held: i64 = client
            .query_one(
                &format!(
                    "WITH held AS ({HELD}),
                     gone AS (
                        UPDATE streams
                        SET deleted_at = now(), updated_at = now(), changed_xid = pg_current_xact_id()
                        WHERE org_id = $4 AND id = $5 AND deleted_at IS NULL
                          AND EXISTS (SELECT 1 FROM held)
                        RETURNING 1),
                     gone_cursor AS (
                        DELETE FROM stream_cursors WHERE org_id = $4 AND id = $5
                          AND EXISTS (SELECT 1 FROM held)
                        RETURNING 1)
                     SELECT count(*) FROM held"
                ),
                &[
                    &(lease.shard as i32),
                    &lease.owner,
                    &lease.epoch,
                    &org,
                    &id,
                ],
            )
            .await
            .map_err(MetastoreError::sql("delete a stream"))?
            .get(0);
    if held == 0 {
        return Err(fenced(lease));
    }
    Ok(())
}

/// One of a single node's streams offered to the cluster (its definition as stored, its cursor
/// as the cluster starts it).
pub struct StreamOfferRow {
    pub org: String,
    pub id: String,
    pub definition: serde_json::Value,
    pub cursor: serde_json::Value,
}

/// What the metastore did with an offered stream.
#[derive(Debug, PartialEq)]
pub enum OfferOutcome {
    /// Taken, with its cursor.
    Taken,
    /// The cluster has a stream with that id: its definition, `None` if it was deleted. Not
    /// overwritten.
    Exists(Option<serde_json::Value>),
}

impl Metastore {
    /// Offers streams to the cluster in one transaction: each stream id the cluster lacks is
    /// taken with its cursor (under epoch 0 of the org's shard: any owner's write replaces it);
    /// one it has is left as it is.
    pub async fn offer_streams(
        &mut self,
        shards: u32,
        offers: &[StreamOfferRow],
    ) -> Result<Vec<OfferOutcome>, MetastoreError> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(MetastoreError::sql("begin offering streams"))?;
        let mut outcomes = Vec::with_capacity(offers.len());
        for o in offers {
            let taken = tx
                .query_opt(
                    "INSERT INTO streams (org_id, id, definition) VALUES ($1, $2, $3)
                     ON CONFLICT (org_id, id) DO NOTHING RETURNING 1",
                    &[&o.org, &o.id, &Json(&o.definition)],
                )
                .await
                .map_err(MetastoreError::sql("offer a stream"))?;
            if taken.is_some() {
                tx.execute(
                    "INSERT INTO stream_cursors (org_id, id, shard, epoch, cursor)
                     VALUES ($1, $2, $3, 0, $4) ON CONFLICT (org_id, id) DO NOTHING",
                    &[
                        &o.org,
                        &o.id,
                        &(shard_of(&o.org, shards) as i32),
                        &Json(&o.cursor),
                    ],
                )
                .await
                .map_err(MetastoreError::sql("offer a stream cursor"))?;
                outcomes.push(OfferOutcome::Taken);
                continue;
            }
            let row = tx
                .query_one(
                    "SELECT CASE WHEN deleted_at IS NULL THEN definition END FROM streams
                     WHERE org_id = $1 AND id = $2",
                    &[&o.org, &o.id],
                )
                .await
                .map_err(MetastoreError::sql("read an offered stream's twin"))?;
            let existing: Option<Json<serde_json::Value>> = row.get(0);
            outcomes.push(OfferOutcome::Exists(existing.map(|d| d.0)));
        }
        tx.commit()
            .await
            .map_err(MetastoreError::sql("commit offering streams"))?;
        Ok(outcomes)
    }
}

fn fenced(lease: &Lease) -> MetastoreError {
    MetastoreError::Fenced {
        shard: lease.shard,
        node: lease.owner.clone(),
        epoch: lease.epoch,
    }
}

fn unavailable(e: impl std::fmt::Display) -> SharedError {
    SharedError::Metastore(e.to_string())
}

/// A metastore failure as the registry sees it: a write refused by epoch (this node no longer
/// holds the org's shard: 503 `shard_unavailable`) apart from an unreachable metastore.
fn shared(e: SettingsError) -> SharedError {
    match e {
        SettingsError::Metastore(fenced @ MetastoreError::Fenced { .. }) => {
            SharedError::NotOwner(fenced.to_string())
        }
        e => unavailable(e),
    }
}

/// A change of one stream as the metastore stores it (definitions sealed).
enum Change {
    /// The first cursor, then the definition: a definition is never there without its start.
    Create {
        cursor: serde_json::Value,
        definition: serde_json::Value,
    },
    Update(serde_json::Value),
    Remove,
}

/// The cluster's stream definitions as this node last read them, kept up to date by reading
/// only what changed ([`Metastore::stream_changes`]).
#[derive(Default)]
struct Known {
    /// Every stream not deleted: its definition as stored (secrets sealed).
    definitions: BTreeMap<(String, String), serde_json::Value>,
    /// Where the next read of changes starts (0: read everything).
    since: u64,
}

/// The metastore side of a node's streams (see the module doc).
pub struct StreamSync {
    link: Arc<MetastoreLink>,
    /// Seals and opens the definitions' secrets.
    store: Arc<StreamStore>,
    held: watch::Receiver<Held>,
    serving: Serving,
    shards: u32,
    /// The shards whose streams run here, with the epoch they started under.
    delivering: Mutex<BTreeMap<u32, i64>>,
    known: tokio::sync::Mutex<Known>,
}

impl StreamSync {
    pub fn new(
        link: MetastoreLink,
        store: Arc<StreamStore>,
        held: watch::Receiver<Held>,
        serving: Serving,
        shards: u32,
    ) -> StreamSync {
        StreamSync {
            link: Arc::new(link),
            store,
            held,
            serving,
            shards,
            delivering: Mutex::new(BTreeMap::new()),
            known: tokio::sync::Mutex::new(Known::default()),
        }
    }

    /// The lease of `shard` while this node holds it (valid by its clock) and serves it.
    fn serving_lease(&self, shard: u32) -> Option<Lease> {
        self.held
            .borrow()
            .get(&shard)
            .filter(|l| l.is_valid() && self.serving.is_serving(shard, l.epoch))
            .cloned()
    }

    /// Where the cursors of a shard's streams are written under `lease`.
    fn fenced_cursors(&self, lease: Lease) -> Arc<dyn CursorStore> {
        Arc::new(FencedCursors {
            link: self.link.clone(),
            lease,
            held: self.held.clone(),
        })
    }

    /// Writes `change` of `org`/`id` in a transaction fenced by the org's shard lease (each
    /// statement locks the lease row `FOR SHARE`, so the lease can neither be renewed away nor
    /// taken over until COMMIT), has `record` make its audit entry durable, then commits
    /// ([`commit_recorded`]): a change refused by the metastore or by epoch is never recorded.
    /// On a connection of its own: the owners' shared one is not held while `record` runs.
    async fn change_recorded(
        &self,
        org: &str,
        id: &str,
        change: Change,
        record: Recording<'_>,
    ) -> Result<bool, SharedError> {
        let lease = self.writer_lease(org)?;
        let mut m = within(self.link.connect()).await.map_err(unavailable)?;
        let tx = within(async {
            m.client
                .transaction()
                .await
                .map_err(MetastoreError::sql("begin a stream change"))
        })
        .await
        .map_err(unavailable)?;
        within(async {
            match &change {
                Change::Create { cursor, definition } => {
                    put_stream_cursor(&tx, &lease, org, id, cursor).await?;
                    put_stream(&tx, &lease, org, id, definition).await
                }
                Change::Update(definition) => put_stream(&tx, &lease, org, id, definition).await,
                Change::Remove => delete_stream(&tx, &lease, org, id).await,
            }
        })
        .await
        .map_err(shared)?;
        match commit_recorded(tx, record).await {
            Ok(recorded) => Ok(recorded.is_ok()),
            Err(SettingsError::Unconfirmed(e)) => Err(SharedError::Unconfirmed(e)),
            Err(e) => Err(shared(e)),
        }
    }

    /// The lease a change of `org`'s streams is written under: its shard's, while served here.
    fn writer_lease(&self, org: &str) -> Result<Lease, SharedError> {
        let shard = shard_of(org, self.shards);
        self.serving_lease(shard).ok_or_else(|| {
            SharedError::NotOwner(format!(
                "this node does not hold shard {shard} (org {org}'s) now"
            ))
        })
    }

    /// Follows the leases and the definitions every [`SETTINGS_REFRESH`] until `stop`.
    pub async fn run(self: Arc<Self>, streams: Streams, stop: CancellationToken) {
        refresh_every(
            SETTINGS_REFRESH,
            stop,
            "cannot read the cluster's streams; the running ones go on",
            || self.round(&streams),
        )
        .await
    }

    /// One round: stops the streams of shards no longer served here (or under another
    /// epoch), then starts or updates those of the shards served here.
    async fn round(&self, streams: &Streams) -> Result<(), StreamError> {
        let shards = self.shards;
        let lost: Vec<u32> = self
            .delivering_now()
            .into_iter()
            .filter(|(shard, epoch)| self.serving_lease(*shard).is_none_or(|l| l.epoch != *epoch))
            .map(|(shard, _)| shard)
            .collect();
        for shard in lost {
            let stopped = streams.release(|org| shard_of(org, shards) == shard).await;
            self.delivering().remove(&shard);
            tracing::info!(
                shard,
                stopped,
                "stream delivery stopped: the shard's lease is gone"
            );
        }
        let held: Vec<u32> = self.held.borrow().keys().copied().collect();
        let mut result = Ok(());
        for shard in held {
            let Some(lease) = self.serving_lease(shard) else {
                continue;
            };
            let cursors = self.fenced_cursors(lease.clone());
            let owns = |org: &str| shard_of(org, shards) == shard;
            match streams.follow(owns, cursors, self.load(shard)).await {
                Ok(()) => {
                    if self.delivering().insert(shard, lease.epoch) != Some(lease.epoch) {
                        tracing::info!(
                            shard,
                            epoch = lease.epoch,
                            "stream delivery started for the shard"
                        );
                    }
                }
                Err(e) => result = Err(e),
            }
        }
        result
    }

    fn delivering(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, i64>> {
        self.delivering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn delivering_now(&self) -> BTreeMap<u32, i64> {
        self.delivering().clone()
    }

    /// The streams of `shard`'s orgs, their secrets opened: the known definitions brought up
    /// to date with what changed since the last read (run by `follow` with the API's changes
    /// locked out, so what it returns is never older than a change made here).
    async fn load(&self, shard: u32) -> Result<Vec<(StreamDef, Secrets)>, StreamError> {
        let mut known = self.known.lock().await;
        let since = known.since;
        let changes = within(async { self.link.open().await?.stream_changes(since).await })
            .await
            .map_err(unavailable)?;
        for (org, id, definition) in changes.rows {
            match definition {
                Some(d) => known.definitions.insert((org, id), d),
                None => known.definitions.remove(&(org, id)),
            };
        }
        known.since = changes.next;
        known
            .definitions
            .iter()
            .filter(|((org, _), _)| shard_of(org, self.shards) == shard)
            .map(|(_, definition)| Ok(self.store.open_definition(definition.clone())?))
            .collect()
    }
}

#[async_trait::async_trait]
impl SharedStreams for StreamSync {
    async fn check_writable(&self) -> Result<(), SharedError> {
        within(async {
            self.link
                .open()
                .await?
                .client
                .execute("SELECT 1", &[])
                .await
                .map_err(MetastoreError::sql("reach the metastore"))
        })
        .await
        .map(drop)
        .map_err(unavailable)
    }

    async fn create(
        &self,
        def: &StreamDef,
        secrets: &Secrets,
        cursor: &Cursor,
        record: Recording<'_>,
    ) -> Result<bool, SharedError> {
        let change = Change::Create {
            cursor: serde_json::to_value(cursor).map_err(unavailable)?,
            definition: self.store.seal_definition(def, secrets),
        };
        self.change_recorded(&def.org, &def.id, change, record)
            .await
    }

    async fn update(
        &self,
        def: &StreamDef,
        secrets: &Secrets,
        record: Recording<'_>,
    ) -> Result<bool, SharedError> {
        let change = Change::Update(self.store.seal_definition(def, secrets));
        self.change_recorded(&def.org, &def.id, change, record)
            .await
    }

    async fn remove(
        &self,
        org: &str,
        id: &str,
        record: Recording<'_>,
    ) -> Result<bool, SharedError> {
        self.change_recorded(org, id, Change::Remove, record).await
    }

    fn delivers(&self, org: &str) -> bool {
        let shard = shard_of(org, self.shards);
        let epoch = self.delivering().get(&shard).copied();
        epoch.is_some() && self.serving_lease(shard).map(|l| l.epoch) == epoch
    }

    fn cursors(&self, org: &str) -> Option<Arc<dyn CursorStore>> {
        let lease = self.serving_lease(shard_of(org, self.shards))?;
        Some(self.fenced_cursors(lease))
    }
}

/// The cursors of one shard's streams, written under the lease this node delivers them with.
struct FencedCursors {
    link: Arc<MetastoreLink>,
    lease: Lease,
    held: watch::Receiver<Held>,
}

#[async_trait::async_trait]
impl CursorStore for FencedCursors {
    async fn read(&self, org: &str, id: &str) -> Result<Option<Cursor>, SharedError> {
        let row = within(async { self.link.open().await?.stream_cursor(org, id).await })
            .await
            .map_err(unavailable)?;
        row.map(|(_, value)| serde_json::from_value(value).map_err(unavailable))
            .transpose()
    }

    async fn write(&self, org: &str, id: &str, cursor: &Cursor) -> Result<(), SharedError> {
        if !self.may_act() {
            return Err(SharedError::NotOwner(format!(
                "shard {} is no longer held under epoch {}: the cursor stays",
                self.lease.shard, self.lease.epoch
            )));
        }
        let value = serde_json::to_value(cursor).map_err(unavailable)?;
        within(async {
            self.link
                .open()
                .await?
                .put_stream_cursor(&self.lease, org, id, &value)
                .await
        })
        .await
        .map_err(shared)
    }

    fn may_act(&self) -> bool {
        self.held
            .borrow()
            .get(&self.lease.shard)
            .is_some_and(|l| l.epoch == self.lease.epoch && l.is_valid())
    }
}

/// How far back from a cursor the offer first looks for the last importable record it passed.
const LOOK_BACK: u64 = 1000;

/// Offers this data dir's streams (a single node's, `data_dir/streams/`) to the cluster at the
/// node's first cluster start (docs/cluster.md, "Moving a single node into a cluster"): each
/// with its cursor turned into the last record it delivered that an import brings over
/// ([`Cursor::after_id`]), so the stream goes on from there in the cluster's log. A stream id
/// the cluster already has is kept as the cluster's and reported. Done once: `offered.json`
/// records it; `None` when it was done before.
pub async fn offer_streams(
    metastore: &mut Metastore,
    store: Arc<StreamStore>,
    index: &AuditIndex,
    shards: u32,
    key_file: &Path,
) -> Result<Option<OfferedStreams>, StreamOfferError> {
    let store_error = |source| StreamOfferError::Store {
        key_file: key_file.to_path_buf(),
        source,
    };
    let (local, done) = {
        let (store, index) = (store.clone(), index.clone());
        tokio::task::spawn_blocking(move || {
            if store.offered()?.is_some() {
                return Ok((Vec::new(), true));
            }
            let mut local = Vec::new();
            for (def, secrets) in store.load()? {
                let cursor = offered_cursor(
                    &index,
                    &def.org,
                    store.read_cursor(&def.org, &def.id)?.unwrap_or_default(),
                )?;
                local.push((def, secrets, cursor));
            }
            Ok::<_, OfferStoreError>((local, false))
        })
        .await
        .map_err(|e| StreamOfferError::Task(e.to_string()))?
        .map_err(|e| match e {
            OfferStoreError::Store(e) => store_error(e),
            OfferStoreError::Index(e) => StreamOfferError::Index(e),
        })?
    };
    if done {
        return Ok(None);
    }
    if !local.is_empty() {
        check_cluster_key(metastore, &store, key_file).await?;
    }
    let rows: Vec<StreamOfferRow> = local
        .iter()
        .map(|(def, secrets, cursor)| StreamOfferRow {
            org: def.org.clone(),
            id: def.id.clone(),
            definition: store.seal_definition(def, secrets),
            cursor: serde_json::to_value(cursor).expect("a cursor serialises"),
        })
        .collect();
    let outcomes = metastore.offer_streams(shards, &rows).await?;
    let (mut offered, mut kept) = (Vec::new(), Vec::new());
    for ((def, secrets, cursor), outcome) in local.iter().zip(outcomes) {
        let name = format!("{}/{}", def.org, def.id);
        match outcome {
            OfferOutcome::Taken => {
                tracing::info!(stream = %name, after_id = ?cursor.after_id, "this data dir's stream offered to the cluster");
                offered.push(name);
            }
            // Offered before (a start that stopped before recording it): the same stream.
            OfferOutcome::Exists(Some(theirs))
                if store
                    .open_definition(theirs.clone())
                    .is_ok_and(|t| t == (def.clone(), secrets.clone())) =>
            {
                offered.push(name);
            }
            OfferOutcome::Exists(theirs) => {
                tracing::warn!(
                    stream = %name,
                    deleted_in_cluster = theirs.is_none(),
                    "this data dir's stream is not offered: the cluster has a stream with that id, which is kept (make this one again through the API if it is wanted)"
                );
                kept.push(name);
            }
        }
    }
    let record = OfferedStreams::new(offered, kept);
    let written = {
        let (store, record) = (store.clone(), record.clone());
        tokio::task::spawn_blocking(move || store.record_offered(&record))
            .await
            .map_err(|e| StreamOfferError::Task(e.to_string()))?
    };
    written.map_err(store_error)?;
    Ok(Some(record))
}

/// Fails, naming the key file, unless this data dir's streams not offered yet open with its
/// key: checked before the node seals anything with the key in the metastore.
pub fn check_streams_open(store: &StreamStore, key_file: &Path) -> Result<(), StreamOfferError> {
    let check = || -> Result<(), StoreError> {
        if store.offered()?.is_none() {
            store.load()?;
        }
        Ok(())
    };
    check().map_err(|source| StreamOfferError::Store {
        key_file: key_file.to_path_buf(),
        source,
    })
}

/// Why an offer's local part failed.
enum OfferStoreError {
    Store(StoreError),
    Index(IndexError),
}

impl From<StoreError> for OfferStoreError {
    fn from(e: StoreError) -> Self {
        OfferStoreError::Store(e)
    }
}

impl From<IndexError> for OfferStoreError {
    fn from(e: IndexError) -> Self {
        OfferStoreError::Index(e)
    }
}

/// A single node's cursor as the cluster starts it: after the last record it delivered that an
/// import brings over (the collector's own entries, ids `codestax:…`, are not imported); from
/// the org's first record if it delivered none of those. A start time not reached yet stays.
fn offered_cursor(index: &AuditIndex, org: &str, local: Cursor) -> Result<Cursor, IndexError> {
    let mut cursor = local.clone();
    cursor.delivered_seq = 0;
    cursor.pending_last = None;
    cursor.after_id = None;
    if local.from_time.is_some() || local.delivered_seq == 0 {
        return Ok(cursor);
    }
    let through = local.delivered_seq;
    let mut from = through.saturating_sub(LOOK_BACK).max(1);
    loop {
        let mut found = None;
        index.for_each_chained(org, from, |r| {
            if r.seq.is_none_or(|seq| seq > through) {
                return false;
            }
            if let Some(id) = r.id.as_deref().filter(|id| !is_reserved_id(id)) {
                found = Some(id.to_string());
            }
            true
        })?;
        if found.is_some() || from == 1 {
            cursor.after_id = found;
            return Ok(cursor);
        }
        from = 1;
    }
}

/// Refuses a key file that is not the cluster's: the cluster's signing key, or else one of its
/// streams, must open with it (else the streams offered would open on no other node).
async fn check_cluster_key(
    metastore: &Metastore,
    store: &StreamStore,
    key_file: &Path,
) -> Result<(), StreamOfferError> {
    let mismatch = || StreamOfferError::KeyMismatch {
        key_file: key_file.to_path_buf(),
    };
    if let Some((_, sealed)) = metastore.signing_key().await? {
        return match store.key().open(SIGNING_KEY_BINDING, &sealed) {
            Ok(_) => Ok(()),
            Err(_) => Err(mismatch()),
        };
    }
    let theirs = metastore.stream_changes(0).await?;
    match theirs.rows.into_iter().find_map(|(_, _, d)| d) {
        Some(d) if store.open_definition(d.clone()).is_err() => Err(mismatch()),
        _ => Ok(()),
    }
}
