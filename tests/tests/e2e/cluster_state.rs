//! Cluster mode, the state kept in PostgreSQL, over two collectors on a real 3-node JetStream
//! cluster and a real PostgreSQL: both nodes publish the same signing key and a checkpoint
//! signed by A (its shard) and one signed by B (its shard) verify with it; a saved view made on
//! A is listed on B; a retention override set on A for an org of A's shard is B's after A is
//! killed (kill -9) and B takes the shard, and in B's own override file (what its janitor
//! reads); with PostgreSQL stopped, B still answers reads from its cache and refuses changes
//! with 503 `metastore_unavailable`, nothing changed; a single node's saved view is offered to
//! the cluster when its data dir joins. A second test holds a change at its metastore write (the
//! row locked by the test) and kills the node's waiting session there: the change is refused, and
//! neither made nor recorded in the org's log. Missing servers: SKIPPED outside CI, a failure in CI.

use std::time::{Duration, Instant};

use codestax_common::note::{self, VerifierKey};
use codestax_harness::{Collector, CollectorOptions, NatsCluster, Postgres};
use serde_json::{Value, json};

use crate::cluster_common::Metastore;
use crate::cluster_ingest::{PASSWORD, batch, cluster_toml, ingest_until_acked, pg_password};
use crate::cluster_route::{get_ok, shard_of, status, wait_for_even_spread};

/// Enterprise orgs (retention can be changed), one on each of the 4 shards.
const ORGS: [&str; 4] = ["acme", "cyberdyne", "stark", "globex"];

/// What both nodes add to their `[cluster]`: the orgs (the stream secret key file every node
/// shares is `cluster_toml`'s).
fn settings(node: &str, c: &Collector, nats: &NatsCluster, pg: &Postgres) -> String {
    let mut s = cluster_toml(node, c.http_port, nats, pg);
    for org in ORGS {
        s.push_str(&format!(
            "[[orgs]]\nid = \"{org}\"\nplan = \"enterprise\"\n"
        ));
    }
    s
}

fn node(dir: &std::path::Path, name: &str) -> Collector {
    let mut options = CollectorOptions::for_tests(&dir.join(name), "");
    options.before_spawn = Some(pg_password);
    Collector::configure(options).unwrap()
}

