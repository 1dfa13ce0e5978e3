//! Key lifecycle events, and the audit records the collector writes for them.

use super::Role;
use chrono::{DateTime, Utc};
use codestax_common::{
    Actor, ActorKind, AuditRecord, Metadata, Outcome, RESERVED_ID_PREFIX, SCHEMA_VERSION, Target,
    TargetKind,
};
use serde_json::Value;

/// The actor of key events done outside the API (by the CLI, on the collector's host).
pub const COLLECTOR_ACTOR_ID: &str = "codestax-collector";

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyEventKind {
    Created,
    Revoked,
}

impl KeyEventKind {
    /// The catalog action of the audit record.
    pub fn action(self) -> &'static str {
        match self {
            KeyEventKind::Created => "auth.api_key_created",
            KeyEventKind::Revoked => "auth.api_key_revoked",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            KeyEventKind::Created => "created",
            KeyEventKind::Revoked => "revoked",
        }
    }
}

/// The creation or revocation of one key, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    pub kind: KeyEventKind,
    pub key_id: String,
    /// The key's org: the log the record goes into.
    pub org_id: String,
    pub role: Role,
    pub name: Option<String>,
    /// When it happened, UTC.
    pub at: DateTime<Utc>,
    /// The key that did it, when done through the API; `None` for the CLI.
    pub by: Option<String>,
}

impl KeyEvent {
    /// The audit record's id, `codestax:apikey-created-<key_id>` or
    /// `codestax:apikey-revoked-<key_id>`: in the collector's reserved namespace, so no app can
    /// take it first, and the same every time, so writing the records for all events again is
    /// deduplicated by the collector.
    pub fn record_id(&self) -> String {
        format!(
            "{RESERVED_ID_PREFIX}apikey-{}-{}",
            self.kind.verb(),
            self.key_id
        )
    }

    /// The id this event's record had before the reserved namespace existed
    /// (`apikey-created-<key_id>`): a record stored under it earlier is this event's record.
    pub fn legacy_record_id(&self) -> String {
        format!("apikey-{}-{}", self.kind.verb(), self.key_id)
    }

    /// The audit record for this event, in the key's org.
    pub fn to_audit_record(&self) -> AuditRecord {
        let action = self.kind.action();
        let actor = match &self.by {
            Some(key_id) => Actor {
                id: key_id.clone(),
                name: None,
                email: None,
                kind: ActorKind::ApiKey,
            },
            None => Actor {
                id: COLLECTOR_ACTOR_ID.to_string(),
                name: None,
                email: None,
                kind: ActorKind::System,
            },
        };
        let mut metadata = Metadata::default();
        metadata
            .extra
            .insert("role".to_string(), Value::from(self.role.as_str()));
        AuditRecord {
            id: Some(self.record_id()),
            org_id: self.org_id.clone(),
            time: self.at,
            actor,
            action: action.to_string(),
            category: action.split_once('.').map_or("", |(c, _)| c).to_string(),
            target: Some(Target {
                kind: TargetKind::ApiKey,
                id: Some(self.key_id.clone()),
                name: self.name.clone(),
            }),
            repository: None,
            outcome: Outcome::Success,
            message: Some(format!(
                "API key {} ({}) {}",
                self.key_id,
                self.role,
                self.kind.verb()
            )),
            metadata,
            schema_version: SCHEMA_VERSION,
            received_at: None,
            seq: None,
            prev_hash: None,
            provenance: None,
            hash: None,
        }
    }
}
