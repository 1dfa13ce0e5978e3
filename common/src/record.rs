//! The audit record: who did what, to what, when, with which outcome and context.
//!
//! The JSON-lines emit format is exactly the serde JSON of [`AuditRecord`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One entry of an organization's audit log. Records are never edited once accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Unique per org. Set by the producer, or derived by the agent from (source, offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The organization whose log this record belongs to. (Missing reads as ""; validation
    /// requires it, and the emit format's reader fills in a default org first.)
    #[serde(default)]
    pub org_id: String,
    /// When the action happened, in UTC with microsecond precision.
    #[serde(with = "crate::time::micros")]
    pub time: DateTime<Utc>,
    /// Who performed the action.
    pub actor: Actor,
    /// What was done: `category.event`, e.g. `scan.triggered`.
    pub action: String,
    /// The part of `action` before the dot. Always derived from the action, never trusted from input.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub category: String,
    /// The resource affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The repository the event concerns, if any (filterable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Whether the action succeeded.
    #[serde(default)]
    pub outcome: Outcome,
    /// Optional human-readable text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Additional context: IP address, user agent, scan type, old/new values, free-form keys.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// The record schema's version.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// When the collector accepted the record (set by the collector, ignored on input).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::micros_opt"
    )]
    pub received_at: Option<DateTime<Utc>>,
    /// Position in the org's hash chain: 1, 2, 3, ... in the order the collector stored the org's
    /// records, without gaps. Set by the collector, ignored on input. See [`crate::chain`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// `hash` of the org's record at `seq - 1`, or [`crate::chain::GENESIS_HASH`] for the first.
    /// Set by the collector, ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    /// Who wrote the record into the log: set by the collector as it stores the record, part of
    /// the hashed form, refused on ingest. `None` only for records stored before provenance
    /// existed ("writer unknown"). See [`Provenance`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// SHA-256 (lowercase hex) over `prev_hash` and this record: [`crate::chain::record_hash`].
    /// Set by the collector, ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

fn default_schema_version() -> u32 {
    SCHEMA_VERSION
}

impl AuditRecord {
    /// The record's id, or `""` when it has none yet.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// The actor's email if there is one, else the actor's id: how a person is named in filters.
    pub fn actor_label(&self) -> &str {
        self.actor.email.as_deref().unwrap_or(&self.actor.id)
    }
}

/// Who wrote a record into an org's log — not who did the action (that is the [`Actor`]). The
/// collector sets it when it stores a record, from what it knows (its own entry, or the ingest
/// key that sent the record), never from the record's content; it is part of the hashed
/// canonical form, so it cannot be changed afterwards either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "writer", rename_all = "snake_case", deny_unknown_fields)]
pub enum Provenance {
    /// The collector itself: key events, reads and exports of the log, settings changes.
    Collector,
    /// An app, through the ingest key with this id (the key's public id, never its secret).
    Ingest { key_id: String },
    /// Brought in from another log (`codestax import`) by the ingest key with this id: the
    /// record's content is the source's, its writer there is not vouched for. `source` names
    /// where it came from as the importer said (`--source`, else the input file's name); records
    /// imported before it existed have none.
    Imported {
        key_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
}

impl Provenance {
    /// The writer's name as the API and exports show it: `collector`, `ingest` or `imported`.
    pub fn writer(&self) -> &'static str {
        match self {
            Provenance::Collector => "collector",
            Provenance::Ingest { .. } => "ingest",
            Provenance::Imported { .. } => "imported",
        }
    }

    /// The ingest key that wrote (or imported) the record, if an ingest key did.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Provenance::Collector => None,
            Provenance::Ingest { key_id } | Provenance::Imported { key_id, .. } => Some(key_id),
        }
    }

    /// Where an imported record came from, as its importer named it.
    pub fn source(&self) -> Option<&str> {
        match self {
            Provenance::Imported { source, .. } => source.as_deref(),
            Provenance::Collector | Provenance::Ingest { .. } => None,
        }
    }
}

/// Who performed an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Stable identifier of the user, API key or system component.
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address; required for actors of kind `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// What kind of actor this is.
    #[serde(default)]
    pub kind: ActorKind,
}

/// The kinds of actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    #[default]
    User,
    ApiKey,
    System,
}

impl ActorKind {
    pub const ALL: [ActorKind; 3] = [ActorKind::User, ActorKind::ApiKey, ActorKind::System];

    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<ActorKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The resource an action affected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub kind: TargetKind,
    /// Identifier of the resource (finding ID, repository ID, user email, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name of the resource (repository name, user email, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The kinds of resource an action can affect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Repository,
    Finding,
    User,
    ApiKey,
    Scan,
    Webhook,
    Integration,
    Policy,
    Organization,
}

impl TargetKind {
    pub const ALL: [TargetKind; 9] = [
        TargetKind::Repository,
        TargetKind::Finding,
        TargetKind::User,
        TargetKind::ApiKey,
        TargetKind::Scan,
        TargetKind::Webhook,
        TargetKind::Integration,
        TargetKind::Policy,
        TargetKind::Organization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Repository => "repository",
            TargetKind::Finding => "finding",
            TargetKind::User => "user",
            TargetKind::ApiKey => "api_key",
            TargetKind::Scan => "scan",
            TargetKind::Webhook => "webhook",
            TargetKind::Integration => "integration",
            TargetKind::Policy => "policy",
            TargetKind::Organization => "organization",
        }
    }

    pub fn parse(s: &str) -> Option<TargetKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Whether an action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Success,
    Failure,
}

impl Outcome {
    pub const ALL: [Outcome; 2] = [Outcome::Success, Outcome::Failure];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Additional context of a record. The named keys have meaning to the product; any other key is
/// kept as given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metadata {
    /// IP address the action came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// User agent of the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Kind of scan, for scan events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_type: Option<String>,
    /// Old and new values, for changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Any other context.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Metadata {
    pub fn is_empty(&self) -> bool {
        self.ip.is_none()
            && self.user_agent.is_none()
            && self.scan_type.is_none()
            && self.changes.is_empty()
            && self.extra.is_empty()
    }
}

/// One changed field: its old and new values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub field: String,
    #[serde(default)]
    pub old: Value,
    #[serde(default)]
    pub new: Value,
}
