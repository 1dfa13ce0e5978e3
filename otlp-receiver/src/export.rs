//! The part of an export both transports share: decoding off the runtime, submitting, and
//! the OTLP answer (partial success, or INVALID_ARGUMENT when nothing could be taken).

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};

use crate::{LogsSink, Refusal, Transport};

/// Requests of at most this many bytes (decoded) are decoded and converted on the async worker:
/// moving them to a blocking thread would cost more than the work.
pub(crate) const DECODE_INLINE_MAX_BYTES: usize = 16 * 1024;

/// Runs `work`, the decoding and conversion of a request of `size` bytes once decoded, on a
/// blocking thread unless the request is small.
pub(crate) async fn decoding<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Refusal> {
    if size <= DECODE_INLINE_MAX_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "OTLP decoding task failed");
        Refusal::internal("decoding the request failed")
    })
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
