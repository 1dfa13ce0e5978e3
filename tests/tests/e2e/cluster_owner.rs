//! Cluster mode, shard owners: records ingested on a node in cluster mode (real 3-node
//! nats-server JetStream cluster, real PostgreSQL) become searchable on the node that owns their
//! shard, each once, sealed into one chain per org that verifies on an export; after the owner is
//! killed (SIGKILL) while it consumes and started again, nothing acknowledged is lost and nothing
//! is indexed twice. Missing servers: SKIPPED outside CI, a failure in CI.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use codestax_harness::{CLUSTER_STREAM, Collector};
use futures_util::StreamExt as _;

use crate::cluster_common::assert_export_verifies;
use crate::cluster_ingest::{batch, ingest_until_acked, start_node, start_node_logged};

const ORGS: [&str; 3] = ["acme", "globex", "initech"];
const QUERY: &str = "action=auth.login";

/// Sends records `from..from + n` of every org, in batches of 10, until acknowledged.
fn send(c: &Collector, tokens: &[(String, String)], from: usize, n: usize) {
    for (org, token) in tokens {
        for start in (from..from + n).step_by(10) {
            let (body, _) = ingest_until_acked(c, token, &batch(org, start, 10));
            assert_eq!(body["accepted"], 10, "{body}");
        }
    }
}

/// Every org's `auth.login` records are searchable, each id exactly once, `0..n`.
fn assert_each_once(c: &Collector, admins: &[(String, String)], n: usize, within: Duration) {
    for (org, admin) in admins {
        c.wait_for_total_within(org, QUERY, admin, n as u64, within);
        let found = c.search_all(org, QUERY, admin);
        let ids: Vec<String> = found
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{org}: an id found twice");
        let expected: BTreeSet<String> = (0..n).map(|i| format!("{org}-{i}")).collect();
        assert_eq!(
            unique.into_iter().cloned().collect::<BTreeSet<_>>(),
            expected,
            "{org}"
        );
        for r in &found {
            assert_eq!(r["provenance"]["writer"], "ingest", "{r}");
        }
    }
}

#[test]
fn the_owner_indexes_every_record_once_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let Some((_nats, _pg, mut c)) = start_node("cluster owner", dir.path(), pg_dir.path()) else {
        return;
    };
    let key = |role: &str| -> Vec<(String, String)> {
        ORGS.iter()
            .map(|&o| (o.to_owned(), c.create_key(o, role)))
            .collect()
    };
    let (ingest, admins) = (key("INGEST"), key("ORG_ADMIN"));

    // The only node holds every shard: what it publishes comes back to it, searchable.
    send(&c, &ingest, 0, 30);
    assert_each_once(&c, &admins, 30, Duration::from_secs(10));
    for (org, admin) in &admins {
        assert_export_verifies(&c, org, admin, 30);
    }

    // Killed right after its last ack, while it consumes; started again, it resumes from the
    // consumers' ack floors: what it had stored but not acknowledged comes again and is dropped.
    send(&c, &ingest, 30, 30);
    c.kill9();
    c.restart();
    send(&c, &ingest, 60, 10);
    // Unacknowledged deliveries come again after the consumer's ack wait (10 s).
    assert_each_once(&c, &admins, 70, Duration::from_secs(40));
    for (org, admin) in &admins {
        assert_export_verifies(&c, org, admin, 70);
    }
    let metrics = c.metrics();
    assert!(
        metrics.contains("records_accepted_total{receiver=\"owner\"}"),
        "the owner counts what it stores"
    );
    c.terminate().unwrap();
}

/// Another client of the owners' consumers, lying in wait: a pull on each `owner-*` consumer,
/// made before `ingest` runs, that takes what the consumers deliver to it and acknowledges
/// nothing, as a pull lost on its way to the owner would. Returns how many messages it took.
fn steal_deliveries(urls: &[String], ingest: impl FnOnce()) -> usize {
    let (ready, waiting) = mpsc::channel();
    let urls = urls.to_vec();
    let thief = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let addrs: Vec<async_nats::ServerAddr> =
                urls.iter().map(|u| u.parse().unwrap()).collect();
            let client = async_nats::connect(addrs.as_slice()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream(CLUSTER_STREAM).await.unwrap();
            let names: Vec<String> = stream
                .consumer_names()
                .filter_map(|n| async move { n.ok() })
                .filter(|n| std::future::ready(n.starts_with("owner-")))
                .collect()
                .await;
            let mut pulls = Vec::new();
            for name in &names {
                let consumer = stream.get_consumer::<pull::Config>(name).await.unwrap();
                let batch = consumer
                    .batch()
                    .max_messages(1000)
                    .expires(Duration::from_secs(3))
                    .messages()
                    .await
                    .unwrap();
                pulls.push(batch.filter_map(|m| async move { m.ok() }).count());
            }
            ready.send(names.len()).unwrap();
            // Taken and dropped without an ack.
            futures_util::future::join_all(pulls)
                .await
                .iter()
                .sum::<usize>()
        })
    });
    let consumers = waiting.recv().expect("the thief's pulls are made");
    assert!(consumers > 0, "no owner consumer to take deliveries from");
    ingest();
    thief.join().unwrap()
}

/// Deliveries that never reach the owner at the stream's end leave nothing after them for the
/// consumer sequence check of the next batch to see. The owner compares the consumer's count of
/// deliveries with what it received at its next idle fetch and consumes again from its ack floor,
/// so they are searchable in seconds, not only once the consumer's ack wait (10 s) brings them
/// again.
#[test]
fn deliveries_lost_at_the_streams_end_are_searchable_before_the_ack_wait() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("c1.stderr");
    let Some((nats, _pg, mut c)) = start_node_logged(
        "cluster lost delivery",
        dir.path(),
        pg_dir.path(),
        Some(stderr),
    ) else {
        return;
    };
    let org = "acme";
    let ingest = vec![(org.to_owned(), c.create_key(org, "INGEST"))];
    let admin = vec![(org.to_owned(), c.create_key(org, "ORG_ADMIN"))];
    send(&c, &ingest, 0, 10);
    assert_each_once(&c, &admin, 10, Duration::from_secs(10));

    // The owner is idle and serving. One batch ingested while the thief waits: the owner's own
    // pending pull takes its first message at most, the thief the rest, and nothing comes after.
    let mut sent = 10;
    for attempt in 1..=5 {
        let seen = c.stderr().len();
        let mut acked_at = Instant::now();
        let stolen = steal_deliveries(&nats.urls(), || {
            let (body, _) = ingest_until_acked(&c, &ingest[0].1, &batch(org, sent, 20));
            assert_eq!(body["accepted"], 20, "{body}");
            acked_at = Instant::now();
        });
        sent += 20;
        let within = Duration::from_secs(7).saturating_sub(acked_at.elapsed());
        assert_each_once(&c, &admin, sent, within);
        let log = c.stderr().split_off(seen);
        eprintln!("attempt {attempt}: {stolen} deliveries taken from the owner");
        // Taken from the middle (the owner's pull got a later message), the order check of
        // the next batch catches it: not the case under test.
        if log.contains("deliveries of the shard's consumer never arrived") {
            c.terminate().unwrap();
            return;
        }
    }
    panic!("the thief took no delivery from the stream's end in 5 attempts");
}
