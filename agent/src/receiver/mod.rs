//! The OTLP receivers: OTLP/gRPC and OTLP/HTTP `/v1/logs` (protobuf and JSON). LogRecords
//! become audit records, invalid ones are rejected one by one through `partial_success`, and
//! the sender is answered only once the accepted records are fsynced in the spool. A full
//! spool pushes back (RESOURCE_EXHAUSTED / 503 with a retry hint); nothing is dropped.

mod grpc;
mod http;
mod intake;

pub use grpc::LogsReceiver;
pub use http::router as http_router;
pub use intake::{ExportOutcome, IntakeError, OtlpIntake, rejection_message};
