//! `Logs::for_each` against prost's and serde's decoding of the whole request: the same records
//! in the same order under the same Resource, whatever the request; hostile bytes never panic;
//! a record too large or malformed is rejected alone.

use codestax_otlp_receiver::{Logs, Unread};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message;

/// What a walk handed over: (position, resource attributes, record or why not).
type Walked = Vec<(usize, Vec<KeyValue>, Result<LogRecord, Unread>)>;

fn walk(logs: Logs<'_>, max: usize) -> Result<Walked, String> {
    let mut walked = Vec::new();
    logs.for_each(max, |item| {
        walked.push((item.position, item.resource.to_vec(), item.log));
    })
    .map_err(|refusal| refusal.message)?;
    Ok(walked)
}

/// The records of a decoded request, as a walk should hand them over.
fn expected(request: &ExportLogsServiceRequest) -> Walked {
    let mut out = Vec::new();
    for resource_logs in &request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map_or_else(Vec::new, |r| r.attributes.clone());
        for scope_logs in &resource_logs.scope_logs {
            for log in &scope_logs.log_records {
                out.push((out.len() + 1, resource.clone(), Ok(log.clone())));
            }
        }
    }
    out
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    let value = prop_oneof![
        "[a-z@. ]{0,12}".prop_map(any_value::Value::StringValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
    ];
    ("[a-z.]{0,10}", proptest::option::of(value)).prop_map(|(key, value)| KeyValue {
        key,
        value: Some(AnyValue { value }),
        ..Default::default()
    })
}

fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        any::<u64>(),
        0..25i32,
        "[A-Z]{0,5}",
        proptest::collection::vec(key_value(), 0..4),
        proptest::option::of("[ -~]{0,20}"),
    )
        .prop_map(|(time, severity, text, attributes, body)| LogRecord {
            time_unix_nano: time,
            severity_number: severity,
            severity_text: text,
            attributes,
            body: body.map(|b| AnyValue {
                value: Some(any_value::Value::StringValue(b)),
            }),
            ..Default::default()
        })
}

fn request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope_logs =
        proptest::collection::vec(log_record(), 0..4).prop_map(|log_records| ScopeLogs {
            log_records,
            ..Default::default()
        });
    let resource = proptest::option::of(proptest::collection::vec(key_value(), 0..3).prop_map(
        |attributes| Resource {
            attributes,
            ..Default::default()
        },
    ));
    let resource_logs = (resource, proptest::collection::vec(scope_logs, 0..3)).prop_map(
        |(resource, scope_logs)| ResourceLogs {
            resource,
            scope_logs,
            schema_url: "https://opentelemetry.io/schemas/1.0".into(),
        },
    );
    proptest::collection::vec(resource_logs, 0..4)
        .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_protobuf_walk_hands_over_what_the_whole_request_decodes_to(request in request()) {
        let bytes = request.encode_to_vec();
        prop_assert_eq!(walk(Logs::Protobuf(&bytes), usize::MAX).unwrap(), expected(&request));
    }

    #[test]
    fn a_json_walk_hands_over_what_the_whole_request_decodes_to(request in request()) {
        let json = serde_json::to_vec(&request).unwrap();
        let decoded: ExportLogsServiceRequest = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(walk(Logs::Json(&json), usize::MAX).unwrap(), expected(&decoded));
    }

    /// Any bytes: no panic; where prost decodes the whole request, the walk hands over the same.
    #[test]
    fn hostile_protobuf_never_panics_and_agrees_with_prost(
        request in request(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = request.encode_to_vec();
        for (at, byte) in flips {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
        }
        let bytes = &bytes[..cut.index(bytes.len() + 1)];
        let walked = walk(Logs::Protobuf(bytes), usize::MAX);
        if let Ok(whole) = ExportLogsServiceRequest::decode(bytes) {
            prop_assert_eq!(walked.unwrap(), expected(&whole));
        }
    }

    #[test]
    fn hostile_json_never_panics_and_agrees_with_serde(
        request in request(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), b' '..b'~'), 0..3),
    ) {
        let mut json = serde_json::to_vec(&request).unwrap();
        for (at, byte) in flips {
            let i = at.index(json.len());
            json[i] = byte;
        }
        let json = &json[..cut.index(json.len() + 1)];
        let walked = walk(Logs::Json(json), usize::MAX);
        if let Ok(whole) = serde_json::from_slice::<ExportLogsServiceRequest>(json) {
            prop_assert_eq!(walked.unwrap(), expected(&whole));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = walk(Logs::Protobuf(&bytes), 64);
        let _ = walk(Logs::Json(&bytes), 64);
    }
}

