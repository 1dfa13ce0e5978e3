//! API keys in cluster mode: the metastore's `api_keys` table is the cluster's key store, and
//! every node caches it in its own `keys.json` ([`KeyStore::merge`]), so ingest goes on with the
//! cached keys while PostgreSQL is unreachable, and after a restart too. [`KeySync`] refreshes
//! the cache every [`KEY_REFRESH`] and on an unknown token, and offers the keys made or revoked
//! through a node's API to the table (a union where a revocation wins: keys only grow, and a
//! revocation is final). `codestax-collector keys ... --config` writes the table directly.

use std::io::Write;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use codestax_common::time::truncate_to_micros;
use codestax_config::ClusterConfig;
use tokio_util::sync::CancellationToken;

use super::error::{ClusterKeysError, MetastoreError};
use super::metastore::Metastore;
use crate::keys::{
    KeyError, KeyInfo, KeyStore, KeysCommand, Role, SharedKey, Token, check_list_org,
    check_new_key, new_key_id, print_created, print_list, print_revoked,
};

/// How often a node reads the cluster's keys: a key revoked elsewhere stops working here within
/// about this long.
pub const KEY_REFRESH: Duration = Duration::from_secs(1);
/// Longest an unknown token waits for the metastore before it is refused: a few round trips on
/// a loaded host, while an outage (refused connections fail at once) stalls nobody for long.
const UNKNOWN_TOKEN_WAIT: Duration = Duration::from_secs(3);
/// Reads of the table unknown tokens may cause per second: a new key works at once, and a flood
/// of random tokens costs the metastore at most this many small queries a second per node.
const UNKNOWN_TOKEN_READS: u32 = 20;

const KEY_COLUMNS: &str =
    "id, org_id, role, name, token_sha256, created_at, created_by, revoked_at, revoked_by";

fn row_to_key(row: &tokio_postgres::Row) -> Option<SharedKey> {
    let id: String = row.get(0);
    let role: String = row.get(2);
    let Ok(role) = Role::from_str(&role) else {
        tracing::warn!(key_id = %id, role, "cluster key with an unknown role; skipped");
        return None;
    };
    Some(SharedKey {
        info: KeyInfo {
            id,
            org_id: row.get(1),
            role,
            name: row.get(3),
            created_at: row.get(5),
            created_by: row.get(6),
            revoked_at: row.get(7),
            revoked_by: row.get(8),
        },
        token_sha256: row.get(4),
    })
}

impl Metastore {
    /// Every key of the cluster (or of `org`), revoked ones included, oldest first.
    pub async fn keys(&self, org: Option<&str>) -> Result<Vec<SharedKey>, MetastoreError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR org_id = $1
                     ORDER BY created_at, id"
                ),
                &[&org],
            )
            .await
            .map_err(MetastoreError::sql("read the API keys"))?;
        Ok(rows.iter().filter_map(row_to_key).collect())
    }

    /// Adds `key`, or, if its id is there, revokes it there when `key` is revoked and it is
    /// not yet (a revocation is final; nothing else of a key changes).
    pub async fn put_key(&self, key: &SharedKey) -> Result<(), MetastoreError> {
        let k = &key.info;
        self.client
            .execute(
                "INSERT INTO api_keys
                   (id, org_id, role, name, token_sha256, created_at, created_by, revoked_at, revoked_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO UPDATE
                 SET revoked_at = EXCLUDED.revoked_at, revoked_by = EXCLUDED.revoked_by
                 WHERE api_keys.revoked_at IS NULL AND EXCLUDED.revoked_at IS NOT NULL",
                &[
                    &k.id,
                    &k.org_id,
                    &k.role.as_str(),
                    &k.name,
                    &key.token_sha256,
                    &k.created_at,
                    &k.created_by,
                    &k.revoked_at,
                    &k.revoked_by,
                ],
            )
            .await
            .map_err(MetastoreError::sql("store an API key"))?;
        Ok(())
    }

    /// Revokes key `id` (on behalf of the CLI).
    pub async fn revoke_key(&self, id: &str) -> Result<KeyInfo, ClusterKeysError> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
                     RETURNING {KEY_COLUMNS}"
                ),
                &[&id, &truncate_to_micros(Utc::now())],
            )
            .await
            .map_err(MetastoreError::sql("revoke an API key"))?;
        if let Some(key) = row.as_ref().and_then(row_to_key) {
            return Ok(key.info);
        }
        let existing = self
            .client
            .query_opt("SELECT revoked_at FROM api_keys WHERE id = $1", &[&id])
            .await
            .map_err(MetastoreError::sql("read an API key"))?;
        Err(match existing.and_then(|r| r.get(0)) {
            Some(at) => KeyError::AlreadyRevoked { id: id.into(), at },
            None => KeyError::NotFound(id.into()),
        }
        .into())
    }
}

/// Keeps a node's key cache in step with the metastore (see the module doc).
pub struct KeySync {
    keys: KeyStore,
    postgres_url: String,
    postgres_password: Option<String>,
    /// One sync at a time; the connection is made again after it is lost.
    metastore: tokio::sync::Mutex<Option<Metastore>>,
    /// Reads unknown tokens caused in the current second.
    unknown: Mutex<(Instant, u32)>,
}

