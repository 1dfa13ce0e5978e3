//! Cluster mode, keys in PostgreSQL and read routing, over two collectors on a real 3-node
//! JetStream cluster and a real PostgreSQL: a key made with node A's CLI works on node B at
//! once; records ingested on A, for orgs on shards owned by A and by B, read the same on both
//! nodes (each read served by the shard's owner); a forwarded read is never forwarded again;
//! `cluster status --json` lists both nodes and every shard's owner; with B killed, reads of its
//! shards answer 503 `shard_unavailable` with `Retry-After` until A takes them over, then 200;
//! after A's clean stop the status shows no live node and no owner; A started again, with
//! PostgreSQL stopped, ingest goes on with the keys cached in A's data dir. Missing servers:
//! SKIPPED outside CI, a failure in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use codestax_harness::{Collector, CollectorOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cluster_ingest::{batch, ingest_until_acked, pg_password, start_node};

/// One org on each of the 4 shards (`cluster_toml`'s `shards = 4`), so both nodes own some.
const ORGS: [&str; 4] = ["acme", "cyberdyne", "stark", "globex"];
const SHARDS: u64 = 4;
const QUERY: &str = "action=auth.login";

/// docs/cluster.md: the first 8 bytes of SHA-256(org), big-endian, modulo the shard count.
pub(crate) fn shard_of(org: &str) -> u64 {
    let digest = Sha256::digest(org.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap()) % SHARDS
}

/// `codestax-collector cluster status --json` with `c`'s config.
pub(crate) fn status(c: &Collector) -> Value {
    let mut cmd = Command::new(codestax_harness::bin("codestax-collector"));
    cmd.args(["cluster", "status", "--json", "--config"])
        .arg(&c.config_path);
    pg_password(&mut cmd);
    let out = cmd.output().expect("run cluster status");
    assert!(
        out.status.success(),
        "cluster status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cluster status prints JSON")
}

