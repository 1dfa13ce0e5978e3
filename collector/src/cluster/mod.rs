//! Cluster mode (docs/cluster.md): shards and their names, the PostgreSQL metastore (leases with
//! epochs, fencing), the even spread of shards over nodes and the task that keeps a node's
//! leases, the JetStream log ingest publishes to, joining at start, and the owners that consume
//! the held shards into the local store and index; API keys kept in the metastore and cached
//! on every node; the directory of shard owners that routes an org's reads, and the proxy that
//! forwards them; retention overrides, saved views and the signing key kept in the metastore
//! and cached on every node; streams kept in the metastore and delivered by the owner of the
//! org's shard, their cursors written under the shard's epoch.

mod cli;
mod cursors;
mod directory;
mod error;
mod jetstream;
mod keys;
mod leases;
mod metastore;
mod node;
mod owner;
mod plan;
mod proxy;
mod settings;
mod shard;
mod signing;
mod snapshot;
mod status;
mod streams;

pub use cli::{ClusterCliError, ClusterCommand, run_cluster_command};
pub use directory::{DIRECTORY_REFRESH, Route, ShardDirectory, ShardOwner};
pub use error::{
    ClusterKeysError, JoinError, LogError, MetastoreError, SettingsError, SnapshotError,
    StreamOfferError,
};
pub use jetstream::{
    Appended, DUPLICATE_WINDOW, JetStreamLog, LogSettings, ORG_HEADER, OWNER_ACK_WAIT,
    OWNER_CONSUMER_IDLE, PUBLISH_TIMEOUT,
};
pub use keys::{KEY_REFRESH, KeySync, run_cluster_keys_command};
pub use leases::{Held, KeeperSettings, LeaseKeeper};
pub use metastore::{Lease, Metastore, MetastoreLink, SCHEMA_VERSION, SnapshotRecord};
pub use node::ClusterNode;
pub use owner::{OWNER_RECEIVER, Owners, Serving, SnapshotSettings};
pub use plan::{LeaseState, Plan, plan};
pub use proxy::{FORWARD_WARN_EVERY, ForwardWarnings, ProxyError, ROUTED_HEADER, forward};
pub use settings::{SETTINGS_REFRESH, SettingsSync};
pub use shard::{msg_id, owner_consumer, shard_of, subject, subjects};
pub use signing::{BINDING as SIGNING_KEY_BINDING, SigningKeyError, adopt_signing_key};
pub use snapshot::{CHUNK_RECORDS, Chunk, MANIFEST_FORMAT, Manifest, SnapshotStore};
pub use status::{ClusterStatus, NodeStatus, ShardStatus, cluster_status, write_status};
pub use streams::{
    OfferOutcome, StreamChanges, StreamOfferRow, StreamSync, check_streams_open, offer_streams,
};

/// What the HTTP API uses of the cluster: where an org's reads go, the keys' refresh for an
/// unknown token, and the settings kept in the metastore.
#[derive(Clone)]
pub struct ClusterApi {
    pub directory: ShardDirectory,
    pub keys: std::sync::Arc<KeySync>,
    pub settings: std::sync::Arc<SettingsSync>,
    /// Which failed forwards of reads are logged (a failover fails every read of a shard).
    pub forward_warnings: std::sync::Arc<ForwardWarnings>,
}
