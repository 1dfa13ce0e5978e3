//! Ingest from keyed senders: the native `POST /api/v1/ingest` (NDJSON) and the sink behind the
//! OTLP receivers ([`OtlpIngest`]: authenticate the key, then `Ingest::submit`), OTLP/HTTP
//! `POST /v1/logs` and OTLP/gRPC alike, and `POST /api/v1/import` (history brought in by
//! `codestax import`). Invalid records are rejected one by one; 400 only when nothing was accepted.

use super::auth::{IngestRecords, authenticate, permit};
use super::params::only_param;
use super::{ApiError, AppState, RequestDeadline};
use crate::health::Failure;
use crate::ingest::{
    Batch, EXPIRED_ON_ARRIVAL_LABEL, Ingest, IngestError, IngestOutcome, RateLimited, Receiver,
    Rejections, decode_ndjson, decode_ndjson_into, decode_otlp,
};
use crate::keys::{KeyInfo, KeyStore};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use codestax_common::api::IngestResponse;
use codestax_common::{Provenance, Rules};
use codestax_otlp_receiver::body::{ContentEncoding, read_limited};
use codestax_otlp_receiver::http::media_type;
use codestax_otlp_receiver::{Bearer, Exported, Logs, LogsSink, Refusal, RefusalKind, Transport};
use std::time::Duration;

/// The native receiver: one JSON record per line. `?refresh=wait_for` answers once what it
/// stored is searchable ([`Refresh`]).
pub async fn ndjson(
    State(state): State<AppState>,
    Extension(key): Extension<KeyInfo>,
    deadline: Option<Extension<RequestDeadline>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    permit::<IngestRecords>(&key)?;
    let refresh = Refresh::from_query(&state, raw.as_deref())?;
    let rules = state.ingest.rules();
    let org = key.org_id.clone();
    let candidates = decode_ndjson_body(&state, &headers, body, move |b| {
        decode_ndjson(b, &org, &rules)
    })
    .await?;
    let provenance = key.provenance();
    let outcome = store(
        &state.ingest,
        &key,
        provenance,
        candidates,
        Receiver::Ndjson,
    )
    .await?;
    let searchable = match refresh {
        Refresh::WaitFor if outcome.accepted > 0 => {
            let until = wait_until(deadline.map(|Extension(d)| d));
            Some(searchable_within(&state.ingest, until).await)
        }
        Refresh::WaitFor | Refresh::No => None,
    };
    answer(outcome, searchable)
}

/// The native ingest's `?refresh=` (named as Elasticsearch's): `wait_for` holds the answer until
/// everything stored before it is searchable (at most [`REFRESH_WAIT_MAX`]), for scripts and
/// tests that search right after they ingest; `false` (the default) answers once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    No,
    WaitFor,
}

/// The longest a `refresh=wait_for` answer waits for the index: past it (or close to the
/// request's deadline, `limits.request_timeout`) the answer says `"searchable": false` (the
/// records are durable all the same).
const REFRESH_WAIT_MAX: Duration = Duration::from_secs(30);

impl Refresh {
    fn from_query(state: &AppState, raw: Option<&str>) -> Result<Refresh, ApiError> {
        let refresh = match only_param(raw, "refresh")?.as_deref() {
            None | Some("false") => Refresh::No,
            Some("wait_for") => Refresh::WaitFor,
            Some(other) => {
                return Err(ApiError::invalid(
                    "refresh",
                    format!("refresh must be wait_for or false, not {other:?}"),
                ));
            }
        };
        if refresh == Refresh::WaitFor && state.cluster.is_some() {
            return Err(ApiError::invalid(
                "refresh",
                "refresh=wait_for is not available in cluster mode: the shard's owner indexes \
                 the records, on its own schedule; search again until they show",
            ));
        }
        Ok(refresh)
    }
}

/// How long before the request's deadline a `refresh=wait_for` stops waiting, to answer with
/// `"searchable": false` rather than have the deadline answer 408 for a batch that is durable.
const REFRESH_ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// When a `refresh=wait_for` stops waiting: [`REFRESH_WAIT_MAX`] from now, or
/// [`REFRESH_ANSWER_MARGIN`] before the request's deadline if that comes first.
fn wait_until(deadline: Option<RequestDeadline>) -> tokio::time::Instant {
    let most = tokio::time::Instant::now() + REFRESH_WAIT_MAX;
    deadline.map_or(most, |RequestDeadline(d)| {
        most.min(d.checked_sub(REFRESH_ANSWER_MARGIN).unwrap_or(d))
    })
}

/// Waits until the index has every record stored so far (this batch's, and the originals of
/// its duplicates), at most until `until`: whether it did.
async fn searchable_within(ingest: &Ingest, until: tokio::time::Instant) -> bool {
    let store = ingest.store();
    let through = store.stats().next_lsn.saturating_sub(1);
    tokio::time::timeout_at(until, store.wait_indexed_through(through))
        .await
        .is_ok()
}

