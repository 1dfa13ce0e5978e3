//! The native receiver's format: newline-delimited JSON records (the emit format).

use super::Candidate;
use codestax_common::api::RejectedRecord;
use codestax_common::{Rules, parse_json_line};

/// Decodes an NDJSON body; blank lines are skipped, every other line is one candidate. Records
/// without `org_id` take `default_org`.
pub fn decode_ndjson(body: &[u8], default_org: &str, rules: &Rules) -> Vec<Candidate> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            parse_json_line(line, Some(default_org), rules).map_err(|e| RejectedRecord {
                line: i + 1,
                id: id_of(line),
                errors: e.0,
            })
        })
        .collect()
}

/// The `id` of a line that failed validation, when it can still be read.
fn id_of(line: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    value.get("id")?.as_str().map(str::to_string)
}
