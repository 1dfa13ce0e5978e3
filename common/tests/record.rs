//! The record model end to end: emit-format round trips, validation, canonical JSON and OTLP.

use chrono::{DateTime, Duration, Utc};
use codestax_common::otlp::{record_from_log, to_log_record, to_log_record_with_body};
use codestax_common::{AuditRecord, FieldError, Rules, parse_json_line, record_from_value};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    codestax_common::time::parse_rfc3339("2026-11-27T12:00:00Z").unwrap()
}

fn rules() -> Rules {
    Rules::at(now())
}

fn full_record_json() -> Value {
    json!({
        "id": "evt-0001",
        "org_id": "acme",
        "time": "2026-11-27T10:15:30.123456Z",
        "actor": {"id": "u-42", "name": "Ada Lovelace", "email": "ada@acme.example", "kind": "user"},
        "action": "repository.settings_changed",
        "target": {"kind": "repository", "id": "r-7", "name": "acme/api"},
        "repository": "acme/api",
        "outcome": "success",
        "message": "Changed the default branch",
        "metadata": {
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0",
            "changes": [{"field": "default_branch", "old": "master", "new": "main"}],
            "ticket": "SEC-12",
            "attempts": 3,
            "ratio": 0.5,
            "flags": [true, null, "x"],
            "nested": {"a": {"b": 1}}
        },
        "schema_version": 1
    })
}

fn parse(v: Value) -> Result<AuditRecord, Vec<FieldError>> {
    record_from_value(v, &rules()).map_err(|e| e.0)
}

