//! The OTLP/gRPC receiver: `LogsService/Export` from opentelemetry-proto's generated service.

use super::{Ingest, IngestError, IngestOutcome, Receiver, decode_otlp};
use crate::keys::KeyStore;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Serves OTLP/gRPC logs into the ingest pipeline.
pub struct GrpcReceiver {
    ingest: Ingest,
    keys: KeyStore,
}

impl GrpcReceiver {
    /// The tonic service, accepting gzip and messages up to `max_message_bytes`.
    pub fn service(
        ingest: Ingest,
        keys: KeyStore,
        max_message_bytes: usize,
    ) -> LogsServiceServer<Self> {
        LogsServiceServer::new(GrpcReceiver { ingest, keys })
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes)
    }
}

/// The OTLP answer to a batch: `partial_success` when some records were rejected.
pub fn export_response(outcome: &IngestOutcome) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: (!outcome.rejected.is_empty()).then(|| ExportLogsPartialSuccess {
            rejected_log_records: i64::try_from(outcome.rejected.total()).unwrap_or(i64::MAX),
            error_message: outcome.rejected.summary(),
        }),
    }
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <INGEST key>"))?;
        let key = self
            .keys
            .authenticate(token)
            .ok_or_else(|| Status::unauthenticated("unknown or revoked API key"))?;
        if !key.role.can_ingest() {
            return Err(Status::permission_denied(format!(
                "ingest needs an INGEST key; this key is {}",
                key.role
            )));
        }
        let request = request.into_inner();
        let rules = self.ingest.rules();
        let org = key.org_id.clone();
        // Decoding a large batch is CPU work: keep it off the async workers.
        let candidates = tokio::task::spawn_blocking(move || decode_otlp(&request, &org, &rules))
            .await
            .map_err(|e| Status::internal(format!("decoding failed: {e}")))?;
        self.ingest
            .admit(&key.id, &key.org_id, candidates.len())
            .map_err(|refused| {
                Status::with_error_details(
                    Code::ResourceExhausted,
                    refused.to_string(),
                    ErrorDetails::with_retry_info(Some(refused.retry_after)),
                )
            })?;
        let outcome = self
            .ingest
            .submit(
                &key.org_id,
                key.provenance(),
                candidates,
                Receiver::OtlpGrpc,
            )
            .await
            .map_err(|e| match e {
                IngestError::StorageFull => Status::resource_exhausted(e.to_string()),
                IngestError::Storage(_) => Status::unavailable(e.to_string()),
            })?;
        if outcome.accepted == 0 && !outcome.rejected.is_empty() {
            return Err(Status::invalid_argument(format!(
                "no record was accepted:\n{}",
                outcome.rejected.summary()
            )));
        }
        Ok(Response::new(export_response(&outcome)))
    }
}
