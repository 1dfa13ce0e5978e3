//! Cluster mode, shard owners: records ingested on a node in cluster mode (real 3-node
//! nats-server JetStream cluster, real PostgreSQL) become searchable on the node that owns their
//! shard, each once, sealed into one chain per org that verifies on an export; after the owner is
//! killed (SIGKILL) while it consumes and started again, nothing acknowledged is lost and nothing
//! is indexed twice. Missing servers: SKIPPED outside CI, a failure in CI.

use std::collections::BTreeSet;
use std::time::Duration;

use codestax_harness::Collector;

use crate::cluster_common::assert_export_verifies;
use crate::cluster_ingest::{batch, ingest_until_acked, start_node};

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
