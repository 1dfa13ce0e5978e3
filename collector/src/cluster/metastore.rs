//! The cluster's metastore in PostgreSQL: versioned schema migrations, the shard count fixed at
//! creation, node heartbeats, shard leases (acquired and renewed by compare-and-set, fenced by
//! epoch) and snapshot rows that only a shard's current lease holder can publish. All times are
//! the database's `now()`: one clock for every node.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, NoTls};

use super::error::MetastoreError;
use super::plan::LeaseState;

/// Schema migrations, applied in order, each once. Never edit one that shipped: add another.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE cluster_meta (
        singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        shards     integer NOT NULL CHECK (shards > 0),
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE nodes (
        node_id       text PRIMARY KEY,
        advertise_url text NOT NULL,
        started_at    timestamptz NOT NULL,
        heartbeat_at  timestamptz NOT NULL
    );
    CREATE TABLE shard_leases (
        shard      integer PRIMARY KEY,
        owner      text,
        epoch      bigint NOT NULL DEFAULT 0,
        expires_at timestamptz NOT NULL DEFAULT '-infinity'
    );
    CREATE TABLE snapshots (
        id          bigserial PRIMARY KEY,
        shard       integer NOT NULL REFERENCES shard_leases (shard),
        epoch       bigint NOT NULL,
        stream_seq  bigint NOT NULL,
        location    text NOT NULL,
        chain_heads jsonb NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX snapshots_shard ON snapshots (shard, id DESC);",
    ),
    // API keys (cluster::keys): every node caches them in its keys.json.
    (
        2,
        "CREATE TABLE api_keys (
        id           text PRIMARY KEY,
        org_id       text NOT NULL,
        role         text NOT NULL,
        name         text,
        token_sha256 text NOT NULL UNIQUE,
        created_at   timestamptz NOT NULL,
        created_by   text,
        revoked_at   timestamptz,
        revoked_by   text
    );
    CREATE INDEX api_keys_org ON api_keys (org_id, created_at);",
    ),
    // The settings every node caches (cluster::settings), the cluster's one signing key
    // (cluster::signing), and streams with their cursors, fenced by the shard's epoch.
    (
        3,
        "CREATE TABLE retention_overrides (
        org_id     text PRIMARY KEY,
        days       integer NOT NULL CHECK (days BETWEEN 1 AND 3650),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE saved_views (
        org_id     text PRIMARY KEY,
        views      jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE signing_key (
        singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        verifier      text NOT NULL,
        sealed_signer text NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE streams (
        org_id     text NOT NULL,
        id         text NOT NULL,
        definition jsonb NOT NULL,
        deleted_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (org_id, id)
    );
    CREATE TABLE stream_cursors (
        org_id     text NOT NULL,
        id         text NOT NULL,
        shard      integer NOT NULL REFERENCES shard_leases (shard),
        epoch      bigint NOT NULL,
        cursor     jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (org_id, id)
    );",
    ),
    // Streams read by change (cluster::streams): each row carries the id of the transaction
    // that last wrote it, and a node reads only rows written by transactions its last read
    // could not see (`changed_xid >= ` that read's snapshot xmin), not every stream each round.
    (
        4,
        "ALTER TABLE streams ADD COLUMN changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
    CREATE INDEX streams_changed ON streams (changed_xid);",
    ),
];

/// The schema version this collector migrates to: its newest migration's.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock key migrations run under (so nodes starting together do not race).
const MIGRATION_LOCK: i64 = 0x636f_6465_7374_6178; // "codestax"

/// A shard lease this node holds: valid for it until `valid_until` on its own monotonic clock,
/// and in the database until `expires_at`, under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard: u32,
    pub owner: String,
    pub epoch: i64,
    pub expires_at: DateTime<Utc>,
    /// When the request that set `expires_at` was sent, plus the TTL: never later than the
    /// database's expiry, whatever the request's delay, so a node stops acting first.
    pub valid_until: Instant,
}

impl Lease {
    /// Whether this node may still act for the shard, by its own clock (a paused process that
    /// wakes past this must not serve or write for it).
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// A snapshot row: what an owner publishes after uploading an index snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    pub stream_seq: u64,
    pub location: String,
    pub chain_heads: serde_json::Value,
}