/// History brought in (`codestax import`): NDJSON records as the native receiver takes them,
/// and as this project's exports write them. What differs: the input's chain fields and
/// provenance are replaced, never trusted (the records are stamped `imported` by this key);
/// the source's collector entries (`audit_log.*`) come in as imported records, though never
/// under a reserved id; records older than the org's retention are refused as expired on
/// arrival rather than stored and deleted; every rejection is listed, with its line.
pub async fn import(
    State(state): State<AppState>,
    Extension(key): Extension<KeyInfo>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    permit::<IngestRecords>(&key)?;
    let source = import_source(raw.as_deref())?;
    let rules = Rules {
        // Provenance and `audit_log.*` are read here; the stamp and `check_reserved_id` in
        // `Ingest::submit` decide what comes in.
        collector_entries: true,
        ..state.ingest.rules()
    };
    let org = key.org_id.clone();
    let batch = decode_ndjson_body(&state, &headers, body, move |b| {
        let batch = Batch {
            records: Vec::new(),
            rejections: Rejections::listing_all(),
        };
        decode_ndjson_into(batch, b, &org, &rules)
    })
    .await?;
    let provenance = key.import_provenance(source);
    let outcome = store(&state.ingest, &key, provenance, batch, Receiver::Import).await?;
    answer(outcome, None)
}

/// Longest `source` an import may name, in characters.
pub const IMPORT_SOURCE_MAX_CHARS: usize = 200;

/// The import's `?source=NAME` (where the records come from, kept in their provenance): at most
/// [`IMPORT_SOURCE_MAX_CHARS`] characters, no control or bidirectional formatting characters; no
/// other parameter.
fn import_source(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let source = only_param(raw, "source")?;
    if let Some(value) = &source {
        let chars = value.chars().count();
        if chars == 0
            || chars > IMPORT_SOURCE_MAX_CHARS
            || value.chars().any(codestax_common::is_refused_in_names)
        {
            return Err(ApiError::invalid(
                "source",
                format!(
                    "source must be 1 to {IMPORT_SOURCE_MAX_CHARS} characters without control or \
                     bidirectional formatting characters (it names where the records come from)"
                ),
            ));
        }
    }
    Ok(source)
}

/// An NDJSON request body, read within the limit, to be inflated where it is parsed.
struct NdjsonBody {
    raw: Vec<u8>,
    encoding: ContentEncoding,
    max_decompressed_bytes: usize,
}

impl NdjsonBody {
    fn inflate(self) -> Result<Vec<u8>, ApiError> {
        Ok(self
            .encoding
            .decode(self.raw, self.max_decompressed_bytes)?)
    }
}

/// An NDJSON request body, its media type checked, read within the limit.
async fn ndjson_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<NdjsonBody, ApiError> {
    let media = media_type(headers);
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
    let encoding = ContentEncoding::of(headers)?;
    Ok(NdjsonBody {
        raw,
        encoding,
        max_decompressed_bytes: limits.max_decompressed_bytes,
    })
}

/// Reads an NDJSON body and hands its inflated bytes to `decode` off the async workers:
/// inflating and parsing a large body is CPU work.
async fn decode_ndjson_body<T: Send + 'static>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    decode: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let body = ndjson_body(state, headers, body).await?;
    tokio::task::spawn_blocking(move || Ok(decode(&body.inflate()?)))
        .await
        .map_err(ApiError::internal)?
}

/// The answer to an NDJSON batch: what was accepted, and each rejected line; 400 (with the same
/// details) when nothing was.
fn answer(outcome: IngestOutcome, searchable: Option<bool>) -> Result<Response, ApiError> {
    let response = IngestResponse {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected: outcome.rejected.total(),
        expired: outcome.rejected.counted(EXPIRED_ON_ARRIVAL_LABEL),
        errors: outcome.rejected.listed().to_vec(),
        more_errors: outcome.rejected.unlisted(),
        searchable,
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

    fn convert(&self, key: &KeyInfo, logs: Logs<'_>) -> Result<Batch, Refusal> {
        decode_otlp(logs, &key.org_id, &self.ingest.rules())
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
        let provenance = key.provenance();
        let outcome = store(&self.ingest, &key, provenance, batch, receiver).await?;
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
    provenance: Provenance,
    batch: Batch,
    receiver: Receiver,
) -> Result<IngestOutcome, NotStored> {
    ingest
        .admit(&key.id, &key.org_id, batch.len())
        .map_err(NotStored::RateLimited)?;
    ingest
        .submit(&key.org_id, provenance, batch, receiver)
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
