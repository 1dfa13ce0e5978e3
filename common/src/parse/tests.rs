//! The two paths of the parser compared: the straight one never accepts what the thorough one
//! refuses, and builds the same record, whatever the line and whatever the line before left.

use super::*;
use serde_json::{Value, json};

#[test]
fn a_reused_straight_path_gives_the_thorough_records_and_errors() {
    let rules = Rules {
        max_record_bytes: usize::MAX,
        allow_custom_actions: true,
        now: chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .into(),
        collector_entries: false,
    };
    let strict = Rules {
        allow_custom_actions: false,
        ..rules.clone()
    };
    // An import's: provenance read, not refused.
    let own = Rules {
        collector_entries: true,
        ..rules.clone()
    };
    let lines = variations::lines();
    let mut fast_ones = 0;
    // One parser for every line, in two orders: each line is read into what the line
    // before left (other fields, other shapes, failed lines).
    for order in [false, true] {
        let mut parser = LineParser::default();
        let mut lines: Vec<&String> = lines.iter().collect();
        if order {
            lines.reverse();
        }
        for line in lines {
            for default_org in [None, Some("org-default")] {
                for rules in [&rules, &strict, &own] {
                    let slow = thorough::parse(line, default_org, rules);
                    if straight::read(&mut parser.record, line, default_org, rules) {
                        fast_ones += 1;
                        assert_eq!(slow.as_ref(), Ok(&parser.record), "{line}");
                    }
                    let got = parser.parse(line.as_bytes(), default_org, rules);
                    assert_eq!(got.map(|r| r.clone()), slow, "{line}");
                    // The line again, over its own record.
                    let again = parser.parse(line.as_bytes(), default_org, rules);
                    assert_eq!(again.map(|r| r.clone()), slow, "{line} twice");
                }
            }
        }
    }
    // The ordinary lines do take the fast way.
    let mut record = LineParser::default().record;
    assert!(straight::read(&mut record, variations::BASE, None, &rules));
    assert!(
        fast_ones > lines.len(),
        "{fast_ones} of {} lines",
        lines.len()
    );
    assert_eq!(
        parse_json_line(variations::BASE.as_bytes(), None, &rules),
        Ok(record)
    );
    // And so do an export's lines on import: chain fields, `received_at` and provenance.
    let mut exported: Value = serde_json::from_str(variations::BASE).unwrap();
    exported["seq"] = json!(17);
    exported["prev_hash"] = json!("ab".repeat(32));
    exported["hash"] = json!("cd".repeat(32));
    exported["received_at"] = json!("2026-11-27T10:00:01.000002Z");
    exported["provenance"] = json!({"writer": "ingest", "key_id": "key_1"});
    let line = exported.to_string();
    let mut record = LineParser::default().record;
    assert!(straight::read(&mut record, &line, None, &own), "{line}");
    assert_eq!(thorough::parse(&line, None, &own), Ok(record));
    assert!(!straight::read(
        &mut LineParser::default().record,
        &line,
        None,
        &rules
    ));
}

fn full() -> Value {
    json!({
        "id": "evt-1",
        "org_id": "acme",
        "time": "2026-11-27T11:00:00.123456+01:00",
        "actor": {"id": "u1", "name": "Ada", "email": "ada@example.com", "kind": "user"},
        "action": "repository.settings_changed",
        "category": "not-trusted",
        "target": {"kind": "repository", "id": "r1", "name": "web"},
        "repository": "acme/web",
        "outcome": "failure",
        "message": "made public",
        "metadata": {
            "ip": "10.0.0.1",
            "user_agent": "curl/8",
            "scan_type": "sast",
            "changes": [{"field": "visibility", "old": "private", "new": "public"}],
            "ticket": {"id": 7, "tags": ["a", null, 1.5]},
        },
        "schema_version": 1,
        "received_at": "2026-11-27T10:00:01Z",
        "seq": 3,
        "prev_hash": "ab",
        "hash": "cd",
    })
}

/// Every JSON path of `v` (objects and the first element of arrays).
fn paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut p = prefix.clone();
                p.push(k.clone());
                out.push(p.clone());
                paths(child, p, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let mut p = prefix;
            p.push("0".into());
            out.push(p.clone());
            paths(&items[0], p, out);
        }
        _ => {}
    }
}

