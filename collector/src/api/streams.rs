//! An org's streams (`docs/streams.md`):
//!
//! - `GET /api/v1/orgs/{org}/streams`, `GET …/streams/{id}`: ORG_ADMIN and ORG_OWNER (whoever
//!   reads the log may see where it goes); secrets are never shown (`has_secret`, `header_names`).
//! - `POST …/streams`, `PATCH …/streams/{id}` (`{"paused": true}` pauses, `false` resumes; also
//!   `POST …/{id}/pause` and `…/{id}/resume`), `DELETE …/streams/{id}`, `POST …/{id}/replay`
//!   (`{"from": <seq> | "<RFC 3339>"}`), `POST …/{id}/test`: ORG_OWNER.
//!
//! Creating, changing (pause, resume and replay included) and deleting are recorded in the org's
//! log (`audit_log.stream_created`, `…_changed`, `…_deleted`) before they are made; if the record
//! cannot be made durable, nothing changes; filters and destinations are bounded so that record
//! (old and new values) always fits (`definition::check_recordable`). On a single node a create,
//! change or delete first writes (fsyncs) what it will put in place (`Streams::create`): a full
//! disk refuses it with 503 before it is recorded, so the log never claims a change that was not
//! made. Streams declared in the collector's TOML are read-only: 409 `stream_declared`.
//!
//! In cluster mode every route is served by the owner of the org's shard (forwarded there by
//! `route::route_to_owner`): it delivers the org's streams and keeps their definitions and
//! cursors in the metastore: a change is written there in a transaction, recorded, then
//! committed, so while the metastore is unreachable (or the lease lapsed) a change answers 503
//! before anything is recorded.

use super::auth::{ManageStreams, OrgAccess, ReadLog};
use super::body::{MAX_CONTROL_BODY_BYTES, read_json};
use super::record::{Doing, record_action};
use super::{ApiError, AppState};
use crate::ingest::MAX_COLLECTOR_ENTRY_BYTES;
use crate::stream::definition::{MAX_DESTINATION_BYTES, MAX_FILTERS_BYTES};
use crate::stream::{
    ReplayFrom, SharedError, StreamError, StreamInput, StreamPatch, StreamView, Streams,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use codestax_common::{Change, Metadata};
use serde::Serialize;
use serde_json::Value;

/// `GET …/streams`.
#[derive(Debug, Serialize)]
pub struct StreamList {
    pub streams: Vec<StreamView>,
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::NotFound => ApiError::not_found(),
            StreamError::Declared(_) => {
                ApiError::new(StatusCode::CONFLICT, "stream_declared", e.to_string())
            }
            StreamError::Invalid(d) => ApiError::invalid(d.field, d.message),
            StreamError::Refused(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "destination_refused",
                e.to_string(),
            )
            .with_field("destination"),
            StreamError::TooMany(_) => {
                ApiError::new(StatusCode::CONFLICT, "too_many_streams", e.to_string())
            }
            StreamError::Store(ref store) => match store.io_error() {
                Some(source) => ApiError::state_unwritable("the stream settings", source),
                None => ApiError::internal(e),
            },
            StreamError::Shared(SharedError::Metastore(ref cause)) => {
                ApiError::metastore_unavailable(cause)
            }
            StreamError::Shared(SharedError::Unconfirmed(ref cause)) => {
                ApiError::metastore_unconfirmed(cause)
            }
            StreamError::Shared(SharedError::Local(_)) => ApiError::internal(e),
            // The shard moved (or its lease lapsed) between the routing and here, or the
            // metastore refused the write by epoch: nothing was written; the client asks again.
            StreamError::NotOwner | StreamError::Shared(SharedError::NotOwner(_)) => {
                ApiError::not_shard_owner(&e)
            }
        }
    }
}

fn streams(state: &AppState) -> Result<&Streams, ApiError> {
    state
        .streams
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("streams are not running on this collector", 5))
}

