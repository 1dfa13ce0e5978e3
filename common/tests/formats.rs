//! The OCSF and ECS output formats, checked against the published schemas (pinned copies in
//! `tests/schemas/`, validated by `support/schemas.rs`): every catalogue action, under every
//! shape of record, gives a valid OCSF event and a valid ECS document; any valid record does
//! (property test); the validators themselves refuse broken events; the docs' tables are the
//! code's; no field of a record is lost on the way.
//! Longer run: `PROPTEST_CASES=5000 cargo test --release -p codestax-common --test formats`.

#[path = "support/records.rs"]
mod records;
#[path = "support/schemas.rs"]
mod schemas;

use codestax_common::format::{Context, ecs, ocsf};
use codestax_common::{AuditRecord, CATALOG, Provenance, lookup_action, parse_json_line};
use proptest::prelude::*;
use records::{Shape, cases, rules};
use schemas::{Ecs, Ocsf};
use serde_json::{Value, json};
use std::sync::OnceLock;

fn ocsf_schema() -> &'static Ocsf {
    static S: OnceLock<Ocsf> = OnceLock::new();
    S.get_or_init(Ocsf::load)
}

fn ecs_schema() -> &'static Ecs {
    static S: OnceLock<Ecs> = OnceLock::new();
    S.get_or_init(Ecs::load)
}

fn cx() -> Context {
    Context::new("0.1.0").with_collector(Some("collector-1".into()), Some("audit-1".into()))
}

fn record(v: Value) -> AuditRecord {
    serde_json::from_value(v).unwrap()
}

/// A record with every field set, as the collector stores it.
fn full(action: &str, target: Value) -> AuditRecord {
    record(json!({
        "id": "evt-0001", "org_id": "acme", "time": "2026-11-27T10:15:30.123456Z",
        "actor": {"id": "u-42", "name": "Ada Lovelace", "email": "ada@acme.example", "kind": "user"},
        "action": action, "category": action.split('.').next().unwrap(),
        "target": target, "repository": "acme/api", "outcome": "failure",
        "message": "Changed the default branch",
        "metadata": {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0", "scan_type": "sast",
            "changes": [{"field": "default_branch", "old": "master", "new": "main"}],
            "ticket": "SEC-12", "nested": {"a": [1, null]}},
        "schema_version": 1, "received_at": "2026-11-27T10:15:31.000001Z", "seq": 41,
        "prev_hash": "ab".repeat(32), "provenance": {"writer": "ingest", "key_id": "k-1"},
        "hash": "cd".repeat(32),
    }))
}

/// The shapes a record of `action` may take: each target kind that matters, none, minimal.
fn shapes(action: &str) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    for target in [
        json!({"kind": "user", "id": "u-7", "name": "bob@acme.example"}),
        json!({"kind": "scan", "id": "s-9"}),
        json!({"kind": "repository", "name": "acme/api"}),
        json!({"kind": "api_key", "id": "k-3"}),
        json!({"kind": "finding"}),
    ] {
        out.push(full(action, target));
    }
    let mut bare = full(action, json!({"kind": "user"}));
    bare.target = None;
    out.push(bare.clone());
    bare.repository = None;
    out.push(bare);
    out.push(record(json!({
        "org_id": "o", "time": "2026-11-27T10:00:00Z",
        "actor": {"id": "svc", "kind": "system"}, "action": action,
    })));
    out.push(record(json!({
        "org_id": "o", "time": "2026-11-27T10:00:00Z",
        "actor": {"id": "key-1", "kind": "api_key", "email": "not an email@x"}, "action": action,
        "metadata": {"ip": "not-an-ip", "user_agent": ""},
    })));
    out
}

fn assert_valid(r: &AuditRecord) -> (Value, Value) {
    let event = ocsf::event(r, &cx());
    let errors = ocsf_schema().validate(&event);
    assert!(
        errors.is_empty(),
        "{}: OCSF errors {errors:#?}\n{event:#}",
        r.action
    );
    let doc = ecs::document(r, &cx());
    let errors = ecs_schema().validate(&doc);
    assert!(
        errors.is_empty(),
        "{}: ECS errors {errors:#?}\n{doc:#}",
        r.action
    );
    (event, doc)
}

