//! The router in-process (`tower::ServiceExt::oneshot`, no sockets) over a real store, index and
//! key store in a temporary directory, with no janitor: the retention settings routes, and reads
//! hiding expired records that are still stored.

use super::*;
use crate::health::Health;
use crate::index::{AuditIndex, IndexOptions, Indexer};
use crate::ingest::{Ingest, IngestSettings, Receiver};
use crate::keys::{KeyStore, Role};
use crate::metrics::Metrics;
use crate::retention::RetentionPolicy;
use crate::store::{IdLookup, IndexBatch, Store, StoreOptions};
use crate::tree::Trees;
use axum::body::Body;
use axum::http::{Method, Request};
use chrono::{DateTime, Duration, Utc};
use codestax_common::time::truncate_to_micros;
use codestax_common::{Actor, ActorKind, AuditRecord, Metadata, Outcome};
use codestax_config::{CollectorConfig, OrgConfig, Plan};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::mpsc;
use tower::ServiceExt;

struct TestApp {
    state: AppState,
    /// The state's ingest without its retention check.
    seed: Ingest,
    indexer: Indexer,
    batches: mpsc::Receiver<IndexBatch>,
    store: Store,
    dir: tempfile::TempDir,
}

impl TestApp {
    fn new(mut config: CollectorConfig) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        config.data_dir = dir.path().to_path_buf();
        let (index, indexer) = AuditIndex::open(
            &dir.path().join("index"),
            IndexOptions {
                writer_memory_bytes: 16_000_000,
                ..IndexOptions::default()
            },
        )
        .unwrap();
        let (sink, batches) = mpsc::channel(16);
        let health = Health::default();
        health.set_started();
        let trees = Arc::new(Trees::open(&dir.path().join("tree")).unwrap());
        let (store, _) = Store::open_with_trees(
            &dir.path().join("wal"),
            StoreOptions::default(),
            Arc::new(index.clone()) as Arc<dyn IdLookup>,
            [],
            None,
            Default::default(),
            sink,
            health.clone(),
            trees.clone(),
        )
        .unwrap();
        let heads = crate::tree::open_heads(
            &dir.path().join("heads"),
            dir.path(),
            &config.signing,
            &trees,
        )
        .unwrap();
        index.set_cursor_key(heads.cursor_key());
        let metrics = Arc::new(Metrics::new());
        let retention = Arc::new(RetentionPolicy::open(&config, dir.path()).unwrap());
        // Seeds records whatever their time: ones stored while inside a window that has moved
        // since (ingest itself refuses what is already past its window).
        let seed = Ingest::new(
            store.clone(),
            IngestSettings {
                max_record_bytes: config.ingest.max_record_bytes,
                allow_custom_actions: false,
            },
            metrics.clone(),
            health.clone(),
        );
        let ingest = seed.clone().with_retention(retention.clone());
        let state = AppState {
            keys: KeyStore::open(dir.path()).unwrap(),
            index,
            ingest,
            metrics,
            retention,
            limits: ApiLimits {
                max_body_bytes: 1 << 20,
                max_decompressed_bytes: 1 << 20,
                max_search_limit: 1000,
                facet_top_n: 10,
                request_timeout: std::time::Duration::from_secs(30),
            },
            trees,
            heads,
            sidecars: Default::default(),
            health,
            saved_views: Arc::new(crate::saved_views::SavedViews::open(dir.path()).unwrap()),
            streams: None,
            cluster: None,
        };
        TestApp {
            state,
            seed,
            indexer,
            batches,
            store,
            dir,
        }
    }

    fn key(&self, org: &str, role: Role) -> String {
        let (_, token) = self.state.keys.create(org, role, None).unwrap();
        token.expose().to_string()
    }

    /// Stores `records` (all of one org), whatever their time, and indexes everything stored so
    /// far.
    async fn ingest(&mut self, records: Vec<AuditRecord>) {
        let org = records[0].org_id.clone();
        let outcome = self
            .seed
            .submit(
                &org,
                codestax_common::Provenance::Ingest {
                    key_id: "key_test".into(),
                },
                records.into_iter().map(Ok).collect::<Vec<_>>(),
                Receiver::Ndjson,
            )
            .await
            .unwrap();
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
        self.index_pending();
    }

    /// Indexes what the store has handed over (internal records included) and commits.
    fn index_pending(&mut self) {
        while let Ok(batch) = self.batches.try_recv() {
            self.indexer.add_batch(&batch.records).unwrap();
        }
        if let Some(lsn) = self.indexer.commit().unwrap() {
            self.store.mark_indexed_through(lsn);
        }
    }

    async fn call(&mut self, method: Method, path: &str, token: &str, body: &str) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        // Records written by the request (reads, changes) become searchable.
        self.index_pending();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn get(&mut self, path: &str, token: &str) -> (u16, Value) {
        self.call(Method::GET, path, token, "").await
    }

    async fn put(&mut self, path: &str, token: &str, body: &str) -> (u16, Value) {
        self.call(Method::PUT, path, token, body).await
    }
}

fn record(org: &str, id: &str, time: DateTime<Utc>) -> AuditRecord {
    AuditRecord {
        id: Some(id.to_string()),
        org_id: org.to_string(),
        time: truncate_to_micros(time),
        actor: Actor {
            id: "u-1".into(),
            name: None,
            email: Some("ada@example.com".into()),
            kind: ActorKind::User,
        },
        action: "scan.triggered".into(),
        category: "scan".into(),
        target: None,
        repository: None,
        outcome: Outcome::Success,
        message: None,
        metadata: Metadata::default(),
        schema_version: 1,
        received_at: None,
        seq: None,
        prev_hash: None,
        provenance: None,
        hash: None,
    }
}

fn org(id: &str, plan: Plan, days: Option<u32>, legal_hold: bool) -> OrgConfig {
    OrgConfig {
        id: id.into(),
        name: None,
        plan,
        retention_days: days,
        legal_hold,
    }
}

fn config() -> CollectorConfig {
    let mut c = CollectorConfig::default();
    c.retention.default_days = 3;
    c.orgs = vec![
        org("ent", Plan::Enterprise, Some(10), false),
        org("team", Plan::Team, None, false),
        org("held", Plan::Free, None, true),
    ];
    c
}

