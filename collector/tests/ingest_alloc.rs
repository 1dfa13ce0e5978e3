//! Decoding hostile ingest bodies costs memory in proportion to their size: measured with a
//! counting global allocator (its own test binary, so no other test is slowed or disturbed).

use codestax_collector::ingest::{Batch, decode_ndjson, decode_otlp};
use codestax_common::Rules;
use codestax_otlp_receiver::Logs;
use counting::peak_of;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;

#[path = "../../common/tests/support/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// Decoding, result included, costs at most `factor` times the body plus a fixed 1 MiB.
fn assert_bounded(name: &str, body: &[u8], factor: usize) {
    let rules = Rules::new();
    // Lazily built statics (the action catalog, patterns) are a fixed cost: built before measuring.
    drop(decode_ndjson(&body[..body.len().min(4096)], "acme", &rules));
    let (peak, _) = peak_of(|| decode_ndjson(body, "acme", &rules));
    assert_peak(name, body, peak, factor, 1 << 20);
}

fn assert_peak(name: &str, body: &[u8], peak: usize, factor: usize, fixed: usize) {
    eprintln!("{name}: {} bytes, peak {peak} bytes", body.len());
    let bound = factor * body.len() + fixed;
    assert!(
        peak <= bound,
        "{name}: decoding a {} byte body peaked at {peak} bytes allocated (bound {bound})",
        body.len()
    );
}

#[test]
fn a_body_of_empty_objects_costs_its_size() {
    // 200,000 lines of `{}`: each one rejected with several field errors.
    let body = "{}\n".repeat(200_000);
    assert_bounded("empty objects", body.as_bytes(), 4);
}

#[test]
fn a_body_of_unknown_fields_and_bad_json_costs_its_size() {
    let mut body = String::new();
    for i in 0..50_000 {
        match i % 4 {
            0 => body.push_str(&format!("{{\"id\":\"x{i}\",\"k{i}\":1}}\n")),
            1 => body.push_str("[1,2,3]\n"),
            2 => body.push_str("{\"time\":\n"),
            _ => body.push_str("\"s\"\n"),
        }
    }
    assert_bounded("mixed bad lines", body.as_bytes(), 4);
}

#[test]
fn every_rejection_is_counted_and_the_first_are_listed() {
    let body = "{}\n".repeat(1000);
    let batch = decode_ndjson(body.as_bytes(), "acme", &Rules::new());
    assert!(batch.records.is_empty());
    assert_eq!(batch.rejections.total(), 1000);
    assert_eq!(batch.rejections.listed().len(), 50);
    assert_eq!(batch.rejections.listed()[49].line, 50);
    assert_eq!(batch.rejections.unlisted(), 950);
    assert!(batch.rejections.summary().ends_with("... and 950 more"));
}

#[test]
fn a_body_of_valid_small_records_costs_a_small_multiple_of_its_size() {
    let time = chrono::Utc::now().to_rfc3339();
    let mut body = String::new();
    for i in 0..20_000 {
        body.push_str(&format!(
            "{{\"time\":\"{time}\",\"actor\":{{\"id\":\"u\",\"email\":\"u@x.example\"}},\"action\":\"auth.login\",\"id\":\"{i}\"}}\n"
        ));
        body.push_str("{}\n");
    }
    let batch = decode_ndjson(body.as_bytes(), "acme", &Rules::new());
    assert_eq!(
        batch.records.len(),
        20_000,
        "{}",
        batch.rejections.summary()
    );
    // A parsed record is about ten times its smallest JSON form (measured: 10.1x here).
    assert_bounded("valid and empty records", body.as_bytes(), 12);
}

/// OTLP decodes one LogRecord at a time: beyond a multiple of the body like NDJSON's, the fixed
/// part is one encoded LogRecord at the limit (4x the record limit, 256 KiB) decoded into its
/// structs, which tiny fields make larger (measured: 131,000 empty attributes in protobuf, peak
/// 8.4 MB, 32x).
const OTLP_FIXED: usize = 16 << 20;

fn otlp_peak(name: &str, logs: Logs<'_>) -> (usize, Batch) {
    let rules = Rules::new();
    drop(decode_otlp(Logs::Json(b"{}"), "acme", &rules));
    let (peak, batch) = peak_of(|| decode_otlp(logs, "acme", &rules));
    let batch = batch.unwrap_or_else(|refusal| panic!("{name}: refused: {refusal}"));
    (peak, batch)
}

