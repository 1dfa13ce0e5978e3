//! What can go wrong in cluster mode's metastore and log.

/// A metastore (PostgreSQL) operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetastoreError {
    #[error("cannot connect to the metastore {url}: {source}")]
    Connect {
        url: String,
        source: tokio_postgres::Error,
    },
    #[error("metastore: {what}: {source}")]
    Sql {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error(
        "the metastore's schema is version {found}, newer than this collector's {known}; upgrade the collector"
    )]
    SchemaTooNew { found: i32, known: i32 },
    #[error(
        "cluster.shards is {configured}, but the cluster was created with {cluster} shards (fixed at creation)"
    )]
    ShardsMismatch { configured: u32, cluster: u32 },
    #[error("shard {shard} is not leased by {node} under epoch {epoch} (fenced)")]
    Fenced {
        shard: u32,
        node: String,
        epoch: i64,
    },
}

impl MetastoreError {
    pub(crate) fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MetastoreError {
        move |source| MetastoreError::Sql { what, source }
    }
}

/// Publishing to or setting up the JetStream log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot connect to NATS ({urls}): {reason}")]
    Connect { urls: String, reason: String },
    /// No server answered for the whole `cluster.nats.setup_timeout`.
    #[error(
        "cannot connect to NATS ({urls}): {reason} (tried {attempts} times in {tried:.1?}; cluster.nats.setup_timeout)"
    )]
    NotReachable {
        urls: String,
        reason: String,
        attempts: u32,
        tried: std::time::Duration,
    },
    #[error("cannot set up stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    /// The servers could not set the stream up for the whole `cluster.nats.setup_timeout`.
    #[error(
        "cannot set up stream {stream}: {reason} (tried {attempts} times in {tried:.1?}; cluster.nats.setup_timeout)"
    )]
    StreamNotReady {
        stream: String,
        reason: String,
        attempts: u32,
        tried: std::time::Duration,
    },
    #[error("cannot encode record {id:?} of org {org}: {reason}")]
    Encode {
        org: String,
        id: String,
        reason: String,
    },
    #[error("publish to {subject} was not acknowledged: {reason}")]
    Publish { subject: String, reason: String },
}

/// Writing or reading a shard snapshot in the object store failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cluster.object_store: {0}")]
    Settings(String),
    #[error("object store: {what} {key}: {reason}")]
    Object {
        what: &'static str,
        key: String,
        reason: String,
    },
    #[error("snapshot object {key} is damaged: {reason}")]
    Damaged { key: String, reason: String },
    #[error("index: {0}")]
    Index(#[from] crate::index::IndexError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Task(String),
    #[error("org {org}'s records in {key} do not continue its chain on this node (a fork)")]
    Conflict { org: String, key: String },
    #[error("org {org}'s chain in the index is not consecutive after seq {after}")]
    Gap { org: String, after: u64 },
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
}

/// A node could not join the cluster at start.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// A `keys` command in cluster mode failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterKeysError {
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
}

/// A cluster-wide setting (retention override, saved view) could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The metastore is unreachable: nothing was changed (the API answers 503).
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
    #[error("the metastore did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The change was recorded in the org's log, but its COMMIT failed or was not answered:
    /// it may or may not have been made.
    #[error("the change was recorded, but the metastore did not confirm it: {0}")]
    Unconfirmed(String),
    #[error(transparent)]
    Retention(#[from] crate::retention::RetentionError),
    #[error(transparent)]
    Views(#[from] crate::saved_views::SavedViewError),
    #[error("saved views of org {org} in the metastore are not readable: {reason}")]
    Decode { org: String, reason: String },
    #[error("background task failed: {0}")]
    Task(String),
}

/// A node's first cluster start could not offer its data dir's streams to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum StreamOfferError {
    #[error(
        "this data dir's streams cannot be offered to the cluster with streams.secret_key_file {}: \
         {source} (a single node's data dir joins a cluster with the key file it sealed its \
         streams with, which must be the cluster's)", .key_file.display()
    )]
    Store {
        key_file: std::path::PathBuf,
        source: crate::stream::store::StoreError,
    },
    #[error(
        "streams.secret_key_file {} is not the cluster's stream secret key (the cluster's signing \
         key or streams do not open with it): every node, and a single node's data dir joining \
         the cluster, needs the cluster's key file", .key_file.display()
    )]
    KeyMismatch { key_file: std::path::PathBuf },
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
    #[error("reading this data dir's records for the streams' cursors: {0}")]
    Index(#[from] crate::index::IndexError),
    #[error("background task failed: {0}")]
    Task(String),
}
