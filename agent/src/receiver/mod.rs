//! The OTLP receivers (OTLP/gRPC and OTLP/HTTP `/v1/logs`, from `codestax-otlp-receiver`) in
//! front of the spool: LogRecords become audit records, invalid ones are rejected one by one
//! through `partial_success`, and the sender is answered only once the accepted records are
//! fsynced in the spool. A full spool pushes back (RESOURCE_EXHAUSTED / 503 with a retry
//! hint); nothing is dropped.

mod intake;

pub use intake::{Converted, IntakeError, OtlpIntake};

use codestax_otlp_receiver::grpc::GrpcReceiver;
use codestax_otlp_receiver::http::HttpLimits;

/// Largest OTLP request, in bytes: a gRPC message, an HTTP body as sent and once inflated.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The OTLP/HTTP `/v1/logs` router.
pub fn http_router(intake: OtlpIntake) -> axum::Router {
    codestax_otlp_receiver::http::router(
        intake,
        HttpLimits {
            max_body_bytes: MAX_REQUEST_BYTES,
            max_decompressed_bytes: MAX_REQUEST_BYTES,
        },
    )
}

/// The OTLP/gRPC logs service.
pub fn grpc_service(intake: OtlpIntake) -> GrpcReceiver<OtlpIntake> {
    codestax_otlp_receiver::grpc::service(intake, MAX_REQUEST_BYTES)
}
