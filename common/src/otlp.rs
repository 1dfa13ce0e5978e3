//! Mapping between audit records and OTLP LogRecords, both directions (see docs/otlp-mapping.md).
//!
//! A LogRecord carries an audit record in one of two styles:
//! - **attributes**: `audit.action`, `enduser.id`, ... as the field table says
//!   ([`Field::otlp`]), `time_unix_nano` as the time and the body as the message;
//! - **body**: the record's JSON object as the body (a JSON string or a key-value list).
//!
//! Resource attributes may supply `audit.org_id` for all records under them.

use crate::parse::record_from_value;
use crate::record::AuditRecord;
use crate::schema::{ATTRIBUTE_FIELDS, Field, FieldValue, Kind, Object, Otlp};
use crate::validate::{FieldError, RecordErrors, Rules};
use chrono::{DateTime, TimeZone, Utc};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The attribute (or prefix of attributes) that would claim a record's
/// [`Provenance`](crate::Provenance): only the collector sets it, so a LogRecord carrying it is
/// refused, as a `provenance` key in the record's JSON is (the field stays empty on the way out).
pub const PROVENANCE_ATTRIBUTE: &str = match Field::Provenance.otlp() {
    Otlp::Refused(attribute) => attribute,
    _ => panic!("provenance is refused"),
};

/// Attributes under this prefix become metadata keys (`audit.metadata.scan_type` → `metadata.scan_type`).
pub const METADATA_PREFIX: &str = "audit.metadata.";
/// The attribute (on a LogRecord or its Resource) naming the org.
pub const ORG_ATTRIBUTE: &str = match Field::OrgId.attribute() {
    Some(attribute) => attribute,
    None => panic!("the org has an attribute"),
};

/// Reads the audit record a LogRecord carries, in either style, and validates it.
/// `resource` is the enclosing Resource's attributes; `default_org` is used when neither the
/// record nor the resource names an org. Errors name record fields and, in the attributes style,
/// the attribute that carries the field.
pub fn record_from_log(
    log: &LogRecord,
    resource: &[KeyValue],
    default_org: Option<&str>,
    rules: &Rules,
) -> Result<AuditRecord, RecordErrors> {
    match straight_from_attributes(log, resource, default_org, rules) {
        Some(record) => Ok(record),
        None => general_from_log(log, resource, default_org, rules),
    }
}

/// The general path of [`record_from_log`]: both styles, every problem named.
fn general_from_log(
    log: &LogRecord,
    resource: &[KeyValue],
    default_org: Option<&str>,
    rules: &Rules,
) -> Result<AuditRecord, RecordErrors> {
    let (mut value, style) = log_to_value(log, resource)?;
    if let (Value::Object(map), Some(org)) = (&mut value, default_org)
        && !map.contains_key(Field::OrgId.key())
    {
        map.insert(Field::OrgId.key().into(), Value::String(org.to_string()));
    }
    record_from_value(value, rules).map_err(|RecordErrors(errors)| {
        RecordErrors(
            errors
                .into_iter()
                .map(|e| match style {
                    Style::Attributes => name_attribute(e),
                    Style::Body => FieldError::new(format!("body.{}", e.field), e.reason),
                })
                .collect(),
        )
    })
}

