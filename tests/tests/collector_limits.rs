//! Nothing unauthenticated names an org (`/metrics` has its own listener; per-org series only when
//! the operator opts in).

use chrono::{SecondsFormat, Utc};
use codestax_tests::{Collector, record};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Org ids no other text of a response could contain by chance.
const ORG_A: &str = "zeta-tenant-one";
const ORG_B: &str = "zeta-tenant-two";

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `n` valid records of `org`, ids `{prefix}-0..`.
fn records(org: &str, prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            record(
                org,
                &format!("{prefix}-{i}"),
                "auth.login",
                "ada@example.com",
                &now(),
            )
        })
        .collect()
}

fn anonymous_get(url: &str) -> (u16, String, String) {
    let r = reqwest::blocking::get(url).expect("GET");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, r.text().expect("body"))
}

/// Ingests into both orgs and waits for a janitor run that saw them (its per-org figures are the
/// series that name orgs when `metrics.per_org` is on); returns that scrape.
fn metrics_after_ingest_into_two_orgs(per_org: bool) -> (tempfile::TempDir, Collector, String) {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        &format!("[retention]\njanitor_interval = \"1s\"\n[metrics]\nper_org = {per_org}\n"),
    );
    for org in [ORG_A, ORG_B] {
        let ingest = c.create_key(org, "INGEST");
        let (status, body) = c.ingest(&ingest, &records(org, "m", 3));
        assert_eq!(status, 200, "{body}");
        let admin = c.create_key(org, "ORG_ADMIN");
        c.wait_for_total(org, "action=auth.login", &admin, 3);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = c.metrics();
        let seen = if per_org {
            [ORG_A, ORG_B].iter().all(|org| {
                text.contains(&format!(
                    "codestax_collector_retention_oldest_record_age_seconds{{org=\"{org}\"}} "
                ))
            })
        } else {
            text.contains("\ncodestax_collector_retention_oldest_record_age_seconds ")
        };
        if seen {
            return (dir, c, text);
        }
        assert!(
            Instant::now() < deadline,
            "no janitor run with both orgs within 30 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nothing_unauthenticated_names_an_org_and_metrics_have_their_own_listener() {
    let (_dir, c, text) = metrics_after_ingest_into_two_orgs(false);
    // The metrics listener serves Prometheus text, with no org id in it.
    let (status, content_type, scraped) = anonymous_get(&c.metrics_url("/metrics"));
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(
        scraped.contains("# TYPE codestax_collector_records_accepted counter"),
        "{scraped}"
    );
    for text in [&text, &scraped] {
        assert!(!text.contains("org="), "{text}");
        assert!(!text.contains(ORG_A) && !text.contains(ORG_B), "{text}");
    }
    // Anything else on the metrics listener is a JSON 404.
    let (status, _, body) = anonymous_get(&c.metrics_url("/api/v1/whoami"));
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    // The API port: no /metrics (a JSON 404), and no anonymous answer names an org.
    let (status, _, body) = anonymous_get(&c.url("/metrics"));
    assert_eq!(status, 404, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "not_found", "{json}");
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/",
        "/settings/audit-log",
        "/dashboard/audit-log.js",
        "/api/v1/whoami",
        &format!("/api/v1/orgs/{ORG_A}/audit-log"),
        "/no/such/route",
    ] {
        let (status, _, body) = anonymous_get(&c.url(path));
        assert!(status < 500, "{path}: {status}");
        assert!(
            !body.contains(ORG_B) && !body.replace(&format!("/orgs/{ORG_A}/"), "").contains(ORG_A),
            "{path} names an org: {body}"
        );
    }
}

#[test]
fn per_org_series_name_orgs_only_when_the_operator_opts_in() {
    let (_dir, _c, text) = metrics_after_ingest_into_two_orgs(true);
    for org in [ORG_A, ORG_B] {
        assert!(text.contains(&format!("org=\"{org}\"")), "{text}");
    }
}
