//! API keys over HTTP: `GET|POST /api/v1/orgs/{org}/keys`, `DELETE /api/v1/orgs/{org}/keys/{id}`,
//! for ORG_OWNER keys of the org. Each change is recorded in the org's log before it is made
//! (`auth.api_key_created` / `auth.api_key_revoked`, actor = the acting key): a change whose
//! record cannot be made durable is refused with 503 and not made.

use super::auth::{ManageKeys, OrgAccess};
use super::body::{MAX_CONTROL_BODY_BYTES, read_json};
use super::record::record_key_event_blocking;
use super::{ApiError, AppState};
use crate::health::Failure;
use crate::keys::{KeyError, KeyInfo, Role};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

/// `POST` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub role: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST` answer: the token is shown this once.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    pub key: KeyInfo,
    pub token: String,
}

pub async fn list(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ManageKeys>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    Ok(Json(state.keys.list(Some(&org))))
}

pub async fn create(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ManageKeys>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let request: CreateKey = read_json(
        &headers,
        body,
        MAX_CONTROL_BODY_BYTES,
        "{\"role\": ..., \"name\"?: ...}",
    )
    .await?;
    let role: Role = request
        .role
        .parse()
        .map_err(|e: crate::keys::UnknownRole| ApiError::invalid("role", e.to_string()))?;
    let (keys, ingest) = (state.keys.clone(), state.ingest.clone());
    let (info, token) = tokio::task::spawn_blocking(move || {
        let mut failure = None;
        keys.create_by(&key.id, &org, role, request.name.as_deref(), |event| {
            record_key_event_blocking(&ingest, event, &mut failure)
        })
        .map_err(|e| key_error(e, failure))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: info,
            token: token.expose().to_string(),
        }),
    ))
}

pub async fn revoke(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ManageKeys>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<KeyInfo>, ApiError> {
    // Another org's key is as unknown as a missing one.
    if state.keys.get(&id).is_none_or(|k| k.org_id != org) {
        return Err(ApiError::not_found());
    }
    let (keys, ingest) = (state.keys.clone(), state.ingest.clone());
    let info = tokio::task::spawn_blocking(move || {
        let mut failure = None;
        keys.revoke_by(&key.id, &id, |event| {
            record_key_event_blocking(&ingest, event, &mut failure)
        })
        .map_err(|e| key_error(e, failure))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(info))
}

/// The answer to a key change that failed; `failure`: why its record could not be written, if
/// the WAL or the index could not.
fn key_error(e: KeyError, failure: Option<Failure>) -> ApiError {
    match e {
        KeyError::NotFound(_) => ApiError::not_found(),
        KeyError::AlreadyRevoked { .. } => {
            ApiError::new(StatusCode::CONFLICT, "already_revoked", e.to_string())
        }
        KeyError::InvalidName(_) => ApiError::invalid("name", e.to_string()),
        KeyError::NotRecorded(_) => match failure {
            Some(failure) => ApiError::unavailable_for(&failure, e.to_string()),
            None => ApiError::unavailable(e.to_string(), 1),
        },
        KeyError::Io { ref source, .. } => ApiError::state_unwritable("the key store", source),
        other => ApiError::internal(other),
    }
}