/// The straight path of [`record_from_log`] for the attributes style: the record is built from
/// the attributes directly, without a `serde_json::Value` in between, and checked with
/// [`validate`](crate::validate::validate). `None` for anything out of the ordinary (the body
/// style, an attribute of another type than expected, a repeated attribute, `changes`, a dotted
/// metadata key, an invalid record): the general path then reads it and names every problem. It
/// accepts exactly what the general path accepts and builds the same record (tested).
fn straight_from_attributes(
    log: &LogRecord,
    resource: &[KeyValue],
    default_org: Option<&str>,
    rules: &Rules,
) -> Option<AuditRecord> {
    use crate::record::{Actor, ActorKind, Metadata, Outcome, SCHEMA_VERSION, Target, TargetKind};
    fn string(kv: &KeyValue) -> Option<String> {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }
    /// Sets a field once; a second attribute for it takes the general path.
    fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(value?);
        Some(())
    }
    // A slot per field of the table, filled from the attributes.
    let mut f: [Option<String>; Field::ALL.len()] = Default::default();
    let mut schema_version: Option<u32> = None;
    let mut extra: BTreeMap<String, Value> = BTreeMap::new();
    for kv in &log.attributes {
        if is_provenance_attribute(&kv.key) {
            return None;
        }
        if let Some(field) = Field::from_attribute(&kv.key) {
            if field.kind() == Kind::Count {
                let v = match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::IntValue(n) => u32::try_from(*n).ok(),
                    _ => None,
                };
                once(&mut schema_version, v)?;
            } else {
                once(&mut f[field as usize], string(kv))?;
            }
        } else if let Some(rest) = kv.key.strip_prefix(METADATA_PREFIX) {
            match Field::from_key(Object::Metadata, rest) {
                Some(field) if field.otlp() == Otlp::Metadata && field.kind() == Kind::Text => {
                    once(&mut f[field as usize], string(kv))?
                }
                // Named fields carried by their own attributes, `changes` and nested keys: rare,
                // left to the general path.
                Some(_) => return None,
                None if rest.contains('.') || rest.is_empty() => return None,
                None => {
                    if extra
                        .insert(rest.to_string(), any_to_json(kv.value.as_ref()))
                        .is_some()
                    {
                        return None;
                    }
                }
            }
        }
    }
    let mut take = |field: Field| f[field as usize].take();
    let action = take(Field::Action)?;
    let org_id = match take(Field::OrgId) {
        Some(org) => org,
        None => resource_org_id(resource).or_else(|| default_org.map(str::to_string))?,
    };
    let actor = Actor {
        id: take(Field::ActorId)?,
        name: take(Field::ActorName),
        email: take(Field::ActorEmail),
        kind: match take(Field::ActorKind) {
            Some(k) => ActorKind::parse(&k)?,
            None => ActorKind::default(),
        },
    };
    let target_id = take(Field::TargetId);
    let target_name = take(Field::TargetName);
    let target = match take(Field::TargetKind) {
        Some(kind) => Some(Target {
            kind: TargetKind::parse(&kind)?,
            id: target_id,
            name: target_name,
        }),
        None if target_id.is_none() && target_name.is_none() => None,
        None => return None,
    };
    let outcome = match take(Field::Outcome) {
        Some(o) => Outcome::parse(&o)?,
        None => Outcome::default(),
    };
    let message = match log.body.as_ref().and_then(|b| b.value.as_ref()) {
        None => None,
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        Some(other) => Some(
            any_to_json(Some(&AnyValue {
                value: Some(other.clone()),
            }))
            .to_string(),
        ),
    };
    let record = AuditRecord {
        id: take(Field::Id),
        org_id,
        time: log_time(log).ok()??,
        actor,
        category: crate::action::check(&action, true)
            .map(str::to_string)
            .unwrap_or_default(),
        action,
        target,
        repository: take(Field::Repository),
        outcome,
        message,
        metadata: Metadata {
            ip: take(Field::MetadataIp),
            user_agent: take(Field::MetadataUserAgent),
            scan_type: take(Field::MetadataScanType),
            changes: Vec::new(),
            extra,
        },
        schema_version: schema_version.unwrap_or(SCHEMA_VERSION),
        received_at: None,
        seq: None,
        prev_hash: None,
        provenance: None,
        hash: None,
    };
    crate::validate::validate(&record, rules).ok()?;
    Some(record)
}

fn is_provenance_attribute(key: &str) -> bool {
    key.strip_prefix(PROVENANCE_ATTRIBUTE)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The org id given in a Resource's attributes, if any.
pub fn resource_org_id(resource: &[KeyValue]) -> Option<String> {
    resource
        .iter()
        .find_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) if kv.key == ORG_ATTRIBUTE => Some(s.clone()),
            _ => None,
        })
}

