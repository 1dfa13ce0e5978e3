//! `/healthz` and `/metrics` on `api.listen`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::spool::Spool;

/// What the API reads from.
#[derive(Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub spool: Spool,
}

#[derive(Serialize)]
struct Health {
    /// `ok`; while intake is paused (HTTP 503): `spool_disk_full` (the disk under the spool
    /// has no space), `spool_write_failing` (other disk errors), `spool_full` (`max_bytes`).
    status: &'static str,
    spool_bytes: u64,
    spool_max_bytes: u64,
    spool_unacked_bytes: u64,
    files_open: u64,
    /// Set while appends to the spool fail on the disk, until one succeeds.
    spool_write_error: Option<WriteError>,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct WriteError {
    disk_full: bool,
    message: String,
    /// When the first append of this run of failures failed (RFC 3339).
    since: String,
    failures: u64,
}

/// The API router.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let stats = state.spool.stats();
    let failure = state.spool.write_failure();
    let status = match &failure {
        Some(f) if f.disk_full => "spool_disk_full",
        Some(_) => "spool_write_failing",
        None if !state.spool.has_room_for(64 * 1024) => "spool_full",
        None => "ok",
    };
    let health = Health {
        status,
        spool_bytes: stats.used_bytes,
        spool_max_bytes: stats.max_bytes,
        spool_unacked_bytes: state.spool.unacked_bytes(),
        files_open: state.metrics.files_open.get(),
        spool_write_error: failure.map(|f| WriteError {
            disk_full: f.disk_full,
            message: f.message,
            since: codestax_common::time::format_rfc3339(&f.since.into()),
            failures: f.failures,
        }),
        last_error: state.metrics.last_error(),
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(health)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let stats = state.spool.stats();
    state.metrics.spool_bytes.set(stats.used_bytes);
    state.metrics.spool_max_bytes.set(stats.max_bytes);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolOptions;
    use tower::ServiceExt;

    #[tokio::test]
    async fn health_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(
            dir.path(),
            SpoolOptions {
                max_bytes: 1 << 20,
                segment_bytes: 64 << 10,
            },
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.lines_read.inc_by(3);
        metrics.set_file_lag("/l/a.log", 42);
        let router = app(ApiState { metrics, spool });
        let get = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let response = router.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["spool_max_bytes"], 1 << 20);

        let response = router.oneshot(get("/metrics")).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for expected in [
            "codestax_agent_lines_read_total 3",
            "codestax_agent_file_lag_bytes{path=\"/l/a.log\"} 42",
            "codestax_agent_spool_max_bytes 1048576",
            "codestax_agent_records_acknowledged_total 0",
            "codestax_agent_retries_total 0",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
