//! Property tests of the parsers in common that take outside bytes: emit lines
//! (`parse_json_line`, both of its paths), the OTLP mapping both ways, and time bounds.
//! No panic on any input; every accepted record round-trips; every refusal names a field.
//! Longer run: `PROPTEST_CASES=20000 cargo test --release -p codestax-common --test props`.

#[path = "support/records.rs"]
mod records;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use codestax_common::otlp::{
    METADATA_PREFIX, ORG_ATTRIBUTE, any_to_json, record_from_log, to_log_record,
    to_log_record_with_body,
};
use codestax_common::schema::{ATTRIBUTE_FIELDS, Field, Object};
use codestax_common::time::{Bound, format_rfc3339, parse_rfc3339, parse_time_bound};
use codestax_common::{AuditRecord, LineParser, RecordErrors, parse_json_line};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use proptest::prelude::*;
use records::{Shape, cases, rules};
use serde_json::Value;

/// The record's fields: where an error may point, besides the input's own (unknown) keys.
/// (`record` for the whole line, `body` for an OTLP body, or a field of the table.)
fn is_field(root: &str) -> bool {
    matches!(root, "record" | "body") || Field::from_key(Object::Record, root).is_some()
}

/// Every error names a field: a record field, or a key the input has.
fn assert_names_fields(errors: &RecordErrors, input_keys: &[String], what: &str) {
    assert!(!errors.0.is_empty(), "refused without a reason: {what}");
    for e in &errors.0 {
        let root = e.field.split(['.', '[']).next().unwrap_or_default();
        assert!(
            is_field(root) || input_keys.iter().any(|k| *k == e.field || k == root),
            "error {e} names no field of {what}"
        );
        assert!(!e.reason.is_empty(), "error without a reason: {what}");
    }
}

fn keys_of(line: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// An accepted record reads back the same from its JSON and from its canonical JSON.
fn assert_round_trips(record: &AuditRecord, rules: &codestax_common::Rules) {
    let json = serde_json::to_string(record).unwrap();
    assert_eq!(
        parse_json_line(json.as_bytes(), None, rules).as_ref(),
        Ok(record),
        "{json}"
    );
    let canonical = record.canonical_json();
    assert_eq!(
        parse_json_line(canonical.as_bytes(), None, rules).as_ref(),
        Ok(record),
        "{canonical}"
    );
}

proptest! {
    #![proptest_config(cases(256))]

    /// Every generated valid record is accepted, by both paths alike, and round-trips.
    #[test]
    fn prop_valid_records_are_accepted_and_round_trip(
        value in records::valid_record(Shape::ANY),
        custom_rules in any::<bool>(),
    ) {
        let line = value.to_string();
        let rules = rules(true);
        let record = parse_json_line(line.as_bytes(), Some("org-default"), &rules);
        let record = match record {
            Ok(r) => r,
            Err(e) => panic!("valid record refused: {e}\n{line}"),
        };
        assert_eq!(
            records::thorough(line.as_bytes(), Some("org-default"), &rules).as_ref(),
            Ok(&record)
        );
        assert_round_trips(&record, &rules);
        // Under the catalog-only rules, exactly the catalog's actions pass.
        if !custom_rules {
            let strict = records::rules(false);
            let got = parse_json_line(line.as_bytes(), Some("org-default"), &strict);
            assert_eq!(
                got.is_ok(),
                codestax_common::lookup_action(&record.action).is_some(),
                "{line}"
            );
        }
    }

    /// One parser over a run of lines (each read over what the line before left, the agent's
    /// file source) gives, line by line, exactly what the thorough path gives: the same record
    /// or the same errors.
    #[test]
    fn prop_line_parser_is_parse_json_line(
        lines in prop::collection::vec(records::any_line(Shape::ANY), 1..8),
        default_org in proptest::option::of(Just("org-default")),
    ) {
        let unlimited = codestax_common::Rules {
            max_record_bytes: usize::MAX,
            ..rules(true)
        };
        for rules in [unlimited, rules(true), rules(false)] {
            let mut parser = LineParser::default();
            for line in &lines {
                let expected = records::thorough(line, default_org, &rules);
                let got = parser.parse(line, default_org, &rules).map(|r| r.clone());
                assert_eq!(got, expected, "{}", String::from_utf8_lossy(line));
                assert_eq!(parse_json_line(line, default_org, &rules), expected);
            }
        }
    }

    /// Near-records and arbitrary bytes: both paths give the same answer; a refusal names a
    /// field; an acceptance round-trips.
    #[test]
    fn prop_both_paths_agree_on_near_records(
        line in records::any_line(Shape::ANY),
        default_org in proptest::option::of(Just("org-default")),
        custom in any::<bool>(),
    ) {
        let rules = rules(custom);
        let got = parse_json_line(&line, default_org, &rules);
        let thorough = records::thorough(&line, default_org, &rules);
        let text = String::from_utf8_lossy(&line);
        assert_eq!(got, thorough, "{text}");
        match got {
            Ok(record) => assert_round_trips(&record, &rules),
            Err(errors) => assert_names_fields(&errors, &keys_of(&line), &text),
        }
    }

    /// Lines far over the size limit are refused before parsing; any size, no panic.
    #[test]
    fn prop_any_bytes_are_an_answer(line in prop::collection::vec(any::<u8>(), 0..2048)) {
        let rules = rules(false);
        if let Err(e) = parse_json_line(&line, Some("o"), &rules) {
            assert_names_fields(&e, &keys_of(&line), &String::from_utf8_lossy(&line));
        }
    }
}

// ---- OTLP ----

/// An AnyValue tree of any shape.
fn any_value() -> BoxedStrategy<AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        Just(None),
        records::text().prop_map(|s| Some(V::StringValue(s))),
        any::<bool>().prop_map(|b| Some(V::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(V::IntValue(i))),
        any::<f64>().prop_map(|d| Some(V::DoubleValue(d))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Some(V::BytesValue(b))),
        any::<i32>().prop_map(|i| Some(V::StringValueStrindex(i))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(V::ArrayValue(ArrayValue { values })),
            }),
            prop::collection::vec(("[a-z_.]{0,8}", inner), 0..4).prop_map(|kvs| AnyValue {
                value: Some(V::KvlistValue(KeyValueList {
                    values: kvs.into_iter().map(|(k, v)| kv(&k, v)).collect(),
                })),
            }),
        ]
    })
    .boxed()
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