pub async fn list(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
) -> Result<Json<StreamList>, ApiError> {
    Ok(Json(StreamList {
        streams: streams(&state)?.list(&org).await?,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<StreamView>, ApiError> {
    Ok(Json(streams(&state)?.get(&org, &id).await?))
}

pub async fn create(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ManageStreams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<StreamView>), ApiError> {
    let s = streams(&state)?;
    let body: Value = read_json(&headers, body, MAX_CONTROL_BODY_BYTES, "a stream object").await?;
    let input = StreamInput::from_json(&body).map_err(StreamError::from)?;
    input.check_recordable().map_err(StreamError::from)?;
    s.check_new(&org, &input).await?;
    let id = Streams::new_id();
    let metadata = about(
        &id,
        &input.name,
        [
            ("destination_kind", input.destination.kind().into()),
            ("format", input.format.as_str().into()),
        ],
    );
    let record = record_action(
        &state,
        &key,
        &org,
        "audit_log.stream_created",
        Doing::Change,
        metadata,
    );
    let view = s.create(&org, &id, input, record).await??;
    tracing::info!(org = %org, stream = %id, kind = view.def.destination.kind(), key = %key.id, "stream created");
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn patch(
    State(state): State<AppState>,
    access: OrgAccess<ManageStreams>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StreamView>, ApiError> {
    let body: Value = read_json(&headers, body, MAX_CONTROL_BODY_BYTES, "a stream object").await?;
    let patch = StreamPatch::from_json(&body).map_err(StreamError::from)?;
    patch.check_recordable().map_err(StreamError::from)?;
    apply(&state, access, &id, patch).await
}

// A change's record holds the old and the new filters and destination; names, ids, the key and
// the envelope take well under the rest.
const _: () = assert!(
    2 * (MAX_FILTERS_BYTES + MAX_DESTINATION_BYTES) + 8 * 1024 <= MAX_COLLECTOR_ENTRY_BYTES
);

pub async fn pause(
    State(state): State<AppState>,
    access: OrgAccess<ManageStreams>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<StreamView>, ApiError> {
    set_paused(&state, access, &id, true).await
}

pub async fn resume(
    State(state): State<AppState>,
    access: OrgAccess<ManageStreams>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<StreamView>, ApiError> {
    set_paused(&state, access, &id, false).await
}

async fn set_paused(
    state: &AppState,
    access: OrgAccess<ManageStreams>,
    id: &str,
    paused: bool,
) -> Result<Json<StreamView>, ApiError> {
    let patch = StreamPatch {
        paused: Some(paused),
        ..StreamPatch::default()
    };
    apply(state, access, id, patch).await
}

/// Records and applies a change; a change that changes nothing is not recorded.
async fn apply(
    state: &AppState,
    OrgAccess { key, org, .. }: OrgAccess<ManageStreams>,
    id: &str,
    patch: StreamPatch,
) -> Result<Json<StreamView>, ApiError> {
    let s = streams(state)?;
    let old = s.check_patch(&org, id, &patch).await?;
    let mut changes = Vec::new();
    let mut change = |field: &str, old: Value, new: Value| {
        if old != new {
            changes.push(Change {
                field: field.into(),
                old,
                new,
            });
        }
    };
    if let Some(n) = &patch.name {
        change("name", old.def.name.clone().into(), n.clone().into());
    }
    if let Some(f) = patch.format {
        change("format", old.def.format.as_str().into(), f.as_str().into());
    }
    if let Some(f) = &patch.filters {
        change(
            "filters",
            serde_json::to_value(&old.def.filters).unwrap_or_default(),
            serde_json::to_value(f).unwrap_or_default(),
        );
    }
    if let Some((d, _)) = &patch.destination {
        // The destination without secrets; a new secret shows as a change of the destination.
        change(
            "destination",
            serde_json::to_value(&old.def.destination).unwrap_or_default(),
            serde_json::to_value(d).unwrap_or_default(),
        );
        if old.def.destination == *d {
            change("destination_secrets", Value::Null, "<replaced>".into());
        }
    }
    if let Some(p) = patch.paused {
        change("paused", old.def.paused.into(), p.into());
    }
    let mut metadata = about(id, &old.def.name, []);
    metadata.changes = changes;
    if metadata.changes.is_empty() {
        return Ok(Json(old));
    }
    let record = record_action(
        state,
        &key,
        &org,
        "audit_log.stream_changed",
        Doing::Change,
        metadata,
    );
    let view = s.patch(&org, id, patch, record).await??;
    tracing::info!(org = %org, stream = %id, key = %key.id, "stream changed");
    Ok(Json(view))
}

pub async fn delete(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ManageStreams>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let s = streams(&state)?;
    let old = s.get(&org, &id).await?;
    if old.def.declared {
        return Err(StreamError::Declared(id).into());
    }
    s.check_writable().await?;
    let metadata = about(
        &id,
        &old.def.name,
        [("destination_kind", old.def.destination.kind().into())],
    );
    let record = record_action(
        &state,
        &key,
        &org,
        "audit_log.stream_deleted",
        Doing::Change,
        metadata,
    );
    s.delete(&org, &id, record).await??;
    tracing::info!(org = %org, stream = %id, key = %key.id, "stream deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn replay(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ManageStreams>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StreamView>, ApiError> {
    let s = streams(&state)?;
    let body: Value = read_json(
        &headers,
        body,
        MAX_CONTROL_BODY_BYTES,
        "{\"from\": <seq> | \"<RFC 3339 time>\"}",
    )
    .await?;
    let from = parse_from(&body)?;
    let old = s.get(&org, &id).await?;
    s.check_writable().await?;
    let mut metadata = about(&id, &old.def.name, []);
    metadata.changes.push(Change {
        field: "delivered_seq".into(),
        old: old.status.delivered_seq.into(),
        new: match from {
            ReplayFrom::Seq(seq) => seq.saturating_sub(1).into(),
            ReplayFrom::Time(t) => format!(
                "before the first record received at or after {}",
                t.to_rfc3339()
            )
            .into(),
        },
    });
    record_action(
        &state,
        &key,
        &org,
        "audit_log.stream_changed",
        Doing::Change,
        metadata,
    )
    .await?;
    let view = s.replay(&org, &id, from).await?;
    tracing::info!(org = %org, stream = %id, key = %key.id, from = ?from, "stream replay");
    Ok(Json(view))
}

pub async fn test(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ManageStreams>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<crate::stream::TestReport>, ApiError> {
    Ok(Json(streams(&state)?.test(&org, &id).await?))
}

/// `{"from": N}` (a `seq`, 1 or more) or `{"from": "<RFC 3339>"}`.
fn parse_from(body: &Value) -> Result<ReplayFrom, ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::invalid(
            "body",
            "expected {\"from\": <seq> | \"<RFC 3339 time>\"}",
        ));
    };
    if let Some(k) = map.keys().find(|k| *k != "from") {
        return Err(ApiError::invalid(
            k.clone(),
            "unknown field; expected only \"from\"",
        ));
    }
    match map.get("from") {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| *n >= 1)
            .map(ReplayFrom::Seq)
            .ok_or_else(|| ApiError::invalid("from", "a seq must be a whole number, 1 or more")),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| ReplayFrom::Time(t.with_timezone(&Utc)))
            .map_err(|e| ApiError::invalid("from", format!("not an RFC 3339 time: {e}"))),
        Some(_) => Err(ApiError::invalid(
            "from",
            "must be a seq or an RFC 3339 time",
        )),
        None => Err(ApiError::invalid("from", "from is required")),
    }
}

/// The metadata naming the stream, plus `extra`.
fn about<const N: usize>(id: &str, name: &str, extra: [(&str, Value); N]) -> Metadata {
    let mut m = Metadata::default();
    m.extra.insert("stream_id".into(), id.into());
    m.extra.insert("stream_name".into(), name.into());
    for (k, v) in extra {
        m.extra.insert(k.into(), v);
    }
    m
}
