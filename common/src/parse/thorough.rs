//! The thorough path: a record read through a `serde_json::Value`, field by field, every
//! problem named with its field path.

use crate::action;
use crate::record::{
    Actor, ActorKind, AuditRecord, Change, Metadata, Outcome, Provenance, SCHEMA_VERSION, Target,
    TargetKind,
};
use crate::schema::{Field, Input, Object};
use crate::validate::{FieldError, PROVENANCE_REFUSED, RecordErrors, Rules, validate};
use serde_json::{Map, Value};

/// Reads a line (valid UTF-8, within the size limit) through a `serde_json::Value`: every
/// problem, each with its field path.
pub(super) fn parse(
    text: &str,
    default_org: Option<&str>,
    rules: &Rules,
) -> Result<AuditRecord, RecordErrors> {
    let mut value: Value = serde_json::from_str(text)
        .map_err(|e| RecordErrors::one("record", format!("not valid JSON: {e}")))?;
    if let (Value::Object(map), Some(org)) = (&mut value, default_org)
        && matches!(map.get(Field::OrgId.key()), None | Some(Value::Null))
    {
        map.insert(Field::OrgId.key().into(), Value::String(org.to_string()));
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
    let id = take_string(&mut map, Field::Id, &mut shape);
    let org_id = take_string(&mut map, Field::OrgId, &mut shape).unwrap_or_default();
    let time = match map.remove(Field::Time.key()) {
        None | Some(Value::Null) => {
            shape.push(FieldError::new(Field::Time.path(), "required"));
            None
        }
        Some(Value::String(s)) => match crate::time::parse_rfc3339(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                shape.push(FieldError::new(Field::Time.path(), e));
                None
            }
        },
        Some(other) => {
            shape.push(expected(Field::Time.path(), "an RFC 3339 string", &other));
            None
        }
    };
    let actor = match map.remove(Field::Actor.key()) {
        None | Some(Value::Null) => {
            shape.push(FieldError::new(Field::Actor.path(), "required"));
            None
        }
        Some(Value::Object(mut a)) => {
            let id = take_string(&mut a, Field::ActorId, &mut shape).unwrap_or_default();
            let name = take_string(&mut a, Field::ActorName, &mut shape);
            let email = take_string(&mut a, Field::ActorEmail, &mut shape);
            let kind = take_enum(
                &mut a,
                Field::ActorKind,
                ActorKind::parse,
                &ActorKind::ALL.map(|k| k.as_str()),
                &mut shape,
            )
            .unwrap_or_default();
            unknown_keys(a, Field::Actor.path(), &mut shape);
            Some(Actor {
                id,
                name,
                email,
                kind,
            })
        }
        Some(other) => {
            shape.push(expected(Field::Actor.path(), "an object", &other));
            None
        }
    };
    let action_name = take_string(&mut map, Field::Action, &mut shape).unwrap_or_default();
    // Category is derived from the action; whatever the input says is only type-checked.
    let _ = take_string(&mut map, Field::Category, &mut shape);
    let target = match map.remove(Field::Target.key()) {
        None | Some(Value::Null) => None,
        Some(Value::Object(mut t)) => {
            let kind = match t.get(Field::TargetKind.key()) {
                None | Some(Value::Null) => {
                    t.remove(Field::TargetKind.key());
                    shape.push(FieldError::new(Field::TargetKind.path(), "required"));
                    None
                }
                _ => take_enum(
                    &mut t,
                    Field::TargetKind,
                    TargetKind::parse,
                    &TargetKind::ALL.map(|k| k.as_str()),
                    &mut shape,
                ),
            };
            let id = take_string(&mut t, Field::TargetId, &mut shape);
            let name = take_string(&mut t, Field::TargetName, &mut shape);
            unknown_keys(t, Field::Target.path(), &mut shape);
            kind.map(|kind| Target { kind, id, name })
        }
        Some(other) => {
            shape.push(expected(Field::Target.path(), "an object", &other));
            None
        }
    };
    let repository = take_string(&mut map, Field::Repository, &mut shape);
    let outcome = take_enum(
        &mut map,
        Field::Outcome,
        Outcome::parse,
        &Outcome::ALL.map(|o| o.as_str()),
        &mut shape,
    )
    .unwrap_or_default();
    let message = take_string(&mut map, Field::Message, &mut shape);
    let metadata = match map.remove(Field::Metadata.key()) {
        None | Some(Value::Null) => Metadata::default(),
        Some(Value::Object(m)) => metadata_from_map(m, &mut shape),
        Some(other) => {
            shape.push(expected(Field::Metadata.path(), "an object", &other));
            Metadata::default()
        }
    };
    let schema_version = match map.remove(Field::SchemaVersion.key()) {
        None | Some(Value::Null) => SCHEMA_VERSION,
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            u32::try_from(n.as_u64().unwrap_or_default()).unwrap_or(u32::MAX)
        }
        Some(other) => {
            shape.push(expected(
                Field::SchemaVersion.path(),
                "a whole number",
                &other,
            ));
            SCHEMA_VERSION
        }
    };
    let received_at = match map.remove(Field::ReceivedAt.key()) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match crate::time::parse_rfc3339(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                shape.push(FieldError::new(Field::ReceivedAt.path(), e));
                None
            }
        },
        Some(other) => {
            shape.push(expected(
                Field::ReceivedAt.path(),
                "an RFC 3339 string",
                &other,
            ));
            None
        }
    };
    let provenance = match map.remove(Field::Provenance.key()) {
        None | Some(Value::Null) => None,
        // An app's record is refused for carrying it at all, whatever its shape.
        Some(_) if !rules.collector_entries => {
            shape.push(FieldError::new(
                Field::Provenance.path(),
                PROVENANCE_REFUSED,
            ));
            None
        }
        Some(v) => serde_json::from_value::<Provenance>(v)
            .map_err(|e| shape.push(FieldError::new(Field::Provenance.path(), e.to_string())))
            .ok(),
    };
    // The hash-chain fields are the collector's to assign: whatever the input says is dropped.
    for f in Field::in_key_order(Object::Record) {
        if f.input() == Input::Dropped {
            map.remove(f.key());
        }
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
            }) || (actor_missing && is_under(&e.field, Field::Actor));
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

fn metadata_from_map(mut m: Map<String, Value>, shape: &mut Vec<FieldError>) -> Metadata {
    let ip = take_string(&mut m, Field::MetadataIp, shape);
    let user_agent = take_string(&mut m, Field::MetadataUserAgent, shape);
    let scan_type = take_string(&mut m, Field::MetadataScanType, shape);
    let changes = match m.remove(Field::MetadataChanges.key()) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let path = format!("{}[{i}]", Field::MetadataChanges.path());
                match item {
                    Value::Object(mut c) => {
                        let field =
                            take_string_at(&mut c, "field", &format!("{path}.field"), shape)
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
            shape.push(expected(Field::MetadataChanges.path(), "an array", &other));
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
    field: Field,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    take_string_at(map, field.key(), field.path(), errors)
}

fn take_string_at(
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
    field: Field,
    parse: fn(&str) -> Option<T>,
    allowed: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let s = take_string(map, field, errors)?;
    let path = field.path();
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

/// Whether `path` names a field inside the object `field`.
fn is_under(path: &str, field: Field) -> bool {
    path.strip_prefix(field.path())
        .is_some_and(|rest| rest.starts_with('.'))
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