/// Attribute keys the mapping knows, metadata keys and others.
fn attribute_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(ATTRIBUTE_FIELDS.iter().filter_map(|f| Some(f.attribute()?.to_string())).collect::<Vec<_>>()),
        1 => "[a-z_.]{0,10}".prop_map(|k| format!("{METADATA_PREFIX}{k}")),
        1 => "[a-z.]{0,12}",
    ]
}

/// Attribute values: mostly plausible strings for the known keys, else any value.
fn attribute_value() -> impl Strategy<Value = AnyValue> {
    prop_oneof![
        2 => records::id().prop_map(|s| string(&s)),
        1 => prop::sample::select(vec!["user", "system", "api_key", "repository", "success",
            "failure", "scan.triggered", "a@b.example", "10.0.0.1", "acme"])
            .prop_map(string),
        2 => any_value(),
    ]
}

/// A LogRecord of any shape: attributes from the mapping's keys, any body, any times; or the
/// LogRecord of a valid (or nearly valid) record.
fn log_record() -> BoxedStrategy<LogRecord> {
    let arbitrary = (
        prop::collection::vec((attribute_key(), attribute_value()), 0..12),
        proptest::option::of(prop_oneof![
            any_value(),
            records::near_record(Shape::ANY).prop_map(|b| string(&String::from_utf8_lossy(&b))),
        ]),
        prop_oneof![
            Just(0u64),
            any::<u64>(),
            946_684_800_000_000_000u64..1_800_000_000_000_000_000
        ],
        prop_oneof![Just(0u64), any::<u64>()],
    )
        .prop_map(|(attributes, body, time, observed)| LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            attributes: attributes.into_iter().map(|(k, v)| kv(&k, v)).collect(),
            body,
            ..Default::default()
        });
    let from_record = (
        records::valid_record(Shape::ANY),
        prop::collection::vec((attribute_key(), attribute_value()), 0..3),
    )
        .prop_filter_map("a valid record", |(v, extra)| {
            let r = parse_json_line(v.to_string().as_bytes(), Some("o"), &rules(true)).ok()?;
            let mut log = to_log_record(&r);
            log.attributes
                .extend(extra.into_iter().map(|(k, v)| kv(&k, v)));
            Some(log)
        });
    prop_oneof![arbitrary, from_record].boxed()
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any LogRecord under any resource maps to a record or to errors naming a field.
    #[test]
    fn prop_any_log_record_maps_or_names_a_field(
        log in log_record(),
        resource_org in proptest::option::of(attribute_value()),
        default_org in proptest::option::of(Just("acme")),
    ) {
        let resource: Vec<KeyValue> = resource_org.into_iter().map(|v| kv(ORG_ATTRIBUTE, v)).collect();
        match record_from_log(&log, &resource, default_org, &rules(true)) {
            Ok(record) => {
                // What was accepted goes out and comes back the same.
                let back = record_from_log(&to_log_record(&record), &[], None, &rules(true));
                let mut expected = record.clone();
                if !codestax_common::otlp::needs_body_style(&record) {
                    // The attributes style does not carry received_at.
                    expected.received_at = None;
                }
                assert_eq!(back, Ok(expected), "{log:?}");
            }
            Err(errors) => assert_names_fields(&errors, &[], &format!("{log:?}")),
        }
    }

    /// A valid record goes to OTLP and back unchanged, in both styles and through protobuf
    /// bytes (but for `received_at`, which the attributes style does not carry).
    #[test]
    fn prop_records_round_trip_through_otlp(value in records::valid_record(Shape::ANY)) {
        use prost::Message;
        let rules = rules(true);
        let record = parse_json_line(value.to_string().as_bytes(), Some("o"), &rules).unwrap();
        let mut without_received = record.clone();
        if !codestax_common::otlp::needs_body_style(&record) {
            without_received.received_at = None;
        }
        let log = to_log_record(&record);
        assert_eq!(record_from_log(&log, &[], None, &rules), Ok(without_received.clone()));
        let decoded = LogRecord::decode(log.encode_to_vec().as_slice()).unwrap();
        assert_eq!(record_from_log(&decoded, &[], None, &rules), Ok(without_received));
        let body = to_log_record_with_body(&record);
        assert_eq!(record_from_log(&body, &[], None, &rules), Ok(record));
    }

    /// Any bytes to the protobuf decoder, and whatever it decodes through the mapping: no panic.
    #[test]
    fn prop_any_bytes_decode_or_fail(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // Valid requests with bytes flipped, cut or inserted.
        (log_record(), any::<prop::sample::Index>(), any::<u8>(), 0u8..3).prop_map(|(log, at, b, how)| {
            use prost::Message;
            let mut bytes = request(vec![log]).encode_to_vec();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] ^= b,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, b),
                }
            }
            bytes
        }),
    ]) {
        use prost::Message;
        if let Ok(request) = ExportLogsServiceRequest::decode(bytes.as_slice()) {
            map_request(&request);
        }
        if let Ok(request) = serde_json::from_slice::<ExportLogsServiceRequest>(&bytes) {
            map_request(&request);
        }
    }

    /// OTLP/JSON bodies, valid and mutated.
    #[test]
    fn prop_otlp_json_bodies_decode_or_fail(
        log in log_record(),
        cut in any::<prop::sample::Index>(),
        whole in any::<bool>(),
    ) {
        let mut json = serde_json::to_vec(&request(vec![log])).unwrap();
        if !whole {
            json.truncate(cut.index(json.len()));
        }
        if let Ok(request) = serde_json::from_slice::<ExportLogsServiceRequest>(&json) {
            map_request(&request);
        }
    }
}

