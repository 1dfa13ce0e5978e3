//! Retention over the real collector: a janitor every second deletes what is past each org's
//! window (default, enterprise override) and nothing else, spares an org under legal hold,
//! reports it in /metrics, and a restart's WAL replay brings nothing deleted back.

use chrono::{Duration, SecondsFormat, Utc};
use codestax_tests::{Collector, record};
use serde_json::Value;
use std::time::Instant;

const ORGS: &str = r#"
[retention]
default_days = 3
janitor_interval = "1s"

[[orgs]]
id = "ent"
plan = "enterprise"
retention_days = 5

[[orgs]]
id = "team"
plan = "team"

[[orgs]]
id = "held"
legal_hold = true
"#;

fn ago(d: Duration) -> String {
    (Utc::now() - d).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The value of the sample `name` (with its labels, as exposed), if present.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn metrics(c: &Collector) -> String {
    c.metrics()
}

fn ids(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn janitor_deletes_only_the_expired_and_a_restart_brings_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Per-org series on, to see each org's figures.
    // The records come in while every window is 30 days (ingest refuses a record already past
    // its window); the collector then restarts with the narrow windows of ORGS.
    let wide = ORGS
        .replace("default_days = 3", "default_days = 30")
        .replace("retention_days = 5", "retention_days = 30")
        .replace("janitor_interval = \"1s\"", "janitor_interval = \"1h\"");
    let mut c = Collector::start(&data, &format!("[metrics]\nper_org = true\n{wide}"));
    let mins = Duration::minutes;
    let days = Duration::days;
    let mut admin = std::collections::BTreeMap::new();
    let mut ingest_keys = std::collections::BTreeMap::new();
    for (org, records) in [
        (
            "free",
            vec![
                record(
                    "free",
                    "outside",
                    "auth.login",
                    "a@x.example",
                    &ago(days(3) + mins(10)),
                ),
                record(
                    "free",
                    "inside",
                    "auth.login",
                    "a@x.example",
                    &ago(days(3) - mins(10)),
                ),
                record("free", "recent", "auth.login", "a@x.example", &ago(mins(1))),
            ],
        ),
        (
            "ent",
            vec![
                record(
                    "ent",
                    "outside",
                    "auth.login",
                    "a@x.example",
                    &ago(days(5) + mins(10)),
                ),
                record(
                    "ent",
                    "inside",
                    "auth.login",
                    "a@x.example",
                    &ago(days(5) - mins(10)),
                ),
            ],
        ),
        (
            "held",
            vec![record(
                "held",
                "old",
                "auth.login",
                "a@x.example",
                &ago(days(20)),
            )],
        ),
    ] {
        let ingest = c.create_key(org, "INGEST");
        let (status, body) = c.ingest(&ingest, &records);
        assert_eq!(
            (status, &body["accepted"]),
            (200, &Value::from(records.len())),
            "{body}"
        );
        admin.insert(org, c.create_key(org, "ORG_ADMIN"));
        ingest_keys.insert(org, ingest);
    }
    assert!(c.stop(), "clean stop");
    let narrow = format!("[metrics]\nper_org = true\n{ORGS}");
    let config = std::fs::read_to_string(&c.config_path).unwrap();
    let config = config.replace(&format!("[metrics]\nper_org = true\n{wide}"), &narrow);
    assert!(config.contains(&narrow), "{config}");
    std::fs::write(&c.config_path, config).unwrap();
    c.restart();

    // A record already past its window is refused as expired on arrival, naming `time`; the
    // rest of its batch goes in. Under legal hold nothing expires, so it is taken.
    let late = |org: &str, id: &str, age: Duration| {
        record(org, id, "auth.login", "a@x.example", &ago(age))
    };
    let (status, body) = c.ingest(
        &ingest_keys["free"],
        &[
            late("free", "late", days(3) + mins(10)),
            late("free", "recent-2", mins(1)),
        ],
    );
    assert_eq!(
        (status, &body["accepted"], &body["expired"]),
        (200, &Value::from(1), &Value::from(1)),
        "{body}"
    );
    assert_eq!(body["errors"][0]["line"], 1, "{body}");
    assert_eq!(body["errors"][0]["errors"][0]["field"], "time", "{body}");
    assert!(
        body["errors"][0]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("expired on arrival"),
        "{body}"
    );
    let (status, body) = c.ingest(&ingest_keys["held"], &[late("held", "late", days(10))]);
    assert_eq!(
        (status, &body["accepted"]),
        (200, &Value::from(1)),
        "{body}"
    );
    let text = metrics(&c);
    assert!(
        text.lines().any(
            |l| l.starts_with("codestax_collector_records_rejected_total")
                && l.contains(r#"receiver="ndjson""#)
                && l.contains(r#"reason="expired_on_arrival""#)
                && l.ends_with(" 1")
        ),
        "{text}"
    );

    // The janitor runs every second: wait for a run that saw every record (held's oldest is
    // reported) and deleted both expired ones.
    let deleted = |text: &str, org: &str| {
        metric(
            text,
            &format!("codestax_collector_retention_records_deleted_total{{org=\"{org}\"}}"),
        )
    };
    let age = |text: &str, org: &str| {
        metric(
            text,
            &format!("codestax_collector_retention_oldest_record_age_seconds{{org=\"{org}\"}}"),
        )
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = metrics(&c);
        if deleted(&text, "free") == Some(1.0)
            && deleted(&text, "ent") == Some(1.0)
            && age(&text, "held").is_some()
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "janitor did not delete within 30 s:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        deleted(&text, "held"),
        None,
        "legal hold: nothing of held is deleted"
    );
    let held_age = age(&text, "held").unwrap();
    assert!(
        (19.9 * 86400.0..20.1 * 86400.0).contains(&held_age),
        "{held_age}"
    );
    let free_age = age(&text, "free").unwrap();
    assert!(
        (2.9 * 86400.0..3.0 * 86400.0).contains(&free_age),
        "{free_age}"
    );
    assert!(
        metric(
            &text,
            "codestax_collector_retention_janitor_last_run_timestamp_seconds"
        )
        .is_some_and(|t| t > 1.7e9)
    );
    assert!(
        metric(
            &text,
            "codestax_collector_retention_janitor_last_run_duration_seconds"
        )
        .is_some()
    );

    let search = |c: &Collector, org: &str| {
        c.get_json(
            &format!("/api/v1/orgs/{org}/audit-log?action=auth.login&since=2000-01-01"),
            &admin[org],
        )
    };
    assert_eq!(ids(&search(&c, "free")), ["recent-2", "recent", "inside"]);
    assert_eq!(ids(&search(&c, "ent")), ["inside"]);
    assert_eq!(
        ids(&search(&c, "held")),
        ["late", "old"],
        "legal hold: past the window, readable"
    );
    assert_eq!(
        c.get("/api/v1/orgs/free/audit-log/outside", &admin["free"])
            .status(),
        404
    );
    let settings = c.get_json("/api/v1/orgs/ent/settings/retention", &admin["ent"]);
    assert_eq!(
        (&settings["days"], &settings["source"]),
        (&Value::from(5), &Value::from("config"))
    );

    // Let the read records be indexed, note how many records the index holds, restart with the
    // janitor's first run 10 s away, and look before it: the WAL replay added nothing deleted.
    let docs = |c: &Collector| metric(&metrics(c), "codestax_collector_index_documents").unwrap();
    let mut before = docs(&c);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let now = docs(&c);
        if now == before {
            break;
        }
        before = now;
    }
    assert!(c.stop(), "clean stop");
    let config = std::fs::read_to_string(&c.config_path)
        .unwrap()
        .replace("janitor_interval = \"1s\"", "janitor_interval = \"1h\"");
    std::fs::write(&c.config_path, config).unwrap();
    c.restart();
    let text = metrics(&c);
    assert_eq!(
        metric(
            &text,
            r#"codestax_collector_retention_janitor_runs_total{result="ok"}"#
        ),
        None,
        "looked before the first janitor run"
    );
    assert_eq!(
        metric(&text, "codestax_collector_index_documents"),
        Some(before)
    );
    assert_eq!(ids(&search(&c, "free")), ["recent-2", "recent", "inside"]);
    assert_eq!(
        c.get("/api/v1/orgs/ent/audit-log/outside", &admin["ent"])
            .status(),
        404
    );
    // What retention left still verifies: the chain starts from its checkpoint.
    for org in ["free", "ent", "held"] {
        let report = c.get_json(&format!("/api/v1/orgs/{org}/audit-log/verify"), &admin[org]);
        assert_eq!(report["ok"], true, "{org}: {report}");
    }
}

/// Exports apply the retention window like every read, before any janitor deleted anything.
#[test]
fn exports_never_contain_records_past_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        "[retention]\ndefault_days = 3\njanitor_interval = \"1h\"\n",
    );
    let ingest = c.create_key("free", "INGEST");
    let admin = c.create_key("free", "ORG_ADMIN");
    let records = [
        record(
            "free",
            "expired",
            "scan.triggered",
            "a@x.example",
            &ago(Duration::days(3) + Duration::minutes(5)),
        ),
        record(
            "free",
            "kept",
            "scan.triggered",
            "a@x.example",
            &ago(Duration::days(3) - Duration::minutes(5)),
        ),
    ];
    assert_eq!(c.ingest(&ingest, &records).0, 200);
    c.wait_for_total("free", "action=scan.triggered", &admin, 1);
    for format in ["ndjson", "csv", "json"] {
        let r = c.get(
            &format!("/api/v1/orgs/free/audit-log/export?format={format}&action=scan.triggered"),
            &admin,
        );
        assert_eq!(r.status(), 200);
        let body = r.text().unwrap();
        let kept_time = records[1]["time"].as_str().unwrap();
        let expired_time = records[0]["time"].as_str().unwrap();
        assert!(body.contains(kept_time), "{format}: {body}");
        assert!(
            !body.contains(expired_time),
            "{format} holds an expired record: {body}"
        );
    }
}
