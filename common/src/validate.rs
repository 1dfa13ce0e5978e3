//! The rules a record must meet: every problem is reported at once, each naming the field path
//! and the reason (`actor.email: not a valid email address`).

use crate::action;
use crate::record::{ActorKind, AuditRecord, SCHEMA_VERSION};
use crate::schema::{Field, Kind};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Default limit on a record's serialised size, in bytes.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024;
/// How far in the future a record's time may be.
pub const MAX_FUTURE: Duration = Duration::days(1);
/// Ids starting with this, in any case, are the collector's own entries' ids: no app may write
/// one, so an app can never take the id of an entry the collector is about to write.
pub const RESERVED_ID_PREFIX: &str = "codestax:";
/// The category of the actions only the collector writes (`audit_log.viewed`,
/// `audit_log.exported`): reads and exports of the log are recorded by the collector that served
/// them, never by an app.
pub const COLLECTOR_CATEGORY: &str = "audit_log";

/// The earliest time a record may carry: 2000-01-01T00:00:00Z.
pub fn min_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap()
}

/// What a record is checked against.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Records whose canonical JSON is longer than this are rejected.
    pub max_record_bytes: usize,
    /// Accept well-formed `category.event` actions outside the catalog.
    pub allow_custom_actions: bool,
    /// The present, for the "not in the future" rule.
    pub now: DateTime<Utc>,
    /// Whether the records are the collector's own entries. Anyone else's (an app's, through
    /// ingest or the agent) may not carry what belongs to the collector alone: see
    /// [`check_app_record`].
    pub collector_entries: bool,
}

impl Rules {
    /// The default rules, as of now.
    pub fn new() -> Self {
        Self::at(Utc::now())
    }

    /// The default rules, as of `now`.
    pub fn at(now: DateTime<Utc>) -> Self {
        Rules {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            allow_custom_actions: false,
            now,
            collector_entries: false,
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self::new()
    }
}

/// One problem with one field of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Path of the field, e.g. `actor.email` or `metadata.changes[0].field`; `record` for the whole.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every problem found in one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordErrors(pub Vec<FieldError>);

impl RecordErrors {
    pub fn one(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RecordErrors(vec![FieldError::new(field, reason)])
    }

