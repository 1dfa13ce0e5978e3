//! `[cluster]`: cluster mode (docs/cluster.md). Absent, the collector is the single node it always
//! was; present, ingest goes through a NATS JetStream stream, shard leases live in PostgreSQL and
//! index snapshots in an S3-compatible object store.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{Checker, duration};
use crate::summary::Summary;

/// The environment variable holding the metastore's password (taken verbatim; never put it in
/// the URL or the file).
pub const POSTGRES_PASSWORD_ENV: &str = "CODESTAX_COLLECTOR__CLUSTER__POSTGRES__PASSWORD";
/// Most shards a cluster may have.
pub const MAX_SHARDS: u32 = 4096;
/// Shortest `lease_ttl` (tests run with it).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// Longest `lease_ttl`.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(300);
/// Shortest `snapshot_interval` (tests run with a few seconds).
pub const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `snapshot_interval`: the stream must hold everything since the last snapshot.
pub const MAX_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest `nats.setup_timeout`.
pub const MIN_NATS_SETUP_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest `nats.setup_timeout`.
pub const MAX_NATS_SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster (1 to 64 of `A-Z a-z 0-9 _ . -`).
    pub node_id: String,
    /// How the other nodes reach this node's HTTP API (`http://` or `https://` URL).
    pub advertise_url: String,
    /// Number of shards (1 to 4096). Fixed when the cluster is created: a node configured with
    /// another number than the cluster's refuses to start.
    pub shards: u32,
    /// How long a shard lease lasts without renewal (duration, 1s to 5min): after an owner
    /// dies, its shards are taken over after at most this long.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often an owner uploads a snapshot of each shard it holds to the object store
    /// (duration, 1s to 1h): a takeover replays the stream from the last one, so the stream must
    /// keep at least this much (docs/cluster.md, sizing).
    #[serde(default = "default_snapshot_interval", with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// `[cluster.nats]`: the JetStream log.
    pub nats: NatsConfig,
    /// `[cluster.postgres]`: the metastore.
    pub postgres: PostgresConfig,
    /// `[cluster.object_store]`: where index snapshots go.
    pub object_store: ObjectStoreConfig,
}

/// `[cluster.nats]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Servers of the NATS cluster (`nats://host:port`, or `tls://`); give several so the node
    /// can connect while one is down.
    pub urls: Vec<String>,
    /// The JetStream stream records go to (created at first start; `A-Z a-z 0-9 _ -`). Its
    /// subjects are `<stream>.shard.<n>`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Copies of the stream (1 to 5; 3 to survive the loss of one server). A publish is
    /// acknowledged once a majority of them stored it.
    #[serde(default = "default_replicas")]
    pub replicas: u8,
    /// How long a node keeps trying at start to connect, and to create or check the stream,
    /// while no server answers or the servers cannot do it yet (a server still starting, a meta
    /// leader that has not heard from a peer) before it refuses to start (duration, 1s to
    /// 10min; one patience for both). An error that cannot pass (credentials or TLS refused,
    /// the stream's subjects taken by another stream) fails at once.
    #[serde(default = "default_nats_setup_timeout", with = "humantime_serde")]
    pub setup_timeout: Duration,
}

/// `[cluster.postgres]`
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The metastore, `postgres://user@host:port/database` (without a password).
    pub url: String,
    /// The password, from `CODESTAX_COLLECTOR__CLUSTER__POSTGRES__PASSWORD`; unset for none (a
    /// trusted or certificate login). Never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

// The password is a secret: Debug shows only whether it is set.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// `[cluster.object_store]`. Credentials come from the standard AWS environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// Bucket and prefix, `s3://bucket/prefix`.
    pub url: String,
    /// Endpoint of an S3-compatible store (`http(s)://host:port`); unset for AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket's region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Allow a plain-HTTP `endpoint` (test set-ups only).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_snapshot_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_stream() -> String {
    "CODESTAX_AUDIT".into()
}
fn default_replicas() -> u8 {
    3
}
fn default_nats_setup_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_region() -> String {
    "us-east-1".into()
}

impl ClusterConfig {
    /// Adds every problem of `[cluster]` to `c`.
    pub(crate) fn check(&self, c: &mut Checker) {
        if !is_valid_id(&self.node_id) {
            c.fail(
                "cluster.node_id",
                format!(
                    "must be 1 to 64 of A-Z a-z 0-9 _ . -, got {:?}",
                    self.node_id
                ),
            );
        }
        if !has_scheme(&self.advertise_url, &["http", "https"]) {
            c.fail(
                "cluster.advertise_url",
                format!(
                    "must be an http:// or https:// URL other nodes reach this node's API at, got {:?}",
                    self.advertise_url
                ),
            );
        }
        c.range("cluster.shards", self.shards, 1, MAX_SHARDS);
        c.duration_range(
            "cluster.lease_ttl",
            self.lease_ttl,
            MIN_LEASE_TTL,
            MAX_LEASE_TTL,
        );
        c.duration_range(
            "cluster.snapshot_interval",
            self.snapshot_interval,
            MIN_SNAPSHOT_INTERVAL,
            MAX_SNAPSHOT_INTERVAL,
        );

        if self.nats.urls.is_empty() {
            c.fail("cluster.nats.urls", "must list at least one server");
        }
        for (i, url) in self.nats.urls.iter().enumerate() {
            if !has_scheme(url, &["nats", "tls"]) {
                c.fail(
                    &format!("cluster.nats.urls.{i}"),
                    format!("must be a nats:// or tls:// URL, got {url:?}"),
                );
            }
        }
        let stream = &self.nats.stream;
        if stream.is_empty()
            || stream.len() > 64
            || !stream
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            c.fail(
                "cluster.nats.stream",
                format!("must be 1 to 64 of A-Z a-z 0-9 _ -, got {stream:?}"),
            );
        }
        c.range("cluster.nats.replicas", self.nats.replicas, 1, 5);
        c.duration_range(
            "cluster.nats.setup_timeout",
            self.nats.setup_timeout,
            MIN_NATS_SETUP_TIMEOUT,
            MAX_NATS_SETUP_TIMEOUT,
        );

