//! What the cluster scenarios share: the servers (3 nats-servers, PostgreSQL, moto's S3), a
//! collector node over them, the client's ledger of acknowledged ids, the test's own metastore
//! connection, and the checks every fault ends with (each acknowledged id stored once, every
//! org's chain verifying from seq 1, every node giving the same answer).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use codestax_common::AuditRecord;
use codestax_common::chain::verify_chain;
use codestax_harness::{
    CLUSTER_BUCKET, Collector, CollectorOptions, MotoS3, NatsCluster, Postgres, cluster_env, tail,
};
use serde_json::Value;

use crate::cluster_ingest::{PASSWORD, batch, cluster_toml_with, ingest_until_acked};

pub(crate) const BUCKET: &str = CLUSTER_BUCKET;
pub(crate) const QUERY: &str = "action=auth.login";
/// Snapshots every 2 s: a takeover restores recent ones.
const SNAPSHOT_INTERVAL: &str = "2s";

fn node_env(cmd: &mut Command) {
    cluster_env(cmd, PASSWORD);
    cmd.env("RUST_LOG", "warn,codestax_collector::cluster=info");
}

/// The servers a cluster runs on, each with its own directory. Fields drop in order: the
/// servers before their directories.
pub(crate) struct Servers {
    pub(crate) nats: NatsCluster,
    pub(crate) pg: Postgres,
    pub(crate) s3: MotoS3,
    pub(crate) dir: tempfile::TempDir,
    _server_dirs: [tempfile::TempDir; 2],
}

impl Servers {
    /// `None` when a server is missing outside CI (SKIPPED).
    pub(crate) fn start_or_skip(what: &str) -> Option<Servers> {
        let dir = tempfile::tempdir().unwrap();
        let pg_dir = tempfile::tempdir().unwrap();
        let s3_dir = tempfile::tempdir().unwrap();
        let nats = NatsCluster::start_or_skip(what, dir.path())?;
        let pg = Postgres::start_or_skip(what, pg_dir.path(), PASSWORD)?;
        let s3 = MotoS3::start_or_skip(what, s3_dir.path())?;
        s3.create_bucket(BUCKET).unwrap();
        Some(Servers {
            nats,
            pg,
            s3,
            dir,
            _server_dirs: [pg_dir, s3_dir],
        })
    }

    /// Node `name`'s collector (data and stderr under the servers' directory), not started.
    pub(crate) fn node(&self, name: &str) -> Collector {
        let dir = self.dir.path();
        let mut options = CollectorOptions::for_tests(&dir.join(name), "");
        options.before_spawn = Some(node_env);
        options.stderr = Some(dir.join(format!("{name}.stderr")));
        Collector::configure(options).unwrap()
    }

    /// Starts `c` as cluster node `name` (its `[cluster]` written), ready.
    pub(crate) fn join(&self, c: &mut Collector, name: &str) {
        self.join_with(c, name, "", SNAPSHOT_INTERVAL);
    }

    /// [`Servers::join`] with `settings` before the `[cluster]` and snapshots every
    /// `snapshot_interval`.
    pub(crate) fn join_with(
        &self,
        c: &mut Collector,
        name: &str,
        settings: &str,
        snapshot_interval: &str,
    ) {
        self.start_as(
            c,
            name,
            settings,
            "",
            snapshot_interval,
            &self.s3.endpoint(),
        );
    }

    /// [`Servers::join`] with `keys` added to the `[streams]` section (the last one).
    pub(crate) fn join_with_streams(&self, c: &mut Collector, name: &str, keys: &str) {
        self.start_as(c, name, "", keys, SNAPSHOT_INTERVAL, &self.s3.endpoint());
    }

    /// [`Servers::join`] with the object store reached at `s3_endpoint` (a relay in front of
    /// moto).
    pub(crate) fn join_via_s3(&self, c: &mut Collector, name: &str, s3_endpoint: &str) {
        self.start_as(c, name, "", "", SNAPSHOT_INTERVAL, s3_endpoint);
    }

    /// Starts `c` as node `name` with `before` + its `[cluster]` (and `[streams]`) + `after`.
    fn start_as(
        &self,
        c: &mut Collector,
        name: &str,
        before: &str,
        after: &str,
        snapshot_interval: &str,
        s3_endpoint: &str,
    ) {
        let cluster = cluster_toml_with(
            name,
            c.http_port,
            &self.nats,
            &self.pg,
            s3_endpoint,
            snapshot_interval,
        );
        c.restart_with(&format!("{before}{cluster}{after}"))
            .unwrap_or_else(|e| panic!("{e}\n{}", c.stderr()));
    }

