//! An org's saved views (the dashboard's named filter sets), ORG_ADMIN and ORG_OWNER keys:
//!
//! - `GET /api/v1/orgs/{org}/saved-views`, `GET …/saved-views/{id}`;
//! - `POST …/saved-views` with `{"name", "filters"}`, `PATCH …/saved-views/{id}` with either or
//!   both, `DELETE …/saved-views/{id}`.
//!
//! `filters` holds the audit-log search's filters (`q`, `user`, `action`, `category`,
//! `repository`, `outcome`, `since`, `until`; a string or a list of strings each), checked as the
//! search checks them, so a saved view always opens, and at most [`MAX_FILTERS_BYTES`] of JSON,
//! so the record of a change (the old and the new filters) always fits. Creating, changing and
//! deleting are recorded in the org's log (`audit_log.saved_view_created`, `…_changed`,
//! `…_deleted`) before they are made; if the record cannot be made durable, nothing changes. On
//! a single node the org's new views file is written first (not in place yet), so a full disk
//! refuses a change before it is recorded.

use super::audit_log;
use super::auth::{OrgAccess, ReadLog};
use super::body::{MAX_CONTROL_BODY_BYTES, read_json};
use super::params::{self, Route};
use super::record::{Doing, record_action, record_action_blocking};
use super::{ApiError, AppState};
use crate::cluster::SettingsError;
use crate::ingest::MAX_COLLECTOR_ENTRY_BYTES;
use crate::keys::KeyInfo;
use crate::saved_views::{
    self as views, MAX_FILTERS_BYTES, MAX_NAME_CHARS, SavedView, SavedViewError, SavedViews,
    ViewPatch, new_id,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use codestax_common::{Change, Metadata, to_canonical_json};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `GET …/saved-views`.
#[derive(Debug, Serialize)]
pub struct ViewList {
    pub views: Vec<SavedView>,
}

impl From<SavedViewError> for ApiError {
    fn from(e: SavedViewError) -> Self {
        match e {
            SavedViewError::NotFound => ApiError::not_found(),
            SavedViewError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "too_many_views", e.to_string())
            }
            SavedViewError::NameTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "name_taken", e.to_string()).with_field("name")
            }
            SavedViewError::State(_) | SavedViewError::Dir { .. } => match e.io_error() {
                Some(source) => ApiError::state_unwritable("the saved views", source),
                None => ApiError::internal(e),
            },
        }
    }
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::Metastore(_) | SettingsError::Timeout(_) => {
                ApiError::metastore_unavailable(&e)
            }
            SettingsError::Unconfirmed(_) => ApiError::metastore_unconfirmed(&e),
            SettingsError::Views(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

/// Records `action` (by `key`, with `metadata`) and applies `change` to the org's views. Single
/// node: the new views file is prepared, then recorded, then put in place
/// ([`SavedViews::change_recorded`]). Cluster mode: written to the metastore in a transaction,
/// recorded, then committed and saved in this node's cache
/// ([`crate::cluster::SettingsSync::change_views_recorded`]). Either way a change that cannot
/// be made is refused before it is recorded.
async fn change_views<T: Send + 'static>(
    state: &AppState,
    key: &KeyInfo,
    org: String,
    action: &'static str,
    metadata: Metadata,
    change: impl FnOnce(&mut Vec<SavedView>) -> Result<T, SavedViewError> + Send + 'static,
) -> Result<T, ApiError> {
    match &state.cluster {
        Some(cluster) => {
            let record = record_action(state, key, &org, action, Doing::Change, metadata);
            Ok(cluster
                .settings
                .change_views_recorded(&org, change, record)
                .await??)
        }
        None => {
            let recording = (state.clone(), key.clone());
            with_store(state, move |s| {
                let (state, key) = recording;
                s.change_recorded(&org, change, |_| {
                    record_action_blocking(&state, &key, &org, action, metadata)
                })
            })
            .await?
        }
    }
}

