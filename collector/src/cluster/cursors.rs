//! Stream cursors in cluster mode: `stream_cursors` holds each stream's cursor with the shard
//! and epoch of the owner that wrote it. A write runs in one statement that checks the writer
//! still holds the org's shard under its epoch (as snapshot rows do): a zombie owner (a stale
//! epoch, a lapsed lease) cannot move a cursor, backwards or at all, once another node owns
//! the shard; the new owner continues from the cursor it reads here.

use super::error::MetastoreError;
use super::metastore::{Lease, Metastore};
use tokio_postgres::GenericClient;
use tokio_postgres::types::Json;

impl Metastore {
    /// Stores stream `org`/`id`'s `cursor` under `lease` (of the org's shard), fenced: a stale
    /// epoch or an expired lease gets [`MetastoreError::Fenced`] and nothing changes.
    pub async fn put_stream_cursor(
        &self,
        lease: &Lease,
        org: &str,
        id: &str,
        cursor: &serde_json::Value,
    ) -> Result<(), MetastoreError> {
        put_stream_cursor(&self.client, lease, org, id, cursor).await
    }

    /// Stream `org`/`id`'s cursor and the epoch it was written under.
    pub async fn stream_cursor(
        &self,
        org: &str,
        id: &str,
    ) -> Result<Option<(i64, serde_json::Value)>, MetastoreError> {
        let row = self
            .client
            .query_opt(
                "SELECT epoch, cursor FROM stream_cursors WHERE org_id = $1 AND id = $2",
                &[&org, &id],
            )
            .await
            .map_err(MetastoreError::sql("read a stream cursor"))?;
        Ok(row.map(|r| (r.get(0), r.get::<_, Json<serde_json::Value>>(1).0)))
    }
}

/// [`Metastore::put_stream_cursor`] on `client` (a connection, or a transaction).
pub(super) async fn put_stream_cursor(
    client: &impl GenericClient,
    lease: &Lease,
    org: &str,
    id: &str,
    cursor: &serde_json::Value,
) -> Result<(), MetastoreError> {
    let row = client
        .query_opt(
            "INSERT INTO stream_cursors (org_id, id, shard, epoch, cursor)
                 SELECT $4, $5, shard, epoch, $6 FROM shard_leases
                 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()
                 FOR SHARE
                 ON CONFLICT (org_id, id) DO UPDATE
                 SET shard = EXCLUDED.shard, epoch = EXCLUDED.epoch, cursor = EXCLUDED.cursor,
                     updated_at = now()
                 WHERE stream_cursors.epoch <= EXCLUDED.epoch
                 RETURNING epoch",
            &[
                &(lease.shard as i32),
                &lease.owner,
                &lease.epoch,
                &org,
                &id,
                &Json(cursor),
            ],
        )
        .await
        .map_err(MetastoreError::sql("store a stream cursor"))?;
    match row {
        Some(_) => Ok(()),
        None => Err(MetastoreError::Fenced {
            shard: lease.shard,
            node: lease.owner.clone(),
            epoch: lease.epoch,
        }),
    }
}
