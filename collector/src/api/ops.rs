//! Operations endpoints and the JSON answers for unknown routes.

use super::{ApiError, AppState};
use crate::metrics::Sampled;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use std::sync::atomic::Ordering;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.ready.load(Ordering::Acquire) {
        Ok("ready\n")
    } else {
        Err(ApiError::unavailable("replaying the write-ahead log", 1))
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let metrics = state.metrics.clone();
    let store = state.ingest.store().stats();
    let index = tokio::task::spawn_blocking(move || state.index.stats())
        .await
        .ok()
        .and_then(|r| {
            r.map_err(|e| tracing::warn!(error = %e, "index statistics"))
                .ok()
        });
    let text = metrics.render(Sampled {
        wal_fsyncs: store.fsyncs,
        wal_fsync_seconds: store.fsync_time.as_secs_f64(),
        index_documents: index.as_ref().map_or(0, |i| i.docs),
        index_bytes: index.as_ref().map_or(0, |i| i.bytes_on_disk),
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