/// A connection to the metastore.
pub struct Metastore {
    /// Shared with the sibling modules that keep their own tables here (keys, status).
    pub(super) client: Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Metastore {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn shard_param(shard: u32) -> i32 {
    shard as i32
}

impl Metastore {
    /// Connects to `url` (`postgres://user@host:port/db`) with `password`, if any.
    pub async fn connect(url: &str, password: Option<&str>) -> Result<Metastore, MetastoreError> {
        let connect_error = |source| MetastoreError::Connect {
            url: url.to_string(),
            source,
        };
        let mut config: tokio_postgres::Config = url.parse().map_err(connect_error)?;
        if let Some(password) = password {
            config.password(password);
        }
        config.connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "metastore connection closed");
            }
        });
        Ok(Metastore { client, connection })
    }

    /// Whether the connection has closed (the caller connects again).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Brings the schema to the newest version this collector knows; returns it. Refuses a
    /// schema newer than that (a newer collector migrated it).
    pub async fn migrate(&mut self) -> Result<i32, MetastoreError> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(MetastoreError::sql("begin a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(MetastoreError::sql("lock for migrations"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(MetastoreError::sql("create schema_migrations"))?;
        let found: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(MetastoreError::sql("read the schema version"))?
            .get(0);
        let known = SCHEMA_VERSION;
        if found > known {
            return Err(MetastoreError::SchemaTooNew { found, known });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            tx.batch_execute(sql)
                .await
                .map_err(MetastoreError::sql("apply a migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(MetastoreError::sql("record a migration"))?;
            tracing::info!(version, "metastore schema migrated");
        }
        tx.commit()
            .await
            .map_err(MetastoreError::sql("commit migrations"))?;
        Ok(known)
    }

    /// Creates the cluster with `shards` shards (a lease row each) if it does not exist yet;
    /// refuses another shard count than the cluster's.
    pub async fn init_shards(&mut self, shards: u32) -> Result<(), MetastoreError> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(MetastoreError::sql("begin creating shards"))?;
        tx.execute(
            "INSERT INTO cluster_meta (shards) VALUES ($1) ON CONFLICT (singleton) DO NOTHING",
            &[&(shards as i32)],
        )
        .await
        .map_err(MetastoreError::sql("record the shard count"))?;
        let cluster: i32 = tx
            .query_one("SELECT shards FROM cluster_meta", &[])
            .await
            .map_err(MetastoreError::sql("read the shard count"))?
            .get(0);
        if cluster as u32 != shards {
            return Err(MetastoreError::ShardsMismatch {
                configured: shards,
                cluster: cluster as u32,
            });
        }
        tx.execute(
            "INSERT INTO shard_leases (shard) SELECT generate_series(0, $1 - 1)
             ON CONFLICT (shard) DO NOTHING",
            &[&(shards as i32)],
        )
        .await
        .map_err(MetastoreError::sql("create the shard leases"))?;
        tx.commit()
            .await
            .map_err(MetastoreError::sql("commit creating shards"))
    }

    /// Records that `node` is alive and reachable at `advertise_url`.
    pub async fn heartbeat(&self, node: &str, advertise_url: &str) -> Result<(), MetastoreError> {
        self.client
            .execute(
                "INSERT INTO nodes (node_id, advertise_url, started_at, heartbeat_at)
                 VALUES ($1, $2, now(), now())
                 ON CONFLICT (node_id) DO UPDATE
                 SET advertise_url = EXCLUDED.advertise_url, heartbeat_at = now()",
                &[&node, &advertise_url],
            )
            .await
            .map_err(MetastoreError::sql("heartbeat"))?;
        Ok(())
    }

    /// Marks `node` as gone (a clean stop): it no longer counts among the live nodes.
    pub async fn leave(&self, node: &str) -> Result<(), MetastoreError> {
        self.client
            .execute(
                "UPDATE nodes SET heartbeat_at = '-infinity' WHERE node_id = $1",
                &[&node],
            )
            .await
            .map_err(MetastoreError::sql("leave"))?;
        Ok(())
    }

    /// Nodes whose last heartbeat is younger than `ttl`, in id order.
    pub async fn live_nodes(&self, ttl: Duration) -> Result<Vec<String>, MetastoreError> {
        let rows = self
            .client
            .query(
                "SELECT node_id FROM nodes
                 WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY node_id",
                &[&secs(ttl)],
            )
            .await
            .map_err(MetastoreError::sql("list live nodes"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Every shard's lease as the planner needs it.
    pub async fn lease_states(&self) -> Result<Vec<LeaseState>, MetastoreError> {
        let rows = self
            .client
            .query(
                "SELECT shard, owner, expires_at <= now() FROM shard_leases ORDER BY shard",
                &[],
            )
            .await
            .map_err(MetastoreError::sql("read the leases"))?;
        Ok(rows
            .iter()
            .map(|r| LeaseState {
                shard: r.get::<_, i32>(0) as u32,
                owner: r.get(1),
                expired: r.get(2),
            })
            .collect())
    }

    /// The current owner and epoch of `shard` while its lease is unexpired.
    pub async fn owner(&self, shard: u32) -> Result<Option<(String, i64)>, MetastoreError> {
        let row = self
            .client
            .query_opt(
                "SELECT owner, epoch FROM shard_leases
                 WHERE shard = $1 AND owner IS NOT NULL AND expires_at > now()",
                &[&shard_param(shard)],
            )
            .await
            .map_err(MetastoreError::sql("read a shard's owner"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Takes `shard` for `node` if it is free or expired (compare-and-set), under the next
    /// epoch; `None` if another node holds it.
    pub async fn acquire(
        &self,
        shard: u32,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, MetastoreError> {
        let sent = Instant::now();
        let row = self
            .client
            .query_opt(
                "UPDATE shard_leases
                 SET owner = $2, epoch = epoch + 1, expires_at = now() + make_interval(secs => $3)
                 WHERE shard = $1 AND (owner IS NULL OR expires_at <= now())
                 RETURNING epoch, expires_at",
                &[&shard_param(shard), &node, &secs(ttl)],
            )
            .await
            .map_err(MetastoreError::sql("acquire a lease"))?;
        Ok(row.map(|r| Lease {
            shard,
            owner: node.to_string(),
            epoch: r.get(0),
            expires_at: r.get(1),
            valid_until: sent + ttl,
        }))
    }

    /// Extends `lease` by `ttl` if it is still this owner's, under the same epoch, and
    /// unexpired; `None` if it was lost (the node must stop acting for the shard and acquire it
    /// again, under a new epoch).
    pub async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<Lease>, MetastoreError> {
        let sent = Instant::now();
        let row = self
            .client
            .query_opt(
                "UPDATE shard_leases SET expires_at = now() + make_interval(secs => $4)
                 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()
                 RETURNING expires_at",
                &[
                    &shard_param(lease.shard),
                    &lease.owner,
                    &lease.epoch,
                    &secs(ttl),
                ],
            )
            .await
            .map_err(MetastoreError::sql("renew a lease"))?;
        Ok(row.map(|r| Lease {
            expires_at: r.get(0),
            valid_until: sent + ttl,
            ..lease.clone()
        }))
    }

    /// Gives `lease` up at once (for the rebalance); false if it was no longer held.
    pub async fn release(&self, lease: &Lease) -> Result<bool, MetastoreError> {
        let n = self
            .client
            .execute(
                "UPDATE shard_leases SET expires_at = now()
                 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()",
                &[&shard_param(lease.shard), &lease.owner, &lease.epoch],
            )
            .await
            .map_err(MetastoreError::sql("release a lease"))?;
        Ok(n == 1)
    }

    /// Publishes a snapshot row for `lease`'s shard, fenced: only if the lease is still the
    /// holder's, under its epoch, unexpired — in the same statement, which also locks the lease
    /// row so no takeover commits in between. A zombie (a stale epoch) gets
    /// [`MetastoreError::Fenced`]. Returns the row's id.
    pub async fn publish_snapshot(
        &self,
        lease: &Lease,
        snapshot: &SnapshotRecord,
    ) -> Result<i64, MetastoreError> {
        let row = self
            .client
            .query_opt(
                "INSERT INTO snapshots (shard, epoch, stream_seq, location, chain_heads)
                 SELECT shard, epoch, $4, $5, $6 FROM shard_leases
                 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()
                 FOR SHARE
                 RETURNING id",
                &[
                    &shard_param(lease.shard),
                    &lease.owner,
                    &lease.epoch,
                    &(snapshot.stream_seq as i64),
                    &snapshot.location,
                    &tokio_postgres::types::Json(&snapshot.chain_heads),
                ],
            )
            .await
            .map_err(MetastoreError::sql("publish a snapshot"))?;
        row.map(|r| r.get(0)).ok_or_else(|| MetastoreError::Fenced {
            shard: lease.shard,
            node: lease.owner.clone(),
            epoch: lease.epoch,
        })
    }

    /// Deletes `lease`'s shard's snapshot rows but the newest `keep` (at least 1), fenced as
    /// [`Metastore::publish_snapshot`]: only the current holder trims, so a zombie deletes
    /// nothing. A restore reads only the newest row; older ones name manifests that object
    /// collection deletes anyway. Returns how many rows went.
    pub async fn trim_snapshots(&self, lease: &Lease, keep: usize) -> Result<u64, MetastoreError> {
        let skip = i64::try_from(keep.max(1) - 1).unwrap_or(i64::MAX);
        self.client
            .execute(
                "DELETE FROM snapshots s USING shard_leases l
                 WHERE s.shard = $1 AND l.shard = $1
                   AND l.owner = $2 AND l.epoch = $3 AND l.expires_at > now()
                   AND s.id < (SELECT id FROM snapshots WHERE shard = $1
                               ORDER BY id DESC OFFSET $4 LIMIT 1)",
                &[&shard_param(lease.shard), &lease.owner, &lease.epoch, &skip],
            )
            .await
            .map_err(MetastoreError::sql("trim the snapshot rows"))
    }

    /// The newest snapshot of `shard`: (epoch, stream sequence, location).
    pub async fn latest_snapshot(
        &self,
        shard: u32,
    ) -> Result<Option<(i64, u64, String)>, MetastoreError> {
        let row = self
            .client
            .query_opt(
                "SELECT epoch, stream_seq, location FROM snapshots
                 WHERE shard = $1 ORDER BY id DESC LIMIT 1",
                &[&shard_param(shard)],
            )
            .await
            .map_err(MetastoreError::sql("read the latest snapshot"))?;
        Ok(row.map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2))))
    }
}

/// A metastore connection for the owners (snapshot rows), opened again when it closed.
pub struct MetastoreLink {
    url: String,
    password: Option<String>,
    conn: tokio::sync::Mutex<Metastore>,
}

impl MetastoreLink {
    pub fn new(url: &str, password: Option<&str>, conn: Metastore) -> MetastoreLink {
        MetastoreLink {
            url: url.to_string(),
            password: password.map(str::to_string),
            conn: tokio::sync::Mutex::new(conn),
        }
    }

    /// A connection of its own, for a transaction that waits on something else (a change's
    /// audit record) and must not hold the owners' shared connection meanwhile.
    pub(super) async fn connect(&self) -> Result<Metastore, MetastoreError> {
        Metastore::connect(&self.url, self.password.as_deref()).await
    }

    pub(super) async fn open(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Metastore>, MetastoreError> {
        let mut conn = self.conn.lock().await;
        if conn.is_closed() {
            *conn = Metastore::connect(&self.url, self.password.as_deref()).await?;
        }
        Ok(conn)
    }

    /// [`Metastore::latest_snapshot`].
    pub async fn latest_snapshot(
        &self,
        shard: u32,
    ) -> Result<Option<(i64, u64, String)>, MetastoreError> {
        self.open().await?.latest_snapshot(shard).await
    }

    /// [`Metastore::trim_snapshots`].
    pub async fn trim(&self, lease: &Lease, keep: usize) -> Result<u64, MetastoreError> {
        self.open().await?.trim_snapshots(lease, keep).await
    }

    /// [`Metastore::publish_snapshot`].
    pub async fn publish(
        &self,
        lease: &Lease,
        row: &SnapshotRecord,
    ) -> Result<i64, MetastoreError> {
        self.open().await?.publish_snapshot(lease, row).await
    }
}
