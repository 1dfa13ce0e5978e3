//! OTLP logs requests (the same for gRPC and HTTP): each LogRecord becomes a candidate through the
//! common mapping, decoded one at a time.

use super::Batch;
use codestax_common::otlp::record_from_log;
use codestax_common::{RecordErrors, Rules};
use codestax_otlp_receiver::{Logs, Refusal};

/// Decodes every LogRecord of a request, in order; positions are 1-based across the request.
/// An encoded LogRecord (or Resource) over 4× the record limit is rejected undecoded, as an
/// emit line is: the limit is on the canonical form, which escaping can only shorten that much.
pub fn decode_otlp(logs: Logs<'_>, default_org: &str, rules: &Rules) -> Result<Batch, Refusal> {
    let mut batch = Batch::default();
    logs.for_each(rules.max_record_bytes.saturating_mul(4), |item| {
        let decoded = match &item.log {
            Ok(log) => record_from_log(log, item.resource, Some(default_org), rules),
            Err(unread) => Err(RecordErrors::one("record", unread.to_string())),
        };
        batch.push(item.position, decoded, || None);
    })?;
    Ok(batch)
}
