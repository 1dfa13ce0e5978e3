//! The HTTP API: `app(state) -> Router`. Operations (`/healthz`, `/readyz`), ingest
//! (`/v1/logs`, `/api/v1/ingest`, `/api/v1/import`), `/api/v1/whoami` and the org routes (`/api/v1/orgs/{org}/...`:
//! audit log with facets, export and verify, its Merkle tree's checkpoint and proofs; keys;
//! retention settings; streams; saved views; and the unauthenticated `/api/v1/signing-key`), with the key check as a
//! layer on the routes that need it and one JSON error shape everywhere, plus the dashboard's
//! Audit Log page (`/settings/audit-log`). Prometheus `/metrics` is served apart, by
//! `metrics_app(state)` on `metrics.listen`: it needs no key, so it stays off the API port.

mod audit_log;
mod auth;
mod body;
mod dashboard;
mod error;
mod export;
mod ingest;
mod keys;
mod ops;
mod params;
mod proofs;
mod record;
mod retention;
mod route;
mod saved_views;
mod state;
mod streams;
mod view_groups;

pub use error::ApiError;
pub use ingest::OtlpIngest;
pub(crate) use record::record_key_events;
pub(crate) use state::RequestDeadline;
pub use state::{ApiLimits, AppState};

use crate::health::Unready;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{delete, get, post};
use codestax_otlp_receiver::http::HttpLimits;

/// The collector's HTTP API.
pub fn app(state: AppState) -> Router {
    // OTLP/HTTP authenticates in the receiver, as OTLP/gRPC does.
    let otlp = codestax_otlp_receiver::http::router(
        OtlpIngest {
            ingest: state.ingest.clone(),
            keys: state.keys.clone(),
        },
        HttpLimits {
            max_body_bytes: state.limits.max_body_bytes,
            max_decompressed_bytes: state.limits.max_decompressed_bytes,
        },
    )
    .route_layer(from_fn_with_state(state.clone(), require_ready));
    // Reads answered from a shard's index or its owner's files: in cluster mode served by the
    // owner of shard(org), wherever they arrive.
    let routed = Router::new()
        .route("/api/v1/orgs/{org}/audit-log", get(audit_log::search))
        .route(
            "/api/v1/orgs/{org}/audit-log/facets",
            get(audit_log::facets),
        )
        .route("/api/v1/orgs/{org}/audit-log/export", get(export::export))
        .route(
            "/api/v1/orgs/{org}/audit-log/export/proof",
            get(export::sidecar),
        )
        .route(
            "/api/v1/orgs/{org}/audit-log/verify",
            get(audit_log::verify),
        )
        .route(
            "/api/v1/orgs/{org}/audit-log/checkpoint",
            get(proofs::checkpoint),
        )
        .route(
            "/api/v1/orgs/{org}/audit-log/proof/inclusion",
            get(proofs::inclusion),
        )
        .route(
            "/api/v1/orgs/{org}/audit-log/proof/consistency",
            get(proofs::consistency),
        )
        .route("/api/v1/orgs/{org}/audit-log/{id}", get(audit_log::get_one))
        .route(
            "/api/v1/orgs/{org}/settings/retention",
            get(retention::get).put(retention::put),
        )
        // Streams are delivered by the shard's owner, which keeps their live status.
        .route(
            "/api/v1/orgs/{org}/streams",
            get(streams::list).post(streams::create),
        )
        .route(
            "/api/v1/orgs/{org}/streams/{id}",
            get(streams::get)
                .patch(streams::patch)
                .delete(streams::delete),
        )
        .route("/api/v1/orgs/{org}/streams/{id}/test", post(streams::test))
        .route(
            "/api/v1/orgs/{org}/streams/{id}/replay",
            post(streams::replay),
        )
        .route(
            "/api/v1/orgs/{org}/streams/{id}/pause",
            post(streams::pause),
        )
        .route(
            "/api/v1/orgs/{org}/streams/{id}/resume",
            post(streams::resume),
        )
        .route_layer(from_fn_with_state(state.clone(), route::route_to_owner));
    let keyed = Router::new()
        .route("/api/v1/ingest", post(ingest::ndjson))
        .route("/api/v1/import", post(ingest::import))
        .route("/api/v1/whoami", get(auth::whoami))
        .merge(routed)
        .route(
            "/api/v1/orgs/{org}/keys",
            get(keys::list).post(keys::create),
        )
        .route("/api/v1/orgs/{org}/keys/{id}", delete(keys::revoke))
        .route(
            "/api/v1/orgs/{org}/saved-views",
            get(saved_views::list).post(saved_views::create),
        )
        .route(
            "/api/v1/orgs/{org}/saved-views/{id}",
            get(saved_views::get)
                .patch(saved_views::patch)
                .delete(saved_views::delete),
        )
        .route_layer(from_fn_with_state(state.clone(), auth::require_key))
        .route_layer(from_fn_with_state(state.clone(), require_ready));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/api/v1/signing-key", get(proofs::signing_key))
        .merge(otlp)
        .merge(keyed)
        .merge(dashboard::routes())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // Bodies are read by the handlers with their own limits, so the errors keep our shape.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(request_limits))
        .layer(from_fn_with_state(state.clone(), request_deadline))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}

/// The metrics listener: `GET /metrics` (Prometheus text), JSON 404 for anything else.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(state)
}

/// Layer: 503 with a retry hint until the WAL replay is done. A WAL or an index that cannot
/// write stops nothing here: reads go on from what is committed, and ingest answers for itself.
async fn require_ready(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.health.is_started() {
        return Err(ApiError::unready(&Unready::Starting));
    }
    Ok(next.run(request).await)
}

/// Longest request target (path and query) answered, in bytes; longer ones get a JSON 414.
/// Past hyper's own limit (64 KiB) hyper answers 414 itself, with an empty body.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest total of request header names and values, in bytes; more gets a JSON 431. Past
/// hyper's read buffer (about 400 KiB) or 100 headers, hyper answers 431 itself, with an empty
/// body.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Layer: refuses oversized request targets and headers in the JSON error shape.
async fn request_limits(request: Request, next: Next) -> Result<Response, ApiError> {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {uri_len} bytes, over the limit of {MAX_URI_BYTES}"),
        ));
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request headers are {header_bytes} bytes, over the limit of {MAX_HEADER_BYTES}"
            ),
        ));
    }
    Ok(next.run(request).await)
}

/// Layer: `limits.request_timeout` from the request's arrival to its answer's head (a slow
/// upload or a stuck handler), as a JSON 408. Handlers are cancel-safe already (a client that
/// hangs up drops them the same way); a streamed answer, once its head is out, is not cut.
async fn request_deadline(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let limit = state.limits.request_timeout;
    let deadline = RequestDeadline(tokio::time::Instant::now() + limit);
    request.extensions_mut().insert(deadline);
    tokio::time::timeout(limit, next.run(request))
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request was not read and answered within {limit:?} (limits.request_timeout)"
                ),
            )
        })
}

#[cfg(test)]
mod tests;