    /// A started node `name`.
    pub(crate) fn start_node(&self, name: &str) -> Collector {
        self.start_node_with(name, "")
    }

    /// A started node `name` with `settings` before its `[cluster]`.
    pub(crate) fn start_node_with(&self, name: &str, settings: &str) -> Collector {
        let mut c = self.node(name);
        self.join_with(&mut c, name, settings, SNAPSHOT_INTERVAL);
        c
    }
}

/// A failed test prints the end of every collector's and nats-server's log: they are in `dir`,
/// which goes with the servers.
impl Drop for Servers {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        let mut logs: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "stderr" || x == "log"))
            .collect();
        logs.sort();
        for path in logs {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!(
                "---- {} (its last {} bytes) ----\n{}",
                path.display(),
                NODE_LOG_TAIL,
                tail(&log, NODE_LOG_TAIL)
            );
        }
    }
}

/// Bytes of each log a failed test prints.
const NODE_LOG_TAIL: usize = 24 * 1024;

/// The client's ledger: every id acknowledged, per org, with when it was, and how many batches
/// were.
#[derive(Default)]
pub(crate) struct Acked {
    ids: Mutex<BTreeMap<String, BTreeMap<String, Instant>>>,
    batches: AtomicUsize,
}

impl Acked {
    /// `records` of `org` were acknowledged now.
    pub(crate) fn record(&self, org: &str, records: &[Value]) {
        let now = Instant::now();
        let mut acked = self.ids.lock().unwrap();
        let ids = acked.entry(org.to_owned()).or_default();
        for r in records {
            ids.entry(r["id"].as_str().unwrap().to_owned())
                .or_insert(now);
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends batch `round` (5 records) of every org of `tokens` through `c` until acknowledged.
    pub(crate) fn send(&self, c: &Collector, tokens: &BTreeMap<&str, String>, round: usize) {
        for (org, token) in tokens {
            let records = batch(org, round * 5, 5);
            let (body, _) = ingest_until_acked(c, token, &records);
            assert_eq!(body["accepted"], 5, "{body}");
            self.record(org, &records);
        }
    }

    pub(crate) fn ids(&self, org: &str) -> BTreeSet<String> {
        self.ids
            .lock()
            .unwrap()
            .get(org)
            .map(|ids| ids.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// How many of `org`'s ids were acknowledged at or before `at`.
    pub(crate) fn acked_by(&self, org: &str, at: Instant) -> usize {
        self.ids
            .lock()
            .unwrap()
            .get(org)
            .map_or(0, |ids| ids.values().filter(|&&t| t <= at).count())
    }

    /// How long before `at` the oldest of `org`'s records acknowledged by then was acknowledged,
    /// if an answer counting `total` of them cannot have counted it (records become searchable
    /// in the order they were acknowledged): how far behind that answer was. `None` if it
    /// counted them all.
    pub(crate) fn behind(&self, org: &str, total: u64, at: Instant) -> Option<Duration> {
        let acked = self.ids.lock().unwrap();
        let mut times: Vec<Instant> = acked
            .get(org)?
            .values()
            .copied()
            .filter(|&t| t <= at)
            .collect();
        times.sort_unstable();
        times.get(total as usize).map(|&t| at - t)
    }

    pub(crate) fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }
}

/// Every acknowledged id of `org` is searchable on `c` exactly once.
pub(crate) fn assert_each_once(c: &Collector, org: &str, admin: &str, acked: &BTreeSet<String>) {
    c.wait_for_total_within(
        org,
        QUERY,
        admin,
        acked.len() as u64,
        Duration::from_secs(30),
    );
    let found = c.search_all(org, QUERY, admin);
    let ids: Vec<String> = found
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "{org}: an id found twice");
    assert_eq!(&unique, acked, "{org}");
}

/// `org`'s whole log as `c` exports it, in seq order (proof lines left out).
pub(crate) fn exported(c: &Collector, org: &str, admin: &str) -> Vec<AuditRecord> {
    let response = c.get_served(
        &format!("/api/v1/orgs/{org}/audit-log/export?format=ndjson"),
        admin,
    );
    assert_eq!(response.status().as_u16(), 200, "export of {org}");
    let text = response.text().unwrap();
    let mut records: Vec<AuditRecord> = text
        .lines()
        .filter(|l| !l.starts_with("{\"codestax_proof\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    records.sort_by_key(|r| r.seq);
    records
}

/// `org`'s whole log exported from `c` verifies as one chain from seq 1, without gaps, holding at
/// least `at_least` records, and `verify` says ok; returns the export.
pub(crate) fn assert_export_verifies(
    c: &Collector,
    org: &str,
    admin: &str,
    at_least: u64,
) -> Vec<AuditRecord> {
    let records = exported(c, org, admin);
    let summary = verify_chain(&records, None).unwrap_or_else(|e| panic!("{org}: {e:?}"));
    assert_eq!(summary.first_seq, Some(1), "{org}: {summary:?}");
    assert!(
        summary.records >= at_least,
        "{org}: {} records exported, expected at least {at_least}",
        summary.records
    );
    let verify = c.get_json(&format!("/api/v1/orgs/{org}/audit-log/verify"), admin);
    assert_eq!(verify["ok"], true, "{verify}");
    records
}

/// The test's own connection to the metastore, to read leases, nodes and snapshot rows; opened
/// again after a PostgreSQL restart.
pub(crate) struct Metastore {
    rt: tokio::runtime::Runtime,
    url: String,
    client: Mutex<tokio_postgres::Client>,
}

impl Metastore {
    pub(crate) fn connect(pg: &Postgres) -> Metastore {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let url = pg.url();
        let client = Mutex::new(Metastore::open(&rt, &url));
        Metastore { rt, url, client }
    }

    fn open(rt: &tokio::runtime::Runtime, url: &str) -> tokio_postgres::Client {
        rt.block_on(async {
            let mut config: tokio_postgres::Config = url.parse().unwrap();
            let (client, connection) = config
                .password(PASSWORD)
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            tokio::spawn(connection);
            client
        })
    }

    pub(crate) fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        let mut client = self.client.lock().unwrap();
        if client.is_closed() {
            *client = Metastore::open(&self.rt, &self.url);
        }
        self.rt
            .block_on(client.query(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// shard -> (owner, epoch) of every lease.
    pub(crate) fn leases(&self) -> BTreeMap<i32, (Option<String>, i64)> {
        self.rows("SELECT shard, owner, epoch FROM shard_leases", &[])
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect()
    }

    /// shard -> owner of every unexpired lease.
    pub(crate) fn owners(&self) -> BTreeMap<i32, String> {
        self.rows(
            "SELECT shard, owner FROM shard_leases WHERE owner IS NOT NULL AND expires_at > now()",
            &[],
        )
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    /// How many unexpired leases each node holds (nodes holding none left out).
    pub(crate) fn held_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for owner in self.owners().into_values() {
            *counts.entry(owner).or_default() += 1;
        }
        counts
    }

    /// Whether `node` left cleanly (its heartbeat set to -infinity).
    pub(crate) fn has_left(&self, node: &str) -> bool {
        self.rows(
            "SELECT count(*) FROM nodes WHERE node_id = $1 AND heartbeat_at = '-infinity'",
            &[&node],
        )[0]
        .get::<_, i64>(0)
            == 1
    }

    /// The newest snapshot row's id (0 without any).
    pub(crate) fn last_snapshot_id(&self) -> i64 {
        self.rows("SELECT coalesce(max(id), 0) FROM snapshots", &[])[0].get(0)
    }

    /// The epoch of `shard`'s latest snapshot row.
    pub(crate) fn latest_snapshot_epoch(&self, shard: i32) -> Option<i64> {
        self.rows(
            "SELECT epoch FROM snapshots WHERE shard = $1 ORDER BY id DESC LIMIT 1",
            &[&shard],
        )
        .first()
        .map(|r| r.get(0))
    }

    /// The seq of `org`'s chain head in the newest snapshot row that holds the org: the
    /// snapshot a takeover restores holds the org's records through it.
    pub(crate) fn snapshot_chain_seq(&self, org: &str) -> Option<u64> {
        self.rows(
            "SELECT (chain_heads -> $1::text ->> 'seq')::bigint FROM snapshots
             WHERE chain_heads ? $1::text ORDER BY id DESC LIMIT 1",
            &[&org],
        )
        .first()
        .map(|r| r.get::<_, i64>(0) as u64)
    }

    /// Rows for `shard` under `epoch` with an id above `after`.
    pub(crate) fn snapshots_since(&self, shard: i32, epoch: i64, after: i64) -> i64 {
        self.rows(
            "SELECT count(*) FROM snapshots WHERE shard = $1 AND epoch = $2 AND id > $3",
            &[&shard, &epoch, &after],
        )[0]
        .get(0)
    }
}

/// `c` logged no chain fork.
pub(crate) fn assert_no_fork(c: &Collector) {
    let log = c.stderr();
    assert!(
        !log.contains("does not continue its org's chain"),
        "a fork:\n{log}"
    );
}
