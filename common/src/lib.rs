//! What the agent, the collector and the CLI share: the audit record model and the table of its
//! fields ([`schema`]), the action catalog, parsing and validation, the canonical JSON encoding,
//! the hash chain, the OTLP mapping, the SIEM output formats (OCSF, ECS), time handling and the
//! API types.

#![forbid(unsafe_code)]

mod action;
pub mod api;
mod canonical;
pub mod chain;
pub mod export_proof;
pub mod format;
pub mod merkle;
pub mod note;
pub mod otlp;
mod parse;
mod record;
pub mod record_view;
pub mod schema;
pub mod time;
mod validate;

pub use action::{
    ActionError, ActionSpec, CATALOG, CATEGORY_ALIASES, Category, check as check_action,
    lookup as lookup_action, nearest as nearest_action, search_words as action_search_words,
};
pub use canonical::to_canonical_json;
#[doc(hidden)]
pub use parse::variations;
pub use parse::{LineParser, parse_json_line, record_from_value};
pub use record::{
    Actor, ActorKind, AuditRecord, Change, Metadata, Outcome, Provenance, SCHEMA_VERSION, Target,
    TargetKind,
};
pub use schema::{MAX_ID_BYTES, MAX_ORG_ID_BYTES};
pub use validate::{
    COLLECTOR_CATEGORY, DEFAULT_MAX_RECORD_BYTES, FieldError, RESERVED_ID_PREFIX, RecordErrors,
    Rules, check_app_record, check_reserved_id, is_refused_in_names, is_reserved_id,
    is_valid_email, is_valid_org_id, min_time, validate,
};
