//! Why an export was refused, and how each transport says it: an HTTP status with a
//! `google.rpc.Status` body, or a gRPC status; a retry hint as `Retry-After` or `RetryInfo`.

use std::time::Duration;

use axum::http::StatusCode;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The kinds of refusal, each with its HTTP status and gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// 401 / UNAUTHENTICATED: no credentials, or `invalid_token` ones.
    Unauthenticated { invalid_token: bool },
    /// 403 / PERMISSION_DENIED.
    PermissionDenied,
    /// 400 / INVALID_ARGUMENT: undecodable, or no record could be taken.
    InvalidArgument,
    /// 415 / INVALID_ARGUMENT: a content type or `Content-Encoding` that is not OTLP's.
    UnsupportedMediaType,
    /// 413 / INVALID_ARGUMENT: larger than can ever be taken; retrying the same will not help.
    TooLarge,
    /// 429 / RESOURCE_EXHAUSTED: a rate limit; retry after the hint.
    RateLimited,
    /// 503 / RESOURCE_EXHAUSTED: the spool or storage is full; retry after the hint.
    Full,
    /// 503 / UNAVAILABLE: cannot store right now; retry after the hint.
    Unavailable,
    /// 500 / INTERNAL.
    Internal,
}

/// An export that was not taken: nothing of it was stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    /// Safe to show the sender.
    pub message: String,
    /// When to try again (the retryable kinds).
    pub retry_after: Option<Duration>,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same, with a retry hint.
    pub fn retry_after(mut self, after: Duration) -> Refusal {
        self.retry_after = Some(after);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Internal, message)
    }

    pub fn http_status(&self) -> StatusCode {
        match self.kind {
            RefusalKind::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            RefusalKind::PermissionDenied => StatusCode::FORBIDDEN,
            RefusalKind::InvalidArgument => StatusCode::BAD_REQUEST,
            RefusalKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RefusalKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RefusalKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RefusalKind::Full | RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> Code {
        match self.kind {
            RefusalKind::Unauthenticated { .. } => Code::Unauthenticated,
            RefusalKind::PermissionDenied => Code::PermissionDenied,
            RefusalKind::InvalidArgument
            | RefusalKind::UnsupportedMediaType
            | RefusalKind::TooLarge => Code::InvalidArgument,
            RefusalKind::RateLimited | RefusalKind::Full => Code::ResourceExhausted,
            RefusalKind::Unavailable => Code::Unavailable,
            RefusalKind::Internal => Code::Internal,
        }
    }

    /// The gRPC status; a retry hint goes in `RetryInfo`, which makes RESOURCE_EXHAUSTED
    /// retryable for OTLP senders.
    pub fn into_grpc(self) -> tonic::Status {
        let code = self.grpc_code();
        match self.retry_after {
            Some(after) => tonic::Status::with_error_details(
                code,
                self.message,
                ErrorDetails::with_retry_info(Some(after)),
            ),
            None => tonic::Status::new(code, self.message),
        }
    }
}

/// The gRPC code an OTLP/HTTP error of `status` carries in its `google.rpc.Status`, for
/// errors answered outside the receiver (routing, request limits, readiness).
pub fn grpc_code_of(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::URI_TOO_LONG
        | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
        s if s.is_server_error() => Code::Internal,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_http_status_and_grpc_code() {
        use RefusalKind::*;
        for (kind, http, grpc) in [
            (
                Unauthenticated {
                    invalid_token: false,
                },
                401,
                Code::Unauthenticated,
            ),
            (PermissionDenied, 403, Code::PermissionDenied),
            (InvalidArgument, 400, Code::InvalidArgument),
            (UnsupportedMediaType, 415, Code::InvalidArgument),
            (TooLarge, 413, Code::InvalidArgument),
            (RateLimited, 429, Code::ResourceExhausted),
            (Full, 503, Code::ResourceExhausted),
            (Unavailable, 503, Code::Unavailable),
            (Internal, 500, Code::Internal),
        ] {
            let refusal = Refusal::new(kind, "m");
            assert_eq!(refusal.http_status().as_u16(), http, "{kind:?}");
            assert_eq!(refusal.grpc_code(), grpc, "{kind:?}");
            // Outside errors of the same status carry the same code, where one status has one.
            if !matches!(kind, UnsupportedMediaType | TooLarge | Full) {
                assert_eq!(grpc_code_of(refusal.http_status()), grpc, "{kind:?}");
            }
        }
    }

    #[test]
    fn a_retry_hint_becomes_retry_info() {
        let status = Refusal::new(RefusalKind::Full, "full")
            .retry_after(Duration::from_secs(5))
            .into_grpc();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_error_details().retry_info().cloned();
        assert_eq!(
            retry.and_then(|r| r.retry_delay),
            Some(Duration::from_secs(5))
        );
        let status = Refusal::invalid("bad").into_grpc();
        assert!(status.get_error_details().retry_info().is_none());
    }
}
