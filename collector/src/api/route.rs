//! Cluster mode: a layer on the org routes whose answers come from a shard's index or the
//! owner's files (search, facets, export, verify, proofs, retention, streams) that serves the request
//! here if this node owns `shard(org)`, forwards it to the owner otherwise, and answers 503
//! `shard_unavailable` with `Retry-After` while the shard has no live owner. It runs after the
//! key check, so unauthenticated callers learn nothing; a key of another org is not forwarded
//! (the handler here answers its 404).

use super::{ApiError, AppState};
use crate::cluster::{FORWARD_WARN_EVERY, ROUTED_HEADER, Route, forward};
use crate::keys::KeyInfo;
use axum::extract::{RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

/// Layer: see the module doc. A no-op on a single node.
pub async fn route_to_owner(
    State(state): State<AppState>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(next.run(request).await);
    };
    let org = params
        .iter()
        .find_map(|(name, value)| (name == "org").then_some(value));
    let own_org = request
        .extensions()
        .get::<KeyInfo>()
        .is_some_and(|key| org == Some(key.org_id.as_str()));
    let (Some(org), true) = (org, own_org) else {
        return Ok(next.run(request).await);
    };
    let (shard, route) = cluster.directory.route(org);
    match route {
        Route::Local => Ok(next.run(request).await),
        // Forwarded once at most: a node that got it forwarded and does not own the shard
        // answers 503, whatever its view of the owners.
        Route::Remote { node_id, url } if !request.headers().contains_key(ROUTED_HEADER) => {
            forward(&url, cluster.directory.node_id(), request)
                .await
                .map_err(|e| {
                    let warnings = &cluster.forward_warnings;
                    if let Some(suppressed) = warnings.admit(shard, Instant::now()) {
                        tracing::warn!(shard, owner = %node_id, error = %e, suppressed, "cannot forward a read to the shard's owner (suppressed: this shard's failures not logged since the last line, at most one a {FORWARD_WARN_EVERY:?})");
                    }
                    ApiError::shard_unavailable(shard)
                })
        }
        Route::Remote { .. } | Route::Unavailable => Err(ApiError::shard_unavailable(shard)),
    }
}