/// Writes a record as a LogRecord in the attributes style: the fields of [`ATTRIBUTE_FIELDS`]
/// in that order (those the record has), then every other metadata key in key order. Built
/// from the fields directly (the agent forwards every record through here).
///
/// A record the attributes style cannot carry exactly ([`needs_body_style`]) is written in the
/// body style instead ([`to_log_record_with_body`]): e.g. `audit.metadata.a.b` reads back as the
/// nested key `a: {b}`, which would change the record (and lose the value if `a` is a key too).
pub fn to_log_record(record: &AuditRecord) -> LogRecord {
    if needs_body_style(record) {
        return to_log_record_with_body(record);
    }
    // The metadata as it serialises: its fields, then the free-form keys (which win on a clash).
    let m = &record.metadata;
    let mut metadata: BTreeMap<&str, AnyValue> = BTreeMap::new();
    for &field in Field::in_key_order(Object::Metadata) {
        match field.value(record) {
            Some(FieldValue::Text(s)) => {
                metadata.insert(field.key(), any_string(s));
            }
            Some(FieldValue::Changes(changes)) => {
                let changes = serde_json::to_value(changes).expect("changes always serialise");
                metadata.insert(field.key(), json_to_any(&changes));
            }
            _ => {}
        }
    }
    for (k, v) in &m.extra {
        metadata.insert(k, json_to_any(v));
    }
    // The fields with attributes of their own, in the table's order; the metadata's under
    // their OpenTelemetry names.
    let mut attributes = Vec::with_capacity(16);
    for field in ATTRIBUTE_FIELDS {
        let Some(key) = field.attribute() else {
            continue;
        };
        let value = match field.object() {
            Object::Metadata => metadata.remove(field.key()),
            _ => match field.value(record) {
                Some(FieldValue::Text(s)) => Some(any_string(s)),
                Some(FieldValue::Count(n)) => Some(AnyValue {
                    value: Some(any_value::Value::IntValue(n as i64)),
                }),
                _ => None,
            },
        };
        if let Some(value) = value {
            attributes.push(KeyValue {
                key: key.to_string(),
                value: Some(value),
                ..Default::default()
            });
        }
    }
    for (k, v) in metadata {
        attributes.push(KeyValue {
            key: format!("{METADATA_PREFIX}{k}"),
            value: Some(v),
            ..Default::default()
        });
    }
    LogRecord {
        time_unix_nano: unix_nanos(&record.time),
        severity_number: 9, // INFO
        severity_text: "INFO".into(),
        event_name: record.action.clone(),
        body: record.message.as_ref().map(|m| AnyValue {
            value: Some(any_value::Value::StringValue(m.clone())),
        }),
        attributes,
        ..Default::default()
    }
}

/// Whether the attributes style cannot carry the record's free-form metadata as it is, so the
/// record must travel in the body style: a key with a dot (read back as nesting), or a whole
/// number above `i64::MAX` anywhere in a value (an OTLP integer is an i64; as a double it would
/// come back changed).
pub fn needs_body_style(record: &AuditRecord) -> bool {
    fn fits(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.is_i64() || n.is_f64(),
            Value::Array(items) => items.iter().all(fits),
            Value::Object(map) => map.values().all(fits),
            Value::Null | Value::Bool(_) | Value::String(_) => true,
        }
    }
    record
        .metadata
        .extra
        .iter()
        .any(|(k, v)| k.contains('.') || !fits(v))
}

fn any_string(value: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.to_string())),
    }
}

#[cfg(test)]
fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(any_string(value)),
        ..Default::default()
    }
}

/// Writes a record as a LogRecord in the body style: the record's canonical JSON as the body.
pub fn to_log_record_with_body(record: &AuditRecord) -> LogRecord {
    LogRecord {
        time_unix_nano: unix_nanos(&record.time),
        severity_number: 9,
        severity_text: "INFO".into(),
        event_name: record.action.clone(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(record.canonical_json())),
        }),
        ..Default::default()
    }
}

