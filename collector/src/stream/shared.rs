//! What the registry needs of the cluster's metastore (cluster mode, `docs/cluster.md`,
//! "Streams in cluster mode"): definitions kept in PostgreSQL (secrets sealed), and each
//! stream's cursor kept there too, written under the lease of the org's shard. The cluster
//! implements both ([`crate::cluster::StreamSync`]); on a single node the registry keeps them in
//! [`super::StreamStore`] (which is a [`CursorStore`] too).

use super::definition::{Secrets, StreamDef};
use super::store::{Cursor, StreamStore};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Why a stream's state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The cluster's metastore did not answer or refused (the API answers 503
    /// `metastore_unavailable`).
    #[error("{0}")]
    Metastore(String),
    /// Cluster mode: the write was refused because this node does not hold the org's shard
    /// (under the epoch it acts with) now: the API answers 503 `shard_unavailable`.
    #[error("{0}")]
    NotOwner(String),
    /// The change was recorded in the org's log, but the metastore did not confirm its COMMIT:
    /// it may or may not have been made (the API answers 503 `metastore_unavailable` and says
    /// so).
    #[error("{0}")]
    Unconfirmed(String),
    /// A cursor file of a single node.
    #[error("{0}")]
    Local(String),
}

/// The making of a change's audit entry, run by the cluster between the change's write and its
/// COMMIT. `Err(())`: refused (the caller keeps why, [`recording`]).
pub type Recording<'a> = Pin<Box<dyn Future<Output = Result<(), ()>> + Send + 'a>>;

/// `record` as a [`Recording`]; a refusal is kept in `refused`.
pub fn recording<'a, E: Send + 'a>(
    record: impl Future<Output = Result<(), E>> + Send + 'a,
    refused: &'a mut Option<E>,
) -> Recording<'a> {
    Box::pin(async move { record.await.map_err(|e| *refused = Some(e)) })
}

/// A stream's cursor, where it is kept.
#[async_trait::async_trait]
pub trait CursorStore: Send + Sync {
    async fn read(&self, org: &str, id: &str) -> Result<Option<Cursor>, SharedError>;
    /// Durable once it returns. In a cluster, refused unless this node still holds the org's
    /// shard under the epoch it started delivering with (a zombie moves no cursor).
    async fn write(&self, org: &str, id: &str, cursor: &Cursor) -> Result<(), SharedError>;
    /// Whether delivery may go on now (a node that lost the shard's lease by its own clock
    /// sends nothing more).
    fn may_act(&self) -> bool {
        true
    }
}

/// The cluster's streams (see the module doc).
#[async_trait::async_trait]
pub trait SharedStreams: Send + Sync {
    /// Fails unless the metastore answers now: checked before a change is recorded in the
    /// org's log, so an outage refuses it before anything happens.
    async fn check_writable(&self) -> Result<(), SharedError>;
    /// Stores a new stream with its first cursor (fenced like every cursor write), committed
    /// only once `record` made the change's audit entry durable. `Ok(false)`: the record was
    /// refused and nothing changed.
    async fn create(
        &self,
        def: &StreamDef,
        secrets: &Secrets,
        cursor: &Cursor,
        record: Recording<'_>,
    ) -> Result<bool, SharedError>;
    /// Replaces a stream's definition, recorded as [`SharedStreams::create`] is.
    async fn update(
        &self,
        def: &StreamDef,
        secrets: &Secrets,
        record: Recording<'_>,
    ) -> Result<bool, SharedError>;
    /// Deletes a stream and its cursor, recorded as [`SharedStreams::create`] is.
    async fn remove(&self, org: &str, id: &str, record: Recording<'_>)
    -> Result<bool, SharedError>;
    /// Where `org`'s cursors are written while this node delivers its streams (it holds and
    /// serves the org's shard); `None` otherwise.
    fn cursors(&self, org: &str) -> Option<Arc<dyn CursorStore>>;
    /// Whether `org`'s streams are loaded and run here now (its shard served, and its streams
    /// read from the metastore since).
    fn delivers(&self, org: &str) -> bool;
}

/// The cursors of a single node: files under `data_dir/streams/cursors/`.
pub struct LocalCursors(pub Arc<StreamStore>);

#[async_trait::async_trait]
impl CursorStore for LocalCursors {
    async fn read(&self, org: &str, id: &str) -> Result<Option<Cursor>, SharedError> {
        let (store, org, id) = (self.0.clone(), org.to_string(), id.to_string());
        tokio::task::spawn_blocking(move || store.read_cursor(&org, &id))
            .await
            .map_err(|e| SharedError::Local(e.to_string()))?
            .map_err(|e| SharedError::Local(e.to_string()))
    }

    async fn write(&self, org: &str, id: &str, cursor: &Cursor) -> Result<(), SharedError> {
        let (store, org, id, c) = (
            self.0.clone(),
            org.to_string(),
            id.to_string(),
            cursor.clone(),
        );
        tokio::task::spawn_blocking(move || store.write_cursor(&org, &id, &c))
            .await
            .map_err(|e| SharedError::Local(e.to_string()))?
            .map_err(|e| SharedError::Local(e.to_string()))
    }
}
