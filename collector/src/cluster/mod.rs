//! Cluster mode (docs/cluster.md): shards and their names, the PostgreSQL metastore (leases with
//! epochs, fencing), the even spread of shards over nodes and the task that keeps a node's
//! leases, the JetStream log ingest publishes to, joining at start, and the owners that consume
//! the held shards into the local store and index.

mod error;
mod jetstream;
mod leases;
mod metastore;
mod node;
mod owner;
mod plan;
mod shard;
mod snapshot;

pub use error::{JoinError, LogError, MetastoreError, SnapshotError};
pub use jetstream::{
    Appended, DUPLICATE_WINDOW, JetStreamLog, LogSettings, ORG_HEADER, OWNER_ACK_WAIT,
    OWNER_CONSUMER_IDLE, PUBLISH_TIMEOUT,
};
pub use leases::{Held, KeeperSettings, LeaseKeeper};
pub use metastore::{Lease, Metastore, MetastoreLink, SnapshotRecord};
pub use node::ClusterNode;
pub use owner::{OWNER_RECEIVER, Owners, SnapshotSettings};
pub use plan::{LeaseState, Plan, plan};
pub use shard::{msg_id, shard_of, subject, subjects};
pub use snapshot::{CHUNK_RECORDS, Chunk, MANIFEST_FORMAT, Manifest, SnapshotStore};
