//! The part of an export both transports share: converting off the runtime, submitting, and
//! the OTLP answer (partial success, or INVALID_ARGUMENT when nothing could be taken).

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};

use crate::{LogsSink, Refusal, Transport};

/// Requests with at most this many records are converted on the async worker: moving them to a
/// blocking thread would cost more than the work.
const CONVERT_INLINE_MAX: usize = 64;

/// Runs `work` on a blocking thread.
pub(crate) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "OTLP decoding task failed");
        Refusal::internal("decoding the request failed")
    })
}

/// Converts a decoded request, off the runtime unless it is small.
pub(crate) async fn convert<S: LogsSink>(
    sink: &S,
    sender: S::Sender,
    request: ExportLogsServiceRequest,
) -> Result<(S::Sender, S::Batch), Refusal> {
    let records: usize = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    if records <= CONVERT_INLINE_MAX {
        let batch = sink.convert(&sender, &request);
        return Ok((sender, batch));
    }
    let sink = sink.clone();
    off_runtime(move || {
        let batch = sink.convert(&sender, &request);
        (sender, batch)
    })
    .await
}

/// Submits a converted batch and builds the answer.
pub(crate) async fn submit<S: LogsSink>(
    sink: &S,
    sender: S::Sender,
    batch: S::Batch,
    transport: Transport,
) -> Result<ExportLogsServiceResponse, Refusal> {
    let exported = sink.submit(sender, batch, transport).await?;
    if exported.accepted == 0 && exported.rejected > 0 {
        return Err(Refusal::invalid(format!(
            "no record was accepted:\n{}",
            exported.rejections
        )));
    }
    Ok(ExportLogsServiceResponse {
        partial_success: (exported.rejected > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: i64::try_from(exported.rejected).unwrap_or(i64::MAX),
            error_message: exported.rejections,
        }),
    })
}