#[derive(Clone, Copy)]
enum Style {
    Attributes,
    Body,
}

fn log_to_value(log: &LogRecord, resource: &[KeyValue]) -> Result<(Value, Style), RecordErrors> {
    let has_action_attribute = log
        .attributes
        .iter()
        .any(|kv| Some(kv.key.as_str()) == Field::Action.attribute());
    let body = log.body.as_ref().and_then(|b| b.value.as_ref());
    let body_object = match body {
        _ if has_action_attribute => None,
        Some(any_value::Value::KvlistValue(list)) => Some(kvlist_to_json(list)),
        Some(any_value::Value::StringValue(s)) if s.trim_start().starts_with('{') => {
            match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(map)) => Some(map),
                _ => {
                    return Err(RecordErrors::one(
                        "body",
                        "starts like a JSON object but is not valid JSON, and no audit.action attribute is set",
                    ));
                }
            }
        }
        _ => None,
    };
    let time = log_time(log)?;
    let attribute = |key: &str| {
        log.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| any_to_json(kv.value.as_ref()))
    };
    if let Some(mut map) = body_object {
        if !map.contains_key(Field::OrgId.key()) {
            if let Some(org) = attribute(ORG_ATTRIBUTE) {
                map.insert(Field::OrgId.key().into(), org);
            } else if let Some(org) = resource_org_id(resource) {
                map.insert(Field::OrgId.key().into(), Value::String(org));
            }
        }
        if !map.contains_key(Field::Id.key())
            && let Some(id) = Field::Id.attribute().and_then(attribute)
        {
            map.insert(Field::Id.key().into(), id);
        }
        if !map.contains_key(Field::Time.key())
            && let Some(t) = time
        {
            map.insert(
                Field::Time.key().into(),
                Value::String(crate::time::format_rfc3339(&t)),
            );
        }
        return Ok((Value::Object(map), Style::Body));
    }

    let mut root = Map::new();
    for kv in &log.attributes {
        let value = any_to_json(kv.value.as_ref());
        if let Some(field) = Field::from_attribute(&kv.key) {
            if !insert_path(&mut root, field.path(), value) {
                return Err(clash(field.path(), &kv.key));
            }
        } else if is_provenance_attribute(&kv.key) {
            // Left for validation to refuse, naming the attribute.
            root.insert(Field::Provenance.key().into(), value);
        } else if let Some(rest) = kv.key.strip_prefix(METADATA_PREFIX) {
            let value = match (rest, value) {
                // `changes` may come as a JSON string as well as an array of key-value lists.
                ("changes", Value::String(s)) => {
                    serde_json::from_str(&s).unwrap_or(Value::String(s))
                }
                (_, v) => v,
            };
            let path = format!("{}.{rest}", Field::Metadata.path());
            if !insert_path(&mut root, &path, value) {
                return Err(clash(&path, &kv.key));
            }
        }
        // Other attributes (service names, SDK details) describe the transport, not the action.
    }
    if !root.contains_key(Field::OrgId.key())
        && let Some(org) = resource_org_id(resource)
    {
        root.insert(Field::OrgId.key().into(), Value::String(org));
    }
    if let Some(t) = time {
        root.insert(
            Field::Time.key().into(),
            Value::String(crate::time::format_rfc3339(&t)),
        );
    }
    match body {
        Some(any_value::Value::StringValue(s)) => {
            root.insert(Field::Message.key().into(), Value::String(s.clone()));
        }
        Some(other) => {
            let v = any_to_json(Some(&AnyValue {
                value: Some(other.clone()),
            }));
            root.insert(Field::Message.key().into(), Value::String(v.to_string()));
        }
        None => {}
    }
    Ok((Value::Object(root), Style::Attributes))
}

/// A metadata attribute whose dotted key clashes with another one (`audit.metadata.a` and
/// `audit.metadata.a.b`): refused rather than one of them dropped.
fn clash(field: &str, attribute: &str) -> RecordErrors {
    RecordErrors::one(
        field,
        format!(
            "attribute {attribute} clashes with another attribute: a dotted key nests, so one would hide the other"
        ),
    )
}

