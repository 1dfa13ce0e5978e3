//! The encoded `ExportLogsServiceRequest` of a group of spooled records, written around the
//! records' encoded LogRecords: one ResourceLogs (`service.name = codestax-agent`) with one
//! ScopeLogs (scope `codestax-agent`, the agent's version) holding every record. The bytes are
//! those prost writes for the same message (a test compares them).

use std::sync::OnceLock;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// `ScopeLogs.log_records` (field 2, length-delimited).
pub const LOG_RECORD_TAG: u8 = 0x12;

/// Appends one record to a group's bytes: the `ScopeLogs.log_records` field holding `log`.
pub fn push_log_record(out: &mut Vec<u8>, log: &[u8]) {
    out.push(LOG_RECORD_TAG);
    prost::encoding::encode_varint(log.len() as u64, out);
    out.extend_from_slice(log);
}

/// The request message holding `records` (concatenated `log_records` fields, each made by
/// [`push_log_record`]), after `room` zero bytes (for the gRPC frame header).
pub fn encode_request<'a>(room: usize, records: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let (resource, scope) = envelope();
    let records_len: usize = records.clone().map(<[u8]>::len).sum();
    // ScopeLogs { scope: 1, log_records: 2 }
    let scope_logs_len = field_len(scope.len()) + records_len;
    // ResourceLogs { resource: 1, scope_logs: 2 }
    let resource_logs_len = field_len(resource.len()) + field_len(scope_logs_len);
    // ExportLogsServiceRequest { resource_logs: 1 }
    let mut out = Vec::with_capacity(room + field_len(resource_logs_len));
    out.resize(room, 0);
    header(&mut out, 0x0a, resource_logs_len);
    header(&mut out, 0x0a, resource.len());
    out.extend_from_slice(resource);
    header(&mut out, 0x12, scope_logs_len);
    header(&mut out, 0x0a, scope.len());
    out.extend_from_slice(scope);
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// Bytes of a length-delimited field with a one-byte tag and `len` bytes of content.
fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

fn header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    prost::encoding::encode_varint(len as u64, out);
}

/// The encoded Resource and InstrumentationScope of every request.
fn envelope() -> (&'static [u8], &'static [u8]) {
    static ENVELOPE: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (resource, scope) = ENVELOPE.get_or_init(|| {
        let (resource, scope) = envelope_messages();
        (resource.encode_to_vec(), scope.encode_to_vec())
    });
    (resource, scope)
}

fn envelope_messages() -> (Resource, InstrumentationScope) {
    (
        Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("codestax-agent".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        InstrumentationScope {
            name: "codestax-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::otlp::to_log_record;
    use codestax_common::{Rules, parse_json_line};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};

    #[test]
    fn the_same_bytes_as_prost() {
        for n in [0usize, 1, 3, 200] {
            let logs: Vec<_> = (0..n)
                .map(|i| {
                    let line = format!(
                        r#"{{"id":"r{i}","org_id":"acme","action":"scan.triggered","actor":{{"id":"u1","email":"a@b.co"}},"time":"2025-06-01T00:00:00Z","message":"{}"}}"#,
                        "x".repeat(i * 7)
                    );
                    to_log_record(&parse_json_line(line.as_bytes(), None, &Rules::new()).unwrap())
                })
                .collect();
            let fields: Vec<Vec<u8>> = logs
                .iter()
                .map(|l| {
                    let mut f = Vec::new();
                    push_log_record(&mut f, &l.encode_to_vec());
                    f
                })
                .collect();
            let ours = encode_request(0, fields.iter().map(Vec::as_slice));
            assert_eq!(
                encode_request(5, fields.iter().map(Vec::as_slice)),
                [&[0u8; 5][..], &ours].concat()
            );
            let (resource, scope) = envelope_messages();
            let theirs = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(resource),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope),
                        log_records: logs,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            assert_eq!(ours, theirs.encode_to_vec(), "{n} records");
        }
    }
}
