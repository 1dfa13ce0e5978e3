//! Streams in cluster mode, over two collectors on a real 3-node JetStream cluster, a real
//! PostgreSQL and moto's S3, delivering to the HTTPS receiver of the `streams` tests (every
//! batch's HMAC checked). A stream is made through the node that does NOT own the org's shard
//! (forwarded to the owner, which keeps it in PostgreSQL and delivers it); under steady ingest
//! (the client keeps its own list of acknowledged ids) the owner is killed with SIGKILL, and the
//! survivor, once it owns the shard, continues from the cursor in `stream_cursors`; then the
//! killed node comes back, and whichever node owns the shard is paused (SIGSTOP) past its lease
//! and resumed (SIGCONT): a zombie, whose cursor writes are refused by epoch. Throughout, the
//! cursor row never goes back (in `delivered_seq` nor in epoch). In the end every acknowledged
//! record arrived, every seq of the org from 1 in order without a gap, a repeat only as part of
//! a re-sent batch; the status answers the same on both nodes. Missing servers: SKIPPED outside
//! CI, a failure in CI.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use codestax_harness::Collector;
use serde_json::{Value, json};

use crate::cluster_common::{Acked, Metastore, Servers};
use crate::cluster_route::{shard_of, wait_for_even_spread};
use crate::cluster_state::{recorded, recorded_with, refused_at_the_write};
use crate::streams::{
    HEADER_SECRET, HttpsReceiver, SECRET, assert_in_order_without_gaps, request,
    request_with_headers,
};

/// One org on each of the 4 shards, so each node owns some.
const ORGS: [&str; 4] = ["acme", "cyberdyne", "stark", "globex"];
/// Loopback is refused by default.
const STREAMS: &str = "allow_destinations = [\"127.0.0.1\"]\n";

/// (epoch, delivered_seq) of the stream's cursor row, if any.
fn cursor_row(meta: &Metastore, org: &str, id: &str) -> Option<(i64, i64)> {
    meta.rows(
        "SELECT epoch, (cursor->>'delivered_seq')::bigint FROM stream_cursors
         WHERE org_id = $1 AND id = $2",
        &[&org, &id],
    )
    .first()
    .map(|r| (r.get(0), r.get(1)))
}

