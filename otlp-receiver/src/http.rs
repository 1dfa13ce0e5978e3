//! OTLP/HTTP: `POST /v1/logs` with a protobuf or JSON body, gzip-compressed or not. The answer
//! and any error come in the request's encoding (JSON when it has none of OTLP's); errors are a
//! `google.rpc.Status`. The body is read within a limit, then inflated and decoded on a blocking
//! thread.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;

use crate::body::{BodyError, ContentEncoding, read_limited};
use crate::refusal::grpc_code_of;
use crate::{Bearer, Logs, LogsSink, Refusal, RefusalKind, Transport, bearer, export};

/// The route of OTLP/HTTP logs.
pub const LOGS_PATH: &str = "/v1/logs";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// Body limits of the route, in bytes (413 above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest body as sent.
    pub max_body_bytes: usize,
    /// Largest body once gzip is inflated.
    pub max_decompressed_bytes: usize,
}

/// OTLP's two HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding of a request by its media type (parameters and case ignored), if OTLP's.
    pub fn of(headers: &HeaderMap) -> Option<Encoding> {
        match media_type(headers).as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }

    /// A body in this encoding.
    fn logs(self, bytes: &[u8]) -> Logs<'_> {
        match self {
            Encoding::Protobuf => Logs::Protobuf(bytes),
            Encoding::Json => Logs::Json(bytes),
        }
    }
}

/// The media type of a request, lowercased, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

struct HttpReceiver<S> {
    sink: S,
    limits: HttpLimits,
}

/// The `/v1/logs` route over a sink, for a router of any state. Bodies are read by the route
/// with its own limits, so refusals keep the OTLP shape.
pub fn router<S: LogsSink, T: Clone + Send + Sync + 'static>(
    sink: S,
    limits: HttpLimits,
) -> Router<T> {
    Router::new()
        .route(LOGS_PATH, post(export::<S>))
        .layer(DefaultBodyLimit::disable())
        .with_state(Arc::new(HttpReceiver { sink, limits }))
}

async fn export<S: LogsSink>(
    State(receiver): State<Arc<HttpReceiver<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let encoding = Encoding::of(&headers);
    match receiver.export(encoding, &headers, body).await {
        Ok(response) => {
            let encoding = encoding.unwrap_or(Encoding::Json);
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&response).expect("a response serialises"),
            };
            ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(refusal) => refusal_response(refusal, encoding.unwrap_or(Encoding::Json)),
    }
}

impl<S: LogsSink> HttpReceiver<S> {
    async fn export(
        &self,
        encoding: Option<Encoding>,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<ExportLogsServiceResponse, Refusal> {
        let bearer = Bearer::parse(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()));
        let sender = self.sink.authorize(bearer)?;
        let encoding = encoding.ok_or_else(|| {
            Refusal::new(
                RefusalKind::UnsupportedMediaType,
                format!(
                    "Content-Type {:?} is not OTLP; send {PROTOBUF} or {JSON}",
                    media_type(headers)
                ),
            )
        })?;
        let raw = read_limited(body, self.limits.max_body_bytes)
            .await
            .map_err(body_refusal)?;
        let content_encoding = ContentEncoding::of(headers).map_err(body_refusal)?;
        let (sink, max_decoded) = (self.sink.clone(), self.limits.max_decompressed_bytes);
        // A small gzip body can inflate to the limit: only small plain bodies stay inline.
        let size = match content_encoding {
            ContentEncoding::Identity => raw.len(),
            ContentEncoding::Gzip => usize::MAX,
        };
        let (sender, batch) = export::decoding(size, move || {
            let bytes = content_encoding
                .decode(raw, max_decoded)
                .map_err(body_refusal)?;
            let batch = sink.convert(&sender, encoding.logs(&bytes))?;
            Ok::<_, Refusal>((sender, batch))
        })
        .await??;
        export::submit(&self.sink, sender, batch, Transport::Http).await
    }
}

fn body_refusal(e: BodyError) -> Refusal {
    let kind = match e {
        BodyError::TooLarge { .. } | BodyError::DecompressedTooLarge { .. } => {
            RefusalKind::TooLarge
        }
        BodyError::UnsupportedEncoding(_) => RefusalKind::UnsupportedMediaType,
        BodyError::BadGzip(_) | BodyError::Read(_) => RefusalKind::InvalidArgument,
    };
    Refusal::new(kind, e.to_string())
}

/// Marks a response whose body is already a `google.rpc.Status`, so layers shaping errors
/// leave it alone.
#[derive(Debug, Clone, Copy)]
pub struct RpcStatusBody;

/// An OTLP/HTTP error: `status` with a `google.rpc.Status` body of `code` and `message`.
pub fn status_response(
    status: StatusCode,
    code: tonic::Code,
    message: String,
    encoding: Encoding,
) -> Response {
    let body = match encoding {
        Encoding::Protobuf => tonic_types::Status {
            code: code as i32,
            message,
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&serde_json::json!({ "code": code as i32, "message": message }))
                .expect("JSON")
        }
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    response.extensions_mut().insert(RpcStatusBody);
    response
}

/// The OTLP/HTTP form of an error answered outside the receiver (a routing or limit error),
/// in the encoding the request asked for.
pub fn error_response(
    status: StatusCode,
    message: String,
    request_encoding: Option<Encoding>,
) -> Response {
    status_response(
        status,
        grpc_code_of(status),
        message,
        request_encoding.unwrap_or(Encoding::Json),
    )
}

fn refusal_response(refusal: Refusal, encoding: Encoding) -> Response {
    let status = refusal.http_status();
    let code = refusal.grpc_code();
    let (kind, retry_after) = (refusal.kind, refusal.retry_after);
    let mut response = status_response(status, code, refusal.message, encoding);
    let headers = response.headers_mut();
    if let Some(after) = retry_after {
        // Whole seconds, rounded up: a hint of 0 would invite an immediate retry.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let RefusalKind::Unauthenticated { invalid_token } = kind {
        let challenge = if invalid_token {
            bearer::INVALID_TOKEN_CHALLENGE
        } else {
            bearer::CHALLENGE
        };
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}
