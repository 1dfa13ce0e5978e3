//! Turning untrusted input into an [`AuditRecord`]: every problem is reported at once, each naming
//! the field path and the reason (`actor.email: not a valid email address`).

use crate::action;
use crate::record::{
    Actor, ActorKind, AuditRecord, Change, Metadata, Outcome, Provenance, SCHEMA_VERSION, Target,
    TargetKind,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Longest id (record, actor, target) accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest org id accepted, in bytes.
pub const MAX_ORG_ID_BYTES: usize = 64;
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

/// Parses one line of the JSON-lines emit format. A record without `org_id` takes `default_org`
/// (the emit file's configured org, or the ingest key's org).
///
/// Two paths, one result: a well-formed line is deserialised straight into an [`AuditRecord`] and
/// checked with [`validate`]; anything that fails either step is parsed again through a
/// `serde_json::Value` by [`record_from_value`], which reports every problem with its field path.
/// The straight path only exists for speed: it accepts exactly the records the thorough one
/// accepts, and builds the same record (the tests compare the two).
pub fn parse_json_line(
    line: &[u8],
    default_org: Option<&str>,
    rules: &Rules,
) -> Result<AuditRecord, RecordErrors> {
    // A line far over the limit is refused before it is parsed; the exact check is on the
    // canonical form. JSON escaping can only make a line longer than its canonical form by a
    // bounded factor, so 4x is safe.
    if line.len() > rules.max_record_bytes.saturating_mul(4) {
        return Err(RecordErrors::one(
            "record",
            format!(
                "{} bytes, over the limit of {} bytes",
                line.len(),
                rules.max_record_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        RecordErrors::one(
            "record",
            format!("not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
        )
    })?;
    if let Some(record) = parse_well_formed(text, default_org, rules) {
        return Ok(record);
    }
    parse_thoroughly(text, default_org, rules)
}

/// The straight path of [`parse_json_line`]: `None` whenever the line is not a valid record as
/// the thorough path sees it, or might be read differently by it.
fn parse_well_formed(text: &str, default_org: Option<&str>, rules: &Rules) -> Option<AuditRecord> {
    // Serde's derive differs from the thorough path on: a missing `org_id` (the derive takes ""
    // only with the default below; "" given explicitly must stay an error), the chain fields (the
    // thorough path drops them whatever their type) and `category` (never trusted).
    let mut record: AuditRecord = serde_json::from_str(text).ok()?;
    if record.org_id.is_empty() {
        if text.contains("\"org_id\"") {
            return None;
        }
        record.org_id = default_org?.to_string();
    }
    record.seq = None;
    record.prev_hash = None;
    record.hash = None;
    record.category = action::check(&record.action, true)
        .map(str::to_string)
        .unwrap_or_default();
    validate(&record, rules).ok()?;
    Some(record)
}

/// The thorough path of [`parse_json_line`]: every problem, each with its field path.
fn parse_thoroughly(
    text: &str,
    default_org: Option<&str>,
    rules: &Rules,
) -> Result<AuditRecord, RecordErrors> {
    let mut value: Value = serde_json::from_str(text)
        .map_err(|e| RecordErrors::one("record", format!("not valid JSON: {e}")))?;
    if let (Value::Object(map), Some(org)) = (&mut value, default_org)
        && matches!(map.get("org_id"), None | Some(Value::Null))
    {
        map.insert("org_id".into(), Value::String(org.to_string()));
    }
    record_from_value(value, rules)
}

/// Builds a record from a JSON value, checking its shape and every rule.
pub fn record_from_value(value: Value, rules: &Rules) -> Result<AuditRecord, RecordErrors> {
    let Value::Object(mut map) = value else {
        return Err(RecordErrors::one(
            "record",
            format!("expected a JSON object, got {}", type_name(&value)),
        ));
    };
    let mut shape = Vec::new();
    let id = take_string(&mut map, "id", "id", &mut shape);
    let org_id = take_string(&mut map, "org_id", "org_id", &mut shape).unwrap_or_default();
    let time = match map.remove("time") {
        None | Some(Value::Null) => {
            shape.push(FieldError::new("time", "required"));
            None
        }
        Some(Value::String(s)) => match crate::time::parse_rfc3339(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                shape.push(FieldError::new("time", e));
                None
            }
        },
        Some(other) => {
            shape.push(expected("time", "an RFC 3339 string", &other));
            None
        }
    };
    let actor = match map.remove("actor") {
        None | Some(Value::Null) => {
            shape.push(FieldError::new("actor", "required"));
            None
        }
        Some(Value::Object(mut a)) => {
            let id = take_string(&mut a, "id", "actor.id", &mut shape).unwrap_or_default();
            let name = take_string(&mut a, "name", "actor.name", &mut shape);
            let email = take_string(&mut a, "email", "actor.email", &mut shape);
            let kind = take_enum(
                &mut a,
                "kind",
                "actor.kind",
                ActorKind::parse,
                &ActorKind::ALL.map(|k| k.as_str()),
                &mut shape,
            )
            .unwrap_or_default();
            unknown_keys(a, "actor", &mut shape);
            Some(Actor {
                id,
                name,
                email,
                kind,
            })
        }
        Some(other) => {
            shape.push(expected("actor", "an object", &other));
            None
        }
    };
    let action_name = take_string(&mut map, "action", "action", &mut shape).unwrap_or_default();
    // Category is derived from the action; whatever the input says is only type-checked.
    let _ = take_string(&mut map, "category", "category", &mut shape);
    let target = match map.remove("target") {
        None | Some(Value::Null) => None,
        Some(Value::Object(mut t)) => {
            let kind = match t.get("kind") {
                None | Some(Value::Null) => {
                    t.remove("kind");
                    shape.push(FieldError::new("target.kind", "required"));
                    None
                }
                _ => take_enum(
                    &mut t,
                    "kind",
                    "target.kind",
                    TargetKind::parse,
                    &TargetKind::ALL.map(|k| k.as_str()),
                    &mut shape,
                ),
            };
            let id = take_string(&mut t, "id", "target.id", &mut shape);
            let name = take_string(&mut t, "name", "target.name", &mut shape);
            unknown_keys(t, "target", &mut shape);
            kind.map(|kind| Target { kind, id, name })
        }
        Some(other) => {
            shape.push(expected("target", "an object", &other));
            None
        }
    };
    let repository = take_string(&mut map, "repository", "repository", &mut shape);
    let outcome = take_enum(
        &mut map,
        "outcome",
        "outcome",
        Outcome::parse,
        &Outcome::ALL.map(|o| o.as_str()),
        &mut shape,
    )
    .unwrap_or_default();
    let message = take_string(&mut map, "message", "message", &mut shape);
    let metadata = match map.remove("metadata") {
        None | Some(Value::Null) => Metadata::default(),
        Some(Value::Object(m)) => metadata_from_map(m, &mut shape),
        Some(other) => {
            shape.push(expected("metadata", "an object", &other));
            Metadata::default()
        }
    };
    let schema_version = match map.remove("schema_version") {
        None | Some(Value::Null) => SCHEMA_VERSION,
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            u32::try_from(n.as_u64().unwrap_or_default()).unwrap_or(u32::MAX)
        }
        Some(other) => {
            shape.push(expected("schema_version", "a whole number", &other));
            SCHEMA_VERSION
        }
    };
    let received_at = match map.remove("received_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match crate::time::parse_rfc3339(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                shape.push(FieldError::new("received_at", e));
                None
            }
        },
        Some(other) => {
            shape.push(expected("received_at", "an RFC 3339 string", &other));
            None
        }
    };
    let provenance = match map.remove("provenance") {
        None | Some(Value::Null) => None,
        // An app's record is refused for carrying it at all, whatever its shape.
        Some(_) if !rules.collector_entries => {
            shape.push(FieldError::new("provenance", PROVENANCE_REFUSED));
            None
        }
        Some(v) => serde_json::from_value::<Provenance>(v)
            .map_err(|e| shape.push(FieldError::new("provenance", e.to_string())))
            .ok(),
    };
    // The hash-chain fields are the collector's to assign: whatever the input says is dropped.
    for key in crate::chain::CHAIN_FIELDS {
        map.remove(key);
    }
    unknown_keys(map, "", &mut shape);

    let actor_missing = actor.is_none();
    let mut record = AuditRecord {
        id,
        org_id,
        time: time.unwrap_or(rules.now),
        actor: actor.unwrap_or(Actor {
            id: String::new(),
            name: None,
            email: None,
            kind: ActorKind::System,
        }),
        action: action_name,
        category: String::new(),
        target,
        repository,
        outcome,
        message,
        metadata,
        schema_version,
        received_at,
        seq: None,
        prev_hash: None,
        provenance,
        hash: None,
    };
    if let Ok(category) = action::check(&record.action, true) {
        record.category = category.to_string();
    }
    let mut errors = shape;
    if let Err(RecordErrors(semantic)) = validate(&record, rules) {
        // A field whose shape was wrong has been reported already; its placeholder is not checked.
        for e in semantic {
            let covered = errors.iter().any(|s| {
                e.field == s.field
                    || e.field.starts_with(&format!("{}.", s.field))
                    || e.field.starts_with(&format!("{}[", s.field))
            }) || (actor_missing && e.field.starts_with("actor."));
            if !covered {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(record)
    } else {
        Err(RecordErrors(errors))
    }
}

/// Checks a typed record against every rule; returns all problems at once.
pub fn validate(record: &AuditRecord, rules: &Rules) -> Result<(), RecordErrors> {
    let mut errors = Vec::new();
    let check_id = |field: &str, value: &str, max: usize, errors: &mut Vec<FieldError>| {
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
        check_id("id", id, MAX_ID_BYTES, &mut errors);
    }
    check_id("org_id", &record.org_id, MAX_ORG_ID_BYTES, &mut errors);
    if !record.org_id.is_empty() && !is_valid_org_id(&record.org_id) {
        errors.push(FieldError::new(
            "org_id",
            "may contain only letters, digits, '_', '-' and '.'",
        ));
    }
    if record.time < min_time() {
        errors.push(FieldError::new(
            "time",
            format!(
                "{} is before 2000-01-01T00:00:00Z",
                crate::time::format_rfc3339(&record.time)
            ),
        ));
    } else if record.time > rules.now + MAX_FUTURE {
        errors.push(FieldError::new(
            "time",
            format!(
                "{} is more than 1 day in the future",
                crate::time::format_rfc3339(&record.time)
            ),
        ));
    }
    check_id("actor.id", &record.actor.id, MAX_ID_BYTES, &mut errors);
    match &record.actor.email {
        Some(email) if !is_valid_email(email) => {
            errors.push(FieldError::new("actor.email", "not a valid email address"))
        }
        None if record.actor.kind == ActorKind::User => errors.push(FieldError::new(
            "actor.email",
            "required for actors of kind user",
        )),
        _ => {}
    }
    if record.action.is_empty() {
        errors.push(FieldError::new("action", "required"));
    } else if let Err(e) = action::check(&record.action, rules.allow_custom_actions) {
        errors.push(FieldError::new("action", e.to_string()));
    }
    if let Some(target) = &record.target
        && let Some(id) = &target.id
    {
        check_id("target.id", id, MAX_ID_BYTES, &mut errors);
    }
    if let Some(repo) = &record.repository
        && repo.is_empty()
    {
        errors.push(FieldError::new(
            "repository",
            "must not be empty when given",
        ));
    }
    if let Some(ip) = &record.metadata.ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        errors.push(FieldError::new(
            "metadata.ip",
            format!("not an IPv4 or IPv6 address: {ip:?}"),
        ));
    }
    for (i, change) in record.metadata.changes.iter().enumerate() {
        if change.field.is_empty() {
            errors.push(FieldError::new(
                format!("metadata.changes[{i}].field"),
                "required",
            ));
        }
    }
    if record.schema_version != SCHEMA_VERSION {
        errors.push(FieldError::new(
            "schema_version",
            format!(
                "unsupported version {} (this build reads {SCHEMA_VERSION})",
                record.schema_version
            ),
        ));
    }
    if !rules.collector_entries {
        check_app_record(record, &mut errors);
    }
    // Without a limit (the agent's file source) the canonical form is not built at all.
    if rules.max_record_bytes < usize::MAX {
        let size = record.canonical_json().len();
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

const PROVENANCE_REFUSED: &str =
    "is set by the collector when it stores a record; a record cannot bring its own";

/// What belongs to the collector alone, refused in a record anyone else writes (an app, through
/// ingest or the agent), each with its rule: the `provenance` field, ids starting with
/// [`RESERVED_ID_PREFIX`], and the actions of the [`COLLECTOR_CATEGORY`]. Part of [`validate`]
/// unless [`Rules::collector_entries`]; the collector's ingest runs it again on every record an
/// ingest key sends, whatever receiver parsed it.
pub fn check_app_record(record: &AuditRecord, errors: &mut Vec<FieldError>) {
    if record.provenance.is_some() {
        errors.push(FieldError::new("provenance", PROVENANCE_REFUSED));
    }
    if let Some(id) = &record.id
        && id
            .get(..RESERVED_ID_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_ID_PREFIX))
    {
        errors.push(FieldError::new(
            "id",
            format!("ids starting with {RESERVED_ID_PREFIX:?} are reserved for the collector's own entries"),
        ));
    }
    if record
        .action
        .split_once('.')
        .is_some_and(|(category, _)| category.eq_ignore_ascii_case(COLLECTOR_CATEGORY))
    {
        errors.push(FieldError::new(
            "action",
            format!(
                "{:?}: actions of the {COLLECTOR_CATEGORY:?} category are written by the collector only",
                record.action
            ),
        ));
    }
}

/// Org ids: 1 to 64 letters, digits, `_`, `-` or `.`.
pub fn is_valid_org_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ORG_ID_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
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

fn metadata_from_map(mut m: Map<String, Value>, shape: &mut Vec<FieldError>) -> Metadata {
    let ip = take_string(&mut m, "ip", "metadata.ip", shape);
    let user_agent = take_string(&mut m, "user_agent", "metadata.user_agent", shape);
    let scan_type = take_string(&mut m, "scan_type", "metadata.scan_type", shape);
    let changes = match m.remove("changes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let path = format!("metadata.changes[{i}]");
                match item {
                    Value::Object(mut c) => {
                        let field = take_string(&mut c, "field", &format!("{path}.field"), shape)
                            .unwrap_or_default();
                        let old = c.remove("old").unwrap_or(Value::Null);
                        let new = c.remove("new").unwrap_or(Value::Null);
                        unknown_keys(c, &path, shape);
                        Some(Change { field, old, new })
                    }
                    other => {
                        shape.push(expected(&path, "an object with field, old and new", &other));
                        None
                    }
                }
            })
            .collect(),
        Some(other) => {
            shape.push(expected("metadata.changes", "an array", &other));
            Vec::new()
        }
    };
    Metadata {
        ip,
        user_agent,
        scan_type,
        changes,
        extra: m.into_iter().collect(),
    }
}

