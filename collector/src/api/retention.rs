//! An org's retention: `GET /api/v1/orgs/{org}/settings/retention` (ORG_ADMIN and ORG_OWNER)
//! and `PUT` with `{"days": N}` (ORG_OWNER of an enterprise org; 1 to 3650). A change is recorded
//! as `settings.retention_changed` (old and new values in `metadata.changes`, actor = the key)
//! before it is saved; if it cannot be recorded, nothing changes.

use super::auth::{ChangeRetention, OrgAccess, ReadLog};
use super::body::read_json;
use super::record::{Doing, record_action, record_action_blocking};
use super::{ApiError, AppState};
use crate::cluster::SettingsError;
use crate::keys::KeyInfo;
use crate::retention::{OrgRetention, RetentionError, RetentionPolicy, Source};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use codestax_common::{Change, Metadata};
use codestax_config::Plan;
use serde::{Deserialize, Serialize};

/// Largest `PUT` body, in bytes.
const MAX_BODY_BYTES: usize = 4096;

/// What `GET` and `PUT` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionSettings {
    pub org_id: String,
    /// Days records are kept.
    pub days: u32,
    /// Where `days` comes from: `default`, `config` or `api`.
    pub source: Source,
    pub plan: Plan,
    /// While true nothing of the org is deleted, and records past the window stay readable.
    pub legal_hold: bool,
    /// The collector-wide default.
    pub default_days: u32,
    /// Whether this key may change it (an ORG_OWNER key of an enterprise org).
    pub editable: bool,
}

impl RetentionSettings {
    fn new(r: OrgRetention, key: &KeyInfo) -> Self {
        RetentionSettings {
            editable: key.role.can_change_retention() && r.plan_allows_changes(),
            org_id: r.org_id,
            days: r.days,
            source: r.source,
            plan: r.plan,
            legal_hold: r.legal_hold,
            default_days: r.default_days,
        }
    }
}

pub async fn get(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ReadLog>,
) -> Result<Json<RetentionSettings>, ApiError> {
    Ok(Json(RetentionSettings::new(
        state.retention.for_org(&org),
        &key,
    )))
}

pub async fn put(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ChangeRetention>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RetentionSettings>, ApiError> {
    state
        .retention
        .check_editable(&org)
        .map_err(retention_error)?;
    let body = read_json(&headers, body, MAX_BODY_BYTES, "{\"days\": N}").await?;
    let days = parse_days(body)?;

    let _one_at_a_time = state.retention.lock_changes().await;
    let old = state
        .retention
        .check_editable(&org)
        .map_err(retention_error)?;
    if old.source == Source::Api && old.days == days {
        // Nothing changes, so nothing is recorded.
        return Ok(Json(RetentionSettings::new(old, &key)));
    }
    let mut metadata = Metadata::default();
    if old.days != days {
        metadata.changes.push(Change {
            field: "retention_days".into(),
            old: old.days.into(),
            new: days.into(),
        });
    }
    if old.source != Source::Api {
        metadata.changes.push(Change {
            field: "retention_source".into(),
            old: old.source.as_str().into(),
            new: Source::Api.as_str().into(),
        });
    }
    const ACTION: &str = "settings.retention_changed";
    let new = match &state.cluster {
        // Cluster mode: written to the metastore in a transaction that commits only once the
        // change is recorded; an unreachable or refusing metastore refuses it unrecorded.
        Some(cluster) => {
            let record = record_action(&state, &key, &org, ACTION, Doing::Change, metadata);
            cluster
                .settings
                .set_retention_recorded(&org, days, record)
                .await
                .map_err(settings_error)??
        }
        // A single node writes the new overrides file first and puts it in place once the
        // change is recorded: a full disk refuses the change before it is recorded.
        None => {
            let (policy, state, key) = (state.retention.clone(), state.clone(), key.clone());
            tokio::task::spawn_blocking(move || {
                policy.set_days_recorded(&org, days, || {
                    record_action_blocking(&state, &key, &org, ACTION, metadata)
                })
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(retention_error)??
        }
    };
    tracing::info!(
        org = new.org_id.as_str(),
        old = old.days,
        new = new.days,
        key = key.id.as_str(),
        "retention changed"
    );
    Ok(Json(RetentionSettings::new(new, &key)))
}

/// `{"days": N}`: anything else is a 400 naming the body or `days`.
fn parse_days(value: serde_json::Value) -> Result<u32, ApiError> {
    let serde_json::Value::Object(map) = value else {
        return Err(malformed("expected a JSON object {\"days\": N}".into()));
    };
    if let Some(other) = map.keys().find(|k| *k != "days") {
        return Err(ApiError::invalid(
            other.clone(),
            format!("unknown field {other:?}; expected only \"days\""),
        ));
    }
    let days = map
        .get("days")
        .ok_or_else(|| ApiError::invalid("days", "days is required"))?;
    let days = days.as_i64().ok_or_else(|| {
        ApiError::invalid(
            "days",
            format!(
                "days must be a whole number between 1 and {}, got {days}",
                codestax_config::MAX_RETENTION_DAYS
            ),
        )
    })?;
    RetentionPolicy::check_days(days).map_err(retention_error)
}

fn malformed(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message).with_field("body")
}

fn settings_error(e: SettingsError) -> ApiError {
    match e {
        SettingsError::Retention(e) => retention_error(e),
        other => ApiError::from(other),
    }
}

fn retention_error(e: RetentionError) -> ApiError {
    match e {
        RetentionError::NotEnterprise { .. } => ApiError::forbidden(e.to_string()),
        RetentionError::DaysOutOfRange { .. } => ApiError::invalid("days", e.to_string()),
        RetentionError::Io { ref source, .. } => {
            ApiError::state_unwritable("the retention settings", source)
        }
        other => ApiError::internal(other),
    }
}