fn log_time(log: &LogRecord) -> Result<Option<DateTime<Utc>>, RecordErrors> {
    let nanos = if log.time_unix_nano != 0 {
        log.time_unix_nano
    } else {
        log.observed_time_unix_nano
    };
    if nanos == 0 {
        return Ok(None);
    }
    let nanos = i64::try_from(nanos)
        .map_err(|_| RecordErrors::one(Field::Time.path(), "time_unix_nano is out of range"))?;
    Ok(Some(crate::time::truncate_to_micros(
        Utc.timestamp_nanos(nanos),
    )))
}

fn unix_nanos(t: &DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_micros()).unwrap_or(0) * 1_000
}

fn name_attribute(e: FieldError) -> FieldError {
    let attribute = match Field::from_path(&e.field).map(Field::otlp) {
        Some(Otlp::Attribute(a) | Otlp::Refused(a)) => Some(a.to_string()),
        Some(Otlp::TimeUnixNano) => Some("time_unix_nano".into()),
        Some(Otlp::Body) => Some("body".into()),
        _ => e
            .field
            .strip_prefix(Field::Metadata.path())
            .and_then(|rest| rest.strip_prefix('.'))
            .map(|rest| format!("{METADATA_PREFIX}{rest}")),
    };
    match attribute {
        Some(a) => FieldError::new(e.field, format!("{} (OTLP {a})", e.reason)),
        None => e,
    }
}

/// Sets the value at a dotted path, making objects on the way. False when the path clashes with
/// what is there (`a.b` under a value `a` that is not an object, or `a` over an object made for
/// `a.b`): the value would be lost, so the caller refuses the record.
fn insert_path(root: &mut Map<String, Value>, path: &str, value: Value) -> bool {
    match path.split_once('.') {
        None => match root.get(path) {
            Some(Value::Object(_)) if !value.is_object() => false,
            _ => {
                root.insert(path.to_string(), value);
                true
            }
        },
        Some((head, rest)) => {
            let child = root
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match child {
                Value::Object(child) => insert_path(child, rest, value),
                _ => false,
            }
        }
    }
}

fn key_value(key: &str, value: &Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(json_to_any(value)),
        ..Default::default()
    }
}

/// Converts JSON to an OTLP AnyValue (objects become key-value lists).
pub fn json_to_any(value: &Value) -> AnyValue {
    use any_value::Value as V;
    let v = match value {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or_default()),
        }),
        Value::String(s) => Some(V::StringValue(s.clone())),
        Value::Array(items) => Some(V::ArrayValue(ArrayValue {
            values: items.iter().map(json_to_any).collect(),
        })),
        Value::Object(map) => Some(V::KvlistValue(KeyValueList {
            values: map.iter().map(|(k, v)| key_value(k, v)).collect(),
        })),
    };
    AnyValue { value: v }
}

/// Converts an OTLP AnyValue to JSON (bytes become lowercase hex; NaN and infinities, null).
pub fn any_to_json(value: Option<&AnyValue>) -> Value {
    use any_value::Value as V;
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(V::StringValueStrindex(_)) => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(V::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any_to_json(Some(v))).collect())
        }
        Some(V::KvlistValue(list)) => Value::Object(kvlist_to_json(list)),
        Some(V::BytesValue(b)) => Value::String(hex::encode(b)),
    }
}

