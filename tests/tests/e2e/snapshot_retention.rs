//! Cluster mode, retention per shard: two collectors (over 3 nats-servers, PostgreSQL and moto's
//! S3, snapshots every second, a 3-day retention and a janitor every second). One org's records
//! are sent old and new, interleaved: the owner's janitor deletes the old ones (a checkpoint and
//! tombstones), the next snapshot carries what was deleted; the owner is killed with SIGKILL, and
//! the survivor restores the snapshot from the retained tail: the org's chain verifies from the
//! checkpoint, nothing deleted comes back, and records sent after the takeover continue the chain.
//! Missing servers: SKIPPED outside CI, a failure in CI.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use codestax_common::AuditRecord;
use codestax_harness::{Collector, record};
use serde_json::Value;

use crate::cluster_common::{Metastore, QUERY, Servers};
use crate::cluster_ingest::ingest_until_acked;
use crate::cluster_state::put_retention;

const ORG: &str = "acme";
/// The org keeps 30 days until the test sets 3 through the API (ingest refuses a record already
/// past its window, so the old records come in while they are inside it).
const RETENTION: &str = "[retention]\ndefault_days = 3\njanitor_interval = \"1s\"\n\
    [[orgs]]\nid = \"acme\"\nplan = \"enterprise\"\nretention_days = 30\n";

/// Node `name` of `servers`, started with that retention and snapshots every second.
fn start(servers: &Servers, name: &str) -> Collector {
    let mut c = servers.node(name);
    servers.join_with(&mut c, name, RETENTION, "1s");
    c
}

/// Records `from..from + n` of the org, `days_ago` days old.
fn records(from: usize, n: usize, days_ago: i64) -> Vec<Value> {
    let time = (Utc::now() - chrono::Duration::days(days_ago))
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    (from..from + n)
        .map(|i| {
            record(
                ORG,
                &format!("{ORG}-{i}"),
                "auth.login",
                "ada@example.com",
                &time,
            )
        })
        .collect()
}

