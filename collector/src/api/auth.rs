//! Who is calling and what they may do: the bearer key (checked by a layer on the routes that
//! need one, and by the OTLP receivers), the role each action needs ([`Permission`]), and the
//! tenancy rule of every org route as an extractor ([`OrgAccess`]).

use super::{ApiError, AppState};
use crate::keys::{KeyInfo, KeyStore, Role};
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use codestax_common::api::WhoAmI;
use codestax_otlp_receiver::{Bearer, Refusal, RefusalKind};
use std::marker::PhantomData;

/// Why a request has no valid key: 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("missing Authorization: Bearer <API key> header")]
    Missing,
    #[error("the Authorization header must be \"Bearer <API key>\"")]
    Malformed,
    #[error("unknown or revoked API key")]
    UnknownKey,
}

/// The key a request's `Authorization` header names, if it is a live one.
pub fn authenticate(keys: &KeyStore, bearer: Bearer<'_>) -> Result<KeyInfo, Unauthenticated> {
    match bearer {
        Bearer::Missing => Err(Unauthenticated::Missing),
        Bearer::Malformed => Err(Unauthenticated::Malformed),
        Bearer::Token(token) => keys.authenticate(token).ok_or(Unauthenticated::UnknownKey),
    }
}

impl From<Unauthenticated> for ApiError {
    fn from(e: Unauthenticated) -> Self {
        match e {
            Unauthenticated::Missing => ApiError::unauthorized(e.to_string()),
            Unauthenticated::Malformed | Unauthenticated::UnknownKey => {
                ApiError::invalid_token(e.to_string())
            }
        }
    }
}

impl From<Unauthenticated> for Refusal {
    fn from(e: Unauthenticated) -> Self {
        let invalid_token = e != Unauthenticated::Missing;
        Refusal::new(
            RefusalKind::Unauthenticated { invalid_token },
            e.to_string(),
        )
    }
}

/// Layer: authenticates `Authorization: Bearer <token>` and puts the [`KeyInfo`] in the request's
/// extensions; 401 when the header is missing or the key is unknown or revoked.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let bearer = Bearer::parse(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    let mut found = authenticate(&state.keys, bearer);
    // Cluster mode: the key may have been made on another node a moment ago.
    if let (Err(Unauthenticated::UnknownKey), Some(cluster)) = (&found, &state.cluster)
        && cluster.keys.refresh_for_unknown_token().await
    {
        found = authenticate(&state.keys, bearer);
    }
    let key = found?;
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

/// An action a key's role must allow.
pub trait Permission: Send + Sync + 'static {
    fn allows(role: Role) -> bool;
    /// What the refusal says, before "; this key is <role>".
    const NEEDS: &'static str;
}

/// Reading an org's audit log and settings: ORG_OWNER and ORG_ADMIN keys.
pub struct ReadLog;
impl Permission for ReadLog {
    fn allows(role: Role) -> bool {
        role.can_read_log()
    }
    const NEEDS: &'static str = "the audit log is available to ORG_ADMIN and ORG_OWNER keys only";
}

/// Managing an org's keys: ORG_OWNER keys.
pub struct ManageKeys;
impl Permission for ManageKeys {
    fn allows(role: Role) -> bool {
        role.can_manage_keys()
    }
    const NEEDS: &'static str = "managing keys needs an ORG_OWNER key";
}

/// Changing an org's retention: ORG_OWNER keys.
pub struct ChangeRetention;
impl Permission for ChangeRetention {
    fn allows(role: Role) -> bool {
        role.can_change_retention()
    }
    const NEEDS: &'static str = "changing retention needs an ORG_OWNER key";
}

/// Managing an org's streams (create, change, pause, replay, test, delete): ORG_OWNER keys.
/// Reading them is [`ReadLog`]: they send the log, so who reads the log may see where.
pub struct ManageStreams;
impl Permission for ManageStreams {
    fn allows(role: Role) -> bool {
        role.can_manage_streams()
    }
    const NEEDS: &'static str = "managing streams needs an ORG_OWNER key";
}

/// Sending records (NDJSON, OTLP/HTTP, OTLP/gRPC) for the key's own org: INGEST keys.
pub struct IngestRecords;
impl Permission for IngestRecords {
    fn allows(role: Role) -> bool {
        role.can_ingest()
    }
    const NEEDS: &'static str = "ingest needs an INGEST key";
}

/// A key whose role does not allow the action: 403.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{needs}; this key is {role}")]
pub struct Denied {
    needs: &'static str,
    role: Role,
}

/// Checks that `key`'s role allows `P`.
pub fn permit<P: Permission>(key: &KeyInfo) -> Result<(), Denied> {
    if P::allows(key.role) {
        Ok(())
    } else {
        Err(Denied {
            needs: P::NEEDS,
            role: key.role,
        })
    }
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> Self {
        ApiError::forbidden(e.to_string())
    }
}

impl From<Denied> for Refusal {
    fn from(e: Denied) -> Self {
        Refusal::new(RefusalKind::PermissionDenied, e.to_string())
    }
}

/// Extractor of an org route (`/api/v1/orgs/{org}/...`): the calling key, allowed to do `P` in
/// the org of the path. A key of another org, or of an org that does not exist, gets 404 whatever
/// its role, so an org's existence never leaks; a key of the org without the role gets 403.
pub struct OrgAccess<P> {
    pub key: KeyInfo,
    pub org: String,
    permission: PhantomData<P>,
}

impl<P: Permission> FromRequestParts<AppState> for OrgAccess<P> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let org = params
            .iter()
            .find_map(|(name, value)| (name == "org").then(|| value.to_string()));
        let (Some(org), Some(key)) = (org, parts.extensions.get::<KeyInfo>()) else {
            return Err(
                ApiError::internal("OrgAccess on a route without {org} or a key").into_response(),
            );
        };
        if key.org_id != org {
            return Err(ApiError::not_found().into_response());
        }
        permit::<P>(key).map_err(|e| ApiError::from(e).into_response())?;
        Ok(OrgAccess {
            key: key.clone(),
            org,
            permission: PhantomData,
        })
    }
}
