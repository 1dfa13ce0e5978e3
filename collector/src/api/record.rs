//! The records the API writes into an org's own log about what was done through it: reads
//! (`audit_log.viewed`, `audit_log.exported`) and changes (`settings.retention_changed`). The
//! actor is the calling key; the target is the org. Written before the answer: if the record
//! cannot be made durable, the request is refused, because an audit log that can be read or
//! changed without a trace is not one.

use super::{ApiError, AppState};
use crate::ingest::Receiver;
use crate::keys::KeyInfo;
use chrono::Utc;
use codestax_common::{Actor, ActorKind, AuditRecord, Metadata, Outcome, Target, TargetKind};

/// What kind of request a record is about, for the refusal's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    Read,
    Change,
}

/// Writes `action` by `key` on `org` with `metadata` (plus the key's role) into `org`'s log and
/// waits until it is durable. An id prefix keeps the kinds apart (`read-…`, `change-…`).
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
        id: Some(format!("{prefix}-{}", random_hex(16))),
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
        hash: None,
    };
    let record = codestax_common::record_from_value(
        serde_json::to_value(&record).map_err(ApiError::internal)?,
        &state.ingest.rules(),
    )
    .map_err(ApiError::internal)?;
    let outcome = state
        .ingest
        .submit(org, vec![Ok(record)], Receiver::Internal)
        .await
        .map_err(|e| {
            ApiError::unavailable(format!("could not record {what} in the audit log: {e}"), 1)
        })?;
    if outcome.accepted != 1 {
        return Err(ApiError::internal(format!(
            "the {action} record was not accepted: {:?}",
            outcome.rejected
        )));
    }
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}