const PATH: &str = "/api/v1/orgs/ent/settings/retention";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_settings_read_roles_and_shape() {
    let mut t = TestApp::new(config());
    let owner = t.key("ent", Role::OrgOwner);
    let admin = t.key("ent", Role::OrgAdmin);
    let member = t.key("ent", Role::Member);
    let ingest = t.key("ent", Role::Ingest);
    let other = t.key("team", Role::OrgOwner);

    let (status, body) = t.get(PATH, &owner).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"org_id": "ent", "days": 10, "source": "config", "plan": "enterprise",
               "legal_hold": false, "default_days": 3, "editable": true})
    );
    let (status, body) = t.get(PATH, &admin).await;
    assert_eq!((status, &body["editable"]), (200, &json!(false)));
    for (key, want) in [(&member, 403), (&ingest, 403), (&other, 404)] {
        assert_eq!(t.get(PATH, key).await.0, want);
    }
    let (_, body) = t.get("/api/v1/orgs/team/settings/retention", &other).await;
    assert_eq!(
        body,
        json!({"org_id": "team", "days": 3, "source": "default", "plan": "team",
               "legal_hold": false, "default_days": 3, "editable": false})
    );
    // Orgs not in the config are on the free plan with the default.
    let nobody = t.key("nobody", Role::OrgOwner);
    let (_, body) = t
        .get("/api/v1/orgs/nobody/settings/retention", &nobody)
        .await;
    assert_eq!((&body["plan"], &body["days"]), (&json!("free"), &json!(3)));
    let held = t.key("held", Role::OrgAdmin);
    let (_, body) = t.get("/api/v1/orgs/held/settings/retention", &held).await;
    assert_eq!(body["legal_hold"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_changes_are_checked_recorded_and_saved() {
    let mut t = TestApp::new(config());
    let owner = t.key("ent", Role::OrgOwner);
    let owner_id = t.state.keys.list(Some("ent"))[0].id.clone();
    let admin = t.key("ent", Role::OrgAdmin);
    let team_owner = t.key("team", Role::OrgOwner);
    let free_owner = t.key("nobody", Role::OrgOwner);

    assert_eq!(t.put(PATH, &admin, r#"{"days": 30}"#).await.0, 403);
    assert_eq!(t.put(PATH, &team_owner, r#"{"days": 30}"#).await.0, 404);
    // Not enterprise: refused whatever the value, shorter or longer than the default.
    for (org, key) in [("team", &team_owner), ("nobody", &free_owner)] {
        for days in [400, 3, 1] {
            let (status, body) = t
                .put(
                    &format!("/api/v1/orgs/{org}/settings/retention"),
                    key,
                    &format!(r#"{{"days": {days}}}"#),
                )
                .await;
            assert_eq!(status, 403, "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("extended retention needs the enterprise plan"),
                "{message}"
            );
        }
    }
    for (bad, field) in [
        (r#"{"days": 0}"#, "days"),
        (r#"{"days": 3651}"#, "days"),
        (r#"{"days": -5}"#, "days"),
        (r#"{"days": 1.5}"#, "days"),
        (r#"{"days": "30"}"#, "days"),
        (r#"{"days": 99999999999999}"#, "days"),
        (r#"{}"#, "days"),
        (r#"{"days": 30, "legal_hold": false}"#, "legal_hold"),
        ("[30]", "body"),
        ("not json", "body"),
    ] {
        let (status, body) = t.put(PATH, &owner, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["field"], field, "{bad}: {body}");
    }
    let big = format!(r#"{{"days": 30, "pad": "{}"}}"#, "x".repeat(5000));
    assert_eq!(t.put(PATH, &owner, &big).await.0, 413);
    assert_eq!(t.get(PATH, &owner).await.1["days"], 10, "nothing changed");

    let (status, body) = t.put(PATH, &owner, r#"{"days": 365}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["days"], &body["source"]),
        (&json!(365), &json!("api"))
    );
    // The same value again changes nothing and records nothing; shortening is allowed.
    assert_eq!(t.put(PATH, &owner, r#"{"days": 365}"#).await.0, 200);
    let (_, body) = t.put(PATH, &owner, r#"{"days": 2}"#).await;
    assert_eq!(body["days"], 2);

    let (_, log) = t
        .get(
            "/api/v1/orgs/ent/audit-log?action=settings.retention_changed",
            &admin,
        )
        .await;
    assert_eq!(log["total"], 2, "{log}");
    let first = &log["entries"][1];
    assert_eq!(first["actor"]["id"], json!(owner_id));
    assert_eq!(first["actor"]["kind"], "api_key");
    assert_eq!(
        first["target"],
        json!({"kind": "organization", "id": "ent"})
    );
    assert_eq!(
        first["metadata"]["changes"],
        json!([
            {"field": "retention_days", "old": 10, "new": 365},
            {"field": "retention_source", "old": "config", "new": "api"}
        ])
    );
    assert_eq!(first["metadata"]["role"], "ORG_OWNER");
    assert_eq!(
        log["entries"][0]["metadata"]["changes"],
        json!([{"field": "retention_days", "old": 365, "new": 2}])
    );

    // Saved under the data dir, and it wins over the config after a restart.
    let reopened = RetentionPolicy::open(&config(), t.dir.path()).unwrap();
    assert_eq!(reopened.for_org("ent").days, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_hide_expired_records_before_any_janitor_runs() {
    let mut t = TestApp::new(config());
    let now = Utc::now();
    let minutes = Duration::minutes;
    let days = Duration::days;
    // Seeded as if each came in while inside its window (ingest refuses them now).
    t.ingest(vec![
        record("free", "outside", now - days(3) - minutes(10)),
        record("free", "inside", now - days(3) + minutes(10)),
        record("free", "recent", now - minutes(1)),
        record("free", "recent2", now - minutes(2)),
        record("free", "recent3", now - minutes(3)),
    ])
    .await;
    t.ingest(vec![record("held", "old", now - days(30))]).await;
    t.ingest(vec![
        record("ent", "e-9d", now - days(9)),
        record("ent", "e-2d", now - days(2)),
    ])
    .await;
    assert_eq!(
        t.state.index.stats().unwrap().docs,
        8,
        "all stored: no janitor here"
    );
    let free = t.key("free", Role::OrgAdmin);
    let ids = |v: &Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let q = "/api/v1/orgs/free/audit-log?action=scan.triggered";
    let (_, page) = t.get(q, &free).await;
    assert_eq!(ids(&page), ["recent", "recent2", "recent3", "inside"]);
    assert_eq!(page["total"], 4);
    // An explicit older `since` does not reach past the window.
    let (_, page) = t.get(&format!("{q}&since=30d"), &free).await;
    assert_eq!(page["total"], 4);
    let (_, facets) = t
        .get(
            "/api/v1/orgs/free/audit-log/facets?action=scan.triggered&since=2000-01-01",
            &free,
        )
        .await;
    assert_eq!(facets["total"], 4, "{facets}");
    assert_eq!(
        t.get("/api/v1/orgs/free/audit-log/outside", &free).await.0,
        404
    );
    assert_eq!(
        t.get("/api/v1/orgs/free/audit-log/inside", &free).await.0,
        200
    );
    // Pages continue with their cursor (the floor is not part of it).
    let (_, page) = t.get(&format!("{q}&limit=2"), &free).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (status, page) = t.get(&format!("{q}&limit=2&cursor={cursor}"), &free).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["recent3", "inside"]);

    // Legal hold: past the window, still readable.
    let held = t.key("held", Role::OrgAdmin);
    let (_, page) = t
        .get("/api/v1/orgs/held/audit-log?action=scan.triggered", &held)
        .await;
    assert_eq!(ids(&page), ["old"]);

    // Shortening retention hides at once what falls out of the new window.
    let ent = t.key("ent", Role::OrgOwner);
    let eq = "/api/v1/orgs/ent/audit-log?action=scan.triggered";
    assert_eq!(t.get(eq, &ent).await.1["total"], 2);
    assert_eq!(t.put(PATH, &ent, r#"{"days": 1}"#).await.0, 200);
    assert_eq!(t.get(eq, &ent).await.1["total"], 0);
    assert_eq!(t.put(PATH, &ent, r#"{"days": 5}"#).await.0, 200);
    assert_eq!(ids(&t.get(eq, &ent).await.1), ["e-2d"]);
}

/// `refresh=wait_for` answers before the request's deadline: a durable batch is a 200 saying
/// `"searchable": false`, never the deadline's 408 (here nothing indexes while it waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_wait_answers_before_the_request_deadline() {
    let mut t = TestApp::new(config());
    t.state.limits.request_timeout = std::time::Duration::from_secs(2);
    let ingest = t.key("ent", Role::Ingest);
    let line = serde_json::to_string(&record("ent", "waited", Utc::now())).unwrap();
    let started = std::time::Instant::now();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/ingest?refresh=wait_for")
        .header("authorization", format!("Bearer {ingest}"))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(line))
        .unwrap();
    let (status, _, bytes) = send(&t.state, request).await;
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["accepted"], &answer["searchable"]),
        (&json!(1), &json!(false)),
        "{answer}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

/// The org's `audit_log.viewed` entries of one record (the search itself records a view too).
async fn views_of_one_record(t: &mut TestApp, token: &str) -> Vec<Value> {
    let path = "/api/v1/orgs/free/audit-log?action=audit_log.viewed&limit=1000";
    let (_, page) = t.get(path, token).await;
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["metadata"]["filters"]["id"].is_array())
        .cloned()
        .collect()
}

/// Reading one record by its id is a read like a search: recorded as `audit_log.viewed` with
/// the id as its filter; a record not found (another org's, expired, absent) records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_one_record_is_recorded_as_a_view() {
    let mut t = TestApp::new(config());
    let now = Utc::now();
    t.ingest(vec![record("free", "one", now - Duration::minutes(1))])
        .await;
    let admin = t.key("free", Role::OrgAdmin);
    assert!(views_of_one_record(&mut t, &admin).await.is_empty());
    let (status, entry) = t.get("/api/v1/orgs/free/audit-log/one", &admin).await;
    assert_eq!((status, &entry["id"]), (200, &json!("one")), "{entry}");
    for absent in [
        "/api/v1/orgs/free/audit-log/nope",
        "/api/v1/orgs/team/audit-log/one",
    ] {
        assert_eq!(t.get(absent, &admin).await.0, 404);
    }
    let views = views_of_one_record(&mut t, &admin).await;
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0]["metadata"]["filters"], json!({"id": ["one"]}));
    assert_eq!(views[0]["metadata"]["total"], 1);
    assert_eq!(views[0]["actor"]["kind"], "api_key", "{}", views[0]);
    assert_eq!(views[0]["provenance"]["writer"], "collector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_pages_embed_the_stored_records() {
    // Entries are the stored canonical JSON, embedded as is: the same values GET by id returns
    // (which parses and serialises the record); every page of a walk has the first page's
    // total; a cursor altered or taken to another org is a 400 naming `cursor`.
    let mut t = TestApp::new(config());
    let now = Utc::now();
    let records: Vec<AuditRecord> = (0..40)
        .map(|i| {
            let mut r = record(
                "team",
                &format!("r-{i:02}"),
                now - Duration::minutes(i * 37),
            );
            if i % 3 == 0 {
                r.repository = Some("acme/api".into());
                r.message = Some(format!("line \"{i}\"\n\u{1f}é"));
                r.metadata.ip = Some("10.0.0.7".into());
                r.metadata
                    .extra
                    .insert("n".into(), json!({"z": [1, 2.5, null], "a": true}));
            }
            if i % 5 == 0 {
                r.time = now - Duration::minutes(200);
            }
            r
        })
        .collect();
    t.ingest(records).await;
    let team = t.key("team", Role::OrgAdmin);
    let base = "/api/v1/orgs/team/audit-log?action=scan.triggered&limit=7";
    let (status, first) = t.get(base, &team).await;
    assert_eq!(status, 200, "{first}");
    let total = first["total"].as_u64().unwrap();
    assert_eq!(total, 40);
    let mut page = first;
    let mut seen = Vec::new();
    loop {
        let keys: Vec<&str> = page
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            keys == ["entries", "next_cursor", "total"] || keys == ["entries", "total"],
            "{keys:?}"
        );
        assert_eq!(
            page["total"].as_u64(),
            Some(total),
            "the same total on every page"
        );
        for entry in page["entries"].as_array().unwrap() {
            let id = entry["id"].as_str().unwrap().to_string();
            let (status, one) = t
                .get(&format!("/api/v1/orgs/team/audit-log/{id}"), &team)
                .await;
            assert_eq!(status, 200);
            assert_eq!(entry, &one, "{id}");
            seen.push(id);
        }
        let Some(cursor) = page["next_cursor"].as_str().map(str::to_string) else {
            break;
        };
        if seen.len() == 14 {
            let mut bad = cursor.clone().into_bytes();
            bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).unwrap();
            for path in [
                format!("{base}&cursor={bad}"),
                format!("/api/v1/orgs/ent/audit-log?action=scan.triggered&limit=7&cursor={cursor}"),
            ] {
                let key = if path.contains("/ent/") {
                    t.key("ent", Role::OrgAdmin)
                } else {
                    team.clone()
                };
                let (status, body) = t.get(&path, &key).await;
                assert_eq!(status, 400, "{body}");
                assert!(body.to_string().contains("cursor"), "{body}");
            }
        }
        let (status, next) = t.get(&format!("{base}&cursor={cursor}"), &team).await;
        assert_eq!(status, 200, "{next}");
        page = next;
    }
    assert_eq!(seen.len(), 40);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 40, "no repeats");
}

/// A cursor as cursors were before their tag was keyed: its tag a bare SHA-256 of public inputs
/// (the org and the query as `index::query::scope` spells them), so anyone could make one. This
/// one starts "after" the newest possible entry of a snapshot holding everything: a next page
/// of a first page nobody read, and so nobody recorded.
fn unkeyed_cursor(scope: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut body = vec![1u8];
    body.extend_from_slice(&u64::MAX.to_be_bytes());
    body.extend_from_slice(&i64::MAX.to_be_bytes());
    let mut h = Sha256::new();
    h.update(b"codestax-audit-cursor\0");
    h.update((scope.len() as u64).to_be_bytes());
    h.update(scope.as_bytes());
    h.update(&body);
    body.extend_from_slice(&h.finalize()[..8]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
}

/// Every search records an `audit_log.viewed` entry once per result set, on its first page (no
/// `cursor`): a cursor only the collector can make (its tag keyed with a secret derived from its
/// signing key) is what makes that a record of every read. A cursor made without the key is a
/// 400 naming `cursor` that reads nothing; a real walk's later pages go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_cursor_is_refused_naming_cursor_and_reads_nothing() {
    let mut t = TestApp::new(config());
    let admin = t.key("ent", Role::OrgAdmin);
    let now = Utc::now();
    t.ingest(
        (0..5)
            .map(|i| record("ent", &format!("s-{i}"), now - Duration::minutes(i)))
            .collect(),
    )
    .await;
    let scope = "v1\x1eent\x1e[]\x1e[]\x1e[\"scan\"]\x1e[]\x1e[]\x1eNone\x1eNone\x1eNone";
    let base = "/api/v1/orgs/ent/audit-log?category=scan";
    let (status, answer) = t
        .get(
            &format!("{base}&limit=1000&cursor={}", unkeyed_cursor(scope)),
            &admin,
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("cursor")),
        "{answer}"
    );
    assert!(answer.get("entries").is_none(), "{answer}");

    let (status, first) = t.get(&format!("{base}&limit=2"), &admin).await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, second) = t
        .get(&format!("{base}&limit=2&cursor={cursor}"), &admin)
        .await;
    assert_eq!(
        (status, second["entries"].as_array().unwrap().len()),
        (200, 2)
    );
    let (_, views) = t
        .get("/api/v1/orgs/ent/audit-log?action=audit_log.viewed", &admin)
        .await;
    assert_eq!(views["total"], 1, "the walk's first page, once: {views}");
}

/// Cursors are tagged under a key derived from the signing key, which every node of a cluster
/// shares (`signing.key_file`, or the cluster's key cached in each data dir): a cursor one node
/// issued continues on another; under another signing key it is a 400 naming `cursor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_one_node_issued_continues_on_a_node_with_the_same_signing_key() {
    let now = Utc::now();
    let records: Vec<AuditRecord> = (0..5)
        .map(|i| record("ent", &format!("s-{i}"), now - Duration::minutes(i)))
        .collect();
    let mut a = TestApp::new(config());
    let mut same = config();
    same.signing.key_file = Some(a.dir.path().join(crate::tree::key::KEY_FILE));
    let mut b = TestApp::new(same);
    let mut c = TestApp::new(config());
    let base = "/api/v1/orgs/ent/audit-log?category=scan&limit=2";
    let mut keys = Vec::new();
    for t in [&mut a, &mut b, &mut c] {
        t.ingest(records.clone()).await;
        keys.push(t.key("ent", Role::OrgAdmin));
    }
    let (status, first) = a.get(base, &keys[0]).await;
    assert_eq!(status, 200, "{first}");
    let next = format!("{base}&cursor={}", first["next_cursor"].as_str().unwrap());
    let (status, on_a) = a.get(&next, &keys[0]).await;
    assert_eq!(status, 200, "{on_a}");
    let (status, on_b) = b.get(&next, &keys[1]).await;
    assert_eq!(status, 200, "{on_b}");
    let ids = |page: &Value| -> Vec<Value> {
        let entries = page["entries"].as_array().unwrap();
        entries.iter().map(|e| e["id"].clone()).collect()
    };
    assert_eq!(ids(&on_b), ids(&on_a));
    assert_eq!(ids(&on_a), [json!("s-2"), json!("s-3")]);
    let (status, on_c) = c.get(&next, &keys[2]).await;
    assert_eq!(
        (status, &on_c["error"]["field"]),
        (400, &json!("cursor")),
        "{on_c}"
    );
}

/// `codestax import` brings a source's `audit_log.viewed` entries in as `imported` records, and
/// an INGEST key chooses their actor. `group_views=true` groups a viewer's consecutive views of
/// one writer: an import naming a real reader's key stays its own row beside that reader's run
/// of the collector's entries, which counts only the reads the collector served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_view_never_joins_a_real_readers_run_of_collector_views() {
    let mut t = TestApp::new(config());
    let (admin_info, admin) = t.state.keys.create("ent", Role::OrgAdmin, None).unwrap();
    let admin = admin.expose().to_string();
    let ingest = t.key("ent", Role::Ingest);
    // Two real reads: two collector entries by the admin key.
    for _ in 0..2 {
        assert_eq!(t.get("/api/v1/orgs/ent/audit-log", &admin).await.0, 200);
    }
    let fake = json!({
        "id": "imported-view-1",
        "time": codestax_common::time::format_rfc3339(&truncate_to_micros(Utc::now())),
        "actor": {"id": admin_info.id, "kind": "api_key"},
        "action": "audit_log.viewed",
        "target": {"kind": "organization", "id": "ent"},
        "metadata": {"filters": {}, "role": "ORG_ADMIN", "total": 0}
    });
    let (status, answer) = t
        .call(Method::POST, "/api/v1/import", &ingest, &fake.to_string())
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let (status, page) = t
        .get(
            "/api/v1/orgs/ent/audit-log?action=audit_log.viewed&group_views=true",
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let writers: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["provenance"]["writer"])
        .collect();
    assert_eq!(writers, ["imported", "collector", "collector"], "{page}");
    let run = &page["rows"][1]["views"];
    assert_eq!(
        page["rows"],
        json!([{"entry": 0}, {"views": {
            "actor_id": admin_info.id, "provenance": {"writer": "collector"}, "count": 2,
            "newest": run["newest"], "oldest": run["oldest"], "members": [1, 2]}}]),
        "{page}"
    );
}

/// A key event past its org's retention is not written again at start: its record was deleted
/// (or would be at once), and writing it would only make the janitor delete it once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_events_past_the_window_are_not_written_again() {
    let mut t = TestApp::new(config());
    let (old, _) = t.state.keys.create("team", Role::Ingest, None).unwrap();
    let (new, _) = t.state.keys.create("team", Role::Ingest, None).unwrap();
    // The first key was made ten days ago (the team org keeps 3): as the key file says.
    let path = t.dir.path().join("keys.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let long_ago = codestax_common::time::format_rfc3339(&(Utc::now() - Duration::days(10)));
    for key in file["keys"].as_array_mut().unwrap() {
        if key["id"] == old.id.as_str() {
            key["created_at"] = json!(long_ago);
        }
    }
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    assert!(t.state.keys.reload_if_changed().unwrap());
    let stored_before = t.state.ingest.store().stats().next_lsn;

    crate::api::record_key_events(&t.state.keys, &t.state.ingest, &t.state.index).await;
    t.index_pending();
    let record_of = |key_id: &str| {
        let event = t
            .state
            .keys
            .events()
            .into_iter()
            .find(|e| e.key_id == key_id)
            .unwrap();
        t.state.index.get("team", &event.record_id()).unwrap()
    };
    assert!(
        record_of(&old.id).is_none(),
        "the expired key event was written again"
    );
    assert!(record_of(&new.id).is_some(), "the new key's event is kept");
    assert_eq!(
        t.state.ingest.store().stats().next_lsn,
        stored_before + 1,
        "only the new key's event is stored"
    );
}

/// Records stored before provenance existed (as the store takes them, with none) keep none: the
/// API shows no writer for them, never either writer. A key event recorded then under its legacy
/// id by that unknown writer is not written again; one whose legacy id an ingest key took is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_before_provenance_name_no_writer() {
    let mut t = TestApp::new(config());
    let owner = t.key("ent", Role::OrgOwner);
    let (recorded, _) = t.state.keys.create("ent", Role::Ingest, None).unwrap();
    let (taken, _) = t.state.keys.create("ent", Role::Ingest, None).unwrap();
    let events = t.state.keys.events();
    let legacy = |key_id: &str| {
        let event = events.iter().find(|e| e.key_id == key_id).unwrap();
        let mut r = event.to_audit_record();
        r.id = Some(event.legacy_record_id());
        r
    };
    let mut legacy_app = legacy(&taken.id);
    legacy_app.provenance = Some(codestax_common::Provenance::Ingest {
        key_id: taken.id.clone(),
    });
    let mut old = vec![
        record("ent", "old-1", Utc::now()),
        legacy(&recorded.id),
        legacy_app,
    ];
    for r in &mut old {
        r.received_at = Some(truncate_to_micros(Utc::now()));
    }
    t.store.submit(old).await.unwrap();
    t.index_pending();

    let (status, old) = t.get("/api/v1/orgs/ent/audit-log/old-1", &owner).await;
    assert_eq!(status, 200);
    assert!(old.get("provenance").is_none(), "{old}");

    crate::api::record_key_events(&t.state.keys, &t.state.ingest, &t.state.index).await;
    t.index_pending();
    let (status, _) = t
        .get(
            &format!(
                "/api/v1/orgs/ent/audit-log/codestax:apikey-created-{}",
                recorded.id
            ),
            &owner,
        )
        .await;
    assert_eq!(status, 404, "recorded before provenance: not written again");
    let (status, entry) = t
        .get(
            &format!(
                "/api/v1/orgs/ent/audit-log/codestax:apikey-created-{}",
                taken.id
            ),
            &owner,
        )
        .await;
    assert_eq!(
        status, 200,
        "an app's record under the legacy id hides nothing"
    );
    assert_eq!(entry["provenance"], json!({"writer": "collector"}));
}

/// Sends `request` through the router; returns the status, headers and body.
async fn send(
    state: &AppState,
    request: Request<Body>,
) -> (u16, axum::http::HeaderMap, axum::body::Bytes) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

/// The JSON error shape, with `code`; panics with the raw answer otherwise.
fn error_of(status: u16, headers: &axum::http::HeaderMap, bytes: &[u8]) -> Value {
    let raw = String::from_utf8_lossy(bytes);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{status}: {raw}"
    );
    let body: Value = serde_json::from_slice(bytes).unwrap();
    assert!(body["error"]["code"].is_string(), "{status}: {raw}");
    assert!(body["error"]["message"].is_string(), "{status}: {raw}");
    body
}

fn get_request(path: &str, token: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_and_extractor_errors_are_the_json_shape() {
    let t = TestApp::new(config());
    let owner = t.key("ent", Role::OrgOwner);
    for path in [
        "/api/v1/orgs/%FF/keys",
        "/api/v1/orgs/ent/audit-log/%FF%FE",
        "/api/v1/orgs/ent/keys/%C3%28",
    ] {
        let method = if path.contains("/keys/") {
            Method::DELETE
        } else {
            Method::GET
        };
        let mut request = get_request(path, &owner);
        *request.method_mut() = method;
        let (status, headers, bytes) = send(&t.state, request).await;
        assert_eq!(status, 400, "{path}");
        let body = error_of(status, &headers, &bytes);
        assert_eq!(body["error"]["code"], "malformed_request", "{path}");
    }
    // Oversized targets and headers, under hyper's own limits.
    let long = format!("/api/v1/orgs/ent/audit-log?q={}", "a".repeat(MAX_URI_BYTES));
    let (status, headers, bytes) = send(&t.state, get_request(&long, &owner)).await;
    assert_eq!(status, 414);
    assert_eq!(
        error_of(status, &headers, &bytes)["error"]["code"],
        "uri_too_long"
    );
    let mut request = get_request("/api/v1/whoami", &owner);
    for i in 0..40 {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap(),
            "p".repeat(1000).parse().unwrap(),
        );
    }
    let (status, headers, bytes) = send(&t.state, request).await;
    assert_eq!(status, 431);
    assert_eq!(
        error_of(status, &headers, &bytes)["error"]["code"],
        "headers_too_large"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_carries_a_bearer_challenge() {
    let t = TestApp::new(config());
    let request = Request::builder()
        .uri("/api/v1/whoami")
        .body(Body::empty())
        .unwrap();
    let (status, headers, bytes) = send(&t.state, request).await;
    assert_eq!(status, 401);
    error_of(status, &headers, &bytes);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"codestax-audit\""
    );
    let (status, headers, _) = send(&t.state, get_request("/api/v1/whoami", "nope")).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"codestax-audit\", error=\"invalid_token\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_refuse_duplicate_keys_naming_them() {
    let mut t = TestApp::new(config());
    let owner = t.key("ent", Role::OrgOwner);
    let (status, body) = t.put(PATH, &owner, r#"{"days":400,"days":1}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "days", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate key"),
        "{body}"
    );
    let (_, body) = t.get(PATH, &owner).await;
    assert_eq!(body["days"], 10, "nothing changed");

    let keys = "/api/v1/orgs/ent/keys";
    for (json, field) in [
        (r#"{"role":"INGEST","role":"ORG_OWNER"}"#, "role"),
        (r#"{"role":"INGEST","name":"a","name":"b"}"#, "name"),
        (r#"{"role":"INGEST","x":{"a":1,"a":2}}"#, "x.a"),
    ] {
        let (status, body) = t.call(Method::POST, keys, &owner, json).await;
        assert_eq!(status, 400, "{json}: {body}");
        assert_eq!(body["error"]["field"], field, "{json}: {body}");
    }
    // A bidirectional override would make the name show as another.
    let spoof = r#"{"role":"INGEST","name":"ci-\u202Eyek-nimda"}"#;
    let (status, body) = t.call(Method::POST, keys, &owner, spoof).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (400, &json!("name")),
        "{body}"
    );
    assert_eq!(
        t.state.keys.list(Some("ent")).len(),
        1,
        "no key was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_creation_has_a_body_limit_and_a_name_limit() {
    let mut t = TestApp::new(config());
    let owner = t.key("ent", Role::OrgOwner);
    let keys = "/api/v1/orgs/ent/keys";
    let huge = format!(r#"{{"role":"INGEST","name":"{}"}}"#, "n".repeat(1 << 20));
    let (status, body) = t.call(Method::POST, keys, &owner, &huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let long = format!(r#"{{"role":"INGEST","name":"{}"}}"#, "n".repeat(10_000));
    let (status, body) = t.call(Method::POST, keys, &owner, &long).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "name");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.len() < 200, "the name is not echoed: {message}");
    assert_eq!(
        t.state.keys.list(Some("ent")).len(),
        1,
        "no key was created"
    );

    let (status, body) = t
        .call(
            Method::POST,
            keys,
            &owner,
            r#"{"role":"INGEST","name":"ci"}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_errors_are_a_google_rpc_status() {
    let t = TestApp::new(config());
    let ingest = t.key("ent", Role::Ingest);
    let post = |token: Option<&str>, content_type: &str, body: &'static [u8]| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/v1/logs")
            .header("content-type", content_type);
        if let Some(token) = token {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        b.body(Body::from(body)).unwrap()
    };
    // Protobuf requests get a protobuf Status, from the handler and from the key layer alike.
    for (request, status, code) in [
        (
            post(Some(&ingest), "application/x-protobuf", b"\xff\xff\xff\x01"),
            400,
            3,
        ),
        (post(None, "application/x-protobuf", b""), 401, 16),
    ] {
        let (got, headers, bytes) = send(&t.state, request).await;
        assert_eq!(got, status);
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let decoded = <tonic_types::Status as prost::Message>::decode(bytes).unwrap();
        assert_eq!(decoded.code, code);
        assert!(!decoded.message.is_empty());
    }
    // JSON requests get the Status in OTLP's JSON encoding.
    let (got, headers, bytes) = send(
        &t.state,
        post(Some(&ingest), "application/json", b"{\"resourceLogs\": 5}"),
    )
    .await;
    assert_eq!(got, 400);
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["code"], 3, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("malformed OTLP JSON")
    );
}

/// Every org route goes through `OrgAccess`: another org's key and an unknown org get 404
/// whatever the role, a key of the org without the route's role 403, both in the JSON error
/// shape, before anything of the request is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_routes_answer_404_for_other_orgs_then_403_without_the_role() {
    let mut t = TestApp::new(config());
    let owner = t.key("ent", Role::OrgOwner);
    let admin = t.key("ent", Role::OrgAdmin);
    let member = t.key("ent", Role::Member);
    let ingest = t.key("ent", Role::Ingest);
    let other = t.key("team", Role::OrgOwner);
    let readers: &[&str] = &[&owner, &admin];
    let owners: &[&str] = &[&owner];
    let routes: &[(Method, &str, &str, &[&str])] = &[
        (Method::GET, "audit-log", "", readers),
        (Method::GET, "audit-log/facets", "", readers),
        (Method::GET, "audit-log/export", "", readers),
        (Method::GET, "audit-log/verify", "", readers),
        (Method::GET, "audit-log/checkpoint", "", readers),
        (Method::GET, "audit-log/some-id", "", readers),
        (Method::GET, "settings/retention", "", readers),
        (Method::PUT, "settings/retention", r#"{"days": 30}"#, owners),
        (Method::GET, "keys", "", owners),
        (Method::POST, "keys", r#"{"role": "MEMBER"}"#, owners),
        (Method::DELETE, "keys/key_0000000000000000", "", owners),
    ];
    for (method, route, body, allowed) in routes {
        let path = format!("/api/v1/orgs/ent/{route}");
        let (status, error) = t.call(method.clone(), &path, &other, body).await;
        assert_eq!(
            (status, &error["error"]["code"]),
            (404, &json!("not_found")),
            "{method} {path}"
        );
        let unknown = format!("/api/v1/orgs/nosuch/{route}");
        let (status, _) = t.call(method.clone(), &unknown, &owner, body).await;
        assert_eq!(status, 404, "{method} {unknown}");
        for key in [&owner, &admin, &member, &ingest] {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let (status, error) = t.call(method.clone(), &path, key, body).await;
            assert_eq!(
                (status, &error["error"]["code"]),
                (403, &json!("forbidden")),
                "{method} {path}"
            );
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.contains("; this key is "), "{message}");
        }
        // The allowed key passes the check (the record and key named do not exist: 404).
        let (status, answer) = t.call(method.clone(), &path, allowed[0], body).await;
        let missing = route.ends_with("some-id") || route.starts_with("keys/");
        assert!(
            status < 400 || (missing && status == 404),
            "{method} {path}: {status} {answer}"
        );
    }
}

/// OTLP/HTTP authenticates in the shared receiver, as OTLP/gRPC does: 401 with the bearer
/// challenge, 403 for a key that may not ingest, 415 for an unknown Content-Encoding, each a
/// `google.rpc.Status`; 503 until the WAL is replayed.
/// Every receiver refuses a record already past its org's window (OTLP here; NDJSON and import
/// in the end-to-end tests), naming it; the rest of the request goes in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_refuses_records_past_the_window_as_expired_on_arrival() {
    let mut t = TestApp::new(config());
    let ingest = t.key("team", Role::Ingest);
    let log = |age: chrono::Duration, id: &str| {
        let nanos = (Utc::now() - age).timestamp_nanos_opt().unwrap();
        let attribute =
            |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
        json!({
            "timeUnixNano": nanos.to_string(),
            "attributes": [
                attribute("audit.action", "auth.login"),
                attribute("audit.id", id),
                attribute("enduser.id", "u"),
                attribute("audit.actor.email", "u@x.example"),
            ],
        })
    };
    // The team org keeps the default 3 days.
    let request = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        log(chrono::Duration::days(3) + chrono::Duration::minutes(5), "old"),
        log(chrono::Duration::days(3) - chrono::Duration::minutes(5), "inside"),
    ]}]}]});
    let post = Request::builder()
        .method(Method::POST)
        .uri("/v1/logs")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ingest}"))
        .body(Body::from(serde_json::to_vec(&request).unwrap()))
        .unwrap();
    let (status, _, bytes) = send(&t.state, post).await;
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["partialSuccess"]["rejectedLogRecords"], 1,
        "{answer}"
    );
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("record 1: time: expired on arrival: "),
        "{message}"
    );
    t.index_pending();
    let admin = t.key("team", Role::OrgAdmin);
    let (status, entry) = t.get("/api/v1/orgs/team/audit-log/inside", &admin).await;
    assert_eq!(status, 200, "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_authorizes_in_the_receiver() {
    let t = TestApp::new(config());
    let ingest = t.key("ent", Role::Ingest);
    let owner = t.key("ent", Role::OrgOwner);
    let post = |token: &str, encoding: Option<&str>| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/v1/logs")
            .header("content-type", "application/json");
        if !token.is_empty() {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        if let Some(encoding) = encoding {
            b = b.header("content-encoding", encoding);
        }
        b.body(Body::from("{}")).unwrap()
    };
    let status_of = |bytes: &[u8]| -> (i64, String) {
        let body: Value = serde_json::from_slice(bytes).unwrap();
        (
            body["code"].as_i64().unwrap(),
            body["message"].as_str().unwrap().to_string(),
        )
    };
    let (status, headers, bytes) = send(&t.state, post("", None)).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"codestax-audit\""
    );
    assert_eq!(status_of(&bytes).0, 16);
    let (status, headers, bytes) = send(&t.state, post("nope", None)).await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(status_of(&bytes).0, 16);
    let (status, _, bytes) = send(&t.state, post(&owner, None)).await;
    assert_eq!(status, 403);
    assert_eq!(
        status_of(&bytes),
        (
            7,
            "ingest needs an INGEST key; this key is ORG_OWNER".to_string()
        )
    );
    let (status, _, bytes) = send(&t.state, post(&ingest, Some("br"))).await;
    assert_eq!(status, 415);
    assert_eq!(status_of(&bytes).0, 3);
    let (status, _, _) = send(&t.state, post(&ingest, None)).await;
    assert_eq!(status, 200, "an empty request is taken");

    let starting = AppState {
        health: Health::default(),
        ..t.state.clone()
    };
    let (status, headers, bytes) = send(&starting, post(&ingest, None)).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(status_of(&bytes).0, 14);
}

/// While the index cannot write: ingest (NDJSON and OTLP/HTTP) answers 503 with the failure's
/// code, message and `Retry-After`, `/readyz` answers 503 saying why, reads are served (their
/// own records go to the WAL); after recovery all is 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_index_cannot_write_ingest_and_readyz_say_why_and_reads_go_on() {
    use crate::health::{Failure, Part};
    let mut t = TestApp::new(config());
    let ingest = t.key("ent", Role::Ingest);
    let admin = t.key("ent", Role::OrgAdmin);
    t.ingest(vec![record("ent", "before", Utc::now())]).await;
    let ndjson = |token: &str| {
        let line = json!({
            "id": "during", "org_id": "ent", "time": Utc::now(), "action": "auth.login",
            "actor": {"id": "u1", "email": "ada@example.com"}
        });
        Request::builder()
            .method(Method::POST)
            .uri("/api/v1/ingest")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(format!("{line}\n")))
            .unwrap()
    };
    let enospc = std::io::Error::from_raw_os_error(28);
    t.state.health.fail(Failure::io(Part::Index, &enospc));

    let (status, headers, bytes) = send(&t.state, ndjson(&ingest)).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "5");
    let error = error_of(status, &headers, &bytes);
    assert_eq!(error["error"]["code"], "index_full");
    let message = error["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "the index cannot be written: {enospc}; nothing of this batch was stored, retry later"
        )
    );
    let otlp = Request::builder()
        .method(Method::POST)
        .uri("/v1/logs")
        .header("authorization", format!("Bearer {ingest}"))
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, headers, bytes) = send(&t.state, otlp).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(headers["retry-after"], "5");
    let rpc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(rpc["code"], 8, "RESOURCE_EXHAUSTED: {rpc}");
    assert!(
        rpc["message"]
            .as_str()
            .unwrap()
            .contains("the index cannot be written")
    );

    let readyz = Request::builder()
        .uri("/readyz")
        .body(Body::empty())
        .unwrap();
    let (status, headers, bytes) = send(&t.state, readyz).await;
    assert_eq!(status, 503);
    let error = error_of(status, &headers, &bytes);
    assert_eq!(error["error"]["code"], "index_full");
    assert_eq!(
        error["error"]["message"],
        format!("the index cannot be written: {enospc}")
    );

    // Reads are served, and recorded (into the WAL: the collector's own records are taken).
    let (status, page) = t.get("/api/v1/orgs/ent/audit-log", &admin).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 1);

    t.state.health.recover(Part::Index);
    let (status, _, bytes) = send(&t.state, ndjson(&ingest)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let readyz = Request::builder()
        .uri("/readyz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&t.state, readyz).await.0, 200);
}

/// Property test of the whole router: generated requests never answer 5xx.
mod props;
mod saved_views;

/// Hex hashes of a proof answer.
fn hashes(v: &Value) -> Vec<codestax_common::merkle::Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

/// `org`'s stored records in `seq` order, read straight from the index (no read recorded).
fn chained(t: &TestApp, org: &str) -> Vec<AuditRecord> {
    let mut records = t
        .state
        .index
        .search(org, &crate::index::SearchQuery::default(), 1000, None)
        .unwrap()
        .entries;
    records.sort_by_key(|r| r.seq);
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_proofs_verify_with_the_public_key_and_stay_in_their_org() {
    use codestax_common::chain::leaf_of_sealed;
    use codestax_common::merkle::{self, Hash, Leaves};
    use codestax_common::note::{Checkpoint, VerifierKey, open};
    let mut t = TestApp::new(config());
    let admin = t.key("ent", Role::OrgAdmin);
    let other = t.key("team", Role::OrgOwner);
    let now = Utc::now();
    t.ingest(
        (0..5)
            .map(|i| record("ent", &format!("e{i}"), now))
            .collect(),
    )
    .await;
    t.ingest(
        (0..2)
            .map(|i| record("team", &format!("t{i}"), now))
            .collect(),
    )
    .await;

    // The public key needs no API key.
    let request = Request::builder()
        .uri("/api/v1/signing-key")
        .body(Body::empty())
        .unwrap();
    let (status, _, bytes) = send(&t.state, request).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let vkey = VerifierKey::parse(body["verifier_key"].as_str().unwrap()).unwrap();
    assert_eq!(body["name"], "codestax-collector");

    // The org's head: signed by that key, over exactly its records.
    let (status, head) = t.get("/api/v1/orgs/ent/audit-log/checkpoint", &admin).await;
    assert_eq!(status, 200, "{head}");
    let note = head["checkpoint"].as_str().unwrap();
    let cp = Checkpoint::parse(open(note, &vkey).unwrap()).unwrap();
    let records = chained(&t, "ent");
    let leaves: Vec<Hash> = records.iter().map(|r| leaf_of_sealed(r).unwrap()).collect();
    assert_eq!(cp.size, leaves.len() as u64);
    assert_eq!(cp.origin, "codestax-collector/orgs/ent");
    assert_eq!(
        cp.root,
        merkle::root(&mut Leaves(&leaves), cp.size).unwrap()
    );
    assert_eq!(head["root_hash"], hex::encode(cp.root));
    // A changed byte, or another key: refused.
    assert!(open(&note.replacen("ent", "enu", 1), &vkey).is_err());
    let stranger = codestax_common::note::NoteSigner::new("codestax-collector", [1; 32]).unwrap();
    assert!(open(note, &stranger.verifier()).is_err());
    // Asked again with nothing new: the same head.
    let (_, again) = t.get("/api/v1/orgs/ent/audit-log/checkpoint", &admin).await;
    assert_eq!(again, head);

    // Another org's key: 404; no key: 401.
    let (status, _) = t.get("/api/v1/orgs/ent/audit-log/checkpoint", &other).await;
    assert_eq!(status, 404);
    let request = Request::builder()
        .uri("/api/v1/orgs/ent/audit-log/checkpoint")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&t.state, request).await.0, 401);
    let (status, team) = t
        .get("/api/v1/orgs/team/audit-log/checkpoint", &other)
        .await;
    assert_eq!(status, 200);
    assert_eq!(team["tree_size"], 2);

    // Inclusion of each record against the signed root.
    for (i, leaf) in leaves.iter().enumerate() {
        let seq = i + 1;
        let (status, p) = t
            .get(
                &format!("/api/v1/orgs/ent/audit-log/proof/inclusion?seq={seq}"),
                &admin,
            )
            .await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["leaf_hash"], hex::encode(leaf));
        assert_eq!(p["signed_head"]["checkpoint"], head["checkpoint"]);
        let proof = hashes(&p["proof"]);
        merkle::verify_inclusion(leaf, i as u64, cp.size, &proof, &cp.root).unwrap();
    }
    // Consistency from every earlier size.
    for from in 1..=cp.size {
        let (status, p) = t
            .get(
                &format!("/api/v1/orgs/ent/audit-log/proof/consistency?from={from}"),
                &admin,
            )
            .await;
        assert_eq!(status, 200, "{p}");
        let proof = hashes(&p["proof"]);
        let old = merkle::root(&mut Leaves(&leaves), from).unwrap();
        assert_eq!(p["from_root"], hex::encode(old));
        merkle::verify_consistency(from, cp.size, &old, &cp.root, &proof).unwrap();
    }
    // Bad parameters are named.
    for (query, field) in [
        ("proof/inclusion?seq=0", "seq"),
        ("proof/inclusion", "seq"),
        ("proof/inclusion?seq=2&tree_size=999", "tree_size"),
        ("proof/inclusion?seq=x", "seq"),
        ("proof/inclusion?seq=1&size=1", "size"),
        ("proof/consistency?from=9", "from"),
        ("proof/consistency?from=1&to=999", "to"),
        ("checkpoint?x=1", "x"),
    ] {
        let (status, e) = t
            .get(&format!("/api/v1/orgs/ent/audit-log/{query}"), &admin)
            .await;
        assert_eq!(
            (status, &e["error"]["field"]),
            (400, &json!(field)),
            "{query}: {e}"
        );
    }
    // The verify route reports the current signed head.
    let (status, v) = t.get("/api/v1/orgs/ent/audit-log/verify", &admin).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true);
    let vh = &v["signed_head"];
    let cp2 = Checkpoint::parse(open(vh["checkpoint"].as_str().unwrap(), &vkey).unwrap()).unwrap();
    assert!(cp2.size >= cp.size, "{v}");
}