impl KeySync {
    pub fn new(keys: KeyStore, config: &ClusterConfig) -> KeySync {
        KeySync {
            keys,
            postgres_url: config.postgres.url.clone(),
            postgres_password: config.postgres.password.clone(),
            metastore: tokio::sync::Mutex::new(None),
            unknown: Mutex::new((Instant::now(), 0)),
        }
    }

    /// One round: reads the cluster's keys into the cache, then offers the table what the cache
    /// has that the table lacks (keys made or revoked through this node's API). Returns whether
    /// the cache changed.
    pub async fn sync(&self) -> Result<bool, ClusterKeysError> {
        let mut guard = self.metastore.lock().await;
        if guard.as_ref().is_none_or(Metastore::is_closed) {
            *guard = None;
            let m =
                Metastore::connect(&self.postgres_url, self.postgres_password.as_deref()).await?;
            *guard = Some(m);
        }
        let Some(m) = guard.as_ref() else {
            return Ok(false);
        };
        let remote = m.keys(None).await?;
        let keys = self.keys.clone();
        let merged = remote.clone();
        let changed = tokio::task::spawn_blocking(move || keys.merge(&merged))
            .await
            .map_err(|e| KeyError::NotRecorded(format!("key merge task failed: {e}")))??;
        let known: std::collections::HashMap<&str, &SharedKey> =
            remote.iter().map(|k| (k.info.id.as_str(), k)).collect();
        for local in self.keys.shared_keys() {
            let newer = match known.get(local.info.id.as_str()) {
                None => true,
                Some(r) => r.info.revoked_at.is_none() && local.info.revoked_at.is_some(),
            };
            if newer {
                m.put_key(&local).await?;
            }
        }
        Ok(changed)
    }

    /// Syncs every [`KEY_REFRESH`] until `stop`. Failures (the metastore down) are logged once
    /// per distinct error; the cached keys stay in use.
    pub async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
        refresh_every(
            KEY_REFRESH,
            stop,
            "cannot read the cluster's API keys; using the cached keys",
            || async { self.sync().await.map(|_| ()) },
        )
        .await
    }

    /// For a token the cache does not know: syncs once (within `UNKNOWN_TOKEN_WAIT`, at most
    /// `UNKNOWN_TOKEN_READS` a second), so a key made on another node works at once. Returns
    /// whether the sync succeeded (then the caller looks again): not whether *this* round changed
    /// the cache, since the periodic round may have merged the key while this one waited for it.
    pub async fn refresh_for_unknown_token(&self) -> bool {
        {
            let mut window = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if now.duration_since(window.0) >= Duration::from_secs(1) {
                *window = (now, 0);
            }
            if window.1 >= UNKNOWN_TOKEN_READS {
                return false;
            }
            window.1 += 1;
        }
        matches!(
            tokio::time::timeout(UNKNOWN_TOKEN_WAIT, self.sync()).await,
            Ok(Ok(_))
        )
    }
}

/// `codestax-collector keys ...` in cluster mode: on the metastore's table. Results on `out`,
/// notes on `notes`, as the single node's [`crate::keys::run_keys_command`].
pub async fn run_cluster_keys_command(
    cmd: KeysCommand,
    config: &ClusterConfig,
    out: &mut impl Write,
    notes: &mut impl Write,
) -> Result<(), ClusterKeysError> {
    let mut m =
        Metastore::connect(&config.postgres.url, config.postgres.password.as_deref()).await?;
    m.migrate().await?;
    match cmd {
        KeysCommand::Create { org, role, name } => {
            check_new_key(&org, name.as_deref())?;
            let token = Token::generate()?;
            let info = KeyInfo {
                id: new_key_id()?,
                org_id: org,
                role,
                name,
                created_at: truncate_to_micros(Utc::now()),
                revoked_at: None,
                created_by: None,
                revoked_by: None,
            };
            m.put_key(&SharedKey {
                info: info.clone(),
                token_sha256: token.hash().to_hex(),
            })
            .await?;
            print_created(&info, &token, out, notes)?;
        }
        KeysCommand::List { org, json } => {
            check_list_org(org.as_deref())?;
            let keys: Vec<KeyInfo> = m
                .keys(org.as_deref())
                .await?
                .into_iter()
                .map(|k| k.info)
                .collect();
            print_list(&keys, json, out)?;
        }
        KeysCommand::Revoke { id } => print_revoked(&m.revoke_key(&id).await?, out)?,
    }
    Ok(())
}

/// Runs `round` every `period` until `stop`, for a cache of the metastore: a failure is logged
/// (`warning`) once per distinct error, and the cache stays in use.
pub(super) async fn refresh_every<F, E>(
    period: Duration,
    stop: CancellationToken,
    warning: &str,
    mut round: impl FnMut() -> F,
) where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match round().await {
            Ok(()) => last_error = None,
            Err(e) => {
                let message = e.to_string();
                if last_error.as_deref() != Some(&message) {
                    tracing::warn!(error = %message, "{warning}");
                    last_error = Some(message);
                }
            }
        }
    }
}
