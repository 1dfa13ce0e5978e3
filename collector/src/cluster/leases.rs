//! The lease keeper: one task per node that, every `lease_ttl / 3`, heartbeats, renews the
//! shard leases it holds, and releases or acquires shards so they spread evenly over the live
//! nodes ([`plan`]). What it holds is published on a watch channel: owners (phase 2) start and
//! stop a shard's consumer from it. While the metastore is unreachable, leases are kept only
//! until their own deadline, then dropped: an owner never acts on a lease that may have passed on.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::MetastoreError;
use super::metastore::{Lease, Metastore};
use super::plan::plan;

/// The shards a node holds, by shard.
pub type Held = BTreeMap<u32, Lease>;

/// How a node takes part in the leases.
#[derive(Debug, Clone)]
pub struct KeeperSettings {
    pub node_id: String,
    pub advertise_url: String,
    pub shards: u32,
    pub lease_ttl: Duration,
    /// The metastore, to connect again after a lost connection.
    pub postgres_url: String,
    pub postgres_password: Option<String>,
}

/// Keeps this node's leases (see the module doc).
pub struct LeaseKeeper {
    settings: KeeperSettings,
    metastore: Option<Metastore>,
    held: Held,
    sender: watch::Sender<Held>,
}

impl LeaseKeeper {
    /// A keeper over an open, migrated metastore; the receiver sees what it holds.
    pub fn new(
        settings: KeeperSettings,
        metastore: Metastore,
    ) -> (LeaseKeeper, watch::Receiver<Held>) {
        let (sender, receiver) = watch::channel(Held::new());
        (
            LeaseKeeper {
                settings,
                metastore: Some(metastore),
                held: Held::new(),
                sender,
            },
            receiver,
        )
    }

    /// What it holds now.
    pub fn held(&self) -> &Held {
        &self.held
    }

    /// Time between rounds: a third of the TTL, so a renewal can fail twice before the lease
    /// expires.
    pub fn interval(&self) -> Duration {
        self.settings.lease_ttl / 3
    }

    /// Rounds until `stop`; then releases what it holds, so others take over at once.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "lease round failed; keeping leases only until their deadline");
                self.drop_expired();
            }
        }
        self.release_all().await;
    }

    /// One round: heartbeat, renew, rebalance. On an error the held set keeps the leases still
    /// valid by this node's clock.
    pub async fn round(&mut self) -> Result<(), MetastoreError> {
        self.connect().await?;
        let Some(m) = self.metastore.as_ref() else {
            return Ok(());
        };
        let s = &self.settings;
        m.heartbeat(&s.node_id, &s.advertise_url).await?;

        let mut renewed = Held::new();
        for (shard, lease) in &self.held {
            match m.renew(lease, s.lease_ttl).await? {
                Some(lease) => {
                    renewed.insert(*shard, lease);
                }
                None => tracing::warn!(shard, epoch = lease.epoch, "shard lease lost"),
            }
        }
        self.held = renewed;

        let live = m.live_nodes(s.lease_ttl).await?;
        let states = m.lease_states().await?;
        let p = plan(&s.node_id, s.shards, &live, &states);
        let released: Vec<Lease> = p
            .release
            .iter()
            .filter_map(|shard| self.held.remove(shard))
            .collect();
        if !released.is_empty() {
            // The owners stop acting for these before the database lets another node take them.
            self.sender.send_replace(self.held.clone());
        }
        for lease in &released {
            m.release(lease).await?;
            tracing::info!(
                shard = lease.shard,
                epoch = lease.epoch,
                "shard released for the rebalance"
            );
        }
        for shard in p.acquire {
            if let Some(lease) = m.acquire(shard, &s.node_id, s.lease_ttl).await? {
                tracing::info!(shard, epoch = lease.epoch, "shard acquired");
                self.held.insert(shard, lease);
            }
        }
        self.sender.send_replace(self.held.clone());
        Ok(())
    }

    /// Drops leases past their local deadline and publishes the rest.
    fn drop_expired(&mut self) {
        let before = self.held.len();
        self.held.retain(|_, lease| lease.is_valid());
        if self.held.len() != before {
            tracing::warn!(
                dropped = before - self.held.len(),
                "shard leases expired while the metastore was unreachable"
            );
        }
        self.sender.send_replace(self.held.clone());
    }

    /// Opens the metastore connection again if it closed (PostgreSQL restarted, or unreachable
    /// when last tried).
    async fn connect(&mut self) -> Result<(), MetastoreError> {
        if self.metastore.as_ref().is_none_or(Metastore::is_closed) {
            self.metastore = None;
            let m = Metastore::connect(
                &self.settings.postgres_url,
                self.settings.postgres_password.as_deref(),
            )
            .await?;
            self.metastore = Some(m);
        }
        Ok(())
    }

    /// Releases every held lease and leaves the live nodes (a clean stop), so the others take
    /// over without waiting for a TTL. The connection is opened again if it closed since the
    /// last round (PostgreSQL restarted meanwhile); past one TTL the leases have expired by
    /// themselves, so it gives up then.
    pub async fn release_all(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.sender.send_replace(Held::new());
        let ttl = self.settings.lease_ttl;
        match tokio::time::timeout(ttl, self.leave(&held)).await {
            Ok(Ok(released)) => tracing::info!(
                released,
                held = held.len(),
                "left the cluster: leases released, no longer a live node"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release the leases and leave; they expire by themselves")
            }
            Err(_) => tracing::warn!(
                "the metastore did not answer within the lease TTL; the leases expire by themselves"
            ),
        }
    }

    /// [`LeaseKeeper::release_all`]'s work: how many of `held` it released.
    async fn leave(&mut self, held: &Held) -> Result<usize, MetastoreError> {
        self.connect().await?;
        let Some(m) = self.metastore.as_ref() else {
            return Ok(0);
        };
        let mut released = 0;
        for lease in held.values() {
            released += usize::from(m.release(lease).await?);
        }
        m.leave(&self.settings.node_id).await?;
        Ok(released)
    }
}
