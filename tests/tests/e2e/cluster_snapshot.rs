//! Cluster mode, snapshots and takeover: two collectors over a real 3-node JetStream cluster,
//! a real PostgreSQL and moto's S3 snapshot their shards every 2 s. Under steady ingest, the
//! owner of some orgs' shards is killed with SIGKILL; the other node takes its shards after the
//! 1 s lease, restores their snapshots from the object store, reads the stream on from each
//! snapshot's position, and then holds every acknowledged id of every org exactly once, each
//! org's export verifying as one chain from seq 1 without a gap. The same cluster, under the
//! same steady ingest, also meets a zombie owner (SIGSTOP past its lease, then SIGCONT: fenced,
//! it publishes no snapshot for what it lost) and a nats-server killed and started again (acks
//! from the quorum go on). Missing servers: SKIPPED outside CI, a failure in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use codestax_harness::{Collector, CollectorOptions, MotoS3, NatsCluster, Postgres};

use crate::cluster_ingest::{
    PASSWORD, batch, cluster_toml_with, ingest_until_acked, pg_password, stream_leader,
};
use crate::cluster_owner::assert_export_verifies;

/// Enough orgs that, over 4 shards and 2 nodes, each node owns some.
const ORGS: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];
const QUERY: &str = "action=auth.login";
const BUCKET: &str = "codestax";

fn node_env(cmd: &mut Command) {
    pg_password(cmd);
    // moto takes any credentials.
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("RUST_LOG", "warn,codestax_collector::cluster=info");
}

fn start(
    dir: &std::path::Path,
    name: &str,
    nats: &NatsCluster,
    pg: &Postgres,
    s3: &MotoS3,
) -> Collector {
    let mut options = CollectorOptions::for_tests(&dir.join(name), "");
    options.before_spawn = Some(node_env);
    options.stderr = Some(dir.join(format!("{name}.stderr")));
    let mut c = Collector::configure(options).unwrap();
    let settings = cluster_toml_with(name, c.http_port, nats, pg, &s3.endpoint(), "2s");
    c.restart_with(&settings)
        .unwrap_or_else(|e| panic!("{e}\n{}", c.stderr()));
    c
}

/// The client's ledger: every id acknowledged, per org, and how many batches were.
#[derive(Default)]
struct Acked {
    ids: Mutex<BTreeMap<String, BTreeSet<String>>>,
    batches: AtomicUsize,
}