fn take_string(
    map: &mut Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match map.remove(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errors.push(expected(path, "a string", &other));
            None
        }
    }
}

fn take_enum<T>(
    map: &mut Map<String, Value>,
    key: &str,
    path: &str,
    parse: fn(&str) -> Option<T>,
    allowed: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let s = take_string(map, key, path, errors)?;
    let parsed = parse(&s);
    if parsed.is_none() {
        errors.push(FieldError::new(
            path,
            format!(
                "unknown value {s:?}; expected one of {}",
                allowed.join(", ")
            ),
        ));
    }
    parsed
}

fn unknown_keys(map: Map<String, Value>, parent: &str, errors: &mut Vec<FieldError>) {
    for key in map.keys() {
        let path = if parent.is_empty() {
            key.clone()
        } else {
            format!("{parent}.{key}")
        };
        errors.push(FieldError::new(path, "unknown field"));
    }
}

fn expected(path: &str, what: &str, got: &Value) -> FieldError {
    FieldError::new(path, format!("expected {what}, got {}", type_name(got)))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Value {
        json!({
            "id": "evt-1",
            "org_id": "acme",
            "time": "2026-11-27T11:00:00.123456+01:00",
            "actor": {"id": "u1", "name": "Ada", "email": "ada@example.com", "kind": "user"},
            "action": "repository.settings_changed",
            "category": "not-trusted",
            "target": {"kind": "repository", "id": "r1", "name": "web"},
            "repository": "acme/web",
            "outcome": "failure",
            "message": "made public",
            "metadata": {
                "ip": "10.0.0.1",
                "user_agent": "curl/8",
                "scan_type": "sast",
                "changes": [{"field": "visibility", "old": "private", "new": "public"}],
                "ticket": {"id": 7, "tags": ["a", null, 1.5]},
            },
            "schema_version": 1,
            "received_at": "2026-11-27T10:00:01Z",
            "seq": 3,
            "prev_hash": "ab",
            "hash": "cd",
        })
    }

    /// Every JSON path of `v` (objects and the first element of arrays).
    fn paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let mut p = prefix.clone();
                    p.push(k.clone());
                    out.push(p.clone());
                    paths(child, p, out);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let mut p = prefix;
                p.push("0".into());
                out.push(p.clone());
                paths(&items[0], p, out);
            }
            _ => {}
        }
    }

    fn edit(v: &mut Value, path: &[String], change: &dyn Fn(&mut Value, &str)) {
        let (last, parents) = path.split_last().unwrap();
        let mut at = v;
        for p in parents {
            at = match at {
                Value::Object(m) => m.get_mut(p).unwrap(),
                Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
        }
        change(at, last);
    }

    /// The straight path never accepts what the thorough one refuses, and builds the same record.
    #[test]
    fn both_paths_agree_on_every_single_change_of_a_full_record() {
        let rules = Rules::at(crate::time::parse_rfc3339("2026-11-27T12:00:00Z").unwrap());
        let base = full();
        let mut all = Vec::new();
        paths(&base, Vec::new(), &mut all);
        let replacements = [
            json!(null),
            json!(""),
            json!(1),
            json!(1.5),
            json!(-1),
            json!(5_000_000_000u64),
            json!(true),
            json!({}),
            json!([]),
            json!("x"),
            json!("2026-11-27T11:00:00Z"),
            json!("user"),
            json!("a@b.co"),
            json!("scan.triggered"),
            json!("acme"),
        ];
        let mut lines = vec![base.to_string()];
        for path in &all {
            let mut removed = base.clone();
            edit(&mut removed, path, &|parent, key| match parent {
                Value::Object(m) => {
                    m.remove(key);
                }
                Value::Array(a) => {
                    a.remove(0);
                }
                _ => {}
            });
            lines.push(removed.to_string());
            for r in &replacements {
                let mut changed = base.clone();
                edit(&mut changed, path, &|parent, key| match parent {
                    Value::Object(m) => {
                        m.insert(key.to_string(), r.clone());
                    }
                    Value::Array(a) => a[0] = r.clone(),
                    _ => {}
                });
                lines.push(changed.to_string());
            }
        }
        let mut extra = base.clone();
        extra["unknown"] = json!(1);
        lines.push(extra.to_string());
        lines.push(r#"{"org_id":"acme","org_id":"other"}"#.into());
        lines.push(base.to_string().replacen(
            "\"id\":\"evt-1\",",
            "\"id\":\"evt-1\",\"id\":\"evt-2\",",
            1,
        ));

        let mut straight = 0;
        for line in &lines {
            for org in [None, Some("globex")] {
                let thorough = parse_thoroughly(line, org, &rules);
                if let Some(fast) = parse_well_formed(line, org, &rules) {
                    straight += 1;
                    assert_eq!(Ok(&fast), thorough.as_ref(), "{line} (default org {org:?})");
                }
                assert_eq!(
                    parse_json_line(line.as_bytes(), org, &rules),
                    thorough,
                    "{line}"
                );
            }
        }
        // The straight path is taken for the valid variants, not only for the base record.
        assert!(straight > 40, "straight path taken {straight} times");
    }

    /// What belongs to the collector alone is refused in an app's record, on both paths, each
    /// with its own field and rule; the collector's own entries may carry it.
    #[test]
    fn an_app_record_cannot_carry_what_belongs_to_the_collector() {
        let rules = Rules::at(crate::time::parse_rfc3339("2026-11-27T12:00:00Z").unwrap());
        let own = Rules {
            collector_entries: true,
            ..rules.clone()
        };
        let cases: [(&str, Value, &str); 6] = [
            ("provenance", json!({"writer": "collector"}), "provenance"),
            (
                "provenance",
                json!({"writer": "ingest", "key_id": "key_1"}),
                "provenance",
            ),
            ("provenance", json!("anything"), "provenance"),
            ("id", json!("codestax:apikey-revoked-key_1"), "id"),
            ("id", json!("CODESTAX:read-1"), "id"),
            ("action", json!("audit_log.exported"), "action"),
        ];
        for (key, value, field) in cases {
            let mut v = full();
            v[key] = value.clone();
            let line = v.to_string();
            let errors = parse_json_line(line.as_bytes(), None, &rules).unwrap_err();
            assert_eq!(errors.0.len(), 1, "{key}={value}: {errors}");
            assert_eq!(errors.0[0].field, field, "{key}={value}");
            assert!(
                errors.0[0].reason.contains("collector"),
                "{key}={value}: {errors}"
            );
            if key != "provenance" || value.is_object() {
                let record = parse_json_line(line.as_bytes(), None, &own).unwrap();
                assert!(validate(&record, &own).is_ok());
            }
        }
        // A custom action in the collector's category is refused too, and ids that only
        // contain the prefix further on are an app's to use.
        let custom = Rules {
            allow_custom_actions: true,
            ..rules.clone()
        };
        let mut v = full();
        v["action"] = json!("audit_log.erased");
        assert!(parse_json_line(v.to_string().as_bytes(), None, &custom).is_err());
        v["action"] = json!("repository.settings_changed");
        v["id"] = json!("app-codestax:1");
        assert!(parse_json_line(v.to_string().as_bytes(), None, &rules).is_ok());
        v["provenance"] = Value::Null;
        assert!(parse_json_line(v.to_string().as_bytes(), None, &rules).is_ok());
    }
}
