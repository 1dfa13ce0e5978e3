//! Settings in cluster mode: retention overrides and saved views live in the metastore
//! (`retention_overrides`, `saved_views`: one row per org) and every node caches them in its
//! own files (`retention-overrides.json`, `saved-views/<org>.json`), as [`super::KeySync`] does
//! for keys: reads, the janitor and ingest go on from the cache while PostgreSQL is down, and
//! after a restart too. [`SettingsSync`] refreshes the cache every [`SETTINGS_REFRESH`]. A
//! change is written to PostgreSQL in a transaction, recorded in the org's log, then committed,
//! and written to the cache after, under one lock ([`commit_recorded`]): a change answered as
//! made is the cluster's and recorded; while PostgreSQL is down, or refuses the write, a change
//! fails (503) before it is recorded and nothing changes. At start a node offers the files it has to the cluster (a single node's data dir
//! moved into a cluster); an org the cluster already has keeps the cluster's.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use codestax_config::ClusterConfig;
use tokio_postgres::types::Json;
use tokio_util::sync::CancellationToken;

use super::error::{MetastoreError, SettingsError};
use super::keys::refresh_every;
use super::metastore::Metastore;
use crate::retention::{OrgRetention, RetentionPolicy, Source};
use crate::saved_views::{SavedView, SavedViewError, SavedViews};

/// How often a node reads the cluster's settings: a change made on another node is in effect
/// here within about this long.
pub const SETTINGS_REFRESH: Duration = Duration::from_secs(1);
/// Longest a change waits for the metastore before it is refused.
const WRITE_WAIT: Duration = Duration::from_secs(5);

impl Metastore {
    /// Every org's retention override.
    pub async fn retention_overrides(&self) -> Result<BTreeMap<String, u32>, MetastoreError> {
        let rows = self
            .client
            .query("SELECT org_id, days FROM retention_overrides", &[])
            .await
            .map_err(MetastoreError::sql("read the retention overrides"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i32>(1) as u32))
            .collect())
    }

    /// Sets `org`'s override to `days`, or only adds it if the org has none (`keep`: an offer).
    pub async fn put_retention(
        &self,
        org: &str,
        days: u32,
        keep: bool,
    ) -> Result<(), MetastoreError> {
        self.client
            .execute(retention_sql(keep), &[&org, &(days as i32)])
            .await
            .map_err(MetastoreError::sql("store a retention override"))?;
        Ok(())
    }

    /// Sets `org`'s override to `days` in a transaction that commits only once `record` made
    /// the change's audit entry durable (see `commit_recorded`).
    pub async fn put_retention_recorded<E>(
        &mut self,
        org: &str,
        days: u32,
        record: impl Future<Output = Result<(), E>>,
    ) -> Result<Result<(), E>, SettingsError> {
        let tx = within(async {
            self.client
                .transaction()
                .await
                .map_err(MetastoreError::sql("begin a retention change"))
        })
        .await?;
        within(async {
            tx.execute(retention_sql(false), &[&org, &(days as i32)])
                .await
                .map_err(MetastoreError::sql("store a retention override"))
        })
        .await?;
        commit_recorded(tx, record).await
    }

    /// Every org's saved views, as stored (decoded by the caller).
    pub async fn saved_views(&self) -> Result<Vec<(String, serde_json::Value)>, MetastoreError> {
        let rows = self
            .client
            .query("SELECT org_id, views FROM saved_views", &[])
            .await
            .map_err(MetastoreError::sql("read the saved views"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, Json<serde_json::Value>>(1).0))
            .collect())
    }

    /// Adds `views` as the org's if it has none in the metastore (an offer).
    pub async fn offer_views(&self, org: &str, views: &[SavedView]) -> Result<(), MetastoreError> {
        self.client
            .execute(
                "INSERT INTO saved_views (org_id, views) VALUES ($1, $2)
                 ON CONFLICT (org_id) DO NOTHING",
                &[&org, &Json(views)],
            )
            .await
            .map_err(MetastoreError::sql("offer saved views"))?;
        Ok(())
    }

    /// Applies `change` to the org's views in one transaction with the row locked, so
    /// changes made on two nodes at once both count, and commits it only once `record` made
    /// the change's audit entry durable (`commit_recorded`): the views after, and what
    /// `change` gave. A change `change` refuses is neither recorded nor made.
    pub async fn change_views_recorded<T, E>(
        &mut self,
        org: &str,
        change: impl FnOnce(&mut Vec<SavedView>) -> Result<T, SavedViewError>,
        record: impl Future<Output = Result<(), E>>,
    ) -> Result<Result<(Vec<SavedView>, T), E>, SettingsError> {
        let tx = within(async {
            self.client
                .transaction()
                .await
                .map_err(MetastoreError::sql("begin a saved view change"))
        })
        .await?;
        let (views, out) = within(async {
            tx.execute(
                "INSERT INTO saved_views (org_id, views) VALUES ($1, '[]') ON CONFLICT DO NOTHING",
                &[&org],
            )
            .await
            .map_err(MetastoreError::sql("create an org's saved views"))?;
            let row = tx
                .query_one(
                    "SELECT views FROM saved_views WHERE org_id = $1 FOR UPDATE",
                    &[&org],
                )
                .await
                .map_err(MetastoreError::sql("read an org's saved views"))?;
            let mut views = decode_views(org, row.get::<_, Json<serde_json::Value>>(0).0)?;
            let out = change(&mut views)?;
            tx.execute(
                "UPDATE saved_views SET views = $2, updated_at = now() WHERE org_id = $1",
                &[&org, &Json(&views)],
            )
            .await
            .map_err(MetastoreError::sql("store an org's saved views"))?;
            Ok::<_, SettingsError>((views, out))
        })
        .await?;
        Ok(commit_recorded(tx, record).await?.map(|()| (views, out)))
    }
}

