//! Cluster mode, snapshots and takeover: two collectors over a real 3-node JetStream cluster,
//! a real PostgreSQL and moto's S3 snapshot their shards every 2 s. Under steady ingest, the
//! owner of some orgs' shards is killed with SIGKILL; the other node takes its shards after the
//! 1 s lease, restores their snapshots from the object store, reads the stream on from each
//! snapshot's position, and then holds every acknowledged id of every org exactly once, each
//! org's export verifying as one chain from seq 1 without a gap. The same cluster, under the
//! same steady ingest, also meets a zombie owner (SIGSTOP past its lease, then SIGCONT: fenced,
//! it publishes no snapshot for what it lost) and a nats-server killed and started again (acks
//! from the quorum go on). With a 3 s index commit, the owners' acks never pass what a search
//! finds: every owner consumer's ack floor, read from JetStream under steady ingest and across
//! an owner's kill, names a record the cluster answers by id. The owners' consumers take one
//! cumulative ack per batch; a consumer an older version made with per-message acks (its policy
//! cannot change) is used as it is, every message acknowledged. An object store that stops
//! answering holds up neither consumption nor reads: snapshots upload off the owner's loop.
//! Missing servers: SKIPPED outside CI, a failure in CI.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use codestax_harness::{AnswerHold, CLUSTER_STREAM, Collector, wait_for};
use futures_util::StreamExt as _;
use serde_json::Value;

use crate::cluster_common::{
    Acked, Metastore, QUERY, Servers, assert_each_once, assert_export_verifies, assert_no_fork,
};
use crate::cluster_ingest::{batch, ingest_until_acked, stream_leader};
use crate::cluster_route::shard_of;

/// Enough orgs that, over 4 shards and 2 nodes, each node owns some.
const ORGS: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];

