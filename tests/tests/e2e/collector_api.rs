//! The collector binary end to end: receivers, durability across kill -9, dedupe, filters and
//! facets against brute force, cursor walks under ingest, roles and tenancy, bad input.

use chrono::{Duration, SecondsFormat, Utc};
use codestax_tests::{Collector, record};
use rand::RngExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

fn ago(minutes: i64) -> String {
    (Utc::now() - Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn start() -> (tempfile::TempDir, Collector) {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), "");
    (dir, c)
}

const ACTIONS: &[&str] = &[
    "auth.login",
    "auth.logout",
    "repository.connected",
    "scan.triggered",
    "scan.failed",
    "finding.triaged",
    "team.role_changed",
    "settings.policy_changed",
    "integration.jira_linked",
];
const USERS: &[&str] = &["ada@acme.example", "bob@acme.example", "cy@acme.example"];
const REPOS: &[&str] = &["acme/api", "acme/web", "acme/infra"];

/// A varied corpus of `n` records of `org` over the last 20 days.
fn corpus(org: &str, n: usize, seed: u64) -> Vec<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let action = ACTIONS[rng.random_range(0..ACTIONS.len())];
            let user = USERS[rng.random_range(0..USERS.len())];
            let repo = REPOS[rng.random_range(0..REPOS.len())];
            let mut r = record(
                org,
                &format!("{org}-{seed}-{i}"),
                action,
                user,
                &ago(rng.random_range(60..20 * 24 * 60)),
            );
            r["repository"] = json!(repo);
            r["target"]["name"] = json!(repo);
            r["outcome"] = json!(if rng.random_bool(0.2) {
                "failure"
            } else {
                "success"
            });
            r["message"] = json!(format!("event number {i} token{}", i % 7));
            r["metadata"]["ticket"] = json!(format!("SEC-{}", i % 13));
            r
        })
        .collect()
}

use rand::SeedableRng;

#[test]
fn ndjson_ingest_search_get_and_dedupe_across_restart() {
    let (_dir, mut c) = start();
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let records: Vec<Value> = (0..20)
        .map(|i| {
            record(
                "acme",
                &format!("e{i}"),
                "scan.triggered",
                "ada@acme.example",
                &ago(i),
            )
        })
        .collect();
    let (status, body) = c.ingest(&ingest, &records);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 20);
    assert_eq!(body["duplicates"], 0);

    // The same batch again, and a batch with one id twice: acknowledged, never stored twice.
    let (_, body) = c.ingest(&ingest, &records);
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(20), Some(20))
    );
    // The same record twice (one time: `ago` reads the clock, and another time is other
    // content, refused under a stored id; provenance.rs).
    let x1 = record("acme", "x1", "auth.login", "bob@acme.example", &ago(1));
    let twice = vec![x1.clone(), x1];
    let (_, body) = c.ingest(&ingest, &twice);
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(2), Some(1))
    );

    c.wait_for_total("acme", "action=scan.triggered", &admin, 20);
    let page = c.get_json(
        "/api/v1/orgs/acme/audit-log?action=scan.triggered&limit=5",
        &admin,
    );
    assert_eq!(page["total"], 20);
    assert_eq!(
        ids(page["entries"].as_array().unwrap()),
        ["e0", "e1", "e2", "e3", "e4"],
        "newest first"
    );
    assert!(
        page["entries"][0]["received_at"].is_string(),
        "the collector stamps received_at"
    );
    let one = c.get_json("/api/v1/orgs/acme/audit-log/e3", &admin);
    assert_eq!(one["id"], "e3");
    assert_eq!(
        c.get("/api/v1/orgs/acme/audit-log/nope", &admin).status(),
        404
    );

    assert!(c.stop(), "SIGTERM exits 0");
    c.restart();
    let (_, body) = c.ingest(&ingest, &records);
    assert_eq!(body["duplicates"], 20, "dedupe survives a restart: {body}");
    c.wait_for_total("acme", "category=scan", &admin, 20);
    let all = c.search_all("acme", "category=scan", &admin);
    assert_eq!(all.len(), 20);
    let x1 = c.search_all("acme", "action=auth.login", &admin);
    assert_eq!(ids(&x1), ["x1"]);
}

