//! Settings in cluster mode: retention overrides and saved views live in the metastore
//! (`retention_overrides`, `saved_views`: one row per org) and every node caches them in its
//! own files (`retention-overrides.json`, `saved-views/<org>.json`), as [`super::KeySync`] does
//! for keys: reads, the janitor and ingest go on from the cache while PostgreSQL is down, and
//! after a restart too. [`SettingsSync`] refreshes the cache every [`SETTINGS_REFRESH`]. A
//! change is written to PostgreSQL first and to the cache after, under one lock, so a change
//! answered as made is the cluster's; while PostgreSQL is down a change fails (503) and nothing
//! changes. At start a node offers the files it has to the cluster (a single node's data dir
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
use crate::retention::{OrgRetention, RetentionPolicy};
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
        let sql = if keep {
            "INSERT INTO retention_overrides (org_id, days) VALUES ($1, $2)
             ON CONFLICT (org_id) DO NOTHING"
        } else {
            "INSERT INTO retention_overrides (org_id, days) VALUES ($1, $2)
             ON CONFLICT (org_id) DO UPDATE SET days = EXCLUDED.days, updated_at = now()"
        };
        self.client
            .execute(sql, &[&org, &(days as i32)])
            .await
            .map_err(MetastoreError::sql("store a retention override"))?;
        Ok(())
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
    /// changes made on two nodes at once both count: the views after, and what `change` gave.
    pub async fn change_views<T>(
        &mut self,
        org: &str,
        change: impl FnOnce(&mut Vec<SavedView>) -> Result<T, SavedViewError>,
    ) -> Result<(Vec<SavedView>, T), SettingsError> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(MetastoreError::sql("begin a saved view change"))?;
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
        tx.commit()
            .await
            .map_err(MetastoreError::sql("commit a saved view change"))?;
        Ok((views, out))
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

    /// Fails unless the metastore answers now: checked before a change is recorded in the
    /// audit log, so an outage refuses it before anything happens.
    pub async fn check_writable(&self) -> Result<(), SettingsError> {
        let m = self.connection().await?;
        within(async {
            m.client
                .execute("SELECT 1", &[])
                .await
                .map_err(MetastoreError::sql("reach the metastore"))?;
            Ok::<_, MetastoreError>(())
        })
        .await
    }

    /// Sets `org`'s retention to `days` in the cluster, then in the cache.
    pub async fn set_retention(&self, org: &str, days: u32) -> Result<OrgRetention, SettingsError> {
        self.retention.check_editable(org)?;
        let days = RetentionPolicy::check_days(i64::from(days))?;
        let m = self.connection().await?;
        within(m.put_retention(org, days, false)).await?;
        let (retention, org) = (self.retention.clone(), org.to_string());
        blocking(move || Ok(retention.set_days(&org, days)?)).await
    }

    /// Applies `change` to the org's views in the cluster, then saves them in the cache.
    pub async fn change_views<T: Send + 'static>(
        &self,
        org: &str,
        change: impl FnOnce(&mut Vec<SavedView>) -> Result<T, SavedViewError> + Send,
    ) -> Result<T, SettingsError> {
        let mut m = self.connection().await?;
        let (views, out) = within(m.change_views(org, change)).await?;
        let (store, org) = (self.views.clone(), org.to_string());
        blocking(move || Ok(store.replace(&org, views)?)).await?;
        Ok(out)
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