/// Two collectors `c1`, `c2` over 3 nats-servers, PostgreSQL and moto, each with its own
/// INGEST and ORG_ADMIN key per org. Fields drop in order: the collectors before the servers.
struct Cluster {
    nodes: [Collector; 2],
    ingest: [BTreeMap<&'static str, String>; 2],
    admin: [BTreeMap<&'static str, String>; 2],
    servers: Servers,
    started: Instant,
}

impl Cluster {
    /// `None` when a server is missing outside CI (SKIPPED).
    fn start(what: &str) -> Option<Cluster> {
        Cluster::start_with(what, "")
    }

    /// [`Cluster::start`] with `settings` before each node's `[cluster]`.
    fn start_with(what: &str, settings: &str) -> Option<Cluster> {
        let servers = Servers::start_or_skip(what)?;
        let started = Instant::now();
        let nodes = [
            servers.start_node_with("c1", settings),
            servers.start_node_with("c2", settings),
        ];
        eprintln!(
            "cluster snapshot: nodes started at {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // Each node makes its own keys (they are the cluster's: either would do).
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
            servers,
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

    /// Six rounds through both nodes, then the node holding each org's records: its owner.
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
                .filter(|&i| {
                    // A shard not served yet (503) holds nothing here for now.
                    let node = &self.nodes[i];
                    node.total_when_served(org, QUERY, &self.admin[i][org])
                        .is_some_and(|total| total >= n)
                })
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
            assert_no_fork(c);
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
    let meta = Metastore::connect(&cluster.servers.pg);
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
    let killed = stream_leader(&cluster.servers.nats);

    let stop = AtomicBool::new(false);
    let Cluster {
        nodes,
        ingest,
        servers,
        ..
    } = &mut cluster;
    let nats = &mut servers.nats;
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
    let name = cluster.servers.nats.name(killed);
    let down = down.unwrap_or_else(|| panic!("no round acknowledged within 20 s of {name}'s kill"));
    cluster.phase(&format!(
        "{name} killed (a round acknowledged {:.1} s later), restarted, ingest done",
        down.as_secs_f64()
    ));
    cluster.assert_all_once(&acked);
}

/// Watches every owner consumer's ack floor (`owner-<shard>-<epoch>`, read from JetStream) until
/// `stop`: the record of the message at each new floor, read from the stream, must be found by
/// id through `via` (routed to its shard's owner; a takeover's 503s are waited out). A 404 is
/// an acknowledgement that passed what a search answers. Returns how many floors it checked.
fn check_ack_floors(
    nats_urls: &[String],
    via: &Collector,
    admin: &BTreeMap<&str, String>,
    stop: &AtomicBool,
) -> usize {
    let (rt, stream) = audit_stream(nats_urls);
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut checked = 0;
    while !stop.load(Ordering::Relaxed) {
        // The floors first, then the searches: a floor read here was acked before the search.
        let floors: Vec<(String, u64)> = rt.block_on(async {
            let mut floors = Vec::new();
            let mut infos = stream.consumers();
            while let Some(Ok(info)) = infos.next().await {
                if info.name.starts_with("owner-") && info.ack_floor.stream_sequence > 0 {
                    floors.push((info.name.clone(), info.ack_floor.stream_sequence));
                }
            }
            floors
        });
        for (consumer, seq) in floors {
            if seen.get(&consumer) == Some(&seq) {
                continue;
            }
            let Ok(message) = rt.block_on(stream.get_raw_message(seq)) else {
                continue; // read again next round
            };
            let record: Value = serde_json::from_slice(&message.payload).unwrap();
            let (org, id) = (
                record["org_id"].as_str().unwrap(),
                record["id"].as_str().unwrap(),
            );
            let path = format!("/api/v1/orgs/{org}/audit-log/{id}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let status = via.get(&path, &admin[org]).status().as_u16();
                match status {
                    200 => break,
                    503 if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    _ => panic!(
                        "{consumer}'s ack floor is stream sequence {seq}, {org}'s record {id}, \
                         but GET {path} answers {status}: acknowledged before searchable"
                    ),
                }
            }
            seen.insert(consumer, seq);
            checked += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    checked
}

#[test]
fn owners_acknowledge_only_what_is_searchable_also_across_a_kill_9() {
    // A 3 s index commit: an ack sent before its records' commit leaves them unsearchable for
    // seconds, while the owners store the next batches meanwhile.
    let settings = "[index]\ncommit_interval = \"3s\"\n";
    let Some(mut cluster) = Cluster::start_with("cluster acks", settings) else {
        return;
    };
    let acked = Acked::default();
    let owners = cluster.warm_up(&acked);
    let victim = Cluster::victim(&owners);
    let survivor = 1 - victim;

    let stop = AtomicBool::new(false);
    let Cluster {
        nodes,
        ingest,
        admin,
        servers,
        ..
    } = &mut cluster;
    let urls = servers.nats.urls();
    let [c1, c2] = nodes;
    let (victim_node, survivor_node) = if victim == 0 { (c1, &*c2) } else { (c2, &*c1) };
    let via = [(survivor_node, &ingest[survivor])];
    let survivor_admin = &admin[survivor];
    let checked = std::thread::scope(|scope| {
        let sender = scope.spawn(|| steady_ingest(&via, &acked, 6, &stop));
        let watcher = scope.spawn(|| check_ack_floors(&urls, survivor_node, survivor_admin, &stop));
        // Acks of both owners under load, then the victim killed with batches unacknowledged.
        std::thread::sleep(Duration::from_secs(8));
        victim_node.kill9();
        std::thread::sleep(Duration::from_secs(8));
        stop.store(true, Ordering::Relaxed);
        let rounds = sender.join().unwrap();
        assert!(rounds > 8, "the ingest went on: {rounds} rounds");
        watcher.join().unwrap()
    });
    cluster.phase(&format!(
        "victim killed, ingest done, {checked} ack floors checked"
    ));
    assert!(checked >= 10, "only {checked} ack floors seen move");
    cluster.assert_all_once(&acked);
}

/// The JetStream stream the nodes publish to, with the runtime its client runs on.
fn audit_stream(
    nats_urls: &[String],
) -> (
    tokio::runtime::Runtime,
    async_nats::jetstream::stream::Stream,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let addrs: Vec<async_nats::ServerAddr> =
            nats_urls.iter().map(|u| u.parse().unwrap()).collect();
        let client = async_nats::connect(addrs.as_slice()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.get_stream(CLUSTER_STREAM).await.unwrap()
    });
    (rt, stream)
}

/// Consumer `name`'s ack policy and its messages not yet acknowledged (pending delivery or
/// delivered without an ack); `None` while it does not exist.
fn consumer_state(
    rt: &tokio::runtime::Runtime,
    stream: &async_nats::jetstream::stream::Stream,
    name: &str,
) -> Option<(AckPolicy, u64)> {
    let info = rt.block_on(stream.consumer_info(name)).ok()?;
    Some((
        info.config.ack_policy,
        info.num_pending + info.num_ack_pending as u64,
    ))
}

#[test]
fn an_owner_keeps_per_message_acks_on_a_consumer_an_older_version_made() {
    let Some(servers) = Servers::start_or_skip("cluster ack policy") else {
        return;
    };
    let mut c1 = servers.start_node("c1");
    let org = "acme";
    let shard = shard_of(org) as i32;
    let ingest = BTreeMap::from([(org, c1.create_key(org, "INGEST"))]);
    let admin = c1.create_key(org, "ORG_ADMIN");
    let acked = Acked::default();
    for round in 0..4 {
        acked.send(&c1, &ingest, round);
    }
    assert_each_once(&c1, org, &admin, &acked.ids(org));
    let metastore = Metastore::connect(&servers.pg);
    let epoch = metastore.leases()[&shard].1;
    let (rt, stream) = audit_stream(&servers.nats.urls());
    let made = format!("owner-{shard}-{epoch}");
    assert_eq!(
        consumer_state(&rt, &stream, &made).map(|(policy, _)| policy),
        Some(AckPolicy::All),
        "{made}: this version acknowledges cumulatively"
    );

    // The node killed; the consumer of the epoch it takes next made as an older version made
    // it: explicit, per-message acks.
    c1.kill9();
    let older = format!("owner-{shard}-{}", epoch + 1);
    rt.block_on(stream.create_consumer(pull::Config {
        durable_name: Some(older.clone()),
        filter_subject: format!("{CLUSTER_STREAM}.shard.{shard}"),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(10),
        max_ack_pending: 20_000,
        ..Default::default()
    }))
    .unwrap();
    c1.restart();
    for round in 4..12 {
        acked.send(&c1, &ingest, round);
    }
    assert_each_once(&c1, org, &admin, &acked.ids(org));
    assert_eq!(
        metastore.leases()[&shard].1,
        epoch + 1,
        "the node took the shard under the epoch of the older consumer"
    );
    // Every message acknowledged, well within the 10 s ack wait (a cumulative ack on this
    // consumer would leave all but each batch's last pending until redelivered).
    let mut state = None;
    let all_acked = codestax_harness::wait_for(Duration::from_secs(8), || {
        state = consumer_state(&rt, &stream, &older);
        state == Some((AckPolicy::Explicit, 0))
    });
    assert!(all_acked, "{older}: {state:?}\n{}", c1.stderr());
    assert_export_verifies(&c1, org, &admin, acked.ids(org).len() as u64);
    assert_no_fork(&c1);
}

/// Snapshots are taken and published by a task of their own: with moto's answers held back (a
/// request reaches it, its answer does not come), as from an object store become slow, the
/// owner consumes on. Every batch acknowledged during an 8 s hold is searchable within 2 s, no
/// snapshot row is published while it lasts, and snapshots are published again once moto
/// answers. (With the snapshot in the owner's loop, reads stopped at the hold's first snapshot.)
#[test]
fn an_object_store_that_stops_answering_holds_up_neither_consumption_nor_reads() {
    let Some(servers) = Servers::start_or_skip("cluster slow object store") else {
        return;
    };
    let relay = AnswerHold::start(servers.s3.port());
    let mut c = servers.node("c1");
    servers.join_via_s3(&mut c, "c1", &relay.endpoint());
    let meta = Metastore::connect(&servers.pg);
    let org = "acme";
    let ingest = c.create_key(org, "INGEST");
    let admin = c.create_key(org, "ORG_ADMIN");
    let mut sent = 0;
    let mut send = || {
        let (body, _) = ingest_until_acked(&c, &ingest, &batch(org, sent, 10));
        assert_eq!(body["accepted"], 10, "{body}");
        sent += 10;
        sent as u64
    };
    let total = send();
    c.wait_for_total_within(org, QUERY, &admin, total, Duration::from_secs(30));
    assert!(
        wait_for(Duration::from_secs(20), || meta.last_snapshot_id() > 0),
        "no snapshot published through the relay"
    );

    relay.hold(true);
    // A snapshot whose objects were all stored before the hold may still publish its row.
    std::thread::sleep(Duration::from_secs(1));
    let before_hold = meta.last_snapshot_id();
    // New records, so the next snapshot has chunks to upload; past the 2 s interval it has
    // begun, and waits on moto.
    let total = send();
    c.wait_for_total_within(org, QUERY, &admin, total, Duration::from_secs(2));
    std::thread::sleep(Duration::from_secs(3));
    let hold_ends = Instant::now() + Duration::from_secs(8);
    let mut batches = 0;
    while Instant::now() < hold_ends {
        let total = send();
        c.wait_for_total_within(org, QUERY, &admin, total, Duration::from_secs(2));
        batches += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(batches >= 3, "only {batches} batches in the hold");
    assert_eq!(
        meta.last_snapshot_id(),
        before_hold,
        "a snapshot was published while moto's answers were held: the hold held nothing"
    );

    relay.hold(false);
    assert!(
        wait_for(Duration::from_secs(60), || meta.last_snapshot_id()
            > before_hold),
        "no snapshot published once moto answered again"
    );
    assert_export_verifies(&c, org, &admin, sent as u64);
    c.terminate().unwrap();
}
