//! Streams in cluster mode (docs/cluster.md, "Streams in cluster mode"): definitions in the
//! metastore's `streams` (secrets sealed with `streams.secret_key_file`, which every node
//! shares), cursors in `stream_cursors` written under the lease of the org's shard
//! ([`Metastore::put_stream_cursor`]). The API's stream routes are served by the shard's owner
//! (`api::route`), which writes a change to PostgreSQL before it applies it. [`StreamSync`]
//! follows this node's leases: once a held shard serves ([`Serving`]: restored and caught up) it
//! starts the shard's streams from their cursors, reads their definitions again every
//! [`SETTINGS_REFRESH`], and stops them when the lease goes. A node that lost the lease (a
//! zombie) cannot move a cursor: the write is refused by epoch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio_postgres::types::Json;
use tokio_util::sync::CancellationToken;

use super::error::MetastoreError;
use super::keys::refresh_every;
use super::leases::Held;
use super::metastore::{Lease, Metastore, MetastoreLink};
use super::owner::Serving;
use super::settings::{SETTINGS_REFRESH, within};
use super::shard::shard_of;
use crate::stream::store::Cursor;
use crate::stream::{
    CursorStore, Secrets, SharedError, SharedStreams, StreamDef, StreamError, StreamStore, Streams,
};

impl Metastore {
    /// Every stream not deleted: (org, id, definition as stored).
    pub async fn streams(
        &self,
    ) -> Result<Vec<(String, String, serde_json::Value)>, MetastoreError> {
        let rows = self
            .client
            .query(
                "SELECT org_id, id, definition FROM streams WHERE deleted_at IS NULL",
                &[],
            )
            .await
            .map_err(MetastoreError::sql("read the streams"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, Json<serde_json::Value>>(2).0))
            .collect())
    }

    /// Stores stream `org`/`id`'s definition (a new stream, or one made again).
    pub async fn put_stream(
        &self,
        org: &str,
        id: &str,
        definition: &serde_json::Value,
    ) -> Result<(), MetastoreError> {
        self.client
            .execute(
                "INSERT INTO streams (org_id, id, definition) VALUES ($1, $2, $3)
                 ON CONFLICT (org_id, id) DO UPDATE
                 SET definition = EXCLUDED.definition, deleted_at = NULL, updated_at = now()",
                &[&org, &id, &Json(definition)],
            )
            .await
            .map_err(MetastoreError::sql("store a stream"))?;
        Ok(())
    }

    /// Marks stream `org`/`id` deleted and deletes its cursor.
    pub async fn delete_stream(&self, org: &str, id: &str) -> Result<(), MetastoreError> {
        self.client
            .execute(
                "UPDATE streams SET deleted_at = now(), updated_at = now()
                 WHERE org_id = $1 AND id = $2 AND deleted_at IS NULL",
                &[&org, &id],
            )
            .await
            .map_err(MetastoreError::sql("delete a stream"))?;
        self.client
            .execute(
                "DELETE FROM stream_cursors WHERE org_id = $1 AND id = $2",
                &[&org, &id],
            )
            .await
            .map_err(MetastoreError::sql("delete a stream cursor"))?;
        Ok(())
    }
}

fn unavailable(e: impl std::fmt::Display) -> SharedError {
    SharedError::Metastore(e.to_string())
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
            let cursors: Arc<dyn CursorStore> = Arc::new(FencedCursors {
                link: self.link.clone(),
                lease: lease.clone(),
                held: self.held.clone(),
            });
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

    /// The streams of `shard`'s orgs, their secrets opened.
    async fn load(&self, shard: u32) -> Result<Vec<(StreamDef, Secrets)>, StreamError> {
        let rows = within(async { self.link.open().await?.streams().await })
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .filter(|(org, _, _)| shard_of(org, self.shards) == shard)
            .map(|(_, _, definition)| Ok(self.store.open_definition(definition)?))
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
    ) -> Result<(), SharedError> {
        let cursors = self
            .cursors(&def.org)
            .ok_or_else(|| unavailable("this node no longer holds the org's shard"))?;
        // The cursor first: a definition is never in the metastore without its start.
        cursors.write(&def.org, &def.id, cursor).await?;
        self.update(def, secrets).await
    }

    async fn update(&self, def: &StreamDef, secrets: &Secrets) -> Result<(), SharedError> {
        let definition = self.store.seal_definition(def, secrets);
        within(async {
            self.link
                .open()
                .await?
                .put_stream(&def.org, &def.id, &definition)
                .await
        })
        .await
        .map_err(unavailable)
    }

    async fn remove(&self, org: &str, id: &str) -> Result<(), SharedError> {
        within(async { self.link.open().await?.delete_stream(org, id).await })
            .await
            .map_err(unavailable)
    }

    fn delivers(&self, org: &str) -> bool {
        let shard = shard_of(org, self.shards);
        let epoch = self.delivering().get(&shard).copied();
        epoch.is_some() && self.serving_lease(shard).map(|l| l.epoch) == epoch
    }

    fn cursors(&self, org: &str) -> Option<Arc<dyn CursorStore>> {
        let lease = self.serving_lease(shard_of(org, self.shards))?;
        Some(Arc::new(FencedCursors {
            link: self.link.clone(),
            lease,
            held: self.held.clone(),
        }))
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
            return Err(unavailable(format!(
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
        .map_err(unavailable)
    }

    fn may_act(&self) -> bool {
        self.held
            .borrow()
            .get(&self.lease.shard)
            .is_some_and(|l| l.epoch == self.lease.epoch && l.is_valid())
    }
}
