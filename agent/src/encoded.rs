//! Records as the agent spools and forwards them: the protobuf encoding of their OTLP LogRecord
//! ([`codestax_common::otlp::to_log_record`]: the attributes style, or the body style for the
//! rare record with a dotted metadata key). Encoded once, when a
//! record enters the spool; the forwarder copies the bytes into requests as they are.
//!
//! The encoding is written straight from the record's fields (building the LogRecord first
//! costs some 40 allocations a record); the bytes are the ones prost writes for
//! `to_log_record(record)` (tested).

use codestax_common::otlp::{
    METADATA_PREFIX, json_to_any, needs_body_style, record_from_log, to_log_record,
};
use codestax_common::schema::{ATTRIBUTE_FIELDS, Field, FieldValue, Object, Otlp};
use codestax_common::{AuditRecord, Metadata, Rules};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use serde_json::Value;

/// SeverityNumber INFO.
const SEVERITY_INFO: u8 = 9;

/// Appends the encoded LogRecord of `record` to `out`.
pub fn encode_record(record: &AuditRecord, out: &mut Vec<u8>) {
    if needs_body_style(record) {
        // Written in the body style, as to_log_record does (a dotted key has no flat attribute).
        to_log_record(record)
            .encode(out)
            .expect("a Vec grows as needed");
        return;
    }
    // Fields in tag order, as prost writes them; proto3 defaults (0, "") are left out.
    let nanos = u64::try_from(record.time.timestamp_micros()).unwrap_or(0) * 1_000;
    if nanos != 0 {
        out.push(0x09); // 1: time_unix_nano, fixed64
        out.extend_from_slice(&nanos.to_le_bytes());
    }
    out.extend_from_slice(&[0x10, SEVERITY_INFO]); // 2: severity_number
    out.extend_from_slice(&[0x1a, 4]); // 3: severity_text
    out.extend_from_slice(b"INFO");
    if let Some(message) = &record.message {
        // 5: body, an AnyValue holding a string
        bytes_field(out, 0x2a, field_len(message.len()));
        bytes_field(out, 0x0a, message.len());
        out.extend_from_slice(message.as_bytes());
    }
    // 6: attributes, the table's fields with attributes of their own in its order, then the
    // metadata's other keys.
    let m = &record.metadata;
    for field in ATTRIBUTE_FIELDS {
        let Some(key) = field.attribute() else {
            continue;
        };
        match field.object() {
            // The metadata as it serialises: a free-form key of the field's name wins.
            Object::Metadata => {
                let named = match field.value(record) {
                    Some(FieldValue::Text(s)) => Some(Attr::Text(s)),
                    _ => None,
                };
                if let Some(v) = named_or_extra(m, field.key(), named) {
                    attribute(out, "", key, &v);
                }
            }
            _ => match field.value(record) {
                Some(FieldValue::Text(s)) => text(out, key, s),
                Some(FieldValue::Count(n)) => int(out, key, n as i64),
                _ => {}
            },
        }
    }
    // Then every other metadata key in key order: the fields sent under the prefix
    // ("changes" < "scan_type") merged with the free-form keys.
    let mut named = Field::in_key_order(Object::Metadata)
        .iter()
        .filter(|f| f.otlp() == Otlp::Metadata)
        .filter_map(|&f| {
            let value = match f.value(record)? {
                FieldValue::Text(s) => Attr::Text(s),
                FieldValue::Changes(changes) => {
                    let changes = serde_json::to_value(changes).expect("changes always serialise");
                    Attr::Any(json_to_any(&changes))
                }
                _ => return None,
            };
            Some((f.key(), value))
        })
        .peekable();
    let mut extra = m
        .extra
        .iter()
        .filter(|(k, _)| {
            Field::from_key(Object::Metadata, k).is_none_or(|f| f.attribute().is_none())
        })
        .peekable();
    loop {
        match (named.peek(), extra.peek()) {
            (Some((n, _)), Some((e, _))) if *n == e.as_str() => {
                named.next(); // the free-form key wins
            }
            (Some((n, _)), Some((e, _))) if *n > e.as_str() => {
                let (k, v) = extra.next().expect("peeked");
                attribute(out, METADATA_PREFIX, k, &Attr::of(v));
            }
            (Some(_), _) => {
                let (k, v) = named.next().expect("peeked");
                attribute(out, METADATA_PREFIX, k, &v);
            }
            (None, Some(_)) => {
                let (k, v) = extra.next().expect("peeked");
                attribute(out, METADATA_PREFIX, k, &Attr::of(v));
            }
            (None, None) => break,
        }
    }
    if !record.action.is_empty() {
        // 12: event_name
        bytes_field(out, 0x62, record.action.len());
        out.extend_from_slice(record.action.as_bytes());
    }
}

/// A named metadata field's value, unless a free-form key of the same name overrides it.
fn named_or_extra<'a>(m: &'a Metadata, name: &str, named: Option<Attr<'a>>) -> Option<Attr<'a>> {
    match m.extra.get(name) {
        Some(v) => Some(Attr::of(v)),
        None => named,
    }
}

/// An attribute's value: a string, or any other AnyValue.
enum Attr<'a> {
    Text(&'a str),
    Any(AnyValue),
}

impl Attr<'_> {
    /// The AnyValue of a JSON value ([`json_to_any`]), strings borrowed.
    fn of(value: &Value) -> Attr<'_> {
        match value {
            Value::String(s) => Attr::Text(s),
            other => Attr::Any(json_to_any(other)),
        }
    }
}

