//! Ingest from keyed senders: the native `POST /api/v1/ingest` (NDJSON) and the sink behind the
//! OTLP receivers ([`OtlpIngest`]: authenticate the key, then `Ingest::submit`), OTLP/HTTP
//! `POST /v1/logs` and OTLP/gRPC alike. Invalid records are rejected one by one; 400 only when
//! nothing was accepted.

use super::auth::{IngestRecords, authenticate, permit};
use super::{ApiError, AppState};
use crate::health::Failure;
use crate::ingest::{
    Batch, Ingest, IngestError, IngestOutcome, RateLimited, Receiver, decode_ndjson, decode_otlp,
};
use crate::keys::{KeyInfo, KeyStore};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use codestax_common::api::IngestResponse;
use codestax_otlp_receiver::body::{ContentEncoding, read_limited};
use codestax_otlp_receiver::http::media_type;
use codestax_otlp_receiver::{Bearer, Exported, LogsSink, Refusal, RefusalKind, Transport};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use std::time::Duration;

/// The native receiver: one JSON record per line.
pub async fn ndjson(
    State(state): State<AppState>,
    Extension(key): Extension<KeyInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    permit::<IngestRecords>(&key)?;
    let media = media_type(&headers);
    if !matches!(
        media.as_str(),
        "" | "application/x-ndjson" | "application/jsonl" | "application/json" | "text/plain"
    ) {
        return Err(ApiError::unsupported_media_type(format!(
            "Content-Type {media:?} is not accepted here; send application/x-ndjson"
        )));
    }
    let limits = state.limits;
    let raw = read_limited(body, limits.max_body_bytes).await?;
    let encoding = ContentEncoding::of(&headers)?;
    let rules = state.ingest.rules();
    let org = key.org_id.clone();
    // Inflating and parsing a large body is CPU work: keep it off the async workers.
    let candidates = tokio::task::spawn_blocking(move || {
        let bytes = encoding.decode(raw, limits.max_decompressed_bytes)?;
        Ok::<_, ApiError>(decode_ndjson(&bytes, &org, &rules))
    })
    .await
    .map_err(ApiError::internal)??;
    let outcome = store(&state.ingest, &key, candidates, Receiver::Ndjson).await?;
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

/// The OTLP receivers' sink: INGEST keys send records for their own org into the pipeline.
#[derive(Clone)]
pub struct OtlpIngest {
    pub ingest: Ingest,
    pub keys: KeyStore,
}

impl LogsSink for OtlpIngest {
    type Sender = KeyInfo;
    type Batch = Batch;

    fn authorize(&self, bearer: Bearer<'_>) -> Result<KeyInfo, Refusal> {
        let key = authenticate(&self.keys, bearer)?;
        permit::<IngestRecords>(&key)?;
        Ok(key)
    }

    fn convert(&self, key: &KeyInfo, request: &ExportLogsServiceRequest) -> Batch {
        decode_otlp(request, &key.org_id, &self.ingest.rules())
    }

    async fn submit(
        &self,
        key: KeyInfo,
        batch: Batch,
        transport: Transport,
    ) -> Result<Exported, Refusal> {
        let receiver = match transport {
            Transport::Http => Receiver::OtlpHttp,
            Transport::Grpc => Receiver::OtlpGrpc,
        };
        let outcome = store(&self.ingest, &key, batch, receiver).await?;
        Ok(Exported {
            accepted: outcome.accepted,
            rejected: outcome.rejected.total(),
            rejections: outcome.rejected.summary(),
        })
    }
}

/// Why a decoded batch was not stored; nothing of it was.
enum NotStored {
    RateLimited(RateLimited),
    /// The WAL or the index cannot write; the message says which and why.
    Unavailable {
        failure: Failure,
        message: String,
    },
    StorageFailed,
    /// Cluster mode: the JetStream log did not acknowledge the batch.
    LogUnavailable,
}

/// Seconds a sender waits after a storage failure.
const STORAGE_FAILED_RETRY: Duration = Duration::from_secs(1);
const STORAGE_FAILED: &str = "storage failed; nothing of this batch was stored, retry later";
/// Cluster mode: some records of the batch may be in the log; a resend is deduplicated.
const LOG_UNAVAILABLE: &str = "the cluster's log did not acknowledge this batch; retry it (records it already holds are deduplicated)";

/// Stores a decoded batch, after the rate limits of its key and org let it in.
async fn store(
    ingest: &Ingest,
    key: &KeyInfo,
    batch: Batch,
    receiver: Receiver,
) -> Result<IngestOutcome, NotStored> {
    ingest
        .admit(&key.id, &key.org_id, batch.len())
        .map_err(NotStored::RateLimited)?;
    ingest
        .submit(&key.org_id, key.provenance(), batch, receiver)
        .await
        .map_err(|e| match e {
            IngestError::Unavailable(ref failure) => NotStored::Unavailable {
                failure: failure.clone(),
                message: e.to_string(),
            },
            IngestError::Storage(_) => {
                tracing::error!(error = %e, "ingest failed");
                NotStored::StorageFailed
            }
            IngestError::Log(_) => {
                tracing::warn!(error = %e, "ingest: the cluster's log did not acknowledge a batch");
                NotStored::LogUnavailable
            }
        })
}

impl From<NotStored> for ApiError {
    fn from(e: NotStored) -> Self {
        match e {
            NotStored::RateLimited(refused) => {
                ApiError::rate_limited(refused.to_string(), refused.retry_after_secs())
            }
            NotStored::Unavailable { failure, message } => {
                ApiError::unavailable_for(&failure, message)
            }
            NotStored::StorageFailed => {
                ApiError::unavailable(STORAGE_FAILED, STORAGE_FAILED_RETRY.as_secs() as u32)
            }
            NotStored::LogUnavailable => {
                ApiError::unavailable(LOG_UNAVAILABLE, STORAGE_FAILED_RETRY.as_secs() as u32)
            }
        }
    }
}

impl From<NotStored> for Refusal {
    fn from(e: NotStored) -> Self {
        match e {
            NotStored::RateLimited(refused) => {
                Refusal::new(RefusalKind::RateLimited, refused.to_string())
                    .retry_after(refused.retry_after)
            }
            NotStored::Unavailable { failure, message } => {
                // A full disk is RESOURCE_EXHAUSTED with a retry hint, as a full spool is; any
                // other failure UNAVAILABLE.
                let kind = if failure.is_full() {
                    RefusalKind::Full
                } else {
                    RefusalKind::Unavailable
                };
                Refusal::new(kind, message).retry_after(failure.retry_after())
            }
            NotStored::StorageFailed => Refusal::new(RefusalKind::Unavailable, STORAGE_FAILED)
                .retry_after(STORAGE_FAILED_RETRY),
            NotStored::LogUnavailable => Refusal::new(RefusalKind::Unavailable, LOG_UNAVAILABLE)
                .retry_after(STORAGE_FAILED_RETRY),
        }
    }
}