fn kvlist_to_json(list: &KeyValueList) -> Map<String, Value> {
    list.values
        .iter()
        .map(|kv| (kv.key.clone(), any_to_json(kv.value.as_ref())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Actor, ActorKind, Change, Metadata, Outcome, Target, TargetKind};

    fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
        path.split('.').try_fold(value, |v, key| v.get(key))
    }

    /// The former implementation: through the record's JSON.
    fn via_json(record: &AuditRecord) -> LogRecord {
        let value = serde_json::to_value(record).unwrap();
        let mut attributes = Vec::new();
        for field in ATTRIBUTE_FIELDS {
            let (path, key) = (field.path(), field.attribute().unwrap());
            if let Some(v) = lookup(&value, path) {
                attributes.push(key_value(key, v));
            }
        }
        if let Some(Value::Object(metadata)) = value.get("metadata") {
            for (k, v) in metadata {
                if k != "ip" && k != "user_agent" {
                    attributes.push(key_value(&format!("{METADATA_PREFIX}{k}"), v));
                }
            }
        }
        LogRecord {
            time_unix_nano: unix_nanos(&record.time),
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: record.action.clone(),
            body: record.message.as_ref().map(|m| AnyValue {
                value: Some(any_value::Value::StringValue(m.clone())),
            }),
            attributes,
            ..Default::default()
        }
    }

    #[test]
    fn attributes_are_those_of_the_record_json() {
        let sample = include_str!("../../examples/emit/app.jsonl");
        let mut records: Vec<AuditRecord> = sample
            .lines()
            .map(|l| crate::parse_json_line(l.as_bytes(), Some("acme"), &Rules::new()).unwrap())
            .collect();
        let time = records[0].time;
        let bare = AuditRecord {
            id: None,
            org_id: "acme".into(),
            time,
            actor: Actor {
                id: "svc".into(),
                name: None,
                email: None,
                kind: ActorKind::System,
            },
            action: "scan.completed".into(),
            category: String::new(),
            target: None,
            repository: None,
            outcome: Outcome::Failure,
            message: None,
            metadata: Metadata::default(),
            schema_version: 1,
            received_at: None,
            seq: None,
            prev_hash: None,
            provenance: None,
            hash: None,
        };
        let mut full = bare.clone();
        full.id = Some("e-1".into());
        full.actor.name = Some("Ada".into());
        full.actor.email = Some("ada@acme.example".into());
        full.target = Some(Target {
            kind: TargetKind::Finding,
            id: Some("f-1".into()),
            name: None,
        });
        full.repository = Some("acme/api".into());
        full.message = Some("m".into());
        full.received_at = Some(time);
        full.metadata = Metadata {
            ip: Some("203.0.113.1".into()),
            user_agent: Some("curl".into()),
            scan_type: Some("sast".into()),
            changes: vec![Change {
                field: "role".into(),
                old: Value::Null,
                new: serde_json::json!({"a": [1, 2.5, true, null, "x"]}),
            }],
            extra: [
                ("zeta".to_string(), serde_json::json!(null)),
                ("alpha".to_string(), serde_json::json!(-3)),
                ("nested".to_string(), serde_json::json!({"k": {"v": [1]}})),
            ]
            .into_iter()
            .collect(),
        };
        // Free-form keys that clash with fields win, as in the JSON.
        let mut clash = bare.clone();
        clash.metadata.extra = [
            ("ip".to_string(), serde_json::json!("198.51.100.2")),
            ("user_agent".to_string(), serde_json::json!(7)),
        ]
        .into_iter()
        .collect();
        records.extend([bare, full, clash]);
        for record in &records {
            assert_eq!(to_log_record(record), via_json(record), "{record:?}");
        }
    }

    /// A whole number above i64::MAX has no OTLP integer: such a record goes in the body style
    /// and comes back as it was (in the attributes style it came back a double).
    #[test]
    fn integers_beyond_i64_travel_in_the_body_and_come_back_the_same() {
        let rules = Rules::new();
        let line = r#"{"id":"e-1","time":"2026-11-27T11:00:00Z","actor":{"id":"svc","kind":"system"},"action":"scan.completed","metadata":{"big":18446744073709551615,"deep":[{"x":9223372036854775808}],"small":-9223372036854775808,"f":1.5}}"#;
        let record = crate::parse_json_line(line.as_bytes(), Some("acme"), &rules).unwrap();
        assert!(needs_body_style(&record));
        let log = to_log_record(&record);
        assert!(
            log.body.is_some()
                && log
                    .attributes
                    .iter()
                    .all(|kv| kv.key != "audit.metadata.big")
        );
        assert_eq!(record_from_log(&log, &[], None, &rules), Ok(record.clone()));

        let mut fits = record.clone();
        fits.metadata.extra.retain(|k, _| k == "small" || k == "f");
        assert!(
            !needs_body_style(&fits),
            "i64 and floats fit the attributes style"
        );
    }

    /// The straight path never accepts what the general one refuses, and builds the same record,
    /// whatever single change is made to a LogRecord's attributes.
    #[test]
    fn straight_and_general_paths_agree() {
        let rules = Rules::at(crate::time::parse_rfc3339("2026-11-27T12:00:00Z").unwrap());
        let time = crate::time::parse_rfc3339("2026-11-27T11:00:00.5Z").unwrap();
        let mut bases: Vec<AuditRecord> = include_str!("../../examples/emit/app.jsonl")
            .lines()
            .map(|l| crate::parse_json_line(l.as_bytes(), Some("acme"), &Rules::new()).unwrap())
            .collect();
        let mut extra = bases[0].clone();
        extra.metadata.changes.clear();
        extra.metadata.extra.insert(
            "ticket".into(),
            serde_json::json!({"id": 7, "tags": ["a", null]}),
        );
        extra.metadata.extra.insert("n".into(), Value::Null);
        extra.metadata.scan_type = Some("sast".into());
        bases.push(extra);
        for b in &mut bases {
            b.time = time;
        }
        let replacements = [
            None,
            Some(any_value::Value::IntValue(1)),
            Some(any_value::Value::IntValue(-1)),
            Some(any_value::Value::IntValue(1 << 40)),
            Some(any_value::Value::BoolValue(true)),
            Some(any_value::Value::DoubleValue(1.5)),
            Some(any_value::Value::StringValue(String::new())),
            Some(any_value::Value::StringValue("x".into())),
            Some(any_value::Value::StringValue("user".into())),
            Some(any_value::Value::StringValue("repository".into())),
            Some(any_value::Value::StringValue("a@b.co".into())),
            Some(any_value::Value::StringValue("scan.triggered".into())),
            Some(any_value::Value::BytesValue(vec![1, 2])),
        ];
        let mut logs = Vec::new();
        for record in &bases {
            let log = to_log_record(record);
            logs.push(log.clone());
            let mut no_time = log.clone();
            no_time.time_unix_nano = 0;
            logs.push(no_time);
            let mut int_body = log.clone();
            int_body.body = Some(AnyValue {
                value: Some(any_value::Value::IntValue(3)),
            });
            logs.push(int_body);
            for i in 0..log.attributes.len() {
                let mut removed = log.clone();
                removed.attributes.remove(i);
                logs.push(removed);
                let mut twice = log.clone();
                twice.attributes.push(log.attributes[i].clone());
                logs.push(twice);
                for r in &replacements {
                    let mut changed = log.clone();
                    changed.attributes[i].value = Some(AnyValue { value: r.clone() });
                    logs.push(changed);
                }
            }
            for key in [
                "audit.metadata.ip",
                "audit.metadata.a.b",
                "audit.metadata.scan_type",
                "audit.target.id",
            ] {
                let mut added = log.clone();
                added.attributes.push(string_kv(key, "v"));
                logs.push(added);
            }
        }
        let org_resource = [string_kv(ORG_ATTRIBUTE, "globex")];
        let mut straight = 0;
        for log in &logs {
            for (resource, org) in [
                (&[][..], None),
                (&[][..], Some("initech")),
                (&org_resource[..], Some("initech")),
            ] {
                let general = general_from_log(log, resource, org, &rules);
                if let Some(fast) = straight_from_attributes(log, resource, org, &rules) {
                    straight += 1;
                    assert_eq!(Ok(&fast), general.as_ref(), "{log:?}");
                }
                assert_eq!(record_from_log(log, resource, org, &rules), general);
            }
        }
        assert!(straight > 100, "straight path taken {straight} times");
    }
}