fn wrap(tag: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    prost::encoding::encode_varint(inner.len() as u64, &mut out);
    out.extend_from_slice(inner);
    out
}

/// An `ExportLogsServiceRequest` of one ResourceLogs and one ScopeLogs around `log_records`
/// (each already framed as ScopeLogs field 2).
fn protobuf_request(log_records: &[u8]) -> Vec<u8> {
    wrap(0x0a, &wrap(0x12, log_records))
}

/// Bodies of tiny messages: decoded whole they cost up to ~180x their size (a 2-byte empty
/// LogRecord is a ~200-byte struct in a doubling `Vec`); walked, one record at a time.
#[test]
fn hostile_otlp_protobuf_bodies_cost_their_size_plus_one_record() {
    let n = 2_000_000;
    let empty_log_records = protobuf_request(&[0x12, 0x00].repeat(n / 2));
    // Attributes holding empty arrays, one LogRecord each.
    let array_attribute = wrap(0x12, &wrap(0x32, &wrap(0x12, &[0x2a, 0x00].repeat(8))));
    let array_records = protobuf_request(&array_attribute.repeat(n / array_attribute.len()));
    let empty_scope_logs = wrap(0x0a, &[0x12, 0x00].repeat(n / 2));
    let empty_resource_logs = [0x0a, 0x00].repeat(n / 2);
    // One LogRecord at the limit, of 2-byte empty attributes.
    let limit = 4 * codestax_common::DEFAULT_MAX_RECORD_BYTES;
    let attributes_at_the_limit =
        protobuf_request(&wrap(0x12, &[0x32, 0x00].repeat(limit / 2 - 4)));
    for (name, body) in [
        ("empty log records", empty_log_records),
        ("records of empty arrays", array_records),
        ("empty scope logs", empty_scope_logs),
        ("empty resource logs", empty_resource_logs),
        (
            "one record at the limit of empty attributes",
            attributes_at_the_limit,
        ),
    ] {
        let (peak, batch) = otlp_peak(name, Logs::Protobuf(&body));
        assert!(batch.records.is_empty(), "{name}");
        assert_peak(name, &body, peak, 4, OTLP_FIXED);
    }
}

#[test]
fn hostile_otlp_json_bodies_cost_their_size_plus_one_record() {
    let n = 2_000_000;
    let request = |log_records: &str| {
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{log_records}]}}]}}]}}"#)
    };
    let empty_log_records = request(&vec!["{}"; n / 3].join(","));
    let empty_scope_logs = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{}]}}]}}"#,
        vec!["{}"; n / 3].join(",")
    );
    let empty_resource_logs = format!(r#"{{"resourceLogs":[{}]}}"#, vec!["{}"; n / 3].join(","));
    let limit = 4 * codestax_common::DEFAULT_MAX_RECORD_BYTES;
    let attributes_at_the_limit = request(&format!(
        r#"{{"attributes":[{}]}}"#,
        vec![r#"{"key":""}"#; limit / 11 - 2].join(",")
    ));
    for (name, body) in [
        ("empty log records", empty_log_records),
        ("empty scope logs", empty_scope_logs),
        ("empty resource logs", empty_resource_logs),
        (
            "one record at the limit of empty attributes",
            attributes_at_the_limit,
        ),
    ] {
        let (peak, batch) = otlp_peak(name, Logs::Json(body.as_bytes()));
        assert!(batch.records.is_empty(), "{name}");
        assert_peak(name, body.as_bytes(), peak, 4, OTLP_FIXED);
    }
}

#[test]
fn a_body_of_valid_small_otlp_records_costs_a_small_multiple_of_its_size() {
    let string = |key: &str, value: String| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    };
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64;
    let log_records: Vec<LogRecord> = (0..20_000)
        .flat_map(|i| {
            let record = LogRecord {
                time_unix_nano: now,
                attributes: vec![
                    string("audit.action", "auth.login".into()),
                    string("enduser.id", "u".into()),
                    string("audit.actor.email", "u@x.example".into()),
                    string("audit.id", format!("{i}")),
                ],
                ..Default::default()
            };
            [record, LogRecord::default()]
        })
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = request.encode_to_vec();
    drop(request);
    let (peak, batch) = otlp_peak("valid and empty records", Logs::Protobuf(&body));
    assert_eq!(
        batch.records.len(),
        20_000,
        "{}",
        batch.rejections.summary()
    );
    assert_eq!(batch.rejections.total(), 20_000);
    drop(batch);
    assert_peak("valid and empty OTLP records", &body, peak, 16, 1 << 20);
}