fn fields(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn emit_format_round_trips() {
    let record = parse(full_record_json()).unwrap();
    assert_eq!(record.category, "repository", "category is derived");
    let line = serde_json::to_string(&record).unwrap();
    let again = parse_json_line(line.as_bytes(), None, &rules()).unwrap();
    assert_eq!(record, again);
    // The derived serde and the validating parser read the same format.
    let via_serde: AuditRecord = serde_json::from_str(&line).unwrap();
    assert_eq!(record, via_serde);
}

#[test]
fn category_is_never_trusted_from_input() {
    let mut v = full_record_json();
    v["category"] = json!("auth");
    assert_eq!(parse(v).unwrap().category, "repository");
}

#[test]
fn minimal_record_takes_defaults() {
    let r = parse(json!({
        "org_id": "acme", "time": "2026-11-27T10:00:00+01:00",
        "actor": {"id": "sys", "kind": "system"}, "action": "scan.completed"
    }))
    .unwrap();
    assert_eq!(r.id, None);
    assert_eq!(
        codestax_common::time::format_rfc3339(&r.time),
        "2026-11-27T09:00:00.000000Z"
    );
    assert_eq!(r.outcome, codestax_common::Outcome::Success);
    assert_eq!(r.schema_version, 1);
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = parse(json!({
        "id": "x".repeat(129),
        "time": "2027-01-01T00:00:00Z",
        "actor": {"id": "", "email": "not-an-email"},
        "action": "scan.trigered",
        "metadata": {"ip": "999.1.1.1", "changes": [{"old": 1}]},
        "acter": "typo"
    }))
    .unwrap_err();
    let got = fields(&errors);
    for want in [
        "id",
        "org_id",
        "time",
        "actor.id",
        "actor.email",
        "action",
        "metadata.ip",
        "metadata.changes[0].field",
        "acter",
    ] {
        assert!(got.contains(&want), "missing {want} in {errors:?}");
    }
    let text = codestax_common::RecordErrors(errors).to_string();
    assert!(
        text.contains("id: 129 bytes, over the limit of 128 bytes"),
        "{text}"
    );
    assert!(text.contains("org_id: required"), "{text}");
    assert!(text.contains("more than 1 day in the future"), "{text}");
    assert!(
        text.contains("actor.email: not a valid email address"),
        "{text}"
    );
    assert!(text.contains("did you mean \"scan.triggered\""), "{text}");
    assert!(text.contains("acter: unknown field"), "{text}");
}

#[test]
fn required_fields() {
    let errors = parse(json!({})).unwrap_err();
    assert_eq!(fields(&errors), ["time", "actor", "org_id", "action"]);
    assert!(errors.iter().all(|e| e.reason == "required"), "{errors:?}");

    // Users need an email; API keys and systems do not.
    let mut v = full_record_json();
    v["actor"] = json!({"id": "u1", "kind": "user"});
    let errors = parse(v).unwrap_err();
    assert_eq!(
        errors,
        [FieldError::new(
            "actor.email",
            "required for actors of kind user"
        )]
    );
    let mut v = full_record_json();
    v["actor"] = json!({"id": "key-1", "kind": "api_key"});
    assert!(parse(v).is_ok());
}

#[test]
fn time_bounds() {
    let mut v = full_record_json();
    v["time"] = json!("1999-12-31T23:59:59Z");
    assert_eq!(fields(&parse(v).unwrap_err()), ["time"]);
    let mut v = full_record_json();
    v["time"] = json!(codestax_common::time::format_rfc3339(
        &(now() + Duration::hours(23))
    ));
    assert!(
        parse(v).is_ok(),
        "less than a day ahead is fine (clock skew)"
    );
    let mut v = full_record_json();
    v["time"] = json!("yesterday");
    let errors = parse(v).unwrap_err();
    assert_eq!(fields(&errors), ["time"]);
    assert!(errors[0].reason.contains("RFC 3339"));
    let mut v = full_record_json();
    v["time"] = json!(1700000000);
    assert_eq!(
        parse(v).unwrap_err()[0].reason,
        "expected an RFC 3339 string, got a number"
    );
}

#[test]
fn wrong_types_and_enums_name_the_field() {
    let mut v = full_record_json();
    v["actor"]["kind"] = json!("robot");
    v["target"]["kind"] = json!("planet");
    v["outcome"] = json!(true);
    v["repository"] = json!(7);
    let errors = parse(v).unwrap_err();
    assert_eq!(
        fields(&errors),
        ["actor.kind", "target.kind", "repository", "outcome"]
    );
    assert!(
        errors[0]
            .reason
            .contains("expected one of user, api_key, system"),
        "{errors:?}"
    );
}

#[test]
fn size_limit_is_on_the_serialised_record() {
    let mut v = full_record_json();
    v["message"] = json!("m".repeat(70_000));
    let errors = parse(v.clone()).unwrap_err();
    assert_eq!(fields(&errors), ["record"]);
    assert!(
        errors[0].reason.contains("over the limit of 65536 bytes"),
        "{errors:?}"
    );
    let mut big = rules();
    big.max_record_bytes = 128 * 1024;
    assert!(
        record_from_value(v, &big).is_ok(),
        "the limit is configurable"
    );
}

#[test]
fn bad_lines() {
    let e = parse_json_line(b"{\"org_id\": \"a\xff\"}", None, &rules()).unwrap_err();
    assert_eq!(e.0[0].field, "record");
    assert!(e.0[0].reason.contains("not valid UTF-8"), "{e}");
    let e = parse_json_line(b"{\"org_id\": ", None, &rules()).unwrap_err();
    assert!(e.0[0].reason.starts_with("not valid JSON"), "{e}");
    let e = parse_json_line(b"[1,2]", None, &rules()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "record: expected a JSON object, got an array"
    );
    let e = parse_json_line(br#"{"message": "\ud800"}"#, None, &rules()).unwrap_err();
    assert!(
        e.0[0].reason.contains("not valid JSON"),
        "lone surrogates are not UTF-8: {e}"
    );
}

#[test]
fn custom_actions_need_the_switch_and_the_form() {
    let mut v = full_record_json();
    v["action"] = json!("billing.invoice_paid");
    let errors = parse(v.clone()).unwrap_err();
    assert_eq!(fields(&errors), ["action"]);
    let mut custom = rules();
    custom.allow_custom_actions = true;
    let r = record_from_value(v.clone(), &custom).unwrap();
    assert_eq!(r.category, "billing");
    v["action"] = json!("Billing Paid");
    assert!(record_from_value(v, &custom).is_err());
}

#[test]
fn canonical_encoding_is_stable_across_field_order() {
    let a = parse(full_record_json()).unwrap();
    // Same record, keys written in reverse order at every level.
    fn reverse(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = serde_json::Map::new();
                for (k, v) in m.iter().rev() {
                    out.insert(k.clone(), reverse(v));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(reverse).collect()),
            v => v.clone(),
        }
    }
    let text: String = {
        let mut s = String::from("{");
        let m = full_record_json();
        let keys: Vec<_> = m.as_object().unwrap().keys().rev().cloned().collect();
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(&format!("{:?}: {}", k, reverse(&m[k])));
        }
        s.push('}');
        s
    };
    let b = parse_json_line(text.as_bytes(), None, &rules()).unwrap();
    assert_eq!(a.canonical_json(), b.canonical_json());
    let canonical = a.canonical_json();
    assert!(
        !canonical.contains(": ") && !canonical.contains(", "),
        "{canonical}"
    );
    assert!(
        canonical.starts_with(r#"{"action":"repository.settings_changed","actor":{"email""#),
        "{canonical}"
    );
}

#[test]
fn otlp_round_trip_attributes_style() {
    let record = parse(full_record_json()).unwrap();
    let log = to_log_record(&record);
    let keys: Vec<_> = log.attributes.iter().map(|kv| kv.key.as_str()).collect();
    for want in [
        "audit.id",
        "audit.org_id",
        "audit.action",
        "enduser.id",
        "audit.actor.email",
        "client.address",
        "user_agent.original",
        "audit.metadata.changes",
        "audit.metadata.ticket",
    ] {
        assert!(keys.contains(&want), "{want} in {keys:?}");
    }
    let back = record_from_log(&log, &[], None, &rules()).unwrap();
    assert_eq!(record, back);
}

#[test]
fn otlp_round_trip_body_style() {
    let record = parse(full_record_json()).unwrap();
    let log = to_log_record_with_body(&record);
    let back = record_from_log(&log, &[], None, &rules()).unwrap();
    assert_eq!(record, back);
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

#[test]
fn otlp_org_from_resource_and_errors_name_attributes() {
    let log = LogRecord {
        time_unix_nano: 1_795_000_000_000_000_000,
        attributes: vec![
            string_attr("audit.action", "auth.login"),
            string_attr("enduser.id", "u-1"),
            string_attr("audit.actor.email", "ada@acme.example"),
            string_attr("service.name", "web"),
        ],
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("signed in".into())),
        }),
        ..Default::default()
    };
    let resource = [string_attr("audit.org_id", "acme")];
    let r = record_from_log(&log, &resource, None, &rules()).unwrap();
    assert_eq!(r.org_id, "acme");
    assert_eq!(r.message.as_deref(), Some("signed in"));
    assert_eq!(r.category, "auth");

    let mut bad = log.clone();
    bad.attributes[2] = string_attr("audit.actor.email", "nope");
    let e = record_from_log(&bad, &[], None, &rules())
        .unwrap_err()
        .to_string();
    assert!(e.contains("org_id: required (OTLP audit.org_id)"), "{e}");
    assert!(
        e.contains("actor.email: not a valid email address (OTLP audit.actor.email)"),
        "{e}"
    );

    let mut no_time = log.clone();
    no_time.time_unix_nano = 0;
    let e = record_from_log(&no_time, &resource, None, &rules())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "time: required (OTLP time_unix_nano)");
}

