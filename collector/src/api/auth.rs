//! Who is calling: the bearer key, checked by a layer on the routes that need one, and the
//! tenancy rule every org route applies.

use super::{ApiError, AppState};
use crate::keys::KeyInfo;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use axum::{Extension, Json};
use codestax_common::api::WhoAmI;

/// Layer: authenticates `Authorization: Bearer <token>` and puts the [`KeyInfo`] in the request's
/// extensions; 401 when the header is missing or the key is unknown or revoked.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <API key> header"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be \"Bearer <API key>\"")
        })?;
    let key = state
        .keys
        .authenticate(token)
        .ok_or_else(|| ApiError::invalid_token("unknown or revoked API key"))?;
    request.extensions_mut().insert(key);
    Ok(next.run(request).await)
}

/// `GET /api/v1/whoami`: the calling key's id, org, role and name. Any valid key may ask.
pub async fn whoami(Extension(key): Extension<KeyInfo>) -> Json<WhoAmI> {
    Json(WhoAmI {
        key_id: key.id,
        org_id: key.org_id,
        role: key.role.to_string(),
        name: key.name,
    })
}

/// The org-read rule: only ORG_OWNER and ORG_ADMIN keys of `org` read it. A key of another org
/// gets 404 whatever its role, so an org's existence never leaks.
pub fn check_reader(key: &KeyInfo, org: &str) -> Result<(), ApiError> {
    if key.org_id != org {
        return Err(ApiError::not_found());
    }
    if !key.role.can_read_log() {
        return Err(ApiError::forbidden(format!(
            "the audit log is available to ORG_ADMIN and ORG_OWNER keys only; this key is {}",
            key.role
        )));
    }
    Ok(())
}

/// The ingest rule: INGEST keys send records for their own org.
pub fn check_ingester(key: &KeyInfo) -> Result<(), ApiError> {
    if !key.role.can_ingest() {
        return Err(ApiError::forbidden(format!(
            "ingest needs an INGEST key; this key is {}",
            key.role
        )));
    }
    Ok(())
}
