//! Records as the agent spools and forwards them: the protobuf encoding of their OTLP LogRecord
//! in the attributes style ([`codestax_common::otlp::to_log_record`]). Encoded once, when a
//! record enters the spool; the forwarder copies the bytes into requests as they are.

use codestax_common::otlp::{record_from_log, to_log_record};
use codestax_common::{AuditRecord, Rules};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;

/// Appends the encoded LogRecord of `record` to `out`.
pub fn encode_record(record: &AuditRecord, out: &mut Vec<u8>) {
    to_log_record(record)
        .encode(out)
        .expect("a Vec has room for any message");
}

/// The record an encoded LogRecord carries (for the quarantine, and for tests).
pub fn decode_record(bytes: &[u8]) -> Result<AuditRecord, String> {
    let log = LogRecord::decode(bytes).map_err(|e| format!("not an encoded LogRecord: {e}"))?;
    let rules = Rules {
        max_record_bytes: usize::MAX,
        allow_custom_actions: true,
        now: chrono::Utc::now(),
    };
    record_from_log(&log, &[], None, &rules).map_err(|e| e.to_string())
}