/// The upsert of one org's override; `keep` only adds it where the org has none.
fn retention_sql(keep: bool) -> &'static str {
    if keep {
        "INSERT INTO retention_overrides (org_id, days) VALUES ($1, $2)
         ON CONFLICT (org_id) DO NOTHING"
    } else {
        "INSERT INTO retention_overrides (org_id, days) VALUES ($1, $2)
         ON CONFLICT (org_id) DO UPDATE SET days = EXCLUDED.days, updated_at = now()"
    }
}

/// The end of a settings change written (not committed) in `tx`: `record` makes its audit
/// entry durable, then the transaction commits. A refused record (`Ok(Err(_))`) rolls the
/// change back, so the log never names a change the metastore refused before it was recorded
/// (an outage, a lock that never came): nothing was changed. What remains is a COMMIT that
/// fails after the record ([`SettingsError::Unconfirmed`]): the record is in the log and the
/// change may or may not be, as the commit's answer was lost; the caller is told so. A change
/// is never made without its record (docs/cluster.md, "Settings and the signing key").
pub(super) async fn commit_recorded<E>(
    tx: tokio_postgres::Transaction<'_>,
    record: impl Future<Output = Result<(), E>>,
) -> Result<Result<(), E>, SettingsError> {
    if let Err(e) = record.await {
        // Dropped on a timeout, the transaction still rolls back (tokio-postgres sends it).
        let _ = within(async {
            tx.rollback()
                .await
                .map_err(MetastoreError::sql("roll back"))
        })
        .await;
        return Ok(Err(e));
    }
    let committed = within(async {
        tx.commit()
            .await
            .map_err(MetastoreError::sql("commit a recorded settings change"))
    })
    .await;
    match committed {
        Ok(()) => Ok(Ok(())),
        Err(e) => {
            tracing::error!(error = %e, "a settings change was recorded in the org's log, but its commit was not confirmed: the change may not have been made");
            Err(SettingsError::Unconfirmed(e.to_string()))
        }
    }
}

fn decode_views(org: &str, value: serde_json::Value) -> Result<Vec<SavedView>, SettingsError> {
    serde_json::from_value(value).map_err(|e| SettingsError::Decode {
        org: org.to_string(),
        reason: e.to_string(),
    })
}

/// Keeps a node's settings cache in step with the metastore, and makes changes (module doc).
pub struct SettingsSync {
    postgres_url: String,
    postgres_password: Option<String>,
    /// One round or change at a time: a round never puts back what a change just replaced.
    metastore: tokio::sync::Mutex<Option<Metastore>>,
    retention: Arc<RetentionPolicy>,
    views: Arc<SavedViews>,
}

impl SettingsSync {
    pub fn new(
        config: &ClusterConfig,
        retention: Arc<RetentionPolicy>,
        views: Arc<SavedViews>,
    ) -> SettingsSync {
        SettingsSync {
            postgres_url: config.postgres.url.clone(),
            postgres_password: config.postgres.password.clone(),
            metastore: tokio::sync::Mutex::new(None),
            retention,
            views,
        }
    }

    /// The connection (made again if it was lost), locked.
    async fn connection(
        &self,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, Metastore>, SettingsError> {
        let mut guard = self.metastore.lock().await;
        if guard.as_ref().is_none_or(Metastore::is_closed) {
            *guard = None;
            let connect = Metastore::connect(&self.postgres_url, self.postgres_password.as_deref());
            *guard = Some(within(connect).await?);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |m| {
            m.as_mut().expect("connected above")
        }))
    }