#[test]
fn the_pinned_schemas_are_the_versions_the_formats_declare() {
    assert_eq!(ocsf_schema().version, ocsf::OCSF_VERSION);
    assert_eq!(ecs_schema().version, ecs::ECS_VERSION);
    for class in ocsf::Class::ALL {
        assert!(
            ocsf_schema().class_uids().contains(&u64::from(class.uid())),
            "{class:?} is not in the pinned copy"
        );
    }
}

/// Each table has one row per catalogue action, in catalogue order, and no other (the default
/// row aside); classes that need a subject say what they fall back to.
#[test]
fn every_catalogue_action_has_a_row_in_each_table() {
    let catalogue: Vec<&str> = CATALOG.iter().map(|a| a.name).collect();
    let ocsf_rows: Vec<&str> = ocsf::TABLE.iter().map(|r| r.action).collect();
    let ecs_rows: Vec<&str> = ecs::TABLE.iter().map(|r| r.action).collect();
    assert_eq!(ocsf_rows, catalogue);
    assert_eq!(ecs_rows, catalogue);
    for r in ocsf::TABLE {
        assert_eq!(ocsf::row_for(r.action), r);
        let needs_subject = matches!(
            r.class,
            ocsf::Class::AccountChange | ocsf::Class::ScanActivity
        );
        assert_eq!(r.fallback.is_some(), needs_subject, "{}", r.action);
    }
    assert_eq!(ocsf::row_for("custom.thing"), &ocsf::DEFAULT_ROW);
    assert_eq!(ecs::row_for("custom.thing"), &ecs::DEFAULT_ROW);
}

/// Every catalogue action (and a custom one), under every shape of record, gives a valid OCSF
/// event of its row's class (or the row's fallback when the record names no subject) and a
/// valid ECS document with its row's category and type.
#[test]
fn every_catalogue_action_maps_to_valid_ocsf_and_ecs() {
    for action in CATALOG.iter().map(|a| a.name).chain(["custom.thing"]) {
        let row = ocsf::row_for(action);
        let mut classes = std::collections::BTreeSet::new();
        for r in shapes(action) {
            let (event, doc) = assert_valid(&r);
            let class = event["class_uid"].as_u64().unwrap();
            let activity = event["activity_id"].as_u64().unwrap();
            if class == u64::from(row.class.uid()) {
                assert_eq!(activity, u64::from(row.activity.id), "{action}");
            } else {
                let f = row
                    .fallback
                    .expect("only a row with a fallback changes class");
                assert_eq!(class, u64::from(ocsf::Class::EntityManagement.uid()));
                assert_eq!(activity, u64::from(f.id), "{action}");
            }
            classes.insert(class);
            assert_eq!(event["metadata"]["event_code"], action);
            assert_eq!(event["metadata"]["tenant_uid"], r.org_id.as_str());
            let ecs_row = ecs::row_for(action);
            assert_eq!(doc["event"]["category"], json!(ecs_row.category));
            assert_eq!(doc["event"]["type"], json!(ecs_row.types));
            assert_eq!(doc["event"]["action"], action);
            assert_eq!(doc["organization"]["id"], r.org_id.as_str());
        }
        assert!(
            classes.contains(&u64::from(row.class.uid())),
            "{action}: no shape gave its own class {:?}",
            row.class
        );
    }
}

