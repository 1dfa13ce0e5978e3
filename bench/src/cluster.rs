//! Issue 18's benchmark: cluster mode on loopback — 3 nats-servers (JetStream R3), a throwaway
//! PostgreSQL (the metastore), moto's S3 (snapshots) and release collectors, all started through
//! the harness — against the single-node collector in the same run.
//!
//! 1. Ingest: the same corpus, clients and batches through the single node, through the cluster
//!    with `sync_interval: always` (clients spread over the nodes) and through the same cluster
//!    with nats-server's default sync (the bench's option only: never offered to operators), to
//!    state what `always` costs. Records/s, ack p50/p99, time until all are searchable, CPU.
//! 2. Failover: one org's shard loaded with N records and snapshotted, a few more records
//!    acknowledged after the snapshot, the owner killed with SIGKILL; the time until the
//!    survivor answers the org's reads with 200 and every record, split from the survivor's log
//!    into lease expiry (kill → it owns the shard), restore (download + re-index of the
//!    snapshot) and replay (the stream after the snapshot), and the restore rate.

use crate::cleanup::{self, TempDir};
use crate::collector::{Collector, Launch, bench_child, http_client, process_cpu_seconds};
use crate::data::Corpus;
use crate::error::{BenchError, Result};
use crate::load::{LoadOptions, LoadReport, send_to};
use crate::runs::{progress, temp_dir};
use crate::stats::{Table, fmt_ms, load_average, ratio, thousands};
use chrono::{DateTime, Utc};
use codestax_harness::{
    CLUSTER_BUCKET, ClusterSettings, JetStreamSync, MotoS3, NatsCluster, Postgres, PostgresOptions,
    cluster_env, cluster_toml,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Sizes and settings of the cluster bench.
#[derive(Debug, Clone)]
pub struct ClusterSize {
    /// Records of each ingest run (0: no ingest runs).
    pub records: u64,
    pub clients: usize,
    pub batch: usize,
    /// Orgs of the ingest runs.
    pub orgs: usize,
    /// Collectors of the ingest runs' cluster (the failover runs use 2).
    pub nodes: usize,
    /// Rounds of the three ingest runs (single node, `always`, default sync), in that order.
    pub rounds: usize,
    /// `[cluster] shards`.
    pub shards: u32,
    /// `[cluster] lease_ttl`.
    pub lease_ttl: String,
    /// `[cluster] snapshot_interval`.
    pub snapshot_interval: String,
    /// Records of the one org of each failover run (none, or 0: no failover runs).
    pub failover_records: Vec<u64>,
    /// Records acknowledged after the snapshot and before the kill: the survivor replays them.
    pub replay_records: u64,
}

/// The metastore's password (the bench's own throwaway server).
const PASSWORD: &str = "codestax-bench-cluster";

/// A node's command and its CLI's: the bench's, the metastore password, the owners' info lines
/// (the failover's phases are read from them).
fn node_child(cmd: &mut Command) {
    bench_child(cmd);
    cluster_env(cmd, PASSWORD);
    cmd.env("RUST_LOG", "warn,codestax_collector::cluster=info");
}

/// The servers a cluster runs on; dropped (killed) before their directories.
struct Servers {
    nats: NatsCluster,
    pg: Postgres,
    s3: MotoS3,
    dir: TempDir,
    _pg_dir: TempDir,
}

impl Servers {
    fn start(sync: JetStreamSync) -> Result<Servers> {
        let missing = |what: &str, why: String| {
            BenchError::Usage(format!(
                "{what}: {why} (CODESTAX_VENV=/tmp/lv gives nats-server and moto_server)"
            ))
        };
        let nats_bin = NatsCluster::find_binary().map_err(|w| missing("nats-server", w))?;
        let moto_bin = MotoS3::find_binary().map_err(|w| missing("moto_server", w))?;
        let pg_bin = Postgres::find_bin_dir().map_err(|w| missing("PostgreSQL", w))?;
        let dir = temp_dir("codestax-bench-cluster-")?;
        let pg_dir = temp_dir("codestax-bench-metastore-")?;
        let nats_dir = dir.path().join("nats");
        std::fs::create_dir_all(&nats_dir)
            .map_err(|e| BenchError::io("create", nats_dir.clone(), e))?;
        let nats = NatsCluster::launch_with(&nats_bin, &nats_dir, 3, sync)?;
        let pg = Postgres::launch(
            &pg_bin,
            pg_dir.path(),
            &PostgresOptions::metastore(PASSWORD),
        )?;
        let s3 = MotoS3::launch(&moto_bin, dir.path())?;
        // Killed on drop; killed by the bench's signal handler too.
        let pids = (0..nats.len())
            .map(|i| nats.pid(i))
            .chain([pg.pid(), s3.pid()]);
        pids.flatten().for_each(cleanup::register_child);
        s3.create_bucket(CLUSTER_BUCKET)?;
        Ok(Servers {
            nats,
            pg,
            s3,
            dir,
            _pg_dir: pg_dir,
        })
    }

    /// A connection to the metastore over its Unix socket (trusted).
    fn metastore(&self) -> Result<postgres::Client> {
        postgres::Client::configure()
            .host_path(self.pg.socket_dir())
            .port(self.pg.port().unwrap_or(5432))
            .user("codestax")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .map_err(BenchError::sql("connect to the metastore"))
    }

    /// Starts node `name` (data and stderr under the servers' directory); keys are made for
    /// `orgs` in the metastore unless `keys` come from a node already started.
    fn node(
        &self,
        bin: &Path,
        name: &str,
        settings: &ClusterSettings,
        orgs: &[String],
        keys: Option<&Collector>,
    ) -> Result<Collector> {
        let endpoint = self.s3.endpoint();
        let toml = |port: u16| cluster_toml(name, port, &self.nats, &self.pg, &endpoint, settings);
        Collector::start_with(
            bin,
            &self.dir.path().join(name),
            Launch {
                orgs,
                settings: &toml,
                before_spawn: node_child,
                keys: keys.map(|c| c.all_keys().clone()),
                stderr: Some(self.stderr_path(name)),
            },
        )
    }

    fn stderr_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.stderr"))
    }

    /// `n` nodes `c1`…, started one after the other; returns once the shards are spread
    /// evenly over them and every node answers every org's reads.
    fn nodes(
        &self,
        bin: &Path,
        n: usize,
        settings: &ClusterSettings,
        orgs: &[String],
    ) -> Result<Vec<Collector>> {
        let mut nodes: Vec<Collector> = Vec::new();
        for i in 0..n {
            let node = self.node(bin, &format!("c{}", i + 1), settings, orgs, nodes.first())?;
            nodes.push(node);
        }
        self.wait_spread(n, settings.shards)?;
        let refs: Vec<&Collector> = nodes.iter().collect();
        wait_served(&refs, orgs)?;
        Ok(nodes)
    }

    /// Waits until every shard is owned and the `n` nodes hold their quotas (off by one at most).
    fn wait_spread(&self, n: usize, shards: u32) -> Result<()> {
        let mut db = self.metastore()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let counts: Vec<i64> = db
                .query(
                    "SELECT count(*) FROM shard_leases WHERE owner IS NOT NULL \
                     AND expires_at > now() GROUP BY owner",
                    &[],
                )
                .map_err(BenchError::sql("read the leases"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let (min, max) = (counts.iter().min(), counts.iter().max());
            if counts.len() == n
                && counts.iter().sum::<i64>() == i64::from(shards)
                && max.zip(min).is_some_and(|(a, b)| a - b <= 1)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Collector(format!(
                    "the {shards} shards were not spread over {n} nodes within 120 s: {counts:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// CPU seconds the running nats-servers used so far.
    fn nats_cpu(&self) -> f64 {
        (0..self.nats.len())
            .filter_map(|i| self.nats.pid(i))
            .filter_map(|pid| process_cpu_seconds(pid).ok())
            .sum()
    }
}

/// Waits until every node answers every org's facets with 200 (keys known, shard served).
fn wait_served(nodes: &[&Collector], orgs: &[String]) -> Result<()> {
    let client = http_client()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for c in nodes {
        for org in orgs {
            loop {
                let (status, _) = facets_total(&client, c, org)?;
                if status == 200 {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Collector(format!(
                        "{org}'s reads not served within 120 s (last status {status})"
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// `GET /api/v1/orgs/{org}/audit-log/facets` on `c`: its status and `total` (0 unless 200).
fn facets_total(
    client: &reqwest::blocking::Client,
    c: &Collector,
    org: &str,
) -> Result<(u16, u64)> {
    let path = format!("/api/v1/orgs/{org}/audit-log/facets");
    let r = client
        .get(c.url(&path))
        .bearer_auth(&c.keys(org).reader)
        .send()
        .map_err(|e| BenchError::http(format!("GET {path}"), e))?;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().unwrap_or_default();
    Ok((status, body["total"].as_u64().unwrap_or(0)))
}

/// Waits until `c` counts at least each org's records of `corpus`; returns how long it took.
fn wait_searchable(c: &Collector, corpus: &Corpus, timeout: Duration) -> Result<Duration> {
    let client = http_client()?;
    let started = Instant::now();
    for org in &corpus.orgs {
        loop {
            let (status, total) = facets_total(&client, c, &org.id)?;
            if status == 200 && total >= org.records {
                break;
            }
            if started.elapsed() > timeout {
                return Err(BenchError::Collector(format!(
                    "{}: {total} of {} records searchable after {timeout:?}",
                    org.id, org.records
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(started.elapsed())
}

/// One ingest run's figures.
struct IngestRow {
    setup: String,
    report: LoadReport,
    searchable_after: Duration,
    collector_cpu: f64,
    nats_cpu: Option<f64>,
    load: String,
}

/// Sends `corpus` over `nodes` and waits until it is all searchable on the first.
fn measure_ingest(
    setup: String,
    nodes: &[Collector],
    servers: Option<&Servers>,
    corpus: &Corpus,
    clients: usize,
) -> Result<IngestRow> {
    let refs: Vec<&Collector> = nodes.iter().collect();
    let collector_cpu = || -> Result<f64> {
        nodes
            .iter()
            .map(Collector::cpu_seconds)
            .sum::<Result<f64>>()
    };
    let load0 = load_average();
    let (cpu0, nats0) = (collector_cpu()?, servers.map(Servers::nats_cpu));
    let report = send_to(&refs, corpus, LoadOptions::ndjson(clients, true))?;
    let searchable_after = wait_searchable(&nodes[0], corpus, Duration::from_secs(1800))?;
    Ok(IngestRow {
        setup,
        searchable_after,
        collector_cpu: collector_cpu()? - cpu0,
        nats_cpu: servers
            .map(Servers::nats_cpu)
            .zip(nats0)
            .map(|(a, b)| a - b),
        load: format!("{load0} → {}", load_average()),
        report,
    })
}

/// Runs the cluster bench: the ingest runs, then the failover runs.
pub fn run(bin: &Path, size: ClusterSize) -> Result<Vec<Table>> {
    if !(1..=3).contains(&size.nodes) {
        return Err(BenchError::Usage(format!(
            "--nodes {}: 1 to 3 collectors",
            size.nodes
        )));
    }
    let settings = ClusterSettings {
        shards: size.shards,
        lease_ttl: size.lease_ttl.clone(),
        snapshot_interval: size.snapshot_interval.clone(),
    };
    let mut tables = Vec::new();
    if size.records > 0 {
        tables.push(ingest(bin, &size, &settings)?);
    }
    if size.failover_records.iter().any(|&n| n > 0) {
        let mut t = Table::new(
            format!(
                "Failover — one org's shard, owner killed with SIGKILL, 2 collectors, {} shards, lease_ttl {}, snapshot_interval {}; {} records acknowledged after the snapshot",
                size.shards,
                size.lease_ttl,
                size.snapshot_interval,
                thousands(size.replay_records as f64)
            ),
            &[
                "records in the shard",
                "kill → lease taken",
                "restore (download + re-index)",
                "replay (stream after the snapshot)",
                "caught up → first 200",
                "kill → 200 with every record",
                "records restored / replayed",
                "restore rate",
                "download alone",
                "load",
            ],
        );
        for &n in size.failover_records.iter().filter(|&&n| n > 0) {
            let f = failover(bin, &size, &settings, n)?;
            t.row(f.cells());
        }
        tables.push(t);
    }
    Ok(tables)
}

fn ingest(bin: &Path, size: &ClusterSize, settings: &ClusterSettings) -> Result<Table> {
    let corpus = Corpus::last_ten_minutes(size.records, size.orgs, size.batch);
    let orgs = corpus.org_ids();
    let mut rows = Vec::new();
    for round in 1..=size.rounds.max(1) {
        progress(format!("cluster ingest, round {round}: the single node"));
        let dir = temp_dir("codestax-bench-single-")?;
        let single = Collector::start(bin, dir.path(), &orgs, "")?;
        rows.push(measure_ingest(
            "single node (WAL fsync)".into(),
            std::slice::from_ref(&single),
            None,
            &corpus,
            size.clients,
        )?);
        single.stop()?;
        drop(dir);
        for (sync, label) in [
            (JetStreamSync::Always, "sync_interval: always"),
            (
                JetStreamSync::ServerDefault,
                "nats-server's default sync (2 min)",
            ),
        ] {
            progress(format!(
                "cluster ingest, round {round}: {} collectors, JetStream {label}",
                size.nodes
            ));
            let servers = Servers::start(sync)?;
            let nodes = servers.nodes(bin, size.nodes, settings, &orgs)?;
            rows.push(measure_ingest(
                format!("cluster, {} collectors, {label}", size.nodes),
                &nodes,
                Some(&servers),
                &corpus,
                size.clients,
            )?);
            for node in nodes {
                node.stop()?;
            }
        }
    }
    let single_rate = rows[0].report.rate();
    let mut t = Table::new(
        format!(
            "Ingest with durable acks, cluster against the single node — {} records of {} orgs, {} clients (spread over the nodes), batches of {}, NDJSON; JetStream R3 on 3 nats-servers, {} shards",
            thousands(corpus.total() as f64),
            size.orgs,
            size.clients,
            size.batch,
            size.shards
        ),
        &[
            "setup",
            "records/s (acked)",
            "÷ single node",
            "ack p50",
            "ack p99",
            "all searchable after the load",
            "CPU per 1,000 records: collectors / nats-servers",
            "load",
        ],
    );
    for r in &rows {
        let per_1000 = |cpu: f64| format!("{:.0} ms", cpu * 1e3 / (r.report.records as f64 / 1e3));
        t.row(vec![
            r.setup.clone(),
            thousands(r.report.rate()),
            ratio(r.report.rate(), single_rate),
            fmt_ms(r.report.ack.p50_ms()),
            fmt_ms(r.report.ack.p99_ms()),
            format!("{:.1} s", r.searchable_after.as_secs_f64()),
            format!(
                "{} / {}",
                per_1000(r.collector_cpu),
                r.nats_cpu.map_or("–".into(), per_1000)
            ),
            r.load.clone(),
        ]);
    }
    Ok(t)
}

/// One failover's figures.
struct Failover {
    records: u64,
    /// Kill → the survivor's "owning the shard".
    lease: Duration,
    /// Its restore's own measure (download + re-index + index commit).
    restore: Duration,
    /// Restored → "caught up with the stream".
    replay: Duration,
    /// Caught up → the bench's first 200 holding every record.
    served_after_catch_up: Duration,
    /// Kill → that 200.
    total: Duration,
    restored: u64,
    replayed: u64,
    chunk_bytes: u64,
    /// The bench GETting the snapshot's chunks itself, one at a time, as the restore does.
    download: Duration,
    load: String,
}

impl Failover {
    fn cells(&self) -> Vec<String> {
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let mb = self.chunk_bytes as f64 / 1e6;
        let r = self.restore.as_secs_f64();
        vec![
            thousands(self.records as f64),
            secs(self.lease),
            secs(self.restore),
            secs(self.replay),
            secs(self.served_after_catch_up),
            format!("**{}**", secs(self.total)),
            format!(
                "{} / {}",
                thousands(self.restored as f64),
                thousands(self.replayed as f64)
            ),
            format!(
                "{} records/s, {:.1} MB/s ({:.1} MB gzip)",
                thousands(self.restored as f64 / r),
                mb / r,
                mb
            ),
            format!(
                "{:.2} s, {:.0} MB/s",
                self.download.as_secs_f64(),
                mb / self.download.as_secs_f64()
            ),
            self.load.clone(),
        ]
    }
}

/// The latest snapshot row holding `org`: (shard, the org's head seq, manifest location).
fn latest_snapshot_of(db: &mut postgres::Client, org: &str) -> Result<Option<(i32, i64, String)>> {
    let rows = db
        .query(
            "SELECT shard, (chain_heads -> $1 ->> 'seq')::bigint, location FROM snapshots \
             WHERE chain_heads ? $1 ORDER BY id DESC LIMIT 1",
            &[&org],
        )
        .map_err(BenchError::sql("read the snapshots"))?;
    Ok(rows.first().map(|r| (r.get(0), r.get(1), r.get(2))))
}

fn failover(
    bin: &Path,
    size: &ClusterSize,
    settings: &ClusterSettings,
    records: u64,
) -> Result<Failover> {
    let corpus = Corpus::last_ten_minutes(records + size.replay_records, 1, size.batch);
    let org = corpus.orgs[0].id.clone();
    let orgs = corpus.org_ids();
    // The bulk, snapshotted; then the tail, acknowledged after the snapshot.
    let split = (records as usize)
        .div_ceil(size.batch)
        .min(corpus.batches.len());
    let mut bulk = corpus.clone();
    bulk.batches.truncate(split);
    let mut tail = corpus.clone();
    tail.batches.drain(..split);

    progress(format!(
        "failover of {records} records: servers and 2 collectors"
    ));
    let servers = Servers::start(JetStreamSync::Always)?;
    let mut nodes = servers.nodes(bin, 2, settings, &orgs)?;
    let opts = LoadOptions::ndjson(size.clients, false);
    let refs: Vec<&Collector> = nodes.iter().collect();
    progress(format!("failover: loading {} records", bulk.total()));
    send_to(&refs, &bulk, opts)?;
    progress("failover: waiting for a snapshot holding them");
    let mut db = servers.metastore()?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    let shard = loop {
        if let Some((shard, seq, _)) = latest_snapshot_of(&mut db, &org)?
            && seq as u64 >= bulk.total()
        {
            break shard;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Collector(
                "no snapshot held the bulk within an hour".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let owner: String = db
        .query_one(
            "SELECT owner FROM shard_leases WHERE shard = $1 AND expires_at > now()",
            &[&shard],
        )
        .map_err(BenchError::sql("read the shard's owner"))?
        .get(0);
    let owner_i: usize = owner
        .strip_prefix('c')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=2).contains(n))
        .ok_or_else(|| BenchError::Collector(format!("unknown owner {owner:?}")))?
        - 1;
    let survivor_i = 1 - owner_i;
    if !tail.batches.is_empty() {
        progress(format!(
            "failover: {} records after the snapshot",
            tail.total()
        ));
        send_to(&refs, &tail, opts)?;
    }
    // Everything acknowledged is on the owner: the count the survivor must answer with.
    let client = http_client()?;
    wait_searchable(&nodes[owner_i], &corpus, Duration::from_secs(1800))?;
    let (_, expected) = facets_total(&client, &nodes[owner_i], &org)?;
    drop(refs);

    let load0 = load_average();
    let killed_at = Utc::now();
    let kill = Instant::now();
    progress(format!("failover: kill -9 {owner}, owner of shard {shard}"));
    nodes[owner_i].kill9();
    let (_, snap_seq, location) = latest_snapshot_of(&mut db, &org)?
        .ok_or_else(|| BenchError::Collector("the snapshot row is gone".into()))?;
    let survivor = &nodes[survivor_i];
    let deadline = kill + Duration::from_secs(3600);
    let total = loop {
        let (status, total) = facets_total(&client, survivor, &org)?;
        if status == 200 {
            if total != expected {
                return Err(BenchError::Collector(format!(
                    "the survivor's first 200 counted {total} of {org}'s records, not {expected}"
                )));
            }
            break kill.elapsed();
        }
        if Instant::now() > deadline {
            return Err(BenchError::Collector(format!(
                "shard {shard} not served within an hour of the kill (last status {status})"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let load = format!("{load0} → {}", load_average());
    let log = std::fs::read_to_string(servers.stderr_path(&format!("c{}", survivor_i + 1)))
        .map_err(|e| BenchError::io("read the survivor's log", servers.dir.path(), e))?;
    let timeline = Timeline::read(&log, shard, killed_at)?;
    let (chunk_bytes, download) = download_chunks(&servers.s3.endpoint(), &location)?;
    for node in nodes {
        if node.pid() != 0 {
            node.stop()?;
        }
    }
    let since_kill = |t: DateTime<Utc>| (t - killed_at).to_std().unwrap_or_default();
    Ok(Failover {
        records,
        lease: since_kill(timeline.owning),
        restore: timeline.restore_seconds,
        replay: (timeline.caught_up - timeline.restored)
            .to_std()
            .unwrap_or_default(),
        served_after_catch_up: total.saturating_sub(since_kill(timeline.caught_up)),
        total,
        restored: timeline.restored_records,
        replayed: expected.saturating_sub(snap_seq as u64),
        chunk_bytes,
        download,
        load,
    })
}

/// The survivor's log lines about the shard after the kill.
struct Timeline {
    owning: DateTime<Utc>,
    restored: DateTime<Utc>,
    restore_seconds: Duration,
    restored_records: u64,
    caught_up: DateTime<Utc>,
}

impl Timeline {
    /// From the collector's text log (`<RFC 3339 time> INFO target: message key=value ...`):
    /// the first "owning the shard", "shard snapshot restored" and "shard caught up" lines of
    /// `shard` after `after`.
    fn read(log: &str, shard: i32, after: DateTime<Utc>) -> Result<Timeline> {
        let shard_field = format!("shard={shard}");
        let lines: Vec<(DateTime<Utc>, &str)> = log
            .lines()
            .filter_map(|l| {
                let (time, rest) = l.split_once(char::is_whitespace)?;
                let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
                (time >= after && rest.split_whitespace().any(|w| w == shard_field))
                    .then_some((time, rest))
            })
            .collect();
        let find = |message: &str| {
            lines
                .iter()
                .find(|(_, l)| l.contains(message))
                .copied()
                .ok_or_else(|| {
                    BenchError::Collector(format!(
                        "no {message:?} line for shard {shard} in the survivor's log after the kill"
                    ))
                })
        };
        let field = |line: &str, key: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        };
        let (owning, _) = find("owning the shard")?;
        let (restored, line) = find("shard snapshot restored")?;
        let (caught_up, _) = find("shard caught up with the stream")?;
        Ok(Timeline {
            owning,
            restored,
            restore_seconds: Duration::from_secs_f64(field(line, "seconds").unwrap_or(0.0)),
            restored_records: field(line, "restored").unwrap_or(0.0) as u64,
            caught_up,
        })
    }
}

/// GETs the manifest at `location` and then each of its chunks, one at a time as the restore
/// does: their bytes and the time the chunks took. moto checks no signature but refuses
/// anonymous reads of objects, so the request carries an `Authorization` header it accepts.
const MOTO_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=testing/20261205/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

fn download_chunks(endpoint: &str, location: &str) -> Result<(u64, Duration)> {
    let client = http_client()?;
    let get = |key: &str| -> Result<bytes::Bytes> {
        let url = format!("{endpoint}/{CLUSTER_BUCKET}/{key}");
        let r = client
            .get(&url)
            .header("authorization", MOTO_AUTHORIZATION)
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .map_err(|e| BenchError::http(format!("GET {url}"), e))?;
        r.bytes()
            .map_err(|e| BenchError::http(format!("GET {url}"), e))
    };
    let manifest: serde_json::Value = serde_json::from_slice(&get(location)?)
        .map_err(|e| BenchError::http(format!("manifest {location}"), e))?;
    let keys: Vec<String> = manifest["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["key"].as_str().map(str::to_string))
        .collect();
    let started = Instant::now();
    let mut bytes = 0;
    for key in &keys {
        bytes += get(key)?.len() as u64;
    }
    Ok((bytes, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_is_read_from_the_survivors_log() {
        let log = "\
2026-12-05T05:20:00.000000Z  INFO codestax_collector::cluster::owner: owning the shard shard=1 epoch=1
2026-12-05T05:21:10.500000Z  INFO codestax_collector::cluster::owner: owning the shard shard=10 epoch=3
2026-12-05T05:21:11.000000Z  INFO codestax_collector::cluster::owner: owning the shard shard=1 epoch=3
2026-12-05T05:21:15.250000Z  INFO codestax_collector::cluster::owner: shard snapshot restored shard=1 epoch=3 from_epoch=2 stream_seq=990 orgs=1 restored=990 seconds=4.2
2026-12-05T05:21:16.000000Z  INFO codestax_collector::cluster::owner: shard caught up with the stream; serving its reads shard=1 epoch=3
";
        let after = DateTime::parse_from_rfc3339("2026-12-05T05:21:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = Timeline::read(log, 1, after).unwrap();
        assert_eq!((t.owning - after).num_milliseconds(), 11_000);
        assert_eq!((t.restored - after).num_milliseconds(), 15_250);
        assert_eq!((t.caught_up - after).num_milliseconds(), 16_000);
        assert_eq!(t.restore_seconds, Duration::from_millis(4200));
        assert_eq!(t.restored_records, 990);
        let missing = Timeline::read(log, 2, after).err().unwrap().to_string();
        assert!(missing.contains("shard 2"), "{missing}");
    }
}
