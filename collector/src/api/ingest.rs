//! Ingest over HTTP: OTLP/HTTP `POST /v1/logs` (protobuf or JSON) and the native
//! `POST /api/v1/ingest` (NDJSON). Invalid records are rejected one by one; 400 only when nothing
//! was accepted.

use super::auth::check_ingester;
use super::{ApiError, AppState};
use crate::ingest::grpc::export_response;
use crate::ingest::{IngestError, IngestOutcome, Receiver, decode_ndjson, decode_otlp, read_body};
use crate::keys::KeyInfo;
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use codestax_common::api::IngestResponse;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

/// The native receiver: one JSON record per line.
pub async fn ndjson(
    State(state): State<AppState>,
    Extension(key): Extension<KeyInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_ingester(&key)?;
    let media = media_type(&headers);
    if !matches!(
        media.as_str(),
        "" | "application/x-ndjson" | "application/jsonl" | "application/json" | "text/plain"
    ) {
        return Err(ApiError::unsupported_media_type(format!(
            "Content-Type {media:?} is not accepted here; send application/x-ndjson"
        )));
    }
    let bytes = read(&state, &headers, body).await?;
    let rules = state.ingest.rules();
    let org = key.org_id.clone();
    let candidates = tokio::task::spawn_blocking(move || decode_ndjson(&bytes, &org, &rules))
        .await
        .map_err(ApiError::internal)?;
    let outcome = submit(&state, &key, candidates, Receiver::Ndjson).await?;
    let response = IngestResponse {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected: outcome.rejected.total(),
        errors: outcome.rejected.listed().to_vec(),
        more_errors: outcome.rejected.unlisted(),
    };
    if let (0, Some(first)) = (outcome.accepted, outcome.rejected.listed().first()) {
        let error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_records",
            format!(
                "no record was accepted ({} rejected); line {}: {}",
                outcome.rejected.total(),
                first.line,
                codestax_common::RecordErrors(first.errors.clone())
            ),
        );
        let error = match first.errors.first() {
            Some(e) => error.with_field(e.field.clone()),
            None => error,
        };
        // The error shape, plus the per-line details.
        let mut body = serde_json::to_value(error.body()).map_err(ApiError::internal)?;
        let details = serde_json::to_value(&response).map_err(ApiError::internal)?;
        if let (Some(body), Some(details)) = (body.as_object_mut(), details.as_object()) {
            body.extend(details.clone());
        }
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    Ok(Json(response).into_response())
}

/// OTLP/HTTP logs, protobuf or JSON; answered in the request's encoding.
pub async fn otlp_http(
    State(state): State<AppState>,
    Extension(key): Extension<KeyInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_ingester(&key)?;
    let media = media_type(&headers);
    let json = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => false,
        "application/json" => true,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "Content-Type {other:?} is not OTLP; send application/x-protobuf or application/json"
            )));
        }
    };
    let bytes = read(&state, &headers, body).await?;
    let rules = state.ingest.rules();
    let org = key.org_id.clone();
    let candidates = tokio::task::spawn_blocking(move || {
        let request = if json {
            serde_json::from_slice::<ExportLogsServiceRequest>(&bytes)
                .map_err(|e| format!("malformed OTLP JSON: {e}"))?
        } else {
            ExportLogsServiceRequest::decode(bytes.as_slice())
                .map_err(|e| format!("malformed OTLP protobuf: {e}"))?
        };
        Ok::<_, String>(decode_otlp(&request, &org, &rules))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|message| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message).with_field("body")
    })?;
    let outcome = submit(&state, &key, candidates, Receiver::OtlpHttp).await?;
    if outcome.accepted == 0 && !outcome.rejected.is_empty() {
        let field = outcome.rejected.listed()[0]
            .errors
            .first()
            .map(|e| e.field.clone());
        let error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_records",
            format!("no record was accepted:\n{}", outcome.rejected.summary()),
        );
        return Err(match field {
            Some(f) => error.with_field(f),
            None => error,
        });
    }
    let response = export_response(&outcome);
    Ok(if json {
        Json(response).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            response.encode_to_vec(),
        )
            .into_response()
    })
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

async fn read(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let limits = state.limits;
    read_body(
        headers,
        body,
        limits.max_body_bytes,
        limits.max_decompressed_bytes,
    )
    .await
    .map_err(ApiError::from)
}

/// Stores a decoded batch, after the rate limits of its key and org let it in.
async fn submit(
    state: &AppState,
    key: &KeyInfo,
    batch: crate::ingest::Batch,
    receiver: Receiver,
) -> Result<IngestOutcome, ApiError> {
    state
        .ingest
        .admit(&key.id, &key.org_id, batch.len())
        .map_err(|refused| {
            ApiError::rate_limited(refused.to_string(), refused.retry_after_secs())
        })?;
    state
        .ingest
        .submit(&key.org_id, key.provenance(), batch, receiver)
        .await
        .map_err(|e| match e {
            IngestError::StorageFull => ApiError::unavailable(e.to_string(), 5),
            IngestError::Storage(_) => {
                tracing::error!(error = %e, "ingest failed");
                ApiError::unavailable(
                    "storage failed; nothing of this batch was stored, retry later",
                    1,
                )
            }
        })
}