fn request(log_records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// What the collector does with a request (`decode_otlp`): every LogRecord through the mapping.
fn map_request(request: &ExportLogsServiceRequest) {
    for rl in &request.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        for sl in &rl.scope_logs {
            for log in &sl.log_records {
                if let Err(e) = record_from_log(log, resource, Some("acme"), &rules(true)) {
                    assert_names_fields(&e, &[], &format!("{log:?}"));
                }
            }
        }
    }
}

/// A request whose one LogRecord's body is an AnyValue nested `depth` arrays deep, written by
/// hand (prost's own encoder recurses, and would overflow the stack first).
fn nested_any_value_bytes(depth: usize) -> Vec<u8> {
    fn wrap(tag: u8, inner: Vec<u8>) -> Vec<u8> {
        let mut out = vec![tag];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend(inner);
        out
    }
    // AnyValue { string_value: "leaf" }
    let mut v = wrap(0x0a, b"leaf".to_vec());
    for _ in 0..depth {
        // AnyValue { array_value (5): ArrayValue { values (1): [v] } }
        v = wrap(0x2a, wrap(0x0a, v));
    }
    // LogRecord.body (5) in ScopeLogs.log_records (2) in ResourceLogs.scope_logs (2) in
    // ExportLogsServiceRequest.resource_logs (1).
    wrap(0x0a, wrap(0x12, wrap(0x12, wrap(0x2a, v))))
}