fn tag(field: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn log(action: &str) -> LogRecord {
    LogRecord {
        attributes: vec![string_kv("audit.action", action)],
        ..Default::default()
    }
}

#[test]
fn the_resource_applies_wherever_it_stands_in_its_resource_logs() {
    let resource = Resource {
        attributes: vec![string_kv("audit.org_id", "acme")],
        ..Default::default()
    };
    let scope_logs = ScopeLogs {
        log_records: vec![log("scan.triggered"), log("scan.completed")],
        ..Default::default()
    };
    // Protobuf: scope_logs (2) before resource (1), which prost also reads so.
    let resource_logs = [
        tag(2, &scope_logs.encode_to_vec()),
        tag(1, &resource.encode_to_vec()),
    ]
    .concat();
    let bytes = tag(1, &resource_logs);
    let whole = ExportLogsServiceRequest::decode(&bytes[..]).unwrap();
    let walked = walk(Logs::Protobuf(&bytes), usize::MAX).unwrap();
    assert_eq!(walked, expected(&whole));
    assert_eq!(walked[1].1, resource.attributes);
    // JSON: "scopeLogs" before "resource".
    let json = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":{},"resource":{}}}]}}"#,
        serde_json::to_string(&[&scope_logs]).unwrap(),
        serde_json::to_string(&resource).unwrap()
    );
    let walked = walk(Logs::Json(json.as_bytes()), usize::MAX).unwrap();
    assert_eq!(walked, expected(&serde_json::from_str(&json).unwrap()));
    assert_eq!(walked[0].1, resource.attributes);
}

#[test]
fn a_record_too_large_or_malformed_is_rejected_alone() {
    let big = log(&"x".repeat(1000));
    let mut bad_utf8 = tag(3, b"\xff\xfe"); // severity_text: not UTF-8
    bad_utf8.extend(log("scan.failed").encode_to_vec());
    let scope_logs = [
        tag(2, &log("scan.triggered").encode_to_vec()),
        tag(2, &big.encode_to_vec()),
        tag(2, &bad_utf8),
        tag(2, &log("scan.completed").encode_to_vec()),
    ]
    .concat();
    let bytes = tag(1, &tag(2, &scope_logs));
    let walked = walk(Logs::Protobuf(&bytes), 600).unwrap();
    let positions: Vec<usize> = walked.iter().map(|w| w.0).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(walked[0].2, Ok(log("scan.triggered")));
    assert!(
        matches!(walked[1].2, Err(Unread::TooLarge { max: 600, .. })),
        "{:?}",
        walked[1].2
    );
    assert!(
        matches!(&walked[2].2, Err(Unread::Malformed(m)) if m.contains("UTF-8")),
        "{:?}",
        walked[2].2
    );
    assert_eq!(walked[3].2, Ok(log("scan.completed")));
    // JSON: the same for a record over the limit and one of a wrong type.
    let json = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{},{},{{"timeUnixNano":[]}},{}]}}]}}]}}"#,
        serde_json::to_string(&log("scan.triggered")).unwrap(),
        serde_json::to_string(&big).unwrap(),
        serde_json::to_string(&log("scan.completed")).unwrap(),
    );
    let walked = walk(Logs::Json(json.as_bytes()), 600).unwrap();
    assert_eq!(walked[0].2, Ok(log("scan.triggered")));
    assert!(
        matches!(walked[1].2, Err(Unread::TooLarge { max: 600, .. })),
        "{:?}",
        walked[1].2
    );
    assert!(
        matches!(walked[2].2, Err(Unread::Malformed(_))),
        "{:?}",
        walked[2].2
    );
    assert_eq!(walked[3].2, Ok(log("scan.completed")));
}

#[test]
fn a_resource_too_large_rejects_its_records_and_no_other() {
    let big = Resource {
        attributes: vec![string_kv("k", &"v".repeat(1000))],
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![
            ResourceLogs {
                resource: Some(big),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![log("a.b"), log("c.d")],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![log("e.f")],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    for logs in [
        walk(Logs::Protobuf(&request.encode_to_vec()), 600),
        walk(Logs::Json(&serde_json::to_vec(&request).unwrap()), 600),
    ] {
        let walked = logs.unwrap();
        assert!(matches!(walked[0].2, Err(Unread::ResourceTooLarge { .. })));
        assert!(matches!(walked[1].2, Err(Unread::ResourceTooLarge { .. })));
        assert_eq!(walked[2].2, Ok(log("e.f")));
        assert_eq!(walked[2].0, 3);
    }
}

#[test]
fn broken_framing_refuses_the_request() {
    let whole = tag(1, &tag(2, &tag(2, &log("a.b").encode_to_vec())));
    let cut = &whole[..whole.len() - 1];
    let refused = walk(Logs::Protobuf(cut), usize::MAX).unwrap_err();
    assert!(refused.starts_with("malformed OTLP protobuf:"), "{refused}");
    // resource_logs as a varint, not a message.
    let refused = walk(Logs::Protobuf(&[0x08, 0x01]), usize::MAX).unwrap_err();
    assert!(refused.contains("resource_logs"), "{refused}");
    for json in [
        r#"{"resourceLogs": 5}"#,
        r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{}]"#,
        "[]",
    ] {
        let refused = walk(Logs::Json(json.as_bytes()), usize::MAX).unwrap_err();
        assert!(
            refused.starts_with("malformed OTLP JSON:"),
            "{json}: {refused}"
        );
    }
}
