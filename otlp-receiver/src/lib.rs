//! The OTLP logs receiver, once for the agent and the collector: OTLP/HTTP `POST /v1/logs`
//! ([`http`]) and OTLP/gRPC `LogsService/Export` ([`grpc`]) in front of a [`LogsSink`] that
//! authorizes the sender and takes the converted records (the agent's spool, the collector's
//! ingest pipeline). The transport rules follow the OTLP specification and live here only:
//! accepted content types, 415 for an unknown `Content-Encoding`, body limits ([`body`]),
//! gzip and protobuf/JSON decoding off the async runtime, one LogRecord at a time ([`Logs`]), partial success naming the rejected
//! records, and `google.rpc.Status` error bodies ([`Refusal`]). [`bearer`] parses the
//! `Authorization` header for both transports and for the collector's API.
#![forbid(unsafe_code)]

pub mod bearer;
pub mod body;
mod export;
pub mod grpc;
pub mod http;
mod records;
mod refusal;
mod sink;

pub use bearer::Bearer;
pub use records::{LogItem, Logs, Unread};
pub use refusal::{Refusal, RefusalKind};
pub use sink::{Exported, LogsSink, MAX_LISTED_REJECTIONS, Transport, rejection_summary};