fn deleted(c: &Collector) -> f64 {
    c.metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix("codestax_collector_retention_records_deleted_total ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The org's records as `c` exports them, in `seq` order.
fn export(c: &Collector, admin: &str) -> Vec<AuditRecord> {
    let response = c.get(
        &format!("/api/v1/orgs/{ORG}/audit-log/export?format=ndjson"),
        admin,
    );
    assert_eq!(response.status().as_u16(), 200);
    let mut records: Vec<AuditRecord> = response
        .text()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("{\"codestax_proof\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    records.sort_by_key(|r| r.seq);
    records
}

#[test]
fn a_survivor_restores_a_shard_from_its_retained_tail_and_the_chain_verifies() {
    let Some(servers) = Servers::start_or_skip("snapshot retention") else {
        return;
    };
    let mut nodes = [start(&servers, "c1"), start(&servers, "c2")];
    // Keys live in PostgreSQL: made on one node, they work on both.
    let ingest = nodes[0].create_key(ORG, "INGEST");
    let admin = nodes[0].create_key(ORG, "ORG_ADMIN");

    // seq 1-5 old, 6-10 new, 11-13 old, 14-20 new: retention leaves a checkpoint at 5 and
    // tombstones 11-13. Each batch is acknowledged before the next is sent: the shard's stream,
    // and so its chain, has them in this order.
    for (from, n, days) in [(0, 5, 10), (5, 5, 0), (10, 3, 10), (13, 7, 0)] {
        let (body, _) = ingest_until_acked(&nodes[0], &ingest, &records(from, n, days));
        assert_eq!(body["accepted"], n, "{body}");
    }
    // Now the window is 3 days: the 8 old records have expired.
    let owner_key = nodes[0].create_key(ORG, "ORG_OWNER");
    // A change is recorded in the org's log: 503 until the shard has an owner that serves.
    let mut answer = (0, serde_json::Value::Null);
    let changed = codestax_harness::wait_for(Duration::from_secs(30), || {
        answer = put_retention(&nodes[0], ORG, &owner_key, 3);
        answer.0 != 503
    });
    assert!(changed && answer.0 == 200, "{answer:?}");
    // Reads hide the expired at once: 12 records are searchable.
    nodes[0].wait_for_total_within(ORG, QUERY, &admin, 12, Duration::from_secs(30));
    // The owner is the node whose janitor deleted the 8 old records.
    let mut owner = None;
    let found = codestax_harness::wait_for(Duration::from_secs(20), || {
        owner = (0..2).find(|&i| deleted(&nodes[i]) >= 8.0);
        owner.is_some()
    });
    assert!(found, "no janitor deleted the 8 expired records");
    let owner = owner.unwrap();
    let survivor = 1 - owner;
    // A record after the deletion, then a snapshot that holds it and so the checkpoint: its
    // row in the metastore names the org's chain through everything exported.
    let (body, _) = ingest_until_acked(&nodes[survivor], &ingest, &records(20, 1, 0));
    assert_eq!(body["accepted"], 1, "{body}");
    nodes[owner].wait_for_total_within(ORG, QUERY, &admin, 13, Duration::from_secs(30));
    let before = export(&nodes[owner], &admin);
    let head = before.last().and_then(|r| r.seq).unwrap();
    let meta = Metastore::connect(&servers.pg);
    let mut snapshot_head = None;
    let snapshotted = codestax_harness::wait_for(Duration::from_secs(30), || {
        snapshot_head = meta.snapshot_chain_seq(ORG);
        snapshot_head >= Some(head)
    });
    assert!(
        snapshotted,
        "no snapshot holds the chain through seq {head} (latest: {snapshot_head:?})"
    );

    nodes[owner].kill9();
    // The survivor takes the shard, restores it, and serves it (503 until then).
    nodes[survivor].wait_for_total_within(ORG, QUERY, &admin, 13, Duration::from_secs(60));
    let (body, _) = ingest_until_acked(&nodes[survivor], &ingest, &records(21, 2, 0));
    assert_eq!(body["accepted"], 2, "{body}");
    nodes[survivor].wait_for_total_within(ORG, QUERY, &admin, 15, Duration::from_secs(30));

    let log = nodes[survivor].stderr();
    assert!(
        !log.contains("does not continue its org's chain"),
        "a fork:\n{log}"
    );
    let after = export(&nodes[survivor], &admin);
    let show = |records: &[AuditRecord]| -> Vec<(String, Option<u64>)> {
        records
            .iter()
            .map(|r| (r.id().to_string(), r.seq))
            .collect()
    };
    let context = format!(
        "owner c{}\nbefore {:?}\nafter {:?}\n--- survivor:\n{log}",
        owner + 1,
        show(&before),
        show(&after)
    );
    // The org's log also holds the collector's own records (key creations, reads): the old
    // owner's records are all there, the same records byte for byte, then the new ones.
    assert_eq!(after[..before.len()], before[..], "{context}");
    let new: Vec<&str> = after[before.len()..]
        .iter()
        .map(|r| r.id())
        .filter(|id| id.starts_with("acme-"))
        .collect();
    assert_eq!(new, ["acme-21", "acme-22"], "{context}");
    // The 8 deleted records left their seqs empty; none was restored: the survivor stored from
    // the snapshot exactly what the old owner still held.
    let last = after.last().and_then(|r| r.seq).unwrap();
    assert_eq!(last as usize - after.len(), 8, "{context}");
    // (Its export of `before` is itself audited as a read: one more record, which the last
    // snapshot may hold.)
    let restored: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("shard snapshot restored"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.strip_prefix("restored=")?.parse().ok())
        .filter(|&n| n > 0)
        .collect();
    assert!(
        restored == [before.len()] || restored == [before.len() + 1],
        "restored {restored:?}: {context}"
    );
    let ids: BTreeSet<&str> = after.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), after.len(), "an id twice: {context}");
    // The survivor verifies the chain from the checkpoint it took over.
    let verify = nodes[survivor].get_json(&format!("/api/v1/orgs/{ORG}/audit-log/verify"), &admin);
    assert_eq!(verify["ok"], true, "{verify}");
}