/// Waits until every shard has a live owner and both nodes own two: shard -> owner.
pub(crate) fn wait_for_even_spread(c: &Collector) -> BTreeMap<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(c);
        let owners: BTreeMap<u64, String> = s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|sh| Some((sh["shard"].as_u64()?, sh["owner"].as_str()?.to_owned())))
            .collect();
        let per_node = |n: &str| owners.values().filter(|o| *o == n).count();
        if owners.len() == SHARDS as usize && per_node("c1") == 2 && per_node("c2") == 2 {
            return owners;
        }
        assert!(Instant::now() < deadline, "shards not spread: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GET `path` with `token` until it answers 200 (a node may still be catching up with who owns
/// what); returns the JSON body.
pub(crate) fn get_ok(c: &Collector, path: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get(path, token);
        let status = r.status().as_u16();
        let body: Value = r.json().expect("JSON body");
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "GET {path}: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every `auth.login` entry of `org` as `c` answers: (id, seq, hash), walking all pages.
fn entries(c: &Collector, org: &str, token: &str) -> Vec<(String, u64, String)> {
    let page = get_ok(
        c,
        &format!("/api/v1/orgs/{org}/audit-log?limit=1000&{QUERY}"),
        token,
    );
    assert!(page["next_cursor"].is_null(), "one page holds them: {page}");
    let mut out: Vec<(String, u64, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
                e["hash"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn keys_live_in_postgres_and_reads_are_served_by_the_shards_owner() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let Some((_nats, mut pg, mut a)) = start_node("cluster route", dir.path(), pg_dir.path())
    else {
        return;
    };
    // Node B: the same NATS and PostgreSQL (A's config, its own id, ports and data).
    let mut options = CollectorOptions::for_tests(&dir.path().join("c2"), "");
    options.before_spawn = Some(pg_password);
    let mut b = Collector::configure(options).unwrap();
    let a_toml = std::fs::read_to_string(&a.config_path).unwrap();
    let cluster = &a_toml[a_toml.find("[cluster]").expect("A's [cluster]")..];
    let b_cluster = cluster
        .replace("node_id = \"c1\"", "node_id = \"c2\"")
        .replace(
            &format!("127.0.0.1:{}\"", a.http_port),
            &format!("127.0.0.1:{}\"", b.http_port),
        );
    assert_ne!(cluster, b_cluster);
    b.restart_with(&b_cluster)
        .unwrap_or_else(|e| panic!("{e}\n{}", b.stderr()));

    // Keys made with A's CLI go to PostgreSQL: B takes them at once (an unknown token makes it
    // look), without any wait here.
    let mut ingest = Vec::new();
    let mut admins = Vec::new();
    for org in ORGS {
        let token = a.new_key(org, "INGEST").unwrap();
        let who = b.get("/api/v1/whoami", &token);
        assert_eq!(who.status(), 200, "a key made on A works on B at once");
        ingest.push((org, token));
        admins.push((org, a.new_key(org, "ORG_ADMIN").unwrap()));
    }
    let mut list = Command::new(codestax_harness::bin("codestax-collector"));
    list.args(["keys", "list", "--json", "--config"])
        .arg(&b.config_path);
    pg_password(&mut list);
    let listed = list.output().unwrap();
    assert!(
        listed.status.success(),
        "keys list: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed.len(),
        2 * ORGS.len(),
        "B's CLI lists the cluster's keys"
    );
    let unknown = format!("csk_{}", "0".repeat(64));
    assert_eq!(b.get("/api/v1/whoami", &unknown).status(), 401);

    // Records of every org ingested on A, once the four shards are spread over the two nodes.
    eprintln!("keys made and checked");
    let owners = wait_for_even_spread(&a);
    eprintln!("shards spread: {owners:?}");
    let owner_of = |org: &str| owners[&shard_of(org)].clone();
    assert!(ORGS.iter().any(|o| owner_of(o) == "c1") && ORGS.iter().any(|o| owner_of(o) == "c2"));
    for (org, token) in &ingest {
        let (body, _) = ingest_until_acked(&a, token, &batch(org, 0, 20));
        assert_eq!(body["accepted"], 20, "{body}");
    }
    // Every node gives the same answer, whoever owns the org's shard.
    for (org, admin) in &admins {
        let deadline = Instant::now() + Duration::from_secs(20);
        let on_a = loop {
            let found = entries(&a, org, admin);
            if found.len() == 20 {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "{org}: {} found on A",
                found.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(entries(&b, org, admin), on_a, "{org}: A and B answer alike");
        let facets_a = get_ok(
            &a,
            &format!("/api/v1/orgs/{org}/audit-log/facets?{QUERY}"),
            admin,
        );
        let facets_b = get_ok(
            &b,
            &format!("/api/v1/orgs/{org}/audit-log/facets?{QUERY}"),
            admin,
        );
        assert_eq!(facets_a["total"], facets_b["total"], "{org}");
        let verify = get_ok(&b, &format!("/api/v1/orgs/{org}/audit-log/verify"), admin);
        assert_eq!(verify["ok"], true, "{org}: {verify}");
    }
    // Tenancy first: another org's key gets 404 on either node, forwarded or not.
    let (acme_admin, globex) = (&admins[0].1, "globex");
    for c in [&a, &b] {
        let r = c.get(&format!("/api/v1/orgs/{globex}/audit-log"), acme_admin);
        assert_eq!(r.status(), 404);
    }
    // A read forwarded to a node that does not own the shard is answered 503, not forwarded on.
    let (org_b, admin_b) = admins
        .iter()
        .find(|(o, _)| owner_of(o) == "c2")
        .cloned()
        .unwrap();
    let r = a
        .client()
        .get(a.url(&format!("/api/v1/orgs/{org_b}/audit-log")))
        .bearer_auth(&admin_b)
        .header("x-codestax-routed-from", "c2")
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "shard_unavailable", "{body}");

    let s = status(&a);
    let nodes: BTreeSet<&str> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["live"] == true)
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["c1", "c2"]), "{s:#}");
    assert!(
        s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|sh| sh["epoch"].as_i64() > Some(0))
    );

    // B killed: its shards' reads on A answer 503 + Retry-After until A takes them, then 200.
    // (Until snapshots are restored on takeover, A lacks B's older records: only the service
    // coming back is checked.)
    b.kill9();
    let path = format!("/api/v1/orgs/{org_b}/audit-log?{QUERY}");
    let killed = Instant::now();
    let mut unavailable = 0;
    loop {
        let r = a.get(&path, &admin_b);
        match r.status().as_u16() {
            200 => break,
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: Value = r.json().unwrap();
                assert_eq!(body["error"]["code"], "shard_unavailable", "{body}");
                unavailable += 1;
            }
            other => panic!("{other}: {}", r.text().unwrap()),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "shard not served again within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(unavailable > 0, "the failover showed as 503 at least once");

    // A stopped cleanly (heartbeat and leases ended): the status reads so, from PostgreSQL.
    a.terminate().unwrap();
    let s = status(&a);
    let c1 = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "c1")
        .cloned()
        .unwrap();
    assert_eq!(c1["live"], false, "{s:#}");
    assert!(c1["heartbeat_age_secs"].is_null(), "{s:#}");
    assert!(
        s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|sh| sh["owner"].is_null()),
        "{s:#}"
    );

    // PostgreSQL stopped: ingest goes on with the cached keys; reads resume once it is back.
    a.restart();
    pg.stop().unwrap();
    for (org, token) in &ingest {
        let (body, _) = ingest_until_acked(&a, token, &batch(org, 100, 5));
        assert_eq!(body["accepted"], 5, "{org}: {body}");
    }
    pg.restart().unwrap();
    for (org, admin) in &admins {
        get_ok(
            &a,
            &format!("/api/v1/orgs/{org}/audit-log/facets?{QUERY}"),
            admin,
        );
    }
    a.terminate().unwrap();
}