/// The fields a receiver needs: ids to dedupe on, the chain to verify, status and time.
#[test]
fn events_carry_ids_chain_outcome_and_time() {
    let r = full("scan.triggered", json!({"kind": "scan", "id": "s-9"}));
    let (e, d) = assert_valid(&r);
    assert_eq!(e["class_uid"], 6007);
    assert_eq!(e["type_uid"], 600701);
    assert_eq!(e["metadata"]["uid"], "evt-0001");
    assert_eq!(e["metadata"]["profiles"], json!(["host"]));
    assert_eq!(e["unmapped"]["seq"], 41);
    assert_eq!(e["unmapped"]["hash"], "cd".repeat(32));
    assert_eq!(e["unmapped"]["prev_hash"], "ab".repeat(32));
    assert_eq!(e["status_id"], 2);
    assert_eq!(e["severity_id"], ocsf::LOW);
    assert_eq!(e["time"], r.time.timestamp_millis());
    assert_eq!(
        e["metadata"]["original_time"],
        "2026-11-27T10:15:30.123456Z"
    );
    assert_eq!(
        e["scan"],
        json!({"uid": "s-9", "type_id": 99, "type": "sast"})
    );
    assert_eq!(e["metadata"]["reporter"]["hostname"], "audit-1");
    assert_eq!(d["event"]["id"], "evt-0001");
    assert_eq!(d["event"]["sequence"], 41);
    assert_eq!(d["event"]["hash"], "cd".repeat(32));
    assert_eq!(d["labels"]["prev_hash"], "ab".repeat(32));
    assert_eq!(d["labels"]["written_by"], "ingest:k-1");
    assert_eq!(d["event"]["outcome"], "failure");
    assert_eq!(d["@timestamp"], "2026-11-27T10:15:30.123456Z");
    assert_eq!(d["source"]["ip"], "203.0.113.9");
    assert_eq!(d["user_agent"]["original"], "Mozilla/5.0");
    assert_eq!(d["user"]["email"], "ada@acme.example");

    let login = full("auth.login", json!({"kind": "user", "id": "u-42"}));
    let (e, _) = assert_valid(&login);
    assert_eq!(e["type_uid"], 300201);
    assert_eq!(e["severity_id"], ocsf::MEDIUM);
    assert_eq!(e["user"]["uid"], "u-42");
    assert_eq!(e["src_endpoint"]["ip"], "203.0.113.9");
    assert_eq!(e["http_request"]["user_agent"], "Mozilla/5.0");
    assert_eq!(e["actor"]["user"]["email_addr"], "ada@acme.example");

    let invite = full(
        "team.member_invited",
        json!({"kind": "user", "id": "u-7", "name": "bob@acme.example"}),
    );
    let (e, d) = assert_valid(&invite);
    assert_eq!(e["type_uid"], 300101);
    assert_eq!(e["user"]["email_addr"], "bob@acme.example");
    assert_eq!(d["user"]["target"]["id"], "u-7");
}

/// Every string and number of a record is somewhere in its event and its document: nothing
/// is silently dropped (free-form values may be inside a label's JSON).
#[test]
fn no_field_is_lost() {
    fn leaves(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m.values().for_each(|v| leaves(v, out)),
            Value::Array(a) => a.iter().for_each(|v| leaves(v, out)),
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            _ => {}
        }
    }
    for action in ["repository.settings_changed", "auth.login", "scan.failed"] {
        for r in shapes(action) {
            let mut want = Vec::new();
            leaves(&serde_json::to_value(&r).unwrap(), &mut want);
            for out in [
                ocsf::event(&r, &cx()).to_string(),
                ecs::document(&r, &cx()).to_string(),
            ] {
                for w in &want {
                    let quoted = serde_json::to_string(w).unwrap();
                    let inner = &quoted[1..quoted.len() - 1];
                    assert!(
                        out.to_lowercase().contains(&w.to_lowercase()) || out.contains(inner),
                        "{action}: {w:?} is lost in {out}"
                    );
                }
            }
        }
    }
}

