//! `GET /api/v1/orgs/{org}/audit-log/export`: every record matching the search filters, as CSV,
//! JSON or NDJSON, streamed from one snapshot. The scan of the matches is set up before answering
//! (it fixes the snapshot, gives the exact total and surfaces bad filters as a 400); the records
//! are then read and encoded on a blocking thread into a bounded channel, so memory stays flat
//! whatever the size. Each export records an `audit_log.exported` entry in the org's log.

use super::audit_log::{effective_query, parse, query, record_read};
use super::auth::{OrgAccess, ReadLog};
use super::params::Route;
use super::{ApiError, AppState};
use crate::export::{Encoder, ExportError, stream};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use chrono::Utc;
use codestax_common::api::EXPORT_TOTAL_HEADER;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Chunks (of about 256 KiB) waiting for a slow client before the encoder waits.
const CHANNEL_CHUNKS: usize = 8;

pub async fn export(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse(&state, raw.as_deref(), Route::Export)?;
    let format = params.format.unwrap_or_default();
    let with_chain = params.with_chain;
    let encoder = Encoder::new(format, with_chain).map_err(ApiError::internal)?;
    // The retention window applies to exports as to every read.
    let scoped = effective_query(&state, &org, &params.query);
    let scan = query(&state, "export", {
        let org = org.clone();
        move |index| index.scan(&org, &scoped)
    })
    .await?;
    let total = scan.total();
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

    let filename = format!(
        "audit-log-{org}-{}.{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let send = |chunk: Vec<u8>| tx.blocking_send(Ok(chunk)).is_ok();
        match stream(scan, encoder, send) {
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
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