/// Deep nesting is cut at decoding (prost's recursion limit; serde_json's for OTLP/JSON), so
/// the mapping's recursion over AnyValue trees is bounded by the decoders.
#[test]
fn deep_any_values_are_refused_by_the_decoders() {
    use prost::Message;
    let ok = nested_any_value_bytes(20);
    let request = ExportLogsServiceRequest::decode(ok.as_slice()).unwrap();
    let body = request.resource_logs[0].scope_logs[0].log_records[0]
        .body
        .as_ref();
    assert!(
        any_to_json(body)
            .to_string()
            .starts_with("[[[[[[[[[[[[[[[[[[[[")
    );
    map_request(&request);
    let deep = nested_any_value_bytes(5_000);
    assert!(ExportLogsServiceRequest::decode(deep.as_slice()).is_err());

    let json = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{}"x"{}}}]}}]}}]}}"#,
        r#"{"arrayValue":{"values":["#.repeat(5_000),
        "]}}".repeat(5_000)
    );
    assert!(serde_json::from_str::<ExportLogsServiceRequest>(&json).is_err());
    // And `any_to_json` over the deepest tree the decoder lets through.
    let mut v = string("leaf");
    for _ in 0..100 {
        v = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
        };
    }
    let _ = any_to_json(Some(&v));
}

// ---- Time bounds ----

/// A time anywhere chrono can hold it.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        4 => (
            DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
            0u32..1_000_000_000,
        )
            .prop_map(|(s, n)| Utc.timestamp_opt(s, n).unwrap()),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
        1 => Just(Utc::now()),
    ]
}

fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,25}[smhdwy]?",
        "-?[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        any_time().prop_map(|t| t.to_rfc3339()),
        "\\PC{0,20}",
        "[ \t]{0,2}[0-9]{0,3}[ \t]{0,2}[a-zé]?[ \t]{0,2}",
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    /// Any text is a time or a message; relative times never reach back more than 100 years,
    /// whatever their number (`99999999999d`), from any `now`.
    #[test]
    fn prop_time_bounds_never_panic(s in time_text(), now in any_time(), until in any::<bool>()) {
        let bound = if until { Bound::Until } else { Bound::Since };
        if let Ok(t) = parse_time_bound(&s, bound, now) {
            let trimmed = s.trim();
            if trimmed.ends_with(['s', 'm', 'h', 'd', 'w']) && trimmed[..trimmed.len() - 1].bytes().all(|b| b.is_ascii_digit()) {
                assert!(t <= now && now - t <= chrono::Duration::days(100 * 366), "{s:?}");
            }
        }
        let _ = parse_rfc3339(&s);
    }

    /// Formatted times parse back to themselves (cut to microseconds), as bounds too; a bare
    /// date is its day's start (since) or the next day's start (until).
    #[test]
    fn prop_formatted_times_round_trip(t in any_time(), now in any_time()) {
        let t = codestax_common::time::truncate_to_micros(t);
        let text = format_rfc3339(&t);
        if (0..=9999).contains(&t.year()) {
            assert_eq!(parse_rfc3339(&text), Ok(t), "{text}");
            assert_eq!(parse_time_bound(&text, Bound::Since, now), Ok(t), "{text}");
            let date = t.date_naive();
            let day = date.format("%Y-%m-%d").to_string();
            let start = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap());
            assert_eq!(parse_time_bound(&day, Bound::Since, now), Ok(start), "{day}");
            let next = parse_time_bound(&day, Bound::Until, now);
            if date.year() < 9999 || date.ordinal() < 365 {
                assert_eq!(next, Ok(start + chrono::Duration::days(1)), "{day}");
            }
        } else {
            let _ = parse_rfc3339(&text);
        }
    }
}

#[test]
fn huge_relative_times_are_errors() {
    let now = Utc::now();
    for s in [
        "99999999999d",
        "99999999999999999999999d",
        "9223372036854775807s",
        "36601d",
        "5229w",
        "0d",
    ] {
        let got = parse_time_bound(s, Bound::Since, now);
        if s == "0d" {
            assert_eq!(got, Ok(codestax_common::time::truncate_to_micros(now)));
        } else {
            assert!(got.is_err(), "{s}: {got:?}");
        }
    }
}