#[test]
fn reads_are_recorded_once_per_result_set() {
    let (_dir, c) = start();
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let records: Vec<Value> = (0..30)
        .map(|i| {
            record(
                "acme",
                &format!("r{i}"),
                "auth.login",
                "ada@acme.example",
                &ago(10 + i),
            )
        })
        .collect();
    c.ingest(&ingest, &records);
    c.wait_for_total("acme", "action=auth.login", &admin, 30);
    let all = c.search_all("acme", "action=auth.login&user=ada%40acme.example", &admin);
    assert_eq!(all.len(), 30);
    c.wait_for_total("acme", "action=audit_log.viewed", &admin, 1);
    let views = c.get_json(
        "/api/v1/orgs/acme/audit-log?action=audit_log.viewed",
        &admin,
    );
    // search_all made one result set (several pages would still be one); the query above is the second.
    assert_eq!(views["total"], 1, "{views}");
    let view = &views["entries"][0];
    assert_eq!(view["actor"]["kind"], "api_key");
    assert_eq!(
        view["metadata"]["filters"]["user"],
        json!(["ada@acme.example"])
    );
    // Key creation is in the org's log too.
    let created = c.get_json(
        "/api/v1/orgs/acme/audit-log?action=auth.api_key_created",
        &admin,
    );
    assert_eq!(created["total"], 2, "{created}");
}

#[test]
fn roles_and_tenancy() {
    let (_dir, c) = start();
    let owner = c.create_key("acme", "ORG_OWNER");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let member = c.create_key("acme", "MEMBER");
    let ingest = c.create_key("acme", "INGEST");
    let other = c.create_key("globex", "ORG_OWNER");
    let path = "/api/v1/orgs/acme/audit-log";
    assert_eq!(c.get(path, &owner).status(), 200);
    assert_eq!(c.get(path, &admin).status(), 200);
    for (key, want) in [(&member, 403), (&ingest, 403), (&other, 404)] {
        let r = c.get(path, key);
        assert_eq!(r.status(), want);
        let body: Value = r.json().unwrap();
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{body}"
        );
    }
    assert_eq!(
        c.get("/api/v1/orgs/nosuch/audit-log", &owner).status(),
        404,
        "unknown org"
    );
    assert_eq!(
        c.get("/api/v1/orgs/globex/audit-log/anything", &owner)
            .status(),
        404
    );
    assert_eq!(c.get(path, "csk_not_a_key").status(), 401);
    let r = reqwest::blocking::get(c.url(path)).unwrap();
    assert_eq!(r.status(), 401);
    // An ingest key of acme cannot write into globex, and only INGEST keys ingest.
    let (status, body) = c.ingest(
        &ingest,
        &[record(
            "globex",
            "g1",
            "auth.login",
            "a@globex.example",
            &ago(1),
        )],
    );
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["errors"][0]["field"], "org_id", "{body}");
    let (status, _) = c.ingest(
        &admin,
        &[record(
            "acme",
            "a1",
            "auth.login",
            "a@acme.example",
            &ago(1),
        )],
    );
    assert_eq!(status, 403);
}

