//! Provenance over the real collector: an INGEST key can neither pre-empt, hide nor imitate any
//! entry the collector writes (key created, key revoked, audit log viewed, audit log exported,
//! retention changed), and every stored record says who wrote it — in search, get, exports and
//! the hash chain.

use chrono::{SecondsFormat, Utc};
use codestax_tests::{Collector, record};
use serde_json::{Value, json};

const ENTERPRISE: &str = "[[orgs]]\nid = \"acme\"\nplan = \"enterprise\"\n";

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The per-line errors of an ingest answer, as `(line, field, message)`.
fn errors(answer: &Value) -> Vec<(u64, String, String)> {
    answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {answer}"))
        .iter()
        .flat_map(|r| {
            r["errors"].as_array().unwrap().iter().map(|e| {
                (
                    r["line"].as_u64().unwrap(),
                    e["field"].as_str().unwrap().to_string(),
                    e["reason"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect()
}

fn whoami(c: &Collector, token: &str) -> String {
    c.get_json("/api/v1/whoami", token)["key_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The stored record `id` of acme, or `None` for 404.
fn get(c: &Collector, id: &str, token: &str) -> Option<Value> {
    let r = c.get(&format!("/api/v1/orgs/acme/audit-log/{id}"), token);
    match r.status().as_u16() {
        404 => None,
        200 => Some(r.json().unwrap()),
        other => panic!("GET {id}: {other} {}", r.text().unwrap()),
    }
}

/// The stored record `id` of acme once it is searchable (within 20 s).
fn wait_get(c: &Collector, id: &str, token: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(v) = get(c, id, token) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{id} not found");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn an_ingest_key_cannot_pre_empt_forge_or_hide_the_collectors_entries() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), ENTERPRISE);
    let owner = c.create_key("acme", "ORG_OWNER");
    let app = c.create_key("acme", "INGEST");
    let owner_id = whoami(&c, &owner);
    let app_id = whoami(&c, &app);

    // 1. Every way of claiming what is the collector's is refused, per record, naming the rule;
    //    the rest of the batch goes through.
    let mut batch = Vec::new();
    let mut claim = |id: &str, edit: &dyn Fn(&mut Value)| {
        let mut r = record(
            "acme",
            id,
            "auth.api_key_revoked",
            "mallory@acme.example",
            &now(),
        );
        edit(&mut r);
        batch.push(r);
    };
    // Pre-empting the ids of entries the collector is about to write.
    claim(&format!("codestax:apikey-revoked-{app_id}"), &|_| {});
    claim(&format!("CODESTAX:apikey-created-{app_id}"), &|_| {});
    claim("codestax:read-00000000000000000000000000000000", &|_| {});
    // Forging the collector's own actions, with the owner's key as actor.
    for action in ["audit_log.exported", "audit_log.viewed"] {
        claim(&format!("forged-{action}"), &|r| {
            r["action"] = json!(action);
            r["actor"] = json!({"id": owner_id, "kind": "api_key"});
        });
    }
    // Claiming to be the collector.
    claim("forged-provenance", &|r| {
        r["provenance"] = json!({"writer": "collector"});
        r["actor"] = json!({"id": "codestax-collector", "kind": "system"});
    });
    // The catalogue actions apps legitimately send stay open to them, and so does the id a
    // key event had before the reserved namespace.
    claim(&format!("apikey-revoked-{app_id}"), &|_| {});
    claim("app-retention-note", &|r| {
        r["action"] = json!("settings.retention_changed");
    });
    let (status, answer) = c.ingest(&app, &batch);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    let errors = errors(&answer);
    let expect = [
        (1, "id"),
        (2, "id"),
        (3, "id"),
        (4, "action"),
        (5, "action"),
        (6, "provenance"),
    ];
    assert_eq!(
        errors
            .iter()
            .map(|(l, f, _)| (*l, f.as_str()))
            .collect::<Vec<_>>(),
        expect,
        "{errors:?}"
    );
    for (_, field, message) in &errors {
        assert!(message.contains("collector"), "{field}: {message}");
    }
    // The same over OTLP/HTTP: an `audit.provenance` attribute or a body claiming provenance.
    let nanos = Utc::now().timestamp_nanos_opt().unwrap().to_string();
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": nanos, "attributes": [attr("audit.id", "otlp-forged"),
            attr("audit.action", "team.member_invited"), attr("enduser.id", "u1"),
            attr("audit.actor.email", "ada@acme.example"), attr("audit.provenance.writer", "collector")]},
        {"timeUnixNano": nanos, "body": {"stringValue": json!({"id": "otlp-exported",
            "action": "audit_log.exported", "actor": {"id": owner_id, "kind": "api_key"}}).to_string()}},
        {"timeUnixNano": nanos, "attributes": [attr("audit.id", "codestax:change-1"),
            attr("audit.action", "team.member_invited"), attr("enduser.id", "u1"),
            attr("audit.actor.email", "ada@acme.example")]}
    ]}]}]});
    let r = c.post(
        "/v1/logs",
        &app,
        "application/json",
        body.to_string().into_bytes(),
    );
    let status = r.status().as_u16();
    let answer: Value = r.json().unwrap();
    let rejected = &answer["partialSuccess"]["rejectedLogRecords"];
    assert!(
        status == 400 || rejected == &json!("3") || rejected == &json!(3),
        "{status} {answer}"
    );

    // 2. What the app wrote is marked as the app's.
    let legacy_id = format!("apikey-revoked-{app_id}");
    let forged = wait_get(&c, &legacy_id, &owner);
    assert_eq!(
        forged["provenance"],
        json!({"writer": "ingest", "key_id": app_id})
    );
    let note = get(&c, "app-retention-note", &owner).unwrap();
    assert_eq!(note["provenance"]["writer"], "ingest");

    // 3. The collector's entries, each of every kind, are there and marked as the collector's.
    let created = c.post(
        "/api/v1/orgs/acme/keys",
        &owner,
        "application/json",
        br#"{"role": "INGEST", "name": "second app"}"#.to_vec(),
    );
    assert_eq!(created.status(), 201);
    let created: Value = created.json().unwrap();
    let new_id = created["key"]["id"].as_str().unwrap().to_string();
    let revoked = c
        .client()
        .delete(c.url(&format!("/api/v1/orgs/acme/keys/{app_id}")))
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 200, "{}", revoked.text().unwrap());
    let put = c
        .client()
        .put(c.url("/api/v1/orgs/acme/settings/retention"))
        .bearer_auth(&owner)
        .json(&json!({"days": 400}))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().unwrap());
    let export = c.get("/api/v1/orgs/acme/audit-log/export?format=csv", &owner);
    assert_eq!(export.status(), 200);
    let _ = export.text().unwrap();
    // A search: recorded as audit_log.viewed.
    c.get_json("/api/v1/orgs/acme/audit-log?limit=1", &owner);
    // Both reads' entries searchable (asked through facets, which record no read).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ["audit_log.viewed", "audit_log.exported"]
        .iter()
        .any(|a| c.total("acme", &format!("action={a}"), &owner) == 0)
    {
        assert!(std::time::Instant::now() < deadline, "reads not recorded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // The real revocation is stored, not hidden by the app's records.
    let revocation = wait_get(&c, &format!("codestax:apikey-revoked-{app_id}"), &owner);
    assert_eq!(revocation["provenance"], json!({"writer": "collector"}));
    assert_eq!(revocation["actor"]["id"], owner_id.as_str());
    assert_eq!(revocation["action"], "auth.api_key_revoked");
    for (id, actor) in [
        (
            format!("codestax:apikey-created-{new_id}"),
            owner_id.as_str(),
        ),
        // Made with the CLI: recorded when the collector loaded it, by the collector.
        (
            format!("codestax:apikey-created-{app_id}"),
            "codestax-collector",
        ),
    ] {
        let e = wait_get(&c, &id, &owner);
        assert_eq!(e["provenance"], json!({"writer": "collector"}), "{id}");
        assert_eq!(e["actor"]["id"], actor, "{id}");
    }
    for id in [
        "otlp-forged",
        "otlp-exported",
        "codestax:change-1",
        "forged-provenance",
    ] {
        assert!(get(&c, id, &owner).is_none(), "{id} was stored");
    }
    let all = c.search_all("acme", "", &owner);
    for action in [
        "auth.api_key_created",
        "auth.api_key_revoked",
        "audit_log.viewed",
        "audit_log.exported",
        "settings.retention_changed",
    ] {
        let by_collector: Vec<&Value> = all
            .iter()
            .filter(|e| e["action"] == action && e["provenance"]["writer"] == "collector")
            .collect();
        assert!(!by_collector.is_empty(), "no {action} by the collector");
        for e in by_collector {
            let id = e["id"].as_str().unwrap();
            assert!(id.starts_with("codestax:"), "{id}");
            assert!(e["provenance"].get("key_id").is_none(), "{e}");
        }
    }
    // Every record says who wrote it; the app's are the app's, by key id, never its secret.
    for e in &all {
        let writer = e["provenance"]["writer"]
            .as_str()
            .unwrap_or_else(|| panic!("{e}"));
        if writer == "ingest" {
            assert_eq!(e["provenance"]["key_id"], app_id.as_str(), "{e}");
        }
        assert!(!e.to_string().contains(&app), "a secret in {e}");
    }

    // 4. Provenance is part of the chain: the chain verifies, and an export carries it.
    let verify = c.get_json("/api/v1/orgs/acme/audit-log/verify", &owner);
    assert_eq!(verify["ok"], true, "{verify}");
    let csv = c
        .get("/api/v1/orgs/acme/audit-log/export?format=csv", &owner)
        .text()
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let column = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "written_by")
        .expect("a written_by column");
    let writers: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[column].to_string())
        .collect();
    assert!(writers.contains(&"collector".to_string()), "{writers:?}");
    assert!(writers.contains(&format!("ingest:{app_id}")), "{writers:?}");
}