/// An int attribute, `key` = `value` (an AnyValue holding an int: field 3, varint).
fn int(out: &mut Vec<u8>, key: &str, value: i64) {
    let value = value as u64;
    let any_len = 1 + encoded_len_varint(value);
    bytes_field(out, 0x32, field_len(key.len()) + field_len(any_len));
    bytes_field(out, 0x0a, key.len());
    out.extend_from_slice(key.as_bytes());
    bytes_field(out, 0x12, any_len);
    out.push(0x18);
    encode_varint(value, out);
}

/// A string attribute, `key` = `value`.
fn text(out: &mut Vec<u8>, key: &str, value: &str) {
    attribute(out, "", key, &Attr::Text(value));
}

/// One `attributes` entry (a KeyValue) whose key is `prefix` + `key`.
fn attribute(out: &mut Vec<u8>, prefix: &str, key: &str, value: &Attr) {
    let key_len = prefix.len() + key.len();
    let any_len = match value {
        Attr::Text(s) => field_len(s.len()),
        Attr::Any(any) => any.encoded_len(),
    };
    bytes_field(out, 0x32, field_len(key_len) + field_len(any_len));
    bytes_field(out, 0x0a, key_len);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(key.as_bytes());
    bytes_field(out, 0x12, any_len);
    match value {
        Attr::Text(s) => {
            bytes_field(out, 0x0a, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Attr::Any(any) => any.encode(out).expect("a Vec has room for any message"),
    }
}

/// Appends `v` as a protobuf varint.
#[inline(always)]
fn encode_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of `v` as a varint.
#[inline(always)]
fn encoded_len_varint(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a length-delimited field with a one-byte tag and `len` bytes of content.
#[inline(always)]
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The tag and length of a length-delimited field.
#[inline(always)]
fn bytes_field(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    encode_varint(len as u64, out);
}

/// The record an encoded LogRecord carries (for the quarantine, and for tests).
pub fn decode_record(bytes: &[u8]) -> Result<AuditRecord, String> {
    let log = LogRecord::decode(bytes).map_err(|e| format!("not an encoded LogRecord: {e}"))?;
    let rules = Rules {
        max_record_bytes: usize::MAX,
        allow_custom_actions: true,
        now: chrono::Utc::now(),
        collector_entries: false,
    };
    record_from_log(&log, &[], None, &rules).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::parse_json_line;

    #[test]
    fn varints_as_prost_writes_them() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            encode_varint(v, &mut ours);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(
                encoded_len_varint(v),
                prost::encoding::encoded_len_varint(v),
                "{v}"
            );
        }
    }

    #[test]
    fn the_same_bytes_as_prost_and_back() {
        let rules = Rules {
            max_record_bytes: usize::MAX,
            allow_custom_actions: true,
            now: chrono::Utc::now(),
            collector_entries: false,
        };
        let mut lines = codestax_common::variations::lines();
        lines.push(
            r#"{"id":"x","org_id":"o","time":"2026-01-01T00:00:00Z","actor":{"id":"k","kind":"api_key"},"action":"scan.triggered","metadata":{"changes":[{"field":"a","old":1,"new":[true,null,2.5,{"k":"v"}]}],"a":1,"b":-7,"c":1.25,"d":true,"e":null,"f":[],"g":{},"h":"text","ip":"::1","zz":{"n":{"m":[1]}}}}"#.into(),
        );
        lines.push(format!(
            r#"{{"org_id":"o","time":"2026-01-01T00:00:00Z","actor":{{"id":"s","kind":"system"}},"action":"scan.triggered","message":"{}"}}"#,
            "long ".repeat(100)
        ));
        let mut checked = 0;
        for line in &lines {
            let Ok(record) = parse_json_line(line.as_bytes(), Some("d"), &rules) else {
                continue;
            };
            let mut ours = Vec::new();
            encode_record(&record, &mut ours);
            assert_eq!(ours, to_log_record(&record).encode_to_vec(), "{line}");
            if record.id.is_some() {
                // What was sent reads back (received_at is not sent; whole numbers beyond i64
                // travel as doubles).
                let mut back = decode_record(&ours).unwrap();
                let mut again = Vec::new();
                encode_record(&back, &mut again);
                assert_eq!(again, ours, "{line}");
                back.received_at = record.received_at;
                if !line.contains("18446744073709551615") {
                    assert_eq!(back, record, "{line}");
                }
            }
            checked += 1;
        }
        assert!(checked > 100, "{checked}");

        // Free-form keys named like the metadata's fields (not made by parsing, but possible in
        // a record built in code) win, as in to_log_record.
        let line = lines.last().unwrap();
        let mut record = parse_json_line(line.as_bytes(), Some("d"), &rules).unwrap();
        record.metadata.ip = Some("10.0.0.1".into());
        record.metadata.user_agent = Some("ua".into());
        record.metadata.scan_type = Some("sast".into());
        record.metadata.changes = vec![codestax_common::Change {
            field: "f".into(),
            old: Value::Null,
            new: Value::from(1),
        }];
        for extra in [
            vec![],
            vec!["ip", "user_agent", "scan_type", "changes", "a", "d", "zz"],
            vec!["changes"],
            vec!["scan_type", "b"],
            vec!["user_agent"],
        ] {
            record.metadata.extra = extra
                .iter()
                .map(|k| (k.to_string(), Value::from(format!("extra {k}"))))
                .collect();
            let mut ours = Vec::new();
            encode_record(&record, &mut ours);
            assert_eq!(ours, to_log_record(&record).encode_to_vec(), "{extra:?}");
            record.metadata.scan_type = None;
        }
    }
}
