//! `GET /api/v1/whoami`: what the calling key is, so a client (the dashboard) learns its org and
//! role. Any valid key may ask; the answer never includes the token or its hash.

use crate::keys::KeyInfo;
use axum::{Extension, Json};
use serde::Serialize;

/// The answer of `GET /api/v1/whoami`.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    pub key_id: String,
    pub org_id: String,
    /// `ORG_OWNER`, `ORG_ADMIN`, `MEMBER` or `INGEST`.
    pub role: String,
    /// The label given at creation, if any.
    pub name: Option<String>,
}

pub async fn whoami(Extension(key): Extension<KeyInfo>) -> Json<WhoAmI> {
    Json(WhoAmI {
        key_id: key.id,
        org_id: key.org_id,
        role: key.role.to_string(),
        name: key.name,
    })
}