/// One key cannot take another's record away by sending its id first with other content: the
/// later record is refused by name (not acknowledged as a duplicate of what it is not), counted,
/// and the stored record says which key wrote it. A true resend, by any key, stays a duplicate.
#[test]
fn an_ingest_key_cannot_pre_empt_another_keys_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(&dir.path().join("data"), ENTERPRISE);
    let owner = c.create_key("acme", "ORG_OWNER");
    let mallory = c.create_key("acme", "INGEST");
    let app = c.create_key("acme", "INGEST");
    let mallory_id = whoami(&c, &mallory);
    let app_id = whoami(&c, &app);
    let time = now();
    let mut theirs = record(
        "acme",
        "order-1001",
        "auth.login",
        "ada@acme.example",
        &time,
    );
    theirs["outcome"] = json!("failure");
    let mut forged = theirs.clone();
    forged["outcome"] = json!("success");

    // Mallory sends the app's next id first, with what she wants the log to say.
    let (status, answer) = c.ingest(&mallory, &[forged.clone()]);
    assert_eq!(
        (status, answer["accepted"].clone()),
        (200, json!(1)),
        "{answer}"
    );

    // The app's record under that id is refused by name, not called a duplicate; the rest of
    // its batch goes through.
    let next = record(
        "acme",
        "order-1002",
        "auth.login",
        "ada@acme.example",
        &time,
    );
    let check_refused = |c: &Collector, duplicates: u64| {
        let (status, answer) = c.ingest(&app, &[theirs.clone(), next.clone()]);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], 1, "{answer}");
        assert_eq!(answer["duplicates"], duplicates, "{answer}");
        let errors = errors(&answer);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].0, errors[0].1.as_str()), (1, "id"), "{errors:?}");
        assert!(errors[0].2.contains("other content"), "{errors:?}");
    };
    check_refused(&c, 0);
    // A true resend of what is stored, by another key, is a duplicate (a key rotated during a
    // replay, two agents on copies of one file).
    let (status, answer) = c.ingest(&app, &[forged.clone()]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].clone(), answer["duplicates"].clone()),
        (json!(1), json!(1)),
        "{answer}"
    );

    // What is stored says who wrote it; the refusals are counted.
    let stored = wait_get(&c, "order-1001", &owner);
    assert_eq!(stored["outcome"], "success");
    assert_eq!(
        stored["provenance"],
        json!({"writer": "ingest", "key_id": mallory_id})
    );
    let rejected = |c: &Collector| {
        c.metric(r#"codestax_collector_records_rejected_total{receiver="ndjson",reason="id"}"#)
    };
    assert_eq!(rejected(&c), 1.0);

    // The org's own log says so: the collector's entry names the refused key and ids.
    let conflicts = |c: &Collector| {
        c.wait_for_total("acme", "action=audit_log.id_conflict", &owner, 1);
        c.search_all("acme", "action=audit_log.id_conflict", &owner)
    };
    let entry = conflicts(&c).remove(0);
    assert_eq!(
        entry["provenance"],
        json!({"writer": "collector"}),
        "{entry}"
    );
    assert_eq!(entry["actor"]["id"], app_id.as_str(), "{entry}");
    assert_eq!(entry["outcome"], "failure", "{entry}");
    assert_eq!(entry["metadata"]["ids"], json!(["order-1001"]), "{entry}");
    assert_eq!(entry["metadata"]["records"], 1, "{entry}");

    // After a restart, only the index has the record: the same answer; the batch sent again
    // makes no second entry.
    assert!(c.stop());
    c.restart();
    check_refused(&c, 1);
    assert_eq!(rejected(&c), 1.0, "counters start again at a restart");
    assert_eq!(wait_get(&c, "order-1001", &owner), stored);
    assert_eq!(conflicts(&c), vec![entry]);
}
