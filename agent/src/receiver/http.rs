//! OTLP/HTTP: `POST /v1/logs` with a protobuf or JSON body (optionally gzip-compressed);
//! the answer comes in the request's encoding.

use std::io::Read;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;

use super::intake::{IntakeError, OtlpIntake, RETRY_AFTER, rejection_message};

/// Largest request body accepted, compressed or not, in bytes.
pub const MAX_BODY_BYTES: usize = 16 << 20;
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// The `/v1/logs` router.
pub fn router(intake: OtlpIntake) -> Router {
    Router::new()
        .route("/v1/logs", post(export))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(intake)
}

async fn export(State(intake): State<OtlpIntake>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = if content_type.starts_with(JSON) {
        Encoding::Json
    } else if content_type.starts_with(PROTOBUF) || content_type.starts_with("application/protobuf")
    {
        Encoding::Protobuf
    } else {
        return error(
            Encoding::Json,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            format!("content type must be {PROTOBUF} or {JSON}, got {content_type:?}"),
        );
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = if gzip {
        let mut out = Vec::new();
        let read = flate2::read::GzDecoder::new(&body[..])
            .take(MAX_BODY_BYTES as u64 + 1)
            .read_to_end(&mut out);
        match read {
            Ok(n) if n > MAX_BODY_BYTES => {
                return error(
                    encoding,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    3,
                    format!("decompressed body is over {MAX_BODY_BYTES} bytes"),
                );
            }
            Ok(_) => Bytes::from(out),
            Err(e) => {
                return error(
                    encoding,
                    StatusCode::BAD_REQUEST,
                    3,
                    format!("bad gzip body: {e}"),
                );
            }
        }
    } else {
        body
    };
    let request = match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(body).map_err(|e| e.to_string()),
        Encoding::Json => {
            serde_json::from_slice::<ExportLogsServiceRequest>(&body).map_err(|e| e.to_string())
        }
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            return error(
                encoding,
                StatusCode::BAD_REQUEST,
                3,
                format!("cannot decode an ExportLogsServiceRequest: {e}"),
            );
        }
    };
    match intake.export(request).await {
        Ok(outcome) if outcome.nothing_accepted() => error(
            encoding,
            StatusCode::BAD_REQUEST,
            3,
            format!(
                "no record was accepted:\n{}",
                rejection_message(&outcome.rejected)
            ),
        ),
        Ok(outcome) => {
            let response = ExportLogsServiceResponse {
                partial_success: (!outcome.rejected.is_empty()).then(|| ExportLogsPartialSuccess {
                    rejected_log_records: outcome.rejected.len() as i64,
                    error_message: rejection_message(&outcome.rejected),
                }),
            };
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&response).expect("a response serialises"),
            };
            (StatusCode::OK, content_type_header(encoding), body).into_response()
        }
        Err(e @ (IntakeError::SpoolFull | IntakeError::Unavailable)) => {
            let mut response = error(encoding, StatusCode::SERVICE_UNAVAILABLE, 8, e.to_string());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER.as_secs()),
            );
            response
        }
        Err(e @ IntakeError::TooLarge) => {
            error(encoding, StatusCode::PAYLOAD_TOO_LARGE, 3, e.to_string())
        }
    }
}

fn content_type_header(encoding: Encoding) -> [(header::HeaderName, &'static str); 1] {
    [(
        header::CONTENT_TYPE,
        match encoding {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        },
    )]
}

fn error(encoding: Encoding, status: StatusCode, code: i32, message: String) -> Response {
    let body = match encoding {
        Encoding::Protobuf => RpcStatus { code, message }.encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&serde_json::json!({ "code": code, "message": message }))
                .expect("JSON")
        }
    };
    (status, content_type_header(encoding), body).into_response()
}