/// Samples the cursor row every 100 ms until `stop`: it must never go back.
fn watch_cursor(
    meta: &Metastore,
    org: &str,
    id: &str,
    seen: &Mutex<Vec<(i64, i64)>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Some(row) = cursor_row(meta, org, id) {
            let mut seen = seen.lock().unwrap();
            if let Some(&(epoch, delivered)) = seen.last() {
                assert!(
                    row.0 >= epoch && row.1 >= delivered,
                    "the cursor went back: {row:?} after {:?}",
                    (epoch, delivered)
                );
            }
            if seen.last() != Some(&row) {
                seen.push(row);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a batch of `org` through `via` every 100 ms until `stop`.
fn steady_ingest(
    via: &Collector,
    tokens: &BTreeMap<&str, String>,
    acked: &Acked,
    stop: &AtomicBool,
) {
    let mut round = acked.batches();
    while !stop.load(Ordering::Relaxed) {
        acked.send(via, tokens, round);
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The current owner (node id) of `org`'s shard, from the metastore, once it has one.
fn owner_of(meta: &Metastore, org: &str) -> String {
    let shard = shard_of(org) as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(owner) = meta.owners().get(&shard) {
            return owner.clone();
        }
        assert!(Instant::now() < deadline, "shard {shard} has no owner");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every acknowledged id of `org` arrived at the receiver.
fn wait_delivered(receiver: &HttpsReceiver, acked: &Acked, org: &str, within: Duration) {
    let want = acked.ids(org);
    let deadline = Instant::now() + within;
    loop {
        let got = receiver.received.ids();
        let missing = want.iter().filter(|i| !got.contains(*i)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged records not delivered within {within:?}",
            want.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two nodes whose streams may go to loopback, an org whose shard c1 owns, its ORG_OWNER key, an
/// INGEST key made on c2 and one batch acknowledged through it, and the org's stream made
/// through c2 (forwarded to c1).
struct TwoNodes {
    nodes: [Collector; 2],
    org: &'static str,
    owner_key: String,
    tokens: BTreeMap<&'static str, String>,
    acked: Acked,
    created: Value,
    id: String,
}

impl TwoNodes {
    fn with_a_stream(servers: &Servers, receiver: &HttpsReceiver) -> TwoNodes {
        let mut nodes = [servers.node("c1"), servers.node("c2")];
        for (c, name) in nodes.iter_mut().zip(["c1", "c2"]) {
            servers.join_with_streams(c, name, STREAMS);
        }
        let owners = wait_for_even_spread(&nodes[0]);
        let org = *ORGS
            .iter()
            .find(|o| owners[&shard_of(o)] == "c1")
            .expect("c1 owns an org's shard");
        let owner_key = nodes[0].create_key(org, "ORG_OWNER");
        let tokens = BTreeMap::from([(org, nodes[1].create_key(org, "INGEST"))]);
        let acked = Acked::default();
        acked.send(&nodes[1], &tokens, 0);
        let created = create_stream(&nodes[1], org, &owner_key, receiver);
        let id = created["id"].as_str().unwrap().to_string();
        TwoNodes {
            nodes,
            org,
            owner_key,
            tokens,
            acked,
            created,
            id,
        }
    }
}

/// The stream `siem` to `receiver`'s HTTPS endpoint from the org's first record, made through
/// `via` (a 503 while the owner catches up with its shard changed nothing: asked again).
fn create_stream(via: &Collector, org: &str, owner_key: &str, receiver: &HttpsReceiver) -> Value {
    let body = json!({
        "name": "siem", "format": "native", "start": "beginning",
        "destination": {"kind": "https", "url": receiver.url("/in"), "secret": SECRET,
            "headers": {"Authorization": HEADER_SECRET}, "ca_pem": receiver.cert_pem}
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, created) = loop {
        let (status, created) = request(
            via,
            "POST",
            &format!("/api/v1/orgs/{org}/streams"),
            owner_key,
            Some(body.clone()),
        );
        if status != 503 || Instant::now() > deadline {
            break (status, created);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 201, "{created}\n{}", via.stderr());
    created
}

/// GET the stream until it answers 200 (a node may be taking the shard over).
fn stream_view(c: &Collector, org: &str, id: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = request(
            c,
            "GET",
            &format!("/api/v1/orgs/{org}/streams/{id}"),
            token,
            None,
        );
        if status == 200 {
            return body;
        }
        assert!(status == 503, "{status} {body}");
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_stream_is_delivered_by_its_shards_owner_through_a_kill_and_a_zombie() {
    let Some(servers) = Servers::start_or_skip("cluster streams") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let receiver = HttpsReceiver::start(dir.path());
    let meta = Metastore::connect(&servers.pg);
    // Made through c2, which does not own the org's shard: c1 keeps it and delivers it.
    let TwoNodes {
        mut nodes,
        org,
        owner_key,
        tokens,
        acked,
        created,
        id,
    } = TwoNodes::with_a_stream(&servers, &receiver);
    assert!(!created.to_string().contains(SECRET), "{created}");
    let stored = meta.rows(
        "SELECT definition::text FROM streams WHERE org_id = $1 AND id = $2",
        &[&org, &id],
    );
    let stored: String = stored.first().expect("the stream is in PostgreSQL").get(0);
    assert!(
        !stored.contains(SECRET) && !stored.contains("header-credential"),
        "secrets sealed in the metastore: {stored}"
    );
    for c in &nodes {
        let view = stream_view(c, org, &id, &owner_key);
        assert_eq!(view["name"], "siem", "{view}");
        assert_eq!(view["has_secret"], true, "{view}");
    }
    wait_delivered(&receiver, &acked, org, Duration::from_secs(30));
    let (first_epoch, _) = cursor_row(&meta, org, &id).expect("a cursor row");

    // Steady ingest through c2; c1, the owner, killed with SIGKILL.
    let stop = AtomicBool::new(false);
    let stop_watch = AtomicBool::new(false);
    let seen = Mutex::new(Vec::new());
    let (killed, survivor) = nodes.split_at_mut(1);
    let survivor = &survivor[0];
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_cursor(&meta, org, &id, &seen, &stop_watch));
        let sender = scope.spawn(|| steady_ingest(survivor, &tokens, &acked, &stop));
        std::thread::sleep(Duration::from_secs(2));
        killed[0].kill9();
        let taken = codestax_harness::wait_for(Duration::from_secs(20), || {
            cursor_row(&meta, org, &id).is_some_and(|(epoch, _)| epoch > first_epoch)
        });
        assert!(taken, "c2 never moved the cursor:\n{}", survivor.stderr());
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        wait_delivered(&receiver, &acked, org, Duration::from_secs(60));
        stop_watch.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
    });
    assert_in_order_without_gaps(&receiver.received.seqs());
    let view = stream_view(&nodes[1], org, &id, &owner_key);
    assert_eq!(view["status"]["state"], "healthy", "{view}");

    // c1 back; whoever owns the shard now is paused past its lease, then resumed.
    nodes[0].restart();
    std::thread::sleep(Duration::from_secs(3));
    let zombie_id = owner_of(&meta, org);
    let zombie = usize::from(zombie_id == "c2");
    let other = 1 - zombie;
    let shard = shard_of(org) as i32;
    let zombie_epoch = meta.leases()[&shard].1;
    let tokens_other: BTreeMap<&str, String> =
        BTreeMap::from([(org, nodes[other].create_key(org, "INGEST"))]);
    let stop = AtomicBool::new(false);
    let stop_watch = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_cursor(&meta, org, &id, &seen, &stop_watch));
        let sender = scope.spawn(|| steady_ingest(&nodes[other], &tokens_other, &acked, &stop));
        std::thread::sleep(Duration::from_secs(1));
        nodes[zombie].signal("STOP");
        let taken = codestax_harness::wait_for(Duration::from_secs(20), || {
            let (owner, epoch) = meta.leases()[&shard].clone();
            epoch > zombie_epoch && owner.as_deref() != Some(zombie_id.as_str())
        });
        assert!(
            taken,
            "the zombie's shard was not taken: {:?}",
            meta.leases()
        );
        let taken = codestax_harness::wait_for(Duration::from_secs(20), || {
            cursor_row(&meta, org, &id).is_some_and(|(epoch, _)| epoch > zombie_epoch)
        });
        assert!(taken, "the other node never moved the cursor");
        nodes[zombie].signal("CONT");
        // The zombie wakes with batches in flight and a lease past its deadline.
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        wait_delivered(&receiver, &acked, org, Duration::from_secs(60));
        stop_watch.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
    });
    let seen = seen.into_inner().unwrap();
    let after_takeover = seen
        .iter()
        .position(|(epoch, _)| *epoch > zombie_epoch)
        .expect("a cursor under the new epoch");
    assert!(
        seen[after_takeover..]
            .iter()
            .all(|(epoch, _)| *epoch != zombie_epoch),
        "a cursor written under the zombie's epoch after the takeover: {seen:?}"
    );
    assert!(nodes[zombie].pid().is_some(), "the zombie still runs");
    let log = nodes[zombie].stderr();
    assert!(
        log.contains("stream delivery stopped"),
        "the zombie's streams did not stop:\n{log}"
    );

    // Everything acknowledged arrived, in seq order without a gap; both nodes answer alike.
    assert_in_order_without_gaps(&receiver.received.seqs());
    let newest = receiver.received.seqs().into_iter().max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<Value> = nodes
            .iter()
            .map(|c| stream_view(c, org, &id, &owner_key))
            .collect();
        let delivered: Vec<u64> = views
            .iter()
            .map(|v| v["status"]["delivered_seq"].as_u64().unwrap_or(0))
            .collect();
        if delivered.iter().all(|d| *d >= newest) {
            break;
        }
        assert!(Instant::now() < deadline, "{views:?} newest {newest}");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "cluster streams: {} acknowledged, {} arrivals, cursor rows {seen:?}",
        acked.ids(org).len(),
        receiver.received.all().len()
    );
}

/// `method` on `path` of `c` with `token` (and a JSON `body`): status, `Retry-After`, body.
fn change(
    c: &Collector,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let (status, headers, body) = request_with_headers(c, method, path, token, body);
    let retry = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry, body)
}

/// The name in stream `org`/`id`'s definition as PostgreSQL holds it (`None`: none, or deleted).
fn stored_name(meta: &Metastore, org: &str, id: &str) -> Option<String> {
    meta.rows(
        "SELECT definition->>'name' FROM streams
         WHERE org_id = $1 AND id = $2 AND deleted_at IS NULL",
        &[&org, &id],
    )
    .first()
    .map(|r| r.get(0))
}

/// A 503 `shard_unavailable` with `Retry-After`.
fn assert_shard_unavailable(answer: &(u16, Option<String>, Value), what: &str) {
    let (status, retry, body) = answer;
    assert_eq!(*status, 503, "{what}: {body}");
    assert_eq!(body["error"]["code"], "shard_unavailable", "{what}: {body}");
    assert!(retry.is_some(), "{what}: no Retry-After");
}

/// Docs/cluster.md, "Streams in cluster mode": a stream change while the org's shard has no
/// owner (its owner killed, the lease not yet taken over) answers 503 `shard_unavailable` with
/// `Retry-After` and writes nothing; once the survivor serves the shard it is made. Then
/// PostgreSQL is stopped mid-delivery under steady ingest and started again: ingest goes on,
/// delivery stops with the leases and resumes from the cursors in PostgreSQL, and the receiver
/// holds every acknowledged record, the org's seqs from 1 in order (repeats only as re-sent runs).
#[test]
fn a_stream_change_without_an_owner_is_refused_and_delivery_goes_on_through_a_postgres_outage() {
    let Some(mut servers) = Servers::start_or_skip("cluster streams outage") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let receiver = HttpsReceiver::start(dir.path());
    let meta = Metastore::connect(&servers.pg);
    let TwoNodes {
        mut nodes,
        org,
        owner_key,
        tokens,
        acked,
        created,
        id,
    } = TwoNodes::with_a_stream(&servers, &receiver);
    wait_delivered(&receiver, &acked, org, Duration::from_secs(30));

    // The owner killed: until the survivor serves the shard, changes through it are refused.
    nodes[0].kill9();
    let streams = format!("/api/v1/orgs/{org}/streams");
    let stream = format!("{streams}/{id}");
    let body = created.clone();
    assert_shard_unavailable(
        &change(
            &nodes[1],
            "POST",
            &streams,
            &owner_key,
            Some(json!({
                "name": "second", "format": "native", "start": "now",
                "destination": body["destination"].clone()
            })),
        ),
        "a create without an owner",
    );
    assert_shard_unavailable(
        &change(&nodes[1], "DELETE", &stream, &owner_key, None),
        "a delete without an owner",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    let renamed = loop {
        let name = format!("renamed-{refused}");
        let answer = change(
            &nodes[1],
            "PATCH",
            &stream,
            &owner_key,
            Some(json!({ "name": name })),
        );
        if answer.0 == 200 {
            break name;
        }
        assert_shard_unavailable(&answer, "a change without an owner");
        assert_eq!(
            stored_name(&meta, org, &id).as_deref(),
            Some("siem"),
            "a refused change was written"
        );
        assert!(
            Instant::now() < deadline,
            "the survivor never took the shard"
        );
        refused += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        refused > 0,
        "no change was refused while the shard had no owner"
    );
    assert_eq!(stored_name(&meta, org, &id), Some(renamed.clone()));
    let listed = meta.rows(
        "SELECT count(*) FROM streams WHERE org_id = $1 AND deleted_at IS NULL",
        &[&org],
    )[0]
    .get::<_, i64>(0);
    assert_eq!(listed, 1, "a refused create or delete was written");
    eprintln!("cluster streams outage: {refused} changes refused while the shard had no owner");

    // PostgreSQL stopped mid-delivery under steady ingest, started again after 5 s (five
    // leases): ingest is acknowledged throughout; nothing delivered is lost or skipped.
    nodes[0].restart();
    wait_for_even_spread(&nodes[1]);
    let stop = AtomicBool::new(false);
    let (during, after) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| steady_ingest(&nodes[1], &tokens, &acked, &stop));
        std::thread::sleep(Duration::from_secs(2));
        servers.pg.stop().unwrap();
        let before = acked.batches();
        std::thread::sleep(Duration::from_secs(5));
        let during = acked.batches() - before;
        servers.pg.restart().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        (during, acked.batches())
    });
    assert!(
        during >= 10,
        "ingest stopped with PostgreSQL: {during} batches in 5 s"
    );
    wait_delivered(&receiver, &acked, org, Duration::from_secs(60));
    let seqs = receiver.received.seqs();
    assert_in_order_without_gaps(&seqs);
    let newest = seqs.iter().copied().max().unwrap();
    let converged = codestax_harness::wait_for(Duration::from_secs(20), || {
        cursor_row(&meta, org, &id).is_some_and(|(_, delivered)| delivered as u64 >= newest)
    });
    assert!(
        converged,
        "the cursor never caught up: {:?}",
        cursor_row(&meta, org, &id)
    );
    let view = stream_view(&nodes[1], org, &id, &owner_key);
    assert_eq!(view["name"], renamed.as_str(), "{view}");
    eprintln!(
        "cluster streams outage: {during} batches acknowledged while PostgreSQL was down, {after} in all, {} arrivals for {} records",
        receiver.received.all().len(),
        acked.ids(org).len()
    );
}

/// Docs/cluster.md, "Moving a single node into a cluster": a single node delivers a stream per
/// org, then its data dir starts as a cluster node. First with another stream secret key file:
/// refused at start, naming that file, before anything is sealed in PostgreSQL. Then with the
/// cluster's: its streams (definitions, sealed secrets, cursors) are offered to PostgreSQL once
/// (`streams/offered.json`), listed by the cluster, and go on from where they stopped — after an
/// import of the single node's records (all duplicates here: the node holds them) and new
/// ingest, nothing the single node delivered arrives again and everything after it arrives, in
/// seq order.
#[test]
fn a_single_nodes_streams_join_the_cluster_and_go_on_from_where_they_stopped() {
    let Some(servers) = Servers::start_or_skip("cluster streams move") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let receiver = HttpsReceiver::start(dir.path());
    let meta = Metastore::connect(&servers.pg);
    let key_file = codestax_harness::shared_secret_key(&servers.pg);
    // The single node: on c1's data dir, without the cluster's environment.
    let mut options = codestax_harness::CollectorOptions::for_tests(
        &servers.dir.path().join("c1"),
        &format!("[streams]\nsecret_key_file = {key_file:?}\n{STREAMS}"),
    );
    options.stderr = Some(servers.dir.path().join("single.stderr"));
    let mut node = Collector::configure(options).unwrap();
    node.launch()
        .unwrap_or_else(|e| panic!("{e}\n{}", node.stderr()));
    let owner_keys: BTreeMap<&str, String> = ORGS
        .iter()
        .map(|org| (*org, node.create_key(org, "ORG_OWNER")))
        .collect();
    let tokens: BTreeMap<&str, String> = ORGS
        .iter()
        .map(|org| (*org, node.create_key(org, "INGEST")))
        .collect();
    let ids: BTreeMap<&str, String> = ORGS
        .iter()
        .map(|org| {
            let created = create_stream(&node, org, &owner_keys[org], &receiver);
            (*org, created["id"].as_str().unwrap().to_string())
        })
        .collect();
    let before = Acked::default();
    for round in 0..4 {
        before.send(&node, &tokens, round);
    }
    for org in ORGS {
        wait_delivered(&receiver, &before, org, Duration::from_secs(30));
    }
    for org in ORGS {
        let export = node
            .get(
                &format!("/api/v1/orgs/{org}/audit-log/export?format=ndjson"),
                &owner_keys[org],
            )
            .text()
            .unwrap();
        std::fs::write(dir.path().join(format!("{org}.ndjson")), export).unwrap();
    }
    node.stop();
    let delivered_before = receiver.received.all().len();
    let mut node = servers.node("c1");

    // Another key file: refused at start, naming it.
    let wrong = dir.path().join("another.streams-key");
    let port = node.http_port;
    let cluster = |key: &std::path::Path| {
        let toml = crate::cluster_ingest::cluster_toml_with(
            "c1",
            port,
            &servers.nats,
            &servers.pg,
            &servers.s3.endpoint(),
            "2s",
        );
        toml.replace(&format!("{key_file:?}"), &format!("{key:?}")) + STREAMS
    };
    assert!(
        node.restart_with(&cluster(&wrong)).is_err(),
        "started with another key"
    );
    let log = node.stderr();
    assert!(
        log.contains(&wrong.display().to_string()) && log.contains("secret_key_file"),
        "the refusal does not name the key file:\n{log}"
    );
    let touched: bool = meta.rows("SELECT to_regclass('signing_key') IS NOT NULL", &[])[0].get(0);
    assert!(
        !touched,
        "the metastore was written before the key was checked"
    );

    // The cluster's key file: the node joins; its streams are the cluster's.
    servers.join_with_streams(&mut node, "c1", STREAMS);
    let offered: Value = serde_json::from_str(
        &std::fs::read_to_string(node.data_dir.join("streams/offered.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        offered["offered"].as_array().unwrap().len(),
        ORGS.len(),
        "{offered}"
    );
    assert_eq!(offered["kept"], json!([]), "{offered}");
    for org in ORGS {
        let stored = meta.rows(
            "SELECT definition::text FROM streams WHERE org_id = $1 AND id = $2",
            &[&org, &ids[org]],
        );
        let stored: String = stored.first().expect("offered to PostgreSQL").get(0);
        assert!(!stored.contains(SECRET), "secrets sealed: {stored}");
        let view = stream_view(&node, org, &ids[org], &owner_keys[org]);
        assert_eq!(view["name"], "siem", "{view}");
        assert_eq!(view["has_secret"], true, "{view}");
    }
    // The single node's records come by import (here all already held by the node).
    for org in ORGS {
        let out = codestax_harness::run_cli(
            dir.path(),
            &[
                "import",
                "--input",
                &format!("{org}.ndjson"),
                "--format",
                "ndjson",
                "--url",
                &node.url(""),
                "--token",
                &tokens[org],
                "--quiet",
            ],
        );
        assert!(
            out.status.success(),
            "import of {org}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = Acked::default();
    for round in 100..104 {
        after.send(&node, &tokens, round);
    }
    for org in ORGS {
        wait_delivered(&receiver, &after, org, Duration::from_secs(60));
    }
    let arrivals = receiver.received.all();
    for org in ORGS {
        for id in before.ids(org) {
            let times = arrivals.iter().filter(|r| r["id"] == id.as_str()).count();
            assert_eq!(times, 1, "{org}: {id} arrived {times} times");
        }
        let later: Vec<u64> = arrivals[delivered_before..]
            .iter()
            .filter(|r| r["org_id"] == *org)
            .filter_map(|r| r["seq"].as_u64())
            .collect();
        for pair in later.windows(2) {
            assert!(
                pair[1] == pair[0] + 1 || pair[1] <= pair[0],
                "{org}: seq {} after {}: a gap",
                pair[1],
                pair[0]
            );
        }
        let cursor = cursor_row(&meta, org, &ids[org]).expect("a cursor row");
        assert!(
            cursor.0 > 0,
            "{org}: the owner never moved the offered cursor"
        );
    }
    eprintln!(
        "cluster streams move: {delivered_before} arrivals before the move, {} after",
        arrivals.len() - delivered_before
    );
}

/// Docs/cluster.md, "Streams in cluster mode": a change is written in a transaction, recorded,
/// then committed. A rename and a delete are each held at their metastore write (the test's
/// own transaction holds the stream's row) and the node's waiting session is killed there: both
/// answer 503, neither is made, and neither is in the org's log; a rename made once the lock is
/// gone is recorded once. (The old order recorded the change before its write blocked.)
#[test]
fn a_stream_change_the_metastore_never_made_is_not_recorded() {
    let Some(servers) = Servers::start_or_skip("cluster stream write") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let receiver = HttpsReceiver::start(dir.path());
    let mut node = servers.node("c1");
    servers.join_with_streams(&mut node, "c1", STREAMS);
    let org = ORGS[0];
    let owner_key = node.new_key(org, "ORG_OWNER").unwrap();
    let created = create_stream(&node, org, &owner_key, &receiver);
    let id = created["id"].as_str().unwrap().to_string();
    let stream = format!("/api/v1/orgs/{org}/streams/{id}");
    let lock = "SELECT 1 FROM streams WHERE org_id = $1 FOR UPDATE";
    let send = |method: reqwest::Method, body: Option<Value>| {
        let (url, token) = (node.url(&stream), owner_key.clone());
        move || {
            let mut r = reqwest::blocking::Client::new()
                .request(method, url)
                .bearer_auth(token);
            if let Some(body) = body {
                r = r.json(&body);
            }
            let r = r.send().unwrap();
            (r.status().as_u16(), r.json().unwrap_or(Value::Null))
        }
    };
    for (what, method, body) in [
        (
            "a rename",
            reqwest::Method::PATCH,
            Some(json!({ "name": "during the lock" })),
        ),
        ("a delete", reqwest::Method::DELETE, None),
    ] {
        // The node's 1 s leases may lapse under a loaded machine: a change routed nowhere is
        // refused before anything (and sent again); one held at its write is the test.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (code, body) = loop {
            match refused_at_the_write(&servers.pg, lock, org, send(method.clone(), body.clone())) {
                Ok(answer) => break answer,
                Err((503, early)) if early["error"]["code"] == "shard_unavailable" => {
                    assert!(Instant::now() < deadline, "{what}: {early}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(early) => panic!("{what}: answered before its write waited: {early:?}"),
            }
        };
        // The metastore gone at the write; or, as PostgreSQL stops, the lease lapsed first.
        assert_eq!(code, 503, "{what}: {body}");
        assert!(
            ["metastore_unavailable", "shard_unavailable"]
                .contains(&body["error"]["code"].as_str().unwrap_or_default()),
            "{what}: {body}"
        );
    }

    // Lock gone: neither was made; a rename made now is recorded, the refused ones never
    // were (a record is searchable once a later one of its org is: one shard, in order).
    let meta = Metastore::connect(&servers.pg);
    assert_eq!(stored_name(&meta, org, &id).as_deref(), Some("siem"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = change(
            &node,
            "PATCH",
            &stream,
            &owner_key,
            Some(json!({ "name": "after the lock" })),
        );
        if answer.0 == 200 {
            break;
        }
        assert_eq!(answer.0, 503, "{answer:?}");
        if Instant::now() > deadline {
            let sessions: Vec<String> = meta
                .rows(
                    "SELECT concat_ws(' | ', pid, state, wait_event_type, wait_event,
                        xact_start::text, left(query, 120)) FROM pg_stat_activity",
                    &[],
                )
                .iter()
                .map(|r| r.get(0))
                .collect();
            panic!("{answer:?}\n{sessions:#?}\n{}", node.stderr());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        stored_name(&meta, org, &id).as_deref(),
        Some("after the lock")
    );
    let changed = recorded_with(
        &node,
        org,
        &owner_key,
        "audit_log.stream_changed",
        "after the lock",
    );
    assert_eq!(changed.len(), 1, "the later rename only: {changed:#?}");
    let deleted = recorded(&node, org, &owner_key, "audit_log.stream_deleted");
    assert!(deleted.is_empty(), "{deleted:#?}");
}