/// Runs a blocking store call off the async threads.
async fn with_store<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&SavedViews) -> Result<T, SavedViewError> + Send + 'static,
) -> Result<T, ApiError> {
    let store: Arc<SavedViews> = state.saved_views.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

pub async fn list(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
) -> Result<Json<ViewList>, ApiError> {
    let views = with_store(&state, move |s| s.list(&org)).await?;
    Ok(Json(ViewList { views }))
}

pub async fn get(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<SavedView>, ApiError> {
    Ok(Json(with_store(&state, move |s| s.get(&org, &id)).await?))
}

pub async fn create(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ReadLog>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SavedView>), ApiError> {
    let body: Value = read_json(&headers, body, MAX_CONTROL_BODY_BYTES, VIEW_SHAPE).await?;
    let input = parse_body(&state, &body, true)?;
    let (name, filters) = (
        input.name.unwrap_or_default(),
        input.filters.unwrap_or_default(),
    );
    {
        let (org, name) = (org.clone(), name.clone());
        with_store(&state, move |s| s.check_name(&org, &name, None)).await?;
    }
    let id = new_id();
    let mut metadata = about(&id, &name);
    metadata
        .extra
        .insert("filters".into(), filters_value(&filters));
    let now = codestax_common::time::truncate_to_micros(Utc::now());
    let view = SavedView {
        id,
        name,
        filters,
        created_at: now,
        updated_at: now,
        created_by: key.id.clone(),
    };
    let view = change_views(
        &state,
        &key,
        org,
        "audit_log.saved_view_created",
        metadata,
        move |v| views::add(v, view),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Records and applies a change; a change that changes nothing is not recorded.
pub async fn patch(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ReadLog>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SavedView>, ApiError> {
    let body: Value = read_json(&headers, body, MAX_CONTROL_BODY_BYTES, VIEW_SHAPE).await?;
    let patch = parse_body(&state, &body, false)?;
    let old = {
        let (org, id) = (org.clone(), id.clone());
        with_store(&state, move |s| s.get(&org, &id)).await?
    };
    let mut changes = Vec::new();
    if let Some(name) = patch.name.as_ref().filter(|n| **n != old.name) {
        changes.push(change("name", old.name.clone().into(), name.clone().into()));
        let (org, name, id) = (org.clone(), name.clone(), id.clone());
        with_store(&state, move |s| s.check_name(&org, &name, Some(&id))).await?;
    }
    if let Some(filters) = patch.filters.as_ref().filter(|f| **f != old.filters) {
        changes.push(change(
            "filters",
            filters_value(&old.filters),
            filters_value(filters),
        ));
    }
    if changes.is_empty() {
        return Ok(Json(old));
    }
    let mut metadata = about(&id, &old.name);
    metadata.changes = changes;
    let now = codestax_common::time::truncate_to_micros(Utc::now());
    let (_, view) = change_views(
        &state,
        &key,
        org,
        "audit_log.saved_view_changed",
        metadata,
        move |v| views::apply_patch(v, &id, patch, now),
    )
    .await?;
    Ok(Json(view))
}

pub async fn delete(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ReadLog>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let old = {
        let (org, id) = (org.clone(), id.clone());
        with_store(&state, move |s| s.get(&org, &id)).await?
    };
    let metadata = about(&id, &old.name);
    change_views(
        &state,
        &key,
        org,
        "audit_log.saved_view_deleted",
        metadata,
        move |v| views::remove(v, &id),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

const VIEW_SHAPE: &str =
    "{\"name\": \"…\", \"filters\": {\"category\": [\"scan\"], \"since\": \"7d\"}}";

/// Filters with their values, and a name: checked.
fn parse_body(state: &AppState, body: &Value, creating: bool) -> Result<ViewPatch, ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::invalid(
            "body",
            format!("expected an object like {VIEW_SHAPE}"),
        ));
    };
    if let Some(k) = map
        .keys()
        .find(|k| !["name", "filters"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            k.clone(),
            "unknown field; expected name and filters",
        ));
    }
    let name = map.get("name").map(parse_name).transpose()?;
    let filters = map
        .get("filters")
        .map(|f| parse_filters(state, f))
        .transpose()?;
    if creating && name.is_none() {
        return Err(ApiError::invalid("name", "name is required"));
    }
    if !creating && name.is_none() && filters.is_none() {
        return Err(ApiError::invalid(
            "body",
            "nothing to change; give name, filters or both",
        ));
    }
    Ok(ViewPatch { name, filters })
}

fn parse_name(v: &Value) -> Result<String, ApiError> {
    let Value::String(s) = v else {
        return Err(ApiError::invalid("name", "name must be a string"));
    };
    let name = s.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("name is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(codestax_common::is_refused_in_names) {
        return Err(ApiError::invalid(
            "name",
            "name must not hold control or bidirectional formatting characters",
        ));
    }
    Ok(name.to_string())
}

/// `{"filter": "value" | ["value", …]}`, checked by the search's own parameter parser; errors
/// name `filters.<name>`.
fn parse_filters(state: &AppState, v: &Value) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let Value::Object(map) = v else {
        return Err(ApiError::invalid(
            "filters",
            "filters must be an object of filter names to values",
        ));
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in map {
        let field = format!("filters.{name}");
        if !params::is_filter(name) {
            return Err(ApiError::invalid(
                field,
                format!(
                    "unknown filter {name:?}; expected one of {}",
                    params::FILTERS.join(", ")
                ),
            ));
        }
        let values: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str())
                .collect::<Option<_>>()
                .ok_or_else(|| ApiError::invalid(field.clone(), "values must be strings"))?,
            _ => {
                return Err(ApiError::invalid(
                    field,
                    "a filter is a string or a list of strings",
                ));
            }
        };
        for v in values {
            query.append_pair(name, v);
        }
    }
    let query = query.finish();
    // Relative times (`7d`) stay relative: `now` only checks they are in range.
    let parsed =
        audit_log::parse(state, Some(&query), Route::Facets { max_top: 1 }).map_err(|mut e| {
            e.field = Some(format!("filters.{}", e.field.unwrap_or_default()));
            e
        })?;
    if let Some(q) = &parsed.query.text {
        crate::index::check_q(q).map_err(|e| ApiError::invalid("filters.q", e.to_string()))?;
    }
    let size = to_canonical_json(&filters_value(&parsed.filters)).len();
    if size > MAX_FILTERS_BYTES {
        return Err(ApiError::invalid(
            "filters",
            format!("filters take {size} bytes of JSON, over the limit of {MAX_FILTERS_BYTES}"),
        ));
    }
    Ok(parsed.filters)
}

// A change's record holds the old and the new filters; names, ids, the key and the envelope
// take well under the rest.
const _: () = assert!(2 * MAX_FILTERS_BYTES + 8 * 1024 <= MAX_COLLECTOR_ENTRY_BYTES);

fn change(field: &str, old: Value, new: Value) -> Change {
    Change {
        field: field.into(),
        old,
        new,
    }
}

fn filters_value(filters: &BTreeMap<String, Vec<String>>) -> Value {
    Value::Object(
        filters
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// The metadata naming the view.
fn about(id: &str, name: &str) -> Metadata {
    let mut m = Metadata::default();
    m.extra.insert("view_id".into(), id.into());
    m.extra.insert("view_name".into(), name.into());
    m
}
