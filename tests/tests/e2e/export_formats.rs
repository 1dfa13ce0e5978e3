//! The OCSF and ECS export formats over a real collector and the real CLI: `format=ocsf|ecs`
//! gives one event per stored record, each the mapping of the record the NDJSON export gives
//! and valid against the pinned published schema; the export is recorded with its format; a
//! bad format is a 400 naming the formats; `codestax export --format ocsf|ecs` writes the same.

use crate::schemas;

use chrono::{Duration, SecondsFormat, Utc};
use codestax_common::AuditRecord;
use codestax_common::format::{Context, ecs, ocsf};
use codestax_tests::{Collector, record, run_cli};
use serde_json::{Value, json};

/// One record of each catalogue action an app may write, with the target its class uses (a
/// user for `team.*`, a scan for `scan.*`), some failures, and some without a target.
fn corpus(org: &str) -> Vec<Value> {
    let t = |i: i64| {
        (Utc::now() - Duration::minutes(60 + i)).to_rfc3339_opts(SecondsFormat::Micros, true)
    };
    codestax_common::CATALOG
        .iter()
        .filter(|a| !a.name.starts_with("audit_log."))
        .enumerate()
        .flat_map(|(i, a)| {
            let mut r = record(
                org,
                &format!("{org}-{i}"),
                a.name,
                "ada@acme.example",
                &t(i as i64),
            );
            match a.name.split('.').next().unwrap() {
                "team" => {
                    r["target"] = json!({"kind": "user", "id": "u-7", "name": "bob@acme.example"})
                }
                "scan" => r["target"] = json!({"kind": "scan", "id": format!("s-{i}")}),
                _ => {}
            }
            r["metadata"]["user_agent"] = json!("Mozilla/5.0");
            r["metadata"]["ticket"] = json!(format!("SEC-{i}"));
            let mut bare = r.clone();
            bare["id"] = json!(format!("{org}-{i}-bare"));
            bare.as_object_mut().unwrap().remove("target");
            bare["outcome"] = json!("failure");
            [r, bare]
        })
        .collect()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The native records of an org, by `seq`, from the NDJSON export (its proof line left out).
fn native(c: &Collector, query: &str, token: &str) -> Vec<AuditRecord> {
    let r = c.get(
        &format!("/api/v1/orgs/acme/audit-log/export?format=ndjson&{query}"),
        token,
    );
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    text.lines()
        .filter(|l| !l.starts_with("{\"codestax_proof\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn context() -> Context {
    // The collector's version: the workspace's, as this crate's.
    Context::new(env!("CARGO_PKG_VERSION"))
}

/// Each event is the mapping of the native record with the same `seq`, and schema-valid.
fn assert_events(events: &[Value], records: &[AuditRecord], format: &str) {
    assert_eq!(
        events.len(),
        records.len(),
        "{format}: one event per record"
    );
    let (o, e) = (schemas::Ocsf::load(), schemas::Ecs::load());
    for (event, r) in events.iter().zip(records) {
        let (want, errors) = match format {
            "ocsf" => {
                let want = ocsf::event(r, &context());
                (want, o.validate(event))
            }
            _ => {
                let want = ecs::document(r, &context());
                (want, e.validate(event))
            }
        };
        assert_eq!(
            event, &want,
            "{format}: {} is not its record's mapping",
            r.action
        );
        assert!(
            errors.is_empty(),
            "{format}: {} invalid: {errors:?}",
            r.action
        );
    }
}

#[test]
fn ocsf_and_ecs_exports_over_the_api_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), "");
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let data = corpus("acme");
    let (status, body) = c.ingest(&ingest, &data);
    assert_eq!(status, 200, "{body}");
    // The corpus is an hour old and more: the exports' own entries (now) fall after `until`.
    let until = (Utc::now() - Duration::minutes(30)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let apps = format!("until={until}");
    let apps = apps.as_str();
    c.wait_for_total("acme", apps, &admin, data.len() as u64);
    let records = native(&c, apps, &admin);
    assert_eq!(records.len(), data.len());

    let mut classes = std::collections::BTreeSet::new();
    for format in ["ocsf", "ecs"] {
        let r = c.get(
            &format!("/api/v1/orgs/acme/audit-log/export?format={format}&{apps}"),
            &admin,
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        let disposition = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            disposition.contains(&format!(".{format}.ndjson")),
            "{disposition}"
        );
        let events = lines(&r.text().unwrap());
        assert_events(&events, &records, format);
        if format == "ocsf" {
            classes.extend(events.iter().map(|e| e["class_uid"].as_u64().unwrap()));
        }
    }
    // The corpus reaches every class of the table.
    for class in ocsf::Class::ALL {
        assert!(
            classes.contains(&u64::from(class.uid())),
            "{class:?} never exported"
        );
    }

    // The collector's own entries (the exports just recorded) map too, with their format.
    c.wait_for_total("acme", "category=audit_log", &admin, 3);
    let own = native(&c, "category=audit_log", &admin);
    let r = c.get(
        "/api/v1/orgs/acme/audit-log/export?format=ocsf&category=audit_log",
        &admin,
    );
    let events = lines(&r.text().unwrap());
    assert_events(&events, &own, "ocsf");
    let formats: std::collections::BTreeSet<_> = own
        .iter()
        .filter_map(|r| r.metadata.extra.get("format").and_then(Value::as_str))
        .collect();
    assert!(
        formats.contains("ocsf") && formats.contains("ecs"),
        "{formats:?}"
    );

    // A bad format is a 400 in the error shape, naming the formats there are.
    let r = c.get("/api/v1/orgs/acme/audit-log/export?format=cef", &admin);
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["field"], "format", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ocsf") && message.contains("ecs"),
        "{message}"
    );

    // The CLI writes the same events.
    for format in ["ocsf", "ecs"] {
        let file = format!("audit.{format}.ndjson");
        let url = c.url("");
        let args = [
            "export", "--format", format, "--output", &file, "--org", "acme", "--url", &url,
            "--token", &admin, "--until", &until,
        ];
        let out = run_cli(dir.path(), &args);
        assert!(
            out.status.success(),
            "codestax export --format {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join(&file)).unwrap();
        assert_events(&lines(&text), &records, format);
    }
}