    /// Offers this node's cached settings to the cluster (orgs it lacks), then reads the
    /// cluster's into the cache.
    pub async fn offer_and_sync(&self) -> Result<(), SettingsError> {
        let overrides = self.retention.overrides();
        let views = blocking({
            let views = self.views.clone();
            move || views.all().map_err(SettingsError::from)
        })
        .await?;
        {
            let m = self.connection().await?;
            within(async {
                for (org, days) in &overrides {
                    m.put_retention(org, *days, true).await?;
                }
                for (org, views) in &views {
                    m.offer_views(org, views).await?;
                }
                Ok::<_, MetastoreError>(())
            })
            .await?;
        }
        self.sync().await
    }

    /// One round: the cluster's settings into the cache.
    pub async fn sync(&self) -> Result<(), SettingsError> {
        let m = self.connection().await?;
        let (overrides, stored) = within(async {
            Ok::<_, MetastoreError>((m.retention_overrides().await?, m.saved_views().await?))
        })
        .await?;
        let mut views = Vec::new();
        for (org, value) in stored {
            match decode_views(&org, value) {
                Ok(v) => views.push((org, v)),
                Err(e) => tracing::warn!(error = %e, "saved views not cached"),
            }
        }
        let (retention, store) = (self.retention.clone(), self.views.clone());
        // Applied with the connection's lock held: see `metastore`.
        blocking(move || {
            retention.replace_overrides(overrides)?;
            for (org, views) in views {
                store.replace(&org, views)?;
            }
            Ok(())
        })
        .await
    }

    /// Syncs every [`SETTINGS_REFRESH`] until `stop`; failures are logged once per distinct
    /// error, the cache stays in use.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        refresh_every(
            SETTINGS_REFRESH,
            stop,
            "cannot read the cluster's settings; using the cached ones",
            || self.sync(),
        )
        .await
    }

    /// Sets `org`'s retention to `days` in the cluster, then in the cache: written in a
    /// transaction, recorded by `record`, then committed (`commit_recorded`). `Ok(Err(_))`:
    /// `record` refused, nothing changed.
    pub async fn set_retention_recorded<E>(
        &self,
        org: &str,
        days: u32,
        record: impl Future<Output = Result<(), E>>,
    ) -> Result<Result<OrgRetention, E>, SettingsError> {
        self.retention.check_editable(org)?;
        let days = RetentionPolicy::check_days(i64::from(days))?;
        let mut m = self.connection().await?;
        if let Err(e) = m.put_retention_recorded(org, days, record).await? {
            return Ok(Err(e));
        }
        let (retention, org) = (self.retention.clone(), org.to_string());
        let cached = blocking({
            let org = org.clone();
            move || Ok(retention.set_days(&org, days)?)
        })
        .await;
        Ok(Ok(cached.unwrap_or_else(|e| {
            // Made and recorded: the cache follows at the next refresh.
            tracing::warn!(org = org.as_str(), error = %e, "the retention change is the cluster's, but this node's cache could not be written");
            OrgRetention {
                days,
                source: Source::Api,
                ..self.retention.for_org(&org)
            }
        })))
    }

    /// Applies `change` to the org's views in the cluster (recorded by `record` before the
    /// transaction commits, `commit_recorded`), then saves them in the cache. `Ok(Err(_))`:
    /// `record` refused, nothing changed.
    pub async fn change_views_recorded<T: Send + 'static, E>(
        &self,
        org: &str,
        change: impl FnOnce(&mut Vec<SavedView>) -> Result<T, SavedViewError> + Send,
        record: impl Future<Output = Result<(), E>>,
    ) -> Result<Result<T, E>, SettingsError> {
        let mut m = self.connection().await?;
        let (views, out) = match m.change_views_recorded(org, change, record).await? {
            Ok(changed) => changed,
            Err(e) => return Ok(Err(e)),
        };
        let (store, org) = (self.views.clone(), org.to_string());
        let cached = blocking({
            let org = org.clone();
            move || Ok(store.replace(&org, views)?)
        })
        .await;
        if let Err(e) = cached {
            // Made and recorded: the cache follows at the next refresh.
            tracing::warn!(org = org.as_str(), error = %e, "the saved view change is the cluster's, but this node's cache could not be written");
        }
        Ok(Ok(out))
    }
}

/// `work`, refused after [`WRITE_WAIT`] (a metastore that hangs rather than refuses).
pub(super) async fn within<T, E: Into<SettingsError>>(
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, SettingsError> {
    tokio::time::timeout(WRITE_WAIT, work)
        .await
        .map_err(|_| SettingsError::Timeout(WRITE_WAIT))?
        .map_err(Into::into)
}

/// Runs blocking file work (fsync) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SettingsError> + Send + 'static,
) -> Result<T, SettingsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SettingsError::Task(e.to_string()))?
}
