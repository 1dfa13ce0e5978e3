//! Operations endpoints and the JSON answers for unknown routes.

use super::{ApiError, AppState};
use crate::health::Part;
use crate::metrics::{Sampled, StreamSample};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when started and the WAL and the index both take writes; else 503 saying why: code
/// `starting`, or the code of what cannot write (`wal_full`, `index_failed`...; the WAL's first),
/// and a message naming every part that cannot, with the OS error.
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match state.health.readiness() {
        Ok(()) => Ok("ready\n"),
        Err(unready) => Err(ApiError::unready(&unready)),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let metrics = state.metrics.clone();
    let store = state.ingest.store().stats();
    let health = state.health.clone();
    let state_streams = state.streams.clone();
    let index = tokio::task::spawn_blocking(move || state.index.stats())
        .await
        .ok()
        .and_then(|r| {
            r.map_err(|e| tracing::warn!(error = %e, "index statistics"))
                .ok()
        });
    if let Some(streams) = &state_streams {
        let samples: Vec<StreamSample> = streams
            .statuses()
            .await
            .into_iter()
            .map(|(org, stream, s)| StreamSample {
                org,
                stream,
                state: s.state.as_str(),
                delivered_seq: s.delivered_seq,
                lag_records: s.lag_records,
                lag_seconds: s.lag_seconds,
                delivered_records: s.delivered_records,
                expired_records: s.expired_records,
                truncated_records: s.truncated_records,
            })
            .collect();
        metrics.observe_streams(&samples);
    }
    let text = metrics.render(Sampled {
        wal_fsyncs: store.fsyncs,
        wal_fsync_seconds: store.fsync_time.as_secs_f64(),
        wal_write_failures: store.storage_errors,
        tree_write_failures: store.tree_errors,
        index_documents: index.as_ref().map_or(0, |i| i.docs),
        index_bytes: index.as_ref().map_or(0, |i| i.bytes_on_disk),
        wal_writable: health.failure(Part::Wal).is_none(),
        index_writable: health.failure(Part::Index).is_none(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
