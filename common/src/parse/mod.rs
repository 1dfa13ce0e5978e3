//! Reading records from outside bytes: one line of the JSON-lines emit format
//! ([`parse_json_line`], or [`LineParser`] for line after line) or a JSON value
//! ([`record_from_value`]).
//!
//! Two paths, one result. The straight path ([`straight`]) reads a line with serde's visitor
//! straight into the fields of a record kept from the line before (its strings reused: a line
//! of the usual shape allocates almost nothing) and checks it with [`validate`]; whenever
//! anything is unusual (a field of the wrong type, a duplicate or unknown key, a key with
//! escapes, a missing required field, a record the rules refuse) it gives up, and the thorough
//! path ([`thorough`]) reads the line through a `serde_json::Value`, field by field, naming
//! every problem. The straight path exists only for speed: it accepts exactly what the thorough
//! one accepts and builds the same record (the tests compare the two on variations of every
//! field).

mod straight;
#[cfg(test)]
mod tests;
mod thorough;
#[doc(hidden)]
pub mod variations;

pub use thorough::record_from_value;

use crate::record::{Actor, ActorKind, AuditRecord, Metadata, Outcome, SCHEMA_VERSION};
use crate::validate::{RecordErrors, Rules};

/// Parses one line of the JSON-lines emit format. A record without `org_id` takes `default_org`
/// (the emit file's configured org, or the ingest key's org).
pub fn parse_json_line(
    line: &[u8],
    default_org: Option<&str>,
    rules: &Rules,
) -> Result<AuditRecord, RecordErrors> {
    let mut parser = LineParser::default();
    parser.parse(line, default_org, rules)?;
    Ok(parser.record)
}

/// Parses lines one after the other into one record, reusing its strings (the agent's file
/// source).
#[derive(Debug)]
pub struct LineParser {
    record: AuditRecord,
}

impl Default for LineParser {
    fn default() -> LineParser {
        LineParser {
            record: AuditRecord {
                id: None,
                org_id: String::new(),
                time: chrono::DateTime::UNIX_EPOCH,
                actor: Actor {
                    id: String::new(),
                    name: None,
                    email: None,
                    kind: ActorKind::default(),
                },
                action: String::new(),
                category: String::new(),
                target: None,
                repository: None,
                outcome: Outcome::default(),
                message: None,
                metadata: Metadata::default(),
                schema_version: SCHEMA_VERSION,
                received_at: None,
                seq: None,
                prev_hash: None,
                provenance: None,
                hash: None,
            },
        }
    }
}

impl LineParser {
    /// Parses one line as [`parse_json_line`] does. The record is the parser's own, until the
    /// next line.
    pub fn parse(
        &mut self,
        line: &[u8],
        default_org: Option<&str>,
        rules: &Rules,
    ) -> Result<&mut AuditRecord, RecordErrors> {
        // A line far over the limit is refused before it is parsed; the exact check is on the
        // canonical form. JSON escaping can only make a line longer than its canonical form by
        // a bounded factor, so 4x is safe.
        if line.len() > rules.max_record_bytes.saturating_mul(4) {
            return Err(RecordErrors::one(
                "record",
                format!(
                    "{} bytes, over the limit of {} bytes",
                    line.len(),
                    rules.max_record_bytes
                ),
            ));
        }
        // UTF-8 checked once for the line, not string by string.
        let text = std::str::from_utf8(line).map_err(|e| {
            RecordErrors::one(
                "record",
                format!("not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
            )
        })?;
        if !straight::read(&mut self.record, text, default_org, rules) {
            // The half-written record is let go first: the thorough path's `Value` tree and the
            // straight path's record are never held at once (the bounded-cost tests).
            self.record = LineParser::default().record;
            self.record = thorough::parse(text, default_org, rules)?;
        }
        Ok(&mut self.record)
    }
}
