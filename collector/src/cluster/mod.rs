//! Cluster mode (docs/cluster.md): shards and their names, the PostgreSQL metastore (leases with
//! epochs, fencing), the even spread of shards over nodes and the task that keeps a node's
//! leases.

mod error;
mod leases;
mod metastore;
mod plan;
mod shard;

pub use error::{LogError, MetastoreError};
pub use leases::{Held, KeeperSettings, LeaseKeeper};
pub use metastore::{Lease, Metastore, SnapshotRecord};
pub use plan::{LeaseState, Plan, plan};
pub use shard::{msg_id, shard_of, subject, subjects};