pub(crate) fn put_retention(c: &Collector, org: &str, token: &str, days: u32) -> (u16, Value) {
    let r = c
        .client()
        .put(c.url(&format!("/api/v1/orgs/{org}/settings/retention")))
        .bearer_auth(token)
        .json(&json!({ "days": days }))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn create_view(c: &Collector, org: &str, token: &str, name: &str) -> (u16, Value) {
    let body = json!({ "name": name, "filters": { "action": ["auth.login"] } });
    let r = c.post(
        &format!("/api/v1/orgs/{org}/saved-views"),
        token,
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    );
    (r.status().as_u16(), r.json().unwrap())
}

fn view_names(c: &Collector, org: &str, token: &str) -> Vec<String> {
    let list = c.get_json(&format!("/api/v1/orgs/{org}/saved-views"), token);
    list["views"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `org`'s override in `c`'s own file (what its janitor reads).
fn cached_days(c: &Collector, org: &str) -> Value {
    let file: Value = serde_json::from_slice(
        &std::fs::read(c.data_dir.join("retention-overrides.json")).unwrap(),
    )
    .unwrap();
    file["days"][org].clone()
}

/// Polls `check` until it holds (a node's cache follows the metastore within a second).
fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `org`'s checkpoint from `c` once its tree holds records, opened with `key`.
fn checkpoint_verifies(c: &Collector, org: &str, token: &str, key: &VerifierKey) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let head = loop {
        let head = get_ok(
            c,
            &format!("/api/v1/orgs/{org}/audit-log/checkpoint"),
            token,
        );
        if head["tree_size"].as_u64().unwrap_or(0) >= 5 {
            break head;
        }
        assert!(Instant::now() < deadline, "{org}: {head}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let signed = head["checkpoint"].as_str().unwrap();
    note::open(signed, key).unwrap_or_else(|e| panic!("{org}'s checkpoint: {e:?}\n{signed}"));
}

#[test]
fn retention_views_and_the_signing_key_are_the_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let Some(nats) = NatsCluster::start_or_skip("cluster state", dir.path()) else {
        return;
    };
    let Some(mut pg) = Postgres::start_or_skip("cluster state", pg_dir.path(), PASSWORD) else {
        return;
    };

    // A single node first, with a saved view: its data dir then joins the cluster as A.
    let mut single = Collector::start(&dir.path().join("c1"), "");
    let single_owner = single.create_key("acme", "ORG_OWNER");
    assert_eq!(
        create_view(&single, "acme", &single_owner, "From before").0,
        201
    );
    single.terminate().unwrap();
    let mut a = node(dir.path(), "c1");
    let a_settings = settings("c1", &a, &nats, &pg);
    a.restart_with(&a_settings)
        .unwrap_or_else(|e| panic!("{e}\n{}", a.stderr()));
    let mut b = node(dir.path(), "c2");
    let b_settings = settings("c2", &b, &nats, &pg);
    b.restart_with(&b_settings)
        .unwrap_or_else(|e| panic!("{e}\n{}", b.stderr()));
    let owners = wait_for_even_spread(&a);
    let owned_by = |node: &str| -> &str {
        ORGS.iter()
            .copied()
            .find(|o| owners[&shard_of(o)] == node)
            .unwrap()
    };
    let (org_a, org_b) = (owned_by("c1"), owned_by("c2"));
    let owner_keys: Vec<(&str, String)> = ORGS
        .iter()
        .map(|&o| (o, a.new_key(o, "ORG_OWNER").unwrap()))
        .collect();
    let token = |org: &str| {
        owner_keys
            .iter()
            .find(|(o, _)| *o == org)
            .unwrap()
            .1
            .clone()
    };
    for org in [org_a, org_b] {
        let ingest = a.new_key(org, "INGEST").unwrap();
        ingest_until_acked(&a, &ingest, &batch(org, 0, 5));
    }

    // One published key: the same on both nodes; A signs its shard's heads, B its own.
    let published_a = a.get_json("/api/v1/signing-key", &token(org_a));
    let published_b = b.get_json("/api/v1/signing-key", &token(org_a));
    assert_eq!(published_a, published_b);
    let key = VerifierKey::parse(published_a["verifier_key"].as_str().unwrap()).unwrap();
    checkpoint_verifies(&a, org_a, &token(org_a), &key);
    checkpoint_verifies(&b, org_b, &token(org_b), &key);

    // Saved views: the single node's was offered to the cluster; one made on A is on B.
    assert_eq!(
        create_view(&a, org_b, &token(org_b), "Logins").0,
        201,
        "{}",
        a.stderr()
    );
    eventually("A's view listed on B", Duration::from_secs(5), || {
        view_names(&b, org_b, &token(org_b)) == ["Logins"]
    });
    assert_eq!(view_names(&b, "acme", &token("acme")), ["From before"]);
    let (status_code, body) = create_view(&b, org_b, &token(org_b), "logins");
    assert_eq!(
        (status_code, body["error"]["code"].as_str()),
        (409, Some("name_taken")),
        "one name per org across nodes: {body}"
    );

    // Retention set on A for an org of A's shard; A dies; B owns the shard and enforces it.
    let (code, body) = put_retention(&a, org_a, &token(org_a), 400);
    assert_eq!((code, body["days"].as_u64()), (200, Some(400)), "{body}");
    a.kill9();
    eventually("B owns every shard", Duration::from_secs(30), || {
        status(&b)["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["owner"] == "c2")
    });
    let served = get_ok(
        &b,
        &format!("/api/v1/orgs/{org_a}/settings/retention"),
        &token(org_a),
    );
    assert_eq!(
        (served["days"].as_u64(), served["source"].as_str()),
        (Some(400), Some("api")),
        "{served}"
    );
    assert_eq!(cached_days(&b, org_a), 400, "B's janitor reads it");

    // PostgreSQL down: reads from B's cache, changes refused (nothing changed). B's leases
    // lapse 1 s after PostgreSQL stops, and that stop may take longer under load: the routed
    // retention change answers either 503 (the metastore's, or the shard's with no owner), and
    // its cache is checked in B's file rather than through the routed read.
    pg.stop().unwrap();
    let (code, body) = put_retention(&b, org_a, &token(org_a), 30);
    assert!(
        code == 503
            && ["metastore_unavailable", "shard_unavailable"]
                .contains(&body["error"]["code"].as_str().unwrap_or_default()),
        "{code} {body}"
    );
    let (code, body) = create_view(&b, org_b, &token(org_b), "During the outage");
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (503, Some("metastore_unavailable")),
        "{body}"
    );
    assert_eq!(view_names(&b, org_b, &token(org_b)), ["Logins"]);
    assert_eq!(cached_days(&b, org_a), 400, "B's cache unchanged");
}

/// What `org`'s log holds of `action`, as `c` answers (every entry as JSON text).
pub(crate) fn recorded(c: &Collector, org: &str, token: &str, action: &str) -> Vec<String> {
    let page = get_ok(
        c,
        &format!("/api/v1/orgs/{org}/audit-log?limit=100&action={action}"),
        token,
    );
    page["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(Value::to_string)
        .collect()
}

/// What `org`'s log holds of `action` once an entry containing `made` is searchable (within
/// 10 s): a change refused before it is the log's would be searchable by then too (one shard,
/// in order).
pub(crate) fn recorded_with(
    c: &Collector,
    org: &str,
    token: &str,
    action: &str,
    made: &str,
) -> Vec<String> {
    let mut entries = Vec::new();
    eventually(
        &format!("{action} with {made} is recorded"),
        Duration::from_secs(10),
        || {
            entries = recorded(c, org, token, action);
            entries.iter().any(|e| e.contains(made))
        },
    );
    entries
}

/// Sends `change` while the test's own transaction holds the row `lock` selects `FOR UPDATE`,
/// waits until the node's write waits for that lock, then kills the waiting session
/// (`pg_terminate_backend`: the node's write fails) while the lock is still held, and waits for
/// the answer. Stopping PostgreSQL instead raced: its sessions end in any order, and the node's
/// write could take the lock and reach its COMMIT first (the documented "recorded, not
/// confirmed" window, not the refusal under test). Returns what `change` answered; `Err` with it
/// when it answered before its write waited.
pub(crate) fn refused_at_the_write(
    pg: &Postgres,
    lock: &str,
    org: &str,
    change: impl FnOnce() -> (u16, Value) + Send,
) -> Result<(u16, Value), (u16, Value)> {
    let holder = Metastore::connect(pg);
    let watcher = Metastore::connect(pg);
    holder.rows("BEGIN", &[]);
    assert_eq!(
        holder.rows(lock, &[&org]).len(),
        1,
        "{lock}: the row exists"
    );
    let answer = std::thread::scope(|scope| {
        let sent = scope.spawn(change);
        let deadline = Instant::now() + Duration::from_secs(10);
        while watcher.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            &[],
        )[0]
        .get::<_, i64>(0)
            < 1
        {
            if sent.is_finished() {
                return Err(sent.join().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "the node's write waits for the test's lock: not within 10 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!sent.is_finished(), "answered while its write waits");
        watcher.rows(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            &[],
        );
        Ok(sent.join().unwrap())
    });
    // The lock goes only now, after the answer.
    holder.rows("ROLLBACK", &[]);
    answer
}

#[test]
fn a_settings_change_the_metastore_never_made_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let Some(nats) = NatsCluster::start_or_skip("cluster settings write", dir.path()) else {
        return;
    };
    let Some(pg) = Postgres::start_or_skip("cluster settings write", pg_dir.path(), PASSWORD)
    else {
        return;
    };
    let mut a = node(dir.path(), "c1");
    let a_settings = settings("c1", &a, &nats, &pg);
    a.restart_with(&a_settings)
        .unwrap_or_else(|e| panic!("{e}\n{}", a.stderr()));
    let org = "acme";
    let owner = a.new_key(org, "ORG_OWNER").unwrap();
    let retention_path = format!("/api/v1/orgs/{org}/settings/retention");
    get_ok(&a, &retention_path, &owner);
    assert_eq!(put_retention(&a, org, &owner, 400).0, 200, "{}", a.stderr());
    assert_eq!(create_view(&a, org, &owner, "Logins").0, 201);

    // Held at its write, then its session killed: 503, and neither made nor recorded.
    let (url, token) = (a.url(&retention_path), owner.clone());
    let (code, body) = refused_at_the_write(
        &pg,
        "SELECT 1 FROM retention_overrides WHERE org_id = $1 FOR UPDATE",
        org,
        move || {
            let r = reqwest::blocking::Client::new()
                .put(url)
                .bearer_auth(token)
                .json(&json!({ "days": 30 }))
                .send()
                .unwrap();
            (r.status().as_u16(), r.json().unwrap())
        },
    )
    .unwrap_or_else(|a| panic!("answered before its write waited: {a:?}"));
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (503, Some("metastore_unavailable")),
        "{body}"
    );
    let (url, token) = (
        a.url(&format!("/api/v1/orgs/{org}/saved-views")),
        owner.clone(),
    );
    let (code, body) = refused_at_the_write(
        &pg,
        "SELECT 1 FROM saved_views WHERE org_id = $1 FOR UPDATE",
        org,
        move || {
            let r = reqwest::blocking::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(
                    &json!({ "name": "During the lock", "filters": { "action": ["auth.login"] } }),
                )
                .send()
                .unwrap();
            (r.status().as_u16(), r.json().unwrap())
        },
    )
    .unwrap_or_else(|a| panic!("answered before its write waited: {a:?}"));
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (503, Some("metastore_unavailable")),
        "{body}"
    );

    // Lock gone: the changes made now are recorded once each; the refused ones never
    // were (a record is searchable once a later one of its org is: one shard, in order).
    let served = get_ok(&a, &retention_path, &owner);
    assert_eq!(
        served["days"], 400,
        "the refused change was not made: {served}"
    );
    assert_eq!(view_names(&a, org, &owner), ["Logins"]);
    let stored: Vec<i32> = Metastore::connect(&pg)
        .rows(
            "SELECT days FROM retention_overrides WHERE org_id = $1",
            &[&org],
        )
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, [400]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while put_retention(&a, org, &owner, 60).0 != 200 {
        assert!(Instant::now() < deadline, "{}", a.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    while create_view(&a, org, &owner, "After the lock").0 != 201 {
        assert!(Instant::now() < deadline, "{}", a.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    let retention = recorded_with(&a, org, &owner, "settings.retention_changed", "\"new\":60");
    assert_eq!(retention.len(), 2, "400 and 60 only: {retention:#?}");
    assert!(
        !retention.iter().any(|e| e.contains("\"new\":30")),
        "{retention:#?}"
    );
    let views = recorded_with(
        &a,
        org,
        &owner,
        "audit_log.saved_view_created",
        "After the lock",
    );
    assert_eq!(views.len(), 2, "Logins and After the lock only: {views:#?}");
    assert!(
        !views.iter().any(|e| e.contains("During the lock")),
        "{views:#?}"
    );
}