/// Found by `prop_any_log_record_maps_or_names_a_field`: a record whose metadata has the keys
/// `a` and `a.b` lost `a.b` going through `to_log_record` (the agent's forwarding), and `c.d`
/// came back as `c: {d}`: `audit.metadata.a.b` reads as nesting. Such records now go in the
/// body style.
#[test]
fn dotted_metadata_keys_survive_the_otlp_mapping() {
    let line = r#"{"org_id":"o","time":"2026-11-27T10:00:00Z","actor":{"id":"a","kind":"system"},"action":"auth.logout","metadata":{"a":"x","a.b":1,"c.d":2,"e.":3,".f":4}}"#;
    let rules = rules(false);
    let record = parse_json_line(line.as_bytes(), None, &rules).unwrap();
    let back = record_from_log(&to_log_record(&record), &[], None, &rules);
    assert_eq!(back, Ok(record));
}

/// Found with the case above: read from an SDK's attributes, `audit.metadata.a` = "x" and
/// `audit.metadata.a.b` = 1 were accepted with `a.b` dropped (in either order). Now refused,
/// naming the field and the attribute.
#[test]
fn clashing_dotted_attributes_are_refused_not_dropped() {
    let rules = rules(false);
    let base = [
        ("audit.org_id", "o"),
        ("audit.action", "auth.logout"),
        ("enduser.id", "a"),
        ("audit.actor.kind", "system"),
    ];
    for pair in [
        [("audit.metadata.a", "x"), ("audit.metadata.a.b", "1")],
        [("audit.metadata.a.b", "1"), ("audit.metadata.a", "x")],
    ] {
        let log = LogRecord {
            time_unix_nano: 1_764_237_600_000_000_000,
            attributes: base
                .iter()
                .chain(&pair)
                .map(|(k, v)| kv(k, string(v)))
                .collect(),
            ..Default::default()
        };
        let errors = record_from_log(&log, &[], None, &rules).unwrap_err();
        assert!(errors.0[0].field.starts_with("metadata.a"), "{errors}");
        assert!(errors.0[0].reason.contains("audit.metadata.a"), "{errors}");
    }
    // Nested keys that do not clash still nest.
    let log = LogRecord {
        time_unix_nano: 1_764_237_600_000_000_000,
        attributes: base
            .iter()
            .chain(&[("audit.metadata.t.id", "7"), ("audit.metadata.t.url", "u")])
            .map(|(k, v)| kv(k, string(v)))
            .collect(),
        ..Default::default()
    };
    let record = record_from_log(&log, &[], None, &rules).unwrap();
    assert_eq!(
        record.metadata.extra["t"],
        serde_json::json!({"id": "7", "url": "u"})
    );
}

// ---------------------------------------------------------------------------------------------
// `codestax verify`'s shortcut: a sealed record's hash and leaf from its borrowed view

/// `v` (a valid record) sealed as the collector stores and exports it: `seq`, `received_at`,
/// provenance, `prev_hash`, `hash`; serde's JSON, as an NDJSON export writes it.
fn sealed(v: Value, seq: u64, writer: u8, source: String) -> Option<Value> {
    use codestax_common::Provenance;
    use codestax_common::chain::{GENESIS_HASH, record_hash};
    let mut r: AuditRecord = serde_json::from_value(v).ok()?;
    r.seq = Some(seq);
    r.received_at = Some(r.time);
    let key_id = "key_0123".to_string();
    r.provenance = Some(match writer {
        0 => Provenance::Collector,
        1 => Provenance::Ingest { key_id },
        // Imported before `source` existed, and since.
        2 => Provenance::Imported {
            key_id,
            source: None,
        },
        _ => Provenance::Imported {
            key_id,
            source: Some(source),
        },
    });
    let prev = if seq == 1 {
        GENESIS_HASH.to_string()
    } else {
        "ab".repeat(32)
    };
    r.hash = Some(record_hash(&prev, &r));
    r.prev_hash = Some(prev);
    serde_json::to_value(&r).ok()
}

fn sealed_record() -> BoxedStrategy<Value> {
    (
        records::valid_record(Shape::ANY),
        1u64..5,
        0u8..4,
        "\\PC{1,12}|a\"b\\\\c",
    )
        .prop_filter_map("not a record", |(v, seq, writer, source)| {
            sealed(v, seq, writer, source)
        })
        .boxed()
}