impl Acked {
    /// Sends batch `round` (5 records) of every org through `c` until acknowledged.
    fn send(&self, c: &Collector, tokens: &BTreeMap<&str, String>, round: usize) {
        for org in ORGS {
            let records = batch(org, round * 5, 5);
            let (body, _) = ingest_until_acked(c, &tokens[org], &records);
            assert_eq!(body["accepted"], 5, "{body}");
            let mut acked = self.ids.lock().unwrap();
            let ids = acked.entry(org.to_owned()).or_default();
            ids.extend(records.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn ids(&self, org: &str) -> BTreeSet<String> {
        self.ids
            .lock()
            .unwrap()
            .get(org)
            .cloned()
            .unwrap_or_default()
    }

    fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }
}

/// Every acknowledged id of `org` is searchable on `c` exactly once.
fn assert_each_once(c: &Collector, org: &str, admin: &str, acked: &BTreeSet<String>) {
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

/// Two collectors `c1`, `c2` over 3 nats-servers, PostgreSQL and moto, each with its own
/// INGEST and ORG_ADMIN key per org. Fields drop in order: the collectors before the servers.
struct Cluster {
    nodes: [Collector; 2],
    ingest: [BTreeMap<&'static str, String>; 2],
    admin: [BTreeMap<&'static str, String>; 2],
    _s3: MotoS3,
    pg: Postgres,
    nats: NatsCluster,
    _dir: tempfile::TempDir,
    _server_dirs: [tempfile::TempDir; 2],
    started: Instant,
}

impl Cluster {
    /// `None` when a server is missing outside CI (SKIPPED).
    fn start(what: &str) -> Option<Cluster> {
        let dir = tempfile::tempdir().unwrap();
        let pg_dir = tempfile::tempdir().unwrap();
        let s3_dir = tempfile::tempdir().unwrap();
        let nats = NatsCluster::start_or_skip(what, dir.path())?;
        let pg = Postgres::start_or_skip(what, pg_dir.path(), PASSWORD)?;
        let s3 = MotoS3::start_or_skip(what, s3_dir.path())?;
        s3.create_bucket(BUCKET).unwrap();
        let started = Instant::now();
        let nodes = [
            start(dir.path(), "c1", &nats, &pg, &s3),
            start(dir.path(), "c2", &nats, &pg, &s3),
        ];
        eprintln!(
            "cluster snapshot: nodes started at {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // Keys are still per node (docs/cluster.md, Status): each node gets its own.
        // In parallel: each waits until its node has taken the key.
        let keys = |c: &Collector, role: &str| -> BTreeMap<&'static str, String> {
            std::thread::scope(|scope| {
                let made: Vec<_> = ORGS
                    .iter()
                    .map(|&o| scope.spawn(move || (o, c.create_key(o, role))))
                    .collect();
                made.into_iter().map(|m| m.join().unwrap()).collect()
            })
        };
        let ingest = [keys(&nodes[0], "INGEST"), keys(&nodes[1], "INGEST")];
        let admin = [keys(&nodes[0], "ORG_ADMIN"), keys(&nodes[1], "ORG_ADMIN")];
        let cluster = Cluster {
            nodes,
            ingest,
            admin,
            _s3: s3,
            pg,
            nats,
            _dir: dir,
            _server_dirs: [pg_dir, s3_dir],
            started,
        };
        cluster.phase("nodes and keys ready");
        Some(cluster)
    }

    fn phase(&self, what: &str) {
        eprintln!(
            "cluster snapshot: {what} at {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Six rounds through both nodes, then the node holding each org's records: its owner
    /// (reads are not routed yet).
    fn warm_up(&self, acked: &Acked) -> BTreeMap<&'static str, usize> {
        for round in 0..6 {
            acked.send(&self.nodes[round % 2], &self.ingest[round % 2], round);
        }
        let owners = ORGS
            .iter()
            .map(|&org| (org, self.holders(org, acked.ids(org).len() as u64)[0]))
            .collect();
        self.phase("first records on their owners");
        owners
    }

    /// The running nodes holding at least `n` of `org`'s records, once one does (within 30 s).
    fn holders(&self, org: &str, n: u64) -> Vec<usize> {
        let mut at = Vec::new();
        let found = codestax_harness::wait_for(Duration::from_secs(30), || {
            at = (0..2)
                .filter(|&i| self.nodes[i].pid().is_some())
                .filter(|&i| self.nodes[i].total(org, QUERY, &self.admin[i][org]) >= n)
                .collect();
            !at.is_empty()
        });
        assert!(found, "{org}: not all {n} records on either node");
        at
    }

    /// A node owning some orgs' shards.
    fn victim(owners: &BTreeMap<&str, usize>) -> usize {
        if owners.values().any(|&i| i == 0) {
            0
        } else {
            1
        }
    }

    /// Every org, on each node holding all of it: each acknowledged id once, the chain from
    /// seq 1; and no fork logged.
    fn assert_all_once(&self, acked: &Acked) {
        for org in ORGS {
            let ids = acked.ids(org);
            for i in self.holders(org, ids.len() as u64) {
                let admin = &self.admin[i][org];
                assert_each_once(&self.nodes[i], org, admin, &ids);
                assert_export_verifies(&self.nodes[i], org, admin, ids.len() as u64);
            }
        }
        for c in &self.nodes {
            let log = c.stderr();
            assert!(
                !log.contains("does not continue its org's chain"),
                "a fork:\n{log}"
            );
        }
        self.phase("all checked");
    }
}

/// Sends rounds from `first` on, alternating over `via` (a node and its INGEST keys), until
/// `stop`. Returns the next round.
fn steady_ingest(
    via: &[(&Collector, &BTreeMap<&str, String>)],
    acked: &Acked,
    first: usize,
    stop: &AtomicBool,
) -> usize {
    let mut round = first;
    while !stop.load(Ordering::Relaxed) {
        let (c, keys) = via[round % via.len()];
        acked.send(c, keys, round);
        round += 1;
    }
    round
}

/// The test's own connection to the metastore, to read leases and snapshot rows.
struct Metastore {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Metastore {
    fn connect(pg: &Postgres) -> Metastore {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(async {
            let mut config: tokio_postgres::Config = pg.url().parse().unwrap();
            let (client, connection) = config
                .password(PASSWORD)
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
        });
        Metastore { rt, client }
    }

    fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        self.rt
            .block_on(self.client.query(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// shard -> (owner, epoch) of every lease.
    fn leases(&self) -> BTreeMap<i32, (Option<String>, i64)> {
        self.rows("SELECT shard, owner, epoch FROM shard_leases", &[])
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect()
    }

    /// The newest snapshot row's id (0 without any).
    fn last_snapshot_id(&self) -> i64 {
        self.rows("SELECT coalesce(max(id), 0) FROM snapshots", &[])[0].get(0)
    }

    /// The epoch of `shard`'s latest snapshot row.
    fn latest_snapshot_epoch(&self, shard: i32) -> Option<i64> {
        self.rows(
            "SELECT epoch FROM snapshots WHERE shard = $1 ORDER BY id DESC LIMIT 1",
            &[&shard],
        )
        .first()
        .map(|r| r.get(0))
    }

    /// Rows for `shard` under `epoch` with an id above `after`.
    fn snapshots_since(&self, shard: i32, epoch: i64, after: i64) -> i64 {
        self.rows(
            "SELECT count(*) FROM snapshots WHERE shard = $1 AND epoch = $2 AND id > $3",
            &[&shard, &epoch, &after],
        )[0]
        .get(0)
    }
}

#[test]
fn a_killed_owners_shards_continue_on_the_survivor_from_their_snapshots() {
    let Some(mut cluster) = Cluster::start("cluster snapshot") else {
        return;
    };
    let acked = Acked::default();
    let owners = cluster.warm_up(&acked);
    let victim = Cluster::victim(&owners);
    let survivor = 1 - victim;
    let moved: Vec<&str> = ORGS
        .iter()
        .copied()
        .filter(|o| owners[o] == victim)
        .collect();
    // Two snapshot intervals: the victim's shards have a snapshot holding these records.
    std::thread::sleep(Duration::from_secs(5));

    // Steady ingest through the survivor; the victim is killed in the middle of it.
    let stop = AtomicBool::new(false);
    let Cluster { nodes, ingest, .. } = &mut cluster;
    let [c1, c2] = nodes;
    let (victim_node, survivor_node) = if victim == 0 { (c1, &*c2) } else { (c2, &*c1) };
    let via = [(survivor_node, &ingest[survivor])];
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| steady_ingest(&via, &acked, 6, &stop));
        std::thread::sleep(Duration::from_secs(2));
        victim_node.kill9();
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        let rounds = sender.join().unwrap();
        assert!(rounds > 8, "the ingest went on: {rounds} rounds");
    });
    cluster.phase("victim killed, ingest done");

    // Every org is on the survivor now: each acknowledged id once, every chain from seq 1.
    cluster.assert_all_once(&acked);
    // The moved shards came from their snapshots, not from the stream's start.
    let log = cluster.nodes[survivor].stderr();
    let restored: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shard snapshot restored"))
        .collect();
    assert!(
        restored.iter().any(|l| l
            .split_whitespace()
            .any(|w| w.starts_with("restored=") && w != "restored=0")),
        "no snapshot was restored on the survivor:\n{log}"
    );
    eprintln!(
        "cluster snapshot: {} orgs moved ({moved:?}), {:.1} s",
        moved.len(),
        cluster.started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_paused_owner_resumed_past_its_lease_publishes_no_snapshot_for_its_lost_shards() {
    let Some(cluster) = Cluster::start("cluster zombie") else {
        return;
    };
    let meta = Metastore::connect(&cluster.pg);
    let acked = Acked::default();
    let owners = cluster.warm_up(&acked);
    let zombie = Cluster::victim(&owners);
    let other = 1 - zombie;
    let zombie_id = ["c1", "c2"][zombie];
    let lost: BTreeMap<i32, i64> = meta
        .leases()
        .into_iter()
        .filter(|(_, (owner, _))| owner.as_deref() == Some(zombie_id))
        .map(|(shard, (_, epoch))| (shard, epoch))
        .collect();
    assert!(!lost.is_empty(), "{zombie_id} owns orgs but no lease");
    // A snapshot interval, so the zombie has snapshots and consumed more since.
    std::thread::sleep(Duration::from_secs(3));

    let stop = AtomicBool::new(false);
    let zombie_node = &cluster.nodes[zombie];
    let via = [(&cluster.nodes[other], &cluster.ingest[other])];
    let (fenced_after, resumed_rounds) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| steady_ingest(&via, &acked, 6, &stop));
        std::thread::sleep(Duration::from_secs(1));
        zombie_node.signal("STOP");
        // The other node takes each lost shard under a new epoch once the lease expired.
        let taken = codestax_harness::wait_for(Duration::from_secs(15), || {
            let now = meta.leases();
            lost.iter().all(|(shard, epoch)| now[shard].1 > *epoch)
        });
        // Any snapshot row from here on is fenced by the new epochs.
        let fenced_after = meta.last_snapshot_id();
        assert!(taken, "the lost shards were not taken: {:?}", meta.leases());
        cluster.phase("zombie's shards taken");
        // Past a snapshot interval, so the zombie's owner tasks are due to snapshot.
        std::thread::sleep(Duration::from_secs(2));
        zombie_node.signal("CONT");
        let resumed_from = acked.batches();
        // Two snapshot intervals: the new owners publish theirs, and the zombie comes back.
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        (fenced_after, acked.batches() - resumed_from)
    });
    cluster.phase("zombie resumed, ingest done");
    assert!(resumed_rounds > 0, "no ingest after the zombie resumed");
    assert!(zombie_node.pid().is_some(), "the zombie still runs");

    for (&shard, &epoch) in &lost {
        assert_eq!(
            meta.snapshots_since(shard, epoch, fenced_after),
            0,
            "shard {shard}: a snapshot under the zombie's epoch {epoch} after the takeover"
        );
    }
    // Each lost shard with records (a shard no org hashes to has no snapshot) has its latest
    // snapshot under a newer epoch.
    let latest = || -> Vec<(i32, i64, Option<i64>)> {
        lost.iter()
            .map(|(&shard, &epoch)| (shard, epoch, meta.latest_snapshot_epoch(shard)))
            .collect()
    };
    let newer = codestax_harness::wait_for(Duration::from_secs(10), || {
        let latest = latest();
        latest.iter().any(|(_, _, l)| l.is_some())
            && latest
                .iter()
                .all(|(_, epoch, l)| l.is_none_or(|l| l > *epoch))
    });
    assert!(
        newer,
        "(shard, zombie's epoch, latest snapshot's epoch): {:?}",
        latest()
    );
    // The zombie's own tasks for those shards stopped (lease gone, or the snapshot refused).
    let log = zombie_node.stderr();
    for (&shard, &epoch) in &lost {
        let (s, e) = (format!("shard={shard}"), format!("epoch={epoch}"));
        let stopped = log.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (l.contains("its owner stops")
                || l.contains("shard owner stopped")
                || l.contains("the snapshot was refused"))
                && words.contains(&s.as_str())
                && words.contains(&e.as_str())
        });
        assert!(stopped, "{s} {e}: the zombie's task did not stop:\n{log}");
    }
    cluster.assert_all_once(&acked);
}

#[test]
fn ingest_goes_on_through_a_killed_and_restarted_nats_server() {
    let Some(mut cluster) = Cluster::start("cluster nats kill") else {
        return;
    };
    let acked = Acked::default();
    cluster.warm_up(&acked);
    let killed = stream_leader(&cluster.nats);

    let stop = AtomicBool::new(false);
    let Cluster {
        nodes,
        ingest,
        nats,
        ..
    } = &mut cluster;
    let via = [(&nodes[0], &ingest[0]), (&nodes[1], &ingest[1])];
    let down = std::thread::scope(|scope| {
        let sender = scope.spawn(|| steady_ingest(&via, &acked, 6, &stop));
        std::thread::sleep(Duration::from_secs(1));
        nats.kill(killed);
        let killed_at = Instant::now();
        // A round's worth of batches acknowledged by the two servers left.
        let from = acked.batches();
        let went_on = codestax_harness::wait_for(Duration::from_secs(20), || {
            acked.batches() >= from + ORGS.len()
        });
        let down = killed_at.elapsed();
        nats.restart(killed).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        went_on.then_some(down)
    });
    let name = cluster.nats.name(killed);
    let down = down.unwrap_or_else(|| panic!("no round acknowledged within 20 s of {name}'s kill"));
    cluster.phase(&format!(
        "{name} killed (a round acknowledged {:.1} s later), restarted, ingest done",
        down.as_secs_f64()
    ));
    cluster.assert_all_once(&acked);
}