    /// The first problem's field, for APIs that name one field.
    pub fn first_field(&self) -> Option<&str> {
        self.0.first().map(|e| e.field.as_str())
    }
}

impl fmt::Display for RecordErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Checks a typed record against every rule; returns all problems at once.
pub fn validate(record: &AuditRecord, rules: &Rules) -> Result<(), RecordErrors> {
    let mut errors = Vec::new();
    // The limit is the table's (every field checked here is an id).
    let check_id = |field: Field, value: &str, errors: &mut Vec<FieldError>| {
        let max = match field.kind() {
            Kind::Id { max_bytes } => max_bytes,
            _ => usize::MAX,
        };
        let field = field.path();
        if value.is_empty() {
            errors.push(FieldError::new(field, "required"));
        } else if value.len() > max {
            errors.push(FieldError::new(
                field,
                format!("{} bytes, over the limit of {max} bytes", value.len()),
            ));
        } else if value.chars().any(char::is_control) {
            errors.push(FieldError::new(field, "contains control characters"));
        }
    };
    if let Some(id) = &record.id {
        check_id(Field::Id, id, &mut errors);
    }
    check_id(Field::OrgId, &record.org_id, &mut errors);
    if !record.org_id.is_empty() && !is_valid_org_id(&record.org_id) {
        errors.push(FieldError::new(
            Field::OrgId.path(),
            "may contain only letters, digits, '_', '-' and '.', and not only dots",
        ));
    }
    if record.time < min_time() {
        errors.push(FieldError::new(
            Field::Time.path(),
            format!(
                "{} is before 2000-01-01T00:00:00Z",
                crate::time::format_rfc3339(&record.time)
            ),
        ));
    } else if record.time > rules.now + MAX_FUTURE {
        errors.push(FieldError::new(
            Field::Time.path(),
            format!(
                "{} is more than 1 day in the future",
                crate::time::format_rfc3339(&record.time)
            ),
        ));
    }
    check_id(Field::ActorId, &record.actor.id, &mut errors);
    match &record.actor.email {
        Some(email) if !is_valid_email(email) => errors.push(FieldError::new(
            Field::ActorEmail.path(),
            "not a valid email address",
        )),
        None if record.actor.kind == ActorKind::User => errors.push(FieldError::new(
            Field::ActorEmail.path(),
            "required for actors of kind user",
        )),
        _ => {}
    }
    if record.action.is_empty() {
        errors.push(FieldError::new(Field::Action.path(), "required"));
    } else if let Err(e) = action::check(&record.action, rules.allow_custom_actions) {
        errors.push(FieldError::new(Field::Action.path(), e.to_string()));
    }
    if let Some(target) = &record.target
        && let Some(id) = &target.id
    {
        check_id(Field::TargetId, id, &mut errors);
    }
    if let Some(repo) = &record.repository
        && repo.is_empty()
    {
        errors.push(FieldError::new(
            Field::Repository.path(),
            "must not be empty when given",
        ));
    }
    if let Some(ip) = &record.metadata.ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        errors.push(FieldError::new(
            Field::MetadataIp.path(),
            format!("not an IPv4 or IPv6 address: {ip:?}"),
        ));
    }
    for (i, change) in record.metadata.changes.iter().enumerate() {
        if change.field.is_empty() {
            errors.push(FieldError::new(
                format!("{}[{i}].field", Field::MetadataChanges.path()),
                "required",
            ));
        }
    }
    if record.schema_version != SCHEMA_VERSION {
        errors.push(FieldError::new(
            Field::SchemaVersion.path(),
            format!(
                "unsupported version {} (this build reads {SCHEMA_VERSION})",
                record.schema_version
            ),
        ));
    }
    if !rules.collector_entries {
        check_app_record(record, &mut errors);
    }
    // Without a limit (the agent's file source) the canonical form is not measured at all; with
    // one it is counted, not built (the store builds the form it keeps).
    if rules.max_record_bytes < usize::MAX {
        let size = record.canonical_len();
        if size > rules.max_record_bytes {
            errors.push(FieldError::new(
                "record",
                format!(
                    "{size} bytes serialised, over the limit of {} bytes",
                    rules.max_record_bytes
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RecordErrors(errors))
    }
}

pub(crate) const PROVENANCE_REFUSED: &str =
    "is set by the collector when it stores a record; a record cannot bring its own";

/// What belongs to the collector alone, refused in a record anyone else writes (an app, through
/// ingest or the agent), each with its rule: the `provenance` field, ids starting with
/// [`RESERVED_ID_PREFIX`], and the actions of the [`COLLECTOR_CATEGORY`]. Part of [`validate`]
/// unless [`Rules::collector_entries`]; the collector's ingest runs it again on every record an
/// ingest key sends, whatever receiver parsed it.
pub fn check_app_record(record: &AuditRecord, errors: &mut Vec<FieldError>) {
    if record.provenance.is_some() {
        errors.push(FieldError::new(
            Field::Provenance.path(),
            PROVENANCE_REFUSED,
        ));
    }
    check_reserved_id(record, errors);
    if record
        .action
        .split_once('.')
        .is_some_and(|(category, _)| category.eq_ignore_ascii_case(COLLECTOR_CATEGORY))
    {
        errors.push(FieldError::new(Field::Action.path(),
            format!(
                "{:?}: actions of the {COLLECTOR_CATEGORY:?} category are written by the collector only",
                record.action
            ),
        ));
    }
}

/// Ids starting with [`RESERVED_ID_PREFIX`] are refused: the collector's own entries take them,
/// and an id taken first would make the collector's entry a duplicate. Imported records
/// (`codestax import`) are held to this rule alone: the source's collector entries (`audit_log.*`)
/// come in as imported, but never under an id this collector may write.
pub fn check_reserved_id(record: &AuditRecord, errors: &mut Vec<FieldError>) {
    if record.id.as_deref().is_some_and(is_reserved_id) {
        errors.push(FieldError::new(Field::Id.path(),
            format!("ids starting with {RESERVED_ID_PREFIX:?} are reserved for the collector's own entries"),
        ));
    }
}

/// Whether `id` is in the collector's reserved namespace ([`RESERVED_ID_PREFIX`], any case).
pub fn is_reserved_id(id: &str) -> bool {
    id.get(..RESERVED_ID_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_ID_PREFIX))
}

/// Whether a name (of a key, a saved view, a stream, an import's source) may not hold `c`: a
/// control character, or a bidirectional formatting one (U+061C, U+200E, U+200F, U+202A to
/// U+202E, U+2066 to U+2069), which reorders how the text around it shows, so that one name
/// could pass for another wherever it is displayed.
pub fn is_refused_in_names(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Org ids: 1 to 64 letters, digits, `_`, `-` or `.`, not only dots. They name files and
/// directories of the org's state (`.` and `..` would name another's); the config checks the
/// same rule (`codestax_config`, which does not depend on this crate).
pub fn is_valid_org_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= crate::schema::MAX_ORG_ID_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !s.bytes().all(|b| b == b'.')
}

/// A pragmatic email check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn is_valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::{is_refused_in_names, is_valid_org_id};

    #[test]
    fn names_hold_no_control_or_bidirectional_formatting_characters() {
        for refused in [
            '\n', '\0', '\u{7f}', '\u{202E}', '\u{2066}', '\u{200F}', '\u{061C}',
        ] {
            assert!(is_refused_in_names(refused), "{refused:?}");
        }
        for taken in ['a', ' ', 'é', '\u{05D0}', '\u{200B}'] {
            assert!(!is_refused_in_names(taken), "{taken:?}");
        }
    }

    #[test]
    fn org_ids_name_no_directory_but_their_own() {
        for ok in ["acme", "a.b_c-9", "..a", "a.."] {
            assert!(is_valid_org_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "...", "a/b", "has space", &"a".repeat(65)] {
            assert!(!is_valid_org_id(bad), "{bad}");
        }
    }
}
