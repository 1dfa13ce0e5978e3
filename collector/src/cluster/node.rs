//! Joining the cluster at start: the metastore migrated and the shard count checked, the lease
//! keeper made (the server runs it), the JetStream log connected with its stream in place, the
//! object store for the shards' snapshots set up.

use codestax_config::ClusterConfig;
use tokio::sync::watch;

use super::directory::ShardDirectory;
use super::error::JoinError;
use super::jetstream::{JetStreamLog, LogSettings};
use super::leases::{Held, KeeperSettings, LeaseKeeper};
use super::metastore::{Metastore, MetastoreLink};
use super::owner::{Serving, SnapshotSettings};
use super::snapshot::SnapshotStore;

/// What a node runs in cluster mode.
pub struct ClusterNode {
    /// Where ingest publishes.
    pub log: JetStreamLog,
    /// The task keeping this node's leases (to spawn).
    pub keeper: LeaseKeeper,
    /// The shards this node holds (owners, phase 2, follow it).
    pub held: watch::Receiver<Held>,
    /// Where the owners snapshot their shards.
    pub snapshots: SnapshotSettings,
    /// Where an org's reads go (the server runs its refresh).
    pub directory: ShardDirectory,
    /// The held shards the owners caught up with (they mark them; the directory serves them).
    pub serving: Serving,
}

impl ClusterNode {
    /// Joins: fails (and the collector does not start) if PostgreSQL or NATS cannot be reached,
    /// or the cluster has another shard count.
    pub async fn join(config: &ClusterConfig) -> Result<ClusterNode, JoinError> {
        let password = config.postgres.password.as_deref();
        let mut metastore = Metastore::connect(&config.postgres.url, password).await?;
        metastore.migrate().await?;
        metastore.init_shards(config.shards).await?;
        let snapshots = SnapshotSettings {
            store: SnapshotStore::new(&config.object_store)?,
            metastore: MetastoreLink::new(
                &config.postgres.url,
                password,
                Metastore::connect(&config.postgres.url, password).await?,
            ),
            interval: config.snapshot_interval,
        };
        let log = JetStreamLog::connect(&LogSettings {
            urls: config.nats.urls.clone(),
            stream: config.nats.stream.clone(),
            replicas: config.nats.replicas,
            shards: config.shards,
            client_name: config.node_id.clone(),
            max_age: super::jetstream::stream_max_age(config.snapshot_interval),
            setup_timeout: config.nats.setup_timeout,
        })
        .await?;
        let (keeper, held) = LeaseKeeper::new(
            KeeperSettings {
                node_id: config.node_id.clone(),
                advertise_url: config.advertise_url.clone(),
                shards: config.shards,
                lease_ttl: config.lease_ttl,
                postgres_url: config.postgres.url.clone(),
                postgres_password: config.postgres.password.clone(),
            },
            metastore,
        );
        let serving = Serving::default();
        let directory = ShardDirectory::new(config, held.clone(), serving.clone());
        Ok(ClusterNode {
            log,
            keeper,
            held,
            snapshots,
            directory,
            serving,
        })
    }
}
