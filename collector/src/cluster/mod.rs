//! Cluster mode (docs/cluster.md): shards and their names, the PostgreSQL metastore (leases with
//! epochs, fencing), the even spread of shards over nodes and the task that keeps a node's
//! leases, the JetStream log ingest publishes to, and joining at start.

mod error;
mod jetstream;
mod leases;
mod metastore;
mod node;
mod plan;
mod shard;

pub use error::{JoinError, LogError, MetastoreError};
pub use jetstream::{
    Appended, DUPLICATE_WINDOW, JetStreamLog, LogSettings, ORG_HEADER, PUBLISH_TIMEOUT,
};
pub use leases::{Held, KeeperSettings, LeaseKeeper};
pub use metastore::{Lease, Metastore, SnapshotRecord};
pub use node::ClusterNode;
pub use plan::{LeaseState, Plan, plan};
pub use shard::{msg_id, shard_of, subject, subjects};
