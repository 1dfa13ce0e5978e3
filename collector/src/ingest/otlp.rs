//! OTLP logs requests (the same for gRPC and HTTP): each LogRecord becomes a candidate through the
//! common mapping.

use super::Batch;
use codestax_common::Rules;
use codestax_common::otlp::record_from_log;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

/// Decodes every LogRecord of a request, in order; positions are 1-based across the request.
pub fn decode_otlp(request: &ExportLogsServiceRequest, default_org: &str, rules: &Rules) -> Batch {
    let mut batch = Batch::default();
    let mut position = 0;
    for resource_logs in &request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        for scope_logs in &resource_logs.scope_logs {
            for log in &scope_logs.log_records {
                position += 1;
                let decoded = record_from_log(log, resource, Some(default_org), rules);
                batch.push(position, decoded, || None);
            }
        }
    }
    batch
}
