//! OTLP logs requests (the same for gRPC and HTTP): each LogRecord becomes a candidate through the
//! common mapping.

use super::Batch;
use codestax_common::Rules;
use codestax_common::otlp::record_from_log;
use codestax_otlp_receiver::log_records;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

/// Decodes every LogRecord of a request, in order; positions are 1-based across the request.
pub fn decode_otlp(request: &ExportLogsServiceRequest, default_org: &str, rules: &Rules) -> Batch {
    let mut batch = Batch::default();
    for (position, resource, log) in log_records(request) {
        let decoded = record_from_log(log, resource, Some(default_org), rules);
        batch.push(position, decoded, || None);
    }
    batch
}