/// A named way to break an event.
type Break = (&'static str, fn(&mut Value));

/// The validators are not blind: each kind of break they claim to find, they find.
#[test]
fn the_validators_refuse_broken_events() {
    let r = full("team.member_invited", json!({"kind": "user", "id": "u-7"}));
    let good = ocsf::event(&r, &cx());
    assert!(ocsf_schema().validate(&good).is_empty());
    let broken: [Break; 10] = [
        ("missing required user", |e| {
            e.as_object_mut().unwrap().remove("user");
        }),
        ("type_uid", |e| e["type_uid"] = json!(300102)),
        ("unknown attribute", |e| e["repository"] = json!("x")),
        ("enum", |e| e["activity_id"] = json!(42)),
        ("type", |e| e["time"] = json!("yesterday")),
        ("ip pattern", |e| {
            e["src_endpoint"]["ip"] = json!("300.1.1.1")
        }),
        ("email pattern", |e| {
            e["user"]["email_addr"] = json!("a b@c")
        }),
        ("sibling caption", |e| e["status"] = json!("Fine")),
        ("at_least_one", |e| e["user"] = json!({"type_id": 1})),
        ("string type", |e| e["actor"]["user"]["name"] = json!(1)),
    ];
    for (what, f) in broken {
        let mut e = good.clone();
        f(&mut e);
        assert!(!ocsf_schema().validate(&e).is_empty(), "{what}: not caught");
    }
    // An attribute of a profile the event does not declare.
    let scan = full("scan.triggered", json!({"kind": "scan", "id": "s"}));
    let mut e = ocsf::event(&scan, &cx());
    assert!(ocsf_schema().validate(&e).is_empty());
    e["metadata"].as_object_mut().unwrap().remove("profiles");
    assert!(
        ocsf_schema()
            .validate(&e)
            .iter()
            .any(|m| m.contains("profile host")),
        "undeclared profile not caught"
    );

    let good = ecs::document(&r, &cx());
    assert!(ecs_schema().validate(&good).is_empty());
    let broken: [Break; 6] = [
        ("unknown field", |d| d["user"]["shoe_size"] = json!("9")),
        ("ip type", |d| d["source"] = json!({"ip": "nowhere"})),
        ("date type", |d| d["@timestamp"] = json!("soon")),
        ("allowed value", |d| {
            d["event"]["category"] = json!(["gossip"])
        }),
        ("expected type", |d| d["event"]["type"] = json!(["start"])),
        ("label type", |d| d["labels"]["n"] = json!(1)),
    ];
    for (what, f) in broken {
        let mut d = good.clone();
        f(&mut d);
        assert!(!ecs_schema().validate(&d).is_empty(), "{what}: not caught");
    }
}

/// `docs/formats.md` prints the tables the code has.
#[test]
fn the_docs_tables_are_the_code_tables() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/formats.md");
    let docs = std::fs::read_to_string(path).unwrap();
    for (name, table) in [
        ("OCSF", ocsf::table_markdown()),
        ("ECS", ecs::table_markdown()),
    ] {
        assert!(
            docs.contains(&table),
            "docs/formats.md does not have the {name} table of the code; it is:\n{table}"
        );
    }
    assert!(docs.contains(ocsf::OCSF_VERSION) && docs.contains(ecs::ECS_VERSION));
}

/// Whether OCSF's own `email_t` pattern matches `s`.
fn ocsf_email_pattern(s: &str) -> bool {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^[a-zA-Z0-9!#$%&'*+-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$")
            .unwrap()
    })
    .is_match(s)
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any valid record, whatever its action (the collector's own included) and chain fields,
    /// maps without panic to a schema-valid OCSF event and ECS document.
    #[test]
    fn prop_any_valid_record_maps_to_valid_events(
        value in records::valid_record(Shape::ANY),
        action in proptest::option::of(prop::sample::select(
            CATALOG.iter().map(|a| a.name).collect::<Vec<_>>())),
        seq in proptest::option::of(1..=i64::MAX as u64),
        key in proptest::option::of(proptest::option::of("[a-z0-9-]{1,12}")),
    ) {
        let line = value.to_string();
        let mut r = match parse_json_line(line.as_bytes(), Some("org-default"), &rules(true)) {
            Ok(r) => r,
            Err(e) => panic!("valid record refused: {e}\n{line}"),
        };
        if let Some(a) = action {
            r.action = a.to_string();
            r.category = lookup_action(a).unwrap().category.as_str().to_string();
        }
        r.seq = seq;
        r.hash = seq.map(|s| format!("{s:064x}"));
        r.prev_hash = seq.map(|s| format!("{:064x}", s - 1));
        r.provenance = key.map(|k| match k {
            Some(key_id) => Provenance::Ingest { key_id },
            None => Provenance::Collector,
        });
        assert_valid(&r);
    }

    /// The mapping's email check is OCSF's `email_t` pattern.
    #[test]
    fn prop_email_check_is_the_dictionary_pattern(
        s in prop_oneof!["\\PC{0,12}", "[a-z.+-]{0,6}@[a-z.-]{0,8}", "[ -~]{0,10}@[ -~]{0,10}"]
    ) {
        prop_assert_eq!(ocsf::is_email(&s), ocsf_email_pattern(&s), "{:?}", s);
    }
}
