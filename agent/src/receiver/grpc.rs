//! OTLP/gRPC: the `LogsService` the applications export to.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::intake::{IntakeError, OtlpIntake, RETRY_AFTER, rejection_message};

/// The gRPC `LogsService` in front of the spool.
#[derive(Clone)]
pub struct LogsReceiver {
    intake: OtlpIntake,
}

impl LogsReceiver {
    pub fn new(intake: OtlpIntake) -> LogsReceiver {
        LogsReceiver { intake }
    }
}

#[tonic::async_trait]
impl LogsService for LogsReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        match self.intake.export(request.into_inner()).await {
            Ok(outcome) if outcome.nothing_accepted() => Err(Status::invalid_argument(format!(
                "no record was accepted:\n{}",
                rejection_message(&outcome.rejected)
            ))),
            Ok(outcome) => Ok(Response::new(ExportLogsServiceResponse {
                partial_success: (!outcome.rejected.is_empty()).then(|| ExportLogsPartialSuccess {
                    rejected_log_records: outcome.rejected.len() as i64,
                    error_message: rejection_message(&outcome.rejected),
                }),
            })),
            Err(e @ IntakeError::SpoolFull) => Err(Status::with_error_details(
                Code::ResourceExhausted,
                e.to_string(),
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            )),
            Err(e @ IntakeError::TooLarge) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ IntakeError::Unavailable) => Err(Status::with_error_details(
                Code::Unavailable,
                e.to_string(),
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            )),
        }
    }
}