#[test]
fn filters_and_q_match_brute_force() {
    let (_dir, c) = start();
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let other_ingest = c.create_key("globex", "INGEST");
    let data = corpus("acme", 600, 7);
    for chunk in data.chunks(200) {
        assert_eq!(c.ingest(&ingest, chunk).0, 200);
    }
    // Another org's records that match every filter must never show up.
    let mut noise = corpus("globex", 100, 7);
    for r in &mut noise {
        r["actor"]["email"] = json!("ada@acme.example");
    }
    assert_eq!(c.ingest(&other_ingest, &noise).0, 200);
    c.wait_for_total(
        "acme",
        "user=ada%40acme.example&user=bob%40acme.example&user=cy%40acme.example",
        &admin,
        600,
    );

    let since = Utc::now() - Duration::days(10);
    let until = Utc::now() - Duration::days(3);
    let in_range = move |r: &Value| {
        let t = chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).unwrap();
        t >= since && t < until
    };
    type Pred = Box<dyn Fn(&Value) -> bool>;
    let cases: Vec<(String, Pred)> = vec![
        (
            "user=ada%40acme.example".into(),
            Box::new(|r: &Value| r["actor"]["email"] == "ada@acme.example"),
        ),
        (
            "user=bob%40acme.example&user=cy%40acme.example".into(),
            Box::new(|r: &Value| r["actor"]["email"] != "ada@acme.example"),
        ),
        (
            "action=scan.failed".into(),
            Box::new(|r: &Value| r["action"] == "scan.failed"),
        ),
        (
            "category=triage".into(),
            Box::new(|r: &Value| r["action"] == "finding.triaged"),
        ),
        (
            "category=auth&category=integrations".into(),
            Box::new(|r: &Value| {
                r["action"].as_str().unwrap().starts_with("auth.")
                    || r["action"].as_str().unwrap().starts_with("integration.")
            }),
        ),
        (
            "repository=acme%2Fweb".into(),
            Box::new(|r: &Value| r["repository"] == "acme/web"),
        ),
        (
            "outcome=failure".into(),
            Box::new(|r: &Value| r["outcome"] == "failure"),
        ),
        (
            format!(
                "since={}&until={}",
                since.to_rfc3339_opts(SecondsFormat::Secs, true),
                until.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            Box::new(in_range),
        ),
        (
            format!(
                "category=scan&user=ada%40acme.example&since={}",
                since.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            Box::new(move |r: &Value| {
                r["action"].as_str().unwrap().starts_with("scan.")
                    && r["actor"]["email"] == "ada@acme.example"
                    && chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).unwrap()
                        >= since
            }),
        ),
        (
            "q=token3".into(),
            Box::new(|r: &Value| r["message"].as_str().unwrap().ends_with("token3")),
        ),
        (
            "q=%22event+number+42%22".into(),
            Box::new(|r: &Value| {
                r["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("event number 42 ")
            }),
        ),
        (
            "q=SEC-5".into(),
            Box::new(|r: &Value| r["metadata"]["ticket"] == "SEC-5"),
        ),
        (
            "q=action%3Aauth.login".into(),
            Box::new(|r: &Value| r["action"] == "auth.login"),
        ),
        (
            "q=token3+-action%3Aauth.login".into(),
            Box::new(|r: &Value| {
                r["message"].as_str().unwrap().ends_with("token3") && r["action"] != "auth.login"
            }),
        ),
    ];
    for (query, pred) in &cases {
        let want: BTreeSet<String> = data
            .iter()
            .filter(|r| pred(r))
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        // The product's own records (key creation, reads) are in the log too; compare the corpus.
        let all = c.search_all("acme", query, &admin);
        let (got, own): (Vec<Value>, Vec<Value>) = all
            .into_iter()
            .partition(|r| r["id"].as_str().unwrap().starts_with("acme-7-"));
        assert!(
            own.iter().all(|r| r["actor"]["kind"] != "user"),
            "{query}: only product records besides the corpus"
        );
        let got_ids: BTreeSet<String> = ids(&got).into_iter().collect();
        assert_eq!(got_ids.len(), got.len(), "{query}: no repeats");
        assert_eq!(got_ids, want, "{query}");
        assert!(
            got.iter().all(|r| r["org_id"] == "acme"),
            "{query}: tenancy"
        );
    }
}

#[test]
fn facets_match_brute_force() {
    let (_dir, c) = start();
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let data = corpus("acme", 400, 11);
    assert_eq!(c.ingest(&ingest, &data).0, 200);
    c.wait_for_total("acme", "until=1h", &admin, 400);
    let f = c.get_json("/api/v1/orgs/acme/audit-log/facets?until=1h&top=50", &admin);
    let count = |key: &dyn Fn(&Value) -> String| {
        let mut m = BTreeMap::new();
        for r in &data {
            *m.entry(key(r)).or_insert(0u64) += 1;
        }
        m
    };
    let as_map = |v: &Value| -> BTreeMap<String, u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["value"].as_str().unwrap().to_string(),
                    e["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(f["total"], 400);
    assert_eq!(
        as_map(&f["actions"]),
        count(&|r| r["action"].as_str().unwrap().to_string())
    );
    assert_eq!(
        as_map(&f["categories"]),
        count(&|r| r["action"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_string())
    );
    assert_eq!(
        as_map(&f["users"]),
        count(&|r| r["actor"]["email"].as_str().unwrap().to_string())
    );
    assert_eq!(
        as_map(&f["repositories"]),
        count(&|r| r["repository"].as_str().unwrap().to_string())
    );
    assert_eq!(
        as_map(&f["outcomes"]),
        count(&|r| r["outcome"].as_str().unwrap().to_string())
    );
    let buckets: u64 = f["histogram"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(buckets, 400);
    assert_eq!(f["histogram"]["interval"], "day");
}

#[test]
fn cursor_walk_over_10k_while_ingest_goes_on() {
    let (_dir, c) = start();
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let n = 10_500;
    let base: Vec<Value> = (0..n)
        .map(|i| {
            record(
                "acme",
                &format!("w{i:05}"),
                "scan.completed",
                "ada@acme.example",
                &ago(60 + (i as i64 % 5000)),
            )
        })
        .collect();
    for chunk in base.chunks(1000) {
        assert_eq!(c.ingest(&ingest, chunk).0, 200);
    }
    c.wait_for_total("acme", "action=scan.completed", &admin, n as u64);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut totals = BTreeSet::new();
    let mut extra = 0;
    loop {
        let mut q = "/api/v1/orgs/acme/audit-log?action=scan.completed&limit=997".to_string();
        if let Some(cur) = &cursor {
            q.push_str(&format!("&cursor={cur}"));
        }
        let page = c.get_json(&q, &admin);
        totals.insert(page["total"].as_u64().unwrap());
        seen.extend(ids(page["entries"].as_array().unwrap()));
        // New records keep arriving during the walk, newer and older than the cursor.
        let late: Vec<Value> = (0..50)
            .map(|j| {
                extra += 1;
                record(
                    "acme",
                    &format!("late{extra}-{j}"),
                    "scan.completed",
                    "bob@acme.example",
                    &ago(if j % 2 == 0 { 1 } else { 4000 }),
                )
            })
            .collect();
        assert_eq!(c.ingest(&ingest, &late).0, 200);
        match page["next_cursor"].as_str() {
            Some(cur) => cursor = Some(cur.to_string()),
            None => break,
        }
    }
    assert_eq!(
        totals.len(),
        1,
        "total is stable across the walk: {totals:?}"
    );
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no repeats");
    let want: BTreeSet<String> = base
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        unique, want,
        "no gaps, and the walk is the result set of its first page"
    );
}

#[test]
fn bad_input_is_rejected_clearly_and_the_rest_goes_through() {
    let (_dir, c) = start();
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let good = record("acme", "ok1", "auth.login", "ada@acme.example", &ago(1));
    let mut lines = vec![good.to_string(), "{not json".into()];
    let mut unknown = good.clone();
    unknown["id"] = json!("bad-action");
    unknown["action"] = json!("scan.trigered");
    lines.push(unknown.to_string());
    let mut future = good.clone();
    future["id"] = json!("bad-time");
    future["time"] = json!("2999-01-01T00:00:00Z");
    lines.push(future.to_string());
    let mut old = good.clone();
    old["id"] = json!("old");
    old["time"] = json!("1999-01-01T00:00:00Z");
    lines.push(old.to_string());
    let mut missing = good.clone();
    missing["id"] = json!("no-actor");
    missing.as_object_mut().unwrap().remove("actor");
    lines.push(missing.to_string());
    let mut body = lines.join("\n").into_bytes();
    body.extend_from_slice(b"\n{\"id\": \"bad-utf8\", \"org_id\": \"a\xff\"}\n");
    let r = c.post("/api/v1/ingest", &ingest, "application/x-ndjson", body);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(6)),
        "{body}"
    );
    let reasons = body["errors"].to_string();
    for want in [
        "not valid JSON",
        "did you mean",
        "in the future",
        "before 2000",
        "actor",
        "UTF-8",
    ] {
        assert!(reasons.contains(want), "{want} in {reasons}");
    }

    // Nothing valid: 400 in the error shape, with the per-line details.
    let (status, body) = c.ingest(&ingest, &[unknown.clone()]);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_records");
    assert_eq!(body["error"]["field"], "action");

    // Wrong content type, malformed OTLP, gzip bomb, oversize body.
    assert_eq!(
        c.post("/api/v1/ingest", &ingest, "image/png", b"x".to_vec())
            .status(),
        415
    );
    assert_eq!(
        c.post("/v1/logs", &ingest, "text/plain", b"x".to_vec())
            .status(),
        415
    );
    let r = c.post(
        "/v1/logs",
        &ingest,
        "application/x-protobuf",
        vec![0xff, 0xff, 0xff, 0x01, 0x02],
    );
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("malformed OTLP protobuf"));
    let r = c.post(
        "/v1/logs",
        &ingest,
        "application/json",
        b"{\"resourceLogs\": 5}".to_vec(),
    );
    assert_eq!(r.status(), 400);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'\n'; 200 * 1024 * 1024]).unwrap();
    let bomb = gz.finish().unwrap();
    let r = reqwest::blocking::Client::new()
        .post(c.url("/api/v1/ingest"))
        .bearer_auth(&ingest)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    // The server closes a connection whose body it refused, so this one gets its own client.
    let big = vec![b' '; 17 * 1024 * 1024];
    let r = reqwest::blocking::Client::new()
        .post(c.url("/api/v1/ingest"))
        .bearer_auth(&ingest)
        .header("content-type", "application/x-ndjson")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    // Every bad query parameter names itself; a forged cursor too.
    for (query, field) in [
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("category=weather", "category"),
        ("action=scan.trigered", "action"),
        ("outcome=maybe", "outcome"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=ten", "limit"),
        ("catgory=auth", "catgory"),
        ("cursor=AAAA", "cursor"),
        ("cursor=eyJ2IjoxfQ", "cursor"),
        ("since=2026-11-02&until=2026-11-01", "until"),
    ] {
        let r = c.get(&format!("/api/v1/orgs/acme/audit-log?{query}"), &admin);
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    // Odd full-text input is answered, never a 500.
    for q in ["%28", "AND", "%22unclosed", "%3A", "foo%3Abar", "%E2%9C%93"] {
        let status = c
            .get(&format!("/api/v1/orgs/acme/audit-log?q={q}"), &admin)
            .status()
            .as_u16();
        assert!(status == 200 || status == 400, "q={q}: {status}");
    }
    // Still alive and well.
    assert_eq!(c.get("/healthz", &admin).status(), 200);
    let metrics = c.metrics();
    assert!(
        metrics.contains("codestax_collector_records_rejected_total"),
        "{metrics}"
    );
}

#[test]
fn keys_over_http_for_org_owners_only() {
    let (_dir, c) = start();
    let owner = c.create_key("acme", "ORG_OWNER");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let other = c.create_key("globex", "ORG_OWNER");
    let client = reqwest::blocking::Client::new();
    let post = |token: &str, org: &str, body: &str| {
        client
            .post(c.url(&format!("/api/v1/orgs/{org}/keys")))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    assert_eq!(post(&admin, "acme", r#"{"role":"INGEST"}"#).status(), 403);
    assert_eq!(post(&other, "acme", r#"{"role":"INGEST"}"#).status(), 404);
    let r = post(&owner, "acme", r#"{"role":"NOPE"}"#);
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"]["field"], "role");
    assert_eq!(post(&owner, "acme", "not json").status(), 400);

    let r = post(
        &owner,
        "acme",
        r#"{"role":"INGEST","name":"agent on web-1"}"#,
    );
    assert_eq!(r.status(), 201);
    let created: Value = r.json().unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let key_id = created["key"]["id"].as_str().unwrap().to_string();
    let (status, _) = c.ingest(
        &token,
        &[record(
            "acme",
            "via-api-key",
            "auth.login",
            "ada@acme.example",
            &ago(1),
        )],
    );
    assert_eq!(status, 200, "the new key works at once");

    let listed = c.get_json("/api/v1/orgs/acme/keys", &owner);
    assert!(listed.to_string().contains(&key_id));
    assert!(
        !listed.to_string().contains(&token),
        "tokens are never listed"
    );
    assert_eq!(c.get("/api/v1/orgs/acme/keys", &admin).status(), 403);

    let del = |token: &str, path: &str| {
        client
            .delete(c.url(path))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    assert_eq!(
        del(&other, &format!("/api/v1/orgs/globex/keys/{key_id}")).status(),
        404,
        "not globex's key"
    );
    assert_eq!(
        del(&owner, &format!("/api/v1/orgs/acme/keys/{key_id}")).status(),
        200
    );
    assert_eq!(
        del(&owner, &format!("/api/v1/orgs/acme/keys/{key_id}")).status(),
        409
    );
    let (status, _) = c.ingest(
        &token,
        &[record(
            "acme",
            "after-revoke",
            "auth.login",
            "ada@acme.example",
            &ago(1),
        )],
    );
    assert_eq!(status, 401, "a revoked key authenticates nothing");

    // Both changes are in acme's log, with the owner's key as the actor.
    c.wait_for_total("acme", "action=auth.api_key_revoked", &admin, 1);
    let owner_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "ORG_OWNER")
        .unwrap()["id"]
        .clone();
    let revoked = c.get_json(
        "/api/v1/orgs/acme/audit-log?action=auth.api_key_revoked",
        &admin,
    );
    assert_eq!(revoked["entries"][0]["actor"]["id"], owner_id);
    assert_eq!(revoked["entries"][0]["target"]["id"], json!(key_id));
}

/// Every commit reports how long the oldest record it made searchable had been acknowledged:
/// the server's own view of freshness.
#[test]
fn index_lag_is_measured_from_ack_to_searchable() {
    let (_dir, c) = start();
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let records: Vec<Value> = (0..5)
        .map(|i| {
            record(
                "acme",
                &format!("lag-{i}"),
                "auth.login",
                "ada@acme.example",
                &ago(1),
            )
        })
        .collect();
    let (status, body) = c.ingest(&ingest, &records);
    assert_eq!(status, 200, "{body}");
    c.wait_for_total("acme", "action=auth.login", &admin, 5);

    let metrics = c.metrics();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let count = value("codestax_collector_index_lag_seconds_count");
    let sum = value("codestax_collector_index_lag_seconds_sum");
    assert!(count >= 1.0, "{metrics}");
    assert!(sum > 0.0, "{metrics}");
    // Every lag observed is under 5 s (commits every 200 ms here): the largest bucket bound
    // under 5 s holds them all.
    let (_, under_5s) = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("codestax_collector_index_lag_seconds_bucket{le=\"")?;
            let (le, n) = rest.split_once("\"} ")?;
            Some((le.parse::<f64>().ok()?, n.parse::<f64>().ok()?))
        })
        .filter(|(le, _)| *le < 5.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("lag buckets");
    assert_eq!(under_5s, count, "{metrics}");
}

/// `POST /api/v1/ingest?refresh=wait_for` answers once what it stored is searchable, current
/// week or past weeks alike, even with a commit interval far longer than the request: a search
/// right after the answer finds every record. Any other value is a 400 naming `refresh`.
#[test]
fn ingest_with_refresh_wait_for_answers_once_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = codestax_tests::CollectorOptions::for_tests(&dir.path().join("data"), "");
    options.settings = "[index]\ncommit_interval = \"4s\"\n".into();
    let mut c = Collector::configure(options).unwrap();
    c.launch().unwrap();
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let send = |query: &str, records: &[Value]| {
        let body: Vec<u8> = records
            .iter()
            .flat_map(|r| format!("{r}\n").into_bytes())
            .collect();
        let r = c.post(
            &format!("/api/v1/ingest{query}"),
            &ingest,
            "application/x-ndjson",
            body,
        );
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let mut searchable = 0;
    for (round, minutes_ago) in [(0, 1), (1, 2), (2, 60 * 24 * 20)] {
        // Rounds 0 and 1: this week; round 2: three weeks ago (the past weeks' stage).
        let batch: Vec<Value> = (0..5)
            .map(|i| {
                record(
                    "acme",
                    &format!("r{round}-{i}"),
                    "scan.triggered",
                    "ada@acme.example",
                    &ago(minutes_ago),
                )
            })
            .collect();
        let (status, body) = send("?refresh=wait_for", &batch);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 5, "{body}");
        assert_eq!(body["searchable"], true, "{body}");
        searchable += 5;
        let found = c.total("acme", "action=scan.triggered&since=30d", &admin);
        assert_eq!(
            found, searchable,
            "round {round}: not searchable when answered"
        );
        // Duplicates only: nothing new, answered searchable (the originals are).
        let (_, again) = send("?refresh=wait_for", &batch);
        assert_eq!(
            (again["duplicates"].as_u64(), again["searchable"].as_bool()),
            (Some(5), Some(true))
        );
    }
    // Without it the answer says nothing of search.
    let (_, plain) = send(
        "",
        &[record(
            "acme",
            "plain",
            "auth.login",
            "ada@acme.example",
            &ago(1),
        )],
    );
    assert!(plain.get("searchable").is_none(), "{plain}");
    for bad in [
        "?refresh=true",
        "?refresh=wait_for&refresh=wait_for",
        "?wait=1",
    ] {
        let (status, body) = send(bad, &[]);
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{bad}: {body}");
        assert!(body["error"]["field"].is_string(), "{bad}: {body}");
    }
}