/// The view's answer for `line`, when it gives one, is the `AuditRecord` path's: the same
/// `seq`, leaf, hashes and time. Returns whether the view answered.
fn view_agrees(line: &[u8]) -> Result<bool, TestCaseError> {
    use codestax_common::chain::{check_record_leaf, check_view_leaf};
    use codestax_common::record_view::{RecordView, stored_time};
    let Ok(line) = std::str::from_utf8(line) else {
        return Ok(false);
    };
    let fast = serde_json::from_str::<RecordView>(line).ok().and_then(|v| {
        let time = stored_time(&v.time)?;
        Some((check_view_leaf(&v, &mut String::new())?, time))
    });
    let Some((fast, time)) = fast else {
        return Ok(false);
    };
    let r: AuditRecord = serde_json::from_str(line).map_err(|e| {
        TestCaseError::fail(format!("the view took a line the record refuses: {e}"))
    })?;
    let (seq, leaf) = check_record_leaf(&r)
        .map_err(|e| TestCaseError::fail(format!("the view passed a record that fails: {e}")))?;
    prop_assert_eq!(fast.seq, seq);
    prop_assert_eq!(fast.leaf, leaf);
    prop_assert_eq!(hex::encode(fast.hash), r.hash.clone().unwrap());
    prop_assert_eq!(hex::encode(fast.prev_hash), r.prev_hash.clone().unwrap());
    prop_assert_eq!(time, r.time);
    Ok(true)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn prop_the_view_hashes_sealed_records_as_the_record_does(v in sealed_record()) {
        let line = v.to_string();
        prop_assert!(view_agrees(line.as_bytes())?, "the view declined a plain sealed record: {line}");
        // The canonical form (sorted keys) too.
        let canonical = serde_json::from_value::<AuditRecord>(v).unwrap().canonical_json();
        prop_assert!(view_agrees(canonical.as_bytes())?);
    }

    #[test]
    fn prop_the_view_never_answers_otherwise_on_changed_lines(line in records::near(sealed_record())) {
        view_agrees(&line)?;
    }

    /// Changed lines whose `hash` is then made right again: the view and the record must agree
    /// on content the record accepts, not just on a broken hash.
    #[test]
    fn prop_the_view_agrees_on_changed_lines_with_their_hash_remade(
        line in records::near(sealed_record())
    ) {
        let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&line) else {
            return Ok(());
        };
        let remade = serde_json::from_value::<AuditRecord>(Value::Object(m.clone()))
            .ok()
            .and_then(|r| Some(codestax_common::chain::record_hash(r.prev_hash.as_deref()?, &r)));
        if let Some(hash) = remade {
            m.insert("hash".into(), Value::String(hash));
        }
        view_agrees(Value::Object(m).to_string().as_bytes())?;
    }

    /// A record's content is its canonical form without the fields that say who sent it, when,
    /// under which id and where in the chain; the store compares resends by it (fingerprinted
    /// as it is written), also against the record read back from what was stored.
    #[test]
    fn prop_content_is_the_canonical_form_without_sender_and_chain(v in sealed_record()) {
        use std::hash::Hasher;
        let r = serde_json::from_value::<AuditRecord>(v).unwrap();
        let mut bare = r.clone();
        (bare.id, bare.received_at, bare.provenance) = (None, None, None);
        (bare.seq, bare.prev_hash, bare.hash) = (None, None, None);
        let content = r.content_json();
        prop_assert_eq!(&content, &bare.canonical_json());
        let (mut streamed, mut whole) = (
            std::collections::hash_map::DefaultHasher::new(),
            std::collections::hash_map::DefaultHasher::new(),
        );
        r.hash_content(&mut streamed);
        whole.write(content.as_bytes());
        let whole = whole.finish();
        prop_assert_eq!(streamed.finish(), whole);
        let mut unsealed = std::collections::hash_map::DefaultHasher::new();
        codestax_common::chain::Unsealed::new(&r).hash_content(&mut unsealed);
        prop_assert_eq!(unsealed.finish(), whole);
        let stored: AuditRecord = serde_json::from_str(&r.canonical_json()).unwrap();
        prop_assert_eq!(stored.content_json(), content);
    }

    #[test]
    fn prop_the_view_never_answers_otherwise_on_any_bytes(
        line in prop::collection::vec(any::<u8>(), 0..1024)
    ) {
        view_agrees(&line)?;
    }
}
