//! The one error type of the HTTP API: JSON `{"error": {"code", "message", "field"?}}` with the
//! right status. Messages are safe for clients; internal details go to the log, not the response.

use crate::health::{Failure, Part, Unready};
use crate::ingest::IngestError;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codestax_common::api::{ErrorBody, ErrorDetail};
use codestax_otlp_receiver::bearer::{CHALLENGE, INVALID_TOKEN_CHALLENGE};
use codestax_otlp_receiver::body::BodyError;
use codestax_otlp_receiver::http::{Encoding, LOGS_PATH, RpcStatusBody, error_response};

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds a client should wait before retrying (429s and 503s).
    pub retry_after: Option<u32>,
    /// The `WWW-Authenticate` challenge (401s).
    pub challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            challenge: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: a parameter or field is wrong; names it.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message).with_field(field)
    }

    /// 401 for a request without a bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.challenge = Some(CHALLENGE);
        e
    }

    /// 401 for a token that is malformed, unknown or revoked.
    pub fn invalid_token(message: impl Into<String>) -> Self {
        let mut e = Self::unauthorized(message);
        e.challenge = Some(INVALID_TOKEN_CHALLENGE);
        e
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for unknown orgs, other orgs' data and missing records alike, so existence never leaks.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "not found")
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 503 with a retry hint: storage full or not ready; nothing acknowledged is lost.
    pub fn unavailable(message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(retry_after);
        e
    }

    /// 503 because the WAL or the index cannot write: the code names which and whether the disk
    /// is full (`wal_full`, `index_failed`...), the retry hint is the failure's.
    pub fn unavailable_for(failure: &Failure, message: impl Into<String>) -> Self {
        let mut e = Self::unavailable(message, failure.retry_after().as_secs() as u32);
        e.code = failure.code();
        e
    }

    /// 503: a settings file of the data directory (keys, saved views, retention overrides,
    /// streams) cannot be written, e.g. the disk is full. That directory is the WAL's disk
    /// (unless moved apart), so the answer is the WAL's: its code (`wal_full`...) and retry hint.
    /// The message names `what` and the OS error, not the path; nothing was changed.
    pub fn state_unwritable(what: &str, source: &std::io::Error) -> Self {
        tracing::warn!(error = %source, "{what} could not be written");
        let message =
            format!("{what} cannot be written: {source}; nothing was changed, retry later");
        Self::unavailable_for(&Failure::io(Part::Wal, source), message)
    }

    /// 503 because the collector is not ready: starting, or a part cannot write (its code).
    pub fn unready(unready: &Unready) -> Self {
        let mut e = Self::unavailable(unready.to_string(), unready.retry_after().as_secs() as u32);
        e.code = unready.code();
        e
    }

    /// 503 for an ingest that failed, with `message`: [`ApiError::unavailable_for`] when the WAL
    /// or the index cannot write, else `unavailable`.
    pub fn ingest_failed(e: &IngestError, message: impl Into<String>) -> Self {
        match e.failure() {
            Some(failure) => Self::unavailable_for(failure, message),
            None => Self::unavailable(message, 1),
        }
    }

    /// 503 with a retry hint: cluster mode, a change of a setting kept in the metastore
    /// (retention, saved views) while PostgreSQL cannot be reached. Nothing was changed.
    pub fn metastore_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "a settings change refused: the metastore is unreachable");
        let mut e = Self::unavailable(
            "the cluster's metastore (PostgreSQL) cannot be reached, so nothing was changed; \
             retry shortly (reads go on from this node's cache)",
            1,
        );
        e.code = "metastore_unavailable";
        e
    }

    /// 503 with a retry hint: cluster mode, a settings change recorded in the org's log whose
    /// metastore COMMIT failed or went unanswered, so whether it was made is not known. Read
    /// the setting back before retrying (a retry that changes nothing records nothing).
    pub fn metastore_unconfirmed(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "a recorded settings change was not confirmed by the metastore");
        let mut e = Self::unavailable(
            "the change was recorded in the org's audit log, but the cluster's metastore \
             (PostgreSQL) did not confirm it was saved; read the setting back before retrying",
            1,
        );
        e.code = "metastore_unavailable";
        e
    }

    /// 503 with a retry hint: the org's shard has no live owner now (a failover in progress,
    /// or the owner unreachable). Never a stale or partial answer instead.
    pub fn shard_unavailable(shard: u32) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shard_unavailable",
            format!(
                "shard {shard} has no live owner right now (a failover is in progress); retry shortly"
            ),
        );
        e.retry_after = Some(1);
        e
    }

    /// 503 `shard_unavailable` with a retry hint: a change this node was routed but may not
    /// make, since it no longer holds the org's shard (it moved, or its lease lapsed, between
    /// the routing and the write). Nothing was changed.
    pub fn not_shard_owner(cause: &dyn std::fmt::Display) -> Self {
        tracing::info!(error = %cause, "a change refused: this node no longer holds the org's shard");
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shard_unavailable",
            "the org's shard is moving between nodes (a failover is in progress), so nothing was \
             changed; retry shortly",
        );
        e.retry_after = Some(1);
        e
    }

    /// 429 with a retry hint: an ingest rate limit refused the batch; nothing of it was stored.
    pub fn rate_limited(message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(retry_after);
        e
    }

    /// 500: the detail is logged here and not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { .. } | BodyError::DecompressedTooLarge { .. } => {
                ApiError::payload_too_large(e.to_string())
            }
            BodyError::UnsupportedEncoding(_) => ApiError::unsupported_media_type(e.to_string()),
            BodyError::BadGzip(_) | BodyError::Read(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", e.to_string())
                    .with_field("body")
            }
        }
    }
}

/// Longest text of a non-JSON error kept as the message of its JSON form, in bytes.
const MAX_PLAIN_ERROR_BYTES: usize = 1024;
/// Longest JSON error read back to re-encode it for OTLP, in bytes (its message lists at most 50
/// rejections).
const MAX_JSON_ERROR_BYTES: usize = 4 << 20;

/// Layer: every error response is in the API's shape. An error that is not JSON yet (an axum
/// extractor's rejection of a path, query or body, any plain-text error) becomes the JSON error
/// shape, its text as the message; on the OTLP route every error the receiver did not answer
/// itself (routing, request limits, readiness) becomes a `google.rpc.Status`, protobuf or JSON
/// as the request was. Status and headers are kept.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let otlp = (request.uri().path() == LOGS_PATH).then(|| Encoding::of(request.headers()));
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<RpcStatusBody>().is_some()
    {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json && otlp.is_none() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Read within a bound (rejection texts are short, our JSON errors bounded); past it the
    // status's reason phrase is the message.
    let limit = if json {
        MAX_JSON_ERROR_BYTES
    } else {
        MAX_PLAIN_ERROR_BYTES
    };
    let bytes = axum::body::to_bytes(body, limit).await.unwrap_or_default();
    let ours = json
        .then(|| serde_json::from_slice::<ErrorBody>(&bytes).ok())
        .flatten();
    let message = match &ours {
        Some(body) => body.error.message.clone(),
        None => String::from_utf8_lossy(&bytes).trim().to_string(),
    };
    let message = if message.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        message
    };
    let shaped = match otlp {
        Some(encoding) => error_response(status, message, encoding),
        None => ApiError::new(status, code_of(status), message).into_response(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in shaped.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, shaped.into_body())
}

/// The error code of a response that came without one.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "malformed_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_parameter",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "request_failed",
    }
}
