//! The records the collector writes into an org's own log about what was done through it: reads
//! (`audit_log.viewed`, `audit_log.exported`), changes (`settings.retention_changed`) and key
//! events (`auth.api_key_created` / `auth.api_key_revoked`). Each is the collector's own entry:
//! provenance `collector`, an id in the reserved namespace. Written before the answer (a key
//! change: before it is made): if the record cannot be made durable, the request is refused,
//! because an audit log that can be read or changed without a trace is not one.

use super::{ApiError, AppState};
use crate::health::Failure;
use crate::index::AuditIndex;
use crate::ingest::Receiver;
use crate::ingest::{EntryError, Ingest, MAX_COLLECTOR_ENTRY_BYTES};
use crate::keys::{KeyEvent, KeyInfo, KeyStore};
use axum::http::StatusCode;
use chrono::Utc;
use codestax_common::{
    Actor, ActorKind, AuditRecord, Metadata, Outcome, Provenance, RESERVED_ID_PREFIX, Target,
    TargetKind,
};
use tokio::runtime::Handle;

/// What kind of request a record is about, for the refusal's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    Read,
    Change,
}

/// Writes `action` by `key` on `org` with `metadata` (plus the key's role) into `org`'s log and
/// waits until it is durable. Ids are in the collector's reserved namespace, with a prefix that
/// keeps the kinds apart (`codestax:read-…`, `codestax:change-…`).
pub async fn record_action(
    state: &AppState,
    key: &KeyInfo,
    org: &str,
    action: &str,
    doing: Doing,
    mut metadata: Metadata,
) -> Result<(), ApiError> {
    metadata
        .extra
        .insert("role".into(), key.role.to_string().into());
    let (prefix, what) = match doing {
        Doing::Read => ("read", "this read"),
        Doing::Change => ("change", "this change; nothing was changed"),
    };
    let record = AuditRecord {
        id: Some(format!("{RESERVED_ID_PREFIX}{prefix}-{}", random_hex(16))),
        org_id: org.to_string(),
        time: codestax_common::time::truncate_to_micros(Utc::now()),
        actor: Actor {
            id: key.id.clone(),
            name: key.name.clone(),
            email: None,
            kind: ActorKind::ApiKey,
        },
        action: action.to_string(),
        category: String::new(),
        target: Some(Target {
            kind: TargetKind::Organization,
            id: Some(org.to_string()),
            name: None,
        }),
        repository: None,
        outcome: Outcome::Success,
        message: None,
        metadata,
        schema_version: codestax_common::SCHEMA_VERSION,
        received_at: None,
        seq: None,
        prev_hash: None,
        provenance: None,
        hash: None,
    };
    let size = record.canonical_len();
    if size > MAX_COLLECTOR_ENTRY_BYTES {
        return Err(too_large_to_record(&record.metadata, size, what));
    }
    let record = codestax_common::record_from_value(
        serde_json::to_value(&record).map_err(ApiError::internal)?,
        &state.ingest.collector_entry_rules(),
    )
    .map_err(ApiError::internal)?;
    let outcome = state
        .ingest
        .submit(
            org,
            Provenance::Collector,
            vec![Ok(record)],
            Receiver::Internal,
        )
        .await
        .map_err(|e| {
            let why = e
                .failure()
                .map_or_else(|| e.to_string(), ToString::to_string);
            ApiError::ingest_failed(
                &e,
                format!("could not record {what} in the audit log: {why}"),
            )
        })?;
    if outcome.accepted != 1 {
        return Err(ApiError::internal(format!(
            "the {action} record was not accepted: {:?}",
            outcome.rejected
        )));
    }
    Ok(())
}

/// 400 for an entry over [`MAX_COLLECTOR_ENTRY_BYTES`], naming the largest change's field if any.
/// The inputs' bounds keep every new entry under it; a change of a saved view or stream stored
/// before those bounds (its old value recorded whole) can still pass it, and is the client's to
/// make smaller, not a fault of the collector.
fn too_large_to_record(metadata: &Metadata, size: usize, what: &str) -> ApiError {
    let error = ApiError::new(
        StatusCode::BAD_REQUEST,
        "too_large_to_record",
        format!(
            "its audit record would be {size} bytes, over the {MAX_COLLECTOR_ENTRY_BYTES} \
             bytes the collector's own entries may take: cannot record {what}"
        ),
    );
    let largest = metadata
        .changes
        .iter()
        .max_by_key(|c| c.old.to_string().len() + c.new.to_string().len());
    match largest {
        Some(change) => error.with_field(change.field.clone()),
        None => error,
    }
}

/// [`record_action`] of a [`Doing::Change`] from a blocking thread: a store's `record` step,
/// between preparing a change's file and putting it in place.
pub(crate) fn record_action_blocking(
    state: &AppState,
    key: &KeyInfo,
    org: &str,
    action: &str,
    metadata: Metadata,
) -> Result<(), ApiError> {
    Handle::current().block_on(record_action(
        state,
        key,
        org,
        action,
        Doing::Change,
        metadata,
    ))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

/// Makes the audit record of one key event durable. Idempotent: the record's id is the event's.
pub(crate) async fn record_key_event(ingest: &Ingest, event: &KeyEvent) -> Result<(), EntryError> {
    ingest.submit_collector_entry(event.to_audit_record()).await
}

/// [`record_key_event`] for the key store's `record` step, from a blocking thread: the error as
/// the store keeps it (text), and why the WAL or the index could not write into `failure`, for
/// the answer's code.
pub(crate) fn record_key_event_blocking(
    ingest: &Ingest,
    event: &KeyEvent,
    failure: &mut Option<Failure>,
) -> Result<(), String> {
    Handle::current()
        .block_on(record_key_event(ingest, event))
        .map_err(|e| {
            *failure = e.failure().cloned();
            e.to_string().replace("the entry", "the key event's record")
        })
}

/// Writes the audit record of every key event not recorded yet: those of keys changed by the
/// CLI (at start, and after every change of the key file by another process) and any whose
/// writing failed before. Changes made through the API were recorded before they were made.
/// A key event recorded before the reserved namespace existed (under its legacy id, by a writer
/// the record does not name) is not written again, nor is one past its org's retention (its
/// record was deleted, or would be at once).
pub(crate) async fn record_key_events(keys: &KeyStore, ingest: &Ingest, index: &AuditIndex) {
    let now = Utc::now();
    let (events, index) = (keys.events(), index.clone());
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| {
            ingest
                .expires_before(&e.org_id, now)
                .is_none_or(|cutoff| e.at >= cutoff)
        })
        .collect();
    let events = tokio::task::spawn_blocking(move || {
        events
            .into_iter()
            .filter(|e| {
                !matches!(index.get(&e.org_id, &e.legacy_record_id()),
                    Ok(Some(r)) if r.provenance.is_none())
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for event in &events {
        if let Err(e) = record_key_event(ingest, event).await {
            tracing::warn!(error = %e, key_id = %event.key_id, "cannot record a key event yet; will retry on the next key change or restart");
        }
    }
}