#[test]
fn otlp_body_style_as_key_value_list_and_bad_json() {
    let record = parse(full_record_json()).unwrap();
    let json = serde_json::to_value(&record).unwrap();
    let log = LogRecord {
        body: Some(codestax_common::otlp::json_to_any(&json)),
        ..Default::default()
    };
    assert_eq!(record_from_log(&log, &[], None, &rules()).unwrap(), record);

    let log = LogRecord {
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("{not json".into())),
        }),
        ..Default::default()
    };
    let e = record_from_log(&log, &[], None, &rules()).unwrap_err();
    assert_eq!(e.0[0].field, "body");

    let mut v = json.clone();
    v["actor"]["email"] = json!("bad");
    let log = LogRecord {
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    };
    let e = record_from_log(&log, &[], None, &rules())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "body.actor.email: not a valid email address");
}

#[test]
fn default_org_fills_only_missing_org() {
    let line = br#"{"time":"2026-11-27T10:00:00Z","actor":{"id":"s","kind":"system"},"action":"scan.completed"}"#;
    let r = parse_json_line(line, Some("acme"), &rules()).unwrap();
    assert_eq!(r.org_id, "acme");
    let line = br#"{"org_id":"globex","time":"2026-11-27T10:00:00Z","actor":{"id":"s","kind":"system"},"action":"scan.completed"}"#;
    let r = parse_json_line(line, Some("acme"), &rules()).unwrap();
    assert_eq!(r.org_id, "globex", "the record's own org wins");
    let log = to_log_record(&r);
    let mut no_org = log.clone();
    no_org.attributes.retain(|kv| kv.key != "audit.org_id");
    assert_eq!(
        record_from_log(&no_org, &[], Some("acme"), &rules())
            .unwrap()
            .org_id,
        "acme"
    );
    let resource = [string_attr("audit.org_id", "initech")];
    assert_eq!(
        record_from_log(&no_org, &resource, Some("acme"), &rules())
            .unwrap()
            .org_id,
        "initech"
    );
}

/// Found by the property test `prop_both_paths_agree_on_near_records` (common/tests/props.rs):
/// this float was read one ulp off (`-9.967917515057507e299`), and read differently by the
/// straight path (serde's derive, through `#[serde(flatten)]`'s buffering) and the thorough one
/// (a `Value`), so a record did not read back as itself. serde_json's `float_roundtrip` reads
/// every float correctly rounded.
#[test]
fn floats_are_read_exactly_and_alike_on_both_paths() {
    let line = r#"{"org_id":"o","time":"2026-07-26T23:18:48.120016Z","actor":{"id":"a","kind":"system"},"action":"auth.logout","metadata":{"changes":[{"field":"f","old":false,"new":{"x":-9.967917515057506e+299,"y":[9.21887995052924e+299]}}],"z":1.4841179210672051e+299}}"#;
    let record = parse_json_line(line.as_bytes(), None, &rules()).unwrap();
    let value: Value = serde_json::from_str(line).unwrap();
    assert_eq!(record_from_value(value, &rules()).as_ref(), Ok(&record));
    let change = &record.metadata.changes[0].new;
    assert_eq!(change["x"].as_f64(), Some(-9.967917515057506e+299));
    assert_eq!(change["y"][0].as_f64(), Some(9.21887995052924e+299));
    assert_eq!(
        record.metadata.extra["z"].as_f64(),
        Some(1.4841179210672051e+299)
    );
    let again = serde_json::to_string(&record).unwrap();
    assert_eq!(
        parse_json_line(again.as_bytes(), None, &rules()),
        Ok(record)
    );
}
