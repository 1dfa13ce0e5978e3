//! What the agent, the collector and the CLI share: the audit record model, the action catalog,
//! validation, the canonical JSON encoding, the hash chain, the OTLP mapping, time handling and the
//! API types.

#![forbid(unsafe_code)]

mod action;
pub mod api;
mod canonical;
pub mod chain;
pub mod otlp;
mod record;
pub mod time;
mod validate;

pub use action::{
    ActionError, ActionSpec, CATALOG, CATEGORY_ALIASES, Category, check as check_action,
    lookup as lookup_action, nearest as nearest_action,
};
pub use canonical::to_canonical_json;
pub use record::{
    Actor, ActorKind, AuditRecord, Change, Metadata, Outcome, Provenance, SCHEMA_VERSION, Target,
    TargetKind,
};
pub use validate::{
    COLLECTOR_CATEGORY, DEFAULT_MAX_RECORD_BYTES, FieldError, MAX_ID_BYTES, MAX_ORG_ID_BYTES,
    RESERVED_ID_PREFIX, RecordErrors, Rules, check_app_record, is_valid_email, is_valid_org_id,
    min_time, parse_json_line, record_from_value, validate,
};