fn edit(v: &mut Value, path: &[String], change: &dyn Fn(&mut Value, &str)) {
    let (last, parents) = path.split_last().unwrap();
    let mut at = v;
    for p in parents {
        at = match at {
            Value::Object(m) => m.get_mut(p).unwrap(),
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    change(at, last);
}

/// The straight path never accepts what the thorough one refuses, and builds the same record.
#[test]
fn both_paths_agree_on_every_single_change_of_a_full_record() {
    let rules = Rules::at(crate::time::parse_rfc3339("2026-11-27T12:00:00Z").unwrap());
    let base = full();
    let mut all = Vec::new();
    paths(&base, Vec::new(), &mut all);
    let replacements = [
        json!(null),
        json!(""),
        json!(1),
        json!(1.5),
        json!(-1),
        json!(5_000_000_000u64),
        json!(true),
        json!({}),
        json!([]),
        json!("x"),
        json!("2026-11-27T11:00:00Z"),
        json!("user"),
        json!("a@b.co"),
        json!("scan.triggered"),
        json!("acme"),
    ];
    let mut lines = vec![base.to_string()];
    for path in &all {
        let mut removed = base.clone();
        edit(&mut removed, path, &|parent, key| match parent {
            Value::Object(m) => {
                m.remove(key);
            }
            Value::Array(a) => {
                a.remove(0);
            }
            _ => {}
        });
        lines.push(removed.to_string());
        for r in &replacements {
            let mut changed = base.clone();
            edit(&mut changed, path, &|parent, key| match parent {
                Value::Object(m) => {
                    m.insert(key.to_string(), r.clone());
                }
                Value::Array(a) => a[0] = r.clone(),
                _ => {}
            });
            lines.push(changed.to_string());
        }
    }
    let mut extra = base.clone();
    extra["unknown"] = json!(1);
    lines.push(extra.to_string());
    lines.push(r#"{"org_id":"acme","org_id":"other"}"#.into());
    lines.push(base.to_string().replacen(
        "\"id\":\"evt-1\",",
        "\"id\":\"evt-1\",\"id\":\"evt-2\",",
        1,
    ));

    let mut straight = 0;
    for line in &lines {
        for org in [None, Some("globex")] {
            let thorough = thorough::parse(line, org, &rules);
            let mut fast = LineParser::default().record;
            if straight::read(&mut fast, line, org, &rules) {
                straight += 1;
                assert_eq!(Ok(&fast), thorough.as_ref(), "{line} (default org {org:?})");
            }
            assert_eq!(
                parse_json_line(line.as_bytes(), org, &rules),
                thorough,
                "{line}"
            );
        }
    }
    // The straight path is taken for the valid variants, not only for the base record.
    assert!(straight > 40, "straight path taken {straight} times");
}

/// What belongs to the collector alone is refused in an app's record, on both paths, each
/// with its own field and rule; the collector's own entries may carry it.
#[test]
fn an_app_record_cannot_carry_what_belongs_to_the_collector() {
    let rules = Rules::at(crate::time::parse_rfc3339("2026-11-27T12:00:00Z").unwrap());
    let own = Rules {
        collector_entries: true,
        ..rules.clone()
    };
    let cases: [(&str, Value, &str); 6] = [
        ("provenance", json!({"writer": "collector"}), "provenance"),
        (
            "provenance",
            json!({"writer": "ingest", "key_id": "key_1"}),
            "provenance",
        ),
        ("provenance", json!("anything"), "provenance"),
        ("id", json!("codestax:apikey-revoked-key_1"), "id"),
        ("id", json!("CODESTAX:read-1"), "id"),
        ("action", json!("audit_log.exported"), "action"),
    ];
    for (key, value, field) in cases {
        let mut v = full();
        v[key] = value.clone();
        let line = v.to_string();
        let errors = parse_json_line(line.as_bytes(), None, &rules).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{key}={value}: {errors}");
        assert_eq!(errors.0[0].field, field, "{key}={value}");
        assert!(
            errors.0[0].reason.contains("collector"),
            "{key}={value}: {errors}"
        );
        if key != "provenance" || value.is_object() {
            let record = parse_json_line(line.as_bytes(), None, &own).unwrap();
            assert!(crate::validate(&record, &own).is_ok());
        }
    }
    // A custom action in the collector's category is refused too, and ids that only
    // contain the prefix further on are an app's to use.
    let custom = Rules {
        allow_custom_actions: true,
        ..rules.clone()
    };
    let mut v = full();
    v["action"] = json!("audit_log.erased");
    assert!(parse_json_line(v.to_string().as_bytes(), None, &custom).is_err());
    v["action"] = json!("repository.settings_changed");
    v["id"] = json!("app-codestax:1");
    assert!(parse_json_line(v.to_string().as_bytes(), None, &rules).is_ok());
    v["provenance"] = Value::Null;
    assert!(parse_json_line(v.to_string().as_bytes(), None, &rules).is_ok());
}