        let url = &self.postgres.url;
        if !has_scheme(url, &["postgres", "postgresql"]) {
            c.fail(
                "cluster.postgres.url",
                format!("must be a postgres:// URL, got {:?}", redact_password(url)),
            );
        } else if url_has_password(url) {
            c.fail(
                "cluster.postgres.url",
                format!(
                    "must not hold a password ({:?}); put it in {POSTGRES_PASSWORD_ENV}",
                    redact_password(url)
                ),
            );
        }
        if let Some(password) = &self.postgres.password
            && password.is_empty()
        {
            c.fail(
                "cluster.postgres.password",
                "must not be empty (leave it unset for none)",
            );
        }

        let store = &self.object_store;
        match store.url.strip_prefix("s3://") {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
            _ => c.fail(
                "cluster.object_store.url",
                format!(
                    "must be s3://bucket or s3://bucket/prefix, got {:?}",
                    store.url
                ),
            ),
        }
        if let Some(endpoint) = &store.endpoint {
            if !has_scheme(endpoint, &["http", "https"]) {
                c.fail(
                    "cluster.object_store.endpoint",
                    format!("must be an http:// or https:// URL, got {endpoint:?}"),
                );
            } else if endpoint.starts_with("http://") && !store.allow_http {
                c.fail(
                    "cluster.object_store.endpoint",
                    format!(
                        "is plain HTTP ({endpoint:?}); set cluster.object_store.allow_http = true to allow it"
                    ),
                );
            }
        }
        c.non_empty("cluster.object_store.region", &store.region);
    }

    /// Rows for `--check-config`.
    pub(crate) fn summarize(&self, s: &mut Summary) {
        s.row("cluster.node_id", &self.node_id)
            .row("cluster.advertise_url", &self.advertise_url)
            .row("cluster.shards", self.shards)
            .row("cluster.lease_ttl", duration(self.lease_ttl))
            .row(
                "cluster.snapshot_interval",
                duration(self.snapshot_interval),
            )
            .row("cluster.nats.urls", self.nats.urls.join(", "))
            .row("cluster.nats.stream", &self.nats.stream)
            .row("cluster.nats.replicas", self.nats.replicas)
            .row(
                "cluster.nats.setup_timeout",
                duration(self.nats.setup_timeout),
            )
            .row("cluster.postgres.url", &self.postgres.url)
            .row(
                "cluster.postgres.password",
                if self.postgres.password.is_some() {
                    "<set>"
                } else {
                    "(none)"
                },
            )
            .row("cluster.object_store.url", &self.object_store.url)
            .row(
                "cluster.object_store.endpoint",
                self.object_store.endpoint.as_deref().unwrap_or("(AWS S3)"),
            )
            .row("cluster.object_store.region", &self.object_store.region)
            .row(
                "cluster.object_store.allow_http",
                self.object_store.allow_http,
            );
    }
}

/// Node ids follow the org id rules: safe in paths, subjects and URLs.
fn is_valid_id(id: &str) -> bool {
    crate::check::is_valid_org_id(id)
}

/// Whether `url` is `<one of schemes>://` followed by something.
fn has_scheme(url: &str, schemes: &[&str]) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, rest)| schemes.contains(&scheme) && !rest.is_empty())
}

/// The user-info part of a URL (`user:password` in `scheme://user:password@host`), if any.
fn user_info(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    authority.rsplit_once('@').map(|(info, _)| info)
}

fn url_has_password(url: &str) -> bool {
    user_info(url).is_some_and(|info| info.contains(':'))
}

/// `url` with any password replaced by `***`, for messages.
fn redact_password(url: &str) -> String {
    match user_info(url).and_then(|info| info.split_once(':')) {
        Some((user, password)) => {
            url.replacen(&format!("{user}:{password}@"), &format!("{user}:***@"), 1)
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_found_and_redacted() {
        assert!(url_has_password("postgres://u:secret@db:5432/x"));
        assert!(!url_has_password("postgres://u@db:5432/x"));
        assert!(!url_has_password("postgres://db:5432/x"));
        assert!(!url_has_password("postgres://db/x?options=a:b@c"));
        assert_eq!(
            redact_password("postgres://u:secret@db/x"),
            "postgres://u:***@db/x"
        );
    }
}
