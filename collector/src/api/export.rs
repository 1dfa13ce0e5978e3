//! `GET /api/v1/orgs/{org}/audit-log/export`: every record matching the search filters, as CSV,
//! JSON or NDJSON, streamed from one snapshot. The scan of the matches is set up before answering
//! (it fixes the snapshot, gives the exact total and surfaces bad filters as a 400); the records
//! are then read and encoded on a blocking thread into a bounded channel, so memory stays flat
//! whatever the size. Each export records an `audit_log.exported` entry in the org's log, durably
//! before the response is handed out; the encoding starts meanwhile.

use super::audit_log::{effective_query, parse, query, record_read};
use super::auth::{OrgAccess, ReadLog};
use super::params::{Route, only_param};
use super::{ApiError, AppState};
use crate::export::{Encoder, ExportError, Prove, stream};
use crate::export_proof::{ProofContext, Sidecars, canonical_filters};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use chrono::Utc;
use codestax_common::api::{EXPORT_PROOF_HEADER, EXPORT_TOTAL_HEADER};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Chunks (of about 256 KiB) waiting for a slow client before the encoder waits.
const CHANNEL_CHUNKS: usize = 8;

/// The longest an export waits for staged past-week records to be flushed before it scans
/// (without them it holds the records through the last one before them).
const EXPORT_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn export(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse(&state, raw.as_deref(), Route::Export)?;
    let format = params.format.unwrap_or_default();
    let with_chain = params.with_chain;
    // The export carries its proof unless the org's tree cannot give one (then it is as before
    // proofs existed, and says so in its header).
    let proven = ProofContext::available(&state.trees, &org);
    let encoder = Encoder::with_proof(format, with_chain, proven).map_err(ApiError::internal)?;
    // The retention window applies to exports as to every read.
    let scoped = effective_query(&state, &org, &params.query);
    let context = ProofContext {
        org: org.clone(),
        encoding: format.as_str().to_string(),
        filters: canonical_filters(&params.filters),
        cutoff: scoped.floor,
        bytes_only: !format.recomputes_leaves(),
        trees: state.trees.clone(),
        heads: state.heads.clone(),
        retention: state.retention.clone(),
        index: state.index.clone(),
    };
    // Past-week records still staged hold walks back (a scan stops below them): give their
    // flush (`[index] cold_flush_after`) a moment so the export holds what a search shows.
    state.index.wait_walks_caught_up(EXPORT_CATCH_UP).await;
    let scan = query(&state, "export", {
        let org = org.clone();
        move |index| index.scan(&org, &scoped)
    })
    .await?;
    let total = scan.total();
    let filename = format!(
        "audit-log-{org}-{}.{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    // A bytes-only export's proof is fetched apart, under this id, once the bytes are in.
    let sidecar = (proven && !format.recomputes_leaves()).then(Sidecars::new_id);
    let proof_header = match (&sidecar, proven) {
        (Some(id), _) => format!("sidecar {id}"),
        (None, true) => "included".to_string(),
        (None, false) => "unavailable".to_string(),
    };
    let sidecars = state.sidecars.clone();
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(CHANNEL_CHUNKS);
    let encoding_org = org.clone();
    tokio::task::spawn_blocking(move || {
        let org = encoding_org;
        let send = |chunk: Vec<u8>| tx.blocking_send(Ok(chunk)).is_ok();
        let prove: Option<Prove> = proven.then(|| -> Prove {
            Box::new(move |seqs, file_sha256| {
                context
                    .build(seqs, file_sha256)
                    .map_err(|e| ExportError::Proof(e.to_string()))
            })
        });
        let result = stream(scan, encoder, prove, send).map(|(rows, bundle)| {
            if let (Some(id), Some(bundle)) = (sidecar, bundle) {
                sidecars.put(id, org.clone(), bundle);
            }
            rows
        });
        match result {
            Ok(rows) if rows != total => {
                tracing::error!(
                    org,
                    rows,
                    total,
                    "export wrote another number of rows than its snapshot holds"
                )
            }
            Ok(rows) => tracing::debug!(org, rows, "export done"),
            Err(ExportError::Gone) => tracing::info!(org, "export abandoned by the client"),
            Err(e) => {
                tracing::error!(org, error = %e, "export failed midway; the response is cut off");
                // An error in the body makes the server abort the response, so the client sees
                // an incomplete transfer rather than a short file that looks complete.
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    // The entry is made durable while the first chunks are encoded: no byte leaves before it
    // is (the body is handed out below), and if it cannot be written the receiver is dropped,
    // which stops the encoder.
    let mut extra = serde_json::Map::new();
    extra.insert("format".into(), json!(format.as_str()));
    if with_chain {
        extra.insert("with_chain".into(), json!(true));
    }
    record_read(
        &state,
        &key,
        &org,
        "audit_log.exported",
        &params,
        total,
        extra,
    )
    .await?;

    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .map_err(ApiError::internal)?,
    );
    headers.insert(EXPORT_TOTAL_HEADER, HeaderValue::from(total));
    headers.insert(
        EXPORT_PROOF_HEADER,
        HeaderValue::from_str(&proof_header).map_err(ApiError::internal)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /api/v1/orgs/{org}/audit-log/export/proof?id=ID`: the proof of a bytes-only (CSV)
/// export, whose id its `x-codestax-export-proof: sidecar ID` header gave. 404 until the export
/// has ended, after 15 minutes, or for another org's export.
pub async fn sidecar(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<codestax_common::export_proof::ProofBundle>, ApiError> {
    let id = only_param(raw.as_deref(), "id")?
        .ok_or_else(|| ApiError::invalid("id", "id is required: the export's proof id"))?;
    state
        .sidecars
        .get(&org, &id)
        .map(axum::Json)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no proof with this id: the export has not ended, ended over 15 minutes ago, or \
             is another org's",
            )
        })
}
