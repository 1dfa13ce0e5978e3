//! Reading an org's audit log: search (cursor pages), facets, one record, and the check of its
//! hash chain. Each search records an `audit_log.viewed` entry in the org's own log (once per
//! result set, not per page), and so does each record read by its id. Every read runs [`effective_query`]: nothing older than the org's
//! retention window is ever returned.

use super::auth::{OrgAccess, ReadLog};
use super::params::{self, Params, Route};
use super::record::{Doing, record_action};
use super::view_groups;
use super::{ApiError, AppState};
use crate::index::{self, AuditIndex, IndexError, SearchQuery};
use crate::keys::KeyInfo;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use chrono::Utc;
use codestax_common::api::{
    FacetCount, FacetResponse, Histogram, HistogramBucket, HistogramInterval, VerifyResponse,
};
use codestax_common::{AuditRecord, Metadata};
use serde::Serialize;
use serde_json::value::RawValue;
use std::time::Instant;

/// Records per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;

pub async fn search(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<Json<RawSearchResponse>, ApiError> {
    let params = parse(
        &state,
        raw.as_deref(),
        Route::Search {
            max_limit: state.limits.max_search_limit,
        },
    )?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let page = query(&state, "search", {
        let q = effective_query(&state, &org, &params.query);
        let (org, cursor) = (org.clone(), params.cursor.clone());
        move |index| index.search_raw(&org, &q, limit, cursor.as_deref())
    })
    .await?;
    if params.cursor.is_none() {
        record_read(
            &state,
            &key,
            &org,
            "audit_log.viewed",
            &params,
            page.total,
            serde_json::Map::new(),
        )
        .await?;
    }
    let rows = params.group_views.then(|| view_groups::rows(&page.entries));
    Ok(Json(RawSearchResponse {
        entries: page.entries,
        rows,
        next_cursor: page.next_cursor,
        total: page.total,
    }))
}

/// A [`codestax_common::api::SearchResponse`] whose entries are the records' stored canonical JSON, embedded as is
/// rather than parsed and serialised again: the same fields and values (object keys in byte
/// order).
#[derive(Debug, Serialize)]
pub struct RawSearchResponse {
    pub entries: Vec<Box<RawValue>>,
    /// With `group_views=true`: the page as rows, a viewer's consecutive views as one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<view_groups::Row>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    pub total: u64,
}

pub async fn facets(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<Json<FacetResponse>, ApiError> {
    let params = parse(&state, raw.as_deref(), Route::Facets { max_top: 1000 })?;
    let top = params.top.unwrap_or(state.limits.facet_top_n);
    let q = effective_query(&state, &org, &params.query);
    let facets = query(&state, "facets", move |index| index.facets(&org, &q, top)).await?;
    Ok(Json(facet_response(facets)))
}

/// The index's facet counts as the API sends them.
fn facet_response(f: index::Facets) -> FacetResponse {
    let counts = |values: Vec<index::ValueCount>| {
        values
            .into_iter()
            .map(|v| FacetCount {
                value: v.value,
                count: v.count,
            })
            .collect()
    };
    FacetResponse {
        total: f.total,
        categories: counts(f.categories),
        actions: counts(f.actions),
        users: counts(f.users),
        repositories: counts(f.repositories),
        outcomes: counts(f.outcomes),
        histogram: Histogram {
            interval: match f.histogram.interval {
                index::Interval::Hour => HistogramInterval::Hour,
                index::Interval::Day => HistogramInterval::Day,
            },
            buckets: f
                .histogram
                .buckets
                .into_iter()
                .map(|b| HistogramBucket {
                    start: b.start,
                    count: b.count,
                })
                .collect(),
        },
    }
}

/// One record (the dashboard's `?entry=` link). A record found is a read like a search's, and
/// recorded as one: an `audit_log.viewed` entry whose filters name the id.
pub async fn get_one(
    State(state): State<AppState>,
    OrgAccess { key, org, .. }: OrgAccess<ReadLog>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<AuditRecord>, ApiError> {
    let floor = effective_query(&state, &org, &SearchQuery::default()).floor;
    let record = query(&state, "get", {
        let (org, id) = (org.clone(), id.clone());
        move |index| index.get(&org, &id)
    })
    .await?
    .filter(|r| floor.is_none_or(|f| r.time >= f))
    .ok_or_else(ApiError::not_found)?;
    let mut metadata = Metadata::default();
    metadata
        .extra
        .insert("filters".into(), serde_json::json!({ "id": [id] }));
    metadata.extra.insert("total".into(), 1.into());
    record_action(
        &state,
        &key,
        &org,
        "audit_log.viewed",
        Doing::Read,
        metadata,
    )
    .await?;
    Ok(Json(record))
}

/// The query a read of `org` runs: the request's filters with the org's retention floor (records
/// before `now - days` are hidden, deleted yet or not; none under legal hold). Every read handler
/// calls this — search, facets, get (its floor), export.
pub fn effective_query(state: &AppState, org: &str, query: &SearchQuery) -> SearchQuery {
    state.retention.scope(org, query, Utc::now())
}

/// `GET /api/v1/orgs/{org}/audit-log/verify`: checks the org's stored hash chain, all of it, in
/// `seq` order, from what retention kept of the records it deleted (the org's checkpoint and
/// tombstones), and gives the org's current signed tree head.
pub async fn verify(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<Json<VerifyResponse>, ApiError> {
    if let Some((name, _)) = raw
        .as_deref()
        .and_then(|r| form_urlencoded::parse(r.as_bytes()).next())
    {
        return Err(ApiError::invalid(
            name.as_ref(),
            format!("unknown parameter {name:?}; verify takes none"),
        ));
    }
    let checkpoint = state.retention.checkpoints().get(&org);
    let report = query(&state, "verify", {
        let org = org.clone();
        move |index| index.verify_chain(&org, Some(&checkpoint))
    })
    .await?;
    let (signed_head, tree_error) = match super::proofs::signed_head(&state, org).await {
        Ok(head) => (Some(head), None),
        Err(e) if e.code == "tree_unavailable" => (None, Some(e.message)),
        Err(e) => return Err(e),
    };
    let s = report.summary;
    Ok(Json(VerifyResponse {
        ok: report.error.is_none(),
        records: s.records,
        first_seq: s.first_seq,
        last_seq: s.last_seq,
        last_hash: s.last_hash,
        error: report.error,
        signed_head,
        tree_error,
    }))
}

pub(super) fn parse(state: &AppState, raw: Option<&str>, route: Route) -> Result<Params, ApiError> {
    params::parse(
        raw,
        route,
        state.ingest.settings().allow_custom_actions,
        Utc::now(),
    )
}

/// Runs an index query off the async workers and times it.
pub(super) async fn query<T: Send + 'static>(
    state: &AppState,
    endpoint: &str,
    f: impl FnOnce(&AuditIndex) -> Result<T, IndexError> + Send + 'static,
) -> Result<T, ApiError> {
    let index = state.index.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || f(&index))
        .await
        .map_err(ApiError::internal)?;
    state
        .metrics
        .observe_search(endpoint, started.elapsed().as_secs_f64());
    result.map_err(index_error)
}

/// Maps index errors to API errors: the user's mistakes are 400s naming the parameter.
pub fn index_error(e: IndexError) -> ApiError {
    match e {
        IndexError::BadCursor(message) => ApiError::invalid(
            "cursor",
            format!("cursor is not valid ({message}); start again without a cursor"),
        ),
        IndexError::BadQuery { field, message } => ApiError::invalid(field, message),
        other => ApiError::internal(other),
    }
}

/// Writes the record of a read (`audit_log.viewed`, `audit_log.exported`) into the org's log:
/// the filters, the number of matching records (`total`), the key's role and any `extra`
/// metadata (an export's format). If the read cannot be recorded the read is refused: an audit
/// log that can be read without a trace is not one.
pub async fn record_read(
    state: &AppState,
    key: &KeyInfo,
    org: &str,
    action: &str,
    params: &Params,
    total: u64,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), ApiError> {
    let mut metadata = Metadata::default();
    metadata.extra.extend(extra);
    metadata.extra.insert(
        "filters".into(),
        serde_json::to_value(&params.filters).map_err(ApiError::internal)?,
    );
    metadata.extra.insert("total".into(), total.into());
    record_action(state, key, org, action, Doing::Read, metadata).await
}
