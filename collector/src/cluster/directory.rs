//! Where an org's reads are served (docs/cluster.md, "Routing reads"): the owner of
//! `shard(org)`, from a cache of `shard_leases` and `nodes.advertise_url` refreshed every
//! [`DIRECTORY_REFRESH`]. This node's own shards come from its lease keeper (valid by its own
//! clock) and are served once its owner caught up with them ([`Serving`]); another node's entry is trusted only until that lease's expiry as read, measured
//! from when the read was sent, so a dead owner's shard turns unavailable by itself.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use codestax_config::ClusterConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::MetastoreError;
use super::leases::Held;
use super::metastore::Metastore;
use super::owner::Serving;
use super::shard::shard_of;

/// How often the owners are read again.
pub const DIRECTORY_REFRESH: Duration = Duration::from_millis(500);

/// Another node's unexpired lease, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOwner {
    pub shard: u32,
    pub node_id: String,
    pub advertise_url: String,
    pub epoch: i64,
    /// The lease's expiry on this node's monotonic clock (never later than the database's).
    pub valid_until: Instant,
}

/// Where a read of an org goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node holds the shard: serve it here.
    Local,
    /// Another node holds it: proxy to it.
    Remote { node_id: String, url: String },
    /// Nobody holds it now (a failover, or the metastore unreachable past the lease).
    Unavailable,
}

impl Metastore {
    /// Every shard's unexpired lease with its owner's URL.
    pub async fn owners(&self) -> Result<Vec<ShardOwner>, MetastoreError> {
        let sent = Instant::now();
        let rows = self
            .client
            .query(
                "SELECT l.shard, l.owner, n.advertise_url, l.epoch,
                        extract(epoch FROM l.expires_at - now())::float8
                 FROM shard_leases l JOIN nodes n ON n.node_id = l.owner
                 WHERE l.expires_at > now() ORDER BY l.shard",
                &[],
            )
            .await
            .map_err(MetastoreError::sql("read the shard owners"))?;
        Ok(rows
            .iter()
            .map(|r| ShardOwner {
                shard: r.get::<_, i32>(0) as u32,
                node_id: r.get(1),
                advertise_url: r.get(2),
                epoch: r.get(3),
                valid_until: sent + Duration::from_secs_f64(r.get::<_, f64>(4).max(0.0)),
            })
            .collect())
    }
}

/// The cached map of shard owners (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct ShardDirectory {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    shards: u32,
    postgres_url: String,
    postgres_password: Option<String>,
    held: watch::Receiver<Held>,
    serving: Serving,
    owners: RwLock<Vec<ShardOwner>>,
}

impl ShardDirectory {
    pub fn new(
        config: &ClusterConfig,
        held: watch::Receiver<Held>,
        serving: Serving,
    ) -> ShardDirectory {
        ShardDirectory {
            inner: Arc::new(Inner {
                node_id: config.node_id.clone(),
                shards: config.shards,
                postgres_url: config.postgres.url.clone(),
                postgres_password: config.postgres.password.clone(),
                held,
                serving,
                owners: RwLock::new(Vec::new()),
            }),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// `org`'s shard and where its reads go now.
    pub fn route(&self, org: &str) -> (u32, Route) {
        let shard = shard_of(org, self.inner.shards);
        let held = self
            .inner
            .held
            .borrow()
            .get(&shard)
            .filter(|lease| lease.is_valid())
            .map(|lease| lease.epoch);
        if let Some(epoch) = held {
            // Held but not caught up yet (restoring, replaying): no partial answers.
            let route = if self.inner.serving.is_serving(shard, epoch) {
                Route::Local
            } else {
                Route::Unavailable
            };
            return (shard, route);
        }
        let now = Instant::now();
        let owners = self
            .inner
            .owners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let route = owners
            .iter()
            .find(|o| o.shard == shard && o.valid_until > now && o.node_id != self.inner.node_id)
            .map_or(Route::Unavailable, |o| Route::Remote {
                node_id: o.node_id.clone(),
                url: o.advertise_url.clone(),
            });
        (shard, route)
    }

    /// Reads the owners every [`DIRECTORY_REFRESH`] until `stop`. While the metastore is
    /// unreachable the entries age out at their leases' expiry.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(DIRECTORY_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metastore: Option<Metastore> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.refresh(&mut metastore).await {
                Ok(()) => failing = false,
                Err(e) => {
                    metastore = None;
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the shard owners; routing from the cached leases until they expire");
                        failing = true;
                    }
                }
            }
        }
    }

    async fn refresh(&self, metastore: &mut Option<Metastore>) -> Result<(), MetastoreError> {
        if metastore.as_ref().is_none_or(Metastore::is_closed) {
            let m = Metastore::connect(
                &self.inner.postgres_url,
                self.inner.postgres_password.as_deref(),
            )
            .await?;
            *metastore = Some(m);
        }
        let Some(m) = metastore.as_ref() else {
            return Ok(());
        };
        let owners = m.owners().await?;
        *self
            .inner
            .owners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = owners;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Lease;
    use codestax_config::{NatsConfig, ObjectStoreConfig, PostgresConfig};

    fn config() -> ClusterConfig {
        ClusterConfig {
            node_id: "c1".into(),
            advertise_url: "http://127.0.0.1:1".into(),
            shards: 1,
            lease_ttl: Duration::from_secs(1),
            snapshot_interval: Duration::from_secs(1),
            nats: NatsConfig {
                urls: vec!["nats://127.0.0.1:1".into()],
                stream: "S".into(),
                replicas: 1,
                setup_timeout: Duration::from_secs(30),
            },
            postgres: PostgresConfig {
                url: "postgres://u@127.0.0.1:1/db".into(),
                password: None,
            },
            object_store: ObjectStoreConfig {
                url: "s3://b/p".into(),
                endpoint: None,
                region: "us-east-1".into(),
                allow_http: false,
            },
        }
    }

    fn lease(epoch: i64, valid_for: Duration) -> Lease {
        Lease {
            shard: 0,
            owner: "c1".into(),
            epoch,
            expires_at: chrono::Utc::now(),
            valid_until: Instant::now() + valid_for,
        }
    }

    #[test]
    fn a_held_shard_is_served_here_only_once_caught_up_under_its_epoch() {
        let (held, receiver) = watch::channel(Held::new());
        let serving = Serving::default();
        let directory = ShardDirectory::new(&config(), receiver, serving.clone());
        // Not held, nobody else known: unavailable.
        assert_eq!(directory.route("acme"), (0, Route::Unavailable));

        held.send_replace(Held::from([(0, lease(2, Duration::from_secs(60)))]));
        // Held, still restoring or replaying: a 503, never a partial answer.
        assert_eq!(directory.route("acme"), (0, Route::Unavailable));
        serving.mark_for_tests(0, 1);
        assert_eq!(
            directory.route("acme"),
            (0, Route::Unavailable),
            "caught up under an older epoch"
        );
        serving.mark_for_tests(0, 2);
        assert_eq!(directory.route("acme"), (0, Route::Local));

        // Past the lease's local deadline: no longer served here.
        held.send_replace(Held::from([(0, lease(2, Duration::ZERO))]));
        assert_eq!(directory.route("acme"), (0, Route::Unavailable));
    }
}
